"""Task functions for the process-pool tests, in a module the pool's workers import by name (a
monkeypatch in the test process never reaches a worker; this module does)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

DIES_BY_EXIT = "dies_by_exit"
DIES_BY_SEGFAULT = "dies_by_segfault"


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
