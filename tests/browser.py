"""Load a page in headless Chromium (Debian's ``chromium``) and read back its console errors and a screenshot.

For the tests of the pages the project writes (the finalizer's report, the web-delivery bundle): a folder is served
over a local HTTP server (``serve``) or opened from disk, and ``chromium()`` starts one browser whose ``load``
opens a page, waits for a JavaScript condition and returns a ``Page`` (errors, console, value, screenshot);
``load_page`` is one page in a browser of its own. The browser is driven through the DevTools protocol over a pipe
(``--remote-debugging-pipe``: file descriptors 3 and 4, NUL-terminated JSON), so it needs no Python package beyond
the standard library and downloads no browser.

``browser()`` finds the executable or skips the test with the reason, unless ``KAI_REQUIRE_BROWSER=1`` (set by
.ci/run), which makes a missing browser a failure.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import functools
import http.server
import json
import os
import select
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

CANDIDATES = ("chromium", "chromium-browser", "google-chrome")
# WebGL without a GPU: SwiftShader, which Chromium no longer falls back to by itself; the page composited in
# software, not through SwiftShader too (a 3D viewer's first frame came 3-4 s sooner, under load).
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu-sandbox", "--use-angle=swiftshader",
         "--enable-unsafe-swiftshader",
         "--disable-gpu-compositing", "--no-first-run", "--no-default-browser-check", "--disable-extensions",
         "--disable-background-networking", "--disable-component-update", "--mute-audio", "--hide-scrollbars")


def browser() -> str:
    """The Chromium executable (``KAI_CHROMIUM`` names another); skips the test when there is none, or fails it
    when ``KAI_REQUIRE_BROWSER=1``."""
    wanted = os.environ.get("KAI_CHROMIUM")
    found = shutil.which(wanted) if wanted else next(filter(None, map(shutil.which, CANDIDATES)), None)
    if found:
        return found
    reason = (f"KAI_CHROMIUM={wanted} is not an executable" if wanted
              else "headless Chromium is not installed (Debian: apt-get install chromium)")
    if os.environ.get("KAI_REQUIRE_BROWSER") == "1":
        pytest.fail(f"a browser is required (KAI_REQUIRE_BROWSER=1): {reason}")
    pytest.skip(reason)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def serve(folder: Path) -> Iterator[str]:
    """Serve ``folder`` on 127.0.0.1 (a free port) while in the block; yields the base URL ending in ``/``."""
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class Page:
    """What a loaded page showed: ``errors`` (console errors, uncaught exceptions, failed loads, one line each),
    every console message as ``(level, text)``, the ``value`` of the ``until`` expression and ``screenshot`` PNG
    bytes (of ``clip``'s element when given, else the viewport)."""

    errors: list[str] = field(default_factory=list)
    console: list[tuple[str, str]] = field(default_factory=list)
    value: Any = None
    screenshot: bytes = b""


class _Pipe:
    """The DevTools protocol over Chromium's pipe: commands on fd 3, responses and events on fd 4."""

    def __init__(self, proc: subprocess.Popen, write_fd: int, read_fd: int) -> None:
        self.proc, self.write_fd, self.read_fd = proc, write_fd, read_fd
        self.buffer = b""
        self.next_id = 0
        self.events: list[dict] = []

    def _read(self, deadline: float) -> dict:
        while b"\0" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.read_fd], [], [], left)[0]:
                raise TimeoutError("the browser did not answer in time")
            chunk = os.read(self.read_fd, 1 << 20)
            if not chunk:
                raise RuntimeError(f"the browser exited (code {self.proc.poll()})")
            self.buffer += chunk
        message, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(message)

    def call(self, method: str, session: str | None = None, timeout: float = 30.0, **params: Any) -> dict:
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self.write_fd, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error'].get('message')}")
                return reply.get("result", {})
            self.events.append(reply)


def _messages(events: list[dict], page: Page) -> None:
    for e in events:
        method, p = e.get("method"), e.get("params", {})
        if method == "Runtime.consoleAPICalled":
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", []))
            page.console.append((p["type"], text))
            if p["type"] in ("error", "assert"):
                page.errors.append(f"console.{p['type']}: {text}")
        elif method == "Runtime.exceptionThrown":
            d = p["exceptionDetails"]
            page.errors.append(f"uncaught: {d.get('exception', {}).get('description') or d.get('text')}")
        elif method == "Log.entryAdded":
            entry = p["entry"]
            page.console.append((entry["level"], entry["text"]))
            # The browser's own request for /favicon.ico is no error of the page's.
            if entry["level"] == "error" and not entry.get("url", "").endswith("/favicon.ico"):
                page.errors.append(f"{entry['source']}: {entry['text']} {entry.get('url', '')}".strip())


