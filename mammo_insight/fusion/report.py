"""The fuse-train HTML report: plain-words answers first, then the evidence behind them."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pandas as pd
from markupsafe import Markup

from mammo_insight.fusion import shap_tabular as st
from mammo_insight.fusion.answers import MODEL_WORDS, answers, odds_sentence
from mammo_insight.fusion.features import WORKUP_FEATURES
from mammo_insight.fusion.outputs import calibration_curves, decision_curves, shap_groups, shap_importance
from mammo_insight.fusion.pipeline import FusionResult
from mammo_insight.metrics.compare import comparison_table, scores_table
from mammo_insight.report import (
    Section,
    bullet_list,
    figure,
    metric_cards,
    paragraph,
    raw_link,
    render_page,
    table,
)

FILES = [
    "metrics.json",
    "oof_predictions.csv",
    "tables/shap_importance.csv",
    "tables/shap_groups.csv",
    "tables/model_comparison.csv",
    "tables/per_view_auc.csv",
    "tables/shap_interactions.csv",
    "tables/decision_curves.csv",
    "tables/calibration.csv",
    "tables/scanner_probes.csv",
    "tables/within_group_auc.csv",
    "tables/scanner_stratified_auc.csv",
    "manifest.json",
]


def settings_table(settings: dict[str, list[dict]]) -> pd.DataFrame:
    """One row per model and fold: the settings the in-fold search chose (or the fixed ones)."""
    rows = [{"model": model, **chosen} for model, per_fold in settings.items() for chosen in per_fold]
    return pd.DataFrame(rows).sort_values(["model", "fold"]) if rows else pd.DataFrame()


def roc_figure(result: FusionResult):
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    y = result.breasts["cancer"].to_numpy()
    fig, ax = plt.subplots(figsize=(5, 5))
    for name, p in result.probs.items():
        fpr, tpr, _ = roc_curve(y, p)
        ax.plot(fpr, tpr, label=f"{MODEL_WORDS[name]} (AUC {result.scores[name]['roc_auc']['value']:.3f})")
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def decision_figure(result: FusionResult):
    """Net benefit against threshold for each model, treat-all and treat-none."""
    import matplotlib.pyplot as plt

    curves = decision_curves(result)
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, part in curves.groupby("model", sort=False):
        style = {"treat all": "k--", "treat none": "k:"}.get(name, "-")
        ax.plot(part["threshold"], part["net_benefit"], style, label=MODEL_WORDS.get(name, name))
    prevalence = float(result.breasts["cancer"].mean())
    ax.set_ylim(-0.2 * prevalence, 1.1 * prevalence)
    ax.set_xlabel("threshold probability (who is called back)")
    ax.set_ylabel("net benefit (true positives per breast)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def calibration_figure(result: FusionResult):
    """Observed cancer rate against mean predicted probability, equal-count bins, per model."""
    import matplotlib.pyplot as plt

    table_ = calibration_curves(result)
    fig, ax = plt.subplots(figsize=(5, 5))
    top = float(max(table_["mean_prob"].max(), table_["observed_rate"].max())) * 1.05
    ax.plot([0, top], [0, top], "k:", lw=0.8)
    for name, part in table_.groupby("model", sort=False):
        ax.plot(part["mean_prob"], part["observed_rate"], "o-", ms=3, label=MODEL_WORDS.get(name, name))
    ax.set_xlabel("mean predicted probability (bin)")
    ax.set_ylabel("observed cancer rate (bin)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _incremental_section(result: FusionResult) -> Section:
    best = result.best_metadata
    blocks = []
    cmp = result.comparisons.get(f"fused_vs_{best}")
    if cmp:
        d = cmp["roc_auc"]
        blocks.append(
            paragraph(
                f"Fused against the primary metadata-only model ({MODEL_WORDS[best]}): ROC-AUC {d['value_a']:.3f} "
                f"against {d['value_b']:.3f}, difference {d['diff']:+.3f} ({d['ci_low']:+.3f} to "
                f"{d['ci_high']:+.3f}; paired bootstrap over women p = {d['p_value']:.3g}, DeLong p = "
                f"{cmp['delong']['p_value']:.3g})."
            )
        )
    if result.scanner is not None:
        odds = result.scanner.odds_ratio
        blocks.append(paragraph(odds_sentence(odds)))
        terms = pd.DataFrame(odds.get("adjusted_terms", []))
        if len(terms):
            blocks.append(table(terms.drop(columns=["model"]), "adjusted model: every term (odds ratios)"))
    return Section("What the images add beyond the metadata", blocks or [paragraph("No embeddings given.")])


def _scanner_section(result: FusionResult) -> Section:
    checks = result.scanner
    if checks is None:
        return Section("Does the image model read the scanner?", [paragraph("No embeddings given.")])
    tests = pd.DataFrame(
        [
            {
                "factor": f,
                **{k: v for k, v in t.items() if k != "left_out"},
                "left out (cancers of breasts)": "; ".join(t["left_out"]),
            }
            for f, t in checks.heterogeneity.items()
        ]
    )
    return Section(
        "Does the image model read the scanner?",
        [
            paragraph(checks.verdict, "lead"),
            paragraph(
                "Probes: a logistic regression predicts each factor from the image's out-of-fold embedding "
                "(and from the CNN score alone), cross-validated in 5 patient-grouped folds, scored by ROC-AUC "
                "(one-vs-rest averaged over machines or sites); chance is 0.5. A probe near 1 for machine or "
                "site means the image model can tell the scanner; near 1 for view or laterality is expected "
                "(the images differ) and harmless by itself."
            ),
            table(checks.probes, "probes on the out-of-fold embeddings and the CNN score"),
            paragraph(
                "Pooled against stratified: the image score's ROC-AUC over all breasts, over only the pairs of a "
                "cancer and a non-cancer on the same machine (or site), and the machine (site) alone, scored "
                "by its out-of-fold cancer rate. A pooled figure above the stratified one is ranking borrowed "
                "from telling scanners apart."
            ),
            table(checks.stratified, "pooled, within-machine and within-site ROC-AUC, and the factor alone"),
            paragraph(
                "The image score's ROC-AUC inside each machine and site (levels with fewer than 3 cancers are "
                "left out), and Cochran's Q test of whether they differ."
            ),
            table(checks.within, "image score ROC-AUC within each machine and site"),
            table(tests, "heterogeneity between machines and between sites"),
        ],
    )


def _dependence_blocks(result: FusionResult) -> list:
    blocks = []
    for feature in ("age", "density"):
        if feature in result.shap_X.columns:
            blocks.append(
                figure(
                    partial(st.dependence_figure, result.shap_explanation, feature),
                    f"SHAP of {feature} against its value"
                    + (" (density ordinal A=1 .. D=4; missing not shown)" if feature == "density" else ""),
                )
            )
    if not blocks:
        blocks.append(paragraph("Neither age nor density is a feature of this model."))
    return blocks


def _interaction_blocks(result: FusionResult) -> list:
    if result.interactions is None or not len(result.interactions):
        return [paragraph("Fewer than two metadata features: no interaction to show.")]
    a, b = result.interactions.iloc[0][["feature_a", "feature_b"]]
    return [
        paragraph(
            "Mean |SHAP interaction value| between metadata features (both halves of the symmetric "
            "matrix summed), on a random sample of breasts. A large value means the effect of one "
            "feature depends on the other."
        ),
        table(result.interactions, "strongest metadata interactions"),
        figure(
            lambda: st.dependence_figure(result.shap_explanation, a, color_by=b),
            f"SHAP of {a}, coloured by {b} (the strongest pair)",
        ),
    ]


def _local_blocks(result: FusionResult) -> list:
    position = {r: i for i, r in enumerate(result.shap_rows)}
    blocks = [
        paragraph(
            "The breasts with the highest out-of-fold risk of the explained model; each bar is one "
            "feature's push (log-odds) from the average prediction to this breast's. Explanations "
            "come from the final model (fitted on every breast)."
        )
    ]
    b = result.breasts
    for r in result.top_risk:
        title = (
            f"breast {b.iloc[r]['breast_id']}: out-of-fold risk {result.probs[result.explained_model][r]:.3f}, "
            f"cancer = {int(b.iloc[r]['cancer'])}"
        )
        blocks.append(
            figure(
                partial(st.waterfall_figure, result.shap_explanation[position[r]], title),
                "grey numbers: the breast's feature values",
            )
        )
    return blocks


def _answers_section(result: FusionResult, importance: pd.DataFrame, label_meaning: str) -> Section:
    """Warnings, the headline numbers and the plain-words answers: what a reader sees first."""
    warn = [paragraph(w, "warn") for w in result.warnings if w.startswith("WARNING")]
    cards = {
        f"ROC-AUC {MODEL_WORDS[m]}": f"{result.scores[m]['roc_auc']['value']:.3f}" for m in result.scores
    }
    cards["breasts"] = f"{len(result.breasts):,}"
    cards["positive breasts"] = f"{int(result.breasts['cancer'].sum()):,}"
    return Section(
        "Answers",
        warn
        + [metric_cards(cards), bullet_list(answers(result, importance))]
        + ([paragraph(f"Label: {label_meaning}")] if label_meaning else []),
    )


def _models_section(result: FusionResult) -> Section:
    """Every model's metrics, the paired comparisons, and the ROC, decision and calibration curves."""
    n_folds = result.breasts["fold"].nunique()
    return Section(
        "Models compared",
        [
            paragraph(
                f"Breast-level out-of-fold predictions ({n_folds} patient-grouped folds). Intervals: 95% "
                "bootstrap over patients. Threshold metrics use the best-F1 threshold tuned on these same "
                "predictions (optimistic); ROC-AUC, PR-AUC and pF1 need no threshold."
            ),
            table(scores_table(result.scores), "breast-level metrics"),
            table(comparison_table(result.comparisons), "paired comparisons (a - b) on the same breasts")
            if result.comparisons
            else paragraph("Only one model: nothing to compare."),
            figure(lambda: roc_figure(result), "ROC curves (out-of-fold)"),
            paragraph(
                "Decision curves: net benefit (true positives per breast, minus false positives weighted by "
                "the odds of the threshold) of calling back every breast whose out-of-fold risk passes the "
                "threshold, beside calling back everyone and no one. A model is useful where its curve is "
                "above both. Calibration: observed rate against predicted probability in equal-count bins "
                "(tables/decision_curves.csv, tables/calibration.csv)."
            ),
            figure(lambda: decision_figure(result), "decision curves (out-of-fold)"),
            figure(lambda: calibration_figure(result), "calibration (out-of-fold, 10 equal-count bins)"),
        ],
    )


