"""Start the dashboard warm: the modules imported and the default results stored, or being computed, before anyone connects.

    python run_app.py                                  # = streamlit run dashboard.py, warmed up
    python run_app.py --server.port 8502               # any `streamlit run` option passes through

`streamlit run dashboard.py` imports torch, pandas, plotly and the pages' modules, and loads the model,
on the first browser session, and a first visit to any evaluation page then evaluates the sample: the
first view waits for all of it. This launcher instead:

1. starts the warm-up process (this file again, WARM_UP_PROCESS), which imports torch and core and computes
   the default model's evaluation of data/sample/test (what most pages show first), while this process
   imports streamlit, plotly, torch and core;
2. meanwhile loads what a first script run would (prime_first_run: pages_support, the default models and
   dataset into st.cache_resource; gc.freeze() of all of it, so Streamlit's collection after every script
   run skips it), then starts the server once that evaluation is stored (so a browser can only connect after it; the wait
   is part of the server's start, `from_command_s` in benchmarks/bench_browser.py), in this same process
   (streamlit.web.cli, the code behind `streamlit run`; the .streamlit/config.toml of this folder
   applies: localhost, upload cap, no file watcher). While it waits, on CPU time that step leaves free, it
   computes the page results that need no evaluation of the default model (compute_while_waiting: Error
   slices' image properties, Forensics' analysis, Compare's model B's evaluation of the test split);
3. the warm-up process goes on with every other result a page shows first, in two lanes that run side by
   side on one torch thread each (lane_steps, core.inference.threads): lane 0 starts with Limitations' sweep (about
   7,200 of its 9,800 forward passes on the sample, core.audits.limitations.first_view_forwards); lane 1 takes,
   and lane 0 once its sweep is done, the next of the other steps from one queue, in WARM_UP_ORDER: the
   sample's ood evaluation, Limitations' Grad-CAM audit and stability battery, Forensics' analysis,
   Compare's default model B and its comparison (bootstrap at threshold 0.5), Error slices' image
   properties, then the other splits; then it exits (and it exits with the server's process).

Why a process: the warm-up's steps are mostly Python around small forward passes (decoding, shifts,
metrics, file headers); as threads of the server's process they held its interpreter lock for part of
every second, which a page that computed or drew meanwhile had to wait for (the
pages computed on a fresh server 1.08-1.29x slower beside the lanes, even in SCHED_IDLE).

Every step is the core function and runs/ key the page itself calls (keyed by weights sha256, data
fingerprint and result format), so pages read the results from disk; a page that asks for one while it
is being computed waits for it (core.model.checkpoint.result_lock, which holds across processes) instead of
computing it a second time, and the Limitations page receives the sweep's levels as they are measured
(core.audits.robustness.cached_sweep, through the sweep's partial-rows file). After the first step the warm-up
runs at a lower CPU priority (nice +10 and SCHED_IDLE, its lanes and the torch threads they start; the
process in a session of its own at autogroup nice +19, since across sessions, e.g. against the browser,
neither counts: core.inference.threads.own_background_group), so a page that computes something itself, or a browser
that only draws, is not slowed by it. Only the defaults are warmed:
any other model or data is computed by the pages as before. Any failure in the warm-up is printed and left to the pages, which compute and report as usual. The server also starts
with Streamlit's pages-directory mode off (navigation_from_the_first_run), so a first deep link is one
script run, not two.
"""
from __future__ import annotations

import atexit
import os
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
WARM_UP_DONE = "warm-up: default results stored"      # benchmarks/bench_browser.py waits for this line


# The core modules the warm-up process imports before its first step (the rest as its steps need them).
COMPUTE_MODULES = ["model.checkpoint", "data.datasets", "inference.evaluate"]
# Every other core module a page imports (core never imports streamlit); pages_support is imported by
# prime_first_run (its st.cache_data functions are only called inside the Streamlit runtime).
CORE_MODULES = ["audits.compare", "audits.forensics", "audits.generalize", "audits.limitations", "audits.robustness",
                "audits.slices", "audits.stability", "data.archive", "data.images", "data.labels", "data.shifts",
                "inference.predict", "inference.threads", "metrics.metrics", "model.gradcam", "model.models",
                "report.audit_cache", "report.figures", "report.report", "verdict.verdict"]
