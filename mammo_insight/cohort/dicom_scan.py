"""A header-only scan of a DICOM tree: parallel, resumable, and never stopped by one bad file.

Files are read with pydicom without pixel data (cohort.dicom_record.read_header; the values a row needs are decoded
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

import itertools
import json
import logging
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from stat import S_ISLNK
from typing import TYPE_CHECKING, Any

from mammo_insight.cohort.dicom_record import header_record, keyed_id, number_of, read_header, text_of
from mammo_insight.errors import CohortError
from mammo_insight.files import atomic_write, inside_dataset
from mammo_insight.workers import WorkerSetup, run_tasks

if TYPE_CHECKING:  # pandas is imported where the table is made: the header readers never import it
    import pandas as pd

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
HEADER_READER = WorkerSetup(preload=("pydicom", "mammo_insight.cohort.dicom_scan"))


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
    """Every file under ``root`` as a sorted relative POSIX path; hidden files and folders are skipped.

    Folder links directly in the root are followed (the user made them: ``studies/site_a -> /mnt/...``,
    the rule of ``files.inside_dataset``); deeper folder links are not, and one that leads out of the
    dataset is listed so that the scan refuses it by name instead of dropping its files unseen. A linked
    file is listed, and refused when it leads out of the dataset."""
    found = []
    for folder, dirs, files in os.walk(root, followlinks=True):
        base = Path(folder).relative_to(root)
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        if base != Path("."):  # below the top level, links are not followed
            linked = [d for d in dirs if os.path.islink(os.path.join(folder, d))]
            dirs[:] = [d for d in dirs if d not in linked]
            files = [*files, *(d for d in linked if not inside_dataset(os.path.join(folder, d), root))]
        found.extend((base / name).as_posix() for name in files if not name.startswith("."))
    return sorted(found)


def _failed(rel: str, stamp: dict[str, int], kind: str, reason: str) -> dict[str, Any]:
    return {"file": rel, **stamp, "status": "failed", "kind": kind, "reason": f"{rel}: {reason}"}


def read_one(root: Path, rel: str, salt: bytes, extra: dict[str, str]) -> dict[str, Any]:
    """One file's journal record: its stamp and its row, or the kind and reason of its failure."""
    from pydicom.errors import InvalidDicomError

    path = os.path.join(root, rel)
    try:
        stat = os.lstat(path)  # one call for most files: a link's own stamp is replaced by its target's
        link = S_ISLNK(stat.st_mode)
        stat = os.stat(path) if link else stat
    except OSError as exc:
        return _failed(rel, {}, UNREADABLE, f"cannot be opened ({exc.strerror or exc})")
    stamp = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    if link and not inside_dataset(path, root):
        return _failed(rel, stamp, OUTSIDE, f"a link that leads outside {root}; not read")
    try:
        ds = read_header(path)  # its elements by tag, once
    except InvalidDicomError as exc:
        return _failed(rel, stamp, NOT_DICOM, f"not a readable DICOM ({type(exc).__name__}: {exc})")
    except Exception as exc:  # noqa: BLE001 - any unreadable header is listed, never fatal
        return _failed(rel, stamp, UNREADABLE, f"not a readable DICOM ({type(exc).__name__}: {exc})")
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