def _per_view_sections(result: FusionResult) -> list[Section]:
    """The per-view image-only table, when the embeddings allowed per-view models (else no section)."""
    if not len(result.per_view):
        return []
    return [
        Section(
            "Which views carry the image signal",
            [
                paragraph(
                    "An image-only LightGBM trained on the embeddings of one view (mean over the breast's images "
                    "of that view, and its CNN logit), on the breasts that have it, with the same folds."
                ),
                table(result.per_view, "per-view image-only ROC-AUC"),
            ],
        )
    ]


def _shap_section(result: FusionResult, importance: pd.DataFrame) -> Section:
    """Global SHAP importance and the beeswarm of the explained model."""
    return Section(
        "What drives the model (SHAP)",
        [
            paragraph(
                f"SHAP values (shap.TreeExplainer, log-odds) of the {MODEL_WORDS[result.explained_model]} "
                f"model fitted on every breast, over {len(result.shap_rows):,} breasts (a random sample plus "
                "the highest-risk ones)."
                + (
                    " Image features are the CNN's out-of-fold logit (img_cnn_logit, when the embeddings "
                    "file has it) and the principal components of the embeddings (img_pc01 ...)."
                    if result.emb_dim
                    else ""
                )
            ),
            figure(lambda: st.bar_figure(importance), "global importance: mean |SHAP| per feature"),
            figure(
                lambda: st.beeswarm_figure(result.shap_explanation),
                "beeswarm: one dot per breast; colour = feature value (categorical features: category code)",
            ),
        ],
    )