WARM_UP_NICE = 10                   # the warm-up's CPU priority below the server's and the pages' threads
# ... and in Linux's SCHED_IDLE class (core.inference.threads.lower_priority): at nice +10 alone the lanes and sweep
# workers still took a share of the cores a page opened on a fresh server computes on (quiet machine, same
# run against b3b1fa1e: Forensics 13.4 s vs 10.9 s, Error slices 10.2 vs 8.8, Model & data 8.5 vs 6.5).
WARM_UP_IDLE = True
# benchmarks/bench_warm_up_ablation.py switches mechanisms off one at a time (comma-separated names).
WITHOUT = set(filter(None, os.environ.get("RUN_APP_WITHOUT", "").split(",")))
FIRST_STEP_TIMEOUT = 120            # s; the server starts anyway after this (the pages then compute themselves)


def import_compute_modules() -> None:
    """torch and what the warm-up's first step needs."""
    import importlib

    import torch  # noqa: F401
    for name in COMPUTE_MODULES:
        importlib.import_module(f"core.{name}")


def import_heavy_modules() -> None:
    """The rest of what a first script run would import: streamlit, plotly, torch and the core modules
    (tests/test_run_app.py checks that every module a page or pages_support imports at its top is among them).
    Not altair: pages_support.charts writes the Vega-Lite specifications itself."""
    import importlib

    import pandas.io.formats.style  # noqa: F401       (st.table's Styler, pages_support.views.static_table)
    import plotly.graph_objects  # noqa: F401
    import plotly.subplots  # noqa: F401
    import streamlit  # noqa: F401
    for name in COMPUTE_MODULES + CORE_MODULES:
        importlib.import_module(f"core.{name}")


def prime_first_run() -> list[str]:
    """In the server's process, before it answers: what a fresh server's first script run would otherwise do
    before drawing anything, so that a first page view does not wait for it. Returns what was primed.

    - pages_support and scikit-learn imported (Forensics' shortcut check fits its trees in this process);
    - the sidebar's default model, Compare's default model B and the sidebar's default dataset (the sample's
      first split in the sidebar's order) loaded into their st.cache_resource entries, with the sidebar's
      own arguments (so the same keys): read-only objects shared by every session, as after any first load;
    - gc.freeze(): everything loaded so far moves to the collector's permanent generation. Streamlit runs a
      full collection after every script run (runner.postScriptGC); over the ~475,000 objects the imports
      leave (torch, pandas, streamlit) that was 0.23-0.29 CPU s per run here, and in py-spy of a fresh server
      (under load) the Model & data page's first run spent 113 of its 229 samples in it. Frozen objects are
      skipped; what a script run creates is still collected.

    Runs while the server's process waits for the warm-up's first step (the test evaluation): those seconds
    were idle in this process. No st.cache_data function is called here (its storage must be the runtime's,
    which does not exist yet); st.cache_resource needs no runtime.
    """
    import gc
    import importlib
    import logging

    done = []
    try:
        for name in ("sklearn.model_selection", "sklearn.tree"):
            importlib.import_module(name)
        from core.model.checkpoint import file_sha256
        # Decorating a function with st.cache_data checks its options against a throwaway in-memory storage,
        # which logs "No runtime found" outside the runtime; the storage the function then uses is made at
        # its first call (DataCaches.get_cache), i.e. in a script run, inside the runtime. Only the decoration
        # warning is silenced: a call here would still log it (tests/test_run_app.py checks the log).
        caching_log = logging.getLogger("streamlit.runtime.caching.cache_data_api")
        level = caching_log.level
        caching_log.setLevel(logging.ERROR)
        try:
            for name in PAGES_SUPPORT_MODULES:
                importlib.import_module(f"pages_support.{name}")
        finally:
            caching_log.setLevel(level)
        from pages_support import common
        done.append("modules")
        # A cached function called outside a script run warns "missing ScriptRunContext" once per call: expected here.
        logging.getLogger("streamlit.runtime.scriptrunner_utils.script_run_context").setLevel(logging.ERROR)
        weights = common.shipped_weights()
        if weights:
            model_a = str(common.WEIGHTS_DIR / weights[0].name)      # the sidebar's default choice
            others = [str(p) for p in weights if str(p) != model_a][:1]    # pages/9_compare.py's default B
            for path in [model_a] + others:
                common.load_model_cached(path, file_sha256(path))
                done.append(Path(path).name)
        splits = sorted(common.sample_splits(), key=lambda s: (s != "test", s != "ood", s))   # the sidebar's order
        if splits:
            sample = str(common.SAMPLE_DIR)
            common.open_dataset_cached(sample, splits[0], "cifake", None, Path(sample).stat().st_mtime)
            done.append(f"sample {splits[0]}")
    except Exception:                       # the pages load (and report) it themselves
        print("priming the first run failed; the pages will load it themselves:\n" + traceback.format_exc(),
              file=sys.stderr, flush=True)
    logging.getLogger("streamlit.runtime.scriptrunner_utils.script_run_context").setLevel(logging.NOTSET)
    if "gc_freeze" not in WITHOUT:
        gc.freeze()
    return done


