"""Writing output files so that nothing half-written ever looks complete."""

from __future__ import annotations

import fcntl
import functools
import json
import os
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mammo_insight.errors import MammoInsightError

if TYPE_CHECKING:
    import pandas as pd


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call write(temporary path) in path's folder, then rename it to path; returns path.

    A kill, a full disk or an exception leaves the old file (or none) instead of a truncated one, and
    two writers never share a temporary name. Every output of every stage is written through here.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _new_temporary(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.errno is not None and exc.filename in (None, str(tmp)):
            # name the file being written, not a temporary that is gone: "CACHE/index.parquet: No space left"
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _new_temporary(path: Path) -> Path:
    """A new empty file beside path, made with mode 0666 & ~umask as open() makes one.

    tempfile.mkstemp makes 0600, which the rename would carry to the output: a report or table written
    for colleagues would be unreadable to them. O_EXCL never opens an existing file or follows a link.
    """
    while True:
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return tmp


def write_text_atomic(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def inside_root(path: str | Path, root: str | Path) -> bool:
    """True when ``path``, every symbolic link and '..' resolved, lies inside ``root`` (also resolved).

    The text of a path says nothing about where a link leads: a file or a folder linked out of a dataset
    root passes every check on the text. Every file opened from a table, a folder or an index is checked here.
    """
    real_root = os.path.realpath(root)
    return os.path.commonpath([real_root, os.path.realpath(path)]) == real_root


def inside_dataset(path: str | Path, root: str | Path) -> bool:
    """:func:`inside_root`, also following the folder links the user made in the root itself.

    A project often points at a read-only mount with a link (``root/train_images -> /kaggle/input/...``):
    such a link directly inside the root is the user's choice, so files under its target are inside the
    dataset. Links deeper down (a patient folder, one file) and paths from table content stay confined.
    """
    if inside_root(path, root):
        return True
    real = os.path.realpath(path)
    return any(os.path.commonpath([target, real]) == target for target in _linked_folders(str(root)))


@functools.lru_cache(maxsize=32)
def _linked_folders(root: str) -> tuple[str, ...]:
    """The real paths of the folder links directly inside root (read once per process and root)."""
    try:
        with os.scandir(root) as entries:
            links = [e.path for e in entries if e.is_symlink()]
    except OSError:
        return ()
    return tuple(os.path.realpath(p) for p in links if os.path.isdir(p))


# a text cell a spreadsheet would run as a formula (OWASP's CSV injection rule): =, +, -, @, tab, CR first
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def defuse_cell(value: Any) -> Any:
    """A text cell that starts like a formula gets a leading apostrophe ('=HYPERLINK(...) stays text in
    Excel, LibreOffice and Sheets); numbers, also written as text ("-1.5", "+3"), and other values are kept."""
    if isinstance(value, str) and value.startswith(_FORMULA_START) and not _is_number(value):
        return "'" + value
    return value


def _holds_text(values: pd.Series | pd.Index) -> bool:
    from pandas.api.types import is_object_dtype, is_string_dtype

    dtype = values.dtype
    if hasattr(dtype, "categories"):  # a categorical of text labels
        return is_object_dtype(dtype.categories.dtype) or is_string_dtype(dtype.categories.dtype)
    return is_object_dtype(dtype) or is_string_dtype(dtype)


def defuse_formulas(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame with every text cell (and index or header label) passed through :func:`defuse_cell`."""
    out = frame.copy(deep=False)  # columns are replaced, never written into
    for column in frame.columns:
        if _holds_text(frame[column]):
            out[column] = frame[column].astype(object).map(defuse_cell, na_action="ignore")
    if _holds_text(out.index) and out.index.nlevels == 1:
        out.index = out.index.map(defuse_cell)
    if _holds_text(out.columns) and out.columns.nlevels == 1:
        out.columns = out.columns.map(defuse_cell)
    return out


def write_csv_atomic(path: str | Path, frame: pd.DataFrame, **to_csv: Any) -> Path:
    """frame.to_csv through atomic_write (index=False unless told): the one CSV writer of every stage.

    Text cells that a spreadsheet would run as formulas are defused (:func:`defuse_cell`): tables/*.csv
    hold dataset content (site names, ids, reasons) and are opened in spreadsheets."""
    to_csv.setdefault("index", False)
    safe = defuse_formulas(frame)
    return atomic_write(path, lambda tmp: safe.to_csv(tmp, **to_csv))


LOCK_FILE = ".lock"
MANIFEST_FILE = "manifest.json"


@contextmanager
def claim_output(
    out: str | Path, stage: str, *, folder: bool = True, reuse: bool = False, markers: tuple[str, ...] = ()
) -> Iterator[Path]:
    """Check an output path before a stage does any work, and hold a lock on it while the stage runs.

    Refused at once, with a one-line message: a folder output that is a file (or a file output that is a
    folder), a path that cannot be created or written, and a path another run holds. A folder must be new,
    empty, or an earlier (possibly interrupted) output of the same stage: its OUT/.lock names the stage
    that made it, or its manifest, or one of `markers` (files only this stage writes, e.g. a run's
    config.json) is there. `reuse` skips that last check (report and demo write beside other outputs).
    The lock is an flock on OUT/.lock (a folder; the file stays as the stage's mark) or on a hidden
    .NAME.lock beside a file output (removed on exit); the kernel drops it when the process dies.
    """
    out = Path(out)
    if folder:
        _check_folder(out, stage, reuse=reuse, markers=markers)
        lock_path = out / LOCK_FILE
    else:
        if out.is_dir():
            raise MammoInsightError(f"{out} is a folder; --out must name a file here")
        lock_path = out.parent / f".{out.name}.lock"
    created = folder and not out.exists()
    try:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise MammoInsightError(f"cannot write to {lock_path.parent}: {exc.strerror or exc}") from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").split()
            by = f" ({holder[0]}, pid {holder[1]})" if len(holder) >= 2 else ""
            raise MammoInsightError(
                f"{out} is in use by another mammo-insight run{by}: wait for it to end or choose another --out"
            ) from None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{stage} {os.getpid()}\n".encode(), 0)
        except OSError as exc:
            raise MammoInsightError(f"cannot write to {lock_path.parent}: {exc.strerror or exc}") from exc
        yield out
    finally:
        # a file output's lock, and a folder this run made but wrote nothing into (it stopped at once), go
        if not folder or (created and [p.name for p in out.iterdir()] == [LOCK_FILE]):
            lock_path.unlink(missing_ok=True)
        os.close(fd)  # releases the flock
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()


def _check_folder(out: Path, stage: str, *, reuse: bool, markers: tuple[str, ...]) -> None:
    if out.exists() and not out.is_dir():
        raise MammoInsightError(f"{out} exists and is not a folder; --out must be a folder (new or empty)")
    if reuse or not out.is_dir() or not any(out.iterdir()):
        return
    if _made_by(out, stage) or any((out / name).exists() for name in markers):
        return
    raise MammoInsightError(
        f"{out} is not empty and holds no earlier '{stage}' output: choose a new or empty --out folder"
    )


def _made_by(out: Path, stage: str) -> bool:
    """Whether OUT/.lock or OUT/manifest.json names `stage` (unreadable ones name nothing)."""
    try:
        words = (out / LOCK_FILE).read_text(encoding="utf-8").split()
        if words and words[0] == stage:
            return True
    except (OSError, UnicodeDecodeError):
        pass
    try:
        return json.loads((out / MANIFEST_FILE).read_text(encoding="utf-8")).get("stage") == stage
    except (OSError, ValueError, AttributeError):
        return False
