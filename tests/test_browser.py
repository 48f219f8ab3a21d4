"""The real app in a real browser: `streamlit run dashboard.py` driven by Playwright in Debian's chromium.

    python -m pytest tests/test_browser.py -q        # ~1-2 minutes on 2 cores

One server for the module, on tiny fixtures (test_app's sample and model, built in tmp_path), so every
page computes in seconds. Every test fails on Streamlit's exception element ([data-testid=stException]):
with client.showErrorDetails = "none" a crash never shows a traceback in the text, but the element is
still drawn. Covered: every page visited from the menu (the first visit a deep link on the fresh
server; every chart drawn by Vega-Lite, none by plotly but the Map's), a navigation that never lists a helper
module (not even on first paint), a Predict batch holding bad files with its CSV download, a threshold change
moving the confusion counts, a confusion cell whose images appear, a foreign checkpoint refused in the sidebar,
a lasso on the Map whose images appear and download as CSV, and the Data issues page's counts. A screenshot of every page
and flow goes to ci-artifacts/browser_*.png.

Playwright drives the system chromium (executable_path=/usr/bin/chromium; `playwright install` is never
run). Skips when playwright or chromium is missing, unless REQUIRE_BROWSER=1 (.ci/run), where it fails.
"""
from __future__ import annotations

import csv
import io
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import free_port, stop_process
from core.data.labels import CLASS_NAMES
from test_app import N_PER_CLASS, _encode, _noise, _smooth, app_dirs  # noqa: F401  (app_dirs is a fixture)

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "ci-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
THRESHOLD = '[data-testid="stSidebar"] [data-testid="stSlider"] input[type="range"]'
HELPER_NAMES = {"common", "views", "forensics views", "forensics_views", "dashboard", "init", "pages support"}
# Records every entry of Streamlit's automatic page list (stSidebarNav) that is ever drawn, from the very
# first paint on: installed before any page script runs.
NAV_OBSERVER = """
window.__autoNav = [];
new MutationObserver(() => {
  document.querySelectorAll('[data-testid="stSidebarNav"] a, [data-testid="stSidebarNavLink"]').forEach(a => {
    const t = a.innerText.trim();
    if (!window.__autoNav.includes(t)) window.__autoNav.push(t);
  });
}).observe(document, {subtree: true, childList: true});
"""


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


@pytest.fixture(scope="module")
def playwright_browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    if sync_playwright is None or not Path(CHROMIUM).is_file():
        if os.environ.get("REQUIRE_BROWSER") == "1":
            pytest.fail("REQUIRE_BROWSER=1 but playwright (requirements-dev.txt) or /usr/bin/chromium is missing")
        pytest.skip("playwright or /usr/bin/chromium is not installed")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def server(app_dirs, tmp_path_factory):  # noqa: F811
    """streamlit run dashboard.py on the tiny sample and model; its own runs/ folder."""
    port = free_port()
    log = tmp_path_factory.mktemp("server") / "streamlit.log"
    env = {**os.environ, "AUDIT_WEIGHTS_DIR": str(app_dirs["weights"]), "AUDIT_SAMPLE_DIR": str(app_dirs["sample"]),
           "AUDIT_RUNS_DIR": str(app_dirs["runs"]), "OMP_NUM_THREADS": "1"}
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(ROOT / "dashboard.py"),
                                 "--server.headless", "true", "--server.address", "127.0.0.1",
                                 "--server.port", str(port), "--browser.gatherUsageStats", "false"],
                                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_http(f"http://127.0.0.1:{port}/_stcore/health", 90)
        yield {"url": f"http://127.0.0.1:{port}", "log": log, **app_dirs}
    finally:
        stop_process(proc)


@pytest.fixture
def page(playwright_browser, server, request):
    ctx = playwright_browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    ctx.add_init_script(NAV_OBSERVER)
    pg = ctx.new_page()
    pg.set_default_timeout(60_000)
    yield pg
    shot(pg, f"end_{request.node.name}")          # the state the test ended in (the last look on failure)
    # No test may leave an automatic page list behind it, at any moment of its session.
    auto = pg.evaluate("window.__autoNav || []")
    ctx.close()
    assert not auto, f"Streamlit's automatic page list was drawn: {auto}"


# ----------------------------------------------------------------------------- helpers

def settle(pg, quiet: float = 0.5, timeout: float = 120) -> None:
    """Wait until the script has stopped running for `quiet` seconds, then fail on any exception element."""
    app = pg.locator('[data-testid="stApp"]')
    end, idle_since = time.time() + timeout, None
    while time.time() < end:
        state = app.get_attribute("data-test-script-state") if app.count() else None
        if state == "notRunning":
            idle_since = idle_since or time.time()
            if time.time() - idle_since >= quiet:
                break
        else:
            idle_since = None
        time.sleep(0.2)
    else:
        raise TimeoutError("the app kept running")
    errors = pg.locator('[data-testid="stException"]')
    assert errors.count() == 0, "exception on the page: " + " | ".join(errors.all_inner_texts())[:2000]


