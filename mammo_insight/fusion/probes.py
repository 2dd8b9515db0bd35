"""Does the image model read the scanner? Probes of the embeddings and the score, and AUC within machines.

A CNN can score well for the wrong reason: RSNA's cancer rate differs by machine (0 of 468 breasts on
machine 210, 2.6 % on machine 170), so recognising the scanner is worth ROC-AUC by itself. Two checks:

- probes: from each image's out-of-fold embedding (and, separately, its CNN score), a patient-grouped
  cross-validated logistic regression predicts site, machine, view, laterality, age (older half) and
  density (C/D against A/B). Each is scored by ROC-AUC (one-vs-rest, averaged over classes, for site and
  machine), whose chance level is 0.5 whatever the class balance, with a 95 % interval over women. A
  machine probe near 1 means the embedding encodes the scanner.
- the image score's ROC-AUC within each machine and each site, with Cochran's Q test of heterogeneity
  (inverse-variance weights from the bootstrap intervals). Whether the pooled figure rests on the scanner
  is read from pooled against machine-stratified AUC (``fusion.stratified``): a score that only reads the
  scanner ranks no better than chance inside every machine, so the heterogeneity test cannot see it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import chi2
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from mammo_insight.cohort.folds import patient_folds
from mammo_insight.errors import MammoInsightError
from mammo_insight.metrics import metrics_with_ci
from mammo_insight.metrics.bootstrap import (
    bootstrap_metrics,
    group_codes,
    percentile_interval,
    resample_counts,
)
from mammo_insight.metrics.core import roc_auc

PROBE_FOLDS = 5
MAX_COMPONENTS = 16
MAX_ROWS = 6000  # images probed (whole women drawn at random): intervals of +-0.02, a few CPU seconds on RSNA
MIN_CLASS_IMAGES = 20  # smaller sites/machines are left out of the probe
MIN_GROUP_EVENTS = 3  # a machine needs this many cancers (and non-cancers) for its own AUC
PROBE_COLUMNS = ["probe", "input", "classes", "n_images", "roc_auc", "ci_low", "ci_high", "chance"]
WITHIN_COLUMNS = ["factor", "level", "n_breasts", "n_positive", "roc_auc", "ci_low", "ci_high"]


def probe_targets(images: pd.DataFrame) -> dict[str, pd.Series]:
    """Target labels per image (NaN where unknown or rare): site, machine, view, laterality, age, density."""
    out: dict[str, pd.Series] = {}
    for name, col in (("site", "site_id"), ("machine", "machine_id")):
        if col in images:
            values = images[col].astype("string")
            counts = values.value_counts()
            out[name] = values.where(values.isin(counts.index[counts >= MIN_CLASS_IMAGES]))
    if "view" in images:
        out["view (MLO vs CC)"] = images["view"].map({"CC": "CC", "MLO": "MLO"})
    if "laterality" in images:
        out["laterality (R vs L)"] = images["laterality"].map({"L": "L", "R": "R"})
    if "age" in images:
        age = pd.to_numeric(images["age"], errors="coerce")
        out["age (older half)"] = (
            (age >= age.median()).map({True: "older", False: "younger"}).where(age.notna())
        )
    if "density" in images:
        dense = images["density"].astype("string").map({"A": "A/B", "B": "A/B", "C": "C/D", "D": "C/D"})
        out["density (C/D vs A/B)"] = dense
    return {k: v for k, v in out.items() if v.dropna().nunique() >= 2}


def oof_probe(X: np.ndarray, labels: np.ndarray, patient: np.ndarray, seed: int) -> np.ndarray:
    """Out-of-fold class probabilities (rows x classes, classes sorted) from patient-grouped folds."""
    classes = np.unique(labels)
    fold = patient_folds(patient, np.zeros(len(labels)), PROBE_FOLDS, seed)
    prob = np.zeros((len(labels), len(classes)))
    for f in range(PROBE_FOLDS):
        train, test = fold != f, fold == f
        present = np.unique(labels[train])
        k = min(MAX_COMPONENTS, X.shape[1], int(train.sum()) - 1)
        steps = [StandardScaler()] + ([PCA(n_components=k, random_state=seed)] if X.shape[1] > k else [])
        if len(present) < 2:
            prob[np.ix_(test, np.searchsorted(classes, present))] = 1.0
            continue
        model = make_pipeline(*steps, LogisticRegression(max_iter=1000)).fit(X[train], labels[train])
        p = model.predict_proba(X[test])
        # each fold's intercept carries its training class shares, which grouped folds make anti-correlated
        # with the held-out shares: centring per fold keeps only the within-fold ranking (no signal -> 0.5)
        prob[np.ix_(test, np.searchsorted(classes, model.classes_))] = p - p.mean(axis=0)
    return prob


def macro_auc(labels: np.ndarray, prob: np.ndarray, patient: np.ndarray, n_boot: int, seed: int):
    """(macro one-vs-rest ROC-AUC, 95 % interval over women); binary targets score the second class."""
    classes = np.unique(labels)
    scored = classes[1:] if len(classes) == 2 else classes
    codes, n_groups = group_codes(patient, len(labels))
    weights = resample_counts(n_groups, n_boot, seed)
    point, draws = [], []
    for c in scored:
        y = (labels == c).astype(int)
        p = prob[:, np.searchsorted(classes, c)]
        point.append(roc_auc(y, p))
        draws.append(bootstrap_metrics(y, p, codes, weights, threshold=None, names=["roc_auc"])["roc_auc"])
    value = float(np.mean(point))
    return value, percentile_interval(np.nanmean(np.vstack(draws), axis=0), value)


def run_probes(
    images: pd.DataFrame,
    emb_cols: list[str],
    *,
    n_boot: int = 200,
    seed: int = 0,
) -> pd.DataFrame:
    """One row per (target, input): probe ROC-AUC with its interval and chance level.

    ``images``: one row per image with patient_id, the target columns, the embedding columns and
    optionally cnn_logit (then the score is probed too).
    """
    rng = np.random.default_rng(seed)
    patients = images["patient_id"].astype(str).unique()
    if len(images) > MAX_ROWS:
        keep = rng.permutation(patients)[: max(PROBE_FOLDS, int(len(patients) * MAX_ROWS / len(images)))]
        images = images[images["patient_id"].astype(str).isin(set(keep))]
    inputs = {"embeddings": images[emb_cols].to_numpy(np.float64)}
    if "cnn_logit" in images and images["cnn_logit"].notna().all():
        inputs["CNN score"] = images[["cnn_logit"]].to_numpy(np.float64)
    rows = []
    for name, target in probe_targets(images).items():
        known = target.notna().to_numpy()
        labels = target[known].astype(str).to_numpy()
        patient = images["patient_id"].astype(str).to_numpy()[known]
        if len(np.unique(patient)) < PROBE_FOLDS:
            continue
        for source, X in inputs.items():
            try:
                prob = oof_probe(X[known], labels, patient, seed)
            except MammoInsightError:
                continue
            value, (low, high) = macro_auc(labels, prob, patient, n_boot, seed)
            rows.append(
                {
                    "probe": name,
                    "input": source,
                    "classes": len(np.unique(labels)),
                    "n_images": int(known.sum()),
                    "roc_auc": value,
                    "ci_low": low,
                    "ci_high": high,
                    "chance": 0.5,
                }
            )
    return pd.DataFrame(rows, columns=PROBE_COLUMNS)


def within_group_auc(
    breasts: pd.DataFrame,
    score: np.ndarray,
    factors: tuple[str, ...] = ("machine_id", "site_id"),
    *,
    n_boot: int = 200,
    seed: int = 0,
) -> tuple[pd.DataFrame, dict]:
    """The score's ROC-AUC inside each level of each factor, and a heterogeneity test per factor.

    Levels with fewer than MIN_GROUP_EVENTS cancers or non-cancers have no AUC and are listed in the test's
    ``left_out``.
    """
    y = breasts["cancer"].astype(int).to_numpy()
    patient = breasts["patient_id"].astype(str).to_numpy()
    rows, tests = [], {}
    for factor in factors:
        if factor not in breasts:
            continue
        level = breasts[factor].astype(str).to_numpy()
        left_out = []
        for value in sorted(set(level)):
            inside = level == value
            n_pos = int(y[inside].sum())
            if n_pos < MIN_GROUP_EVENTS or int(inside.sum()) - n_pos < MIN_GROUP_EVENTS:
                left_out.append(f"{value} ({n_pos} of {int(inside.sum())})")
                continue
            m = metrics_with_ci(y[inside], score[inside], patient[inside], None, n_boot=n_boot, seed=seed)
            rows.append(
                {
                    "factor": factor,
                    "level": value,
                    "n_breasts": int(inside.sum()),
                    "n_positive": n_pos,
                    "roc_auc": m["roc_auc"]["value"],
                    "ci_low": m["roc_auc"]["ci_low"],
                    "ci_high": m["roc_auc"]["ci_high"],
                }
            )
        tests[factor] = {**heterogeneity([r for r in rows if r["factor"] == factor]), "left_out": left_out}
    return pd.DataFrame(rows, columns=WITHIN_COLUMNS), tests


def heterogeneity(rows: list[dict]) -> dict:
    """Cochran's Q over per-level AUCs, each weighted by 1/SE^2 with SE = interval width / 3.92."""
    auc = np.array([r["roc_auc"] for r in rows], dtype=float)
    se = np.array([(r["ci_high"] - r["ci_low"]) / 3.92 for r in rows], dtype=float)
    ok = np.isfinite(auc) & np.isfinite(se) & (se > 0)
    if ok.sum() < 2:
        return {
            "levels": int(ok.sum()),
            "pooled_auc": float("nan"),
            "q": float("nan"),
            "df": 0,
            "p_value": float("nan"),
        }
    w = 1.0 / se[ok] ** 2
    pooled = float((w * auc[ok]).sum() / w.sum())
    q = float((w * (auc[ok] - pooled) ** 2).sum())
    df = int(ok.sum() - 1)
    return {"levels": int(ok.sum()), "pooled_auc": pooled, "q": q, "df": df, "p_value": float(chi2.sf(q, df))}


