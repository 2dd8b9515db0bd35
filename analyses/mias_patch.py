"""mini-MIAS through the patch route, written next to the whole-image results in reports/mias_cnn/.

    python analyses/mias_patch.py /path/to/mias [--work /tmp/mias_patch] [--out reports/mias_cnn]
        [--model resnet10t] [--patch-size 32] [--epochs 8] [--size 256x128] [--pretrained]
        [--device cpu] [--whole-image-config TOML]

Runs the toolkit's own commands: preprocess (256x128, the cache the whole-image study used) and
patch-train (patches of the annotated lesion circles and of breast tissue, 5 patient-grouped folds,
the whole-image folds; --pretrained starts from ImageNet weights), optionally a whole-image model
fine-tuned end to end from each fold's patch model (--whole-image-config: `train --init-patch-run`),
then puts the patch route's out-of-fold film score (the maximum of its lesion
map) beside the whole-image fine-tune, the frozen-feature probe and the pixel baseline read from
OUT/summary.json (written by analyses/mias_cnn.py), and its lesion-map checks beside Grad-CAM's.

Aggregates only: patch_route.json and patch_route.html, never a film. Each step resumes: a finished
cache or patch run in --work is reused as it is (a reused patch run's time is the one its metrics.json
recorded, the stage's own clock without start-up).
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

from mammo_insight.report.blocks import fmt_ci, paragraph, table
from mammo_insight.report.render import Section, render_page

LEVEL = "breast"  # one film per breast in MIAS: breast and image level coincide
CHECKS = (  # (label, lesion-map key, Grad-CAM key in summary.json's cam_checks)
    ("pointing game", "pointing_game", "pointing_game"),
    ("chance level (lesion share of the crop)", "lesion_area_fraction", "lesion_area_fraction"),
    ("pointing game, half-cell tolerance", "pointing_game_cell", "pointing_game_cell"),
    ("its chance level", "lesion_area_fraction_cell", "lesion_area_fraction_cell"),
    ("energy inside the lesions", "energy_inside", "energy_inside"),
    ("random weights: pointing game", "randomised_pointing_game", "randomised_pointing_game"),
    ("random weights: energy inside", "randomised_energy_inside", "randomised_energy_inside"),
    ("rank correlation with the random-weight map", "randomisation_rank_corr", "randomisation_rank_corr"),
)


def cli(*args: str) -> float:
    """Run one mammo-insight command in a child process; returns its wall time in seconds."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "mammo_insight.cli.app", *args], check=True)
    return time.perf_counter() - start


