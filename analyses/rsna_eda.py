"""The dataset study on a real RSNA Screening Mammography train.csv, written as a committed report.

    python analyses/rsna_eda.py /path/to/rsna/train.csv [--out reports/rsna_eda]

The folder holding train.csv is read through the RSNA adapter (images are not needed). The output
is aggregates only: summary.json, tables/*.csv and index.html hold counts, rates, tests and odds
ratios, never a row of the table or an identifier; the script checks that before it finishes.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from pathlib import Path

import pandas as pd

from mammo_insight.cohort.adapters import load_cohort
from mammo_insight.stages.eda import EdaConfig, EdaResult, write_eda
from mammo_insight.stats.factors import MAX_LEVELS
from mammo_insight.stats.study import run_study

log = logging.getLogger("rsna_eda")


def identifiers_in_outputs(out: Path, table: pd.DataFrame) -> list[str]:
    """Image and breast ids found as whole tokens in any output (figures aside).

    RSNA's patient ids are small integers: as bare tokens they collide with counts (n = 10048) and
    machine ids (49), so for them the check is structural instead (see ``row_level_factors``).
    """
    ids = {str(v) for col in ("image_id", "breast_id") for v in table[col]}
    found = set()
    for path in [out / "index.html", out / "summary.json", *sorted((out / "tables").glob("*.csv"))]:
        text = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", path.read_text())
        found |= ids & set(re.findall(r"[\w.]+", text))
    return sorted(found)


def row_level_factors(out: Path) -> list[str]:
    """Factors of the rates table with more levels than a factor may have (an identifier-like column)."""
    rates = pd.read_csv(out / "tables" / "rates.csv", dtype=str)
    per_factor = rates.groupby("factor")["level"].nunique()
    return per_factor[per_factor > MAX_LEVELS + 1].index.tolist()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("train_csv", type=Path)
    parser.add_argument("--out", type=Path, default=Path("reports/rsna_eda"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not args.train_csv.is_file():
        log.error("%s is not a file", args.train_csv)
        return 2
    cohort = load_cohort("rsna", args.train_csv.parent)
    result = run_study(cohort)
    write_eda(EdaResult(EdaConfig(dataset="rsna"), result), args.out)
    # no absolute paths of this machine in a committed manifest
    manifest = args.out / "manifest.json"
    record = json.loads(manifest.read_text())
    record["config"]["source"] = "RSNA Screening Mammography train.csv"
    record["command"] = "python analyses/rsna_eda.py TRAIN_CSV"
    manifest.write_text(json.dumps(record, indent=2))
    leaked = identifiers_in_outputs(args.out, cohort.table) + row_level_factors(args.out)
    if leaked:
        log.error(
            "row-level data in the outputs: %d identifier(s) or factor(s), e.g. %s", len(leaked), leaked[0]
        )
        return 1
    for finding in result.findings:
        log.info("- %s", finding)
    log.info("wrote %s", args.out / "index.html")
    return 0


if __name__ == "__main__":
    sys.exit(main())
