"""Point metrics of a binary classifier: the definitions every stage shares.

All functions take a label vector (1/0) and a probability vector and never raise on degenerate
input: a metric that is undefined (an AUC with one class present, pF1 with no positives) is NaN.
Rows whose label is NaN are dropped first (unlabelled images cannot be scored), and so are labelled
rows without a probability (an image that failed to load), with a warning; metrics_with_ci counts them.

Conventions (chosen to match scikit-learn where it defines them):
- a prediction is positive when prob >= threshold;
- precision with no predicted positive is 0 (scikit-learn's zero_division=0), and so is npv (the
  negative predictive value) with no predicted negative;
- specificity is the recall of the negatives, f1_negative the F1 of the negative class (scikit-learn's
  f1_score with pos_label=0);
- macro_f1 is the unweighted mean of the per-class F1 over the classes present (as scikit-learn);
- balanced_accuracy is the mean of the recalls of the classes present;
- pr_auc is average precision (the step-wise area, scikit-learn's average_precision_score).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import rankdata

logger = logging.getLogger(__name__)

METRIC_NAMES = [
    "accuracy",
    "balanced_accuracy",
    "precision",
    "recall",
    "specificity",
    "npv",
    "f1",
    "f1_negative",
    "macro_f1",
    "pf1",
    "roc_auc",
    "pr_auc",
    "tn",
    "fp",
    "fn",
    "tp",
]
THRESHOLD_FREE = ["pf1", "roc_auc", "pr_auc"]


def clean_inputs(y_true, prob, *others) -> tuple[np.ndarray, ...]:
    """Labels and probabilities as float arrays with unlabelled rows (NaN label) removed."""
    y = np.asarray(y_true, dtype=float).ravel()
    p = np.asarray(prob, dtype=float).ravel()
    if y.shape != p.shape:
        raise ValueError(f"labels ({y.size}) and probabilities ({p.size}) differ in length")
    keep = ~np.isnan(y)
    missing = keep & np.isnan(p)
    if missing.any():  # a failed image must not sink the whole evaluation; it is logged and counted
        logger.warning("%d labelled row(s) have no probability (NaN) and are not scored", int(missing.sum()))
        keep &= ~missing
    rest = tuple(np.asarray(o)[keep] for o in others)
    return (y[keep], p[keep], *rest)


def pf1_from_sums(ctp, cfp, n_pos, beta: float = 1.0):
    """pF1 from its sufficient statistics (scalars or arrays): see `pf1`."""
    ctp, cfp, n_pos = (np.asarray(a, dtype=float) for a in (ctp, cfp, n_pos))
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = ctp / (ctp + cfp)
        recall = ctp / n_pos
        b2 = beta * beta
        out = (1 + b2) * precision * recall / (b2 * precision + recall)
    out = np.where((precision + recall) > 0, out, 0.0)
    out = np.where(n_pos > 0, out, np.nan)
    return out


def pf1(y_true, prob, beta: float = 1.0) -> float:
    """Probabilistic F-beta, the RSNA Screening Mammography competition metric.

    Probabilities are used as soft counts, with no threshold:
        ctp = sum(prob over positives), cfp = sum(prob over negatives)
        precision = ctp / (ctp + cfp), recall = ctp / n_positives
        pF_beta = (1 + beta^2) * precision * recall / (beta^2 * precision + recall)   (0 when both are 0)
    Probabilities are clipped to [0, 1] as in the competition's reference code. NaN with no positives.
    """
    y, p = clean_inputs(y_true, prob)
    p = np.clip(p, 0.0, 1.0)
    return float(pf1_from_sums(p[y == 1].sum(), p[y == 0].sum(), (y == 1).sum(), beta))


def roc_auc(y_true, prob) -> float:
    """ROC-AUC through midranks (the Mann-Whitney statistic); NaN when one class is absent."""
    y, p = clean_inputs(y_true, prob)
    n_pos, n_neg = int((y == 1).sum()), int((y == 0).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(p)
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def average_precision(y_true, prob) -> float:
    """Average precision (PR-AUC) as scikit-learn defines it; NaN when one class is absent."""
    y, p = clean_inputs(y_true, prob)
    n_pos = int((y == 1).sum())
    if n_pos == 0 or n_pos == y.size:
        return float("nan")
    order = np.argsort(-p, kind="mergesort")
    ys, ps = y[order], p[order]
    last_of_level = np.r_[ps[1:] != ps[:-1], True]
    tp = np.cumsum(ys)[last_of_level]
    fp = np.cumsum(1 - ys)[last_of_level]
    # positives gained at each level times the precision there, divided once at the end: a perfect
    # ranking sums integers and reads exactly 1 (dividing each step first rounds to 1 +- 1 ulp)
    return float(np.clip(np.sum(np.diff(np.r_[0.0, tp]) * (tp / (tp + fp))) / n_pos, 0.0, 1.0))


def counts_metrics(tn, fp, fn, tp) -> dict[str, np.ndarray]:
    """Threshold metrics from confusion counts (scalars or arrays of resamples)."""
    tn, fp, fn, tp = (np.asarray(a, dtype=float) for a in (tn, fp, fn, tp))
    n = tn + fp + fn + tp
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
        npv = np.where(tn + fn > 0, tn / (tn + fn), 0.0)
        recall = np.where(tp + fn > 0, tp / (tp + fn), np.nan)
        specificity = np.where(tn + fp > 0, tn / (tn + fp), np.nan)
        f1 = np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), 0.0)
        f1_neg = np.where(2 * tn + fp + fn > 0, 2 * tn / (2 * tn + fp + fn), 0.0)
        accuracy = (tp + tn) / n
    both = np.stack([recall, specificity])
    present = (~np.isnan(both)).sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        balanced = np.where(present > 0, np.nansum(both, axis=0) / present, np.nan)
    # macro F1 over the classes present in labels or predictions, as scikit-learn averages it
    pos_present, neg_present = (tp + fn + fp) > 0, (tn + fp + fn) > 0
    n_present = pos_present.astype(float) + neg_present
    with np.errstate(divide="ignore", invalid="ignore"):
        macro_f1 = np.where(
            n_present > 0,
            (np.where(pos_present, f1, 0) + np.where(neg_present, f1_neg, 0)) / n_present,
            np.nan,
        )
    return {
        "accuracy": accuracy,
        "balanced_accuracy": balanced,
        "precision": precision,
        "recall": recall,
        "specificity": specificity,
        "npv": npv,
        "f1": f1,
        "f1_negative": f1_neg,
        "macro_f1": macro_f1,
        "tn": tn,
        "fp": fp,
        "fn": fn,
        "tp": tp,
    }


def point_metrics(y_true, prob, threshold: float) -> dict[str, float]:
    """Every metric of METRIC_NAMES at one threshold; undefined ones are NaN, never an exception."""
    y, p = clean_inputs(y_true, prob)
    pred = p >= threshold
    pos = y == 1
    counts = counts_metrics(
        np.sum(~pred & ~pos), np.sum(pred & ~pos), np.sum(~pred & pos), np.sum(pred & pos)
    )
    out = {k: float(v) for k, v in counts.items()}
    out["pf1"] = pf1(y, p)
    out["roc_auc"] = roc_auc(y, p)
    out["pr_auc"] = average_precision(y, p)
    return {k: out[k] for k in METRIC_NAMES}


THRESHOLD_METHODS = ("best_f1", "prevalence", "sensitivity")


@dataclass(frozen=True)
class ThresholdRule:
    """How an operating threshold is tuned on predictions: `tune_threshold`'s method and its target."""

    method: str = "best_f1"
    target_sensitivity: float = 0.9  # with method "sensitivity": the highest cut reaching it

    def tune(self, y_true, prob) -> float:
        return tune_threshold(y_true, prob, self.method, target_sensitivity=self.target_sensitivity)

    def describe(self) -> str:
        return f"sensitivity >= {self.target_sensitivity:g}" if self.method == "sensitivity" else self.method


