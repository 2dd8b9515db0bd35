"""Did the model learn which dataset a film came from? The dataset-shift check where two sources meet.

Adding another dataset's cancers to training (DDSM or CBIS positives to RSNA) can teach a CNN to tell the
datasets apart and call every film of the other dataset positive, one of the studies found. Given each
film's source (home or external), label, score and the model's pooled features:

- probes: a patient-grouped cross-validated logistic regression (``probes.oof_probe``) predicts the source
  from the features, over all films and among the positives alone (where the label cannot explain the
  answer), and from the score among the positives; ROC-AUC with a 95 % interval over women, chance 0.5;
- groups: each (source, label) group's mean score and the share called positive at the run's threshold,
  with intervals over women, and the ROC-AUC of home positives and of external positives each against the
  home negatives: the model's skill on the home dataset's positives alone, next to what the external films
  add to it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from mammo_insight.errors import MammoInsightError
from mammo_insight.fusion.probes import PROBE_FOLDS, macro_auc, oof_probe, probe_strength
from mammo_insight.metrics import metrics_with_ci
from mammo_insight.metrics.bootstrap import group_codes, percentile_interval, resample_counts
from mammo_insight.report import fmt_ci

HOME = "home"
TRAINED_ON = "by models trained on them (optimistic)"  # external_only films: every fold model saw them
PROBE_COLUMNS = ["probe", "input", "n_images", "n_women", "roc_auc", "ci_low", "ci_high", "chance"]
GROUP_COLUMNS = [
    "source",
    "label",
    "scored",
    "n_images",
    "n_women",
    "mean_prob",
    "called_positive",
    "ci_low",
    "ci_high",
]
AUC_COLUMNS = ["positives", "negatives", "n_positive", "n_negative", "roc_auc", "ci_low", "ci_high"]


def _logit(prob: np.ndarray) -> np.ndarray:
    p = np.clip(prob.astype(float), 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))[:, None]


def source_probes(
    films: pd.DataFrame, features: np.ndarray | None, *, n_boot: int = 200, seed: int = 0
) -> pd.DataFrame:
    """Probe ROC-AUCs of "is this film external?" (rows: all films / positives only, features / score)."""
    external = (films["source"] != HOME).to_numpy()
    positive = (films["label"] == 1).to_numpy()
    inputs = {"CNN score": _logit(films["prob"].to_numpy())}
    if features is not None:
        inputs = {"pooled features": features.astype(np.float64), **inputs}
    rows = []
    for probe, subset in (
        ("which source, all films", np.ones(len(films), bool)),
        ("which source, positives only", positive),
    ):
        patient = films["patient_id"].astype(str).to_numpy()[subset]
        labels = np.where(external[subset], "external", "home")
        if len(np.unique(labels)) < 2 or len(np.unique(patient)) < PROBE_FOLDS:
            continue
        for name, X in inputs.items():
            if name == "CNN score" and probe.endswith("all films"):
                continue  # over all films the score answers "cancer?", not "which dataset?"
            try:
                prob = oof_probe(X[subset], labels, patient, seed)
            except MammoInsightError:
                continue
            value, (low, high) = macro_auc(labels, prob, patient, n_boot, seed)
            rows.append(
                {
                    "probe": probe,
                    "input": name,
                    "n_images": int(subset.sum()),
                    "n_women": len(np.unique(patient)),
                    "roc_auc": value,
                    "ci_low": low,
                    "ci_high": high,
                    "chance": 0.5,
                }
            )
    return pd.DataFrame(rows, columns=PROBE_COLUMNS)


def share_with_ci(
    flags: np.ndarray, groups: np.ndarray, *, n_boot: int = 200, seed: int = 0
) -> tuple[float, float, float]:
    """(share of True, 95 % interval) resampling groups (women), as every interval here does."""
    flags = np.asarray(flags, dtype=float)
    if flags.size == 0:
        return float("nan"), float("nan"), float("nan")
    codes, n_groups = group_codes(groups, flags.size)
    hits, counts = np.bincount(codes, flags, n_groups), np.bincount(codes, minlength=n_groups)
    weights = resample_counts(n_groups, n_boot, seed)
    with np.errstate(invalid="ignore", divide="ignore"):
        draws = (weights @ hits) / (weights @ counts)
    point = float(flags.mean())
    return (point, *percentile_interval(draws, point))


def source_groups(
    films: pd.DataFrame,
    threshold: float,
    *,
    external_scored: str = TRAINED_ON,
    n_boot: int = 200,
    seed: int = 0,
) -> pd.DataFrame:
    """Per (source, label): mean score and the share called positive at `threshold`, with intervals."""
    rows = []
    for (source, label), part in films.groupby(["source", "label"], sort=True):
        called, low, high = share_with_ci(
            (part["prob"] >= threshold).to_numpy(),
            part["patient_id"].astype(str).to_numpy(),
            n_boot=n_boot,
            seed=seed,
        )
        rows.append(
            {
                "source": source,
                "label": int(label),
                "scored": "out of fold" if source == HOME else external_scored,
                "n_images": len(part),
                "n_women": part["patient_id"].nunique(),
                "mean_prob": float(part["prob"].mean()),
                "called_positive": called,
                "ci_low": low,
                "ci_high": high,
            }
        )
    return pd.DataFrame(rows, columns=GROUP_COLUMNS)


def source_aucs(films: pd.DataFrame, *, n_boot: int = 200, seed: int = 0) -> pd.DataFrame:
    """ROC-AUC of the home positives, and of each external source's positives, against the home negatives."""
    home_negatives = films[(films["source"] == HOME) & (films["label"] == 0)]
    rows = []
    for source in [HOME, *sorted(set(films["source"]) - {HOME})]:
        positives = films[(films["source"] == source) & (films["label"] == 1)]
        if positives.empty or home_negatives.empty:
            continue
        both = pd.concat([positives, home_negatives])
        cell = metrics_with_ci(
            both["label"], both["prob"], both["patient_id"].astype(str), 0.5, n_boot=n_boot, seed=seed
        )["roc_auc"]
        rows.append(
            {
                "positives": f"{source} positives",
                "negatives": "home negatives",
                "n_positive": len(positives),
                "n_negative": len(home_negatives),
                "roc_auc": cell["value"],
                "ci_low": cell["ci_low"],
                "ci_high": cell["ci_high"],
            }
        )
    return pd.DataFrame(rows, columns=AUC_COLUMNS)