def _value(entry: dict, key: str) -> str:
    value, ci = entry.get(key), entry.get(f"{key}_ci")
    if value is None:
        return ""
    if ci and None not in ci:
        return f"{value:.3f} ({ci[0]:.3f}-{ci[1]:.3f})"
    return f"{value:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="mini-MIAS folder (Info.txt, mdbNNN.png|pgm)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/mias_patch"))
    parser.add_argument("--out", type=Path, default=Path("reports/mias_cnn"))
    parser.add_argument("--model", default="resnet10t")
    parser.add_argument("--patch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--size", default="256x128", help="cache size HxW")
    parser.add_argument("--pretrained", action="store_true", help="ImageNet start of the patch model")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument(
        "--whole-image-config",
        type=Path,
        help="train this recipe from each fold's patch model (train --init-patch-run) and add its row",
    )
    args = parser.parse_args()
    size = args.size.replace("x", "_")
    cache = args.work / ("cache" if args.size == "256x128" else f"cache{size}")
    origin = "_imagenet" if args.pretrained else ""
    run = args.work / f"patch_{args.model}{origin}_{args.patch_size}_e{args.epochs}" if args.size == "256x128" else (
        args.work / f"patch_{args.model}{origin}_{size}_{args.patch_size}_e{args.epochs}"
    )  # fmt: skip
    earlier_file = args.out / "patch_route.json"
    earlier = json.loads(earlier_file.read_text()) if earlier_file.is_file() else {}
    walls = earlier.get("wall_seconds", {}) if earlier.get("run") == run.name else {}
    if not (cache / "index.parquet").is_file():
        walls["preprocess"] = cli(
            "preprocess", "--dataset", "mias", "--root", str(args.root), "--out", str(cache),
            "--size", "256x128", "--workers", "1",
        )  # fmt: skip
    if not (run / "metrics.json").is_file():
        walls["patch-train"] = cli(
            "patch-train", "--cache", str(cache), "--out", str(run), "--model", args.model,
            "--patch-size", str(args.patch_size), "--epochs", str(args.epochs), "--folds", "5",
            "--device", args.device, "--batch-size", str(args.batch_size),
            "--pretrained" if args.pretrained else "--no-pretrained",
        )  # fmt: skip
    whole_run = (
        run.with_name(f"{run.name}_whole_{args.whole_image_config.stem}") if args.whole_image_config else None
    )
    if whole_run is not None and not (whole_run / "metrics.json").is_file():
        walls["train from the patch models"] = cli(
            "train", "--cache", str(cache), "--out", str(whole_run), "--config", str(args.whole_image_config),
            "--no-pretrained", "--init-patch-run", str(run), "--device", args.device,
        )  # fmt: skip
    metrics = json.loads((run / "metrics.json").read_text())
    if "patch-train" not in walls:  # a run made elsewhere: the stage's own clock, start-up left out
        walls["patch-train (the stage's own clock)"] = metrics["seconds"]
    maps = json.loads((run / "lesion_map_metrics.json").read_text())
    config = json.loads((run / "config.json").read_text())
    whole = (
        json.loads((args.out / "summary.json").read_text()) if (args.out / "summary.json").is_file() else {}
    )

    rows = [
        {
            "model": f"patch route: {config['model']} on {config['patch_size']}px lesion patches, film = max of its map",
            "roc_auc": fmt_ci(metrics[LEVEL]["roc_auc"]),
            "pr_auc": fmt_ci(metrics[LEVEL]["pr_auc"]),
            "pf1": fmt_ci(metrics[LEVEL]["pf1"]),
            "balanced_accuracy": fmt_ci(metrics[LEVEL]["balanced_accuracy"]),
        },
        *({k: v for k, v in r.items() if k != "roc_auc_value"} for r in whole.get("results", [])),
    ]
    if whole_run is not None:
        fine_tuned = json.loads((whole_run / "metrics.json").read_text())[LEVEL]
        rows.insert(1, {
            "model": f"whole image, fine-tuned end to end from the fold's patch model ({args.whole_image_config.name})",
            **{k: fmt_ci(fine_tuned[k]) for k in ("roc_auc", "pr_auc", "pf1", "balanced_accuracy")},
        })  # fmt: skip
    cam = whole.get("cam_checks", {})
    check_rows = [
        {
            "check": label,
            "patch lesion map": _value(maps, key),
            "Grad-CAM (whole-image CNN)": _value(cam, cam_key),
        }
        for label, key, cam_key in CHECKS
    ]
    patch_row = {
        "level": "patch (out-of-fold)",
        "n": metrics["patch"]["n"],
        "positives": metrics["patch"]["n_pos"],
        "roc_auc": fmt_ci(metrics["patch"]["roc_auc"]),
        "pr_auc": fmt_ci(metrics["patch"]["pr_auc"]),
    }
    tried = {
        **earlier.get("tried", {}),
        run.name: {
            "model": config["model"],
            "patch_size": config["patch_size"],
            "epochs": config["epochs"],
            "size": args.size,
            "film_roc_auc": fmt_ci(metrics[LEVEL]["roc_auc"]),
            "whole_image_from_patches_roc_auc": rows[1]["roc_auc"] if whole_run is not None else "",
            "patch_roc_auc": fmt_ci(metrics["patch"]["roc_auc"]),
            "pointing_game": _value(maps, "pointing_game"),
            "chance": _value(maps, "lesion_area_fraction"),
            "seconds (stage clock)": metrics["seconds"],
        },
    }
    summary = {
        "run": run.name,
        "task": "mini-MIAS abnormal vs normal film through a lesion-patch classifier, out-of-fold",
        "recipe": {k: config[k] for k in ("model", "pretrained", "patch_size", "lesion_patches", "jitter",
                                          "background_ratio", "epochs", "lr", "batch_size", "folds", "map_stride")},
        "patch_level": patch_row,
        "results": rows,
        "lesion_map_checks": maps,
        "wall_seconds": {k: round(v, 1) for k, v in walls.items()},
        "tried": tried,
    }  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    earlier_file.write_text(json.dumps(summary, indent=2, default=float))
    sections = [
        Section(
            "Film-level results beside the whole-image route (breast level, 95% intervals resampling women)",
            [
                paragraph(
                    "The patch route scores a film by the maximum of its out-of-fold lesion map: the fold's "
                    "patch classifier slid over the breast of each film of the women it never saw. The other "
                    "rows are the whole-image study's (analyses/mias_cnn.py, index.html beside this page)."
                ),
                table(pd.DataFrame(rows)),
            ],
        ),
        Section("Patch level", [table(pd.DataFrame([patch_row]))]),
        Section(
            "Lesion-map checks beside Grad-CAM's, on the MIAS lesion circles",
            [
                paragraph(
                    f"Lesion map: every annotated film ({maps.get('n_images')}) scored by its fold's model. "
                    f"Grad-CAM: the whole-image study's random sample of {cam.get('n_cases', '?')} annotated "
                    "films. Both in original pixels against the circles; the chance level of the pointing "
                    "game and of the energy is the lesion's share of the breast crop."
                ),
                table(pd.DataFrame(check_rows)),
            ],
        ),
        Section(
            "What was tried (every recipe run into this report; the first section shows the last run)",
            [table(pd.DataFrame([{"run": k, **v} for k, v in tried.items()]))],
        ),
        Section(
            f"Recipe and wall time ({'GPU' if args.device != 'cpu' else 'CPU'}, {os.cpu_count()} CPU cores)",
            [
                table(pd.DataFrame({"option": list(summary["recipe"]), "value": map(str, summary["recipe"].values())})),
                table(pd.DataFrame({"step": list(summary["wall_seconds"]), "seconds": summary["wall_seconds"].values()})),
            ],
        ),
    ]  # fmt: skip
    render_page(args.out / "patch_route.html", "mini-MIAS: the lesion-patch route", sections)
    print(pd.DataFrame(rows).to_string(index=False))
    print(pd.DataFrame(check_rows).to_string(index=False))


if __name__ == "__main__":
    main()
