"""Reproducible performance measurements of the backup engine (``scripts/bench``)."""
