"""Fixtures shared by all tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .loop_guard import LoopGuard, loop_guard


@pytest.fixture(autouse=True)
def event_loop_guard() -> Iterator[LoopGuard]:
    """Fail the test the moment a blocking call runs on the event loop.

    The call raises at once; and in case our code swallowed that error, the
    test also fails at teardown with every recorded call.
    """
    with loop_guard() as guard:
        yield guard
    if guard.violations:
        pytest.fail(
            "Blocking calls on the event loop:\n" + "\n".join(guard.violations),
            pytrace=False,
        )


@pytest.fixture(autouse=True)
def auto_enable_custom_integrations(enable_custom_integrations: None) -> None:
    """Let Home Assistant load the integration from custom_components/."""


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    """Return a fresh Home Assistant config directory."""
    path = tmp_path / "config"
    path.mkdir()
    return path
