"""The fuse-train HTML report: plain-words answers first, then the evidence behind them."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pandas as pd
from markupsafe import Markup

from mammo_insight.fusion import shap_tabular as st
from mammo_insight.fusion.compare import comparison_table, scores_table
from mammo_insight.fusion.outputs import shap_groups, shap_importance
from mammo_insight.fusion.pipeline import FusionResult
from mammo_insight.report import (
    Section,
    bullet_list,
    figure,
    fmt_ci,
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
    "manifest.json",
]
MODEL_WORDS = {"metadata": "metadata only", "image": "image embeddings only", "fused": "metadata + images"}


def _auc(result: FusionResult, model: str) -> str:
    return fmt_ci(result.scores[model]["roc_auc"])


def answers(result: FusionResult, importance: pd.DataFrame) -> list[str]:
    """The seed study's questions answered in one sentence each, from the numbers of this run."""
    out = []
    top = importance.head(5)
    out.append(
        "Features that move the "
        + MODEL_WORDS[result.explained_model]
        + " model most (mean |SHAP|): "
        + ", ".join(f"{f} ({g}, {v:.3f})" for f, g, v in top.itertuples(index=False))
        + "."
    )
    workup = [f for f in ("n_images", "n_other_views") if f in set(top["feature"])]
    if workup:
        out.append(
            f"Caution: {', '.join(workup)} rank high. Extra images are often diagnostic work-up taken after "
            "a suspicious finding, so this signal may partly come from after the screening decision."
        )
    share = st.group_share(result.shap_explanation.values, list(result.shap_X.columns), result.feature_groups)
    if "image" in share and "metadata" in share:
        text = (
            f"The images carry {100 * share['image']:.0f}% of the model's attribution and the metadata "
            f"{100 * share['metadata']:.0f}% (share of total mean |SHAP|). Attribution says how much the model "
            "uses a group, not whether that use generalises: read it next to the out-of-fold AUCs."
        )
        if result.scores.get("image", {}).get("roc_auc", {}).get("ci_low", 1.0) <= 0.5:
            text += (
                " Here the image-only model is not distinguishable from chance, so the image attribution is "
                "mostly the final model fitting noise in the embeddings."
            )
        out.append(text)
    if len(result.per_view):
        pv = result.per_view.sort_values("roc_auc", ascending=False)
        views = "; ".join(
            f"{r.embeddings}: ROC-AUC {r.roc_auc:.3f} ({r.ci_low:.3f}-{r.ci_high:.3f}, {r.n_breasts} breasts)"
            for r in pv.itertuples()
        )
        best = pv.iloc[0]
        if best["ci_low"] <= 0.5:
            tail = "No single view's embeddings rank cancers above chance (every interval includes 0.5)."
        elif len(pv) > 1 and best["ci_low"] > pv.iloc[1]["ci_high"]:
            tail = f"The {best['embeddings'].split()[0]} view carries clearly more of it (the intervals do not overlap)."
        else:
            tail = (
                f"The {best['embeddings'].split()[0]} view scores higher, but the intervals overlap: the views "
                "are not clearly different."
            )
        out.append(f"Image signal by view (image-only model on one view's embeddings): {views}. {tail}")
    cmp = result.comparisons.get("fused_vs_metadata")
    if cmp:
        d = cmp["roc_auc"]
        verdict = (
            "a clear gain"
            if d["ci_low"] > 0
            else "no gain that the interval can tell from zero"
            if d["ci_high"] >= 0
            else "a loss"
        )
        out.append(
            f"Adding the images to the metadata changes breast-level ROC-AUC from {d['value_b']:.3f} to "
            f"{d['value_a']:.3f}: difference {d['diff']:+.3f} (95% CI {d['ci_low']:+.3f} to "
            f"{d['ci_high']:+.3f}, bootstrap p = {d['p_value']:.3g}, DeLong p = "
            f"{cmp['delong']['p_value']:.3g}): {verdict}."
        )
    elif "metadata" in result.scores:
        out.append(
            f"Metadata-only breast-level ROC-AUC is {_auc(result, 'metadata')}. No embeddings were given, "
            "so the added value of the images is not measured here (run `mammo-insight embed` first)."
        )
    return out


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


def render_report(result: FusionResult, out: Path, dataset: str, label_meaning: str = "") -> Path:
    """Write OUT/index.html."""
    importance = shap_importance(result)
    groups = shap_groups(result)
    warn = [paragraph(w, "warn") for w in result.warnings if w.startswith("WARNING")]
    cards = {
        f"ROC-AUC {MODEL_WORDS[m]}": f"{result.scores[m]['roc_auc']['value']:.3f}" for m in result.scores
    }
    cards["breasts"] = f"{len(result.breasts):,}"
    cards["positive breasts"] = f"{int(result.breasts['cancer'].sum()):,}"
    n_folds = result.breasts["fold"].nunique()
    sections = [
        Section(
            "Answers",
            warn
            + [metric_cards(cards), bullet_list(answers(result, importance))]
            + ([paragraph(f"Label: {label_meaning}")] if label_meaning else []),
        ),
        Section(
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
            ],
        ),
    ]
    if len(result.per_view):
        sections.append(
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
        )
    sections += [
        Section(
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
                    "beeswarm: one dot per breast; colour = feature "
                    "value (categorical features: category code)",
                ),
            ],
        ),
        Section(
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
        ),
        Section("Age and density", _dependence_blocks(result)),
        Section("Interactions between metadata features", _interaction_blocks(result)),
        Section("Highest-risk breasts", _local_blocks(result)),
        Section(
            "Method and files",
            [
                bullet_list(
                    [
                        f"Metadata features: {', '.join(result.meta_features) or 'none'}.",
                        "Excluded as leaky (post-outcome or implausibly predictive, from the leakage audit): "
                        + (", ".join(result.excluded_leaky) or "none")
                        + ".",
                        f"Included despite being leaky (--include-leaky): {', '.join(result.included_leaky) or 'none'}.",
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
                Markup("<p>Files: ") + Markup(" · ").join(raw_link(f, f) for f in FILES) + Markup("</p>"),
            ],
        ),
    ]
    return render_page(
        out / "index.html",
        f"Fusion: metadata + image embeddings ({dataset})",
        sections,
        subtitle="LightGBM at breast level, explained with SHAP",
    )
