"""The scale-out routes CI must keep alive: preprocess on a Dask cluster (a LocalCluster, and a scheduler
plus workers started apart and reached by address, one of them killed mid-run) and training with DDP
across two CPU processes (gloo), then embed and explain on that run.

Each compares with the single-process result: the same cache bytes, the same out-of-fold rows.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from mammo_insight.cohort.adapters import load_cohort
from mammo_insight.imaging.build import JOURNAL_FILE, Engine, build_cache
from mammo_insight.imaging.cache import read_cache_index
from mammo_insight.imaging.pipeline import PreprocessConfig

pytestmark = pytest.mark.slow
distributed = pytest.importorskip("distributed")

REPO = Path(__file__).resolve().parents[1]
SIZE = (96, 48)
CLI = [sys.executable, "-m", "mammo_insight.cli.app"]


def _env() -> dict[str, str]:
    """Subprocesses import this checkout, whatever is installed."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}


def _cli(*args: str) -> subprocess.CompletedProcess:
    """Run a mammo-insight command on this checkout; the caller checks the exit status."""
    return subprocess.run([*CLI, *args], env=_env(), capture_output=True, text=True, timeout=600, check=False)


def _png_bytes(cache: Path) -> dict[str, bytes]:
    return {str(p.relative_to(cache)): p.read_bytes() for p in sorted((cache / "images").rglob("*.png"))}


def _assert_same_cache(cache: Path, reference: Path) -> None:
    pd.testing.assert_frame_equal(read_cache_index(cache), read_cache_index(reference))
    assert _png_bytes(cache) == _png_bytes(reference)


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory) -> Path:
    from mammo_insight.synth.cohort import make_synthetic_cohort

    root = tmp_path_factory.mktemp("scaleout_synth")
    make_synthetic_cohort(root, n_patients=8, seed=11, size=(128, 96), prevalence=0.5)
    return root


@pytest.fixture(scope="module")
def reference(tmp_path_factory, synth_root) -> Path:
    """The local single-process cache every cluster run must reproduce byte for byte."""
    out = tmp_path_factory.mktemp("scaleout_ref")
    build_cache(
        load_cohort("rsna", synth_root), out, PreprocessConfig(size=SIZE), show_progress=False, sheet_size=0
    )
    return out


@pytest.fixture
def cluster(tmp_path) -> Iterator[str]:
    """A `dask scheduler` and a `dask worker` (2 processes under nannies) on 127.0.0.1; yields the address."""
    scheduler_file = tmp_path / "scheduler.json"
    common = ["--no-dashboard"]
    scheduler = subprocess.Popen(
        ["dask", "scheduler", "--host", "127.0.0.1", "--port", "0", "--scheduler-file", str(scheduler_file)]
        + common,
        env=_env(),
        stderr=subprocess.DEVNULL,
    )
    workers = subprocess.Popen(
        ["dask", "worker", "--scheduler-file", str(scheduler_file), "--nworkers", "2", "--nthreads", "1"]
        + common,
        env=_env(),
        stderr=subprocess.DEVNULL,
    )
    try:
        with distributed.Client(scheduler_file=str(scheduler_file), timeout=60) as client:
            client.wait_for_workers(2, timeout=60)
            address = client.scheduler.address
        yield address
    finally:
        for proc in (workers, scheduler):
            proc.terminate()
            proc.wait(timeout=30)


def _preprocess(root: Path, out: Path, *extra: str) -> list[str]:
    """The preprocess arguments of the tests' synthetic cohort."""
    return [
        "preprocess",
        "--dataset",
        "rsna",
        "--root",
        str(root),
        "--out",
        str(out),
        "--size",
        f"{SIZE[0]}x{SIZE[1]}",
        "--sheet-size",
        "0",
        *extra,
    ]


def test_local_cluster_gives_the_same_cache(tmp_path, synth_root, reference) -> None:
    """...and leaves this process's environment as it was (the nannies set OMP_NUM_THREADS=1 in it, which
    made every later training subprocess single-threaded)."""
    environ = dict(os.environ)
    out = tmp_path / "cache"
    build_cache(
        load_cohort("rsna", synth_root),
        out,
        PreprocessConfig(size=SIZE),
        Engine(2, "dask"),
        show_progress=False,
        sheet_size=0,
    )
    _assert_same_cache(out, reference)
    assert dict(os.environ) == environ


def test_scheduler_by_address_gives_the_same_cache(tmp_path, synth_root, reference, cluster) -> None:
    out = tmp_path / "cache"
    done = _cli(*_preprocess(synth_root, out, "--backend", "dask", "--scheduler", cluster))
    assert done.returncode == 0, done.stderr
    _assert_same_cache(out, reference)


