"""Build (or finish) an image cache from a cohort: resumable, parallel, failures listed, never half-written.

Resuming: every finished image (ok or failed) is appended as one JSON line to CACHE/progress.jsonl by
the coordinating process right after its PNG was renamed into place. A rerun reads the journal and
skips every image already there whose PNG exists; a torn last line (a kill mid-write) is ignored and
that image redone. PNGs are written to a temp file and renamed, so a file under its final name is
always complete. The index, annotations, failures and contact sheet are assembled from the journal in
cohort order at the end, so an interrupted-then-resumed run writes the same cache as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mammo_insight.cohort.schema import CANONICAL_COLUMNS, Cohort
from mammo_insight.errors import MammoInsightError
from mammo_insight.files import atomic_write, write_csv_atomic
from mammo_insight.imaging import annotations
from mammo_insight.imaging.cache import (
    CACHE_COLUMNS,
    CONFIG_FILE,
    CONTACT_SHEET_FILE,
    FAILURE_COLUMNS,
    FAILURES_FILE,
    INDEX_FILE,
)
from mammo_insight.imaging.engines import run_tasks
from mammo_insight.imaging.pipeline import PreprocessConfig, failed_record, process_one, source_stamp

log = logging.getLogger(__name__)
JOURNAL_FILE = "progress.jsonl"
MAX_FAILURES_LOGGED = 10
# config keys that change pixels: a cache is only resumed when they match
PIXEL_KEYS = ("size", "bits", "flip", "margin", "mask", "dataset")
INT_COLUMNS = [
    "orig_height",
    "orig_width",
    "crop_x0",
    "crop_y0",
    "crop_x1",
    "crop_y1",
    "pad_x",
    "pad_y",
    "out_height",
    "out_width",
]


def _check_config(out_dir: Path, config: dict[str, Any]) -> None:
    path = out_dir / CONFIG_FILE
    if path.is_file():
        old = json.loads(path.read_text())
        if "size" in old:  # an older cache's flip "left"/"none" and "backend" read as today's fields
            old = {**old, **PreprocessConfig.from_dict(old).to_dict()}
        changed = [k for k in PIXEL_KEYS if old.get(k) != config.get(k)]
        if changed:
            detail = ", ".join(f"{k}: {old.get(k)!r} -> {config.get(k)!r}" for k in changed)
            raise MammoInsightError(
                f"{out_dir} already holds a cache made with other settings ({detail}); "
                "use a new --out folder or delete this one"
            )
    atomic_write(path, lambda p: p.write_text(json.dumps(config, indent=2)))


def read_journal(out_dir: Path) -> dict[str, dict[str, Any]]:
    """image_id -> last record in the journal whose image is really done (torn lines skipped)."""
    path = out_dir / JOURNAL_FILE
    done: dict[str, dict[str, Any]] = {}
    if not path.is_file():
        return done
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if record.get("status") == "ok" and not (out_dir / record["cache_path"]).is_file():
                continue
            done[str(record["image_id"])] = record
    return done


def crashed_record(task: dict[str, Any], how: str) -> dict[str, Any]:
    """The failure of an image whose decoder process died under it (twice: once in the pool, once alone),
    e.g. a segmentation fault in a decoder's native code; ``how`` is the exit status in words."""
    return failed_record(
        task["image_id"],
        f"{task['image_path']}: the decoder process died ({how}) while decoding it, "
        "twice (a crash in native code or the out-of-memory killer)",
    )


def _changed_inputs(done: dict[str, dict[str, Any]], ids: list[str], paths: pd.Series) -> list[str]:
    """Ids of journalled images whose source file is not the one cached: another path, size or mtime.

    Journals written before sources were recorded have no stamp: their images are kept as they are.
    """
    changed = []
    for image_id, path in zip(ids, paths, strict=True):
        record = done.get(image_id)
        if record is None or "source_size" not in record or not isinstance(path, str):
            continue
        now = source_stamp(path)
        if any(record.get(key) != value for key, value in now.items()):
            changed.append(image_id)
    return changed


def table_sha256(table: pd.DataFrame) -> str:
    """A fingerprint of the cohort table's content (row order, columns and values), for the manifest."""
    rows = pd.util.hash_pandas_object(table.astype("string"), index=False).to_numpy()
    return hashlib.sha256(",".join(table.columns).encode() + rows.tobytes()).hexdigest()


