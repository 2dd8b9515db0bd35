"""Where a task function runs: a local process pool (one worker included) or a Dask cluster; results stream
back in any order.

Each engine yields records as they finish, so the caller can journal them at once (resume) and move
the progress bar. Nothing runs in the main process: a task that crashes its process (native code, os._exit,
the OOM killer) ends only its worker, and the run goes on. The caller names the modules its workers import
once (``preload``, in the fork server) and a per-worker ``setup`` (imaging keeps OpenCV to one thread there);
the image cache builder (imaging.engines) and the DICOM header scan (cohort.dicom_scan) share this module.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from mammo_insight.errors import MammoInsightError

ENGINES = ("local", "dask")
PARENT_POLL_SECONDS = 0.5
Task = dict[str, Any]


def _exit_when_gone(main_pid: int) -> None:
    while True:
        time.sleep(PARENT_POLL_SECONDS)
        try:
            os.kill(main_pid, 0)
        except ProcessLookupError:
            os._exit(1)
        except PermissionError:  # the pid was reused by another user's process: ours is gone
            os._exit(1)


def worker_init(main_pid: int, setup: Callable[[], None] | None = None) -> None:
    """Pool worker initialiser: the caller's ``setup``; Ctrl-C left to the main process (which shuts the pool
    down); and a watch thread that ends the worker once the main process is gone (kill -9 of the main
    process leaves no worker behind: they block on a queue whose write end they hold themselves)."""
    if setup is not None:
        setup()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_when_gone, args=(main_pid,), daemon=True).start()


@dataclass(frozen=True)
class WorkerSetup:
    """What every worker process starts with: modules imported once in the fork server, then ``setup()``."""

    preload: tuple[str, ...] = ()
    setup: Callable[[], None] | None = None


def _new_pool(workers: int, start: WorkerSetup):
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # forkserver: workers never inherit the parent's threads (OpenCV's pool, Dask's), whose locks
    # a plain fork can copy held and deadlock on
    context = multiprocessing.get_context("forkserver")
    # workers fork from a server that has imported the task's stack once: a fresh pool (after a
    # worker died) starts in milliseconds, not seconds of imports per worker
    if start.preload:
        context.set_forkserver_preload(list(start.preload))
    return ProcessPoolExecutor(
        max_workers=workers,
        mp_context=context,
        initializer=worker_init,
        initargs=(os.getpid(), start.setup),
    )


def _pool_until_broken(
    fn: Callable[[Task], dict], todo: list[Task], workers: int, window: int, start: WorkerSetup
) -> Iterator[dict | list[Task]]:
    """Run tasks from ``todo`` (popped from its end), at most ``window`` in flight; yields each result.

    When a worker process dies (a crash in native decoder code, the kernel's OOM killer) the pool breaks:
    the tasks then in flight are yielded as one list, the suspects, and the generator ends.
    """
    from concurrent.futures import FIRST_COMPLETED, wait
    from concurrent.futures.process import BrokenProcessPool

    pool = _new_pool(workers, start)
    in_flight: dict = {}
    try:
        while todo or in_flight:
            while todo and len(in_flight) < window:
                task = todo.pop()
                in_flight[pool.submit(fn, task)] = task
            finished, _ = wait(in_flight, return_when=FIRST_COMPLETED)
            for future in finished:
                task = in_flight.pop(future)
                try:
                    yield future.result()
                except BrokenProcessPool:
                    yield [task, *in_flight.values()]
                    in_flight.clear()
                    return
    finally:
        for future in in_flight:
            future.cancel()
        pool.shutdown(wait=True, cancel_futures=True)


def how_it_ended(exitcode: int | None) -> str:
    """A dead process's exit status in words: "exit 3", "killed by SIGSEGV"."""
    if exitcode is not None and exitcode < 0:
        try:
            return f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exit {exitcode}"


def _alone(
    fn: Callable[[Task], dict], task: Task, on_crash: Callable[[Task, str], dict], start: WorkerSetup
) -> dict:
    """One suspect of a broken pool in a pool of its own: its result, or on_crash(task, how) if it kills
    that worker too (``how``: the worker's exit status in words)."""
    from concurrent.futures.process import BrokenProcessPool

    pool = _new_pool(1, start)
    try:
        future = pool.submit(fn, task)
        # submit has started the one worker; the pool offers no public way to its exit status
        worker = next(iter((pool._processes or {}).values()), None)
        try:
            return future.result()
        except BrokenProcessPool:
            if worker is None:  # a Python whose pool hides its processes: the file still fails alone
                return on_crash(task, "exit status unknown")
            # the pool's own thread joins its dead worker; joining it here too would race that thread
            # for the fork server's one status message, and the loser reads exit 255
            pool.shutdown(wait=True)
            return on_crash(task, how_it_ended(worker.exitcode))
    finally:
        pool.shutdown(wait=True)


def _pool(
    fn: Callable[[Task], dict],
    tasks: Sequence[Task],
    workers: int,
    on_crash: Callable[[Task, str], dict],
    start: WorkerSetup,
) -> Iterator[dict]:
    """A process pool where a worker that dies takes only its own task with it.

    Tasks are fed ``2 x workers`` at a time, so when the pool breaks only those in flight are suspects;
    each suspect is rerun alone (the one that kills its worker again becomes on_crash(task)), then a
    fresh pool takes the rest.
    """
    todo = list(reversed(tasks))
    while todo:
        suspects: list[Task] = []
        for item in _pool_until_broken(fn, todo, workers, 2 * workers, start):
            if isinstance(item, list):
                suspects = item
            else:
                yield item
        for task in suspects:
            yield _alone(fn, task, on_crash, start)


def _setup_plugin(setup: Callable[[], None]) -> Any:
    """A Dask worker plugin that runs ``setup`` on every worker, those alive now and any that starts while
    the tasks run: ``client.run`` reached only the first, so a worker its nanny restarted after a crash
    decoded without it (OpenCV on every core)."""
    from distributed import WorkerPlugin

    class Setup(WorkerPlugin):
        def setup(self, worker: Any) -> None:
            setup()

    return Setup()


def _dask(
    fn: Callable[[Task], dict],
    tasks: Sequence[Task],
    workers: int,
    address: str | None,
    on_crash: Callable[[Task, str], dict],
    start: WorkerSetup,
) -> Iterator[dict]:
    try:
        from distributed import Client, KilledWorker, LocalCluster, as_completed
    except ImportError as exc:
        raise MammoInsightError(
            "--backend dask needs the optional extra: pip install 'mammo-insight[distributed]'"
        ) from exc
    cluster = None
    # a LocalCluster's nannies set OMP/MKL/OPENBLAS_NUM_THREADS=1 in this process's environment for their
    # workers and leave them there: every later child process (a training run) would get one thread
    environ = dict(os.environ)
    if address:
        client = Client(address)
    else:
        cluster = LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
        )
        client = Client(cluster)
    plugin = f"mammo-insight-setup-{os.getpid()}" if start.setup is not None else None
    try:
        if plugin is not None:
            client.register_plugin(_setup_plugin(start.setup), name=plugin)
        futures = client.map(fn, list(tasks), pure=False)
        task_of = {future.key: task for future, task in zip(futures, tasks, strict=True)}
        for future in as_completed(futures):
            try:
                yield future.result()
            except KilledWorker:  # the task killed every worker Dask gave it to
                yield on_crash(task_of[future.key], "Dask's KilledWorker: every worker it ran on died")
            future.release()
    finally:
        if plugin is not None:  # a cluster reached by address is the user's: leave its future workers alone
            client.unregister_worker_plugin(plugin)
        client.close()
        if cluster is not None:
            cluster.close()
        os.environ.clear()
        os.environ.update(environ)


def run_tasks(
    fn: Callable[[Task], dict],
    tasks: Sequence[Task],
    workers: int = 1,
    engine: str = "local",
    *,
    address: str | None = None,
    on_crash: Callable[[Task, str], dict],
    start: WorkerSetup = WorkerSetup(),
) -> Iterator[dict]:
    """Run ``fn`` over ``tasks``; yields each result as it completes.

    engine "local": a pool of ``workers`` processes, also for one worker (which costs about nothing per
    real image, README, Performance); "dask": a dask.distributed LocalCluster of ``workers`` processes,
    or the scheduler at ``address``. ``on_crash(task, how)`` is the result of a task whose worker process
    died under it, ``how`` that process's exit status in words; the other tasks go on. ``start``: the
    modules each worker imports once and its setup call.
    """
    if engine not in ENGINES:
        raise MammoInsightError(f"unknown backend {engine!r}; choose one of {', '.join(ENGINES)}")
    if not tasks:
        return iter(())
    if engine == "dask":
        return _dask(fn, tasks, workers, address, on_crash, start)
    return _pool(fn, tasks, max(workers, 1), on_crash, start)
