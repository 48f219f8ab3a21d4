"""One fresh server's first view of a page, as a timeline, with how long the browser's threads waited for a CPU.

    python benchmarks/first_view_timeline.py model_data [--rev 813de7a1] [--stop-warm-up] [--trials 2] [--out NAME]

Per trial: a fresh clone (of HEAD, or of commit --rev), the README's run command (`run_app.py`, as
bench_browser.py starts it), and a new headless Chromium opening the page. Prints each change of what the page
shows (the script state, element containers, stSkeleton placeholders, and the kinds of element drawn), then,
from the kernel's scheduler statistics of every Chromium thread (/proc/PID/task/TID/schedstat: time run, time
spent runnable but waiting for a CPU), the threads that ran longest over the view's first `--seconds`.

`--stop-warm-up` stops (SIGSTOP) the server's child processes (run_app.py's warm-up) once the server answers
and lets them go on after the view: what the page costs the browser with nothing else competing for the cores.
It shows whether the warm-up, in SCHED_IDLE in the server's session, takes a core from a browser in a
session of its own (Linux autogroups; core.inference.threads.own_background_group).

Writes benchmarks/results/NAME.json (default first_view_timeline): per trial the page's complete time (no
skeleton, no spinner, the script run finished), the renderer main thread's run and wait seconds and the
timeline. Linux only (schedstat, SIGSTOP).
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from bench_browser import CHROMIUM, FLAGS, PAGES, _free_port, fresh_clone, launcher_log, start_server, stop
from common import commit, print_table, save

STATE = """() => {
  const app = document.querySelector('[data-testid="stApp"]');
  const main = document.querySelector('[data-testid="stMain"]');
  const kinds = {};
  if (main) for (const e of main.querySelectorAll('[data-testid="stElementContainer"]')) {
    const c = e.firstElementChild; const k = c ? (c.getAttribute('data-testid') || 'other') : 'empty';
    kinds[k] = (kinds[k] || 0) + 1; }
  const busy = main ? main.querySelectorAll('[data-testid="stSpinner"], [data-testid="stProgress"]').length : 0;
  return {state: app ? app.getAttribute('data-test-script-state') : null,
          containers: main ? main.querySelectorAll('[data-testid="stElementContainer"]').length : 0,
          skeletons: main ? main.querySelectorAll('[data-testid="stSkeleton"]').length : 0, busy: busy,
          kinds: JSON.stringify(kinds)}; }"""


def chromium_threads() -> dict:
    """(process type, thread name) -> [run s, wait s], summed over every Chromium process's threads."""
    import psutil
    out = {}
    for p in psutil.process_iter(["name", "cmdline"]):
        try:
            if "chrom" not in (p.info["name"] or ""):
                continue
            kind = next((a.split("=", 1)[1] for a in p.info["cmdline"] or [] if a.startswith("--type=")), "browser")
            for task in glob.glob(f"/proc/{p.pid}/task/*"):
                run, wait, _ = map(int, open(f"{task}/schedstat").read().split())
                name = open(f"{task}/comm").read().strip()
                acc = out.setdefault((kind, name), [0.0, 0.0])
                acc[0] += run / 1e9
                acc[1] += wait / 1e9
        except (OSError, ValueError, psutil.Error):
            continue
    return out


def one_view(path: str, rev: str | None, stop_warm_up: bool, seconds: float, tmp: Path) -> dict:
    import psutil
    from playwright.sync_api import sync_playwright
    clone = fresh_clone(tmp / f"clone-{time.time_ns()}", rev)
    port = _free_port()
    server = start_server(clone, port)
    stopped = []
    if stop_warm_up:
        for child in psutil.Process(server.pid).children(recursive=True):
            child.send_signal(signal.SIGSTOP)
            stopped.append(child)
    timeline, complete = [], None
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
            before = chromium_threads()
            page = browser.new_context(viewport={"width": 1400, "height": 1800}).new_page()
            t0 = time.perf_counter()
            page.goto(f"http://localhost:{port}/{path}", wait_until="commit")
            last, quiet_since = None, None
            while time.perf_counter() - t0 < seconds:
                now = time.perf_counter() - t0
                s = page.evaluate(STATE)
                if s != last:
                    timeline.append({"t": round(now, 2), **s})
                    last = s
                done = s["state"] == "notRunning" and s["containers"] and not s["skeletons"] and not s["busy"]
                if done and quiet_since is None:
                    quiet_since = now
                elif not done:
                    quiet_since = None
                if complete is None and quiet_since is not None and now - quiet_since >= 1.0:
                    complete = quiet_since
                time.sleep(0.05)
            after = chromium_threads()
            browser.close()
    finally:
        for child in stopped:
            try:
                child.send_signal(signal.SIGCONT)
            except psutil.Error:
                pass
        stop(server)
    threads = {k: [after[k][0] - before.get(k, [0, 0])[0], after[k][1] - before.get(k, [0, 0])[1]] for k in after}
    main = threads.get(("renderer", "chromium"), [None, None])
    row = {"page": PAGES[path], "commit": commit(clone), "warm_up_stopped": stop_warm_up, "complete_s": complete,
           "renderer_main_run_s": main[0], "renderer_main_wait_s": main[1],
           "threads": sorted(([f"{k[0]}/{k[1]}", round(v[0], 3), round(v[1], 3)] for k, v in threads.items()),
                             key=lambda r: -r[1])[:10],
           "timeline": timeline, "launcher_log": launcher_log(clone), "load_before": os.getloadavg()[0]}
    shutil.rmtree(clone, ignore_errors=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("page", help="url path of the page (predict = the default page)")
    ap.add_argument("--rev", default=None, help="measure a clone of this commit instead of HEAD")
    ap.add_argument("--stop-warm-up", action="store_true", help="SIGSTOP run_app's warm-up process during the view")
    ap.add_argument("--trials", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=20.0, help="how long each view is watched (default 20)")
    ap.add_argument("--out", default="first_view_timeline")
    args = ap.parse_args()
    path = "" if args.page == "predict" else args.page
    tmp = Path(tempfile.mkdtemp(prefix="first-view-"))
    rows = []
    try:
        for _ in range(args.trials):
            rows.append(one_view(path, args.rev, args.stop_warm_up, args.seconds, tmp))
            for step in rows[-1]["timeline"]:
                print(json.dumps(step))
            print()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print_table(rows, ["page", "commit", "warm_up_stopped", "complete_s", "renderer_main_run_s", "renderer_main_wait_s",
                       "load_before"])
    save(args.out, {"rev": args.rev or "HEAD", "head": subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True,
                                                                        text=True).stdout.strip(), "trials": rows})


if __name__ == "__main__":
    main()
