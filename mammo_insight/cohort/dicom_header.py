"""Laterality and view from a DICOM header: one reading for every adapter and for predict's folder mode.

Laterality: ImageLaterality, else the series' Laterality ("L"/"R", else None). View: ViewPosition, else
ViewCodeSequence's SNOMED code or its meaning (RSNA's files carry neither; CMMD's carry the sequence).
"""

from __future__ import annotations

from typing import Any

HEADER_TAGS = ["PatientID", "ImageLaterality", "Laterality", "ViewPosition", "ViewCodeSequence"]
VIEW_CODES = {"399162004": "CC", "399368009": "MLO", "cranio-caudal": "CC", "medio-lateral oblique": "MLO"}


def laterality_of(ds: Any) -> str | None:
    side = str(ds.get("ImageLaterality", "") or ds.get("Laterality", "") or "").strip().upper()[:1]
    return side if side in ("L", "R") else None


def view_of(ds: Any) -> str | None:
    position = str(ds.get("ViewPosition", "") or "").strip().upper()
    if position:
        return position
    for item in ds.get("ViewCodeSequence", []) or []:
        for key in (str(item.get("CodeValue", "")), str(item.get("CodeMeaning", "")).strip().lower()):
            if key in VIEW_CODES:
                return VIEW_CODES[key]
    return None
