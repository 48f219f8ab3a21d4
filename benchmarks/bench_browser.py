"""First views of every page in a real browser, on a fresh clone, plus the idle app's CPU use.

    python benchmarks/bench_browser.py [--pages limitations,confusion] [--idle-seconds 20] [--out NAME]
    python benchmarks/bench_browser.py --baseline REV --idle-seconds 0 --out NAME   # HEAD against commit REV

For each page: `git clone` of this repository's committed HEAD into a temporary folder (so runs/ is empty, as
after the README's install), the running Python's environment linked in as the clone's .venv, the README's
run command started there (`python run_app.py`; the clone's .streamlit/config.toml applies), and a new
headless Chromium (Debian's, through Playwright from PyPI; never `playwright install`) opening the page's URL.
Times from the request:

- first numbers: the first metric, table, data frame or chart in the page's main area;
- complete: the script run has finished (data-test-script-state "notRunning" for 1 s, no spinner or progress
  bar left) with the page's content drawn: no stSkeleton left (the frontend's placeholder while it loads an
  element's code); any st.exception element fails the page;
- script done (`script_done_s`): the start of the last stretch in which the script run had finished; complete
  minus script done is the frontend drawing what the script sent.

`server_start_s` is the time from the command to the server answering, so `from_command_s` (server start +
complete) is what a user who starts the app and opens the page at once waits. `launcher_log`: run_app.py's own
lines of that server's log. With --baseline REV every page is measured on a clone of REV too, alternating
with HEAD (on a shared machine a same-run baseline is the only fair comparison).

Then, on one more server, a page stays open and idle for --idle-seconds: the server's CPU use over that time
(psutil), with the shipped config (file watcher off) and with `--server.fileWatcherType auto`. Targets:
Limitations first numbers <= 5 s and complete <= 20 s; every other page complete <= 5 s; the idle app ~0% CPU.
"""
from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from common import ROOT, commit, print_table, save

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]
# url path -> title; url paths are Streamlit's defaults for pages/N_name.py (the number dropped).
PAGES = {"": "Predict", "confusion": "Confusion matrix", "calibration": "Calibration",
         "misclassifications": "Misclassifications", "limitations": "Limitations", "generalization": "Generalization",
         "model_data": "Model & data", "forensics": "Forensics", "compare": "Compare models", "slices": "Error slices", "report": "Audit report"}
TARGETS = {"limitations": (5.0, 20.0)}       # (first numbers, complete) in seconds; other pages: complete <= 5
NUMBERS = ('[data-testid="stMain"] [data-testid="stMetricValue"], [data-testid="stMain"] [data-testid="stTable"], '
           '[data-testid="stMain"] [data-testid="stDataFrame"], [data-testid="stMain"] .js-plotly-plot, '
           '[data-testid="stMain"] [data-testid="stVegaLiteChart"]')


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, timeout: float = 120) -> None:
    end = time.time() + timeout
    while time.time() < end:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


def fresh_clone(dest: Path, rev: str | None = None) -> Path:
    """A clone of this repository's HEAD (or of commit `rev`) with the running environment as its .venv."""
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(dest)], check=True)
    if rev:
        subprocess.run(["git", "-C", str(dest), "checkout", "--quiet", rev], check=True)
    os.symlink(sys.prefix, dest / ".venv")
    return dest


