"""The tour of scripts/screenshots: a real Home Assistant, a real browser.

Starts Home Assistant (the configuration directory scripts/screenshots
prepared, on its port) and a headless Chromium, onboards a user through the
REST API, adds the location, and takes one PNG per page in ``--out``. It is
also a smoke test: it fails when a page shows a raw translation key of ours,
when a page misses a text of ours (taken from translations/en.json), or when
Home Assistant's log has an error or a blocking call that mentions
backup_offload.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator, Iterator
import contextlib
from dataclasses import dataclass, field
import io
import itertools
import json
from pathlib import Path
import re
import signal
import subprocess
import sys
import time
from typing import Any

from _browser import BrowserError, Page
import aiohttp
from PIL import Image
import yaml

REPO = Path(__file__).resolve().parent.parent
STRINGS = json.loads(
    (REPO / "custom_components/backup_offload/translations/en.json").read_text()
)
DASHBOARD = REPO / "docs/dashboard.yaml"
ICON = REPO / "custom_components/backup_offload/brand/icon.png"
RAW_KEY = "component.backup_offload."
# The viewport: wide enough for Home Assistant's desktop layout (sidebar).
WIDTH, HEIGHT = 1280, 800
MAX_PNG = 200_000
NAME = "NAS"
PASSWORD = "screenshots-password"  # noqa: S105 - a throwaway test instance


def text(*keys: str) -> str:
    """Return our English text at ``keys``, cut before its first placeholder."""
    value: Any = STRINGS
    try:
        for key in keys:
            value = value[key]
    except KeyError:
        raise SystemExit(f"screenshots: no text {'.'.join(keys)} in en.json") from None
    return str(value).split("{", 1)[0].strip()


@dataclass
class Hass:
    """The running Home Assistant: REST and websocket calls as the owner."""

    url: str
    session: aiohttp.ClientSession
    tokens: dict[str, Any] = field(default_factory=dict)
    ws: aiohttp.ClientWebSocketResponse | None = None
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def auth(self) -> dict[str, str]:
        """Return the owner's authorization header."""
        return {"Authorization": f"Bearer {self.tokens['access_token']}"}

    async def rest(self, method: str, path: str, body: Any = None) -> Any:
        """Send a REST request as the owner; return the decoded answer."""
        async with self.session.request(
            method, self.url + path, json=body, headers=self.auth
        ) as resp:
            if resp.status >= 400:
                answer = await resp.text()
                raise RuntimeError(f"{method} {path}: {resp.status} {answer}")
            return await resp.json() if resp.content_length != 0 else None

    async def command(self, type_: str, **data: Any) -> Any:
        """Send a websocket command; return its result."""
        if self.ws is None:
            self.ws = await self.session.ws_connect(self.url + "/api/websocket")
            await self.ws.receive_json()  # auth_required
            await self.ws.send_json(
                {"type": "auth", "access_token": self.tokens["access_token"]}
            )
            if (await self.ws.receive_json())["type"] != "auth_ok":
                raise RuntimeError("websocket authentication failed")
        msg_id = next(self._ids)
        await self.ws.send_json({"id": msg_id, "type": type_, **data})
        while (answer := await self.ws.receive_json())["id"] != msg_id:
            pass
        if not answer["success"]:
            raise RuntimeError(f"{type_}: {answer['error']}")
        return answer["result"]

    async def action(self, service: str, **data: Any) -> Any:
        """Call an action of ours; return its response."""
        return await self.rest(
            "POST", f"/api/services/backup_offload/{service}?return_response", data
        )


async def wait_until_up(hass: Hass, process: asyncio.subprocess.Process) -> None:
    """Wait until Home Assistant answers its onboarding API."""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.returncode is not None:
            raise RuntimeError("Home Assistant exited")
        with contextlib.suppress(aiohttp.ClientError):
            async with hass.session.get(hass.url + "/api/onboarding") as resp:
                if resp.status == 200:
                    return
        await asyncio.sleep(0.5)
    raise RuntimeError("Home Assistant did not start")


