"""Holm's correction, held to statsmodels' multipletests (which the study no longer calls: it runs a full
garbage collection on every call), and the GLM fits' one BLAS thread."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from statsmodels.stats.multitest import multipletests

from mammo_insight.stats.tests import ALPHA, holm

P_VALUES = st.lists(
    st.one_of(st.floats(0, 1), st.sampled_from([0.0, 1.0, 0.01, 0.05, 0.0125])), min_size=1, max_size=40
)


@settings(max_examples=60, deadline=None)
@given(P_VALUES)
def test_holm_gives_statsmodels_adjusted_p_values_and_decisions(p_values):
    p = np.array(p_values)
    reject, expected, _, _ = multipletests(p, alpha=ALPHA, method="holm")
    adjusted = holm(p)
    np.testing.assert_allclose(adjusted, expected, rtol=1e-12, atol=0)
    assert ((adjusted <= ALPHA) == reject).all()


def test_holm_leaves_a_missing_p_value_missing_and_still_counts_it_as_a_test():
    adjusted = holm(np.array([0.01, np.nan, 0.02]))
    assert np.isnan(adjusted[1])
    np.testing.assert_allclose(adjusted[[0, 2]], [0.03, 0.04])  # m = 3, as statsmodels counts it


def test_the_study_fits_its_glms_on_one_blas_thread_whatever_the_process_uses(tmp_path, monkeypatch):
    """fit_models (and every GLM caller) runs on one BLAS thread: two spin between a fit's small products."""
    from statsmodels.genmod.generalized_linear_model import GLM
    from threadpoolctl import threadpool_info, threadpool_limits

    from mammo_insight.cohort.adapters import load_cohort
    from mammo_insight.stats.factors import build_study_frame
    from mammo_insight.stats.regression import fit_models
    from mammo_insight.synth.table import RSNA_COLUMNS, make_synthetic_table

    make_synthetic_table(300, 0, 0.2)[RSNA_COLUMNS].to_csv(tmp_path / "train.csv", index=False)
    study = build_study_frame(load_cohort("rsna", tmp_path).table)
    threads: list[int] = []
    fit = GLM.fit

    def recording_fit(self, *args, **kwargs):
        threads.extend(i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas")
        return fit(self, *args, **kwargs)

    monkeypatch.setattr(GLM, "fit", recording_fit)
    with threadpool_limits(2, user_api="blas"):
        fit_models(study.frame, study.factors)
        assert {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"} == {2}
    assert threads and set(threads) == {1}
