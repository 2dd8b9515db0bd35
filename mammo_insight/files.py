"""Writing output files so that nothing half-written ever looks complete."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call write(temporary path) in path's folder, then rename it to path; returns path.

    A kill, a full disk or an exception leaves the old file (or none) instead of a truncated one, and
    two writers never share a temporary name. Every output of every stage is written through here.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def inside_root(path: str | Path, root: str | Path) -> bool:
    """True when ``path``, every symbolic link and '..' resolved, lies inside ``root`` (also resolved).

    The text of a path says nothing about where a link leads: a file or a folder linked out of a dataset
    root passes every check on the text. Every file opened from a table, a folder or an index is checked here.
    """
    real_root = os.path.realpath(root)
    return os.path.commonpath([real_root, os.path.realpath(path)]) == real_root
