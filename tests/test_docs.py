"""The docs cannot rot: the README's shape, the pages generated from the code, every tutorial's commands,
the notebook, and a command named beside every figure in the results and benchmarks pages.

Reference pages are rendered at build time by docs/_hooks/reference.py (`mkdocs build --strict` in
.ci/run); these tests check what the renderers produce against the code they read.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
TUTORIALS = sorted((DOCS / "tutorials").glob("*.md"))
# figures quoted in these pages must name the command that produces them
FIGURE_PAGES = [DOCS / "explanation" / "results.md", DOCS / "explanation" / "benchmarks.md"]


def _hooks():
    spec = importlib.util.spec_from_file_location("docs_reference", DOCS / "_hooks" / "reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_is_short_with_the_quick_start_first():
    lines = README.read_text().splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines; move detail into docs/"
    head = "\n".join(lines[:30])
    assert 'pip install -e ".[dev]" && mammo-insight demo' in head and "python -m pytest" in head


def test_every_docs_link_in_the_readme_points_at_a_page():
    for target in re.findall(r"\]\(((?:docs|examples)/[^)#]+)", README.read_text()):
        assert (ROOT / target).is_file(), target


def test_training_options_page_lists_every_option_with_its_default():
    """The page is the table the config's field docs generate: every key, type, default and meaning."""
    hooks = _hooks()
    page = (DOCS / "reference" / "training-options.md").read_text()
    rendered = hooks.render(page)
    assert "<!-- generated" not in rendered
    rows = hooks.config_module().option_rows()
    assert len(rows) > 40
    for key, type_name, default, meaning in rows:
        assert f"| `{key}` | {type_name.replace('|', chr(92) + '|')} | `{default}` |" in rendered, key
        assert meaning.strip(), f"training option {key} has no field doc"


def test_the_training_options_example_loads(tmp_path):
    """The page's example recipe is a valid --config file with the values it shows."""
    page = (DOCS / "reference" / "training-options.md").read_text()
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(re.search(r"```toml\n(.*?)```", page, re.DOTALL).group(1))
    config = _hooks().config_module().load_config(recipe)
    assert (config.epochs, config.warmup_epochs, config.select_epoch) == (12, 2, "last")
    assert config.augment.rotate_degrees == 10.0


def test_train_help_lists_every_toml_key():
    from typer.testing import CliRunner

    from mammo_insight.cli.app import app

    out = CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "200"}).output
    for key, _, default, _ in _hooks().config_module().option_rows():
        assert f"{key} = {default}" in out, key


def test_command_reference_lists_every_command_and_option():
    import typer.main

    from mammo_insight.cli.app import COMMANDS, app

    text = _hooks().cli_reference()
    commands = typer.main.get_command(app).commands
    assert set(commands) == {name.replace("_", "-") for name in COMMANDS}
    for name, command in commands.items():
        section = text.split(f"## `{name}`\n", 1)[1].split("\n## `", 1)[0]
        for param in command.params:
            shown = param.opts if param.param_type_name == "option" else [param.name.upper()]
            for opt in shown:
                assert f"`{opt}`" in section, f"{name} {opt}"
    assert "| `--out` | path | required |" in text.split("## `eda`", 1)[1]


def test_every_generated_marker_is_known_and_every_page_renders():
    hooks = _hooks()
    for page in DOCS.rglob("*.md"):
        for name in hooks.MARKER.findall(page.read_text()):
            assert name in hooks.RENDERERS, f"{page}: unknown marker {name}"


def test_the_notebook_page_shows_the_saved_results():
    rendered = _hooks().notebook()
    assert "run_synth" in rendered and "run_fuse" in rendered
    assert rendered.count('class="nb-output"') >= 5, "the notebook was saved without its results"


@pytest.mark.slow
def test_python_api_example_runs(tmp_path, monkeypatch, capsys):
    """Getting started's Python example, exactly as printed."""
    section = (DOCS / "getting-started.md").read_text().split("## From Python", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "getting-started.md", "exec"), {})  # noqa: S102 - the docs example is the test subject
    out = capsys.readouterr().out
    assert "'women': '40'" in out and "odds_ratio" in out
    assert (tmp_path / "out" / "eda" / "index.html").is_file()
    assert (tmp_path / "out" / "eda" / "manifest.json").is_file()


