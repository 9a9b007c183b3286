"""The comparison page in a real browser: headless Chromium opens it from file:// (Debian's ``chromium``).

Driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``: fd 3 in, fd 4 out, messages
ending in NUL), stdlib only. Checks: no console errors, no network request besides the page itself,
one table row per run, a curve per run in each chart, clicking a row hides its curves, and a
screenshot that is not blank. Skips in one line where chromium is not installed.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import TEMPLATE_DIR, project_env, run_in

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium (apt-get install chromium)")
RUNS = 7


class DevTools:
    """A headless Chromium and its DevTools pipe: ``call`` sends a command and collects events until the answer."""

    def __init__(self, profile: Path) -> None:
        to_browser, self._to_browser = os.pipe()
        self._from_browser, from_browser = os.pipe()
        high = [os.dup(fd) for fd in (to_browser, from_browser)]  # out of the way of fds 3 and 4

        def wire() -> None:
            os.dup2(high[0], 3)
            os.dup2(high[1], 4)

        self.process = subprocess.Popen(
            [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--remote-debugging-pipe",
             "--window-size=1280,2000"],
            preexec_fn=wire, close_fds=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for fd in (to_browser, from_browser, *high):
            os.close(fd)
        self.buffer = b""
        self.next_id = 0
        self.events: list[dict[str, Any]] = []

    def _read(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self.buffer:
            if time.monotonic() > deadline:
                raise TimeoutError("chromium did not answer")
            chunk = os.read(self._from_browser, 1 << 16)
            if not chunk:
                raise RuntimeError("chromium closed the DevTools pipe")
            self.buffer += chunk
        message, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(message)

    def call(self, method: str, session: str | None = None, timeout: float = 60, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self.next_id:
                assert "error" not in reply, reply
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not any(event.get("method") == method for event in self.events):
            self.events.append(self._read(deadline))

    def close(self) -> None:
        self.process.kill()
        self.process.wait(timeout=30)
        os.close(self._to_browser)
        os.close(self._from_browser)


def write_page(project: Path, folder: Path) -> Path:
    """A sweep of RUNS synthetic runs (one failed, pairs that differ only in seed) with an Optuna study, compared."""
    sys.path.insert(0, str(TEMPLATE_DIR / "benchmarks"))
    try:
        from comparison_page import write_runs
    finally:
        sys.path.remove(str(TEMPLATE_DIR / "benchmarks"))
    sweep = write_runs(folder / "sweep", runs=RUNS, epochs=12)
    package = next(path.name for path in (project / "src").iterdir() if (path / "compare.py").is_file())
    result = run_in(project, "-m", f"{package}.compare", str(sweep), env=project_env(project), timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return sweep / "comparison.html"


def evaluate(browser: DevTools, session: str, expression: str) -> Any:
    return browser.call("Runtime.evaluate", session, expression=expression, returnByValue=True)["result"]["value"]


def test_the_page_works_offline_in_chromium(render: Any, tmp_path: Path) -> None:
    pytest.importorskip("optuna.storages.journal", reason="optuna>=4 (the lock's) is not installed here")
    from PIL import Image

    page = write_page(render(task="image-classification"), tmp_path)
    browser = DevTools(Path(tempfile.mkdtemp(prefix="chromium-", dir=tmp_path)))
    try:
        target = browser.call("Target.createTarget", url="about:blank")["targetId"]
        session = browser.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Runtime", "Log", "Network", "Page"):
            browser.call(f"{domain}.enable", session)
        browser.call("Page.navigate", session, url=page.resolve().as_uri())
        browser.wait_for("Page.loadEventFired")
        rows = evaluate(browser, session, "document.querySelectorAll('#runs tbody tr.run').length")
        curves = evaluate(browser, session, "[...document.querySelectorAll('#curves svg')].map("
                                            "svg => new Set([...svg.querySelectorAll('path.curve')].map("
                                            "p => p.dataset.run)).size)")
        bands = evaluate(browser, session, "document.querySelectorAll('#curves polygon.band').length")
        points = evaluate(browser, session, "document.querySelectorAll('#params circle.point').length")
        lines = evaluate(browser, session, "document.querySelectorAll('#parallel polyline.pc-line').length")
        bars = evaluate(browser, session, "document.querySelectorAll('#importances rect.importance').length")
        hidden = evaluate(browser, session, "document.querySelector('#runs tbody tr.run').click(); "
                                            "document.querySelectorAll('#curves svg')[0]"
                                            ".querySelectorAll('path.curve').length")
        shot = browser.call("Page.captureScreenshot", session, format="png")["data"]
    finally:
        browser.close()

    errors = [event for event in browser.events
              if (event.get("method") == "Runtime.consoleAPICalled" and event["params"]["type"] in {"error", "assert"})
              or event.get("method") == "Runtime.exceptionThrown"
              or (event.get("method") == "Log.entryAdded" and event["params"]["entry"]["level"] == "error")]
    assert not errors, errors
    requests = [event["params"]["request"]["url"] for event in browser.events
                if event.get("method") == "Network.requestWillBeSent"]
    assert requests == [page.resolve().as_uri()], requests  # the page itself, nothing else

    assert rows == RUNS
    assert curves and all(count == RUNS for count in curves), curves  # the failed run has its curves too
    assert bands >= len(curves)  # the seed groups' bands
    assert lines == RUNS - 1 and points == 2 * (RUNS - 1)  # two parameters, the failed run has no objective
    assert bars == 2
    assert hidden == RUNS - 1  # clicking a row hides that run's curve

    image = Image.open(io.BytesIO(base64.b64decode(shot))).convert("RGB")
    colors = image.getcolors(maxcolors=1 << 20) or []
    white = sum(count for count, rgb in colors if min(rgb) > 245)
    assert len(colors) > 50 and white < 0.97 * image.width * image.height, "the screenshot is blank"
