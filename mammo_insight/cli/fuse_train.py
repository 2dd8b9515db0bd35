"""`mammo-insight fuse-train`: LightGBM on breast-level metadata plus out-of-fold CNN embeddings, with SHAP.

Never imports torch (LightGBM and torch run in separate processes: `embed` vs `fuse-train`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

log = logging.getLogger(__name__)


def command(
    out: Annotated[Path, typer.Option(help="output folder")],
    dataset: Annotated[str | None, typer.Option(help="rsna, mias, cbis, cmmd, inbreast or generic")] = None,
    root: Annotated[Path | None, typer.Option(help="dataset root folder")] = None,
    mapping: Annotated[Path | None, typer.Option(help="TOML mapping file (generic datasets)")] = None,
    cohort: Annotated[Path | None, typer.Option(help="a canonical cohort .parquet (instead of --dataset/--root)")] = None,
    embeddings: Annotated[Path | None, typer.Option(help="EMB.parquet from `mammo-insight embed`")] = None,
    folds: Annotated[int, typer.Option(min=2, help="folds when the embeddings carry none")] = 5,
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
    include_leaky: Annotated[list[str] | None, typer.Option(
        help="a leaky (post-outcome) cohort column to use anyway; repeat for several. Figures become optimistic")] = None,
    n_boot: Annotated[int, typer.Option(min=0, help="bootstrap resamples for intervals and paired tests")] = 1000,
    shap_rows: Annotated[int, typer.Option(min=10, help="breasts explained with SHAP (a random sample)")] = 3000,
    workers: Annotated[int, typer.Option(min=1, help="folds fitted at once (threads)")] = 2,
    threads: Annotated[int, typer.Option(min=1, help="LightGBM threads per model (1 is safest on a busy machine)")] = 1,
) -> None:
    """Cross-validate metadata-only, image-only and fused LightGBM; compare them; explain with SHAP."""
    import pandas as pd

    from mammo_insight.cohort.schema import POST_OUTCOME_COLUMNS, validate_cohort
    from mammo_insight.errors import MammoInsightError
    from mammo_insight.fusion.emb_table import read_embeddings
    from mammo_insight.fusion.lgbm import LgbmParams
    from mammo_insight.fusion.outputs import write_outputs
    from mammo_insight.fusion.pipeline import FusionConfig, run_fusion
    from mammo_insight.fusion.report import render_report
    from mammo_insight.manifest import write_manifest

    label_meaning = ""
    post_outcome = POST_OUTCOME_COLUMNS  # a cohort file's: the canonical post-outcome columns
    if cohort is not None:
        if not cohort.is_file():
            raise MammoInsightError(f"cohort file {cohort} does not exist")
        table = validate_cohort(pd.read_parquet(cohort), source=str(cohort))
        name = dataset or cohort.stem
    elif dataset and root:
        from mammo_insight.cohort.adapters import load_cohort

        loaded = load_cohort(dataset, root, mapping)
        table, name, label_meaning, post_outcome = loaded.table, dataset, loaded.label_meaning, loaded.post_outcome
    else:
        raise MammoInsightError("give --cohort FILE.parquet, or --dataset NAME with --root DIR")
    emb = read_embeddings(embeddings) if embeddings is not None else None
    include = list(include_leaky or [])
    if include:
        typer.secho(f"!!! WARNING: including leaky column(s) {', '.join(include)}: they are decided after the "
                    "outcome; every figure of this run is optimistic !!!", fg=typer.colors.RED, bold=True, err=True)
    config = FusionConfig(folds=folds, seed=seed, include_leaky=include, n_boot=n_boot, shap_rows=shap_rows,
                          workers=workers, params=LgbmParams(n_jobs=threads))
    result = run_fusion(table, emb, config, post_outcome=post_outcome)
    out.mkdir(parents=True, exist_ok=True)
    write_outputs(result, out)
    inputs = {k: v for k, v in {"cohort": cohort, "embeddings": embeddings, "mapping": mapping}.items() if v}
    if root is not None and dataset == "rsna":
        inputs["train_csv"] = root / "train.csv"
    write_manifest(out, "fuse-train", {"dataset": name, "root": root, "folds": result.folds.get("k", folds),
                                       "folds_requested": folds, "include_leaky": include,
                                       "n_boot": n_boot, "shap_rows": shap_rows, "workers": workers, "params": vars(config.params),
                                       "n_pca": config.n_pca}, seed, inputs)
    render_report(result, out, name, label_meaning)
    for model, body in result.scores.items():
        auc = body["roc_auc"]
        typer.echo(f"{model}: breast-level ROC-AUC {auc['value']:.3f} (95% CI {auc['ci_low']:.3f}-{auc['ci_high']:.3f}),"
                   f" PR-AUC {body['pr_auc']['value']:.3f}, pF1 {body['pf1']['value']:.3f}, "
                   f"{body['n']} breasts, {body['n_pos']} positive")
    for w in result.warnings:
        typer.echo(w, err=True)
    typer.echo(f"wrote {out / 'index.html'}")