def shift_verdict(probes: pd.DataFrame, groups: pd.DataFrame, external_scored: str = TRAINED_ON) -> str:
    """The plain-words answer to "does the model tell the datasets apart?" from the numbers above."""
    parts = []
    among = probes[(probes["probe"] == "which source, positives only") & (probes["input"] != "CNN score")]
    if len(among):
        strength, auc = probe_strength(among.iloc[0])
        parts.append(
            {
                "strong": f"Yes: among the cancers alone, the model's features tell the datasets apart ({auc}).",
                "some": f"Partly: among the cancers, the features carry some dataset information ({auc}).",
                "little": f"Among the cancers, the features carry little dataset information ({auc}).",
            }[strength]
        )
    called = groups[groups["label"] == 1].set_index("source")["called_positive"]
    if HOME in called and len(called) > 1:
        others = ", ".join(f"{s} {v:.0%}" for s, v in called.items() if s != HOME)
        parts.append(
            f"Positives called positive at the run's threshold: home {called[HOME]:.0%} (out of fold), {others} "
            f"({external_scored}). A wide gap between the sources says the model reads the dataset as well as "
            "the cancer (the studies saw external films all called positive): judge it on the home positives "
            "alone."
        )
    return " ".join(parts) or "Too few films of each source for the shift check."


def shift_check(
    films: pd.DataFrame,
    features: np.ndarray | None,
    threshold: float,
    *,
    external_scored: str = TRAINED_ON,
    note: str = "",
    n_boot: int = 200,
    seed: int = 0,
) -> dict[str, Any]:
    """The whole check as shift.json: probes, groups, AUCs against the home negatives, a verdict, a note.

    ``films``: one row per film with patient_id, source ("home" or another name), label (0/1), prob;
    ``features``: the matching rows of pooled features, or None (multi-view runs: the score only);
    `external_scored` says how the other films were scored, `note` what the reader should know of both.
    """
    probes = source_probes(films, features, n_boot=n_boot, seed=seed)
    groups = source_groups(films, threshold, external_scored=external_scored, n_boot=n_boot, seed=seed)
    aucs = source_aucs(films, n_boot=n_boot, seed=seed)
    return {
        "threshold": float(threshold),
        "probes": probes.to_dict("records"),
        "groups": groups.to_dict("records"),
        "aucs": aucs.to_dict("records"),
        "verdict": shift_verdict(probes, groups, external_scored),
        "note": note,
    }


def shift_headline(shift: dict[str, Any] | None) -> dict[str, str]:
    """The feature probes' ROC-AUCs with intervals, for a stage's headline ({} without a check)."""
    out = {}
    for probe in (shift or {}).get("probes", []):
        if probe["input"] != "CNN score":
            cell = {"value": probe["roc_auc"], "ci_low": probe["ci_low"], "ci_high": probe["ci_high"]}
            out[f"source probe ROC-AUC ({probe['probe'].split(', ')[1]})"] = fmt_ci(cell)
    return out