def probe_strength(row: pd.Series) -> tuple[str, str]:
    """("strong" | "some" | "little", the AUC as text) of one probe row, graded on its interval's lower end:
    the one scale every verdict on a probe (scanner, dataset shift) reads."""
    auc = f"probe ROC-AUC {row.roc_auc:.3f} ({row.ci_low:.3f}-{row.ci_high:.3f}; chance 0.5)"
    return ("strong" if row.ci_low > 0.8 else "some" if row.ci_low > 0.6 else "little"), auc


def scanner_verdict(probes: pd.DataFrame, tests: dict, audit: pd.DataFrame | None = None) -> str:
    """The plain-words answer to "does the image model read the scanner?" from the numbers above.

    ``audit``: :func:`mammo_insight.fusion.stratified.stratified_audit` of the image score: the verdict on
    whether the pooled figure rests on telling scanners apart reads pooled against within-machine ROC-AUC,
    never the heterogeneity test (a scanner-only score is at chance, and so equal, in every machine).
    """
    from mammo_insight.fusion.stratified import audit_sentence

    parts = []
    machine = probes[(probes["probe"] == "machine") & (probes["input"] == "embeddings")]
    if len(machine):
        strength, auc = probe_strength(machine.iloc[0])
        parts.append(
            {
                "strong": f"Yes: the embeddings tell the machine apart ({auc}), so the image model sees the scanner.",
                "some": f"Partly: the embeddings carry some machine information ({auc}).",
                "little": f"The embeddings carry little machine information ({auc}).",
            }[strength]
        )
    if audit is not None:
        parts.extend(audit_sentence(row) for _, row in audit.iterrows())
    test = tests.get("machine_id")
    if test and test["levels"] >= 2:
        if test["p_value"] < 0.05:
            parts.append(
                f"The image score's ROC-AUC differs between machines (Cochran's Q = {test['q']:.1f}, "
                f"{test['df']} df, p = {test['p_value']:.3g}): its performance does not hold evenly across "
                "scanners; read the per-machine table before trusting the pooled figure."
            )
        else:
            parts.append(
                f"The per-machine ROC-AUCs do not differ detectably (Cochran's Q p = {test['p_value']:.3g}; "
                "a score that only reads the scanner is at chance, and so equal, in every machine: this test "
                "alone says nothing on a scanner shortcut)."
            )
    elif test is not None:
        parts.append("Too few machines with enough cancers to compare the score's ROC-AUC between them.")
    return " ".join(parts) or "No embeddings: the scanner checks need `mammo-insight embed` first."