def shot(pg, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    pg.screenshot(path=str(ARTIFACTS / f"browser_{name}.png"))


def title(pg) -> str:
    return pg.locator("h1").first.inner_text().strip()


def menu(pg) -> list[tuple[str, str]]:
    """(label, href) of the sidebar's page menu."""
    links = pg.locator('[data-testid="stSidebar"] [data-testid="stPageLink-NavLink"]')
    return [(t.split("\n")[-1].strip(), h) for t, h in
            zip(links.all_inner_texts(), links.evaluate_all("els => els.map(e => e.getAttribute('href'))"))]


def open_page(pg, label: str) -> None:
    pg.locator('[data-testid="stSidebar"] [data-testid="stPageLink-NavLink"]', has_text=label).first.click()
    pg.wait_for_function("t => document.querySelector('h1') && document.querySelector('h1').innerText.trim() === t",
                         arg=label)
    settle(pg)


def cell_counts(pg, expected: dict | None = None, timeout: float = 60) -> dict[str, int]:
    """{TN, FP, FN, TP: count} from the Confusion page's cell picker ("FP: REAL called FAKE (18)").

    Polls until the four cells are drawn (and equal `expected`, when given, or the timeout passes): a loaded
    browser draws a rerun's elements a while after the script has finished."""
    end = time.time() + timeout
    while True:
        out = _cell_counts(pg)
        if (len(out) == 4 and (expected is None or out == expected)) or time.time() > end:
            return out
        time.sleep(0.3)


def _cell_counts(pg) -> dict[str, int]:
    out = {}
    for text in pg.locator('[data-testid="stRadio"] label').all_inner_texts():
        m = re.match(r"\s*(TN|FP|FN|TP): .* \((\d[\d,]*)\)", text)
        if m:
            out[m.group(1)] = int(m.group(2).replace(",", ""))
    return out


def stored_predictions(server):
    from core.model.checkpoint import load_checkpoint
    from core.data.datasets import open_dataset
    from core.inference.evaluate import evaluation_dir, load_evaluation
    lm = load_checkpoint(server["weights"] / "default.pt")
    res = load_evaluation(evaluation_dir(server["runs"], lm, open_dataset(server["sample"], split="test"), None))
    assert res is not None, "the app did not store its evaluation"
    return res[0]


def expected_cells(df, t) -> dict[str, int]:
    called, y = (df["prob_fake"] >= t).astype(int), df["label"]
    return {"TN": int(((y == 0) & (called == 0)).sum()), "FP": int(((y == 0) & (called == 1)).sum()),
            "FN": int(((y == 1) & (called == 0)).sum()), "TP": int(((y == 1) & (called == 1)).sum())}


def set_threshold(pg, key: str) -> float:
    """Move the sidebar threshold slider with one key press ("Home": 0, "End": 1); returns its new value."""
    thumb = pg.locator(THRESHOLD).first
    before = thumb.input_value()
    thumb.press(key)
    pg.wait_for_function("([sel, v]) => document.querySelector(sel).value !== v", arg=[THRESHOLD, before])
    settle(pg, quiet=1.0)
    return float(thumb.input_value())


# ----------------------------------------------------------------------------- tests

def test_every_page_from_a_fresh_server_and_the_menu(page, server):
    pages = sorted(p.stem for p in (ROOT / "pages").glob("*.py"))
    # First visitor of a fresh server opens a deep link: the page must come up inside the app (sidebar,
    # threshold), not alone, and no automatic page list may flash while torch imports.
    page.goto(server["url"] + "/confusion")
    page.wait_for_function("sel => document.querySelector('h1') && document.querySelector('h1').innerText.trim() "
                           "=== 'Confusion matrix' && document.querySelector(sel)", arg=THRESHOLD,
                           timeout=120_000)                                         # a cold start: torch imports
    settle(page)
    shot(page, "deep_link_confusion")
    items = menu(page)
    labels = [label for label, _ in items]
    assert len(items) == len(pages), (labels, pages)
    assert not {label.lower() for label in labels} & HELPER_NAMES, labels
    assert not any(h and h.strip("/").startswith("_") for _, h in items)
    assert page.locator('[data-testid="stSidebarNav"]').count() == 0
    drawn = {}
    for label in labels:
        open_page(page, label)
        assert title(page) == label
        assert page.locator(THRESHOLD).count() == 1      # the shared sidebar
        drawn[label] = charts_drawn(page, label)
        shot(page, re.sub(r"[^a-z0-9]+", "_", label.lower()).strip("_"))
    # The pages that chart their first view (pages_support.charts; Compare has no second model here).
    assert {k for k, v in drawn.items() if v} == {"Confusion matrix", "Calibration", "Limitations", "Model & data",
                                                   "Forensics", "Error slices"}, drawn


# The Map's scatter is plotly's, for its lasso (Vega-Lite has none); it is drawn once a map is computed or stored.
PLOTLY_PAGES = {"Map"}


def charts_drawn(pg, label: str, timeout: float = 60) -> int:
    """Vega-Lite charts of the page, once each has drawn its marks; fails on a plotly chart outside PLOTLY_PAGES
    (its 4.5 MB script held first views for seconds) or on a chart whose specification Vega could not draw."""
    assert label in PLOTLY_PAGES or pg.locator(".js-plotly-plot").count() == 0, f"{label} draws a plotly chart"
    charts = pg.locator('[data-testid="stMain"] [data-testid="stVegaLiteChart"]')
    for i in range(charts.count()):
        # vega-embed draws its marks (an svg.marks here) once the chart is on screen; a bad spec draws none.
        charts.nth(i).scroll_into_view_if_needed()
        charts.nth(i).locator("svg.marks, canvas").first.wait_for(state="attached", timeout=timeout * 1000)
    return charts.count()


def test_predict_batch_with_bad_files_and_csv_download(page, server, tmp_path):
    page.goto(server["url"])
    settle(page)
    assert title(page) == "Predict"
    rng = np.random.default_rng(3)
    files = {"noise.jpg": _encode(_noise(rng)), "smooth.png": _encode(_smooth(rng), "PNG"),
             "notes.txt": b"not an image\n", "cut.jpg": _encode(_noise(rng))[:150]}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    page.locator('[data-testid="stMain"] input[type="file"]').set_input_files([str(tmp_path / n) for n in files])
    page.get_by_text("2 of 4 files predicted").wait_for()
    page.locator('[data-testid="stMetricLabel"]', has_text="Unreadable").wait_for()   # drawn, not only sent
    settle(page)
    text = page.locator('[data-testid="stMain"]').inner_text()
    assert "2 file(s) could not be used" in text
    metrics = dict(zip(page.locator('[data-testid="stMetricLabel"]').all_inner_texts(),
                       page.locator('[data-testid="stMetricValue"]').all_inner_texts()))
    assert metrics["Unreadable"] == "2"
    assert sum(int(metrics[k]) for k in ("FAKE (AI)", "REAL", "UNSURE")) == 2         # the verdicts of the two images
    shot(page, "predict_batch")
    with page.expect_download() as dl:
        page.get_by_role("button", name="Download CSV").click()
    rows = list(csv.DictReader(io.StringIO(Path(dl.value.path()).read_text())))
    by_file = {r["file"]: r for r in rows}
    assert set(by_file) == set(files)
    assert by_file["notes.txt"]["label"] == "error" and "text file" in by_file["notes.txt"]["message"]
    assert by_file["cut.jpg"]["label"] == "error" and by_file["cut.jpg"]["message"]
    for name in ("noise.jpg", "smooth.png"):
        r = by_file[name]
        p, t = float(r["prob_fake"]), float(r["threshold"])
        assert 0 <= p <= 1 and t == 0.5 and r["label"] == ("FAKE" if p >= t else "REAL")


def test_threshold_moves_confusion_counts_and_a_cell_shows_its_images(page, server):
    page.goto(server["url"])
    settle(page)
    open_page(page, "Confusion matrix")
    df = stored_predictions(server)
    assert cell_counts(page, expected_cells(df, 0.5)) == expected_cells(df, 0.5)
    # Threshold 1 calls everything REAL (unless P(AI) is exactly 1), threshold 0 everything FAKE: one of the
    # two moves images across, whatever the model; one key press each.
    t2 = 1.0 if expected_cells(df, 1.0) != expected_cells(df, 0.5) else 0.0
    assert set_threshold(page, "End" if t2 == 1.0 else "Home") == t2
    after = cell_counts(page, expected_cells(df, t2))
    assert after == expected_cells(df, t2) != expected_cells(df, 0.5)
    assert sum(after.values()) == 2 * N_PER_CLASS
    shot(page, "confusion_threshold")
    # Pick a non-empty error cell (else TP): its images appear, captioned with their true and called class.
    cell = next((c for c in ("FN", "FP", "TP") if after[c]), "TP")
    meaning = {"FN": ("FAKE", "REAL"), "FP": ("REAL", "FAKE"), "TP": ("FAKE", "FAKE")}[cell]
    page.locator('[data-testid="stRadio"] label', has_text=f"{cell}:").click()
    page.get_by_text(f"image(s) in {cell}").wait_for()
    settle(page)
    captions = page.locator('[data-testid="stMain"] [data-testid="stImageCaption"]').all_inner_texts()
    tagged = [c for c in captions if f"true {meaning[0]} · called {meaning[1]}" in c]
    assert len(tagged) == min(after[cell], 18) and len(tagged) == len(captions), captions
    assert page.locator('[data-testid="stMain"] [data-testid="stImage"] img').count() == len(tagged)
    shot(page, "confusion_cell_images")


def test_foreign_checkpoint_is_refused_in_the_sidebar(page, server, tmp_path):
    foreign = tmp_path / "foreign.pt"
    torch.save({"model": {"weight": torch.zeros(2, 2)}, "epoch": 3}, foreign)       # someone else's checkpoint
    page.goto(server["url"])
    settle(page)
    sidebar = page.locator('[data-testid="stSidebar"]')
    sidebar.locator('[data-testid="stSelectbox"]', has_text="Checkpoint").first.click()
    page.get_by_role("option", name="Upload a checkpoint").click()
    settle(page)
    sidebar.locator('input[type="file"]').set_input_files(str(foreign))
    sidebar.get_by_text("Cannot use this checkpoint").wait_for()
    settle(page)
    message = sidebar.locator('[data-testid="stAlertContentError"]').first.inner_text()
    from core.model.checkpoint import CheckpointError, load_checkpoint
    with pytest.raises(CheckpointError) as refusal:
        load_checkpoint(foreign)
    assert message.strip() == f"Cannot use this checkpoint: {refusal.value}"
    # The page says why it has nothing to show, instead of running with no model.
    assert "No usable model is selected" in page.locator('[data-testid="stMain"]').inner_text()
    shot(page, "foreign_checkpoint")


def test_map_lasso_selection_shows_the_images_and_downloads_them(page, server):
    page.goto(server["url"])
    settle(page)
    open_page(page, "Map")
    page.get_by_role("button", name="Compute the map").click()
    chart = page.locator('[data-testid="stMain"] .js-plotly-plot')
    chart.wait_for(timeout=120_000)
    settle(page, quiet=1.0)
    shot(page, "map")
    # A lasso (the chart's drag mode) around the whole plotting area selects every point.
    area = chart.locator(".nsewdrag").first
    area.scroll_into_view_if_needed()
    box = area.bounding_box()
    x0, y0 = box["x"] + 5, max(box["y"], 0) + 5
    x1, y1 = box["x"] + box["width"] - 5, min(box["y"] + box["height"], page.viewport_size["height"]) - 5
    page.mouse.move((x0 + x1) / 2, (y0 + y1) / 2)        # over the plot first: plotly arms its drag on hover
    page.mouse.move(x0, y0, steps=5)
    page.mouse.down()
    for x, y in ((x1, y0), (x1, y1), (x0, y1), (x0, y0 + 4)):
        page.mouse.move(x, y, steps=15)
    page.mouse.up()
    page.get_by_text("selected images").wait_for(timeout=60_000)
    settle(page, quiet=1.0)
    shot(page, "map_lasso")
    captions = page.locator('[data-testid="stMain"] [data-testid="stImageCaption"]').all_inner_texts()
    assert len(captions) == 2 * N_PER_CLASS and all(re.match(r"true (REAL|FAKE) · P\(AI\) [0-9.]+ · verdict ", c)
                                                    for c in captions), captions[:3]
    assert page.locator('[data-testid="stMain"] [data-testid="stImage"] img').count() == len(captions)
    with page.expect_download() as dl:
        page.get_by_role("button", name="The selection (CSV)").click()
    rows = list(csv.DictReader(io.StringIO(Path(dl.value.path()).read_text())))
    df = stored_predictions(server).set_index("path")
    assert len(rows) == len(captions) and {r["path"] for r in rows} == set(df.index)
    # the same images as captions (a grid of st.columns lists its captions column by column)
    assert sorted(captions) == sorted(f"true {CLASS_NAMES[int(r['label'])]} · P(AI) {float(r['prob_fake']):.3f} · "
                                      f"verdict {r['verdict']}" for r in rows)
    for r in rows:
        assert float(r["prob_fake"]) == pytest.approx(df.loc[r["path"], "prob_fake"])


def test_data_issues_page_finds_issues_and_draws_them(page, server):
    page.goto(server["url"])
    settle(page)
    open_page(page, "Data issues")
    page.get_by_role("button", name="Find data issues").click()
    page.locator('[data-testid="stMetricLabel"]', has_text="Images flagged").wait_for(timeout=120_000)
    settle(page, quiet=1.0)
    shot(page, "data_issues")
    labels = page.locator('[data-testid="stMetricLabel"]').all_inner_texts()
    assert {"Label issues", "Outliers", "Leakage from the training data", "Images flagged"} <= set(labels)
    assert "without the flagged images" in page.locator('[data-testid="stMain"]').inner_text()
