"""atomic_write: a failed write leaves the old file and no temporary behind."""

from __future__ import annotations

import errno
import os

import pytest

from mammo_insight.files import atomic_write, write_text_atomic


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = write_text_atomic(tmp_path / "metrics.json", "old")

    def half_then_fail(tmp):
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, half_then_fail)
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_two_writers_use_distinct_temporaries(tmp_path):
    seen = []
    atomic_write(tmp_path / "a.csv", lambda tmp: (seen.append(tmp), tmp.write_text("1")))
    atomic_write(tmp_path / "a.csv", lambda tmp: (seen.append(tmp), tmp.write_text("2")))
    assert seen[0] != seen[1] and (tmp_path / "a.csv").read_text() == "2"
    assert all(p.parent == tmp_path and p.name.startswith(".a.csv.") for p in seen)


def test_a_full_disk_names_the_file_being_written_not_its_temporary(tmp_path):
    def full(tmp):
        tmp.write_text("half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp))

    with pytest.raises(OSError) as caught:
        atomic_write(tmp_path / "index.parquet", full)
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(tmp_path / "index.parquet")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002], ids=["022", "077", "002"])
def test_outputs_get_the_mode_open_would_give_under_the_umask(tmp_path, umask):
    """A report written for colleagues is readable by them: 0666 & ~umask, as open() gives, not mkstemp's 0600."""
    old = os.umask(umask)
    try:
        written = write_text_atomic(tmp_path / "index.html", "<p>report</p>")
        with open(tmp_path / "plain.html", "w") as handle:
            handle.write("<p>report</p>")
    finally:
        os.umask(old)
    assert written.stat().st_mode & 0o777 == 0o666 & ~umask
    assert written.stat().st_mode & 0o777 == (tmp_path / "plain.html").stat().st_mode & 0o777