BEST_F1 = ThresholdRule()  # the default rule: the cut that maximises F1


def tune_threshold(y_true, prob, method: str = "best_f1", *, target_sensitivity: float = 0.9) -> float:
    """A decision threshold chosen on (ideally out-of-fold) predictions.

    best_f1: the probability cut that maximises F1 (prediction positive when prob >= threshold);
    prevalence: the cut that flags as many rows as there are positives (predicted rate = prevalence);
    sensitivity: the highest cut whose sensitivity (recall) reaches ``target_sensitivity`` (a screening
    operating point: flag as few as possible while missing at most 1 - target of the cancers).
    Tuning and scoring on the same rows flatters threshold metrics: pass a threshold tuned elsewhere
    when the figure must be honest. Falls back to 0.5 (with a warning) when there is no positive.
    """
    y, p = clean_inputs(y_true, prob)
    n_pos = int((y == 1).sum())
    if n_pos == 0 or y.size == 0:
        logger.warning("threshold tuning: no positive label, using 0.5")
        return 0.5
    if method == "prevalence":
        return float(np.sort(p)[::-1][n_pos - 1])
    if method not in THRESHOLD_METHODS:
        raise ValueError(f"unknown threshold method {method!r} ({', '.join(THRESHOLD_METHODS)})")
    order = np.argsort(-p, kind="mergesort")
    ys, ps = y[order], p[order]
    last_of_level = np.r_[ps[1:] != ps[:-1], True]
    tp = np.cumsum(ys)[last_of_level]
    if method == "sensitivity":  # recall grows as the cut falls: the first level that reaches the target
        reached = np.flatnonzero(tp >= target_sensitivity * n_pos - 1e-9)
        return float(ps[last_of_level][reached[0]])
    flagged = np.flatnonzero(last_of_level) + 1
    f1 = 2 * tp / (flagged + n_pos)
    return float(ps[last_of_level][int(np.argmax(f1))])


