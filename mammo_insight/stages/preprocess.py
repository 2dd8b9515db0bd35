"""`preprocess`: DICOM/PNG -> cropped, resized, display-correct image cache (resumable).

The cache builder (mammo_insight.imaging.build) writes the cache's files as it goes, so an interrupted
run resumes; this stage loads the cohort, runs the builder and writes the manifest, whose report is the
contact sheet a person looks at.

    from mammo_insight.stages import preprocess
    result = preprocess.run_preprocess(preprocess.PreprocessStageConfig(dataset="rsna", root=Path("data"),
                                                                        out=Path("cache"), size=(512, 256)))
    preprocess.write_preprocess(result, out)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mammo_insight.cohort.adapters import load_cohort
from mammo_insight.cohort.outcomes import outcomes_spec
from mammo_insight.errors import MammoInsightError
from mammo_insight.imaging.build import Engine, build_cache
from mammo_insight.imaging.cache import CONTACT_SHEET_FILE
from mammo_insight.imaging.decode import auto_choices, resolve_backend
from mammo_insight.imaging.pipeline import PreprocessConfig
from mammo_insight.stages.base import StageResult, finish_stage, working_folder

ENGINES = ("local", "dask")
TABLE_SUFFIXES = {".csv", ".txt", ".xls", ".xlsx", ".toml"}


@dataclass(frozen=True)
class PreprocessStageConfig:
    """The dataset, the cache folder, what decides the pixels, and how the work is spread."""

    dataset: str
    root: Path
    out: Path
    size: tuple[int, int] = (512, 256)
    mapping: Path | None = None
    outcomes: Path | None = None  # --dataset dicom: labels joined from this CSV (cohort.outcomes)
    on: str = "study"
    label: str = "cancer"
    bits: int = 8
    flip: bool = True
    mask: bool = True
    decoder: str = "auto"
    workers: int = 1
    engine: str = "local"
    scheduler: str | None = None
    sheet_size: int = 24
    retry_failed: bool = False
    seed: int = 0

    def pixels(self) -> PreprocessConfig:
        """The settings that decide the cache's pixels (a cache is only resumed with the same ones)."""
        if self.bits not in (8, 16):
            raise MammoInsightError(f"--bits must be 8 or 16, got {self.bits}")
        return PreprocessConfig(
            size=self.size,
            bits=self.bits,
            flip=self.flip,
            decoder=resolve_backend(self.decoder),
            mask=self.mask,
        )


@dataclass(frozen=True)
class PreprocessResult(StageResult):
    """The builder's counts: images, ok, failed, already done, processed now, seconds, contact sheet."""

    config: PreprocessStageConfig
    pixels: PreprocessConfig  # what decided the pixels, as resolved when the cache was built
    summary: dict[str, Any]
    stage = "preprocess"
    title = "Image cache"

    def headline(self) -> dict[str, str]:
        s = self.summary
        return {"images cached": f"{s['ok']:,} of {s['images']:,}", "failed images": f"{s['failed']:,}"}

    def lines(self) -> list[str]:
        lines = [f"{key}: {value}" for key, value in self.summary.items()]
        failed = self.summary["failed"]
        return (
            [*lines, f"{failed} image(s) failed: see {self.config.out / 'failures.csv'}"] if failed else lines
        )


def run_preprocess(config: PreprocessStageConfig) -> PreprocessResult:
    """Load the cohort and build (or resume) the cache in config.out."""
    if config.engine not in ENGINES:
        raise MammoInsightError(f"--backend must be local or dask, got {config.engine!r}")
    pixels = config.pixels()
    cohort = load_cohort(
        config.dataset, config.root, config.mapping, outcomes_spec(config.outcomes, config.on, config.label)
    )
    paths = cohort.table["image_path"].dropna()
    if not any(Path(p).is_file() for p in paths):
        example = f" (e.g. {paths.iloc[0]})" if len(paths) else ""
        raise MammoInsightError(
            f"preprocess: none of the {len(cohort.table)} images the cohort lists exists under "
            f"{config.root}{example}; is --root the dataset folder?"
        )
    summary = build_cache(
        cohort,
        config.out,
        pixels,
        Engine(config.workers, config.engine, config.scheduler),
        sheet_size=config.sheet_size,
        retry_failed=config.retry_failed,
        seed=config.seed,
    )
    return PreprocessResult(config, pixels, summary)


def write_preprocess(result: PreprocessResult, out: Path) -> Path:
    """The manifest of the cache (its report is the contact sheet); returns the manifest's path."""
    c = result.config
    working_folder(c.out, out, "preprocess")
    config = {
        **result.pixels.to_dict(),
        "dataset": c.dataset,
        "root": str(c.root),
        "workers": c.workers,
        "engine": c.engine,
        "summary": result.summary,
    }
    if result.pixels.decoder == "auto":
        config["auto_decoders"] = auto_choices()
    sheet = CONTACT_SHEET_FILE if result.summary.get("contact_sheet") else None
    return finish_stage(c.out, result, config, seed=c.seed, inputs=table_files(c), report=sheet)


MAX_FAILED_SHARE = 0.1


def check_failures(summary: dict[str, Any], out: Path, max_share: float = MAX_FAILED_SHARE) -> None:
    """Refuse (after the cache is written) a run that cached nothing or failed more than `max_share` of its
    images: a cache of a few survivors must not pass as a finished preprocess (the exit status says so)."""
    images, failed = summary["images"], summary["failed"]
    if images and summary["ok"] == 0:
        raise MammoInsightError(
            f"preprocess cached none of the {images:,} images: see {out / 'failures.csv'}"
        )
    if images and failed / images > max_share:
        raise MammoInsightError(
            f"preprocess: {failed:,} of {images:,} images failed ({failed / images:.1%}, over the "
            f"{max_share:.0%} allowed by --max-failed-share): see {out / 'failures.csv'}"
        )


def table_files(config: PreprocessStageConfig) -> dict[str, Path]:
    """The files the cohort was read from, for the manifest's sha256s: the tables directly under the root
    (train.csv, Info.txt, a CMMD or INbreast spreadsheet, ...) and the mapping. The images themselves are
    fingerprinted per file (size, mtime) in the cache's journal, and the table's content as table_sha256."""
    files = {
        f"table {p.name}": p
        for p in sorted(Path(config.root).glob("*"))
        if p.is_file() and p.suffix.lower() in TABLE_SUFFIXES
    }
    if config.mapping:
        files["mapping"] = Path(config.mapping)
    return files
