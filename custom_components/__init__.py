"""Custom integrations loaded from this repository."""
