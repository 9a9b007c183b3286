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
import math
import os
import re
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


def significant_digits(text: str) -> int:
    """``0.001329`` -> 4, ``2.5e-5`` -> 2, ``128`` -> 3 (trailing zeros of an integer do not count)."""
    mantissa = re.split(r"[eE]", text.strip().lstrip("+-"))[0]
    digits = mantissa.replace(".", "").lstrip("0")
    return len(digits.rstrip("0")) if "." not in mantissa else len(digits)


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
        axes = evaluate(browser, session, """(() => {
            const texts = (svg, css) => [...svg.querySelectorAll(css)].map(t => t.textContent);
            const charts = [...document.querySelectorAll('#curves svg, #params svg')];
            return charts.map(svg => ({param: svg.dataset.param || null, x: texts(svg, 'text.tick.x'),
                                       y: texts(svg, 'text.tick.y'), title: texts(svg, 'text.axis-title')}));
        })()""")
        table = evaluate(browser, session, """(() => {
            const heads = [...document.querySelectorAll('#runs thead th')].map(th => th.textContent);
            const column = heads.indexOf('optimizer.lr');
            const groups = [...document.querySelectorAll('#groups tbody tr')].map(tr => tr.children[1].textContent);
            return [...document.querySelectorAll('#runs tbody tr')].map(tr => tr.children[column].textContent)
                .concat(groups.map(name => name.match(/optimizer\\.lr=(\\S+)/)[1]));
        })()""")
        shot = browser.call("Page.captureScreenshot", session, format="png", captureBeyondViewport=True)["data"]
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

    (tmp_path / "comparison.png").write_bytes(base64.b64decode(shot))  # to look at: pytest --basetemp=<folder>
    curves_axes = [axis for axis in axes if axis["param"] is None]
    assert curves_axes and all(axis["title"] == ["epoch"] for axis in curves_axes)
    assert all(re.fullmatch(r"\d+", text) for axis in curves_axes for text in axis["x"]), curves_axes  # whole epochs
    for axis in axes:
        for text in axis["x"] + axis["y"]:
            assert significant_digits(text) <= 3, (axis, text)  # round steps: 0.25, 0.5, 1e-3, never -5.67e-5
            assert not text.startswith("-"), (axis, text)  # every value here is positive: no axis below zero
    lr = next(axis for axis in axes if axis["param"] == "optimizer.lr")
    assert lr["title"] == ["optimizer.lr (log scale)"], lr  # the study sampled it on a log scale
    mantissas = {round(float(text) / 10 ** math.floor(math.log10(float(text))), 9) for text in lr["x"]}
    assert len(lr["x"]) >= 2 and mantissas <= {1, 2, 5}, lr  # 0.01, 0.02, 0.05, 0.1: the ticks of a log axis
    batch = next(axis for axis in axes if axis["param"] == "data.batch_size")
    assert batch["title"] == ["data.batch_size"] and batch["x"] == ["32", "64", "128"], batch  # its choices
    assert table and all(significant_digits(cell) <= 4 for cell in table), table

    image = Image.open(io.BytesIO(base64.b64decode(shot))).convert("RGB")
    colors = image.getcolors(maxcolors=1 << 20) or []
    white = sum(count for count, rgb in colors if min(rgb) > 245)
    assert len(colors) > 50 and white < 0.97 * image.width * image.height, "the screenshot is blank"