# The pages_support modules prime_first_run imports (tests/test_run_app.py checks the list is complete).
PAGES_SUPPORT_MODULES = ["charts", "common", "forensics_views", "paths", "views"]


def warm_up_steps() -> list[tuple[str, object]]:
    """(name, callable) of every default result, in WARM_UP_ORDER: the test evaluation first (most pages
    show it first), then each page's own results in the menu's order (Limitations, Forensics, Compare,
    Error slices), then the other splits. Each callable is the core call the page makes (same function,
    same arguments, so the same runs/ key)."""
    from core.model.checkpoint import load_checkpoint
    from core.data.datasets import cifake_splits, open_dataset
    from core.inference.evaluate import cached_evaluation
    from pages_support.paths import DEFAULT_WEIGHTS, RUNS_DIR, SAMPLE_DIR, shipped_weights

    if not DEFAULT_WEIGHTS.is_file():
        return []
    lm = load_checkpoint(str(DEFAULT_WEIGHTS), "cpu")
    splits = sorted(cifake_splits(SAMPLE_DIR), key=lambda s: (s != "test", s != "ood", s))   # the sidebar's order
    sets = {s: open_dataset(str(SAMPLE_DIR), split=s, fmt="cifake") for s in splits}
    steps = [(f"evaluation of {s}", lambda ds=ds: cached_evaluation(lm, ds, RUNS_DIR)) for s, ds in sets.items()]
    if "test" not in sets:
        return steps
    test = sets["test"]
    first, rest = steps[:1], steps[1:]
    page_steps = []
    if "ood" in sets:                                      # Limitations' unseen-generator and UNSURE sections
        page_steps.append(rest.pop(0))

    def compare_b():
        # Compare's default model B: the first shipped checkpoint other than default.pt (pages/9_compare.py),
        # and the comparison at the sidebar's default threshold (0.5).
        from core.audits.compare import cached_comparison
        others = [p for p in shipped_weights() if p != DEFAULT_WEIGHTS]
        if others:
            cached_comparison(lm, load_checkpoint(str(others[0]), "cpu"), test, RUNS_DIR, threshold=0.5)

    def properties():
        from core.audits.slices import cached_properties
        cached_properties(test, RUNS_DIR)

    def forensics():
        from core.audits.forensics import cached_analysis
        cached_analysis(test, RUNS_DIR)

    def sweep():
        from core.audits.robustness import cached_sweep
        cached_sweep(lm, test, RUNS_DIR, workers=1 if "lanes" in WITHOUT else SWEEP_WORKERS)

    def stability():
        from core.audits.limitations import STABILITY_MAX_IMAGES
        from core.audits.stability import cached_dataset_stability
        cached_dataset_stability(lm, test, RUNS_DIR, max_images=STABILITY_MAX_IMAGES)

    def gradcam_audit():
        # The Limitations page's call at the sidebar's default threshold (0.5).
        from core.audits.limitations import AUDIT_IMAGES, AUDIT_TOP
        from core.audits.robustness import cached_gradcam_audit
        cached_gradcam_audit(lm, test, RUNS_DIR, n=min(AUDIT_IMAGES, len(test)), seed=0, top=AUDIT_TOP, threshold=0.5)

    page_steps += [("robustness sweep of test", sweep), ("Grad-CAM audit of test", gradcam_audit),
                   ("stability battery of test", stability), ("forensics analysis of test", forensics),
                   ("Compare's model B on test", compare_b), ("image properties of test", properties)]
    return first + page_steps + rest


