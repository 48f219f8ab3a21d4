"""The README's picture of the app: the Predict page on one image of the sample, drawn by a real browser.

    python docs/screenshot.py            # writes docs/app.png

Starts the README's run command (`python run_app.py`) in a fresh clone of HEAD (benchmarks/bench_browser.py's
helpers), opens the app in headless Chromium (Debian's /usr/bin/chromium through Playwright from PyPI), uploads a
FAKE image of data/sample/test, waits until its verdict and Grad-CAM are drawn, and saves the screenshot.
"""
from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_browser import CHROMIUM, FLAGS, _free_port, fresh_clone, start_server, stop  # noqa: E402

IMAGE = ROOT / "data" / "sample" / "test" / "FAKE" / "000000.jpg"
OUT = ROOT / "docs" / "app.png"


def settle(page, quiet: float = 1.0, timeout: float = 180) -> None:
    """Wait until the script has stopped running for `quiet` seconds and no spinner or skeleton is left."""
    end, since = time.time() + timeout, None
    while time.time() < end:
        busy = page.evaluate("""() => {
            const app = document.querySelector('[data-testid="stApp"]');
            return !app || app.getAttribute('data-test-script-state') !== 'notRunning'
                || !!document.querySelector('[data-testid="stSpinner"], [data-testid="stSkeleton"]'); }""")
        since = None if busy else (since or time.time())
        if since and time.time() - since >= quiet:
            return
        time.sleep(0.2)
    raise TimeoutError("the page kept running")


def main() -> None:
    from playwright.sync_api import sync_playwright
    tmp = Path(tempfile.mkdtemp(prefix="screenshot-"))
    try:
        clone = fresh_clone(tmp / "clone")
        port = _free_port()
        server = start_server(clone, port)
        try:
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
                page = browser.new_page(viewport={"width": 1400, "height": 1750})
                page.goto(f"http://localhost:{port}/")
                settle(page)
                page.locator('[data-testid="stMain"] input[type="file"]').set_input_files(str(IMAGE))
                page.locator('[data-testid="stMain"] [data-testid="stImage"]').first.wait_for(timeout=120_000)
                settle(page)
                page.screenshot(path=str(OUT))
                browser.close()
        finally:
            stop(server)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"wrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
