"""Drive Debian's headless ``chromium`` over the Chrome DevTools Protocol (CDP).

No WebDriver, no client library: CDP is JSON over a WebSocket, and ``websockets`` is
already a dependency. :func:`browser` starts ``chromium --headless
--remote-debugging-port=0`` with a fake microphone fed from a WAV file
(``--use-file-for-fake-audio-capture``; the permission prompt answered yes by
``--use-fake-ui-for-media-stream``), reads the DevTools address chromium prints, and
yields a :class:`Browser`; :meth:`Browser.open` gives a :class:`Page` attached to a new
tab, whose :meth:`Page.evaluate` runs JavaScript and :meth:`Page.screenshot` saves a PNG
(``Page.captureScreenshot``).

The microphone WAV, ``tests/assets/tones.wav``: 16 kHz mono 16-bit, 440 Hz for 0.6 s,
0.4 s of silence, 880 Hz for 0.6 s, 0.4 s of silence (amplitude 0.3, 10 ms ramps);
chromium loops it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import re
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

TONES_WAV = Path(__file__).parent / "assets" / "tones.wav"
_BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def find_chromium() -> str | None:
    """The chromium binary on PATH (``MEDIASTREAM_CHROMIUM`` overrides), or None."""
    explicit = os.environ.get("MEDIASTREAM_CHROMIUM")
    if explicit:
        return explicit if Path(explicit).exists() else None
    for name in _BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    return None


class CdpError(RuntimeError):
    """A CDP command failed, or the page threw."""


class Browser:
    """One chromium process and its browser-level CDP connection."""

    def __init__(self, ws: ClientConnection) -> None:
        self._ws = ws
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        async for raw in self._ws:
            message = json.loads(raw)
            future = self._waiting.pop(message.get("id", -1), None)
            if future is not None and not future.done():
                future.set_result(message)

    async def send(self, method: str, params: dict[str, Any] | None = None, *,
                   session: str | None = None, timeout: float = 30.0) -> dict[str, Any]:
        """One CDP command; its ``result`` (CdpError on an ``error``)."""
        ident = next(self._ids)
        message: dict[str, Any] = {"id": ident, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[ident] = future
        await self._ws.send(json.dumps(message))
        async with asyncio.timeout(timeout):
            answer = await future
        if "error" in answer:
            raise CdpError(f"{method}: {answer['error']}")
        result: dict[str, Any] = answer.get("result", {})
        return result

    async def open(self, url: str) -> Page:
        """A new tab at ``url``, attached (flat session)."""
        target = await self.send("Target.createTarget", {"url": "about:blank"})
        attached = await self.send("Target.attachToTarget",
                                   {"targetId": target["targetId"], "flatten": True})
        page = Page(self, attached["sessionId"], target["targetId"])
        await page.send("Page.enable")
        await page.send("Runtime.enable")
        await page.send("Page.navigate", {"url": url})
        return page

    async def close(self) -> None:
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._reader
        await self._ws.close()


class Page:
    """One tab."""

    def __init__(self, browser: Browser, session: str, target: str) -> None:
        self.browser = browser
        self.session = session
        self.target = target

    async def send(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return await self.browser.send(method, params, session=self.session)

    async def evaluate(self, expression: str) -> Any:
        """The JSON value of ``expression`` (awaited when it is a promise)."""
        result = await self.send("Runtime.evaluate", {
            "expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in result:
            raise CdpError(f"{expression!r} threw: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_for(self, expression: str, timeout: float = 20.0,
                       poll: float = 0.1) -> Any:
        """Poll ``expression`` until it is truthy; its value (TimeoutError otherwise,
        naming the expression). Throwing counts as falsy: the page may still be loading."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        error: CdpError | None = None
        while True:
            try:
                value = await self.evaluate(expression)
            except CdpError as exc:
                value, error = None, exc
            if value:
                return value
            if loop.time() > deadline:
                raise TimeoutError(f"{expression} still falsy after {timeout}s"
                                   + (f" (last error: {error})" if error else ""))
            await asyncio.sleep(poll)

    async def screenshot(self, path: Path) -> Path:
        shot = await self.send("Page.captureScreenshot", {"format": "png"})
        path.write_bytes(base64.b64decode(shot["data"]))
        return path

    async def close(self) -> None:
        with contextlib.suppress(CdpError, TimeoutError):
            await self.browser.send("Target.closeTarget", {"targetId": self.target})


@contextlib.asynccontextmanager
async def browser(binary: str, *, microphone: Path = TONES_WAV,
                  width: int = 1100, height: int = 760) -> AsyncIterator[Browser]:
    """A headless chromium with a fake microphone playing ``microphone`` in a loop."""
    profile = tempfile.mkdtemp(prefix="mediastream-chromium-")
    args = [
        binary, "--headless=new", "--remote-debugging-port=0",
        "--remote-debugging-address=127.0.0.1",
        f"--user-data-dir={profile}", "--no-first-run", "--no-default-browser-check",
        "--disable-gpu", "--disable-extensions", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--mute-audio",
        "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
        f"--use-file-for-fake-audio-capture={microphone}",
        "--autoplay-policy=no-user-gesture-required", f"--window-size={width},{height}",
        # Debian's chromium as root (CI containers) cannot start its sandbox.
        *(["--no-sandbox"] if os.geteuid() == 0 else []),
        "about:blank",
    ]
    process = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    try:
        assert process.stderr is not None
        url = await _devtools_url(process.stderr)
        async with connect(url, max_size=None, open_timeout=30) as ws:
            driver = Browser(ws)
            try:
                yield driver
            finally:
                await driver.close()
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                async with asyncio.timeout(10):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()
        shutil.rmtree(profile, ignore_errors=True)


async def _devtools_url(stderr: asyncio.StreamReader) -> str:
    seen: list[str] = []
    async with asyncio.timeout(60):
        while True:
            line = (await stderr.readline()).decode(errors="replace")
            if not line:
                raise RuntimeError("chromium exited before DevTools listened:\n" + "".join(seen))
            seen.append(line)
            found = re.search(r"DevTools listening on (ws://\S+)", line)
            if found:
                asyncio.get_running_loop().create_task(_drain(stderr))
                return found.group(1)


async def _drain(stderr: asyncio.StreamReader) -> None:
    """Keep reading chromium's log so it never blocks on a full pipe."""
    with contextlib.suppress(Exception):
        while await stderr.readline():
            pass
