"""A killed or interrupted preprocess (one worker or two: both decode in a pool) leaves no worker process behind."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from mammo_insight.imaging.build import JOURNAL_FILE


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory) -> Path:
    from mammo_insight.synth.cohort import make_synthetic_cohort

    root = tmp_path_factory.mktemp("shutdown_synth")
    make_synthetic_cohort(root, n_patients=12, seed=2, size=(256, 192), prevalence=0.5)
    return root


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT])
def test_no_worker_outlives_a_killed_preprocess(sig, workers, synth_root, tmp_path) -> None:
    out = tmp_path / "cache"
    cmd = [sys.executable, "-m", "mammo_insight.cli.app", "preprocess", "--dataset", "rsna"]
    cmd += ["--root", str(synth_root), "--out", str(out), "--size", "64x32", "--workers", str(workers)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    journal = out / JOURNAL_FILE
    deadline = time.monotonic() + 120
    workers: list[psutil.Process] = []
    while time.monotonic() < deadline and proc.poll() is None:
        if journal.is_file() and journal.read_text().count("\n") >= 2:
            workers = psutil.Process(proc.pid).children(recursive=True)
            proc.send_signal(sig)
            break
        time.sleep(0.01)
    proc.wait(timeout=60)
    if not workers:
        pytest.skip("the run finished before it could be killed")
    gone, alive = psutil.wait_procs(workers, timeout=10)
    assert not alive, [(p.pid, p.cmdline()) for p in alive]
    assert len(gone) >= 2  # the workers and the fork server were there, and ended