def _groups_section(groups: pd.DataFrame) -> Section:
    """Each breast's prediction split into its metadata and image parts (when the model has both)."""
    return Section(
        "Metadata versus image, breast by breast",
        [
            paragraph(
                "Each breast's prediction splits into a metadata part and an image part (sums of its SHAP "
                "values). Per-breast values are in tables/shap_groups.csv."
            ),
            figure(
                lambda: st.group_figure(groups, groups["cancer"].to_numpy()),
                "per-breast attribution by group",
            ),
        ]
        if "image" in groups.columns and "metadata" in groups.columns
        else [paragraph("Only one group of features in this model: see tables/shap_groups.csv.")],
    )


def _method_section(result: FusionResult) -> Section:
    """Features used and left out, how each model was fitted, the folds, the settings and the files."""
    return Section(
        "Method and files",
        [
            bullet_list(
                [
                    f"Metadata features: {', '.join(result.meta_features) or 'none'}"
                    + (
                        ""
                        if any(f in result.meta_features for f in WORKUP_FEATURES)
                        else " (the image counts n_images and n_other_views are left out: extra images often "
                        "mark work-up after a suspicious finding; --include-workup adds them)"
                    )
                    + ".",
                    "Excluded as leaky or suspect (declared post-outcome, recorded or missing by label, or "
                    "predicting the label alone too well: the leakage audit, whose verdict and reason per column "
                    "eda's tables/leakage.csv gives): " + (", ".join(result.excluded_leaky) or "none") + ".",
                    f"Included despite being leaky (--include-leaky): {', '.join(result.included_leaky) or 'none'}.",
                    (
                        "LightGBM: inside each training fold a small search over (leaves, minimum leaf size, L2) "
                        "with early stopping on a patient-grouped inner split; age constrained monotone when "
                        "set. Logistic: age as a line or a cubic spline (the lower AIC in each training fold), site and "
                        "machine one-hot, density and implant "
                        "scaled, L2 penalty; view counts left out (often work-up). The settings each fold "
                        "used are in metrics.json ('settings') and in the table below."
                    ),
                    f"Embeddings: {result.emb_dim}-d, reduced by PCA fitted on each training fold only."
                    if result.emb_dim
                    else "Embeddings: none given (metadata only).",
                    (
                        "Folds: the CNN run's folds when the embeddings carry them (a validation breast's embedding comes "
                        "from a CNN that never saw the woman), otherwise StratifiedGroupKFold by patient."
                    ),
                    *[w for w in result.warnings if not w.startswith("WARNING")],
                ]
            ),
            table(settings_table(result.settings), "settings chosen per fold"),
            Markup("<p>Files: ") + Markup(" · ").join(raw_link(f, f) for f in FILES) + Markup("</p>"),
        ],
    )


def render_report(result: FusionResult, out: Path, dataset: str, label_meaning: str = "") -> Path:
    """Write OUT/index.html."""
    importance = shap_importance(result)
    sections = [
        _answers_section(result, importance, label_meaning),
        _models_section(result),
        _incremental_section(result),
        _scanner_section(result),
        *_per_view_sections(result),
        _shap_section(result, importance),
        _groups_section(shap_groups(result)),
        Section("Age and density", _dependence_blocks(result)),
        Section("Interactions between metadata features", _interaction_blocks(result)),
        Section("Highest-risk breasts", _local_blocks(result)),
        _method_section(result),
    ]
    return render_page(
        out / "index.html",
        f"Fusion: metadata + image embeddings ({dataset})",
        sections,
        subtitle="LightGBM and logistic regression at breast level, explained with SHAP",
    )
