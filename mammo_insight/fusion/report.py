"""The fuse-train HTML report: plain-words answers first, then the evidence behind them."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pandas as pd
from markupsafe import Markup

from mammo_insight.fusion import shap_tabular as st
from mammo_insight.fusion.features import WORKUP_FEATURES
from mammo_insight.fusion.outputs import calibration_curves, decision_curves, shap_groups, shap_importance
from mammo_insight.fusion.pipeline import FusionResult
from mammo_insight.metrics.compare import comparison_table, scores_table
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
    "tables/decision_curves.csv",
    "tables/calibration.csv",
    "tables/scanner_probes.csv",
    "tables/within_group_auc.csv",
    "tables/scanner_stratified_auc.csv",
    "manifest.json",
]
MODEL_WORDS = {
    "metadata": "metadata only (LightGBM)",
    "metadata_logistic": "metadata only (logistic)",
    "image": "image embeddings only",
    "fused": "metadata + images",
    "cnn": "the CNN's own out-of-fold score",
    "stacked": "CNN score + metadata (logistic stacker)",
    "age_only": "age only (logistic)",
    "oracle": "planted metadata risk (oracle)",
}


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
    best = result.best_metadata
    if best is not None:
        out.append(_metadata_sentence(result, best))
    if "oracle" in result.scores and best is not None:
        out.append(
            f"The planted metadata risk (the generator's own risk model, which no model sees) ranks cancers "
            f"with ROC-AUC {_auc(result, 'oracle')}: what a metadata-only model can approach (beating it would be "
            "chance). "
            f"The best metadata-only model reaches {_auc(result, best)}."
        )
    if "cnn" in result.scores:
        out.append(_cnn_sentence(result))
    sources = [m for m in ("image", best) if m in result.scores]
    if "fused" in result.scores and len(sources) == 2 and "cnn" not in result.scores:
        out.append(_fusion_sentence(result, sources))
    cmp = result.comparisons.get(f"fused_vs_{best}")
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
            f"Adding the images to the metadata changes breast-level ROC-AUC from {d['value_b']:.3f} (primary "
            f"metadata-only model) to "
            f"{d['value_a']:.3f}: difference {d['diff']:+.3f} (95% CI {d['ci_low']:+.3f} to "
            f"{d['ci_high']:+.3f}, bootstrap p = {d['p_value']:.3g}, DeLong p = "
            f"{cmp['delong']['p_value']:.3g}): {verdict}."
        )
    elif best is not None:
        out.append(
            f"Metadata-only breast-level ROC-AUC is {_auc(result, best)} ({MODEL_WORDS[best]}). No embeddings were given, "
            "so the added value of the images is not measured here (run `mammo-insight embed` first)."
        )
    return out


def _diff(result: FusionResult, a: str, b: str) -> str:
    """'difference +0.012 (95% CI ..., paired bootstrap p = ..., DeLong p = ...)' of a against b, or ''."""
    cmp = result.comparisons.get(f"{a}_vs_{b}")
    if not cmp:
        return ""
    d = cmp["roc_auc"]
    return (
        f"difference {d['diff']:+.3f} (95% CI {d['ci_low']:+.3f} to {d['ci_high']:+.3f}; paired bootstrap over "
        f"women p = {d['p_value']:.3g}, DeLong p = {cmp['delong']['p_value']:.3g})"
    )


def _metadata_sentence(result: FusionResult, best: str) -> str:
    """The primary metadata model (chosen before scoring) beside age alone and the other metadata model."""
    text = (
        f"Primary metadata-only model (declared before scoring: {MODEL_WORDS[best]}): ROC-AUC "
        f"{_auc(result, best)}."
    )
    if "age_only" in result.scores:
        text += f" Age alone: {_auc(result, 'age_only')}; the primary model against it: {_diff(result, best, 'age_only')}."
    other = next((m for m in ("metadata", "metadata_logistic") if m in result.scores and m != best), None)
    if other:
        text += f" The {MODEL_WORDS[other]} model scores {_auc(result, other)}."
    return text + " What the images add is measured against the primary model."


def _cnn_sentence(result: FusionResult) -> str:
    """Is the best fused model at least as good as the CNN's own out-of-fold score? (paired test)."""
    cnn = result.scores["cnn"]["roc_auc"]["value"]
    parts = [
        f"The CNN's own out-of-fold score ranks cancers with ROC-AUC {_auc(result, 'cnn')}: the image-only reference."
    ]
    for model in ("stacked", "fused", "image"):
        cmp = result.comparisons.get(f"{model}_vs_cnn")
        if not cmp:
            continue
        d = cmp["roc_auc"]
        where = "above" if d["ci_low"] > 0 else "below" if d["ci_high"] < 0 else "not distinguishable from"
        parts.append(
            f"The {MODEL_WORDS[model]} model ({result.scores[model]['roc_auc']['value']:.3f}) is {where} it: "
            f"{_diff(result, model, 'cnn')}."
        )
    fused = [m for m in ("stacked", "fused") if f"{m}_vs_cnn" in result.comparisons]
    if fused:
        best = max(fused, key=lambda m: result.scores[m]["roc_auc"]["value"])
        d = result.comparisons[f"{best}_vs_cnn"]["roc_auc"]
        parts.append(
            "Fusion is worth having only if it is at least as good as the image model it starts from: "
            + (
                f"the best fused model ({MODEL_WORDS[best]}) is not below the CNN's score (paired interval "
                f"{d['ci_low']:+.3f} to {d['ci_high']:+.3f})."
                if d["ci_high"] >= 0
                else f"even the best fused model ({MODEL_WORDS[best]}, {d['value_a']:.3f}) is below the CNN's "
                f"own score ({cnn:.3f}; paired interval {d['ci_low']:+.3f} to {d['ci_high']:+.3f}): here fusion "
                "does not pay."
            )
        )
    return " ".join(parts)


