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


def test_readme_lists_every_training_option_with_its_default():
    """The README's options table is the one `options_table` generates from the config dataclass."""
    from mammo_insight.runs.config import options_table

    text = README.read_text()
    table = text.split("<!-- options:start -->\n", 1)[1].split("<!-- options:end -->", 1)[0]
    assert table == options_table(), "README options table is stale: paste runs.config.options_table()"


def test_train_help_lists_every_toml_key():
    from typer.testing import CliRunner

    from mammo_insight.cli.app import app
    from mammo_insight.runs.config import option_rows

    out = CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "200"}).output
    for key, _, default, _ in option_rows():
        assert f"{key} = {default}" in out, key
