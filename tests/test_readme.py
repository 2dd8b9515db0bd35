"""The README's Python API example runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.slow
def test_python_api_example_runs(tmp_path, monkeypatch, capsys):
    section = README.read_text().split("### Python API", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})  # noqa: S102 - the README example is the test subject
    out = capsys.readouterr().out
    assert "'women': '40'" in out and "odds_ratio" in out
    assert (tmp_path / "out" / "eda" / "index.html").is_file()
    assert (tmp_path / "out" / "eda" / "manifest.json").is_file()
