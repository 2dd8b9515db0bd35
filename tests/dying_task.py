"""Task functions for the process-pool tests, in a module the pool's workers import by name (a
monkeypatch in the test process never reaches a worker; this module does)."""

from __future__ import annotations

import errno
import os
import signal
from pathlib import Path

DIES_BY_EXIT = "dies_by_exit"
DIES_BY_SEGFAULT = "dies_by_segfault"
DISK_FULL_MARK = ".disk_full"


def dies_on_request(task: dict) -> dict:
    """The worker process dies (a stand-in for a segfault in native code) on the task that asks for it."""
    if task.get("die"):
        os._exit(3)
    return {"image_id": task["image_id"], "status": "ok", "reason": None}


def process_or_die(task: dict) -> dict:
    """process_one, except that a file whose name starts with dies_by_exit or dies_by_segfault ends the
    worker the way a decoder's native code can: os._exit(3), or a real SIGSEGV."""
    from mammo_insight.imaging.pipeline import process_one

    name = Path(task["image_path"]).name
    if name.startswith(DIES_BY_EXIT):
        os._exit(3)
    if name.startswith(DIES_BY_SEGFAULT):
        os.kill(os.getpid(), signal.SIGSEGV)
    return process_one(task)


def process_on_a_disk_that_fills_up(task: dict) -> dict:
    """process_one, on a disk that fills up at the image whose DICOM has a sidecar file NAME.disk_full
    beside it: that image's PNG write gets half its bytes down, then ENOSPC, as a real full disk does."""
    from mammo_insight.imaging.pipeline import process_one

    if not Path(task["image_path"]).with_suffix(DISK_FULL_MARK).exists():
        return process_one(task)
    write_bytes = Path.write_bytes

    def half_then_full(self: Path, data: bytes) -> int:
        write_bytes(self, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))

    Path.write_bytes = half_then_full  # this worker process only, and only for this one task
    try:
        return process_one(task)
    finally:
        Path.write_bytes = write_bytes
