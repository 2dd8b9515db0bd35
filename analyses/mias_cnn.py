"""mini-MIAS abnormal vs normal from an ImageNet-pretrained start, written as a committed report.

    python analyses/mias_cnn.py /path/to/mias [--work /tmp/mias_cnn] [--out reports/mias_cnn] [--control]
        [--size 256x128] [--config examples/mias_pretrained.toml] [--device cpu]

Runs the toolkit's own commands: preprocess (--size), train with --config (default
examples/mias_pretrained.toml: tf_efficientnet_lite0 from the pip-shipped ImageNet weights, extra
`pretrained`; 5 patient-grouped folds), and explain (Grad-CAM on the fold models, pointing game and energy
inside the MIAS lesion circles next to their chance levels, model-randomisation check). ``--control`` also
trains the same recipe from random weights (--control-config, default examples/mias_random.toml). The GPU
study is ``--size 512x256 --config examples/mias_gpu.toml --control-config examples/mias_gpu_random.toml
--device cuda``. Every step resumes: rerunning after a kill finishes the rest, and a finished run or
explain folder is reused as it is (runs are named after their config file, so recipes sit side by side).

The output is aggregates only: summary.json, results.csv, curves.png and index.html hold metrics with
intervals, curves and the CAM check numbers, never a film or a case page (explain's case PNGs stay in
--work). summary.json's "tried" keeps one row per recipe ever written into the report.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from mammo_insight.explain.checks import in_check_sample
from mammo_insight.metrics import aggregate_to_breast
from mammo_insight.report.blocks import figure, fmt_ci, paragraph, table
from mammo_insight.report.render import Section, render_page
from mammo_insight.runs import run_figures

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
LEVEL = "breast"  # MIAS films are one view per breast: breast and image level coincide
CAM_KEYS = (
    "n_cases",
    "layer",
    "cam_grid",
    "pointing_game",
    "pointing_game_ci",
    "energy_inside",
    "energy_inside_ci",
    "lesion_area_fraction",  # the chance level of both: a map blind to the lesion
    "pointing_game_cell",
    "lesion_area_fraction_cell",
    "randomised_pointing_game",
    "randomised_energy_inside",
    "randomisation_rank_corr",
    "randomisation_rank_corr_ci",
)
CHECK_COLUMNS = ["pointing", "energy_inside", "area_fraction", "rank_corr"]


def true_positive_checks(checks: pd.DataFrame, oof: pd.DataFrame, threshold: float) -> dict:
    """Mean lesion checks over the annotated films the run called abnormal correctly (out-of-fold)."""
    tp = oof.loc[(oof["cancer"] == 1) & (oof["prob"] >= threshold), "image_id"].astype(str)
    # the rows cam_metrics.json averages: gallery films carry lesion checks too, flat maps lack an energy
    sample = in_check_sample(checks)
    rows = checks[checks["image_id"].astype(str).isin(set(tp)) & sample]
    rows = rows.drop_duplicates("image_id")
    return {"n": len(rows), **{c: float(rows[c].mean()) for c in CHECK_COLUMNS if c in rows and len(rows)}}


def check_rows(cam: dict) -> pd.DataFrame:
    """The CAM checks as a readable table: each value with its interval, the true-positive subset last."""
    rows = []
    for key, value in cam.items():
        if key.endswith("_ci") or key == "true_positives":
            continue
        ci = cam.get(f"{key}_ci")
        shown = f"{value:.3f}" if isinstance(value, float) else str(value)
        rows.append({"check": key, "value": shown + (f" ({ci[0]:.3f}-{ci[1]:.3f})" if ci else "")})
    for key, value in cam.get("true_positives", {}).items():
        shown = f"{value:.3f}" if isinstance(value, float) else str(value)
        rows.append({"check": f"true positives: {key}", "value": shown})
    return pd.DataFrame(rows)


def start(*args: str) -> tuple[subprocess.Popen, float]:
    """Start one mammo-insight command in a child process; returns it and its start time."""
    return subprocess.Popen([sys.executable, "-m", "mammo_insight.cli.app", *args]), time.perf_counter()


def cli(*args: str) -> float:
    """Run one mammo-insight command in a child process; returns its wall time in seconds."""
    process, started = start(*args)
    if process.wait():
        raise SystemExit(f"mammo-insight {args[0]} failed with exit status {process.returncode}")
    return time.perf_counter() - started


def rows_of(name: str, metrics: dict) -> dict:
    level = metrics[LEVEL]
    return {
        "model": name,
        "roc_auc": fmt_ci(level["roc_auc"]),
        "pr_auc": fmt_ci(level["pr_auc"]),
        "pf1": fmt_ci(level["pf1"]),
        "balanced_accuracy": fmt_ci(level["balanced_accuracy"]),
        "roc_auc_value": level["roc_auc"]["value"],
    }


def host(device: str) -> str:
    """Where the steps ran, for the wall times: the GPU's name or the CPU core count."""
    if device.startswith("cuda"):
        import torch

        return f"{torch.cuda.get_device_name()}, {os.cpu_count()} CPU cores"
    return f"{os.cpu_count()} CPU cores"


