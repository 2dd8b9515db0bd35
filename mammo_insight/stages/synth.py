"""`synth`: a synthetic RSNA-like cohort with planted, documented effects (DICOMs, train.csv, annotations)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mammo_insight.errors import MammoInsightError
from mammo_insight.sizes import SEED_MAX
from mammo_insight.stages.base import StageResult, finish_stage, working_folder
from mammo_insight.synth.cohort import make_synthetic_cohort


@dataclass(frozen=True)
class SynthConfig:
    out: Path
    patients: int = 100
    seed: int = 0
    size: tuple[int, int] = (256, 192)
    prevalence: float = 0.2
    scanner_signature: bool = False  # machine-specific cancer rates and intensity curves (synth.table)
    strong_effects: bool = False  # metadata effects a cohort of a hundred women can detect (the demo's)


@dataclass(frozen=True)
class SynthResult(StageResult):
    config: SynthConfig
    summary: dict[str, Any]
    stage = "synth"
    title = "Synthetic cohort"

    def headline(self) -> dict[str, str]:
        s = self.summary
        return {
            "women": f"{s['n_patients']:,}",
            "images": f"{s['n_images']:,}",
            "breasts with a planted lesion": f"{s['n_positive_breasts']:,} of {s['n_breasts']:,}",
        }

    def lines(self) -> list[str]:
        return [f"{key}: {value}" for key, value in self.summary.items()]


def run_synth(config: SynthConfig) -> SynthResult:
    """Write the cohort into config.out (same seed, same bytes) and return its counts."""
    if isinstance(config.seed, bool) or not isinstance(config.seed, int) or not 0 <= config.seed <= SEED_MAX:
        raise MammoInsightError(f"synth: seed must be an integer 0..{SEED_MAX}, got {config.seed!r}")
    if not (isinstance(config.prevalence, (int, float)) and 0 <= config.prevalence <= 1):
        raise MammoInsightError(f"synth: prevalence must lie in 0..1, got {config.prevalence!r}")
    summary = make_synthetic_cohort(
        config.out,
        n_patients=config.patients,
        seed=config.seed,
        size=config.size,
        prevalence=config.prevalence,
        scanner_signature=config.scanner_signature,
        strong_effects=config.strong_effects,
    )
    return SynthResult(config, summary)


def write_synth(result: SynthResult, out: Path) -> Path:
    """The cohort's manifest (its files were written by run_synth into the same folder)."""
    out = working_folder(result.config.out, out, "synth")
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(result.config).items()}
    return finish_stage(out, result, config, seed=result.config.seed, report=None)
