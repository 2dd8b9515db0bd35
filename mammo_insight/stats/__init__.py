"""Statistics on the cohort table: rates with intervals, tests, regression, missingness, leakage audit."""