# --- figures name their command -------------------------------------------------------------------

FIGURE = re.compile(r"(?<![\w.])\d+\.\d+(?![\w.])|\b\d[\d,]*(?:\.\d+)?\s?(?:s|ms|min|%|MB|GB|img/s)\b")
COMMAND = re.compile(r"`(?:python |mammo-insight |/usr/bin/time|PYTHONPATH=|torchrun |pip )[^`]*`")


def markdown_blocks(text: str) -> list[tuple[str, str, str]]:
    """(heading, kind, text) of each paragraph, list item and table outside code fences."""
    blocks: list[tuple[str, str, str]] = []
    heading, lines, fenced = "", [], False

    def flush(kind: str = "para") -> None:
        if lines:
            blocks.append((heading, kind, "\n".join(lines)))
            lines.clear()

    kind = "para"
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
            continue
        if fenced:
            continue
        is_row = line.startswith("|")
        if line.startswith(("#", "- ")) or not line.strip() or is_row != (kind == "table"):
            flush(kind)
            kind = "table" if is_row else "para"
        if line.startswith("#"):
            heading = line
        elif line.strip():
            lines.append(line)
    flush(kind)
    return blocks


def unsourced_figures(text: str) -> list[str]:
    """Blocks quoting a figure with no command in their section before or in them.

    A table passes when one of its rows or the paragraph introducing it names the command; a paragraph
    when it, or an earlier block of its section, does ("the command above").
    """
    missing, sourced, previous = [], set(), ""
    for heading, kind, block in markdown_blocks(text):
        names = bool(COMMAND.search(block))
        if FIGURE.search(block) and not names:
            introduced = kind == "table" and COMMAND.search(previous)
            if not introduced and heading not in sourced:
                missing.append(f"{heading} :: {block[:100]}")
        if names:
            sourced.add(heading)
        previous = block
    return missing


def test_the_figure_check_finds_a_figure_without_its_command():
    bad = "## A\n\nThe model reached 0.91 (0.88-0.94).\n\n## B\n\n| x | 0.5 |\n"
    assert len(unsourced_figures(bad)) == 2
    good = "## A\n\n`python benchmarks/x.py` prints it:\n\n| x | 0.5 |\n\nSo 0.5 it is.\n"
    assert unsourced_figures(good) == []


@pytest.mark.parametrize("page", FIGURE_PAGES, ids=lambda p: p.name)
def test_every_figure_names_the_command_that_produces_it(page):
    assert unsourced_figures(page.read_text()) == []


# --- tutorials and the notebook run ---------------------------------------------------------------

BLOCK = re.compile(r"<!-- tutorial: (run|skip|needs)\s*([^>]*?)\s*-->\n```bash\n(.*?)```", re.DOTALL)


def tutorial_blocks(page: Path) -> list[tuple[str, str, str]]:
    """(kind, detail, script) of each marked bash block; every bash block must carry a marker."""
    text = page.read_text()
    blocks = BLOCK.findall(text)
    assert len(blocks) == text.count("```bash"), f"{page.name}: a bash block without a tutorial marker"
    for kind, detail, _ in blocks:
        assert kind == "run" or detail, f"{page.name}: '{kind}' needs a reason or a variable"
    return blocks


def test_every_tutorial_block_is_marked():
    assert sum(len(tutorial_blocks(page)) for page in TUTORIALS) >= 15


def _data_env() -> dict[str, str]:
    """RSNA and MIAS from MAMMO_INSIGHT_DATA_DIR when set (the tutorials make synthetic data otherwise)."""
    data = os.environ.get("MAMMO_INSIGHT_DATA_DIR")
    env = {}
    if data:
        for name, folder in (("RSNA", "rsna"), ("MIAS", "mias")):
            if (Path(data) / folder).is_dir():
                env[name] = str(Path(data) / folder)
    return env


