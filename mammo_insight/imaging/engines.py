"""Where process_one runs: inline, a local process pool, or a Dask cluster; results stream back in any order.

Each engine yields records as they finish, so the caller can journal them at once (resume) and move
the progress bar. Every worker keeps OpenCV to one thread: N workers then use N cores, no more.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

from mammo_insight.errors import MammoInsightError

ENGINES = ("local", "dask")
Task = dict[str, Any]


def single_thread_worker() -> None:
    """Worker initialiser: one OpenCV thread per process."""
    import cv2

    cv2.setNumThreads(1)


def _inline(fn: Callable[[Task], dict], tasks: Sequence[Task]) -> Iterator[dict]:
    import cv2

    before = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        for task in tasks:
            yield fn(task)
    finally:
        cv2.setNumThreads(before)


def _pool(fn: Callable[[Task], dict], tasks: Sequence[Task], workers: int) -> Iterator[dict]:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    # forkserver: workers never inherit the parent's threads (OpenCV's pool, Dask's), whose locks
    # a plain fork can copy held and deadlock on
    context = multiprocessing.get_context("forkserver")
    with ProcessPoolExecutor(
        max_workers=workers, mp_context=context, initializer=single_thread_worker
    ) as pool:
        futures = [pool.submit(fn, task) for task in tasks]
        try:
            for future in as_completed(futures):
                yield future.result()
        finally:
            for future in futures:
                future.cancel()


def _dask(
    fn: Callable[[Task], dict], tasks: Sequence[Task], workers: int, address: str | None
) -> Iterator[dict]:
    try:
        from distributed import Client, LocalCluster, as_completed
    except ImportError as exc:
        raise MammoInsightError(
            "--backend dask needs the optional extra: pip install 'mammo-insight[distributed]'"
        ) from exc
    cluster = None
    if address:
        client = Client(address)
    else:
        cluster = LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
        )
        client = Client(cluster)
    try:
        client.run(single_thread_worker)
        futures = client.map(fn, list(tasks), pure=False)
        for future in as_completed(futures):
            yield future.result()
            future.release()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def run_tasks(
    fn: Callable[[Task], dict],
    tasks: Sequence[Task],
    workers: int = 1,
    engine: str = "local",
    *,
    address: str | None = None,
) -> Iterator[dict]:
    """Run ``fn`` over ``tasks``; yields each result as it completes.

    engine "local": inline when workers == 1 (no pickling), else a process pool; "dask": a
    dask.distributed LocalCluster of ``workers`` processes, or the scheduler at ``address``.
    """
    if engine not in ENGINES:
        raise MammoInsightError(f"unknown backend {engine!r}; choose one of {', '.join(ENGINES)}")
    if not tasks:
        return iter(())
    if engine == "dask":
        return _dask(fn, tasks, workers, address)
    if workers <= 1:
        return _inline(fn, tasks)
    return _pool(fn, tasks, workers)
