"""Every key the code uses is translated, and en.json matches strings.json."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
import pkgutil
import re

import yaml

from custom_components.backup_offload import engine
from custom_components.backup_offload.binary_sensor import BINARY_SENSORS
from custom_components.backup_offload.button import BUTTONS
from custom_components.backup_offload.const import OperationState
from custom_components.backup_offload.engine.errors import BackupOffloadError
from custom_components.backup_offload.engine.location import CONFIG_REASONS
from custom_components.backup_offload.sensor import SENSORS
from custom_components.backup_offload.services import SCHEMAS

PACKAGE = Path(__file__).parent.parent / "custom_components" / "backup_offload"
STRINGS = json.loads((PACKAGE / "strings.json").read_text())
ICONS = json.loads((PACKAGE / "icons.json").read_text())
# Where errors are raised towards the user (entities use translation_key too).
RAISING = "\n".join(
    (PACKAGE / name).read_text() for name in ("manager.py", "services.py")
)


def test_en_matches_strings() -> None:
    """The shipped English translation is strings.json."""
    assert json.loads((PACKAGE / "translations" / "en.json").read_text()) == STRINGS


def test_entities_translated_with_icons() -> None:
    """Each entity's translation key has a name and an icon."""
    entities = {
        "sensor": [d.translation_key for d in SENSORS],
        "binary_sensor": [d.translation_key for d in BINARY_SENSORS],
        "button": [d.translation_key for d in BUTTONS],
    }
    for platform, keys in entities.items():
        for key in keys:
            assert STRINGS["entity"][platform][key]["name"]
            assert ICONS["entity"][platform][key]["default"].startswith("mdi:")
    states = STRINGS["entity"]["sensor"]["state"]["state"]
    assert set(states) == {s.value for s in OperationState}


def _engine_errors() -> set[type[BackupOffloadError]]:
    """Return every error class the engine defines (all its modules imported)."""
    for module in pkgutil.walk_packages(engine.__path__, f"{engine.__name__}."):
        importlib.import_module(module.name)
    found: set[type[BackupOffloadError]] = set()
    todo = [BackupOffloadError]
    while todo:
        cls = todo.pop()
        found.add(cls)
        todo.extend(cls.__subclasses__())
    return found


def test_exceptions_translated() -> None:
    """Every translation_key raised in the code has a message."""
    used = set(re.findall(r'translation_key="([a-z_]+)"', RAISING))
    used |= set(re.findall(r'_invalid\(\s*"([a-z_]+)"', RAISING))
    used |= {f"location_{r}" for r in (
        "not_found", "not_a_directory", "not_a_mount", "not_writable",
        "unreachable", "not_responding", "inside_config", "system_folder",
        "path_too_long",
    )}  # fmt: skip
    used |= {error.reason for error in _engine_errors()}
    used -= {"location_unavailable"}  # the issue's key, and the base class reason
    assert used <= set(STRINGS["exceptions"]), used - set(STRINGS["exceptions"])


def test_config_errors_translated() -> None:
    """Each reason validate_location reports is a translated form error."""
    assert set(CONFIG_REASONS) <= set(STRINGS["config"]["error"])


def test_services_described() -> None:
    """services.yaml, strings.json and icons.json name the same actions and fields."""
    services = yaml.safe_load((PACKAGE / "services.yaml").read_text())
    assert set(services) == set(SCHEMAS) == set(STRINGS["services"])
    assert set(ICONS["services"]) == set(SCHEMAS)
    for name, schema in SCHEMAS.items():
        fields = {str(key) for key in schema.schema}
        assert set(services[name]["fields"]) == fields
        assert set(STRINGS["services"][name]["fields"]) == fields
        assert services[name]["fields"]["config_entry_id"]["selector"] == {
            "config_entry": {"integration": "backup_offload"}
        }


def test_issues_fixable_or_described() -> None:
    """An issue has a fix flow or a description, not both (hassfest's rule)."""
    for key, issue in STRINGS["issues"].items():
        assert ("fix_flow" in issue) != ("description" in issue), key


def _texts(node: object) -> list[str]:
    if isinstance(node, dict):
        return [text for value in node.values() for text in _texts(value)]
    return [node] if isinstance(node, str) else []


def test_texts_format_in_the_frontend() -> None:
    """No text holds what the frontend's ICU formatter reads as a tag.

    "backup_offload.<config entry ID>" showed as "Translation error:
    INVALID_TAG" under the copy action's Source field.
    """
    tagged = [text for text in _texts(STRINGS) if re.search(r"<\w", text)]
    assert tagged == []