# the metadata-plus-images tutorial's folder for each stage's outputs (reference/outputs.md's tables)
TUTORIAL_OUTPUTS = {
    "synth": "work/synth",
    "preprocess": "work/cache",
    "train": "work/run",
    "fuse-train": "work/fuse",
}


def listed_outputs(stage: str) -> list[str]:
    """The files reference/outputs.md lists for a stage, relative to its folder (fold_k as fold_0).

    Rows marked as written only with an option ("with `--...`") or for one dataset ("(CBIS-DDSM)") are left out.
    """
    text = (DOCS / "reference" / "outputs.md").read_text()
    section = text.split(f"\n## {stage}\n", 1)[1].split("\n## ", 1)[0]
    files = []
    for row in re.findall(r"^\| (`[^|]+) \| ([^\n]*) \|$", section, re.MULTILINE):
        if "with `--" in row[1] or "(CBIS-DDSM)" in row[1]:
            continue
        names = re.findall(r"`([^`]+)`", row[0])
        folder = names[0].split("/", 1)[1].rsplit("/", 1)[0] if names[0].count("/") > 1 else ""
        for i, name in enumerate(names):
            relative = name.split("/", 1)[1] if i == 0 else f"{folder}/{name}".lstrip("/")
            files.append(relative.replace("<patient>/<image>.dcm", "").replace("fold_k", "fold_0"))
    return files


def test_listed_outputs_reads_the_tables():
    assert "tables/shap_groups.csv" in listed_outputs("fuse-train")
    assert "folds/fold_0/model.pt" in listed_outputs("train")
    assert "shift.json" not in listed_outputs("train")


@pytest.mark.slow
@pytest.mark.parametrize("page", [p for p in TUTORIALS if "```bash" in p.read_text()], ids=lambda p: p.stem)
def test_tutorial_commands_run(page, tmp_path):
    blocks = tutorial_blocks(page)
    data = _data_env()
    needed = {detail for kind, detail, _ in blocks if kind == "needs"}
    absent = sorted(needed - set(data))
    if absent:
        pytest.skip(f"needs {', '.join(absent)} from MAMMO_INSIGHT_DATA_DIR (the public data)")
    runnable = [script for kind, _, script in blocks if kind in ("run", "needs")]
    if not runnable:
        pytest.skip("every block needs a GPU or a cluster")
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    # the commands as a reader types them, run by this interpreter and this checkout's code
    preamble = 'set -euo pipefail\nmammo-insight() { "$PY" -m mammo_insight.cli.app "$@"; }\npython() { "$PY" "$@"; }\n'
    env = {**os.environ, **data, "PY": sys.executable, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}
    env = {k: v for k, v in env.items() if k in data or k not in ("RSNA", "MIAS")}
    done = subprocess.run(
        ["bash", "-c", preamble + "\n".join(runnable)],
        check=False,
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert (tmp_path / "work").is_dir()
    html = list((tmp_path / "work").rglob("index.html"))
    assert html, "the tutorial wrote no report"
    if page.stem == "metadata-plus-images":  # every output file the reference lists is there
        for stage, folder in TUTORIAL_OUTPUTS.items():
            for name in listed_outputs(stage):
                assert (tmp_path / folder / name).exists(), f"{stage}: {name} (reference/outputs.md)"


@pytest.mark.slow
def test_quickstart_notebook_runs(tmp_path):
    nbclient = pytest.importorskip("nbclient")
    import nbformat

    notebook = nbformat.read(ROOT / "examples" / "quickstart.ipynb", as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs = []
    client = nbclient.NotebookClient(
        notebook, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    env = {"PYTHONPATH": str(ROOT)}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        client.execute()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    results = [
        o
        for c in notebook.cells
        if c.cell_type == "code"
        for o in c.outputs
        if o.output_type == "execute_result"
    ]
    assert len(results) >= 7 and all("text/html" in o.data for o in results)
    assert any("ROC-AUC" in o.data["text/html"] for o in results)
    for stage in ("eda", "run", "fuse"):
        assert (tmp_path / "quickstart_out" / stage / "manifest.json").is_file(), stage
    shutil.rmtree(tmp_path / "quickstart_out")
