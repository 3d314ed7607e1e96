"""Screenshots of the FiftyOne App for the README, taken in headless Chromium (Debian's ``chromium``).

Run ``affectflow review open NAME --port PORT`` first, then::

    .venv/bin/python docs/review_screenshots.py --url http://127.0.0.1:PORT/datasets/NAME --out docs/review-app.png

It drives Chromium over the DevTools protocol (aiohttp, which Ray brings): it loads the page, marks
FiftyOne's Enterprise tooltip as seen (a key in the page's localStorage), reloads, waits for the App
to draw and saves the page as PNG. ``--click TEXT`` (repeatable) clicks the first element whose
text is TEXT before the shot (e.g. a map's name in the embeddings panel, to draw it).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request

SEEN_KEY = "fiftyone-enterprise-tooltip-seen"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _shoot(ws_url: str, url: str, out: str, wait_s: float, clicks: list[str], width: int, height: int):
    import aiohttp

    async with aiohttp.ClientSession() as http, http.ws_connect(ws_url, max_msg_size=0) as ws:
        ids = iter(range(1, 10_000))

        async def call(method: str, **params):
            mid = next(ids)
            await ws.send_str(json.dumps({"id": mid, "method": method, "params": params}))
            async for msg in ws:
                data = json.loads(msg.data)
                if data.get("id") == mid:
                    if "error" in data:
                        raise RuntimeError(f"{method}: {data['error']}")
                    return data.get("result", {})
            raise RuntimeError("the browser closed the connection")

        await call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)
        await call("Emulation.setFocusEmulationEnabled", enabled=True)
        await call("Page.enable")
        await call("Page.bringToFront")
        await call("Page.navigate", url=url)
        await asyncio.sleep(wait_s / 2)
        await call("Runtime.evaluate", expression=f"localStorage.setItem('{SEEN_KEY}', 'true')")
        await call("Page.reload")
        await asyncio.sleep(wait_s)
        for text in clicks:
            js = ("(() => { const el = [...document.querySelectorAll('body *')].find(e => e.children.length === 0 "
                  f"&& e.textContent.trim() === {json.dumps(text)}); if (!el) return false; "
                  "el.dispatchEvent(new MouseEvent('click', {bubbles: true})); return true; })()")
            found = await call("Runtime.evaluate", expression=js, returnByValue=True)
            if not found.get("result", {}).get("value"):
                raise RuntimeError(f"no element with the text {text!r} on the page")
            await asyncio.sleep(wait_s / 2)
        shot = await call("Page.captureScreenshot", format="png")
    with open(out, "wb") as f:
        f.write(base64.b64decode(shot["data"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--wait", type=float, default=15.0, help="seconds for the App to draw (default 15)")
    parser.add_argument("--click", action="append", default=[],
                        help="text of an element to click before the shot (repeatable, in order)")
    parser.add_argument("--size", default="1400x820", help="viewport WIDTHxHEIGHT (default 1400x820)")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        raise SystemExit("no chromium on PATH (Debian: apt-get install -y chromium)")
    port = _free_port()
    with tempfile.TemporaryDirectory() as profile:
        # A headless tab counts as hidden: without these, Chromium stops its animation frames and the
        # App's grid and plot never draw.
        proc = subprocess.Popen([browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                                 f"--window-size={width},{height}", "--disable-background-timer-throttling",
                                 "--disable-renderer-backgrounding", "--disable-backgrounding-occluded-windows",
                                 f"--remote-debugging-port={port}", f"--user-data-dir={profile}", "about:blank"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=2) as r:
                        pages = [p for p in json.loads(r.read()) if p.get("type") == "page"]
                    if pages:
                        break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit("chromium did not open its DevTools port")
                time.sleep(0.3)
            asyncio.run(_shoot(pages[0]["webSocketDebuggerUrl"], args.url, args.out, args.wait, args.click,
                               width, height))
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
