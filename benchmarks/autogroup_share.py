"""How much of one core a background process gets beside a busy process in another session (Linux autogroups).

    python benchmarks/autogroup_share.py [--seconds 3] [--out autogroup_share]

Both processes are pinned to one core and spin (pure Python). The foreground one stands for a browser: it runs
at nice 0 in a session of its own (Playwright starts Chromium with setsid; a desktop starts each application in
its own session). The background one stands for run_app.py's warm-up, in three ways:

- same session: both in this script's session (no browser is started so); the background in SCHED_IDLE at
  nice +19;
- other session: the foreground in a session of its own, the background in SCHED_IDLE at nice +19 in this
  script's session (the warm-up's lanes in the server's session: another session than the browser's);
- own background group: the foreground in a session of its own, the background in
  `core.inference.threads.own_background_group(19)` (a session of its own at autogroup nice +19, as run_app.py's warm-up
  process runs), plus SCHED_IDLE at nice +19.

Prints the background's share of the core's time in each. With kernel.sched_autogroup_enabled=0 the kernel
ignores sessions and the three should agree. Writes benchmarks/results/NAME.json.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

from common import ROOT, print_table, save

SPIN = """
import os, sys, time
sys.path.insert(0, {root!r})
mode, seconds = sys.argv[1], float(sys.argv[2])
os.sched_setaffinity(0, {{{core}}})
if mode.startswith("foreground"):
    if mode == "foreground-own-session":
        os.setsid()
else:
    if mode == "own-group":
        from core.inference.threads import own_background_group
        assert own_background_group(19)
    os.setpriority(os.PRIO_PROCESS, 0, 19)
    os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
print("ready", flush=True)
start = float(sys.stdin.readline())     # one wall-clock window for both processes
time.sleep(max(0.0, start - time.time()))
c0 = time.process_time()
while time.time() < start + seconds:
    pass
print(time.process_time() - c0, flush=True)
"""


def one(mode: str, seconds: float, core: int) -> dict:
    code = SPIN.format(root=str(ROOT), core=core)
    procs = [subprocess.Popen([sys.executable, "-c", code, m, str(seconds)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True) for m in ("foreground" if mode == "same-session" else "foreground-own-session", mode)]
    for p in procs:
        assert p.stdout.readline().strip() == "ready"
    start = time.time() + 0.5           # both spin over the same window, [start, start + seconds]
    for p in procs:
        p.stdin.write(f"{start}\n")
        p.stdin.flush()
    fg, bg = (float(p.stdout.readline()) for p in procs)
    for p in procs:
        p.wait()
    return {"background": mode, "foreground_cpu_s": fg, "background_cpu_s": bg,
            "background_share": bg / (fg + bg) if fg + bg else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--core", type=int, default=0)
    ap.add_argument("--out", default="autogroup_share")
    args = ap.parse_args()
    enabled = open("/proc/sys/kernel/sched_autogroup_enabled").read().strip() \
        if os.path.exists("/proc/sys/kernel/sched_autogroup_enabled") else "absent"
    rows = []
    for mode in ("same-session", "other-session", "own-group"):
        rows.append(one(mode, args.seconds, args.core))
        time.sleep(0.5)
    print(f"kernel.sched_autogroup_enabled = {enabled}")
    print_table(rows, ["background", "foreground_cpu_s", "background_cpu_s", "background_share"])
    save(args.out, {"sched_autogroup_enabled": enabled, "seconds": args.seconds, "rows": rows})


if __name__ == "__main__":
    main()
