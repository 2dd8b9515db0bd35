"""Bootstrap intervals that resample patients, vectorised so 54k rows x 1000 resamples take about a second.

Images of one woman are correlated (both breasts, both views share her anatomy and her scanner), so
resampling rows would give intervals that are too narrow. Each resample draws groups (patients) with
replacement; a resample is a vector of per-group counts, and every metric becomes a weighted metric:
- threshold metrics and pF1 come from per-group sufficient statistics (counts, sums of prob) times
  the count matrix: one matrix product for all resamples;
- ROC-AUC and average precision come from ranks: rows are sorted once, and per resample a cumulative
  sum of negative weights gives, for each positive, the weight of negatives ranked below it.
Resamples that hold a single class are skipped (all their metrics are NaN) and counted.
"""

from __future__ import annotations

import hashlib
import logging
from functools import lru_cache

import numpy as np
import pandas as pd
from scipy import sparse
from scipy.stats import norm, rankdata

from mammo_insight.metrics.core import (
    BEST_F1,
    METRIC_NAMES,
    THRESHOLD_FREE,
    ThresholdRule,
    clean_inputs,
    counts_metrics,
    pf1_from_sums,
    point_metrics,
    tune_threshold,
)

logger = logging.getLogger(__name__)

CI_LEVEL = 0.95
MIN_VALID_RESAMPLES = 10
_CHUNK_CELLS = 4_000_000  # resamples x groups held at once in the rank metrics


def group_codes(groups, n: int) -> tuple[np.ndarray, int]:
    """Integer codes 0..G-1 of the resampling unit; without groups every row is its own unit."""
    if groups is None:
        return np.arange(n), n
    codes, uniques = pd.factorize(pd.Series(np.asarray(groups)), use_na_sentinel=True)
    missing = codes < 0
    if missing.any():  # a row with no group id is its own unit rather than lumped with the others
        codes = codes.copy()
        codes[missing] = len(uniques) + np.arange(int(missing.sum()))
    return codes.astype(np.int64), int(codes.max()) + 1 if codes.size else 0


