"""The synthetic RSNA-like cohort with planted, documented truth (the demo's data and the tests' default).

``table``: the metadata table and its planted effects (``TRUE_EFFECTS``); ``images``: display images with
lesions; ``dicom``: DICOM encoding with real archives' variety (``jpeg_lossless`` is its encoder);
``cohort``: all of it written to disk in RSNA's layout. May import ``cohort`` and ``imaging``, never above.
"""

from mammo_insight.synth.cohort import make_synthetic_cohort
from mammo_insight.synth.table import RSNA_COLUMNS, TRUE_EFFECTS, breast_level, make_synthetic_table

__all__ = ["RSNA_COLUMNS", "TRUE_EFFECTS", "breast_level", "make_synthetic_cohort", "make_synthetic_table"]
