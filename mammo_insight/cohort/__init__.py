"""The canonical cohort table (cohort.schema) and the adapters that map datasets onto it.

Nothing is imported here: a header-reading worker process imports cohort.dicom_scan without pandas.
"""
