"""Study: an attention-MIL head over true patch features, from a finished `patch-train` run's fold models.

    python analyses/tile_mil_patch_run.py PATCHRUN [--cache CACHE] [--stride 16] [--threads 1]

For each outer fold k, fold k's saved patch model is run on every tissue tile of every film (the tiles
the lesion map cuts at ``--stride``: ``explain.lesion_map.tile_features``); each film's bag is its tiles'
pooled backbone features. ``analyses.tile_mil.out_of_fold_scores`` fits, on the films outside fold k, the
gated attention-MIL head and the mean of the bag's features with a logistic regression, and scores fold k's
films. Beside them, the max of fold k's tile scores on fold k's films: at stride 32 the non-overlapping
tiles of `patch_cells_zero_shot.py`'s ``max_of_tiles``, at the run's map stride the run's ``prob``.
Prints image- and breast-level ROC-AUC and PR-AUC with intervals resampling women. Writes nothing into
PATCHRUN; each fold model runs over every film, so this costs folds x the films' tiles.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tile_mil import MilRecipe, out_of_fold_scores

from mammo_insight.imaging.cache import load_cache_image
from mammo_insight.metrics import evaluate_predictions
from mammo_insight.runs.patch import load_patch_model, patch_run_cache, read_patch_config
from mammo_insight.runs.tiles import tile_features
from mammo_insight.training.patches import patch_folds
from mammo_insight.training.sources import load_training_table


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("patch_run", type=Path)
    parser.add_argument("--cache", type=Path, help="default: the cache recorded in PATCHRUN/config.json")
    parser.add_argument("--stride", type=int, default=16, help="tile grid stride in cache pixels")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    opts = read_patch_config(args.patch_run)
    cache = args.cache or patch_run_cache(args.patch_run)
    device = torch.device("cpu")
    films = patch_folds(load_training_table(cache, opts.label_column), opts).reset_index(drop=True)
    images = [load_cache_image(cache, row) for row in films.to_dict("records")]
    tile_max = np.full(len(films), np.nan)
    started = time.perf_counter()

    def bags_of_fold(fold: int) -> list[np.ndarray]:
        fold_started = time.perf_counter()
        model = load_patch_model(args.patch_run / "folds" / f"fold_{fold}" / "model.pt", opts, device)
        bags = []
        for i, image in enumerate(images):
            features, logits = tile_features(
                model,
                image,
                patch_size=opts.patch_size,
                stride=args.stride,
                tissue_level=opts.tissue_level,
                device=device,
            )
            bags.append(features)
            if films.at[i, "fold"] == fold:  # the max of the tile scores: fold k's model on fold k's films
                tile_max[i] = 1 / (1 + np.exp(-logits.max())) if len(logits) else 0.0
        n_tiles = sum(len(b) for b in bags)
        print(
            f"fold {fold}: {n_tiles} tiles ({n_tiles / len(bags):.0f} per film) "
            f"in {time.perf_counter() - fold_started:.0f} s",
            flush=True,
        )
        return bags

    recipe = MilRecipe(seed=opts.seed)
    scores = out_of_fold_scores(
        bags_of_fold, films[opts.label_column].to_numpy(), films["fold"].to_numpy(), recipe
    )
    print(f"{len(films)} films, stride {args.stride}, {time.perf_counter() - started:.0f} s in all")
    scored = films.assign(max_of_tiles=tile_max, **scores)
    for column in ("attention_mil", "mean_logistic", "max_of_tiles"):
        levels = evaluate_predictions(
            pd.DataFrame(scored), None, seed=opts.seed, label=opts.label_column, prob=column
        )
        for level in ("image", "breast"):
            auc, ap = levels[level]["roc_auc"], levels[level]["pr_auc"]
            print(
                f"{column:14s} {level:7s} ROC-AUC {auc['value']:.3f} ({auc['ci_low']:.3f}-{auc['ci_high']:.3f})"
                f"  PR-AUC {ap['value']:.3f} ({ap['ci_low']:.3f}-{ap['ci_high']:.3f})"
            )


if __name__ == "__main__":
    main()