def earlier_summary(out: Path) -> dict:
    path = out / "summary.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def tried_key(summary: dict) -> str:
    """A recipe's name in the "tried" table: its file and the epoch that scored each fold."""
    recipe = summary["recipe"]
    return f"{summary.get('config_file', 'mias_pretrained.toml')}, {recipe.get('select_epoch', 'best')} epoch"


def tried_row(summary: dict) -> dict:
    """One line of the "tried" table: a recipe, where it ran, its AUCs beside the free baselines."""
    recipe = summary["recipe"]
    aucs = {row["model"]: row["roc_auc"] for row in summary["results"]}
    return {
        "size": "x".join(map(str, recipe.get("image_size") or [])),
        "epochs": recipe.get("epochs"),
        "trainable_groups": recipe.get("trainable_groups"),
        "lr": recipe.get("lr"),
        "select_epoch": recipe.get("select_epoch", "best"),  # runs before the option chose the best epoch
        "where": summary.get("host", "2 CPU cores"),
        **{f"roc_auc: {model}": value for model, value in aucs.items()},
        "seconds (train)": summary["wall_seconds"].get("train (pretrained)"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="mini-MIAS folder (Info.txt, mdbNNN.png|pgm)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/mias_cnn"), help="cache, runs, explain")
    parser.add_argument("--out", type=Path, default=Path("reports/mias_cnn"))
    parser.add_argument("--size", default="256x128", help="cache size HxW")
    parser.add_argument("--config", type=Path, default=EXAMPLES / "mias_pretrained.toml")
    parser.add_argument("--control", action="store_true", help="also train the recipe from random weights")
    parser.add_argument("--control-config", type=Path, default=EXAMPLES / "mias_random.toml")
    parser.add_argument("--device", default="cpu", help="explain's device")
    parser.add_argument("--no-explain", action="store_true", help="leave out the Grad-CAM checks (time)")
    args = parser.parse_args()
    work, out = args.work, args.out
    cache = work / f"cache{args.size.replace('x', '_')}"
    configs = {"pretrained": args.config}
    if args.control:
        configs["random weights"] = args.control_config
    runs = {name: work / f"run_{toml.stem}" for name, toml in configs.items()}

    walls = {}
    if not (cache / "index.parquet").is_file():
        walls["preprocess"] = cli(
            "preprocess", "--dataset", "mias", "--root", str(args.root), "--out", str(cache),
            "--size", args.size, "--workers", "1",
        )  # fmt: skip
    todo = {name: run for name, run in runs.items() if not (run / "metrics.json").is_file()}
    trains = {  # side by side: the control needs no result of the pretrained run (a GPU has room for both)
        name: start("train", "--cache", str(cache), "--out", str(run), "--config", str(configs[name]))
        for name, run in todo.items()
    }
    for name, (process, started) in trains.items():
        if process.wait():
            raise SystemExit(f"train ({name}) failed with exit status {process.returncode}")
        walls[f"train ({name})"] = time.perf_counter() - started
    explained = work / f"explain_{args.config.stem}"
    if not args.no_explain and not (explained / "cam_metrics.json").is_file():
        walls["explain"] = cli(
            "explain", "--run", str(runs["pretrained"]), "--cache", str(cache), "--out", str(explained),
            "--n", "1", "--max-checked", "60", "--device", args.device,
        )  # fmt: skip

    results, curves = [], {}
    for name, run in runs.items():
        metrics = json.loads((run / "metrics.json").read_text())
        results.append(rows_of(f"CNN, {name}", metrics))
        oof = pd.read_csv(run / "oof_predictions.csv")
        curves[f"CNN, {name}"] = aggregate_to_breast(oof[oof["cancer"].notna()], "mean")
    baselines = json.loads((runs["pretrained"] / "baselines.json").read_text())
    for name in ("frozen_features", "pixel_logreg", "prevalence_random"):
        if name in baselines:
            results.append(rows_of(name, baselines[name]))
    cam_summary: dict = {"not run": "--no-explain"}
    if not args.no_explain:
        cam = json.loads((explained / "cam_metrics.json").read_text())
        cam_summary = {k: cam.get(k) for k in CAM_KEYS}
        threshold = json.loads((runs["pretrained"] / "config.json").read_text())["thresholds"]["image"]
        cam_summary["true_positives"] = true_positive_checks(
            pd.read_csv(explained / "tables" / "cam_checks.csv"),
            pd.read_csv(runs["pretrained"] / "oof_predictions.csv"),
            threshold,
        )
    config = json.loads((runs["pretrained"] / "config.json").read_text())
    earlier = earlier_summary(out)
    same_recipe = earlier if earlier.get("config_file") == args.config.name else {}
    summary = {
        "config_file": args.config.name,
        "host": host(args.device),
        "task": "mini-MIAS abnormal (benign or malignant) vs normal film, breast level, out-of-fold",
        "recipe": {
            k: config.get(k)
            for k in (
                "model",
                "pretrained",
                "image_size",
                "folds",
                "epochs",
                "lr",
                "batch_size",
                "trainable_groups",
                "layer_decay",
                "pos_weight",
                "select_epoch",
                "device",
                "input_mean",
                "input_std",
            )
        },
        "results": results,
        "cam_checks": cam_summary,
        # a step already measured into this report keeps that wall time (a resumed step's is not its cost)
        "wall_seconds": {**{k: round(v, 1) for k, v in walls.items()}, **same_recipe.get("wall_seconds", {})},
    }
    # a report written before the "tried" table: its one recipe becomes the table's first row
    first = {tried_key(earlier): tried_row(earlier)} if earlier.get("results") else {}
    summary["tried"] = {**(earlier.get("tried") or first), tried_key(summary): tried_row(summary)}
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
    frame = pd.DataFrame(results).drop(columns="roc_auc_value")
    frame.to_csv(out / "results.csv", index=False)
    sections = [
        Section("Out-of-fold results (breast level, 95% intervals resampling women)", [table(frame)]),
        Section(
            "Curves", [figure(lambda: run_figures.roc_pr_curves(curves), "Out-of-fold ROC and PR curves")]
        ),
        Section(
            "Grad-CAM checks on the MIAS lesion circles",
            [
                paragraph(
                    "Pointing game and energy inside the lesion circles over a random sample of annotated "
                    "films; lesion_area_fraction is the chance level of both. true_positives: the same "
                    "checks over the films the run called abnormal correctly."
                ),
                table(check_rows(cam_summary)),
            ],
        ),
        Section(
            "What was tried (every recipe written into this report; the sections above show the last)",
            [table(pd.DataFrame([{"config": k, **v} for k, v in summary["tried"].items()]))],
        ),
        Section(
            f"Recipe and wall time ({summary['host']})",
            [
                table(
                    pd.DataFrame(
                        {"option": list(summary["recipe"]), "value": map(str, summary["recipe"].values())}
                    )
                ),
                table(
                    pd.DataFrame(
                        {"step": list(summary["wall_seconds"]), "seconds": summary["wall_seconds"].values()}
                    )
                ),
            ],
        ),
    ]
    render_page(out / "index.html", "mini-MIAS: pretrained CNN, abnormal vs normal", sections)
    print(frame.to_string(index=False))
    print(json.dumps(cam_summary, default=float))


if __name__ == "__main__":
    main()