def while_waiting_steps() -> list[tuple[str, object]]:
    """(name, callable) of the page results that need no evaluation of the default model, in WHILE_WAITING's
    order: Error slices' image properties and Forensics' analysis (the data alone), and the evaluation of the
    test split by Compare's default model B (its comparison needs the default model's evaluation too, so it
    stays in the warm-up's queue, where it then only bootstraps). The server's process computes them while it
    waits for the warm-up's first step (compute_while_waiting). Each is the core call the page (or the page's
    core call) makes, with the page's arguments, so the same runs/ key."""
    from core.data.datasets import cifake_splits, open_dataset
    from pages_support.paths import DEFAULT_WEIGHTS, RUNS_DIR, SAMPLE_DIR, shipped_weights

    if not DEFAULT_WEIGHTS.is_file() or "test" not in cifake_splits(SAMPLE_DIR):
        return []
    test = open_dataset(str(SAMPLE_DIR), split="test", fmt="cifake")

    def properties():
        from core.audits.slices import cached_properties
        cached_properties(test, RUNS_DIR)

    def forensics():
        from core.audits.forensics import cached_analysis
        cached_analysis(test, RUNS_DIR)

    steps = [("image properties of test", properties), ("forensics analysis of test", forensics)]
    others = [p for p in shipped_weights() if p != DEFAULT_WEIGHTS]       # pages/9_compare.py's default model B
    if others:
        def evaluation_b():
            from core.model.checkpoint import load_checkpoint
            from core.inference.evaluate import cached_evaluation
            cached_evaluation(load_checkpoint(str(others[0]), "cpu"), test, RUNS_DIR)
        steps.append(("evaluation of test by Compare's model B", evaluation_b))
    return steps


# Cheapest first, so that as many pages as possible are ready when the wait is short (quiet machine, CPU seconds
# of one process on 2 torch threads: properties 1.4, Forensics 2.8, model B's evaluation about 3;
# benchmarks/results/s10_warm_up_b889.json for the first two).
WHILE_WAITING = ["image properties of test", "forensics analysis of test", "evaluation of test by Compare's model B"]


def compute_while_waiting(first_done: threading.Event, log=print) -> list[str]:
    """In the server's process, while the warm-up's first step (the default model's test evaluation) runs:
    compute while_waiting_steps() one by one, each started only if `first_done` is not yet set; returns what
    was stored, in order.

    Why: the server's process has imported and primed everything by then and only waits (19.2-29.1 s of the
    58-65 s before a fresh clone's server answered, under load: the baseline servers' launcher_log in
    benchmarks/results/s10_first_views_t2.json), and the three pages these results open
    (Forensics, Error slices, Compare) computed them on their first view, because the warm-up's queue reaches
    them only after Limitations' results. They run in one thread on one torch thread at the server's own
    priority (WHILE_WAITING_IDLE: not in the warm-up's SCHED_IDLE, which left them no CPU at all under load), so
    they share the cores with the first step and delay the server's start (under load, in the same
    run: the first step took 27.9-37.5 s against 18.9-28.1 s, the server answered 58.9-80.9 s after the command
    against 59.4-66.8 s; s10_first_views_t2.json); once the first step is done no further step starts, and the one in
    progress finishes first. The thread is joined before the server starts, so it never holds the interpreter
    lock beside a page's script. Failures are printed and left to the pages."""
    done = []
    steps_listed = []

    def run():
        try:
            steps = while_waiting_steps()
        except Exception:
            log("while waiting: listing the steps failed; the pages will compute them:\n" + traceback.format_exc())
            return
        steps_listed.extend(name for name, _ in steps)
        for name, step in steps:
            if first_done.is_set():
                return
            t0 = time.perf_counter()
            try:
                step()
            except Exception:
                log(f"while waiting: {name} failed; the pages will compute it themselves:\n" + traceback.format_exc())
                continue
            done.append(name)
            log(f"while waiting for the first step: {name} ready ({time.perf_counter() - t0:.1f} s)")
    from core.inference.threads import start_single_threaded
    for t in start_single_threaded([run], name="while waiting", idle=WHILE_WAITING_IDLE):
        t.join()
    left = [name for name in steps_listed if name not in done]
    if left:
        log(f"while waiting: the first step was done before {', '.join(left)}; left to the warm-up's queue")
    return done


# In SCHED_IDLE (as the warm-up's lanes), the thread ran only on CPU time nothing else wanted: in a fresh clone
# under load (load average 5-6: a training job, a test suite, the benchmark's browser) it computed nothing in a
# wait of 23.6 s (benchmarks/bench_browser.py --out s10_first_views_t1, HEAD f814a2c1; its server log).
WHILE_WAITING_IDLE = False


