"""Screenshots of the two connection forms for the README (img/), from our own running UI.

    .venv/bin/python scripts/take_screenshots.py [--api-url http://127.0.0.1:8080] [--out img]

The connections `s3logs` and `qfdmo_django_db` normally come from the environment, which the UI
does not list; this script stores them in the metadata database with the docker compose values
(development only: MinIO, the `carte-db` service) so their edit forms can be shown, then drives
headless Chromium through the DevTools protocol (websockets is already in the runtime lock).
Never run it against a stack holding real secrets.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import websockets

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
]

# The values of dags/.env.template (docker compose), passwords excepted: the form masks them.
CONNECTIONS: list[dict[str, Any]] = [
    {
        "connection_id": "s3logs",
        "conn_type": "aws",
        "description": "Logs des tâches dans S3 (MinIO en local, Cellar en preprod/prod)",
        "login": "minioadmin",
        "password": "minioadmin",
        "extra": json.dumps(
            {
                "endpoint_url": "http://minio:9000",
                "region_name": "us-east-1",
                "config_kwargs": {"s3": {"addressing_style": "path"}},
            }
        ),
    },
    {
        "connection_id": "qfdmo_django_db",
        "conn_type": "postgres",
        "description": "Base carte (service carte-db de docker compose ; localhost:6543 depuis l'hôte)",
        "host": "carte-db",
        "port": 5432,
        "login": "qfdmo",
        "password": "qfdmo",
        "schema": "qfdmo",
    },
]


def api(base: str, token: str | None, method: str, path: str, body: dict | None = None) -> dict:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(
        f"{base}{path}", method=method, data=None if body is None else json.dumps(body).encode(), headers=headers
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        raw = response.read()
    return json.loads(raw) if raw else {}


def store_connections(base: str, token: str) -> None:
    for connection in CONNECTIONS:
        with contextlib.suppress(urllib.error.HTTPError):
            api(base, token, "DELETE", f"/api/v2/connections/{connection['connection_id']}")
        api(base, token, "POST", "/api/v2/connections", connection)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Page:
    """The few DevTools calls we need, on one page target."""

    def __init__(self, ws) -> None:
        self.ws = ws
        self.next_id = 0

    async def call(self, method: str, **params):
        self.next_id += 1
        await self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(await self.ws.recv())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    async def evaluate(self, expression: str):
        result = await self.call("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        return result.get("result", {}).get("value")

    async def click(self, point: list[float]) -> None:
        x, y = point
        for event in ("mousePressed", "mouseReleased"):
            await self.call("Input.dispatchMouseEvent", type=event, x=x, y=y, button="left", clickCount=1)

    async def wait_for(self, expression: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if await self.evaluate(expression):
                return
            await asyncio.sleep(0.5)
        raise TimeoutError(f"page never satisfied: {expression}")


# Clicks the edit button of one connection's row (the Airflow 3 UI has no URL for the form).
OPEN_EDIT_FORM = """
((connId) => {
  const row = [...document.querySelectorAll('tr')].find(
    r => [...r.querySelectorAll('td')].some(td => td.innerText.trim() === connId));
  const button = row && row.querySelector('button[aria-label="Edit Connection"]');
  if (!button) return false;
  button.click();
  return true;
})(%s)
"""
FORM_SHOWN = "!!document.querySelector('[role=dialog] input, [role=dialog] textarea')"
# Centre of a form section's header, found by its title (the endpoint_url lives in the extra
# JSON section). The accordion reacts to real pointer events only, hence a mouse click there.
SECTION_HEADER_CENTRE = """
((title) => {
  const header = [...document.querySelectorAll('[role=dialog] button')].find(b => b.innerText.trim() === title);
  if (!header) return null;
  header.scrollIntoView({block: 'center'});
  const box = header.getBoundingClientRect();
  return [box.x + box.width / 2, box.y + box.height / 2];
})(%s)
"""
SECTION_OPEN = """
((title) => [...document.querySelectorAll('[role=dialog] button')].some(
  b => b.innerText.trim() === title && b.getAttribute('aria-expanded') === 'true'))(%s)
"""
# Sections of each form to open before the screenshot.
SECTIONS_TO_OPEN = {"s3logs": ["Extra Fields JSON"]}


async def screenshot_forms(base: str, token: str, out_dir: Path) -> list[Path]:
    port = free_port()
    profile = tempfile.mkdtemp(prefix="qfdmo-chromium-")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or "/usr/bin/chromium"
    browser = subprocess.Popen(
        [
            chromium,
            *CHROMIUM_FLAGS,
            f"--remote-debugging-port={port}",
            f"--user-data-dir={profile}",
            "--window-size=1280,1300",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    written = []
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=2) as response:
                    targets = [t for t in json.load(response) if t["type"] == "page"]
                if targets:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("Chromium's DevTools endpoint did not come up")
            time.sleep(0.3)
        async with websockets.connect(targets[0]["webSocketDebuggerUrl"], max_size=50_000_000) as ws:
            page = Page(ws)
            await page.call("Page.enable")
            await page.call(
                "Emulation.setDeviceMetricsOverride", width=1280, height=1300, deviceScaleFactor=1, mobile=False
            )
            host = urlsplit(base).hostname
            # The UI authenticates with the JWT in the `_token` cookie (what its login page sets).
            await page.call("Network.enable")
            await page.call("Network.setCookie", name="_token", value=token, domain=host, path="/")
            for connection in CONNECTIONS:
                conn_id = connection["connection_id"]
                await page.call("Page.navigate", url=f"{base}/connections")
                # Wait for the translations too, or the page shows their keys.
                await page.wait_for("document.body && document.body.innerText.includes('Connection ID')", 180)
                await page.wait_for(OPEN_EDIT_FORM % json.dumps(conn_id), 180)
                await page.wait_for(FORM_SHOWN)
                await asyncio.sleep(2)  # the form re-renders once the connection is loaded
                for title in SECTIONS_TO_OPEN.get(conn_id, []):
                    await page.click(await page.evaluate(SECTION_HEADER_CENTRE % json.dumps(title)))
                    await page.wait_for(SECTION_OPEN % json.dumps(title), 30)
                await asyncio.sleep(1)
                # The dialog ends well above the fold: no need for the empty bottom of the page.
                clip = {"x": 0, "y": 0, "width": 1280, "height": 960, "scale": 1}
                shot = await page.call("Page.captureScreenshot", format="png", clip=clip)
                path = out_dir / f"connection_{conn_id}.png"
                path.write_bytes(base64.b64decode(shot["data"]))
                written.append(path)
                await page.call(
                    "Input.dispatchKeyEvent", type="keyDown", key="Escape", code="Escape", windowsVirtualKeyCode=27
                )
    finally:
        browser.terminate()
        browser.wait(timeout=20)
        shutil.rmtree(profile, ignore_errors=True)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--api-url", default="http://127.0.0.1:8080")
    parser.add_argument("--user", default="airflow")
    parser.add_argument("--password", default="airflow")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "img")
    args = parser.parse_args()
    token = api(args.api_url, None, "POST", "/auth/token", {"username": args.user, "password": args.password})[
        "access_token"
    ]
    store_connections(args.api_url, token)
    args.out.mkdir(parents=True, exist_ok=True)
    for path in asyncio.run(screenshot_forms(args.api_url, token, args.out)):
        print(path)


if __name__ == "__main__":
    main()
