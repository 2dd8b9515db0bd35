"""Where process_one runs: the shared worker engines (mammo_insight.workers) set up for decoding.

Every worker imports the decoding stack once (in the fork server) and keeps OpenCV to one thread: N
workers then use N cores, no more. Nothing is decoded in the main process.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from mammo_insight.workers import ENGINES, Task, WorkerSetup
from mammo_insight.workers import run_tasks as _run_tasks

__all__ = ["ENGINES", "run_tasks", "single_thread_worker"]


def single_thread_worker() -> None:
    """Worker initialiser: one OpenCV thread per process."""
    import cv2

    cv2.setNumThreads(1)


DECODING = WorkerSetup(preload=("mammo_insight.imaging.pipeline",), setup=single_thread_worker)


def run_tasks(
    fn: Callable[[Task], dict],
    tasks: Sequence[Task],
    workers: int = 1,
    engine: str = "local",
    *,
    address: str | None = None,
    on_crash: Callable[[Task, str], dict],
) -> Iterator[dict]:
    """:func:`mammo_insight.workers.run_tasks` with the decoding stack preloaded and one OpenCV thread."""
    return _run_tasks(fn, tasks, workers, engine, address=address, on_crash=on_crash, start=DECODING)
