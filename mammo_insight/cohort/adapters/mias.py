"""mini-MIAS (Mammographic Image Analysis Society MiniMammographic Database) layout.

root/Info.txt plus root/mdbNNN.pgm (as distributed) or root/mdbNNN.png. Info.txt lists one line per
lesion: reference number, background tissue (F/G/D), abnormality class (CALC, CIRC, SPIC, MISC, ARCH,
ASYM, NORM), severity (B/M), lesion centre x, y (origin at the bottom-left corner) and radius. An
image with two lesions has two lines; widely spread calcifications have no centre.

Facts from Info.txt's notes used here: films come in pairs, one woman each, the left breast with the
even number and the right with the odd one (mdb001 right, mdb002 left); every film is 1024 x 1024.
All MIAS films are mediolateral oblique views.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pandas as pd
from PIL import Image

from mammo_insight.cohort.adapters.base import CohortDetails, DatasetAdapter
from mammo_insight.cohort.schema import Cohort, empty_canonical
from mammo_insight.errors import CohortError

log = logging.getLogger(__name__)

LINE = re.compile(r"^(mdb(\d{3}))\s+(\S+)\s+(\S+)(.*)$")
MINI_MIAS_SIZE = 1024
IMAGE_SUFFIXES = (".png", ".pgm")


def parse_info(path: Path) -> pd.DataFrame:
    """One row per Info.txt lesion line: ref, number, tissue, abnormality, severity, x, y, radius.

    x, y, radius are NaN where Info.txt gives no centre (NOTE 3 lines, mdb059); y is still MIAS's
    bottom-left-origin value here.
    """
    rows = []
    for lineno, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        match = LINE.match(line.strip())
        if not match:
            continue
        ref, number, tissue, abnormality, rest = match.groups()
        tokens = rest.split()
        severity = tokens[0] if tokens and tokens[0] in {"B", "M"} else None
        coords = tokens[1:4] if severity else tokens[:3]
        numeric = len(coords) == 3 and all(t.lstrip("-").isdigit() for t in coords)
        if abnormality != "NORM" and severity is None:
            raise CohortError(f"mias: {path} line {lineno}: abnormal film {ref} has no severity B or M")
        x, y, radius = (float(t) for t in coords) if numeric else (float("nan"),) * 3
        rows.append(
            {
                "ref": ref,
                "number": int(number),
                "tissue": tissue,
                "abnormality": abnormality,
                "severity": severity,
                "x": x,
                "y": y,
                "radius": radius,
            }
        )
    if not rows:
        raise CohortError(f"mias: {path} holds no 'mdbNNN ...' lines")
    return pd.DataFrame(rows)


def _image_file(root: Path, ref: str) -> Path | None:
    for suffix in IMAGE_SUFFIXES:
        candidate = root / f"{ref}{suffix}"
        if candidate.exists():
            return candidate
    return None


def _image_height(path: Path | None, ref: str) -> int | None:
    """Height in pixels from the file header (lazy open, no decode); the mini-MIAS size when absent; None
    for a film whose header cannot be read (preprocess lists the film in failures.csv with its reason)."""
    if path is None:
        log.warning(
            "mias: no image file for %s; converting its lesion y with the mini-MIAS height %d",
            ref,
            MINI_MIAS_SIZE,
        )
        return MINI_MIAS_SIZE
    try:
        with Image.open(path) as im:
            return im.size[1]
    except Exception as exc:  # noqa: BLE001 - OSError, PIL's DecompressionBombError, ...: one film, not the load
        log.warning(
            "mias: cannot read the size of %s (%s: %s); its lesions are dropped",
            path,
            type(exc).__name__,
            exc,
        )
        return None


class MiasAdapter(DatasetAdapter):
    name = "mias"
    kind = "diagnostic"
    # the abnormality class decides the label (NORM or not); severity and malignant come from the work-up
    post_outcome = ("abnormality", "severity", "malignant")
    label_meaning = (
        "cancer = 1 for any abnormal film (mini-MIAS abnormality class other than NORM, benign "
        "or malignant): the dataset's task is abnormal vs normal, NOT malignancy. Lesion "
        "malignancy is in the column 'malignant' (1 when any lesion on the film is severity M). "
        "'tissue' is MIAS background tissue (F fatty, G fatty-glandular, D dense-glandular), not "
        "BI-RADS density, so 'density' is left empty."
    )

    def load(self, root: Path, mapping: Path | None = None) -> Cohort:
        info_path = root / "Info.txt"
        if not info_path.exists():
            raise CohortError(f"mias: {info_path} not found (expected mini-MIAS Info.txt in the root)")
        lesions = parse_info(info_path)
        images = (
            lesions.groupby("ref", sort=True)
            .agg(
                number=("number", "first"),
                tissue=("tissue", "first"),
                abnormality=("abnormality", lambda s: ";".join(dict.fromkeys(s))),
                severity=(
                    "severity",
                    lambda s: "M" if (s == "M").any() else ("B" if s.notna().any() else None),
                ),
            )
            .reset_index()
        )
        paths = {ref: _image_file(root, ref) for ref in images["ref"]}
        missing = [ref for ref, p in paths.items() if p is None]
        if missing:
            log.warning(
                "mias: %d film(s) listed in %s have no .png/.pgm file, e.g. %s; image_path left empty",
                len(missing),
                info_path,
                ", ".join(missing[:5]),
            )
        pair_first = (images["number"] + 1) // 2 * 2 - 1
        table = empty_canonical(len(images))
        table["image_id"] = images["ref"].to_numpy()
        table["patient_id"] = [f"mias_{n:03d}" for n in pair_first]
        table["laterality"] = ["L" if n % 2 == 0 else "R" for n in images["number"]]
        table["view"] = "MLO"
        abnormal = images["abnormality"] != "NORM"
        table["cancer"] = abnormal.astype(float).to_numpy()
        table["image_path"] = [str(paths[r].resolve()) if paths[r] else None for r in images["ref"]]
        table["tissue"] = images["tissue"].to_numpy()
        table["abnormality"] = images["abnormality"].to_numpy()
        table["severity"] = images["severity"].to_numpy()
        table["malignant"] = (images["severity"] == "M").astype(float).to_numpy()
        return self.cohort(
            table,
            source=str(info_path),
            details=CohortDetails(factors={"tissue": "categorical"}),
            annotations=self._annotations(lesions, paths),
        )

    @staticmethod
    def _annotations(lesions: pd.DataFrame, paths: dict[str, Path | None]) -> pd.DataFrame:
        """Lesion circles with y turned from MIAS's bottom-left origin to y-down (y_down = height - y)."""
        located = lesions.dropna(subset=["x", "y", "radius"])
        heights = {ref: _image_height(paths.get(ref), ref) for ref in located["ref"].unique()}
        located = located[[heights[r] is not None for r in located["ref"]]]
        return pd.DataFrame(
            {
                "image_id": located["ref"].to_numpy(),
                "x": located["x"].to_numpy(),
                "y": [heights[r] - y for r, y in zip(located["ref"], located["y"], strict=True)],
                "radius": located["radius"].to_numpy(),
                "abnormality": located["abnormality"].to_numpy(),
                "severity": located["severity"].to_numpy(),
            }
        )


ADAPTER = MiasAdapter()
