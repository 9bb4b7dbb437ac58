"""Tests of Backup Offload."""
