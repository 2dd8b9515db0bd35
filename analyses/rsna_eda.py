"""The dataset study on a real RSNA Screening Mammography train.csv, written as a committed report.

    python analyses/rsna_eda.py /path/to/rsna/train.csv [--out reports/rsna_eda]

The folder holding train.csv is read through the RSNA adapter (images are not needed). The output
is aggregates only: summary.json, tables/*.csv and index.html hold counts, rates, tests and odds
ratios, never a row of the table or an identifier; the script checks that before it finishes.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from pathlib import Path

from mammo_insight.cohort.adapters import load_cohort
from mammo_insight.manifest import write_manifest
from mammo_insight.stats.study import run_study, write_study

log = logging.getLogger("rsna_eda")


def identifiers_in_outputs(out: Path, ids: set[str]) -> list[str]:
    """Identifiers that appear as a whole token in the page text (figures aside) or in a table."""
    found = set()
    for path in [out / "index.html", out / "summary.json", *sorted((out / "tables").glob("*.csv"))]:
        text = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", path.read_text())
        found |= ids & set(re.findall(r"[\w.]+", text))
    return sorted(found)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("train_csv", type=Path)
    parser.add_argument("--out", type=Path, default=Path("reports/rsna_eda"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not args.train_csv.is_file():
        log.error("%s is not a file", args.train_csv)
        return 2
    cohort = load_cohort("rsna", args.train_csv.parent)
    result = run_study(cohort)
    write_study(result, args.out)
    # no absolute paths of this machine in a committed manifest
    write_manifest(args.out, "eda", {"dataset": "rsna", "source": "RSNA Screening Mammography train.csv"}, seed=0)
    table = cohort.table
    ids = {str(v) for col in ("image_id", "patient_id", "breast_id") for v in table[col]}
    leaked = identifiers_in_outputs(args.out, {i for i in ids if len(i) >= 4})
    if leaked:
        log.error("identifiers found in the outputs: %d (e.g. %s)", len(leaked), leaked[0])
        return 1
    for finding in result.findings:
        log.info("- %s", finding)
    log.info("wrote %s", args.out / "index.html")
    return 0


if __name__ == "__main__":
    sys.exit(main())