def start_server(clone: Path, port: int, extra: list[str] = (), launcher: bool = True,
                 env: dict | None = None) -> subprocess.Popen:
    """The README's run command in the clone (run_app.py; with launcher=False plain `streamlit run
    dashboard.py`, for comparison), `env` added to the environment; returns once the server answers. Its
    output goes to clone/server.log."""
    py = str(clone / ".venv" / "bin" / "python")
    cmd = ([py, "run_app.py"] if launcher else [py, "-m", "streamlit", "run", "dashboard.py"]) + \
        ["--server.headless", "true", "--server.port", str(port), *extra]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2"), **(env or {})}
    log = open(clone / "server.log", "w")
    p = subprocess.Popen(cmd, cwd=clone, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
    _wait_http(f"http://localhost:{port}/_stcore/health", timeout=600)   # a loaded machine: slow, not broken
    return p


def wait_warm_up(clone: Path, timeout: float = 300) -> float:
    """Seconds until run_app.py's warm-up has stored the default results (its last log line)."""
    from run_app import WARM_UP_DONE
    t0 = time.perf_counter()
    while WARM_UP_DONE not in (clone / "server.log").read_text():
        if time.perf_counter() - t0 > timeout:
            raise TimeoutError(f"warm-up not done in {timeout} s")
        time.sleep(0.2)
    return time.perf_counter() - t0


def stop(p: subprocess.Popen) -> None:
    p.terminate()
    try:
        p.wait(10)
    except subprocess.TimeoutExpired:
        p.kill()


# run_app.py's own lines in a server's log (its imports, the wait for the warm-up's first step, what its server
# process computed meanwhile, each warm-up step): kept with each page's row as `launcher_log`.
LAUNCHER_LINES = ("imported the app's modules", "server starting", "while waiting", "warm-up:")


def launcher_log(clone: Path) -> list[str]:
    try:
        lines = (clone / "server.log").read_text(errors="replace").splitlines()
    except OSError:
        return []
    return [line for line in lines if line.startswith(LAUNCHER_LINES)]


def first_view(browser, url: str, timeout: float = 180, keep_open: bool = False, title: str | None = None) -> dict:
    """Open url in a new context; time to first numbers and to a finished run (the context stays open,
    returned as "context", with keep_open). With `title`, a finished page whose heading is another
    (a deep link that landed elsewhere) is an error, not a first view."""
    ctx = browser.new_context(viewport={"width": 1400, "height": 1800})
    page = ctx.new_page()
    t0 = time.perf_counter()
    page.goto(url, wait_until="commit")
    first = complete = script_done = None
    quiet_since = None
    end = t0 + timeout
    while time.perf_counter() < end:
        now = time.perf_counter() - t0
        state = page.evaluate("""(sel) => ({
            numbers: !!document.querySelector(sel),
            running: (document.querySelector('[data-testid="stApp"]') || {getAttribute: () => 'initial'})
                         .getAttribute('data-test-script-state') !== 'notRunning',
            content: document.querySelectorAll('[data-testid="stMain"] [data-testid="stElementContainer"]').length,
            exception: !!document.querySelector('[data-testid="stException"]'),
            spinner: !!document.querySelector('[data-testid="stMain"] [data-testid="stSpinner"], [data-testid="stMain"] [data-testid="stProgress"], [data-testid="stMain"] [data-testid="stSkeleton"]'),
        })""", NUMBERS)
        if state["exception"]:
            ctx.close()
            return {"first_numbers_s": first, "script_done_s": script_done, "complete_s": None,
                    "error": "st.exception on the page", "context": None}
        if state["numbers"] and first is None:
            first = now
        if state["content"] >= 1 and not state["running"]:
            script_done = now if script_done is None else script_done
        else:
            script_done = None
        if state["content"] >= 1 and not state["running"] and not state["spinner"]:
            if quiet_since is None:
                quiet_since = now
            elif now - quiet_since >= 1.0:
                complete = quiet_since
                break
        else:
            quiet_since = None
        time.sleep(0.05)
    heading = page.evaluate("""() => { const h = document.querySelector('[data-testid="stMain"] h1');
                                        return h ? h.innerText.trim() : null; }""")
    if not keep_open:
        ctx.close()
    error = None if complete else f"not complete in {timeout} s"
    if complete and title is not None and heading != title:
        error, complete = f"landed on {heading!r}, not {title!r}", None
    return {"first_numbers_s": first, "script_done_s": script_done, "complete_s": complete,
            "context": ctx if keep_open else None, "error": error}


def idle_cpu(server: subprocess.Popen, browser, url: str, seconds: float) -> float:
    """CPU use (% of one core) of the server process and its children while a finished page stays open."""
    import psutil
    view = first_view(browser, url, keep_open=True)
    proc = psutil.Process(server.pid)

    def cpu():
        return sum(sum(p.cpu_times()[:2]) for p in [proc] + proc.children(recursive=True))
    c0, t0 = cpu(), time.perf_counter()
    time.sleep(seconds)
    used = (cpu() - c0) / (time.perf_counter() - t0) * 100
    if view["context"] is not None:
        view["context"].close()
    return used


def fresh_view(browser, tmp: Path, path: str, rev: str | None = None, launcher: bool = True,
               env: dict | None = None, version: str | None = None) -> dict:
    """One first view: a fresh clone of HEAD (or of commit `rev`), its server started with the README's command
    (`env` added to its environment), the page `path` opened in a new browser context. Returns the row."""
    clone = fresh_clone(Path(tempfile.mkdtemp(dir=tmp)) / "clone", rev)
    port = _free_port()
    load = os.getloadavg()[0]
    t_start = time.perf_counter()
    server = start_server(clone, port, launcher=launcher, env=env)
    started = time.perf_counter() - t_start
    try:
        res = first_view(browser, f"http://localhost:{port}/{path}", title=PAGES[path])
    finally:
        stop(server)
    first_t, done_t = TARGETS.get(path, (None, 5.0))
    ok = res["complete_s"] is not None and res["complete_s"] <= done_t and \
        (first_t is None or (res["first_numbers_s"] or 1e9) <= first_t)
    row = {"page": PAGES[path], "version": version or rev or "HEAD", "commit": commit(clone),
           "first_numbers_s": res["first_numbers_s"], "script_done_s": res["script_done_s"],
           "complete_s": res["complete_s"], "target": (f"numbers <= {first_t:g} s, " if first_t else "")
           + f"complete <= {done_t:g} s", "meets": ok, "server_start_s": started,
           "from_command_s": started + res["complete_s"] if res["complete_s"] is not None else None,
           "load_before": load, "error": res["error"], "launcher_log": launcher_log(clone) if launcher else []}
    shutil.rmtree(clone.parent, ignore_errors=True)
    print(row, flush=True)
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pages", default=",".join(p or "predict" for p in PAGES),
                    help="comma-separated url paths (predict = the default page; default: all)")
    ap.add_argument("--idle-seconds", type=float, default=20, help="idle CPU window (default: 20; 0 skips the idle measurement)")
    ap.add_argument("--baseline", default=None, metavar="REV",
                    help="also measure commit REV, alternating with HEAD page by page (which goes first alternates "
                         "too), so both see the same machine; rows carry `version` and the clone's `commit` (default: HEAD only)")
    ap.add_argument("--out", default="browser", help="results name under benchmarks/results/ (default: browser)")
    args = ap.parse_args()
    import psutil
    from playwright.sync_api import sync_playwright
    wanted = ["" if p == "predict" else p for p in args.pages.split(",")]
    runs = [(path, None) for path in wanted]
    if args.baseline:
        runs = [r for k, path in enumerate(wanted)
                for r in ([(path, None), (path, args.baseline)] if k % 2 == 0 else [(path, args.baseline), (path, None)])]
    rows, idle = [], {}
    tmp = Path(tempfile.mkdtemp(prefix="bench-browser-"))
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
            rows = [fresh_view(browser, tmp, path, rev) for path, rev in runs]
            # Idle CPU, shipped config vs the file watcher switched on (after the warm-up has finished).
            clone = fresh_clone(tmp / "clone-idle")
            for label, extra in (("shipped config (fileWatcherType none)", []),
                                 ("--server.fileWatcherType auto", ["--server.fileWatcherType", "auto"])
                                 ) if args.idle_seconds > 0 else ():
                port = _free_port()
                server = start_server(clone, port, extra)
                try:
                    wait_warm_up(clone)
                    idle[label] = idle_cpu(server, browser, f"http://localhost:{port}/", args.idle_seconds)
                finally:
                    stop(server)
                print(f"idle CPU, {label}: {idle[label]:.1f}% of one core", flush=True)
            browser.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print()
    print_table(rows, ["page", "version", "first_numbers_s", "script_done_s", "complete_s", "target", "meets",
                       "server_start_s", "from_command_s", "load_before"])
    for k, v in idle.items():
        print(f"idle app, {k}: {v:.1f}% of one core over {args.idle_seconds:g} s")
    save(args.out, {"command": "python run_app.py", "baseline": args.baseline, "pages": rows,
                    "idle_cpu_percent_of_one_core": idle, "idle_seconds": args.idle_seconds, "cores": psutil.cpu_count()})


if __name__ == "__main__":
    main()
