"""One module per CLI command: each holds the stage's config, `run_<stage>` and `write_<stage>`.

They are also the Python API for notebooks (see stages.base for the shared shape):

    from mammo_insight.stages import eda
    result = eda.run_eda(eda.EdaConfig(dataset="rsna", root=Path("data/rsna")))
    result                 # in Jupyter: the headline numbers
    result.odds_ratios     # every table as a DataFrame
    eda.write_eda(result, Path("out/eda"))
"""
