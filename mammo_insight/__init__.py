"""mammo-insight: understand screening-mammography datasets before and after modelling them."""

__version__ = "0.1.0"
