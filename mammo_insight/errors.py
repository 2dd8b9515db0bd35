"""Errors that reach the user as a clear one-line message instead of a traceback."""


class MammoInsightError(Exception):
    """Base class: the CLI prints the message and exits with status 2."""


class CohortError(MammoInsightError):
    """The cohort table (or the file it came from) breaks the canonical contract."""


class DicomError(MammoInsightError):
    """One image could not be read; the caller records it and goes on."""