def calibration_table(y_true, prob, n_bins: int = 10, strategy: str = "uniform") -> pd.DataFrame:
    """Reliability table: per probability bin, mean predicted probability vs observed positive rate.

    strategy "uniform" uses equal-width bins on [0, 1]; "quantile" equal-count bins, which suits
    a rare outcome whose probabilities crowd near 0. Empty bins are left out.
    """
    y, p = clean_inputs(y_true, prob)
    if strategy == "quantile":
        edges = np.unique(np.quantile(p, np.linspace(0, 1, n_bins + 1))) if p.size else np.array([0.0, 1.0])
    elif strategy == "uniform":
        edges = np.linspace(0.0, 1.0, n_bins + 1)
    else:
        raise ValueError(f"unknown calibration strategy {strategy!r} (uniform or quantile)")
    idx = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, max(len(edges) - 2, 0))
    frame = pd.DataFrame({"bin": idx, "prob": p, "y": y})
    out = frame.groupby("bin").agg(mean_prob=("prob", "mean"), observed_rate=("y", "mean"), n=("y", "size"))
    out = out.reset_index()
    out["bin_low"] = edges[out["bin"]]
    out["bin_high"] = edges[np.minimum(out["bin"] + 1, len(edges) - 1)]
    return out[["bin", "bin_low", "bin_high", "mean_prob", "observed_rate", "n"]]


def net_benefit(y_true, prob, thresholds) -> np.ndarray:
    """Decision-curve net benefit at each threshold t: TP/n - FP/n * t / (1 - t) (Vickers & Elkin 2006).

    Treating everyone is ``net_benefit(y, np.ones_like(y), t)``; treating no one is 0.
    """
    y, p = clean_inputs(y_true, prob)
    t = np.asarray(thresholds, dtype=float)
    if ((t < 0) | (t >= 1)).any():
        raise ValueError(f"net benefit needs thresholds in [0, 1); got {t.min():g} to {t.max():g}")
    flagged = p[None, :] >= t[:, None]
    tp = (flagged & (y[None, :] == 1)).sum(axis=1)
    fp = (flagged & (y[None, :] == 0)).sum(axis=1)
    n = max(y.size, 1)
    return tp / n - fp / n * t / (1.0 - t)
