"""Restore a backup: full (at Home Assistant's next start) or partial (live)."""
