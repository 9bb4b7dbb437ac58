"""Fixtures of the engine tests: real config directories and locations.

The engine is plain synchronous code, so these tests are plain functions on
real files under ``tmp_path``. They also run without Home Assistant (see
``scripts/test-securetar``): then the integration package is made importable
without running its ``__init__`` (which needs Home Assistant).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
import importlib.util
import os
from pathlib import Path
import sys
import types

import pytest

_PACKAGE = "custom_components.backup_offload"


def _import_without_home_assistant() -> None:
    """Register the package by path so ``from .errors import ...`` works."""
    root = Path(__file__).resolve().parents[2] / "custom_components"
    for name, path in (
        ("custom_components", root),
        (_PACKAGE, root / "backup_offload"),
    ):
        if name not in sys.modules:
            module = types.ModuleType(name)
            module.__path__ = [str(path)]
            sys.modules[name] = module


WITHOUT_HOME_ASSISTANT = importlib.util.find_spec("homeassistant") is None
if WITHOUT_HOME_ASSISTANT:
    _import_without_home_assistant()

from .helpers import EXCLUDED, KINDS, make_database, write  # noqa: E402


@pytest.fixture(autouse=True)
def auto_enable_custom_integrations() -> None:
    """Override the suite-wide fixture: these tests need no ``hass``."""


if WITHOUT_HOME_ASSISTANT:
    # tests/conftest.py (not loaded without Home Assistant) provides these.

    @pytest.fixture
    def config_dir(tmp_path: Path) -> Path:
        """Return a fresh Home Assistant config directory."""
        path = tmp_path / "config"
        path.mkdir()
        return path

    @pytest.fixture
    def location_dir(tmp_path: Path) -> Path:
        """Return a plain directory to use as a location (no mount required)."""
        path = tmp_path / "location"
        path.mkdir()
        return path


@pytest.fixture(params=list(KINDS))
def kind(request: pytest.FixtureRequest) -> tuple[str | None, bool]:
    """Each (password, compress) combination, by name."""
    return KINDS[request.param]


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., Path]:
    """Return a builder of a realistic Home Assistant config directory."""

    def build(name: str = "config", *, big: int = 256 * 1024) -> Path:
        root = tmp_path / name
        write(root / "configuration.yaml", "homeassistant:\n  name: Home\n")
        write(root / "automations.yaml", "[]\n")
        write(root / "secrets.yaml", "api_key: 'not so secret'\n")
        write(root / ".storage/core.config_entries", '{"version": 1, "data": {}}')
        write(root / ".storage/auth", '{"users": []}')
        write(root / "custom_components/demo/__init__.py", '"""Demo."""\n')
        write(root / "custom_components/demo/manifest.json", '{"domain": "demo"}')
        write(root / "www/images/Küche mit Blick.png", os.urandom(5000))
        write(root / "www/big.bin", os.urandom(big))
        write(root / "tts/.keep", "")
        deep = "/".join(f"level{i:02d}_with_a_rather_long_name" for i in range(6))
        write(root / deep / "file.yaml", "deep: true\n")
        (root / "empty_dir").mkdir()
        (root / "themes").mkdir()
        (root / "themes/current.yaml").symlink_to("../configuration.yaml")
        (root / "www/latest").symlink_to("images")
        write(root / "blueprints/a.yaml", "blueprint: {}\n")
        os.link(root / "blueprints/a.yaml", root / "blueprints/a-hardlink.yaml")
        for rel in EXCLUDED:
            write(root / rel, f"excluded {rel}\n")
        make_database(root / "home-assistant_v2.db")
        return root

    return build


@pytest.fixture
def config(make_config: Callable[..., Path]) -> Path:
    """A realistic config directory."""
    return make_config()


@pytest.fixture
def location(tmp_path: Path) -> Path:
    """An empty location directory."""
    path = tmp_path / "share"
    path.mkdir()
    return path


@pytest.fixture
def no_stray_files(tmp_path: Path) -> Iterator[Callable[[Path], None]]:
    """Check that only the given directory changed under ``tmp_path``."""
    before = set(tmp_path.rglob("*"))

    def check(allowed: Path) -> None:
        after = set(tmp_path.rglob("*"))
        stray = {p for p in after - before if allowed not in p.parents and p != allowed}
        assert not stray

    return check
