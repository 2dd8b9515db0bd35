"""A header-only scan of a DICOM tree: parallel, resumable, and never stopped by one bad file.

Files are read with pydicom without pixel data (``stop_before_pixels``; the values a row needs are decoded
from the raw elements, cohort.dicom_record), in worker processes (mammo_insight.workers: a local
pool, or Dask for a tree on a cluster's shared filesystem), a chunk of files per task so that the cost of a
task is spread over many files.

Resuming: the coordinating process appends one JSON line per finished file to JOURNAL (its relative path,
size and mtime, and its row or the reason it failed). A rerun skips every file whose size and mtime match
its journal line, so a killed scan of a million files goes on where it stopped; a torn last line is ignored
and its file read again. The journal holds hashed ids only; it is bound to the salt that made them (STATE),
and a scan under another salt starts afresh.

A file that is not DICOM, not a mammogram (Modality other than MG: a structured report, a presentation
state), holds no image, leads out of the tree (a link) or cannot be read is a failure with its kind and
reason, listed and counted; none is fatal.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from stat import S_ISLNK
from typing import Any

import pandas as pd

from mammo_insight.cohort.dicom_record import Header, header_record, keyed_id, number_of, text_of
from mammo_insight.errors import CohortError
from mammo_insight.files import atomic_write, inside_root
from mammo_insight.workers import WorkerSetup, run_tasks

log = logging.getLogger(__name__)
JOURNAL = "scan.jsonl"
STATE = "scan_state.json"
CHUNK_FILES = 256
FAILURE_COLUMNS = ["file", "kind", "reason"]
NOT_DICOM, NOT_MAMMOGRAM, NO_IMAGE, UNREADABLE, OUTSIDE, DUPLICATE, CRASHED = (
    "not DICOM",
    "not a mammogram",
    "no image",
    "unreadable",
    "link out of the tree",
    "duplicate image",
    "reader crashed",
)
HEADER_READER = WorkerSetup(preload=("pydicom", "mammo_insight.cohort.dicom_record"))


@dataclass(frozen=True)
class ScanConfig:
    """What a scan reads and where it keeps its journal.

    extra_tags: column -> DICOM keyword of further tags to keep as text (a mapping file's [dicom.tags]).
    engine/address: mammo_insight.workers' "local" pool or "dask" (address: a scheduler; None: a local cluster).
    """

    root: Path
    salt: bytes
    journal_dir: Path
    workers: int = 1
    engine: str = "local"
    address: str | None = None
    extra_tags: dict[str, str] = field(default_factory=dict)
    chunk_files: int = CHUNK_FILES
    show_progress: bool = False


@dataclass(frozen=True)
class ScanResult:
    """images: one row per mammogram header (``file`` relative to the root, then header_record's columns);
    failures: one row per file not used (file, kind, reason); resumed: files taken from the journal."""

    images: pd.DataFrame
    failures: pd.DataFrame
    n_files: int
    resumed: int

    def failure_counts(self) -> dict[str, int]:
        return dict(Counter(self.failures["kind"]))


def list_files(root: Path) -> list[str]:
    """Every file under ``root`` as a sorted relative POSIX path; hidden files and folders are skipped,
    linked folders are not followed (a linked file is listed, and refused when it leads out of the tree)."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        base = Path(folder).relative_to(root)
        found.extend((base / name).as_posix() for name in files if not name.startswith("."))
    return sorted(found)


def _failed(rel: str, stamp: dict[str, int], kind: str, reason: str) -> dict[str, Any]:
    return {"file": rel, **stamp, "status": "failed", "kind": kind, "reason": f"{rel}: {reason}"}


def read_one(root: Path, rel: str, salt: bytes, extra: dict[str, str]) -> dict[str, Any]:
    """One file's journal record: its stamp and its row, or the kind and reason of its failure."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    path = os.path.join(root, rel)
    try:
        stat = os.lstat(path)  # one call for most files: a link's own stamp is replaced by its target's
        link = S_ISLNK(stat.st_mode)
        stat = os.stat(path) if link else stat
    except OSError as exc:
        return _failed(rel, {}, UNREADABLE, f"cannot be opened ({exc.strerror or exc})")
    stamp = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    if link and not inside_root(path, root):
        return _failed(rel, stamp, OUTSIDE, f"a link that leads outside {root}; not read")
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except InvalidDicomError as exc:
        return _failed(rel, stamp, NOT_DICOM, f"not a readable DICOM ({type(exc).__name__}: {exc})")
    except Exception as exc:  # noqa: BLE001 - any unreadable header is listed, never fatal
        return _failed(rel, stamp, UNREADABLE, f"not a readable DICOM ({type(exc).__name__}: {exc})")
    ds = Header(ds)  # its elements by tag, once
    modality = text_of(ds, "Modality").upper()
    if modality and modality != "MG":
        return _failed(rel, stamp, NOT_MAMMOGRAM, f"Modality {modality}, not MG")
    if not number_of(ds, "Rows") or not number_of(ds, "Columns"):
        return _failed(rel, stamp, NO_IMAGE, "no Rows/Columns: not an image")
    try:
        row = header_record(ds, salt, extra)
    except Exception as exc:  # noqa: BLE001 - a malformed value is this file's failure, not the scan's
        return _failed(rel, stamp, UNREADABLE, f"a malformed header value ({type(exc).__name__}: {exc})")
    sop = text_of(ds, "SOPInstanceUID")
    row["image_key"] = keyed_id("image", sop or f"file:{rel}", salt)
    return {"file": rel, **stamp, "status": "ok", "row": row}


def scan_chunk(task: dict[str, Any]) -> dict[str, Any]:
    """Worker task: the records of one chunk of files."""
    root, salt = Path(task["root"]), bytes.fromhex(task["salt"])
    return {"records": [read_one(root, rel, salt, task["extra"]) for rel in task["files"]]}


def _crashed(task: dict[str, Any], how: str) -> dict[str, Any]:
    """A chunk whose reader process died twice: each of its files is listed (no file of it is trusted)."""
    return {
        "records": [_failed(rel, {}, CRASHED, f"the header reader died ({how})") for rel in task["files"]]
    }


def _state(config: ScanConfig) -> dict[str, Any]:
    return {
        "salt_check": keyed_id("check", "salt", config.salt),
        "extra_tags": dict(sorted(config.extra_tags.items())),
    }


def _journal_lines(path: Path) -> list[dict[str, Any]]:
    records = []
    if path.is_file():
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:  # a torn last line: that file is read again
                    continue
    return records


def _open_journal(config: ScanConfig) -> dict[str, dict[str, Any]]:
    """file -> its last journal record, when the journal was made under this salt and these tags; else {}."""
    config.journal_dir.mkdir(parents=True, exist_ok=True)
    state_path, journal = config.journal_dir / STATE, config.journal_dir / JOURNAL
    state = _state(config)
    old = json.loads(state_path.read_text()) if state_path.is_file() else None
    if old != state:
        if journal.exists():
            log.info("scan journal %s was made with another salt or tags: scanning afresh", journal)
            journal.unlink()
        atomic_write(state_path, lambda p: p.write_text(json.dumps(state)))
        return {}
    return {r["file"]: r for r in _journal_lines(journal) if "file" in r}


def _still_current(record: dict[str, Any], root: Path) -> bool:
    if "size" not in record:
        return False  # a failure before the file could be stat'ed: try again
    try:
        stat = (root / record["file"]).stat()
    except OSError:
        return False
    return stat.st_size == record["size"] and stat.st_mtime_ns == record["mtime_ns"]


def _tasks(config: ScanConfig, todo: list[str]) -> list[dict[str, Any]]:
    step = max(1, config.chunk_files)
    common = {"root": str(config.root), "salt": config.salt.hex(), "extra": dict(config.extra_tags)}
    return [{**common, "files": todo[i : i + step]} for i in range(0, len(todo), step)]


def _run(config: ScanConfig, todo: list[str], done: dict[str, dict[str, Any]]) -> None:
    """Scan ``todo`` in chunks, appending each finished record to the journal and to ``done``."""
    from mammo_insight.progress import progress_bar

    tasks = _tasks(config, todo)
    results = run_tasks(
        scan_chunk,
        tasks,
        workers=config.workers,
        engine=config.engine,
        address=config.address,
        on_crash=_crashed,
        start=HEADER_READER,
    )
    with open(config.journal_dir / JOURNAL, "a", encoding="utf-8") as journal:
        bar = progress_bar() if config.show_progress and todo else None
        task_id = bar.add_task("DICOM headers", total=len(todo)) if bar else None
        if bar:
            bar.start()
        try:
            for result in results:
                for record in result["records"]:
                    journal.write(json.dumps(record) + "\n")
                    done[record["file"]] = record
                journal.flush()
                if bar:
                    bar.advance(task_id, len(result["records"]))
        finally:
            if bar:
                bar.stop()


def scan_tree(config: ScanConfig) -> ScanResult:
    """Scan (or finish scanning) every file under the root; rows and failures in file order."""
    from pydicom.datadict import tag_for_keyword

    unknown = [k for k in config.extra_tags.values() if tag_for_keyword(k) is None]
    if unknown:
        raise CohortError(
            f"dicom: unknown DICOM keyword(s) {', '.join(map(repr, unknown))} in the tags to read"
        )
    files = list_files(config.root)
    journal = _open_journal(config)
    done = {f: r for f in files if (r := journal.get(f)) is not None and _still_current(r, config.root)}
    resumed = len(done)
    todo = [f for f in files if f not in done]
    if todo:
        _run(config, todo, done)
    rows, failures = [], []
    for rel in files:
        record = done[rel]
        if record["status"] == "ok":
            rows.append({"file": rel, **record["row"]})
        else:
            failures.append({k: record[k] for k in FAILURE_COLUMNS})
    images = pd.DataFrame(rows) if rows else pd.DataFrame(columns=["file"])
    return ScanResult(images, pd.DataFrame(failures, columns=FAILURE_COLUMNS), len(files), resumed)