WARM_UP_ORDER = ["evaluation of test", "evaluation of ood", "robustness sweep of test", "Grad-CAM audit of test",
                 "stability battery of test", "forensics analysis of test", "Compare's model B on test",
                 "image properties of test", "evaluation of train"]   # on the shipped sample (tests check it)
# The Grad-CAM audit before the stability battery: the Limitations page needs the battery right after the sweep
# (its next section) and the audit four sections later, but the audit is the cheaper of the two (2.8 vs 5.9 CPU
# seconds, benchmarks/results/warm_up_s7_under_load.json), so the page waited for an audit that started last,
# on a busy machine (audit stored 5 s after the sweep, page complete 0.1 s later).
# After the first step the warm-up runs in two lanes, one thread each on one torch (OpenMP) thread: lane 0 the
# sweep (the largest single result, ~7,200 of the Limitations page's forward passes); lane 1 the other steps,
# and lane 0 too once its sweep is done, each taking the next step from one queue in WARM_UP_ORDER (lane_steps).
# Why two single-threaded lanes: one warm-up thread with a 2-thread torch team at nice +10 stalls at every
# parallel region whose other thread has lost its core to a nice-0 thread (the browser drawing a page, a page's
# own computation): the team waits for its slowest member, so one busy core stopped both. Two single-threaded
# lanes use both cores when the machine is idle and keep one going when either core is busy
# (benchmarks/bench_browser.py measures the first views; benchmarks/bench_sweep_workers.py the sweep both ways:
# 0.67 of the 2-thread team's time under a training job, the same table). Why one queue: with fixed lanes,
# lane 0 went from the sweep to the train split's evaluation (24 s, two DataLoader worker processes) while lane
# 1 still had a Limitations result to compute, which then shared the cores with those three.
SWEEP_LANE = ("robustness sweep of test",)
# The sweep's shift levels are measured by this many single-threaded workers (core.audits.robustness.sweep; threads
# inherit the nice +10 of lane 0, which starts them), so that with lane 1 running beside them the Limitations
# page's results take both cores until the sweep is done.
SWEEP_WORKERS = 2


def lane_steps(steps: list) -> tuple[list, list]:
    """The steps after the first, as (lane 0's own first steps: the sweep; the queue both lanes take the other
    steps from, in the steps' order: every page result, then the evaluations of the other splits)."""
    return [s for s in steps if s[0] in SWEEP_LANE], [s for s in steps if s[0] not in SWEEP_LANE]


def lower_priority(nice: int = WARM_UP_NICE) -> None:
    """Lower this thread's CPU priority (core.inference.threads.lower_priority; Linux: per thread). Elsewhere a no-op."""
    from core.inference.threads import lower_priority as lower
    lower(nice)


def warm_up(log=print, first_done: threading.Event | None = None, background=None) -> list[str]:
    """Compute and store the default results (the pages' own paths and keys); returns what was done, in
    the steps' order.

    The first step (the test evaluation, which the server waits for) runs in the calling thread at its
    priority and torch thread count; `first_done` is set once it is stored, or has failed. The other
    steps then run in two lanes (lane_steps: lane 0 first the sweep; then each lane takes the next step of
    one queue whenever it is free), threads at nice +WARM_UP_NICE on one torch thread each
    (core.inference.threads.start_single_threaded), joined here. `background`, if given, is called between the two
    (the warm-up process: core.inference.threads.own_background_group).
    """
    done = []

    def run(steps):
        for name, step in steps:
            t0 = time.perf_counter()
            try:
                step()
            except Exception:               # the page computes (and reports) it itself
                log(f"warm-up: {name} failed; the pages will compute it themselves:\n" + traceback.format_exc())
                continue
            done.append(name)
            log(f"warm-up: {name} ready ({time.perf_counter() - t0:.1f} s)")
    steps = []
    try:
        steps = warm_up_steps()
        run(steps[:1])
    finally:
        if first_done is not None:
            first_done.set()
    if background is not None:
        background()
    own, shared = lane_steps(steps[1:])
    queue, guard = iter(shared), threading.Lock()

    def lane(first: list) -> None:
        run(first)
        while True:
            with guard:
                step = next(queue, None)
            if step is None:
                return
            run([step])
    from core.inference.threads import start_single_threaded
    if "lanes" in WITHOUT:
        lower_priority(0 if "nice" in WITHOUT else WARM_UP_NICE)
        if WARM_UP_IDLE and "idle" not in WITHOUT:
            from core.inference.threads import lower_priority as lp
            lp(0, idle=True)
        run(own + shared)
    else:
        for t in start_single_threaded([lambda: lane(own), lambda: lane([])], nice=0 if "nice" in WITHOUT else WARM_UP_NICE,
                                       name="warm-up lane", idle=WARM_UP_IDLE and "idle" not in WITHOUT):
            t.join()
    log(WARM_UP_DONE)
    order = [name for name, _ in steps]
    return sorted(done, key=order.index)