def skip_core_config_step(config: Path) -> None:
    """Mark onboarding's location step done before Home Assistant starts.

    Finishing that step sets up a weather service, a radio directory and a
    shopping list (network look-ups, package installs, more sidebar entries)
    that the pictures do not need; the other steps are done through the API.
    """
    storage = config / ".storage"
    storage.mkdir(exist_ok=True)
    (storage / "onboarding").write_text(
        json.dumps(
            {"version": 4, "key": "onboarding", "data": {"done": ["core_config"]}}
        )
    )


async def onboard(hass: Hass) -> None:
    """Create the owner and finish the other onboarding steps, as the frontend does."""
    client_id = hass.url + "/"
    async with hass.session.post(
        hass.url + "/api/onboarding/users",
        json={
            "client_id": client_id,
            "name": "Admin",
            "username": "admin",
            "password": PASSWORD,
            "language": "en",
        },
    ) as resp:
        code = (await resp.json())["auth_code"]
    async with hass.session.post(
        hass.url + "/auth/token",
        data={"grant_type": "authorization_code", "code": code, "client_id": client_id},
    ) as resp:
        hass.tokens = await resp.json()
    await hass.rest("POST", "/api/onboarding/analytics")
    await hass.rest(
        "POST",
        "/api/onboarding/integration",
        {"client_id": client_id, "redirect_uri": client_id},
    )


def brand_image(url: str) -> bytes:
    """Answer a request to Home Assistant's brand images (the brands CDN).

    Home Assistant 2026 serves a custom integration's own brand/icon.png for
    each of its images (logo.png included); the release the screenshots run
    asks the CDN, which does not know this integration. Answer as 2026 does;
    any other brand gets a transparent pixel (no network in CI).
    """
    if "/backup_offload/" in url:
        return ICON.read_bytes()
    buffer = io.BytesIO()
    Image.new("RGBA", (1, 1)).save(buffer, format="PNG")
    return buffer.getvalue()


def browser_login(hass: Hass) -> str:
    """Return a script that logs the frontend in with the owner's tokens."""
    tokens = {
        **hass.tokens,
        "hassUrl": hass.url,
        "clientId": hass.url + "/",
        "expires": int(time.time() * 1000) + hass.tokens["expires_in"] * 1000,
    }
    return f"localStorage.setItem('hassTokens', {json.dumps(json.dumps(tokens))});"


async def add_location(hass: Hass, path: str) -> str:
    """Add the location through the config flow's REST API; return its entry."""
    flow = await hass.rest(
        "POST", "/api/config/config_entries/flow", {"handler": "backup_offload"}
    )
    result = await hass.rest(
        "POST",
        f"/api/config/config_entries/flow/{flow['flow_id']}",
        {"name": NAME, "path": path, "require_mount": True},
    )
    if result.get("step_id") == "in_ram":  # a tmpfs: confirm it
        result = await hass.rest(
            "POST", f"/api/config/config_entries/flow/{flow['flow_id']}", {}
        )
    if result["type"] != "create_entry":
        raise RuntimeError(f"the location was not added: {result}")
    return str(result["result"]["entry_id"])


TRANSLATED = """(() => {
  const hass = document.querySelector("home-assistant")?.hass;
  return Boolean(hass?.localize("component.backup_offload.entity.sensor.state.name"));
})()"""
# Closes the open dialogs (each of Home Assistant's has closeDialog).
CLOSE_DIALOGS = """(() => {
  let closed = 0;
  const walk = (node) => {
    if (node.localName?.startsWith("dialog-") && node.closeDialog) {
      node.closeDialog();
      closed += 1;
    }
    for (const child of [node.shadowRoot, ...node.children].filter(Boolean)) {
      walk(child);
    }
  };
  walk(document);
  return closed;
})()"""
# Fills Home Assistant's form (ha-form) through its value-changed event.
FILL_FORM = """(path) => {
  const find = (node, tag) => {
    if (node.localName === tag) return node;
    for (const child of [node.shadowRoot, ...node.children].filter(Boolean)) {
      const hit = find(child, tag);
      if (hit) return hit;
    }
    return null;
  };
  find(document, "ha-form").dispatchEvent(new CustomEvent("value-changed", {
    detail: {value: {name: "USB disk", path, require_mount: true}},
  }));
}"""
# What the frontend knows, shown when a page misses a text.
FRONTEND_STATE = """(() => {
  const hass = document.querySelector("home-assistant")?.hass;
  return JSON.stringify({
    url: location.pathname,
    connected: hass?.connected,
    language: hass?.language,
    entities: Object.keys(hass?.entities || {}).length,
  });
})()"""


