"""Study: what a patch model's head says about the whole film's feature map, with nothing trained on top.

    python analyses/patch_cells_zero_shot.py PATCHRUN [--cache CACHE] [--threads 1]

The whole-image models of `train --init-patch-run --pool ...` read the patch backbone's feature map of the
whole film (one cell per 32 pixels for an EfficientNet), not the patch model's input: a 32-pixel patch on
its own. This scores each fold's films with fold k's patch model run once over the whole film (cache
size), four ways, zero-shot: its head on the averaged feature map (what `pool = "avg"` starts from), on
the channel-wise max (`pool = "max"`), and the max and mean of its head applied to every cell (a lesion
map read off the whole-film feature map), and the max of the patch model run on each tile of a grid of
non-overlapping patch-sized tiles on tissue (the sliding lesion map at stride = patch). Beside the sliding lesion map's max (`prob` of the run), it
says how much of the patch signal the whole-film feature map keeps. Writes nothing into PATCHRUN.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd
import torch

from mammo_insight.imaging.cache import load_cache_image
from mammo_insight.metrics import evaluate_predictions
from mammo_insight.runs.patch import load_patch_model, patch_run_cache, read_patch_config
from mammo_insight.training.patches import patch_folds
from mammo_insight.training.sources import load_training_table

SCORES = ("head_on_avg", "head_on_max", "max_of_cell_heads", "mean_of_cell_heads", "max_of_tiles")


def film_scores(
    model: torch.nn.Module, image: torch.Tensor, *, patch: int, tissue_level: float
) -> dict[str, float]:
    """The zero-shot logits of one (1, 1, H, W) film; ``max_of_tiles``: the patch model on each tile of a
    grid of patch-sized tiles (stride = patch), tiles centred on tissue only, as the lesion map slides."""
    fmap = model.backbone.forward_features(model.normalize(image))[0]  # (C, h, w)
    cells = model.head(fmap.flatten(1).T).squeeze(-1)  # the patch head on every cell
    tiles = torch.nn.functional.unfold(image, patch, stride=patch)[0].T.reshape(-1, 1, patch, patch)
    on_tissue = tiles[:, 0, patch // 2, patch // 2] > tissue_level
    return {
        "head_on_avg": float(model.head(fmap.mean(dim=(1, 2)))),
        "head_on_max": float(model.head(fmap.amax(dim=(1, 2)))),
        "max_of_cell_heads": float(cells.max()),
        "mean_of_cell_heads": float(cells.mean()),
        "max_of_tiles": float(model(tiles[on_tissue]).max()) if on_tissue.any() else float("-inf"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("patch_run", type=Path)
    parser.add_argument("--cache", type=Path, help="default: the cache recorded in PATCHRUN/config.json")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    opts = read_patch_config(args.patch_run)
    cache = args.cache or patch_run_cache(args.patch_run)
    table = patch_folds(load_training_table(cache, opts.label_column), opts)
    started = time.perf_counter()
    rows = []
    with torch.no_grad():
        for fold in range(opts.folds):
            model = load_patch_model(
                args.patch_run / "folds" / f"fold_{fold}" / "model.pt", opts, torch.device("cpu")
            )
            for row in table[table["fold"] == fold].to_dict("records"):
                image = torch.from_numpy(load_cache_image(cache, row))[None, None]
                scores = film_scores(model, image, patch=opts.patch_size, tissue_level=opts.tissue_level)
                rows.append({**row, **scores})
    films = pd.DataFrame(rows)
    print(f"{len(films)} films scored in {time.perf_counter() - started:.0f} s")
    for column in SCORES:
        films["prob"] = torch.sigmoid(torch.tensor(films[column].to_numpy())).numpy()
        auc = evaluate_predictions(films, None, seed=opts.seed, label=opts.label_column)["image"]["roc_auc"]
        print(f"{column:20s} ROC-AUC {auc['value']:.3f} ({auc['ci_low']:.3f}-{auc['ci_high']:.3f})")


if __name__ == "__main__":
    main()