def _fusion_sentence(result: FusionResult, sources: list[str]) -> str:
    """Is the fused model at least as good as each single source? If not, say why in plain words."""
    fused = result.scores["fused"]["roc_auc"]["value"]
    behind = [m for m in sources if result.scores[m]["roc_auc"]["value"] > fused]
    if not behind:
        return (
            f"Fusion does what it is for: the fused model ({fused:.3f}) is at least as good as each single "
            "source ("
            + ", ".join(f"{MODEL_WORDS[m]} {result.scores[m]['roc_auc']['value']:.3f}" for m in sources)
            + ")."
        )
    m = behind[0]
    cmp = result.comparisons.get(f"fused_vs_{m}", {}).get("roc_auc")
    gap = (
        f" (difference {cmp['diff']:+.3f}, 95% CI {cmp['ci_low']:+.3f} to {cmp['ci_high']:+.3f})"
        if cmp
        else ""
    )
    return (
        f"The fused model ({fused:.3f}) scores below the {MODEL_WORDS[m]} model "
        f"({result.scores[m]['roc_auc']['value']:.3f}){gap}. Fusing costs the trees data: they must learn the "
        f"second source from {int(result.breasts['cancer'].sum())} positive breasts in each training fold, "
        "and where one source carries most of the signal its noise can outweigh what the other adds; an "
        "interval that includes 0 means the two cannot be told apart on this cohort."
    )


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


def _odds_sentence(odds: dict) -> str:
    crude, adjusted = odds["crude"], odds["adjusted"]
    verdict = (
        "the image carries information beyond these factors"
        if adjusted["ci_low"] > 1
        else "the interval includes 1: no evidence that the image adds to these factors"
    )
    return (
        f"Odds ratio of cancer per standard deviation of the image score ({odds['score']}): crude "
        f"{crude['odds_ratio']:.2f} ({crude['ci_low']:.2f}-{crude['ci_high']:.2f}), adjusted for "
        f"{', '.join(odds['adjusted_for']) or 'nothing'} {adjusted['odds_ratio']:.2f} "
        f"({adjusted['ci_low']:.2f}-{adjusted['ci_high']:.2f}, p = {adjusted['p_value']:.3g}; logistic GLM, "
        f"standard errors clustered by woman): {verdict}."
    )


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
        blocks.append(paragraph(_odds_sentence(odds)))
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
        ),
        _incremental_section(result),
        _scanner_section(result),
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
                        "eda's tables/leakage.csv gives): "
                        + (", ".join(result.excluded_leaky) or "none")
                        + ".",
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
        ),
    ]
    return render_page(
        out / "index.html",
        f"Fusion: metadata + image embeddings ({dataset})",
        sections,
        subtitle="LightGBM and logistic regression at breast level, explained with SHAP",
    )
