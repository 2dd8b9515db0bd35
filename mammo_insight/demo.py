"""`mammo-insight demo`: every stage on a synthetic cohort, then one index page.

Each stage runs as its own CLI subprocess: it exercises exactly what users run, keeps torch and
LightGBM out of one process, and lets a failed stage be reported while independent stages go on.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from mammo_insight.errors import MammoInsightError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoSettings:
    """Small enough for 2 CPU cores in a few minutes, large enough for the planted effects to show."""

    patients: int = 120
    seed: int = 0
    synth_size: str = "320x240"
    cache_size: str = "128x96"
    model: str = "resnet18"
    folds: int = 3
    epochs: int = 4
    explain_cases: int = 24


@dataclass
class Stage:
    name: str
    args: list[str]
    needs: list[str] = field(default_factory=list)


def plan(out: Path, s: DemoSettings) -> list[Stage]:
    data, cache, train = out / "data", out / "cache", out / "train"
    emb = out / "embed" / "embeddings.parquet"
    return [
        Stage("synth", ["synth", "--out", str(data), "--patients", str(s.patients), "--seed", str(s.seed),
                        "--size", s.synth_size]),
        Stage("eda", ["eda", "--dataset", "rsna", "--root", str(data), "--out", str(out / "eda")], ["synth"]),
        Stage("preprocess", ["preprocess", "--dataset", "rsna", "--root", str(data), "--out", str(cache),
                             "--size", s.cache_size, "--workers", "2"], ["synth"]),
        Stage("train", ["train", "--cache", str(cache), "--out", str(train), "--model", s.model,
                        "--folds", str(s.folds), "--epochs", str(s.epochs), "--seed", str(s.seed)], ["preprocess"]),
        Stage("embed", ["embed", "--run", str(train), "--cache", str(cache), "--out", str(emb)], ["train"]),
        Stage("fuse-train", ["fuse-train", "--dataset", "rsna", "--root", str(data), "--embeddings", str(emb),
                             "--out", str(out / "fusion"), "--folds", str(s.folds), "--seed", str(s.seed)],
              ["synth", "embed"]),
        Stage("explain", ["explain", "--run", str(train), "--cache", str(cache), "--out", str(out / "explain"),
                          "--n", str(s.explain_cases)], ["train"]),
    ]


def run_demo(out: Path, settings: DemoSettings = DemoSettings()) -> Path:
    """Run every stage into OUT and write OUT/index.html; raise listing the stages that failed."""
    from mammo_insight.report.index import build_index

    out.mkdir(parents=True, exist_ok=True)
    stages = plan(out, settings)
    failed: dict[str, str] = {}
    started = time.perf_counter()
    for number, stage in enumerate(stages, 1):
        prefix = f"[{number}/{len(stages)}] {stage.name}"
        blocked = [n for n in stage.needs if n in failed]
        if blocked:
            failed[stage.name] = f"skipped: needs {', '.join(blocked)}"
            log.warning("%s skipped (needs %s, which failed)", prefix, ", ".join(blocked))
            continue
        log.info("%s ...", prefix)
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "mammo_insight.cli.app", *stage.args],
                              capture_output=True, text=True)
        (out / "logs").mkdir(exist_ok=True)
        (out / "logs" / f"{stage.name}.log").write_text(proc.stdout + proc.stderr)
        if proc.returncode != 0:
            last = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-1:] or ["no output"]
            failed[stage.name] = last[0]
            log.error("%s failed after %.0f s: %s (log: %s)", prefix, time.perf_counter() - t0, last[0],
                      out / "logs" / f"{stage.name}.log")
            continue
        log.info("%s done in %.0f s", prefix, time.perf_counter() - t0)
    page = build_index([out], out, title="mammo-insight demo")
    log.info("demo finished in %.0f s: %s", time.perf_counter() - started, page)
    if failed:
        raise MammoInsightError("demo: stage(s) failed: " + "; ".join(f"{k}: {v}" for k, v in failed.items()))
    return page
