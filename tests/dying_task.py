"""A task function for the process-pool tests, in a module without heavy imports (each fresh worker imports it)."""

from __future__ import annotations

import os


def dies_on_request(task: dict) -> dict:
    """The worker process dies (a stand-in for a segfault in native code) on the task that asks for it."""
    if task.get("die"):
        os._exit(3)
    return {"image_id": task["image_id"], "status": "ok", "reason": None}
