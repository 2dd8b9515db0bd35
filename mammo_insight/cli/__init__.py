"""The mammo-insight command line: one thin command per stage, each in its own module."""
