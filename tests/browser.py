"""Headless Chromium driven over the DevTools protocol (aiohttp's websocket client), for what a
one-shot `--screenshot` cannot show: whether an animation plays. Real time, no virtual time: Chromium
advances animated images on its own clock, which `--virtual-time-budget` does not drive.

    seen = frames_seen(page_url, "img.animation")   # hashes of that element's pictures over time
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from typing import Any


def _exe() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    assert exe, "headless Chromium is needed for this test: apt-get install -y chromium"
    return exe


_WHERE = """(() => {{ const e = document.querySelector({selector}); if (!e || !e.complete) return null;
  e.scrollIntoView(); const r = e.getBoundingClientRect();
  return [r.x + window.scrollX, r.y + window.scrollY, r.width, r.height]; }})()"""


async def _screenshots(url: str, selector: str, shots: int, gap: float, settle: float) -> list[str]:
    import aiohttp

    profile = tempfile.mkdtemp(prefix="pix2video-chromium-")
    cmd = [_exe(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync"]
    cmd += [f"--user-data-dir={profile}", "--remote-debugging-port=0", "--window-size=1400,900", "about:blank"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port_file = os.path.join(profile, "DevToolsActivePort")
        deadline = time.monotonic() + 60
        while not (os.path.exists(port_file) and open(port_file).read().count("\n") >= 1):
            assert time.monotonic() < deadline and proc.poll() is None, "Chromium did not start its DevTools port"
            await asyncio.sleep(0.1)
        port, path = open(port_file).read().split("\n")[:2]
        async with aiohttp.ClientSession() as http:
            async with http.ws_connect(f"ws://127.0.0.1:{port}{path}", max_msg_size=0) as ws:
                counter = 0

                async def call(method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
                    nonlocal counter
                    counter += 1
                    message: dict[str, Any] = {"id": counter, "method": method, "params": params}
                    if session:
                        message["sessionId"] = session
                    await ws.send_str(json.dumps(message))
                    while True:  # events and other replies are skipped
                        reply = json.loads((await asyncio.wait_for(ws.receive(), 60)).data)
                        if reply.get("id") == counter:
                            assert "error" not in reply, reply
                            return reply["result"]

                target = (await call("Target.createTarget", url="about:blank"))["targetId"]
                session = (await call("Target.attachToTarget", targetId=target, flatten=True))["sessionId"]
                await call("Page.enable", session)
                await call("Page.navigate", session, url=url)
                await asyncio.sleep(settle)
                where = _WHERE.format(selector=json.dumps(selector))
                found = await call("Runtime.evaluate", session, expression=where, returnByValue=True)
                box = found["result"].get("value")
                assert box and box[2] > 0 and box[3] > 0, f"{selector}: not on the page, or not loaded"
                clip = dict(zip(("x", "y", "width", "height"), box, strict=True))
                seen = []
                for _ in range(shots):
                    shot = await call("Page.captureScreenshot", session, format="png", clip={**clip, "scale": 1})
                    seen.append(hashlib.sha256(base64.b64decode(shot["data"])).hexdigest())
                    await asyncio.sleep(gap)
                return seen
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(profile, ignore_errors=True)


def frames_seen(url: str, selector: str, *, shots: int = 12, gap: float = 0.09, settle: float = 2.0) -> list[str]:
    """Hashes of `shots` screenshots of the first element matching `selector` (scrolled into view),
    `gap` seconds apart after `settle` seconds: more than one distinct hash means it moves."""
    return asyncio.run(_screenshots(url, selector, shots, gap, settle))
