"""The fuse-train report's plain-words answers: one sentence per question, from the numbers of the run."""

from __future__ import annotations

import pandas as pd

from mammo_insight.fusion import shap_tabular as st
from mammo_insight.fusion.pipeline import FusionResult
from mammo_insight.report import fmt_ci

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
    out = _importance_sentences(result, importance.head(5))
    share = _share_sentence(result)
    if share:
        out.append(share)
    if len(result.per_view):
        out.append(_per_view_sentence(result))
    best = result.best_metadata
    if best is not None:
        out.append(_metadata_sentence(result, best))
    if "oracle" in result.scores and best is not None:
        out.append(_oracle_sentence(result, best))
    if "cnn" in result.scores:
        out.append(_cnn_sentence(result))
    sources = [m for m in ("image", best) if m in result.scores]
    if "fused" in result.scores and len(sources) == 2 and "cnn" not in result.scores:
        out.append(_fusion_sentence(result, sources))
    gain = _gain_sentence(result, best)
    if gain:
        out.append(gain)
    return out


def _importance_sentences(result: FusionResult, top: pd.DataFrame) -> list[str]:
    """The features that move the explained model most, and a caution when work-up proxies lead them."""
    out = [
        "Features that move the "
        + MODEL_WORDS[result.explained_model]
        + " model most (mean |SHAP|): "
        + ", ".join(f"{f} ({g}, {v:.3f})" for f, g, v in top.itertuples(index=False))
        + "."
    ]
    workup = [f for f in ("n_images", "n_other_views") if f in set(top["feature"])]
    if workup:
        out.append(
            f"Caution: {', '.join(workup)} rank high. Extra images are often diagnostic work-up taken after "
            "a suspicious finding, so this signal may partly come from after the screening decision."
        )
    return out


def _share_sentence(result: FusionResult) -> str | None:
    """How the attribution splits between images and metadata (None when the model has one group)."""
    share = st.group_share(result.shap_explanation.values, list(result.shap_X.columns), result.feature_groups)
    if "image" not in share or "metadata" not in share:
        return None
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
    return text


def _per_view_sentence(result: FusionResult) -> str:
    """Each view's image-only ROC-AUC, and whether one view clearly carries more of the signal."""
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
    return f"Image signal by view (image-only model on one view's embeddings): {views}. {tail}"


def _oracle_sentence(result: FusionResult, best: str) -> str:
    """The planted risk (synthetic cohorts): the ceiling a metadata-only model can approach."""
    return (
        f"The planted metadata risk (the generator's own risk model, which no model sees) ranks cancers "
        f"with ROC-AUC {_auc(result, 'oracle')}: what a metadata-only model can approach (beating it would be "
        "chance). "
        f"The best metadata-only model reaches {_auc(result, best)}."
    )


def _gain_sentence(result: FusionResult, best: str | None) -> str | None:
    """What adding the images to the primary metadata model changes, or why it is not measured."""
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
        return (
            f"Adding the images to the metadata changes breast-level ROC-AUC from {d['value_b']:.3f} (primary "
            f"metadata-only model) to "
            f"{d['value_a']:.3f}: difference {d['diff']:+.3f} (95% CI {d['ci_low']:+.3f} to "
            f"{d['ci_high']:+.3f}, bootstrap p = {d['p_value']:.3g}, DeLong p = "
            f"{cmp['delong']['p_value']:.3g}): {verdict}."
        )
    if best is not None:
        return (
            f"Metadata-only breast-level ROC-AUC is {_auc(result, best)} ({MODEL_WORDS[best]}). No embeddings were given, "
            "so the added value of the images is not measured here (run `mammo-insight embed` first)."
        )
    return None


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


def odds_sentence(odds: dict) -> str:
    """The image score's crude and adjusted odds ratio per standard deviation, with the verdict."""
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
