"""The Grad-CAM gallery's picks: per fold, the most confident TP, FP, FN and TN at the run's threshold."""

from __future__ import annotations

import pandas as pd

from mammo_insight.explain.gallery import CATEGORIES, select_gallery


def test_gallery_picks_the_most_confident_case_of_each_outcome_including_true_negatives():
    oof = pd.DataFrame(
        {
            "image_id": [f"i{k}" for k in range(10)],
            "fold": [0] * 6 + [1] * 4,
            "cancer": [1, 1, 0, 0, 0, 1, 0, 0, 1, 0],
            "prob": [0.9, 0.2, 0.8, 0.1, 0.05, 0.6, 0.3, 0.01, 0.7, 0.4],
        }
    )
    picks = select_gallery(oof, threshold=0.5, n=1).set_index(["fold", "category"])["case_id"]
    assert list(CATEGORIES) == ["TP", "FP", "FN", "TN"]
    assert picks.loc[0, "TP"] == "i0" and picks.loc[0, "FP"] == "i2" and picks.loc[0, "FN"] == "i1"
    assert picks.loc[0, "TN"] == "i4"  # the negative called clear with the lowest probability
    assert picks.loc[1, "TN"] == "i7" and (1, "FN") not in picks.index
