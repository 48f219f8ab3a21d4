"""The real app in a real browser: streamlit run dashboard.py, headless Chromium, upload on Predict.

Drives Debian's chromium through chromedriver with the W3C WebDriver HTTP protocol (standard library
only). Skips when chromium/chromedriver are absent, unless REQUIRE_BROWSER=1 (set by .ci/run), where
their absence fails. Saves a screenshot to ci-artifacts/browser_predict.png.
"""
from __future__ import annotations

import base64
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
PREDICTION = re.compile(r"\b(REAL|FAKE|UNSURE) · P\(AI\) = [01]\.\d{4} · P\(real\) = [01]\.\d{4}")
CHROME_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--no-first-run", "--disable-dev-shm-usage", "--window-size=1400,1800"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, timeout: float) -> None:
    end = time.time() + timeout
    while time.time() < end:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


class WebDriver:
    """The few W3C WebDriver commands this test needs."""

    def __init__(self, base: str, user_data_dir: str):
        self.base = base
        caps = {"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
            "binary": shutil.which("chromium") or "/usr/bin/chromium",
            "args": CHROME_FLAGS + [f"--user-data-dir={user_data_dir}"]}}}}
        self.sid = self._call("POST", "/session", caps)["sessionId"]

    def _call(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            return json.loads(r.read())["value"]

    def cmd(self, method, path, body=None):
        return self._call(method, f"/session/{self.sid}{path}", body)

    def find(self, css):
        try:
            v = self.cmd("POST", "/element", {"using": "css selector", "value": css})
        except urllib.error.HTTPError:
            return None
        return next(iter(v.values()))

    def quit(self):
        try:
            self._call("DELETE", f"/session/{self.sid}")
        except OSError:
            pass


@pytest.fixture
def browser_tools():
    have = shutil.which("chromium") and shutil.which("chromedriver")
    if not have:
        if os.environ.get("REQUIRE_BROWSER") == "1":
            pytest.fail("REQUIRE_BROWSER=1 but chromium/chromedriver are not installed")
        pytest.skip("chromium and chromedriver are not installed (apt-get install chromium chromium-driver)")
    return shutil.which("chromedriver")


def test_predict_in_real_browser(browser_tools, tmp_path):
    if not (ROOT / "weights" / "default.pt").is_file():
        pytest.skip("shipped weights/default.pt not built yet")
    app_port, drv_port = _free_port(), _free_port()
    env = {**os.environ, "AUDIT_RUNS_DIR": str(tmp_path / "runs")}
    app = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(ROOT / "dashboard.py"),
                            "--server.headless", "true", "--server.address", "127.0.0.1",
                            "--server.port", str(app_port), "--browser.gatherUsageStats", "false"],
                           cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    drv = subprocess.Popen([browser_tools, f"--port={drv_port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wd = None
    shot = ROOT / "ci-artifacts" / "browser_predict.png"
    try:
        _wait_http(f"http://127.0.0.1:{app_port}/_stcore/health", 60)
        _wait_http(f"http://127.0.0.1:{drv_port}/status", 30)
        wd = WebDriver(f"http://127.0.0.1:{drv_port}", str(tmp_path / "chrome-profile"))
        wd.cmd("POST", "/url", {"url": f"http://127.0.0.1:{app_port}/"})
        end = time.time() + 60
        upload = None
        while time.time() < end and upload is None:
            upload = wd.find("input[type=file]")
            time.sleep(0.5)
        assert upload is not None, "no file input on the Predict page"
        img = tmp_path / "upload_me.png"
        rng = np.random.default_rng(0)
        Image.fromarray(rng.integers(0, 256, (48, 48, 3)).astype(np.uint8)).save(img)
        wd.cmd("POST", f"/element/{upload}/value", {"text": str(img)})
        # A prediction shows the label and P(AI) for the uploaded file.
        end, text = time.time() + 90, ""
        while time.time() < end:
            text = wd.cmd("POST", "/execute/sync", {"script": "return document.body.innerText", "args": []})
            if PREDICTION.search(text):
                break
            time.sleep(0.5)
        time.sleep(2)                          # let the images and metrics finish drawing for the screenshot
        shot.parent.mkdir(exist_ok=True)
        shot.write_bytes(base64.b64decode(wd.cmd("GET", "/screenshot")))
        # The Predict page's verdict line, e.g. "FAKE · P(AI) = 0.9731 · P(real) = 0.0269", under the file's name.
        assert PREDICTION.search(text), text[-2000:]
        assert text.index("upload_me.png", text.index("Predict")) < PREDICTION.search(text).start()
        assert "Traceback" not in text
    finally:
        if wd is not None:
            wd.quit()
        drv.terminate()
        app.terminate()
        try:
            app.wait(10)
        except subprocess.TimeoutExpired:
            app.kill()
