"""spxbatch: forced photometry of every SPHEREx observation of every source in a catalog."""

__version__ = "0.1.0"
