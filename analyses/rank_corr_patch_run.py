"""Study: a finished `patch-train` run's randomisation check, over the tissue cells and over the whole canvas.

    python analyses/rank_corr_patch_run.py PATCHRUN [--cache CACHE] [--threads 1]

Slides each fold's saved patch model and the stage's seeded random-weight twin over the annotated films
of that fold (``runs.patch_run.slide_film``, the run's patch size, stride and tissue level) and prints
the mean Spearman correlation of the two maps with a bootstrap interval over films: over the tissue cells
(``explain.lesion_map.randomisation_rank_corr``, what runs report now) and over the whole canvas, where
both maps are 0 off the breast (what runs reported before). Writes nothing into PATCHRUN.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from mammo_insight.explain.checks import rank_correlation
from mammo_insight.explain.lesion_map import randomisation_rank_corr
from mammo_insight.imaging import annotations
from mammo_insight.imaging.cache import load_cache_image
from mammo_insight.metrics.bootstrap import percentile_interval
from mammo_insight.runs.patch import build_patch_model, load_patch_model, patch_run_cache, read_patch_config
from mammo_insight.runs.patch_run import slide_film
from mammo_insight.training.patches import patch_folds
from mammo_insight.training.sources import load_training_table


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
    device = torch.device("cpu")
    table = patch_folds(load_training_table(cache, opts.label_column), opts)
    annotated = set(annotations.by_image(annotations.read(cache)))
    with torch.random.fork_rng(devices=[]):  # the twin patch-train builds
        torch.manual_seed(opts.seed + 1)
        twin = build_patch_model(opts).to(device).eval()
    canvas, cells = [], []
    for fold in range(opts.folds):
        model = load_patch_model(args.patch_run / "folds" / f"fold_{fold}" / "model.pt", opts, device)
        for row in table[table["fold"] == fold].to_dict("records"):
            if row["image_id"] not in annotated:
                continue
            image = load_cache_image(cache, row)
            trained, random = slide_film(model, image, opts, device), slide_film(twin, image, opts, device)
            canvas.append(rank_correlation(trained.heatmap, random.heatmap))
            cells.append(randomisation_rank_corr(trained, random))
    rng = np.random.default_rng(opts.seed)
    for name, values in (("tissue cells", cells), ("whole canvas", canvas)):
        kept = np.array(values)[~np.isnan(values)]
        means = [rng.choice(kept, len(kept)).mean() for _ in range(1000)]
        low, high = percentile_interval(np.array(means), float(kept.mean()))
        print(f"{name}: {kept.mean():.3f} ({low:.3f} to {high:.3f}) over {len(kept)} annotated films")


if __name__ == "__main__":
    main()