def navigation_from_the_first_run() -> None:
    """Run dashboard.py's st.navigation on a fresh server's first script run, also for a deep link.

    A folder named pages/ next to the entrypoint makes Streamlit start in its old pages-directory mode
    (PagesManager.uses_pages_directory, decided when the first session starts, left at the first
    st.navigation call): a first visitor's deep link (/confusion) then runs the page file alone, and
    pages_support.common._ensure_entrypoint reruns it through dashboard.py, i.e. two script runs. Setting
    the flag before the server starts is what that first st.navigation call does, one run earlier.
    """
    try:
        from streamlit.runtime.pages_manager import PagesManager
    except ImportError:                     # internal module moved: _ensure_entrypoint still repairs it
        return
    PagesManager.uses_pages_directory = False


WARM_UP_PROCESS = "--warm-up-process"     # run_app.py's own first argument in the warm-up process main() starts
PARENT_POLL_S = 0.5                         # the warm-up process exits within this long after the server's


# The warm-up process needs POSIX (pass_fds; result locks across processes are flocks): elsewhere it runs in
# a thread of the server's process.
WARM_UP_IN_PROCESS = os.name == "posix" and "process" not in WITHOUT


def _warm_up_in_background() -> tuple[subprocess.Popen | threading.Thread, threading.Event]:
    """Start the warm-up process (this file, WARM_UP_PROCESS); returns it and an Event set once its first step
    is stored, or failed, or the process has exited.

    A process, not a thread of the server's: its steps are mostly Python (decoding, shifts, metrics, file
    headers), and as threads they held the server's interpreter lock for part of every second, which a page
    computing or drawing meanwhile waited for. Its output goes where the server's goes. Without
    WARM_UP_IN_PROCESS, a thread of this process instead."""
    if not WARM_UP_IN_PROCESS:
        return _warm_up_in_a_thread()
    r, w = os.pipe()
    proc = subprocess.Popen([sys.executable, str(HERE / "run_app.py"), WARM_UP_PROCESS, str(w), str(os.getpid())],
                            pass_fds=(w,), cwd=HERE)
    os.close(w)
    first_done = threading.Event()

    def wait_for_first_step():
        try:
            os.read(r, 1)       # one byte once the first step is stored; b"" when the process has exited
        finally:
            os.close(r)
            first_done.set()
    threading.Thread(target=wait_for_first_step, name="warm-up first step", daemon=True).start()
    atexit.register(_stop_process, proc)
    return proc, first_done


def _warm_up_in_a_thread() -> tuple[threading.Thread, threading.Event]:
    first_done = threading.Event()

    def run():
        try:
            import_compute_modules()
            warm_up(log=lambda msg: print(msg, file=sys.stderr, flush=True), first_done=first_done)
        except Exception:                   # the pages compute (and report) it themselves
            print("warm-up failed; the pages will compute their results themselves:\n" + traceback.format_exc(),
                  file=sys.stderr, flush=True)
        finally:
            first_done.set()
    t = threading.Thread(target=run, name="warm-up", daemon=True)
    t.start()
    return t, first_done