@lru_cache(maxsize=1)
def resample_counts(n_groups: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n_groups) counts, read-only: how often each group is drawn in each resample.

    The same draws serve every model a stage scores on the same patients (fuse-train scores and compares
    a dozen on one cohort), so the last matrix is kept: drawing it again cost a second and a half per
    model at 240,000 women; one matrix of that size holds 1 GB, which the cache keeps until the next size.
    """
    rng = np.random.default_rng(seed)
    counts = np.empty((n_boot, n_groups), dtype=np.float32)
    for b in range(n_boot):  # one small bincount per resample beats one huge one (cache-friendly)
        counts[b] = np.bincount(rng.integers(0, n_groups, n_groups), minlength=n_groups)
    counts.flags.writeable = False
    return counts


def _weighted_sums(weights: np.ndarray, per_group: np.ndarray) -> np.ndarray:
    """weights @ per_group in float64, a block of resamples at a time: converting the whole float32 matrix
    at once allocated (and paged in) 2 GB per call at 240,000 women."""
    out = np.empty((weights.shape[0], per_group.shape[1]))
    step = max(1, _CHUNK_CELLS // max(weights.shape[1], 1))
    block = np.empty((min(step, weights.shape[0]), weights.shape[1]))
    for lo in range(0, weights.shape[0], step):
        rows = weights[lo : lo + step]
        np.copyto(block[: len(rows)], rows)
        np.matmul(block[: len(rows)], per_group, out=out[lo : lo + len(rows)])
    return out


def _rank_metrics(
    y: np.ndarray, p: np.ndarray, codes: np.ndarray, weights: np.ndarray
) -> dict[str, np.ndarray]:
    """Weighted ROC-AUC and average precision for each row of `weights` (resamples x groups).

    Both need, for each positive, the resampled weight of negatives ranked strictly below its score
    level and tied with it. Rows are sorted once; the cut points (start and end of each positive's
    level) split the negatives into intervals, and a sparse (interval x group) count matrix times the
    resample weights gives every interval's weight in every resample at once. Its cumulative sum over
    intervals is the negative weight below each cut. Cost: one sparse product of n_negatives x n_boot.
    """
    order = np.argsort(p, kind="mergesort")
    ys, ps, cs = y[order], p[order], codes[order]
    n, n_groups = ys.size, weights.shape[1]
    new_level = np.r_[True, ps[1:] != ps[:-1]] if n else np.zeros(0, bool)
    starts = np.flatnonzero(new_level)
    ends = np.r_[starts[1:], n]
    level = np.cumsum(new_level) - 1
    pos_idx = np.flatnonzero(ys == 1)
    a, e = starts[level[pos_idx]], ends[level[pos_idx]]  # the level of each positive: rows [a, e)
    pos_below = np.searchsorted(pos_idx, a, side="left")  # positives ranked strictly below its level
    cuts = np.unique(np.r_[a, e])
    neg_idx = np.flatnonzero(ys == 0)
    interval = np.searchsorted(
        cuts, neg_idx, side="right"
    )  # a negative counts below cut j when j >= interval
    counts = sparse.csr_matrix(
        (np.ones(neg_idx.size, np.float32), (interval, cs[neg_idx])), shape=(cuts.size + 1, n_groups)
    )
    a_cut, e_cut = np.searchsorted(cuts, a), np.searchsorted(cuts, e)
    n_boot = weights.shape[0]
    auc, ap = np.full(n_boot, np.nan), np.full(n_boot, np.nan)
    step = max(1, _CHUNK_CELLS // max(n_groups, 1))
    for lo in range(0, n_boot, step):
        w = weights[lo : lo + step]
        per_interval = np.asarray(
            counts @ np.ascontiguousarray(w.T), dtype=np.float64
        )  # intervals x resamples
        below_cut = np.cumsum(per_interval, axis=0).T  # [:, j]: negative weight below cuts[j]; [:, -1]: all
        total_neg = below_cut[:, -1]
        w_pos = w[:, cs[pos_idx]].astype(np.float64)
        cum_pos = np.zeros((w.shape[0], pos_idx.size + 1))
        np.cumsum(w_pos, axis=1, out=cum_pos[:, 1:])
        total_pos = cum_pos[:, -1]
        neg_below = below_cut[:, a_cut]
        neg_tied = below_cut[:, e_cut] - neg_below
        with np.errstate(divide="ignore", invalid="ignore"):
            auc[lo : lo + step] = (w_pos * (neg_below + 0.5 * neg_tied)).sum(1) / (total_pos * total_neg)
            tp_at = total_pos[:, None] - cum_pos[:, pos_below]
            fp_at = total_neg[:, None] - neg_below
            precision_at = np.where(w_pos > 0, tp_at / (tp_at + fp_at), 0.0)  # undrawn positives add nothing
            ap[lo : lo + step] = (w_pos * precision_at).sum(1) / total_pos
    # sums of products round: keep each resample inside the metric's range (AUC 1 must not read 1 + 1 ulp)
    return {"roc_auc": np.clip(auc, 0.0, 1.0), "pr_auc": np.clip(ap, 0.0, 1.0)}


def bootstrap_metrics(
    y, p, codes: np.ndarray, weights: np.ndarray, *, threshold: float | None, names: list[str] | None = None
) -> dict[str, np.ndarray]:
    """Every metric (or those in `names`) for each resample; NaN where the resample has one class."""
    names = names or METRIC_NAMES
    n_groups = weights.shape[1]
    pos = y == 1
    pc = np.clip(p, 0.0, 1.0)
    stats = {
        "n_pos": pos.astype(float),
        "n_neg": (~pos).astype(float),
        "ctp": np.where(pos, pc, 0.0),
        "cfp": np.where(pos, 0.0, pc),
    }
    if threshold is not None:
        pred = p >= threshold
        stats.update(
            tp=(pred & pos).astype(float),
            fp=(pred & ~pos).astype(float),
            fn=(~pred & pos).astype(float),
            tn=(~pred & ~pos).astype(float),
        )
    keys = list(stats)
    per_group = np.stack([np.bincount(codes, weights=stats[k], minlength=n_groups) for k in keys], axis=1)
    summed = dict(zip(keys, _weighted_sums(weights, per_group).T, strict=True))
    out: dict[str, np.ndarray] = {"pf1": pf1_from_sums(summed["ctp"], summed["cfp"], summed["n_pos"])}
    if threshold is not None:
        out.update(counts_metrics(summed["tn"], summed["fp"], summed["fn"], summed["tp"]))
    if {"roc_auc", "pr_auc"} & set(names):
        out.update(_rank_metrics(y, p, codes, weights))
    valid = (summed["n_pos"] > 0) & (summed["n_neg"] > 0)
    return {k: np.where(valid, out[k], np.nan) for k in names if k in out}


ROUNDING = 1e-9  # resampled metrics are sums of float products: a bound may sit this far past the estimate


def percentile_interval(
    values: np.ndarray, point: float, level: float = CI_LEVEL, min_valid: int = MIN_VALID_RESAMPLES
) -> tuple[float, float]:
    """Percentile interval of the finite resampled values, NaN when fewer than `min_valid` are finite.

    A bound that passes the point estimate by no more than rounding error is set to the estimate, so
    degenerate cases (AUC exactly 0 or 1, all scores tied, a constant statistic) give an interval that
    holds its own estimate instead of one an ulp beside it.
    """
    values = np.asarray(values, dtype=float)
    finite = values[np.isfinite(values)]
    if finite.size < max(min_valid, 1):
        return float("nan"), float("nan")
    tail = (1 - level) / 2 * 100
    low, high = (float(v) for v in np.percentile(finite, [tail, 100 - tail]))
    if np.isfinite(point):
        tolerance = ROUNDING * max(1.0, abs(point))
        if point < low <= point + tolerance:
            low = float(point)
        if point - tolerance <= high < point:
            high = float(point)
    return low, high


def metrics_with_ci(
    y_true,
    prob,
    groups=None,
    threshold: float | None = None,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    rule: ThresholdRule = BEST_F1,
) -> dict:
    """Every point metric with a 95% percentile-bootstrap interval resampling groups (patients).

    Returns {metric: {"value", "ci_low", "ci_high"}, ..., "threshold", "threshold_source", "n", "n_pos",
    "n_groups", "n_boot", "n_boot_valid"}. With threshold=None the threshold is tuned (best F1) on these
    same rows by ``rule`` (`ThresholdRule`: best_f1, prevalence, or the highest cut reaching a target
    sensitivity), which flatters the threshold metrics (accuracy .. f1, confusion counts): pass a threshold
    tuned on other data (e.g. the training run's out-of-fold predictions) for an honest figure.
    The threshold itself is held fixed across resamples. Unlabelled rows (NaN label) are dropped.
    """
    y, p, g = clean_inputs(y_true, prob, np.arange(np.asarray(prob).size) if groups is None else groups)
    labels, probs = np.asarray(y_true, dtype=float).ravel(), np.asarray(prob, dtype=float).ravel()
    n_missing = int((~np.isnan(labels) & np.isnan(probs)).sum())
    source = "given"
    if threshold is None:
        threshold = rule.tune(y, p)
        source = f"tuned ({rule.describe()}) on these data: optimistic"
    codes, n_groups = group_codes(None if groups is None else g, y.size)
    point = point_metrics(y, p, threshold)
    boot = (
        bootstrap_metrics(y, p, codes, resample_counts(n_groups, n_boot, seed), threshold=threshold)
        if n_boot > 0 and y.size
        else {k: np.full(0, np.nan) for k in METRIC_NAMES}
    )
    result: dict = {}
    for name in METRIC_NAMES:
        low, high = percentile_interval(boot[name], point[name])
        result[name] = {"value": point[name], "ci_low": low, "ci_high": high}
    n_valid = int(np.isfinite(boot["roc_auc"]).sum()) if len(boot["roc_auc"]) else 0
    result.update(
        threshold=float(threshold),
        threshold_source=source,
        n=int(y.size),
        n_pos=int((y == 1).sum()),
        n_groups=int(n_groups),
        n_boot=int(n_boot),
        n_boot_valid=n_valid,
        n_missing_prob=n_missing,
    )
    return result


def paired_bootstrap(
    y_true,
    prob_a,
    prob_b,
    groups=None,
    *,
    metric: str = "roc_auc",
    n_boot: int = 1000,
    seed: int = 0,
    threshold: float | None = None,
) -> dict[str, float]:
    """Difference metric(a) - metric(b) on the same rows, with a 95% interval and a two-sided p-value.

    Both models are scored on the same patient resamples, so the shared case mix cancels out. The p-value
    is the bootstrap tail: 2 * min(share of resampled differences <= 0, share >= 0), with a +1 correction.
    Threshold metrics use `threshold` for both models (or each model's own best-F1 threshold when None).
    """
    pairs = PairedBootstrap(y_true, groups, n_boot=n_boot, seed=seed)
    return pairs.compare(("a", prob_a), ("b", prob_b), metric=metric, threshold=threshold)


class PairedBootstrap:
    """Paired bootstraps of several models on the same labels, patients and resamples (paired_bootstrap).

    Each model's point value and resampled values on a set of rows are computed once and reused by every
    pair it is in: fuse-train compares a dozen pairs of five models, and one resampled ROC-AUC of
    240,000 women costs seconds.
    """

    def __init__(self, y_true, groups=None, *, n_boot: int = 1000, seed: int = 0) -> None:
        self.y_true, self.groups, self.n_boot, self.seed = y_true, groups, n_boot, seed
        self._done: dict[tuple, tuple[float, np.ndarray]] = {}

    def compare(
        self,
        a: tuple[str, np.ndarray],
        b: tuple[str, np.ndarray],
        *,
        metric: str = "roc_auc",
        threshold: float | None = None,
    ) -> dict[str, float]:
        """metric(a) - metric(b) (each a (name, probabilities) pair) as paired_bootstrap reports it."""
        (name_a, prob_a), (name_b, prob_b) = a, b
        groups = np.arange(np.asarray(prob_a).size) if self.groups is None else self.groups
        # the pair's common rows: a row either model could not score is left out for both
        unscored = np.isnan(np.asarray(prob_a, dtype=float)) | np.isnan(np.asarray(prob_b, dtype=float))
        y, pa, pb, g = clean_inputs(self.y_true, np.where(unscored, np.nan, prob_a), prob_b, groups)
        pa, pb = pa.astype(float), pb.astype(float)
        if metric not in METRIC_NAMES:
            raise ValueError(f"unknown metric {metric!r}; one of {', '.join(METRIC_NAMES)}")
        ta = tb = threshold
        if metric not in THRESHOLD_FREE and threshold is None:
            ta, tb = tune_threshold(y, pa), tune_threshold(y, pb)
        codes, n_groups = group_codes(None if self.groups is None else g, y.size)
        weights = resample_counts(n_groups, self.n_boot, self.seed)
        rows = hashlib.blake2b(unscored.tobytes()).hexdigest()

        def resampled(name: str, p: np.ndarray, t: float | None) -> tuple[float, np.ndarray]:
            key = (name, metric, t, rows)
            if key not in self._done:
                point = point_metrics(y, p, 0.5 if t is None else t)[metric]
                self._done[key] = (
                    point,
                    bootstrap_metrics(y, p, codes, weights, threshold=t, names=[metric])[metric],
                )
            return self._done[key]

        (value_a, da), (value_b, db) = resampled(name_a, pa, ta), resampled(name_b, pb, tb)
        d = (da - db)[np.isfinite(da - db)]
        low, high = percentile_interval(da - db, value_a - value_b)
        p_value = (
            min(1.0, 2 * min((d <= 0).sum() + 1, (d >= 0).sum() + 1) / (d.size + 1))
            if d.size
            else float("nan")
        )
        return {
            "metric": metric,
            "value_a": float(value_a),
            "value_b": float(value_b),
            "diff": float(value_a - value_b),
            "ci_low": low,
            "ci_high": high,
            "p_value": float(p_value),
            "n_boot_valid": int(d.size),
        }


def delong_test(y_true, prob_a, prob_b) -> dict[str, float]:
    """DeLong's test for two correlated ROC-AUCs on the same rows (fast midrank algorithm, Sun & Xu 2014).

    Treats rows as independent: with several images per patient, prefer `paired_bootstrap` with groups,
    or run this at breast or patient level. NaN when one class is absent.
    """
    y, pa, pb = clean_inputs(y_true, prob_a, prob_b)
    pos, neg = y == 1, y == 0
    m, n = int(pos.sum()), int(neg.sum())
    nan = float("nan")
    if m < 2 or n < 2:
        return {"auc_a": nan, "auc_b": nan, "diff": nan, "z": nan, "p_value": nan}
    scores = np.stack([pa, pb]).astype(float)
    x, yy = scores[:, pos], scores[:, neg]
    tx, ty = rankdata(x, axis=1), rankdata(yy, axis=1)
    tz = rankdata(np.concatenate([x, yy], axis=1), axis=1)
    aucs = (tz[:, :m].sum(axis=1) / m - (m + 1) / 2) / n
    v01 = (tz[:, :m] - tx) / n
    v10 = 1.0 - (tz[:, m:] - ty) / m
    cov = np.cov(v01) / m + np.cov(v10) / n
    diff = float(aucs[0] - aucs[1])
    var = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    if var <= 0:
        z, p_value = nan, (1.0 if diff == 0 else 0.0)
    else:
        z = diff / np.sqrt(var)
        p_value = float(2 * norm.sf(abs(z)))
    return {"auc_a": float(aucs[0]), "auc_b": float(aucs[1]), "diff": diff, "z": float(z), "p_value": p_value}
