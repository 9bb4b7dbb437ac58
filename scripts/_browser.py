"""A headless Chromium driven over its DevTools protocol (for scripts/screenshots).

Only what the screenshots need: open a page, wait until a text shows, click
a text, capture the viewport as a PNG. Home Assistant's frontend is made of
web components, so every search walks the shadow roots too.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Callable, Coroutine
import contextlib
import io
import itertools
import json
from pathlib import Path
from typing import Any

import aiohttp
from PIL import Image

# Every text of the page, the shadow roots' included, one node a line.
DEEP_TEXT = """
(() => {
  const out = [];
  const walk = (node) => {
    if (node.nodeType === Node.TEXT_NODE) {
      const text = node.textContent.trim();
      if (text) out.push(text);
      return;
    }
    if (node.nodeType === Node.ELEMENT_NODE) {
      if (node.matches("script, style, noscript")) return;
      if (node.matches("input, textarea") && node.value) out.push(node.value);
    }
    if (node.shadowRoot) walk(node.shadowRoot);
    for (const child of node.childNodes) walk(child);
  };
  walk(document);
  return out.join("\\n");
})()
"""

# Clicks the innermost element whose own text is TEXT, through shadow roots.
CLICK_TEXT = """
((text) => {
  let found = null;
  const walk = (node) => {
    if (node.shadowRoot) walk(node.shadowRoot);
    for (const child of node.childNodes) {
      if (child.nodeType === Node.TEXT_NODE && child.textContent.trim() === text) {
        found = found || child.parentElement;
      } else if (child.nodeType === Node.ELEMENT_NODE) {
        walk(child);
      }
    }
  };
  walk(document);
  if (!found) return false;
  const target = found.closest(
    "ha-button, mwc-button, button, a, ha-list-item, ha-md-list-item, "
    + "ha-clickable-list-item, ha-integration-list-item, ha-config-entry-row, "
    + "ha-md-button-menu, ha-icon-button"
  ) || found;
  target.click();
  return true;
})
"""


# The box of the first element named TAG, through shadow roots, with MARGIN.
BOUNDS = """
((tag, margin) => {
  const find = (node) => {
    if (node.localName === tag) return node;
    for (const child of [node.shadowRoot, ...node.children].filter(Boolean)) {
      const hit = find(child);
      if (hit) return hit;
    }
    return null;
  };
  const element = find(document);
  if (!element) return null;
  const box = element.getBoundingClientRect();
  return {
    x: Math.max(box.left - margin, 0),
    y: Math.max(box.top - margin, 0),
    width: box.width + 2 * margin,
    height: box.height + 2 * margin,
  };
})
"""

Handler = Callable[[dict[str, Any]], Coroutine[Any, Any, None]]


class BrowserError(Exception):
    """The browser answered with an error, or a page did not show in time."""


class Page:
    """One browser tab, spoken to over a DevTools websocket."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """Wrap an open websocket to a page target."""
        self._ws = ws
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._handlers: dict[str, Handler] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(
        cls, session: aiohttp.ClientSession, port: int
    ) -> AsyncIterator[Page]:
        """Connect to the first page of the browser listening on ``port``."""
        async with session.get(f"http://127.0.0.1:{port}/json/list") as resp:
            targets = await resp.json()
        url = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
        async with session.ws_connect(url, max_msg_size=0) as ws:
            page = cls(ws)
            try:
                yield page
            finally:
                page._reader.cancel()

    async def _read(self) -> None:
        async for msg in self._ws:
            data = json.loads(msg.data)
            if (handler := self._handlers.get(data.get("method", ""))) is not None:
                task = asyncio.create_task(handler(data["params"]))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
                continue
            future = self._pending.pop(data.get("id", -1), None)
            if future is None or future.done():
                continue  # an event nothing here waits for
            if "error" in data:
                future.set_exception(BrowserError(str(data["error"])))
            else:
                future.set_result(data.get("result", {}))

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        """Send a DevTools command; return its result."""
        msg_id = next(self._ids)
        future = asyncio.get_running_loop().create_future()
        self._pending[msg_id] = future
        await self._ws.send_json({"id": msg_id, "method": method, "params": params})
        return await asyncio.wait_for(future, 60)

    async def evaluate(self, expression: str) -> Any:
        """Evaluate JavaScript in the page; return its (awaited) value."""
        result = await self.send(
            "Runtime.evaluate",
            expression=expression,
            awaitPromise=True,
            returnByValue=True,
        )
        if "exceptionDetails" in result:
            raise BrowserError(str(result["exceptionDetails"]))
        return result["result"].get("value")

    async def setup(self, width: int, height: int, init_script: str) -> None:
        """Size the viewport; run ``init_script`` before every page's own."""
        await self.send("Page.enable")
        await self.send(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=False,
        )
        await self.send("Page.addScriptToEvaluateOnNewDocument", source=init_script)

    async def serve(self, pattern: str, answer: Callable[[str], bytes]) -> None:
        """Answer requests for URLs matching ``pattern`` with ``answer(url)``."""

        async def paused(params: dict[str, Any]) -> None:
            await self.send(
                "Fetch.fulfillRequest",
                requestId=params["requestId"],
                responseCode=200,
                responseHeaders=[
                    {"name": "Content-Type", "value": "image/png"},
                    # The frontend loads brand images with crossorigin.
                    {"name": "Access-Control-Allow-Origin", "value": "*"},
                ],
                body=base64.b64encode(answer(params["request"]["url"])).decode(),
            )

        self._handlers["Fetch.requestPaused"] = paused
        await self.send("Fetch.enable", patterns=[{"urlPattern": pattern}])

    async def open(self, url: str) -> None:
        """Load ``url``."""
        await self.send("Page.navigate", url=url)

    async def text(self) -> str:
        """Return every text the page shows, shadow roots included."""
        return str(await self.evaluate(DEEP_TEXT))

    async def wait_for(self, *texts: str, within: float = 30) -> str:
        """Wait until the page shows every one of ``texts``; return its text."""
        text = ""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                # Polling: the page sends no event when a text shows.
                while True:
                    text = await self.text()
                    if all(t in text for t in texts):
                        return text
                    await asyncio.sleep(0.3)
        missing = [t for t in texts if t not in text]
        raise BrowserError(f"missing on the page: {missing}\n--- page ---\n{text}")

    async def wait_until(self, condition: str, what: str, within: float = 60) -> None:
        """Wait until the JavaScript expression ``condition`` is true."""
        try:
            async with asyncio.timeout(within):
                while not await self.evaluate(condition):  # noqa: ASYNC110
                    await asyncio.sleep(0.3)
        except TimeoutError:
            raise BrowserError(f"timed out waiting for {what}") from None

    async def click(self, text: str, within: float = 30) -> None:
        """Click the element that shows ``text`` (waits for it to appear)."""
        await self.wait_until(
            f"({CLICK_TEXT})({json.dumps(text)})", f"{text!r} to click", within
        )

    async def bounds(self, tag: str, margin: int) -> dict[str, float] | None:
        """Return the box of the first ``tag`` element and ``margin`` around it."""
        box = await self.evaluate(f"({BOUNDS})({json.dumps(tag)}, {margin})")
        return None if box is None else {**box, "scale": 1}

    async def screenshot(self, path: Path, clip: dict[str, float] | None) -> int:
        """Save the viewport (or ``clip`` of it) as a small PNG; return its size."""
        options: dict[str, Any] = {"format": "png"}
        if clip is not None:
            options["clip"] = clip
        shot = await self.send("Page.captureScreenshot", **options)
        image = Image.open(io.BytesIO(base64.b64decode(shot["data"])))
        # A screenshot of a user interface has few colours: a palette keeps
        # the file small and looks the same.
        small = image.convert("RGB").quantize(colors=256, dither=Image.Dither.NONE)
        buffer = io.BytesIO()
        small.save(buffer, format="PNG", optimize=True)
        await asyncio.to_thread(path.write_bytes, buffer.getvalue())
        return len(buffer.getvalue())
