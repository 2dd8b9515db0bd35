"""`predict --format rsna`: the RSNA competition's submission table from the breast table."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from mammo_insight.cohort.adapters.rsna import submission as rsna_submission


def test_rsna_submission_names_breasts_patient_laterality_and_leaves_out_what_it_cannot_name(caplog):
    breasts = pd.DataFrame(
        {
            "breast_id": ["10_L", "10_R", "11_L", "12_IMG7", "13_R"],
            "patient_id": ["10", "10", "11", "12", "13"],
            "laterality": ["L", "R", "l", None, "R"],
            "prob": [0.2, 0.7, 0.05, 0.4, np.nan],
        }
    )
    with caplog.at_level(logging.WARNING):
        out = rsna_submission(breasts)
    assert list(out.columns) == ["prediction_id", "cancer"]
    assert out["prediction_id"].tolist() == ["10_L", "10_R", "11_L"]
    assert out["cancer"].tolist() == [0.2, 0.7, 0.05]
    assert "2 breast(s) left out of the RSNA file" in caplog.text and "12_IMG7, 13_R" in caplog.text