@dataclass
class Tour:
    """Takes the screenshots and checks each page."""

    hass: Hass
    page: Page
    out: Path
    taken: list[tuple[str, int]] = field(default_factory=list)
    loaded: bool = False

    async def shoot(self, name: str, *expected: str, only: str | None = None) -> None:
        """Wait for ``expected``, check the page for raw keys, save it.

        ``only``: the element (its tag) to show instead of the whole page.
        """
        try:
            await self.page.wait_for(*expected)
        except BrowserError as err:
            state = await self.page.evaluate(FRONTEND_STATE)
            raise SystemExit(f"screenshots: {name}: {err}\nfrontend: {state}") from err
        await asyncio.sleep(1)  # let dialogs finish their animation
        page_text = await self.page.text()
        raw = sorted(set(re.findall(re.escape(RAW_KEY) + r"[\w.]+", page_text)))
        if raw:
            raise SystemExit(f"screenshots: {name}: raw translation keys: {raw}")
        # The frontend's message for a text it cannot format (an ICU tag).
        if "Translation error" in page_text:
            raise SystemExit(f"screenshots: {name}: a translation error on the page")
        clip = None if only is None else await self.page.bounds(only, margin=6)
        size = await self.page.screenshot(self.out / f"{name}.png", clip)
        if size > MAX_PNG:
            raise SystemExit(f"screenshots: {name}.png is {size} bytes (> {MAX_PNG})")
        self.taken.append((name, size))
        print(f"screenshots: {name}.png ({size // 1024} KiB)")

    async def open(self, path: str) -> None:
        """Show a page of the frontend, as a click on a link would."""
        if not self.loaded:
            await self.page.open(self.hass.url + path)
            await self.page.wait_until(TRANSLATED, "the frontend's translations")
            self.loaded = True
            return
        # Within the loaded app: a card drawn while the frontend still loads
        # its translations keeps showing raw states (idle, on) until the
        # entity changes, so every page after the first is opened in the app.
        if await self.page.evaluate(CLOSE_DIALOGS):
            await asyncio.sleep(0.5)
        await self.page.evaluate(
            f"history.pushState(null, '', {json.dumps(path)});"
            "window.dispatchEvent(new CustomEvent('location-changed'));"
        )


async def add_location_form(tour: Tour, unmounted: str) -> None:
    """Show the add-location form refusing a directory nothing is mounted at."""
    await tour.open("/config/integrations/dashboard/add?domain=backup_offload")
    # Home Assistant asks first whether to set up the integration at all.
    await tour.page.click("OK")
    await tour.page.wait_for(text("config", "step", "user", "title"))
    await tour.page.evaluate(f"({FILL_FORM})({json.dumps(unmounted)})")
    await tour.page.click("Submit")
    await tour.shoot(
        "add-location",
        text("config", "step", "user", "title"),
        text("config", "error", "not_a_mount"),
        text("config", "step", "user", "data_description", "require_mount"),
    )


async def device_page(tour: Tour, entry_id: str) -> None:
    """Show the location's device: its sensors, the button, the connectivity."""
    devices = await tour.hass.command("config/device_registry/list")
    device = next(d for d in devices if entry_id in d["config_entries"])
    await tour.open(f"/config/devices/device/{device['id']}")
    sensor = STRINGS["entity"]["sensor"]
    await tour.shoot(
        "device",
        NAME,
        sensor["state"]["name"],
        sensor["state"]["state"]["idle"],
        sensor["last_backup"]["name"],
        sensor["backup_count"]["name"],
        STRINGS["entity"]["button"]["create_backup"]["name"],
        STRINGS["entity"]["binary_sensor"]["connected"]["name"],
    )


