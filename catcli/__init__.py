"""catcli: Compute Aligned Training (arXiv 2604.24957) from the command line."""

__version__ = "0.1.0"