def test_a_worker_killed_mid_run_is_recovered(tmp_path, synth_root, reference, cluster) -> None:
    """SIGKILL one worker once the first images are journaled: its tasks move to the other worker (the
    nanny restarts the dead one), and the cache completes identical to the reference."""
    with distributed.Client(cluster, timeout=60) as client:
        victim = next(iter(client.run(os.getpid).values()))
    out = tmp_path / "cache"
    run = subprocess.Popen(
        CLI + _preprocess(synth_root, out, "--backend", "dask", "--scheduler", cluster),
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    journal = out / JOURNAL_FILE
    killed_at = None
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and run.poll() is None:
        if journal.is_file() and journal.read_text().count("\n") >= 1:
            os.kill(victim, signal.SIGKILL)
            killed_at = journal.read_text().count("\n")
            break
        time.sleep(0.002)
    stdout, stderr = run.communicate(timeout=300)
    assert run.returncode == 0, stderr
    if killed_at is None or killed_at >= len(read_cache_index(reference)):
        pytest.skip("the run finished before a worker could be killed")
    _assert_same_cache(out, reference)
    assert "failed: 0" in stdout


SETUP_MARK = "MAMMO_INSIGHT_TEST_WORKER_SETUP"


def _mark_worker() -> None:
    os.environ[SETUP_MARK] = "done"


def _die_once_then_report(marker: str) -> dict:
    """The first call kills its worker (its nanny starts a new one); the retry says whether the worker it
    ran on went through the setup."""
    if not Path(marker).exists():
        Path(marker).write_text("")
        os.kill(os.getpid(), signal.SIGKILL)
    return {"setup": os.environ.get(SETUP_MARK), "pid": os.getpid()}


def test_a_worker_restarted_mid_run_runs_the_worker_setup(tmp_path) -> None:
    """The setup reaches a worker that starts while the tasks run (a plugin, not a one-off client.run),
    and is taken off the user's scheduler afterwards."""
    import cloudpickle

    from mammo_insight.workers import WorkerSetup, run_tasks

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers need not import this file
    with (
        distributed.LocalCluster(
            n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        (first,) = client.run(os.getpid).values()
        results = list(
            run_tasks(
                _die_once_then_report,
                [str(tmp_path / "died")],
                engine="dask",
                address=cluster.scheduler_address,
                on_crash=lambda task, how: {"crashed": how},
                start=WorkerSetup(setup=_mark_worker),
            )
        )
        assert results == [{"setup": "done", "pid": results[0]["pid"]}] and results[0]["pid"] != first
        assert not any("mammo-insight-setup" in name for name in client.run_on_scheduler(_plugin_names))


def _plugin_names(dask_scheduler) -> list[str]:
    return list(dask_scheduler.worker_plugins)


DDP_CONFIG = """model = "resnet10t"
epochs = 2
folds = 2
batch_size = 8
seed = 3
devices = {devices}
strategy = "{strategy}"
"""


def _train(cache: Path, out: Path, config: Path) -> subprocess.CompletedProcess:
    return _cli("train", "--cache", str(cache), "--out", str(out), "--config", str(config))


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory, reference) -> tuple[Path, Path, subprocess.CompletedProcess]:
    """The synthetic cache trained with DDP: two CPU processes (Lightning picks gloo on the CPU)."""
    root = tmp_path_factory.mktemp("ddp")
    cache = reference
    config = root / "ddp.toml"
    config.write_text(DDP_CONFIG.format(devices=2, strategy="ddp"))
    done = _train(cache, root / "run", config)
    assert done.returncode == 0, done.stderr[-3000:]
    return cache, root / "run", done


def test_ddp_training_scores_every_image_once_and_writes_once(ddp_run) -> None:
    cache, run, done = ddp_run
    oof = pd.read_csv(run / "oof_predictions.csv", dtype={"image_id": str})
    index = read_cache_index(cache)
    assert sorted(oof["image_id"]) == sorted(index["image_id"])  # every image once: no DDP padding copies
    assert set(oof.groupby("patient_id")["fold"].nunique()) == {1}
    assert {"prob", "cancer", "fold"} <= set(oof.columns)
    assert done.stdout.count("report: ") == 1  # rank 0 alone writes and reports
    for fold in (0, 1):
        history = pd.read_csv(run / "folds" / f"fold_{fold}" / "history.csv")
        assert sorted(history["epoch"].unique()) == [0, 1]
    assert not (run / "checkpoints").exists()  # finished folds leave no Lightning checkpoints


def test_ddp_run_resumes_a_deleted_fold(tmp_path, ddp_run) -> None:
    """Fold-level resume under DDP: a fold whose outputs are gone is retrained, the finished one skipped."""
    cache, run, _ = ddp_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    (copy / "folds" / "fold_1" / "oof.csv").unlink()
    config = tmp_path / "ddp.toml"
    config.write_text(DDP_CONFIG.format(devices=2, strategy="ddp"))
    done = _train(cache, copy, config)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "fold 0: already done, skipped" in done.stderr + done.stdout
    before = pd.read_csv(run / "oof_predictions.csv", dtype={"image_id": str}).sort_values("image_id")
    after = pd.read_csv(copy / "oof_predictions.csv", dtype={"image_id": str}).sort_values("image_id")
    assert list(after["image_id"]) == list(before["image_id"])
    fold0 = before["fold"] == 0
    assert after.loc[fold0.values, "prob"].tolist() == before.loc[fold0.values, "prob"].tolist()


def test_embed_and_explain_read_a_ddp_run(tmp_path, ddp_run) -> None:
    cache, run, _ = ddp_run
    embeddings = tmp_path / "emb.parquet"
    done = _cli("embed", "--run", str(run), "--cache", str(cache), "--out", str(embeddings))
    assert done.returncode == 0, done.stderr[-3000:]
    table = pd.read_parquet(embeddings)
    images = table[table["level"] == "image"]
    assert sorted(images["image_id"]) == sorted(read_cache_index(cache)["image_id"])
    explained = tmp_path / "explain"
    done = _cli("explain", "--run", str(run), "--cache", str(cache), "--out", str(explained), "--n", "2")
    assert done.returncode == 0, done.stderr[-3000:]
    assert (explained / "index.html").is_file()