async def options_form(tour: Tour) -> None:
    """Show the options: password, retention, excludes, compression."""
    await tour.open("/config/integrations/integration/backup_offload")
    await tour.page.wait_for(NAME)
    await tour.page.click("Configure")
    step = STRINGS["options"]["step"]["init"]
    await tour.shoot(
        "options",
        step["title"],
        step["data"]["keep_count"],
        step["data_description"]["keep_count"],
        # Below the fold, but on the page: each field with its text.
        *(step["data"][key] for key in ("keep_yearly", "overdue_hours", "exclude")),
        step["data_description"]["overdue_hours"],
    )


async def backup_page(tour: Tour, backup_id: str) -> None:
    """Show Home Assistant's own backup page: a backup of ours, its location."""
    await tour.open(f"/config/backup/details/{backup_id}")
    await tour.shoot("backup-page", "Before the update", "Backup Offload")


async def action_response(
    tour: Tour, name: str, action: str, data: dict[str, Any], *expected: str
) -> None:
    """Show Developer tools → Actions: one of our actions and its response."""
    # The page keeps its form in local storage: fill it before it loads.
    state = {"action": f"backup_offload.{action}", "data": data}
    await tour.page.evaluate(
        "localStorage.setItem('panel-dev-action-state-service-data',"
        f" {json.dumps(json.dumps(state))});"
        "localStorage.setItem('panel-dev-action-state-yaml-mode', 'false');"
    )
    # Loaded afresh: the form reads that state only when the app starts.
    await tour.page.open(tour.hass.url + "/developer-tools/action")
    await tour.page.wait_until(TRANSLATED, "the frontend's translations")
    await tour.page.wait_for(STRINGS["services"][action]["name"])
    await tour.page.click("Perform action")
    await tour.shoot(name, "Response", *expected)


async def dashboard(tour: Tour, name: str, *expected: str) -> None:
    """Show the card of docs/dashboard.yaml on a dashboard."""
    await tour.open("/lovelace/0")
    await tour.shoot(name, *expected, only="hui-vertical-stack-card")


async def save_dashboard(hass: Hass) -> None:
    """Put the README's card on the default dashboard."""
    card = yaml.safe_load(DASHBOARD.read_text())
    config = {"views": [{"title": "Backups", "cards": [card]}]}
    await hass.command("lovelace/config/save", config=config)


async def repair(tour: Tour, location: str) -> None:
    """Unmount the location; show the repair that explains it."""
    umount = await asyncio.create_subprocess_exec("umount", location)
    if await umount.wait() != 0:
        raise RuntimeError(f"could not unmount {location}")
    # Refresh now instead of at the next interval.
    await tour.hass.rest(
        "POST",
        "/api/services/homeassistant/update_entity",
        {"entity_id": "binary_sensor.nas_connected"},
    )
    title = STRINGS["issues"]["location_unavailable"]["title"].format(location=NAME)
    await tour.open("/config/repairs")
    # The next probe finds the location gone; wait for it and its repair.
    await tour.page.wait_for(title, within=90)
    await tour.page.click(title)
    # The fix flow: what is wrong (the translated message), and a Submit
    # that checks the location now.
    await tour.shoot(
        "repair",
        text("exceptions", "location_not_a_mount", "message").format(location=NAME),
        "No backup is written there until this is fixed",
    )


def log_problems(log: str) -> list[str]:
    """Return the errors and blocking-call warnings of ours in a log."""
    records = re.split(r"\n(?=\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)", log)
    return [
        record
        for record in records
        if "backup_offload" in record
        and (
            re.search(r"^\S+ \S+ (ERROR|CRITICAL) ", record)
            or "blocking call" in record.lower()
        )
    ]


