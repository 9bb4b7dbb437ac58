"""The README's dashboard card: the same as docs/dashboard.yaml, and it works.

scripts/screenshots puts docs/dashboard.yaml on a dashboard; the README
shows it inline for copying. Both must be the same card, and every entity it
names must be one a location called "NAS" has.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
import re
from typing import Any

from homeassistant.core import HomeAssistant
from homeassistant.helpers import entity_registry as er
from pytest_homeassistant_custom_component.common import MockConfigEntry
import yaml

REPO = Path(__file__).parent.parent
CARD = (REPO / "docs" / "dashboard.yaml").read_text()
README = (REPO / "README.md").read_text()
MARKER = "<!-- docs/dashboard.yaml -->"


def _entities(node: Any) -> Iterator[str]:
    """Yield every entity id a card configuration names."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "entity":
                yield value
            elif key == "entities":
                yield from (row for row in value if isinstance(row, str))
                yield from _entities([row for row in value if not isinstance(row, str)])
            else:
                yield from _entities(value)
    elif isinstance(node, list):
        for item in node:
            yield from _entities(item)


def test_readme_shows_the_card_of_docs() -> None:
    """The YAML block after the marker in the README is docs/dashboard.yaml."""
    assert MARKER in README
    block = re.search(
        re.escape(MARKER) + r"\s*```yaml\n(.*?)```", README, flags=re.DOTALL
    )
    assert block is not None, "no ```yaml block after the marker"
    assert block.group(1) == CARD


def test_card_is_made_of_home_assistant_cards() -> None:
    """Only Home Assistant's own card types: nothing to install from HACS."""
    types: set[str] = set()

    def collect(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("type"), str):
                types.add(node["type"])
            for value in node.values():
                collect(value)
        elif isinstance(node, list):
            for item in node:
                collect(item)

    collect(yaml.safe_load(CARD))
    assert not {t for t in types if t.startswith("custom:")}
    assert types <= {"vertical-stack", "entities", "conditional", "attribute"}


async def test_card_names_existing_entities(
    hass: HomeAssistant, init_integration: MockConfigEntry
) -> None:
    """Every entity of the card exists for a location named NAS."""
    named = set(_entities(yaml.safe_load(CARD)))
    assert "button.nas_create_backup" in named
    registry = er.async_get(hass)
    ours = {
        entry.entity_id
        for entry in er.async_entries_for_config_entry(
            registry, init_integration.entry_id
        )
    }
    assert named <= ours, f"not entities of a location: {sorted(named - ours)}"