def _sample(ids: list[str], n: int, seed: int) -> set[str]:
    if n <= 0 or not ids:
        return set()
    rng = np.random.default_rng(seed)
    return {ids[i] for i in sorted(rng.choice(len(ids), size=min(n, len(ids)), replace=False))}


def _index(table: pd.DataFrame, records: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """Every cohort column (canonical first, then the adapter's own: a second label, is_augmented,
    external_only ...), then the cache columns."""
    rec = pd.DataFrame(
        [records.get(str(i), failed_record(str(i), "not processed")) for i in table["image_id"]]
    )
    for col in CACHE_COLUMNS + ["reason"]:
        if col not in rec.columns:
            rec[col] = None
    extras = [c for c in table.columns if c not in CANONICAL_COLUMNS and c not in CACHE_COLUMNS]
    index = table[CANONICAL_COLUMNS + extras].reset_index(drop=True).copy()
    for col in CACHE_COLUMNS:
        index[col] = rec[col].to_numpy()
    for col in INT_COLUMNS:
        index[col] = pd.array(pd.to_numeric(index[col]), dtype="Int64")
    index["scale"] = pd.to_numeric(index["scale"]).astype("float64")
    index["flipped"] = pd.array(index["flipped"].astype(object), dtype="boolean")
    for col in ("cache_path", "photometric", "transfer_syntax", "status"):
        index[col] = index[col].astype("string")
    index.attrs["reasons"] = rec["reason"].tolist()
    return index


@dataclass(frozen=True)
class Engine:
    """Where the images are decoded: ``workers`` processes of a local pool, or a Dask cluster."""

    workers: int = 1
    engine: str = "local"  # local | dask
    address: str | None = None  # a running Dask scheduler; None starts a local cluster (engine dask)


@dataclass
class _Plan:
    """What a (re)run of the cache still has to do, read from the cohort and the journal."""

    done: dict[str, dict[str, Any]]  # image_id -> finished record (ok or failed), from the journal
    tasks: list[dict[str, Any]]  # images to decode
    immediate: list[dict[str, Any]]  # failures known without decoding (no image path)
    sample: set[str]  # image ids drawn for the contact sheet
    changed: list[str]  # ids redone because their file changed since it was cached
    already_done: int


def _settings(cohort: Cohort, config: PreprocessConfig) -> dict[str, Any]:
    """CACHE/config.json: the pixel settings, the dataset and how the breast was cropped."""
    return {
        **config.to_dict(),
        "dataset": cohort.dataset,
        "label_meaning": cohort.label_meaning,
        "crop": {
            "method": "otsu+opening+bounded-hysteresis",
            "margin": config.margin,
            "mask_outside_breast": config.mask,
        },
    }


def _plan(
    cohort: Cohort, out_dir: Path, config: PreprocessConfig, *, sheet_size: int, seed: int, retry_failed: bool
) -> _Plan:
    done = read_journal(out_dir)
    if retry_failed:
        done = {k: v for k, v in done.items() if v.get("status") == "ok"}
    table = cohort.table
    ids = [str(i) for i in table["image_id"]]
    changed = _changed_inputs(done, ids, table["image_path"])
    for image_id in changed:
        del done[image_id]
    if changed:
        log.warning(
            "%d image(s) changed since they were cached (path, size or modification time), redone: %s%s",
            len(changed),
            ", ".join(changed[:5]),
            " ..." if len(changed) > 5 else "",
        )
    sample = _sample(
        [
            i
            for i, p in zip(ids, table["image_path"], strict=True)
            if isinstance(p, str) and Path(p).is_file()
        ],
        sheet_size,
        seed,
    )
    tasks, immediate = [], []
    for row in table.itertuples(index=False):
        image_id = str(row.image_id)
        if image_id in done:
            continue
        if row.image_path is None or pd.isna(row.image_path):
            immediate.append(failed_record(image_id, "the cohort table gives no image_path"))
            continue
        tasks.append(
            {
                "image_id": image_id,
                "patient_id": str(row.patient_id),
                "image_path": str(row.image_path),
                "image_root": str(cohort.image_root) if cohort.image_root else None,
                "cache_dir": str(out_dir),
                "config": config.to_dict(),
                "thumbnail": image_id in sample,
            }
        )
    return _Plan(done, tasks, immediate, sample, changed, len(done))


def _run(plan: _Plan, out_dir: Path, engine: Engine, show_progress: bool) -> None:
    """Decode the plan's tasks, journalling each record as it arrives (the journal is what resumes)."""
    from mammo_insight.progress import progress_bar

    n_failed = 0
    total = len(plan.tasks) + len(plan.immediate)
    n_now, step = 0, max(1, total // 10)
    log.info("preprocess: %d image(s) to cache, %d already done", total, plan.already_done)
    with open(out_dir / JOURNAL_FILE, "a", encoding="utf-8") as journal:

        def keep(record: dict[str, Any]) -> None:
            nonlocal n_failed, n_now
            journal.write(json.dumps(record) + "\n")
            journal.flush()
            plan.done[record["image_id"]] = record
            if record["status"] != "ok":
                n_failed += 1
                if n_failed <= MAX_FAILURES_LOGGED:
                    log.warning(
                        "failed: %s%s",
                        record["reason"],
                        " (further failures only in failures.csv)" if n_failed == MAX_FAILURES_LOGGED else "",
                    )
            n_now += 1
            if n_now % step == 0 or n_now == total:  # a line per tenth: progress in any log, not only a TTY
                log.info("preprocess: %d of %d images (%d failed)", n_now, total, n_failed)

        for record in plan.immediate:
            keep(record)
        results = run_tasks(
            process_one,
            plan.tasks,
            workers=engine.workers,
            engine=engine.engine,
            address=engine.address,
            on_crash=crashed_record,
        )
        if show_progress and plan.tasks:
            with progress_bar() as bar:
                task_id = bar.add_task("preprocess", total=len(plan.tasks))
                for record in results:
                    keep(record)
                    bar.advance(task_id)
        else:
            for record in results:
                keep(record)


def _write_outputs(
    cohort: Cohort, out_dir: Path, config: PreprocessConfig, plan: _Plan
) -> tuple[pd.DataFrame, Any]:
    """The index, failures, annotations and contact sheet, assembled from the journal in cohort order."""
    from mammo_insight.imaging.contact_sheet import write_contact_sheet

    index = _index(cohort.table, plan.done)
    reasons = index.attrs.pop("reasons")
    atomic_write(out_dir / INDEX_FILE, lambda p: index.to_parquet(p, index=False))
    failed = index["status"] != "ok"
    failures = pd.DataFrame(
        {
            "image_id": index.loc[failed, "image_id"],
            "image_path": index.loc[failed, "image_path"],
            "reason": [r for r, f in zip(reasons, failed, strict=True) if f],
        }
    )[FAILURE_COLUMNS]
    write_csv_atomic(out_dir / FAILURES_FILE, failures)
    lesions = annotations.to_cache(cohort.annotations, index, out_dir)
    annotations.write(lesions, out_dir)
    sheet_rows = index[index["image_id"].astype(str).isin(plan.sample) & ~failed]
    sheet = write_contact_sheet(
        out_dir, sheet_rows, config, out_dir / CONTACT_SHEET_FILE, annotations=lesions
    )
    return index, sheet


def build_cache(
    cohort: Cohort,
    out_dir: str | Path,
    config: PreprocessConfig,
    engine: Engine = Engine(),
    *,
    sheet_size: int = 24,
    retry_failed: bool = False,
    seed: int = 0,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Cache every cohort image under out_dir; returns counts. Safe to rerun: finished images are kept.

    Writes the cache's files (config.json, images, index, annotations, failures, contact sheet); the
    preprocess stage adds the manifest.
    """
    started = time.perf_counter()
    clash = [c for c in cohort.table.columns if c in CACHE_COLUMNS + ["reason"]]
    if clash:
        raise MammoInsightError(
            f"the cohort has column(s) {', '.join(clash)}, which the cache index writes "
            "itself; rename them in the cohort"
        )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _check_config(out_dir, _settings(cohort, config))
    plan = _plan(cohort, out_dir, config, sheet_size=sheet_size, seed=seed, retry_failed=retry_failed)
    _run(plan, out_dir, engine, show_progress)
    index, sheet = _write_outputs(cohort, out_dir, config, plan)
    failed = index["status"] != "ok"
    return {
        "images": len(index),
        "ok": int((~failed).sum()),
        "failed": int(failed.sum()),
        "already_done": plan.already_done,
        "changed_inputs": len(plan.changed),
        "processed_now": len(plan.tasks) + len(plan.immediate),
        "table_sha256": table_sha256(cohort.table),
        "seconds": round(time.perf_counter() - started, 2),
        "contact_sheet": str(sheet) if sheet else None,
    }
