"""Realistic acquisition headers for the synthetic cohort, with planted truth of their own.

Every value here is drawn from generators seeded apart from the cohort's (``[seed, 7, image_id]`` and
``[seed, 8, ...]``), so adding headers changes no pixel, label or table value that the cohort drew before.

- manufacturer, model, target/filter, station name and serial number per machine (``MACHINES``);
- compressed breast thickness grows with the breast's size (the woman's size factor) and the MLO view;
  kVp, mAs and organ dose grow with thickness and density, as automatic exposure control makes them;
  compression force is unrelated to the label;
- work-up (the planted leak): a share ``WORKUP_SHARE`` of positive breasts get one or two diagnostic
  images in the same study, a spot compression and/or magnification CC view (ViewModifierCodeSequence),
  written under unlisted_images/ (train.csv, RSNA-style, lists screening images only);
- FOR PROCESSING copies (a control, unrelated to the label): every image of machine ``PROCESSING_MACHINE``
  (site 2) also exists as a Digital Mammography For Processing copy, under unlisted_images/ as well;
- identifying tags (``PHI_TAGS``) that no output may carry: the PHI tests scan every written file for them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# machine_id -> (manufacturer, model, target/filter)
MACHINES = {
    "49": ("HOLOGIC, Inc.", "Selenia Dimensions", ("W", "RH")),
    "216": ("GE MEDICAL SYSTEMS", "Senographe Essential", ("RH", "RH")),
    "93": ("SIEMENS", "Mammomat Inspiration", ("W", "RH")),
    "210": ("HOLOGIC, Inc.", "Lorad Selenia", ("MOLYBDENUM", "MOLYBDENUM")),
    "170": ("FUJIFILM Corporation", "AMULET Innovality", ("W", "RH")),
    "190": ("Philips", "MicroDose SI", ("W", "AL")),
    "197": ("Planmed", "Clarity 2D", ("W", "AG")),
    "21": ("GE MEDICAL SYSTEMS", "Senographe Pristina", ("RH", "AG")),
    "29": ("HOLOGIC, Inc.", "3Dimensions", ("W", "AG")),
    "48": ("SIEMENS", "Mammomat Revelation", ("W", "RH")),
}
DENSITY_INDEX = {"A": 0, "B": 1, "C": 2, "D": 3}
VIEW_CODES = {  # SNOMED CT codes of DICOM CID 4014
    "CC": ("399162004", "cranio-caudal"),
    "MLO": ("399368009", "medio-lateral oblique"),
    "ML": ("399260004", "medio-lateral"),
    "LM": ("399352003", "latero-medial"),
    "AT": ("399099002", "latero-medial oblique"),
}
WORKUP_VIEWS = (("R-102D2", "Spot Compression"), ("R-102D6", "Magnification"))  # CID 4015 (SRT codes)
WORKUP_SHARE = 0.6
PROCESSING_MACHINE = "48"


@dataclass(frozen=True)
class Acquisition:
    """One exposure's header values (thickness mm, force N, dose mGy)."""

    kvp: float
    mas: float
    thickness: float
    force: float
    dose: float


def acquisition(
    seed: int, image_id: int, size_factor: float, density: str, view: str, exposure: str = ""
) -> Acquisition:
    """Thickness from breast size and view; exposure and dose from thickness and density (AEC).
    ``exposure`` names a further exposure of the same image (a work-up view), drawn apart."""
    rng = np.random.default_rng([seed, 7, image_id, *map(ord, exposure)])
    d = DENSITY_INDEX.get(density, 1)
    thickness = float(
        np.clip(45 + 40 * (size_factor - 1.0) + (5 if view == "MLO" else 0) + rng.normal(0, 5), 20, 100)
    )
    kvp = float(round(26 + 0.12 * (thickness - 45) + 0.8 * d + rng.normal(0, 0.7)))
    mas = float(round(np.exp(np.log(100) + 0.02 * (thickness - 45) + 0.15 * d + rng.normal(0, 0.15)), 1))
    force = float(round(np.clip(rng.normal(110, 20), 40, 200), 1))
    dose = float(round(np.clip(0.9 + 0.025 * (thickness - 45) + 0.1 * d + rng.normal(0, 0.1), 0.3, 4.0), 3))
    return Acquisition(kvp, mas, round(thickness, 1), force, dose)


def workup_views(seed: int, patient_id: int, laterality: str) -> tuple[tuple[str, str], ...]:
    """The work-up views a positive breast gets: none (1 - WORKUP_SHARE), else spot and/or magnification."""
    rng = np.random.default_rng([seed, 8, patient_id, ord(laterality)])
    if rng.random() >= WORKUP_SHARE:
        return ()
    pick = int(rng.integers(3))
    return (WORKUP_VIEWS[0],) if pick == 0 else (WORKUP_VIEWS[1],) if pick == 1 else WORKUP_VIEWS


def phi_tags(patient_id: str, site_id: str, machine_id: str) -> dict[str, str]:
    """The fake identifying tags of one image: distinctive values that a byte scan of any output can find."""
    pid = int(patient_id)
    first = ("JANE", "MARY", "ANNA", "ROSA", "EMMA", "LENA", "SARA", "IRIS")[pid % 8]
    return {
        "PatientName": f"SYNTH^{first}",
        "PatientID": f"MRN-{pid:08d}",
        "AccessionNumber": f"ACC{pid}",
        "InstitutionName": f"SYNTH GENERAL HOSPITAL SITE {site_id}",
        "InstitutionAddress": f"{site_id} SYNTHETIC AVENUE, NOWHERE",
        "ReferringPhysicianName": "SYNTH^DOCTOR",
        "OperatorsName": "SYNTH^RADIOGRAPHER",
        "StationName": f"SYNSTATION{machine_id}",
        "DeviceSerialNumber": f"SYNSERIAL-{site_id}-{machine_id}",
    }