@contextlib.contextmanager
def chromium(width: int = 1100, height: int = 900) -> Iterator[Browser]:
    """A headless Chromium for the block (one launch for several pages); skips the test when there is none."""
    exe = browser()
    # The browser's helper processes may still write to the profile as it exits: its removal is best effort.
    with tempfile.TemporaryDirectory(prefix="kai-browser-", ignore_cleanup_errors=True) as profile:
        to_browser_r, to_browser_w = os.pipe()
        from_browser_r, from_browser_w = os.pipe()

        # Chromium reads commands on fd 3 and writes on fd 4: the child moves the pipe's ends there (first above
        # 9, so that one end sitting on 3 or 4 is not overwritten by the other).
        def _fds() -> None:
            high_r = fcntl.fcntl(to_browser_r, fcntl.F_DUPFD, 10)
            high_w = fcntl.fcntl(from_browser_w, fcntl.F_DUPFD, 10)
            os.dup2(high_r, 3)
            os.dup2(high_w, 4)

        # close_fds=False: closing runs after preexec_fn and would close 3 and 4; the parent's own pipe ends are
        # non-inheritable (close on exec) anyway.
        proc = subprocess.Popen(
            [exe, *FLAGS, "--remote-debugging-pipe", f"--user-data-dir={profile}", f"--window-size={width},{height}",
             "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, close_fds=False,
            preexec_fn=_fds, start_new_session=True)  # its own process group: its helpers go with it
        os.close(to_browser_r)
        os.close(from_browser_w)
        cdp = _Pipe(proc, to_browser_w, from_browser_r)
        try:
            yield Browser(cdp, width, height)
        finally:
            with contextlib.suppress(OSError, RuntimeError, TimeoutError):
                cdp.call("Browser.close", timeout=5)  # closes its helper processes too
            os.close(to_browser_w)
            os.close(from_browser_r)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)  # the browser this call started, and its helpers
                proc.wait()


class Browser:
    def __init__(self, cdp: _Pipe, width: int, height: int) -> None:
        self.cdp, self.width, self.height = cdp, width, height

    def load(self, url: str, until: str = "document.readyState === 'complete'", clip: str | None = None,
             timeout: float = 20.0, screenshot: bool = True, viewport: tuple[int, int] | None = None) -> Page:
        """Open ``url`` in a new tab, in front (a background tab gets no animation frames, which the 3D viewer
        draws in), and wait until the JavaScript expression ``until`` is truthy (it may be a promise); then
        screenshot ``clip`` (a CSS selector) or the viewport, unless not ``screenshot`` (a frame of a 3D page costs
        seconds in software). ``viewport`` (width, height) overrides the browser's for this page. Raises
        TimeoutError when ``until`` stays false for ``timeout`` seconds, naming the errors seen so far."""
        cdp, page = self.cdp, Page()
        cdp.events.clear()
        target = cdp.call("Target.createTarget", url="about:blank")["targetId"]
        session = cdp.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        try:
            for domain in ("Runtime", "Log", "Page"):
                cdp.call(f"{domain}.enable", session)
            cdp.call("Page.bringToFront", session)
            cdp.call("Emulation.setFocusEmulationEnabled", session, enabled=True)
            width, height = viewport or (self.width, self.height)
            cdp.call("Emulation.setDeviceMetricsOverride", session, width=width, height=height, deviceScaleFactor=1,
                     mobile=False)
            failed = cdp.call("Page.navigate", session, url=url).get("errorText")
            if failed:
                raise RuntimeError(f"{url}: {failed}")
            deadline = time.monotonic() + timeout
            while True:
                left = max(deadline - time.monotonic(), 0.1)
                result = cdp.call("Runtime.evaluate", session, timeout=left + 5, expression=f"({until})",
                                  awaitPromise=True, returnByValue=True)
                value = result.get("result", {}).get("value")
                if value and "exceptionDetails" not in result:
                    page.value = value
                    break
                if time.monotonic() > deadline:
                    _messages(cdp.events, page)
                    raise TimeoutError(f"{url}: `{until}` still false after {timeout:.0f} s; errors: {page.errors}")
                time.sleep(0.1)
            shot: dict[str, Any] = {"format": "png"}
            if clip and screenshot:
                box = cdp.call("Runtime.evaluate", session, returnByValue=True, expression=(
                    f"(() => {{ const e = document.querySelector({json.dumps(clip)}); e.scrollIntoView(); "
                    "const r = e.getBoundingClientRect(); return {x: r.x + scrollX, y: r.y + scrollY, "
                    "width: r.width, height: r.height}; })()"))["result"]["value"]
                shot.update(clip={**box, "scale": 1}, captureBeyondViewport=True)  # an element taller than the view
            if screenshot:
                page.screenshot = base64.b64decode(cdp.call("Page.captureScreenshot", session, **shot)["data"])
            _messages(cdp.events, page)
        finally:
            cdp.call("Target.closeTarget", targetId=target)
        return page


def load_page(url: str, until: str = "document.readyState === 'complete'", clip: str | None = None,
              timeout: float = 20.0, width: int = 1100, height: int = 900) -> Page:
    """One page in a browser of its own: ``Browser.load`` in ``chromium()``."""
    with chromium(width, height) as b:
        return b.load(url, until, clip, timeout)
