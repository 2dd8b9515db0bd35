"""Leakage audit: post-outcome columns flagged by definition, label proxies flagged by their AUC."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mammo_insight.cohort.schema import POST_OUTCOME_COLUMNS
from mammo_insight.stats.leakage import LEAKAGE_COLUMNS, audit_leakage, leaky_columns


def _table(n_patients: int = 400, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        age = rng.uniform(40, 80)
        for lat in "LR":
            cancer = float(rng.random() < 0.1)
            for view in ("CC", "MLO"):
                rows.append(
                    {
                        "patient_id": f"p{p}",
                        "image_id": f"p{p}{lat}{view}",
                        "breast_id": f"p{p}_{lat}",
                        "laterality": lat,
                        "view": view,
                        "age": age,
                        "cancer": cancer,
                        # a screening-time column that copies the label 95% of the time
                        "proxy": str(int(cancer) if rng.random() < 0.95 else 1 - int(cancer)),
                        "biopsy": cancer,
                        "noise": rng.normal(),
                        "empty": np.nan,
                    }
                )
    return pd.DataFrame(rows)


def test_audit_flags_proxy_and_post_outcome_but_not_noise():
    audit = audit_leakage(_table())
    assert list(audit.columns) == LEAKAGE_COLUMNS
    audit = audit[audit["audited"] == "values"].set_index("column")
    assert audit.loc["proxy", "verdict"] == "leaky" and audit.loc["proxy", "auc_alone"] >= 0.9
    assert bool(audit.loc["proxy", "available_at_screening"])
    assert audit.loc["biopsy", "verdict"] == "leaky" and not audit.loc["biopsy", "available_at_screening"]
    for col in ("noise", "view", "laterality", "age"):
        assert audit.loc[col, "verdict"] == "ok", col
        assert 0.3 < audit.loc[col, "auc_alone"] < 0.7, col
        assert audit.loc[col, "auc_alone"] >= 0.49, col  # not biased below chance
    assert np.isnan(audit.loc["empty", "auc_alone"]) and audit.loc["empty", "verdict"] == "ok"
    assert not {"patient_id", "image_id", "breast_id", "cancer"} & set(audit.index)


def test_patient_identifier_like_column_gets_no_credit():
    """A per-patient code memorises the label in-sample; patient-grouped folds must not reward it."""
    table = _table()
    table["patient_code"] = table["patient_id"]
    table = table.rename(columns={"patient_id": "pid"}).assign(patient_id=lambda t: t["pid"])
    audit = audit_leakage(table).set_index("column")
    assert audit.loc["patient_code", "auc_alone"] < 0.7


def test_leaky_columns_lists_names():
    assert set(leaky_columns(_table())) == {"proxy", "biopsy"}


@pytest.mark.slow
@pytest.mark.real_data
def test_rsna_post_outcome_columns_are_leaky(data_dir):
    from mammo_insight.cohort.adapters import load_cohort

    cohort = load_cohort("rsna", data_dir / "rsna")
    table = cohort.table
    assert cohort.post_outcome == POST_OUTCOME_COLUMNS  # RSNA's declaration
    audit = audit_leakage(table, post_outcome=cohort.post_outcome)
    audit = audit[audit["audited"] == "values"].set_index("column")
    for col in POST_OUTCOME_COLUMNS:
        assert audit.loc[col, "verdict"] == "leaky", col
        assert not audit.loc[col, "available_at_screening"]
    assert audit.loc["biopsy", "auc_alone"] > 0.9
    screening = [c for c in ("age", "view", "laterality", "site_id", "machine_id", "density", "implant")]
    assert (audit.loc[screening, "verdict"] == "ok").all()
    assert set(leaky_columns(table)) == set(POST_OUTCOME_COLUMNS)
