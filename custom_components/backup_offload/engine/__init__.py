"""The engine: plain synchronous Python that does Backup Offload's file work.

Nothing below this package imports Home Assistant or the integration's
Home Assistant side (``engine/ruff.toml`` makes lint refuse it): it is run
in executor jobs and worker processes, and tested without Home Assistant.
See docs/architecture.md.
"""