def _chunk(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Records as they travel and are kept: their journal lines (made in the worker), the rows as columns
    (made an Arrow table by _tables in the main process: a worker that builds Arrow imports pandas too,
    a third of a second per worker) and the failures."""
    rows = [{"file": r["file"], **r["row"]} for r in records if r["status"] == "ok"]
    names = dict.fromkeys(name for row in rows for name in row)
    return {
        "journal": "".join(json.dumps(r) + "\n" for r in records),
        "n": len(records),
        "columns": {name: [row.get(name) for row in rows] for name in names} if rows else None,
        "failures": [tuple(r[k] for k in FAILURE_COLUMNS) for r in records if r["status"] != "ok"],
    }


def scan_chunk(task: dict[str, Any]) -> dict[str, Any]:
    """Worker task: one chunk of files, returned as one message (_chunk)."""
    root, salt = Path(task["root"]), bytes.fromhex(task["salt"])
    return _chunk([read_one(root, rel, salt, task["extra"]) for rel in task["files"]])


def _crashed(task: dict[str, Any], how: str) -> dict[str, Any]:
    """A chunk whose reader process died twice: each of its files is listed (no file of it is trusted)."""
    return _chunk([_failed(rel, {}, CRASHED, f"the header reader died ({how})") for rel in task["files"]])


def _state(config: ScanConfig) -> dict[str, Any]:
    return {
        "salt_check": keyed_id("check", "salt", config.salt),
        "extra_tags": dict(sorted(config.extra_tags.items())),
    }


def _journal_lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, record) of each readable line; a torn last line is skipped (its file is read again)."""
    if path.is_file():
        with open(path, encoding="utf-8") as fh:
            for number, line in enumerate(fh):
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if "file" in record:
                    yield number, record


def _open_journal(config: ScanConfig) -> dict[str, tuple[int | None, int | None, int]]:
    """file -> (size, mtime_ns, line number) of its last journal record, when the journal was made under this
    salt and these tags; else {}. Only the stamps are kept: the rows are read again from the lines used."""
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
    return {r["file"]: (r.get("size"), r.get("mtime_ns"), n) for n, r in _journal_lines(journal)}


def _still_current(stamp: tuple[int | None, int | None, int], path: Path) -> bool:
    if stamp[0] is None:
        return False  # a failure before the file could be stat'ed: try again
    try:
        stat = path.stat()
    except OSError:
        return False
    return (stat.st_size, stat.st_mtime_ns) == stamp[:2]


def _resumed(config: ScanConfig, lines: set[int]) -> Iterator[dict[str, Any]]:
    """The journal's records on ``lines`` as chunks, read again in one pass."""
    batch = []
    for number, record in _journal_lines(config.journal_dir / JOURNAL):
        if number in lines:
            batch.append(record)
            if len(batch) >= max(1, config.chunk_files):
                yield _chunk(batch)
                batch = []
    if batch:
        yield _chunk(batch)


def _tasks(config: ScanConfig, todo: list[str]) -> list[dict[str, Any]]:
    step = max(1, config.chunk_files)
    common = {"root": str(config.root), "salt": config.salt.hex(), "extra": dict(config.extra_tags)}
    return [{**common, "files": todo[i : i + step]} for i in range(0, len(todo), step)]


def _run(config: ScanConfig, todo: list[str]) -> Iterator[dict[str, Any]]:
    """Scan ``todo`` in chunks, appending each chunk's lines to the journal as it comes; yields the chunks."""
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
                journal.write(result["journal"])
                journal.flush()
                del result["journal"]
                if bar:
                    bar.advance(task_id, result["n"])
                yield result
        finally:
            if bar:
                bar.stop()


def _tables(chunks: Iterator[dict[str, Any]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rows, failures) of every chunk, each sorted by file (the order of list_files).

    A fresh scan's chunks are runs of consecutive files, each in order, that arrive in any order: put the
    chunks in order and the rows are sorted without a copy of the table; a resumed scan's rows are sorted
    by a take (a copy). The table then becomes pandas column by column, freeing the Arrow buffers as it
    goes, so the scan's peak is about one copy of its rows."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.compute as pc

    tables, failures = [], []
    for chunk in chunks:
        if chunk["columns"] is not None:
            tables.append(pa.Table.from_pydict(chunk.pop("columns")))
        failures.extend(chunk["failures"])
    if tables:
        tables.sort(key=lambda t: t["file"][0].as_py())
        rows = pa.concat_tables(tables, promote_options="default")
        del tables
        files = rows["file"]
        if len(files) > 1 and not pc.all(pc.less(files[:-1], files[1:])).as_py():
            rows = rows.take(pc.sort_indices(rows, sort_keys=[("file", "ascending")]))
        del files
        images = rows.to_pandas(split_blocks=True, self_destruct=True)
        del rows
    else:
        images = pd.DataFrame(columns=["file"])
    return images, pd.DataFrame(sorted(failures), columns=FAILURE_COLUMNS)


def scan_tree(config: ScanConfig) -> ScanResult:
    """Scan (or finish scanning) every file under the root; rows and failures in file order.

    Nothing is kept per file but its path and, once read, its row in an Arrow chunk: the rows of a million
    files take their bytes, not a dict each (the journal on disk is what makes a scan resumable)."""
    from pydicom.datadict import tag_for_keyword

    unknown = [k for k in config.extra_tags.values() if tag_for_keyword(k) is None]
    if unknown:
        raise CohortError(
            f"dicom: unknown DICOM keyword(s) {', '.join(map(repr, unknown))} in the tags to read"
        )
    files = list_files(config.root)
    journal = _open_journal(config)
    lines = {s[2] for f in files if (s := journal.get(f)) is not None and _still_current(s, config.root / f)}
    resumed = len(lines)
    todo = [f for f in files if (s := journal.get(f)) is None or s[2] not in lines]
    del journal
    images, failures = _tables(itertools.chain(_resumed(config, lines), _run(config, todo) if todo else []))
    return ScanResult(images, failures, len(files), resumed)