async def tour_all(hass: Hass, page: Page, args: argparse.Namespace) -> Tour:
    """Every screenshot, in an order where each finds what it shows."""
    await onboard(hass)
    await page.setup(WIDTH, HEIGHT, browser_login(hass))
    await page.serve("https://brands.home-assistant.io/*", brand_image)
    # A fresh instance raises a repair for its unset country: not ours.
    await hass.command("config/core/update", country="US")
    tour = Tour(hass, page, args.out)
    entry_id = await add_location(hass, args.location)
    created = await hass.action(
        "create", config_entry_id=entry_id, name="Before the update"
    )
    backup_id = created["service_response"]["backup"]["backup_id"]
    await save_dashboard(hass)

    await add_location_form(tour, args.unmounted)
    await device_page(tour, entry_id)
    await options_form(tour)
    await backup_page(tour, backup_id)
    await action_response(
        tour,
        "action-response",
        "list",
        {"config_entry_id": entry_id},
        "backup_id",
        "Before the update",
    )
    fields = STRINGS["services"]["copy"]["fields"]
    await action_response(
        tour,
        "copy-action",
        "copy",
        {"config_entry_id": entry_id, "source": "backup.local"},
        fields["source"]["name"],
        fields["delete_source"]["name"],
        "already_present",
    )
    await action_response(
        tour,
        "purge-dry-run",
        "purge",
        {"config_entry_id": entry_id, "dry_run": True},
        STRINGS["services"]["purge"]["fields"]["dry_run"]["name"],
        "kept_by",
        "retention_off",
    )
    sensor = STRINGS["entity"]["sensor"]
    card = yaml.safe_load(DASHBOARD.read_text())
    await dashboard(
        tour,
        "dashboard",
        "NAS backups",
        # The names the card gives its rows.
        *(row["name"] for row in card["cards"][0]["entities"]),
        # A translated state: the card was drawn with the translations.
        sensor["state"]["state"]["idle"],
    )
    await repair(tour, args.location)
    await dashboard(
        tour,
        "dashboard-problem",
        "NAS needs attention",
        "Disconnected",
    )
    return tour


@contextlib.asynccontextmanager
async def running(args: argparse.Namespace) -> AsyncIterator[tuple[Hass, Page]]:
    """Start Home Assistant and the browser; stop both after."""
    skip_core_config_step(args.config)
    with (args.work / "hass.log").open("wb") as log:
        hass_process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "homeassistant", "-c", str(args.config),
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    profile = args.work / "browser"
    browser = await asyncio.create_subprocess_exec(
        args.browser,
        "--headless",
        "--no-sandbox",  # as root
        "--disable-gpu",
        "--hide-scrollbars",
        "--lang=en-US",
        "--remote-debugging-port=0",
        f"--user-data-dir={profile}",
        "about:blank",
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        async with aiohttp.ClientSession() as session:
            hass = Hass(f"http://127.0.0.1:{args.port}", session)
            await wait_until_up(hass, hass_process)
            port = await devtools_port(profile)
            async with Page.connect(session, port) as page:
                yield hass, page
            if hass.ws is not None:
                await hass.ws.close()
    finally:
        browser.terminate()
        hass_process.send_signal(signal.SIGTERM)
        for process in (browser, hass_process):
            try:
                await asyncio.wait_for(process.wait(), 60)
            except TimeoutError:
                process.kill()


async def devtools_port(profile: Path) -> int:
    """Return the DevTools port the browser chose (it writes it to its profile)."""
    port_file = profile / "DevToolsActivePort"
    for _ in range(100):
        if port_file.exists():
            return int(port_file.read_text().split()[0])
        await asyncio.sleep(0.2)
    raise RuntimeError("the browser did not start")


async def main() -> int:
    """Take the screenshots; return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--location", required=True)
    parser.add_argument("--unmounted", required=True)
    parser.add_argument("--browser", required=True)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    async with running(args) as (hass, page):
        tour = await tour_all(hass, page, args)
    problems = log_problems((args.work / "hass.log").read_text(errors="replace"))
    if problems:
        print("screenshots: Home Assistant logged problems of ours:", file=sys.stderr)
        print("\n".join(problems), file=sys.stderr)
        return 1
    print(f"screenshots: {len(tour.taken)} PNGs in {args.out}, log clean")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
