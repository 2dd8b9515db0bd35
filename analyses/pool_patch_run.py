"""Study: the learned pooling against the max on a finished `patch-train` run, from its saved fold models.

    python analyses/pool_patch_run.py PATCHRUN [--cache CACHE] [--out OUT.csv] [--threads 2]

Slides each fold's saved patch model over its own fold's films again (``runs.patch_run.slide_film``,
the run's patch size, stride and tissue level), records the map statistics, fits the stacked pooling
(``models.map_pooling``) and prints image- and breast-level ROC-AUC of the max and of the learned score
with patient-bootstrap intervals. Writes nothing into PATCHRUN, so a run written before the pooling
existed can be measured without retraining; ``--out`` keeps the per-film table.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd
import torch

from mammo_insight.imaging.cache import load_cache_image
from mammo_insight.metrics import evaluate_predictions
from mammo_insight.runs.map_pooling import learned_film_scores
from mammo_insight.runs.patch import load_patch_model, patch_run_cache, read_patch_config
from mammo_insight.runs.patch_run import slide_film
from mammo_insight.stages.patch_train import film_record
from mammo_insight.training.patches import patch_folds
from mammo_insight.training.sources import load_training_table


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("patch_run", type=Path)
    parser.add_argument("--cache", type=Path, help="default: the cache recorded in PATCHRUN/config.json")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    opts = read_patch_config(args.patch_run)
    cache = args.cache or patch_run_cache(args.patch_run)
    device = torch.device("cpu")
    table = patch_folds(load_training_table(cache, opts.label_column), opts)
    recorded = pd.read_csv(args.patch_run / "oof_predictions.csv", dtype={"image_id": str})
    folds_now = table.set_index(table["image_id"].astype(str))["fold"]
    assert (folds_now.loc[recorded["image_id"]].to_numpy() == recorded["fold"].to_numpy()).all(), (
        "folds differ"
    )
    started = time.perf_counter()
    rows = []
    for fold in range(opts.folds):
        model = load_patch_model(args.patch_run / "folds" / f"fold_{fold}" / "model.pt", opts, device)
        for row in table[table["fold"] == fold].to_dict("records"):
            scored = slide_film(model, load_cache_image(cache, row), opts, device)
            rows.append(film_record(row, fold, scored, opts.label_column))
    films = pd.DataFrame(rows)
    films["prob_learned"], coefficients = learned_film_scores(films, opts.label_column)
    print(f"{len(films)} films rescored in {time.perf_counter() - started:.0f} s")
    same = (
        films.set_index("image_id")["prob"].loc[recorded["image_id"]].to_numpy() - recorded["prob"].to_numpy()
    )
    print(f"max |prob - recorded prob| = {abs(same).max():.2e}")
    for name, column in (("max (prob)", "prob"), ("learned", "prob_learned")):
        levels = evaluate_predictions(films, None, seed=opts.seed, label=opts.label_column, prob=column)
        for level in ("image", "breast", "breast_max"):
            auc = levels[level]["roc_auc"]
            print(
                f"{name:12s} {level:10s} ROC-AUC {auc['value']:.3f} ({auc['ci_low']:.3f}-{auc['ci_high']:.3f})"
            )
    print("coefficients (standardised inputs) per fold:")
    weights = {
        k: {n: v for n, v in fit.items() if not isinstance(v, dict)} for k, fit in coefficients.items()
    }
    print(pd.DataFrame(weights).T.round(2).to_string())
    if args.out:
        films.to_csv(args.out, index=False)


if __name__ == "__main__":
    main()
