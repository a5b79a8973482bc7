"""A real browser moves a real slider of the learned-mask explorer (notebook 10).

voila serves the notebook on a free port of 127.0.0.1; headless Debian Chromium, driven by
playwright (never ``playwright install``: the system browser is used), waits for the explorer,
focuses the "query #" slider handle (query to query), presses the arrow key three times and
checks that the figure's image, as the browser renders it, changed.

The page voila serves links stylesheets and modules on public CDNs (Font Awesome, mermaid). On a
machine whose network drops packets instead of refusing them, a render-blocking stylesheet holds
the page's scripts until the connection times out, and the widgets never appear within the test's
wait. The browser therefore resolves no host but 127.0.0.1, and every other request is aborted.
On failure, the message carries the end of voila's log and of the page's text.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

from dma_ref.paths import REPO_ROOT

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage",
                 "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"]
NOTEBOOK = "10_learned_mask_explorer.ipynb"
IMAGE = "img.widget-image"               # the explorer draws its figure into an ipywidgets.Image
PNG = b"\x89PNG"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, timeout: float) -> None:
    """Wait until voila accepts TCP connections (an HTTP request would render the notebook)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"voila exited with code {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"voila did not listen on port {port} within {timeout} s")


def local_only(route) -> None:
    """Serve requests to voila; abort everything else at once (no wait on an unreachable CDN)."""
    if route.request.url.startswith("http://127.0.0.1:"):
        route.continue_()
    else:
        route.abort()


def diagnosis(log_path, page) -> str:
    """The end of voila's log and of the page's text, for the failure message."""
    with open(log_path) as f:
        log_tail = f.read()[-4000:]
    try:
        text = page.inner_text("body", timeout=5_000)[-3000:]
    except Exception as exc:  # noqa: BLE001 - a diagnosis must not hide the original failure
        text = f"(page text unavailable: {exc})"
    return f"\n--- voila log (end) ---\n{log_tail}\n--- page text (end) ---\n{text}"


@pytest.mark.browser
def test_slider_moves_the_plot(tmp_path):
    from playwright.sync_api import sync_playwright

    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    env = {**os.environ, "MPLBACKEND": "module://matplotlib_inline.backend_inline"}
    log = open(tmp_path / "voila.log", "w")  # noqa: SIM115 - closed in the finally below
    proc = subprocess.Popen(
        [sys.executable, "-m", "voila", NOTEBOOK, "--no-browser", f"--port={port}",
         "--Voila.ip=127.0.0.1", "--ServerApp.port_retries=0"],
        cwd=REPO_ROOT / "notebooks", stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        wait_for_port(port, proc, timeout=60)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.route("**/*", local_only)
            # Voila executes the notebook while it serves the page: 13 s alone on 2 cores, over
            # 90 s when other jobs share the CPU. Wait for the first bytes only, then for the
            # widget, with room for a loaded machine.
            page.goto(url, wait_until="commit", timeout=240_000)
            slider = page.locator(".widget-slider:has-text('query #')").first
            img = page.locator(IMAGE).first
            try:
                slider.wait_for(timeout=240_000)
                img.wait_for(timeout=60_000)
            except Exception as exc:
                log.flush()
                raise AssertionError(f"the explorer did not appear: {exc}"
                                     + diagnosis(tmp_path / "voila.log", page)) from exc
            before_src = img.get_attribute("src")
            before = img.screenshot()
            readout = slider.locator(".widget-readout").inner_text()
            handle = slider.locator(".noUi-handle").first
            handle.focus()
            for _ in range(3):
                handle.press("ArrowRight")
            page.wait_for_function(
                "([sel, old]) => { const i = document.querySelector(sel);"
                " return i && i.getAttribute('src') !== old; }",
                arg=[IMAGE, before_src], timeout=30_000)
            after = img.screenshot()
            new_readout = slider.locator(".widget-readout").inner_text()
            browser.close()
        assert int(new_readout) == int(readout) + 3
        assert before.startswith(PNG) and after.startswith(PNG)
        assert after != before, "the figure looks the same after the query moved"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