def _stop_process(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()


class _PipeSignal:
    """threading.Event's set() for warm_up's first_done, across processes: one byte down the pipe to main()."""

    def __init__(self, fd: int):
        self.fd = fd

    def set(self) -> None:
        if self.fd is not None:
            fd, self.fd = self.fd, None
            try:
                os.write(fd, b"1")
            finally:
                os.close(fd)


# After its first step (which the server waits for, at the server's priority), the warm-up process leaves the
# server's session for one of its own at autogroup nice +WARM_UP_GROUP_NICE (core.inference.threads.own_background_group):
# a browser drawing a page runs in a session of its own, and across sessions SCHED_IDLE and nice do not count.
WARM_UP_GROUP_NICE = 19


WAITER_POLL_S = 0.25        # how often the warm-up process looks for a page waiting on what it computes


def _background_group() -> None:
    from core.inference.threads import own_background_group, set_group_nice
    if own_background_group(WARM_UP_GROUP_NICE):
        if "waiters" not in WITHOUT:
            threading.Thread(target=follow_waiters, args=(set_group_nice,), name="waiter watch", daemon=True).start()


def follow_waiters(set_nice, stop: threading.Event | None = None, poll: float = WAITER_POLL_S) -> None:
    """While a caller in any process waits for a result this process is computing (a page opened before the
    warm-up got there: core.model.checkpoint.waited_for_here), its group runs at nice 0, like the page's own work;
    otherwise at WARM_UP_GROUP_NICE. Priority inheritance: the user is waiting for exactly that result, and
    a browser that only waits for it needs little CPU."""
    from core.model.checkpoint import waited_for_here
    current = WARM_UP_GROUP_NICE
    while stop is None or not stop.is_set():
        want = 0 if waited_for_here() else WARM_UP_GROUP_NICE
        if want != current and set_nice(want):
            current = want
        time.sleep(poll)


def warm_up_process(signal_fd: int, parent_pid: int) -> int:
    """The warm-up process's body: `warm_up`, with the first step signalled on signal_fd, exiting as soon as
    the server's process (parent_pid) is gone."""
    def exit_with_parent():
        while os.getppid() == parent_pid:
            time.sleep(PARENT_POLL_S)
        os._exit(0)
    threading.Thread(target=exit_with_parent, name="parent watch", daemon=True).start()
    signal = _PipeSignal(signal_fd)
    log = lambda msg: print(msg, file=sys.stderr, flush=True)   # noqa: E731
    try:
        import_compute_modules()
        warm_up(log=log, first_done=signal, background=None if "autogroup" in WITHOUT else _background_group)
    except Exception:                       # the pages compute (and report) it themselves
        log("warm-up failed; the pages will compute their results themselves:\n" + traceback.format_exc())
        return 1
    finally:
        signal.set()
    return 0


def main(argv: list[str] | None = None) -> None:
    os.chdir(HERE)                          # .streamlit/config.toml and the relative page paths
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    t0 = time.perf_counter()
    _, first_done = _warm_up_in_background()
    import_heavy_modules()                  # meanwhile, on the other core (the warm-up imports its own)
    t1 = time.perf_counter()
    if "prime" in WITHOUT:
        primed = []
        if "gc_freeze" not in WITHOUT:
            import gc
            gc.freeze()
    else:
        primed = prime_first_run()              # in the time this process would wait for the first step anyway
    print(f"imported the app's modules in {t1 - t0:.1f} s, primed the first run ({', '.join(primed)}) in "
          f"{time.perf_counter() - t1:.1f} s", file=sys.stderr, flush=True)
    t1 = time.perf_counter()
    if not first_done.is_set() and "while_waiting" not in WITHOUT:
        compute_while_waiting(first_done, log=lambda msg: print(msg, file=sys.stderr, flush=True))
        import gc
        gc.collect()                        # their garbage (only what is not frozen yet is walked) ...
        if "gc_freeze" not in WITHOUT:
            gc.freeze()                         # ... and what they imported (scipy.ndimage, ...), as prime_first_run
    if not first_done.wait(max(0.0, FIRST_STEP_TIMEOUT - (time.perf_counter() - t1))):
        print(f"warm-up: the first step is not done after {FIRST_STEP_TIMEOUT} s; starting the server anyway",
              file=sys.stderr, flush=True)
    print(f"server starting {time.perf_counter() - t0:.1f} s after the command (waited "
          f"{time.perf_counter() - t1:.1f} s for the first warm-up step)", file=sys.stderr, flush=True)
    navigation_from_the_first_run()
    from streamlit.web import cli
    sys.argv = ["streamlit", "run", str(HERE / "dashboard.py"), *(sys.argv[1:] if argv is None else argv)]
    sys.exit(cli.main())


if __name__ == "__main__":
    if sys.argv[1:2] == [WARM_UP_PROCESS]:
        sys.exit(warm_up_process(int(sys.argv[2]), int(sys.argv[3])))
    main()
