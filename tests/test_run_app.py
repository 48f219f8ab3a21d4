"""run_app.py: the server answers with the test evaluation stored and every other default result being
computed, once, under the pages' keys, at a lower CPU priority.

- core.model.checkpoint.result_lock: two concurrent callers of one stored result compute it once (the app's
  warm-up and a first page view would otherwise compute the same result twice on the same cores), for
  every result the warm-up computes;
- a caller of a sweep being computed receives its rows as they are measured (the Limitations page on a
  fresh server), not only at the end;
- the warm-up computes each page's result through the page's own call (same runs/ key), in WARM_UP_ORDER,
  in a thread at nice +10;
- the launcher, started like the README says, stores the evaluation of the sample's test split before
  the server answers, then the rest, at exactly the paths the pages look up, from a process of its own
  (never a thread holding the server's interpreter lock), which exits when the server's process does;
- result_lock holds across processes (a page waits for the warm-up process's result, or computes it when
  that process died), and a sweep another process computes streams its rows to a caller in this one.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import ROOT, free_port, make_cifake, stop_process
from core.inference import evaluate as ev
from core.model import checkpoint
from core.audits import robustness
from core.model.checkpoint import load_checkpoint, save_checkpoint, read_checkpoint
from core.data.datasets import open_dataset


def test_concurrent_callers_of_one_result_compute_it_once(tiny_cifake, trained_ckpt, tmp_path, monkeypatch):
    lm = load_checkpoint(trained_ckpt)
    ds = open_dataset(tiny_cifake, split="test")
    calls, real = [], ev.evaluate

    def slow_evaluate(*a, **kw):
        calls.append(threading.current_thread().name)
        time.sleep(0.5)                    # both callers are inside cached_evaluation meanwhile
        return real(*a, **kw)
    monkeypatch.setattr(ev, "evaluate", slow_evaluate)
    out = {}
    threads = [threading.Thread(target=lambda k=k: out.__setitem__(k, ev.cached_evaluation(lm, ds, tmp_path)), name=k)
               for k in ("warm-up", "page")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert out["warm-up"][0]["prob_fake"].tolist() == pytest.approx(out["page"][0]["prob_fake"].tolist(), abs=1e-6)
    # the sweep the same way
    sweeps, real_sweep = [], robustness.sweep

    def counted_sweep(*a, **kw):
        sweeps.append(1)
        time.sleep(0.5)
        return real_sweep(*a, **kw)
    monkeypatch.setattr(robustness, "sweep", counted_sweep)
    threads = [threading.Thread(target=robustness.cached_sweep, args=(lm, ds, tmp_path)) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(sweeps) == 1


def test_launcher_stores_the_default_results_before_any_session(tiny_cifake, trained_ckpt, tmp_path):
    weights, sample, runs = tmp_path / "weights", tmp_path / "sample", tmp_path / "runs"
    weights.mkdir()
    shutil.copy(trained_ckpt, weights / "default.pt")
    make_cifake(sample, n_train=2, n_test=6)
    port = free_port()
    env = {**os.environ, "AUDIT_WEIGHTS_DIR": str(weights), "AUDIT_SAMPLE_DIR": str(sample), "AUDIT_RUNS_DIR": str(runs),
           "OMP_NUM_THREADS": "1"}
    log = tmp_path / "server.log"
    with open(log, "w") as f:
        proc = subprocess.Popen([sys.executable, str(ROOT / "run_app.py"), "--server.headless", "true",
                                 "--server.port", str(port)], cwd=tmp_path, env=env, stdout=f, stderr=subprocess.STDOUT)
    try:
        lm = load_checkpoint(weights / "default.pt")
        # the pages' own key: pages_support.common opens the sample as (SAMPLE_DIR, split, "cifake")
        test = open_dataset(str(sample), split="test", fmt="cifake")
        want = [ev.evaluation_dir(runs, lm, test, None) / "metrics.json", robustness.sweep_path(runs, lm, test)]
        end = time.time() + 600           # the warm-up's lanes run in SCHED_IDLE: on a loaded machine, slow
        health = False
        warm_up_pids = set()
        while time.time() < end and not (health and all(p.is_file() for p in want)):
            assert proc.poll() is None, log.read_text()
            warm_up_pids |= _warm_up_children(proc.pid)
            try:
                with urllib.request.urlopen(f"http://localhost:{port}/_stcore/health", timeout=2) as r:
                    if r.status == 200 and not health:
                        # the first moment a browser could connect: the test evaluation is already stored
                        assert want[0].is_file(), "the server answered before the test evaluation was stored"
                    health = r.status == 200
            except OSError:
                pass
            time.sleep(0.3)
        text = log.read_text()
        assert health, text
        assert all(p.is_file() for p in want), text
        stored = ev.load_evaluation(want[0].parent)
        assert stored is not None and len(stored[0]) == len(test)
        assert "warm-up: evaluation of test ready" in text
        assert "No runtime found" not in text           # no st.cache_data created outside the runtime
        # the warm-up ran in a process of its own, a child of the server's, seen while it computed
        assert warm_up_pids and proc.pid not in warm_up_pids, text
    finally:
        stop_process(proc)


def _warm_up_children(pid: int) -> set[int]:
    import psutil
    import run_app
    try:
        return {c.pid for c in psutil.Process(pid).children(recursive=True)
                if run_app.WARM_UP_PROCESS in c.cmdline()}
    except psutil.Error:
        return set()


def test_warm_up_process_exits_with_the_server_process(tiny_cifake, trained_ckpt, tmp_path):
    """A server process killed outright (no atexit) leaves no warm-up process behind."""
    import psutil
    import run_app
    weights, runs = tmp_path / "weights", tmp_path / "runs"
    weights.mkdir()
    shutil.copy(trained_ckpt, weights / "default.pt")
    env = {**os.environ, "AUDIT_WEIGHTS_DIR": str(weights), "AUDIT_SAMPLE_DIR": str(tiny_cifake),
           "AUDIT_RUNS_DIR": str(runs), "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    # a stand-in for the server: starts the warm-up process as main() does, then waits to be killed
    server = subprocess.Popen([sys.executable, "-c", "import sys, time, run_app\n"
                               "proc, first = run_app._warm_up_in_background()\n"
                               "print(proc.pid, flush=True)\ntime.sleep(600)"],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    try:
        child = psutil.Process(int(server.stdout.readline()))
        assert run_app.WARM_UP_PROCESS in child.cmdline() and child.ppid() == server.pid
        server.kill()
        server.wait(10)
        child.wait(timeout=10 * run_app.PARENT_POLL_S + 5)     # raises psutil.TimeoutExpired if still running
    finally:
        stop_process(server)


def test_result_lock_holds_across_processes(tmp_path):
    """Another process holding a result's lock: acquire(blocking=False) fails here, a blocking acquire waits
    for its release; a holder killed outright releases it (the kernel drops its flock)."""
    from core.model.checkpoint import result_lock
    out = tmp_path / "runs" / "eval-abc"
    holder = ("import sys, time\nfrom core.model.checkpoint import result_lock\nlock = result_lock(sys.argv[1])\n"
              "lock.acquire()\nprint('held', flush=True)\ntime.sleep(float(sys.argv[2]))\nlock.release()\n"
              "print('released', flush=True)\ntime.sleep(30)")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for hold, kill in ((1.0, False), (60.0, True)):
        p = subprocess.Popen([sys.executable, "-c", holder, str(out), str(hold)], cwd=ROOT, env=env,
                             stdout=subprocess.PIPE, text=True)
        try:
            assert p.stdout.readline().strip() == "held"
            lock = result_lock(out)
            assert not lock.acquire(blocking=False)
            assert not lock.locked()                   # no thread of this process holds it
            t0 = time.perf_counter()
            if kill:
                p.kill()
            assert lock.acquire()
            waited = time.perf_counter() - t0
            lock.release()
            assert waited < 10 if kill else waited > 0.3
        finally:
            stop_process(p)


def test_a_released_result_lock_is_not_held_by_a_process_forked_meanwhile(tmp_path):
    """A process forked while a result's lock is held (a DataLoader worker of an evaluation running beside it,
    as the warm-up's evaluation of train was while its other lane held the Grad-CAM audit's lock) does not keep
    the lock after its holder releases it: the Limitations page waited 20 s for the audit's lock after the audit
    was stored, until that evaluation's workers exited (py-spy of a fresh server)."""
    import multiprocessing

    from core.model.checkpoint import result_lock
    out = tmp_path / "runs" / "gradcam-audit-abc"
    lock = result_lock(out)
    lock.acquire()
    forked = multiprocessing.get_context("fork").Process(target=time.sleep, args=(30,), daemon=True)
    forked.start()                                     # as torch's DataLoader starts its workers on Linux
    try:
        lock.release()
        probe = ("import sys\nfrom core.model.checkpoint import result_lock\n"
                 "print(result_lock(sys.argv[1]).acquire(blocking=False))")
        res = subprocess.run([sys.executable, "-c", probe, str(out)], cwd=ROOT, capture_output=True, text=True,
                             env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}, timeout=120)
        assert res.stdout.strip() == "True", res.stdout + res.stderr   # another process gets it at once
        assert lock.acquire(blocking=False)                              # and so does this one
        lock.release()
    finally:
        forked.kill()
        forked.join()



def test_a_caller_of_a_sweep_another_process_computes_receives_its_rows_as_they_come(tiny_cifake, trained_ckpt,
                                                                                     tmp_path):
    """The app's warm-up process computes the sweep; a Limitations page in the server's process receives each
    row as that process measures it, then the stored table, without computing anything itself."""
    import pandas as pd
    rows = [{"shift": "none", "level": 0.0, "n": 6}, {"shift": "blur", "level": 1.0, "n": 6},
            {"shift": "blur", "level": 2.0, "n": 6}]
    computer = ("import sys, time, json\nimport pandas as pd\nfrom core.audits import robustness\n"
                "from core.model.checkpoint import load_checkpoint\nfrom core.data.datasets import open_dataset\n"
                "rows = json.loads(sys.argv[3])\n"
                "def slow_sweep(lm, ds, progress=None, on_row=None, **kw):\n"
                "    for r in rows:\n"
                "        on_row(dict(r)); print('row', time.time(), flush=True); time.sleep(0.5)\n"
                "    print('done', time.time(), flush=True)\n"
                "    return pd.DataFrame(rows)\n"
                "robustness.sweep = slow_sweep\n"
                "robustness.cached_sweep(load_checkpoint(sys.argv[1]), open_dataset(sys.argv[2], split='test'), "
                "sys.argv[4])\n")
    import json
    p = subprocess.Popen([sys.executable, "-c", computer, str(trained_ckpt), str(tiny_cifake), json.dumps(rows),
                          str(tmp_path)], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"},
                         stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().startswith("row")          # the first row is measured
        lm = load_checkpoint(trained_ckpt)
        ds = open_dataset(tiny_cifake, split="test")

        def fail(*a, **k):
            raise AssertionError("computed here, not followed")
        real, robustness.sweep = robustness.sweep, fail
        try:
            got = []
            df = robustness.cached_sweep(lm, ds, tmp_path, on_row=lambda r: got.append((r, time.time())))
        finally:
            robustness.sweep = real
        lines = [p.stdout.readline().split() for _ in range(3)]
        done_at = float(lines[-1][1])
        assert [r for r, _ in got] == rows
        assert got[1][1] < done_at                            # streamed before the other process had finished
        assert df.to_dict("records") == rows
        assert not robustness.partial_path(robustness.sweep_path(tmp_path, lm, ds)).exists()
    finally:
        stop_process(p)


def _count_calls(monkeypatch, module, name, delay=0.5):
    calls, real = [], getattr(module, name)

    def counted(*a, **kw):
        calls.append(threading.current_thread().name)
        time.sleep(delay)                  # both callers are inside the cached_* function meanwhile
        return real(*a, **kw)
    monkeypatch.setattr(module, name, counted)
    return calls


def _run_both(fn):
    threads = [threading.Thread(target=fn, name=k) for k in ("warm-up", "page")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


@pytest.mark.parametrize("kind", ["properties", "forensics", "stability", "gradcam-audit", "compare"])
def test_every_warmed_result_is_computed_once_under_concurrency(kind, tiny_cifake, trained_ckpt, tmp_path, monkeypatch):
    from core.audits import compare, forensics, slices, stability
    lm = load_checkpoint(trained_ckpt)
    ds = open_dataset(tiny_cifake, split="test")
    module, inner, call = {
        "compare": (compare, "compare_predictions",
                    lambda: compare.cached_comparison(lm, lm, ds, tmp_path, 0.5, n_boot=50)),
        "properties": (slices, "image_properties", lambda: slices.cached_properties(ds, tmp_path)),
        "forensics": (forensics, "analyse", lambda: forensics.cached_analysis(ds, tmp_path)),
        "stability": (stability, "dataset_stability",
                      lambda: stability.cached_dataset_stability(lm, ds, tmp_path, max_images=10)),
        "gradcam-audit": (robustness, "gradcam_audit_dataset",
                          lambda: robustness.cached_gradcam_audit(lm, ds, tmp_path, n=8, seed=0)),
    }[kind]
    calls = _count_calls(monkeypatch, module, inner)
    _run_both(call)
    assert len(calls) == 1, calls
    call()                                  # and a later caller reads it from disk
    assert len(calls) == 1


def test_a_caller_of_a_sweep_in_progress_receives_its_rows_as_they_come(tiny_cifake, trained_ckpt, tmp_path,
                                                                         monkeypatch):
    import pandas as pd
    lm = load_checkpoint(trained_ckpt)
    ds = open_dataset(tiny_cifake, split="test")
    total = sum(len(v) for v in robustness.SWEEP_LEVELS.values())
    rows = [{"shift": "none", "level": 0.0}, {"shift": "blur", "level": 1.0}, {"shift": "blur", "level": 2.0}]
    started, finished_at = threading.Event(), []

    lock = robustness.result_lock(robustness.sweep_path(tmp_path, lm, ds))
    waited_while_running = []

    def slow_sweep(lm, ds, progress=None, on_row=None, **kw):      # 3 rows, 0.4 s apart
        for k, r in enumerate(rows):
            on_row(dict(r))
            started.set()
            if k == 2:
                waited_while_running.append(lock.waited_for() and checkpoint.waited_for_here())
            if progress and k:
                progress(k, total)
            time.sleep(0.4)
        finished_at.append(time.perf_counter())
        return pd.DataFrame(rows)
    monkeypatch.setattr(robustness, "sweep", slow_sweep)
    first = threading.Thread(target=robustness.cached_sweep, args=(lm, ds, tmp_path), name="warm-up")
    first.start()
    assert started.wait(5)
    got, progress = [], []
    df = robustness.cached_sweep(lm, ds, tmp_path, on_row=lambda r: got.append((r, time.perf_counter())),
                                 progress=lambda d, t: progress.append((d, t)))
    first.join()
    assert [r for r, _ in got] == rows                        # the first row replayed, the others streamed
    assert got[1][1] < finished_at[0] and got[0][1] < finished_at[0]   # before the sweep had finished
    assert progress == [(1, total), (2, total)]
    assert df.to_dict("records") == rows                      # then the stored result
    assert robustness.sweep_path(tmp_path, lm, ds).is_file()
    # while it followed, the follower said it was waiting (the computing warm-up then leaves its low priority)
    assert waited_while_running and waited_while_running[0] and not lock.waited_for()


def test_warm_up_after_its_first_step_runs_at_lower_priority(monkeypatch):
    """The first step (which the server waits for) at the caller's priority, every later step at nice +10."""
    import run_app
    seen = []

    def probe():
        seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
    monkeypatch.setattr(run_app, "warm_up_steps", lambda: [("first", probe), ("second", probe), ("third", probe)])
    base = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    first = threading.Event()
    assert run_app.warm_up(log=lambda m: None, first_done=first) == ["first", "second", "third"]
    assert first.is_set()
    assert seen == [base] + [min(19, base + run_app.WARM_UP_NICE)] * 2


def test_warm_up_lanes_run_side_by_side_on_one_torch_thread_each(monkeypatch):
    """After the first step (the caller's torch threads), the two lanes run at the same time (each step waits
    for the other lane's), each on one torch thread; the caller and threads started later keep the process's."""
    import torch

    import run_app
    n0 = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        seen = {}
        both = threading.Barrier(2, timeout=10)

        def probe(key):
            def step():
                seen[key] = torch.get_num_threads()
                both.wait()                 # breaks (the step fails) unless the other lane is running meanwhile
            return step
        steps = [("evaluation of test", lambda: seen.__setitem__("first", torch.get_num_threads())),
                 ("evaluation of ood", probe("ood")), ("robustness sweep of test", probe("sweep"))]
        monkeypatch.setattr(run_app, "warm_up_steps", lambda: steps)
        log = []
        assert run_app.warm_up(log=log.append) == ["evaluation of test", "evaluation of ood",
                                                   "robustness sweep of test"], log
        assert seen == {"first": 2, "ood": 1, "sweep": 1}
        assert torch.get_num_threads() == 2
        later = []
        t = threading.Thread(target=lambda: later.append(torch.get_num_threads()))
        t.start()
        t.join()
        assert later == [2]
    finally:
        torch.set_num_threads(n0)


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="Linux scheduling classes")
def test_warm_up_lanes_run_in_sched_idle_and_their_threads_inherit_it(monkeypatch):
    """The first step keeps the caller's scheduling class; both lanes, and a thread a lane starts (the sweep's
    workers), run in SCHED_IDLE, so a page computing on a fresh server never shares a core with them."""
    import run_app
    seen = {}

    def policy():
        return os.sched_getscheduler(threading.get_native_id())

    def starts_a_worker():
        seen["sweep"] = policy()
        t = threading.Thread(target=lambda: seen.__setitem__("worker", policy()))
        t.start()
        t.join()
    steps = [("evaluation of test", lambda: seen.__setitem__("first", policy())),
             ("evaluation of ood", lambda: seen.__setitem__("ood", policy())),
             ("robustness sweep of test", starts_a_worker)]
    monkeypatch.setattr(run_app, "warm_up_steps", lambda: steps)
    main_before = policy()
    run_app.warm_up(log=lambda *a: None)
    assert seen == {"first": main_before, "ood": os.SCHED_IDLE, "sweep": os.SCHED_IDLE, "worker": os.SCHED_IDLE}
    assert policy() == main_before


def test_lane_steps_of_the_shipped_steps():
    """Lane 0 starts with the sweep; both lanes take every other step from one queue: the page results in menu
    order (Limitations' Grad-CAM audit before its stability battery), then the other splits."""
    import run_app
    steps = [(name, None) for name in run_app.WARM_UP_ORDER[1:]]
    own, shared = run_app.lane_steps(steps)
    assert [name for name, _ in own] == ["robustness sweep of test"]
    assert [name for name, _ in shared] == ["evaluation of ood", "Grad-CAM audit of test", "stability battery of test",
                                            "forensics analysis of test", "Compare's model B on test",
                                            "image properties of test", "evaluation of train"]


def test_a_free_lane_takes_the_next_step_and_the_other_splits_start_last(monkeypatch):
    """Once its sweep is done, lane 0 takes page results from the queue, and the train split's evaluation starts
    only after every page result has started (with fixed lanes it started right after the sweep, beside lane 1's
    remaining Limitations result)."""
    import run_app
    started, lock = [], threading.Lock()

    def step(name, seconds):
        def run():
            with lock:
                started.append((name, threading.current_thread().name))
            time.sleep(seconds)
        return name, run
    pages = [f"page result {k}" for k in range(5)]
    steps = [step("evaluation of test", 0), step("robustness sweep of test", 0.3),
             *[step(name, 0.3) for name in pages], step("evaluation of train", 0)]
    monkeypatch.setattr(run_app, "warm_up_steps", lambda: steps)
    run_app.warm_up(log=lambda *a: None)
    order = [name for name, _ in started]
    assert order[0] == "evaluation of test"
    assert [n for n in order if n != "robustness sweep of test"][1:] == pages + ["evaluation of train"]
    sweep_lane = dict(started)["robustness sweep of test"]
    assert any(lane == sweep_lane for name, lane in started if name in pages)     # lane 0 helped after its sweep


def test_lower_priority_lowers_only_the_calling_thread():
    import run_app
    seen = {}

    def probe():
        tid = threading.get_native_id()
        before = os.getpriority(os.PRIO_PROCESS, tid)
        run_app.lower_priority()
        seen["delta"] = os.getpriority(os.PRIO_PROCESS, tid) - before
        seen["before"] = before
    main_before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    t = threading.Thread(target=probe)
    t.start()
    t.join()
    assert seen["delta"] == min(run_app.WARM_UP_NICE, 19 - seen["before"]) > 0
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == main_before     # only that thread


def _weights_and_sample(tmp_path, trained_ckpt, ood: bool = False) -> tuple[Path, Path, Path]:
    """(weights, sample, runs) folders in tmp_path: default.pt and a model B (the same network, another file, so
    another sha256), a tiny CIFAKE sample (with an ood split copied from test, with `ood`), runs/ not made."""
    weights, sample, runs = tmp_path / "weights", tmp_path / "sample", tmp_path / "runs"
    weights.mkdir()
    shutil.copy(trained_ckpt, weights / "default.pt")
    ck, _ = read_checkpoint(str(trained_ckpt))
    ck["name"] = "model-b"
    save_checkpoint(ck, weights / "b.pt")
    make_cifake(sample, n_train=4, n_test=6)
    if ood:
        shutil.copytree(sample / "test", sample / "ood")
    return weights, sample, runs


def test_warm_up_stores_every_default_result_under_the_pages_keys(tiny_cifake, trained_ckpt, tmp_path, monkeypatch):
    """In process: paths pointed at tiny fixtures; every WARM_UP_ORDER step runs, in order, and leaves its
    result where the page's own call finds it (asserted by making the page-side call fail if it computes)."""
    import run_app
    from core.audits import forensics, slices, stability
    from core.audits.limitations import AUDIT_IMAGES, AUDIT_TOP, STABILITY_MAX_IMAGES
    from pages_support import paths
    weights, sample, runs = _weights_and_sample(tmp_path, trained_ckpt, ood=True)
    for name, value in (("WEIGHTS_DIR", weights), ("SAMPLE_DIR", sample), ("RUNS_DIR", runs),
                        ("DEFAULT_WEIGHTS", weights / "default.pt")):
        monkeypatch.setattr(paths, name, value)
    log = []
    first = threading.Event()
    done = run_app.warm_up(log=log.append, first_done=first)
    assert first.is_set()
    assert done == run_app.WARM_UP_ORDER, log
    # The pages' calls, each of which must now read from disk.
    from core.audits import compare
    for module, name in ((ev, "evaluate"), (robustness, "sweep"), (robustness, "gradcam_audit_dataset"),
                         (slices, "image_properties"), (forensics, "analyse"), (stability, "dataset_stability"),
                         (compare, "compare_predictions")):
        monkeypatch.setattr(module, name, lambda *a, _n=name, **k: pytest.fail(f"{_n} recomputed: not warmed"))
    lm, lm_b = load_checkpoint(weights / "default.pt"), load_checkpoint(weights / "b.pt")
    test = open_dataset(str(sample), split="test", fmt="cifake")
    for split in ("test", "ood", "train"):
        ev.cached_evaluation(lm, open_dataset(str(sample), split=split, fmt="cifake"), runs)
    ev.cached_evaluation(lm_b, test, runs)
    compare.cached_comparison(lm, lm_b, test, runs, 0.5)         # pages/9_compare.py at the default threshold
    slices.cached_properties(test, runs)
    forensics.cached_analysis(test, runs)
    robustness.cached_sweep(lm, test, runs)
    stability.cached_dataset_stability(lm, test, runs, max_images=STABILITY_MAX_IMAGES)
    robustness.cached_gradcam_audit(lm, test, runs, n=min(AUDIT_IMAGES, len(test)), seed=0, top=AUDIT_TOP,
                                    threshold=0.5)


def _fake_launch(monkeypatch, order: list, steps=()) -> threading.Event:
    """run_app.main's parts replaced by recorders: imports, priming, a warm-up whose first step (the test
    evaluation) takes 0.5 s, `steps` as the results computed while waiting; returns the first step's Event."""
    import run_app
    first_done = threading.Event()
    monkeypatch.setattr(run_app, "import_heavy_modules", lambda: order.append("heavy imports"))
    monkeypatch.setattr(run_app, "prime_first_run", lambda: order.append("first run primed") or [])

    def fake_background():
        order.append("warm-up started")
        threading.Timer(0.5, first_done.set).start()
        return None, first_done
    monkeypatch.setattr(run_app, "_warm_up_in_background", fake_background)
    monkeypatch.setattr(run_app, "while_waiting_steps", lambda: list(steps))
    monkeypatch.setattr(sys, "argv", ["run_app.py"])
    monkeypatch.chdir(ROOT)
    return first_done


def test_server_starts_only_after_the_first_warm_up_step(monkeypatch):
    """main(): imports, warm-up started, then the server (streamlit's cli.main) only once the first step is
    stored (first_done set), however long it takes, with Streamlit's pages-directory mode already off."""
    import run_app
    from streamlit.web import cli
    order = []
    first_done = _fake_launch(monkeypatch, order)
    from streamlit.runtime.pages_manager import PagesManager
    monkeypatch.setattr(PagesManager, "uses_pages_directory", None)     # as on a fresh server
    monkeypatch.setattr(cli, "main", lambda: order.append(f"server (first step done: {first_done.is_set()}, "
                                                          f"pages directory mode: {PagesManager.uses_pages_directory})") or 0)
    with pytest.raises(SystemExit):
        run_app.main([])
    # and a first deep link runs dashboard.py's st.navigation at once (no page-file-alone run + rerun)
    assert order == ["warm-up started", "heavy imports", "first run primed",
                     "server (first step done: True, pages directory mode: False)"]


def test_the_server_process_computes_results_while_it_waits_and_starts_no_step_after_the_first_is_done(monkeypatch):
    """main(): between priming and the server, the server's process runs while_waiting_steps() one by one in a
    thread on one torch thread (not in SCHED_IDLE: run_app.WHILE_WAITING_IDLE), starting none once the first
    warm-up step is done; the step in progress then finishes before the server starts (its thread never runs
    beside a page's script)."""
    import torch

    import run_app
    from streamlit.web import cli
    order, seen = [], {}

    def step(name):
        def run():
            seen[name] = (torch.get_num_threads(), threading.current_thread() is threading.main_thread(),
                          os.sched_getscheduler(0) if hasattr(os, "sched_getscheduler") else None)
            order.append(f"{name} started")
            time.sleep(0.2)
            order.append(f"{name} stored (first step done: {first_done.is_set()})")
        return name, run
    first_done = _fake_launch(monkeypatch, order, [step(f"result {k}") for k in range(6)])
    monkeypatch.setattr(cli, "main", lambda: order.append(f"server (first step done: {first_done.is_set()})") or 0)
    with pytest.raises(SystemExit):
        run_app.main([])
    assert order[:3] == ["warm-up started", "heavy imports", "first run primed"]
    assert order[-1] == "server (first step done: True)"
    computed = order[3:-1]
    # 0.2 s each, the first step done after 0.5 s: results 0-2 start before it (the third finishes after it),
    # results 3-5 never start
    assert computed == ["result 0 started", "result 0 stored (first step done: False)",
                        "result 1 started", "result 1 stored (first step done: False)",
                        "result 2 started", "result 2 stored (first step done: True)"], order
    for threads, in_main, policy in seen.values():
        assert threads == 1 and not in_main
        if policy is not None:
            assert policy == os.SCHED_OTHER
    assert torch.get_num_threads() != 1 or (os.cpu_count() or 1) == 1     # this thread's own count is left alone


def test_results_computed_while_waiting_are_stored_under_the_pages_keys(tiny_cifake, trained_ckpt, tmp_path,
                                                                        monkeypatch):
    """while_waiting_steps on tiny fixtures: Error slices' image properties, Forensics' analysis and the test
    evaluation of Compare's default model B, each then read from disk by the page's own call (made to fail if
    it computes); the comparison itself still needs computing (the default model's evaluation is not there)."""
    import run_app
    from core.audits import compare, forensics, slices
    from pages_support import paths
    weights, sample, runs = _weights_and_sample(tmp_path, trained_ckpt)
    for name, value in (("WEIGHTS_DIR", weights), ("SAMPLE_DIR", sample), ("RUNS_DIR", runs),
                        ("DEFAULT_WEIGHTS", weights / "default.pt")):
        monkeypatch.setattr(paths, name, value)
    assert [name for name, _ in run_app.while_waiting_steps()] == run_app.WHILE_WAITING
    assert run_app.compute_while_waiting(threading.Event(), log=lambda *a: None) == run_app.WHILE_WAITING
    lm, lm_b = load_checkpoint(weights / "default.pt"), load_checkpoint(weights / "b.pt")
    test = open_dataset(str(sample), split="test", fmt="cifake")
    assert not (ev.evaluation_dir(runs, lm, test, None) / "metrics.json").exists()     # the first step's, not ours
    for module, name in ((slices, "image_properties"), (forensics, "analyse"), (ev, "predict_dataset")):
        monkeypatch.setattr(module, name, lambda *a, _n=name, **k: pytest.fail(f"{_n} recomputed: not stored"))
    assert len(slices.cached_properties(test, runs)) == len(test)
    forensics.cached_analysis(test, runs)
    assert len(ev.cached_evaluation(lm_b, test, runs)[0]) == len(test)
    done = threading.Event()
    done.set()
    assert run_app.compute_while_waiting(done, log=lambda *a: None) == []     # first step already done: nothing


def test_the_server_process_primes_the_sidebars_models_and_dataset_and_freezes_the_imports(
        trained_ckpt, tmp_path, monkeypatch):
    """prime_first_run: the sidebar's default model, Compare's default model B and the default split are in
    st.cache_resource under the keys the pages use, so a fresh server's first script run loads nothing (its
    loaders are made to fail here); what was loaded is frozen out of the collector (gc.freeze), so Streamlit's
    collection after each script run no longer walks it; a missing weights folder is no traceback."""
    import gc

    import run_app
    from streamlit.testing.v1 import AppTest

    import pages_support.common as common
    from core.model.checkpoint import CheckpointError, file_sha256
    weights, sample, runs = _weights_and_sample(tmp_path, trained_ckpt, ood=True)
    from test_app import _point_app_at
    _point_app_at(monkeypatch, weights, sample, runs)
    gc.unfreeze()
    try:
        assert run_app.prime_first_run() == ["modules", "default.pt", "b.pt", "sample test"]
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()

    def no_loading(*a, **k):
        raise CheckpointError("loaded again: not primed")
    monkeypatch.setattr(common, "load_checkpoint", no_loading)
    monkeypatch.setattr(common, "open_dataset", lambda *a, **k: pytest.fail("dataset indexed again: not primed"))
    at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=120).run()
    assert not at.exception and not at.sidebar.error, [e.value for e in at.sidebar.error]
    assert at.session_state["selection"]["dataset_key"] == (str(sample), "test", "cifake", None)
    path_b = str(common.shipped_weights()[1])                   # pages/9_compare.py's default model B
    assert common.load_model_cached(path_b, file_sha256(path_b)).name == "model-b"
    assert sorted(run_app.PAGES_SUPPORT_MODULES) == sorted(p.stem for p in (ROOT / "pages_support").glob("*.py")
                                                           if p.stem != "__init__")
    monkeypatch.setattr(common, "WEIGHTS_DIR", tmp_path / "none")
    assert run_app.prime_first_run() == ["modules", "sample test"]     # no weights: no model, no traceback
    gc.unfreeze()


def test_the_launcher_imports_every_module_the_pages_import_before_the_server_answers():
    """What a page (or pages_support) imports at its top, other than the app's own modules, is imported by
    run_app.import_heavy_modules, so a fresh server's first page view does not wait for it (plotly, pandas' Styler)."""
    import ast
    wanted = set()
    for f in sorted((ROOT / "pages").glob("*.py")) + sorted((ROOT / "pages_support").glob("*.py")) + [ROOT / "dashboard.py"]:
        for node in ast.parse(f.read_text()).body:
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else []
            wanted |= {n for n in names if n.split(".")[0] not in ("core", "pages_support", "__future__")}
    code = ("import sys, run_app\nrun_app.import_heavy_modules()\n"
            f"print(sorted(m for m in {sorted(wanted)!r} if m not in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", out.stdout
    assert {"streamlit", "pandas"} <= wanted and "altair" not in wanted     # the scan found the pages' imports


def test_without_posix_the_warm_up_runs_in_a_thread_of_the_server(tiny_cifake, trained_ckpt, tmp_path, monkeypatch):
    """WARM_UP_IN_PROCESS off (not POSIX): the same warm-up, in a thread of this process; first_done is set once
    the test evaluation is stored."""
    import run_app
    from pages_support import paths
    weights, runs = tmp_path / "weights", tmp_path / "runs"
    weights.mkdir()
    shutil.copy(trained_ckpt, weights / "default.pt")
    for name, value in (("WEIGHTS_DIR", weights), ("SAMPLE_DIR", Path(tiny_cifake)), ("RUNS_DIR", runs),
                        ("DEFAULT_WEIGHTS", weights / "default.pt")):
        monkeypatch.setattr(paths, name, value)
    monkeypatch.setattr(run_app, "WARM_UP_IN_PROCESS", False)
    worker, first = run_app._warm_up_in_background()
    assert isinstance(worker, threading.Thread)
    assert first.wait(120)
    lm = load_checkpoint(weights / "default.pt")
    test = open_dataset(str(tiny_cifake), split="test", fmt="cifake")
    assert (ev.evaluation_dir(runs, lm, test, None) / "metrics.json").is_file()
    worker.join(300)


def test_bench_browser_keeps_the_launchers_own_log_lines(tmp_path, monkeypatch):
    """benchmarks/bench_browser.py stores run_app's own lines of each server's log with the page's row
    (launcher_log): what the server's process computed while it waited, and the warm-up's steps; not
    Streamlit's or anyone else's lines."""
    import run_app
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import bench_browser
    said = []
    first = threading.Event()
    monkeypatch.setattr(run_app, "while_waiting_steps", lambda: [("a result", lambda: None), ("another", first.set),
                                                                 ("a third", lambda: None)])
    assert run_app.compute_while_waiting(first, log=said.append) == ["a result", "another"]
    said += ["warm-up: evaluation of test ready (1.0 s)", run_app.WARM_UP_DONE]
    (tmp_path / "server.log").write_text("\n".join(["  You can now view your Streamlit app in your browser.",
                                                    said[0], "2026-11-23 Uvicorn server started", *said[1:],
                                                    "Traceback (most recent call last):"]) + "\n")
    assert bench_browser.launcher_log(tmp_path) == said
    assert len(said) == 5 and "left to the warm-up's queue" in said[2]      # "a third" never started
    assert bench_browser.launcher_log(tmp_path / "none") == []


def test_bench_browser_names_the_commit_each_clone_measured(tmp_path, monkeypatch):
    """Each row of bench_browser carries the commit its clone had checked out (HEAD and --baseline rows alike)."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import bench_browser
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    shas = []
    for k in range(2):
        (tmp_path / "f.txt").write_text(str(k))
        subprocess.run(git + ["add", "f.txt"], check=True)
        subprocess.run(git + ["commit", "-q", "-m", str(k)], check=True)
        shas.append(subprocess.run(git + ["rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip())
    assert bench_browser.commit(tmp_path) == shas[1]
    subprocess.run(git + ["checkout", "-q", shas[0]], check=True)
    assert bench_browser.commit(tmp_path) == shas[0] and len(shas[0]) == 40
    (tmp_path / "f.txt").write_text("changed")                 # a tracked file differs: said, not hidden
    assert bench_browser.commit(tmp_path) == shas[0] + "+changes"


@pytest.mark.skipif(not os.path.exists("/proc/self/autogroup"), reason="Linux autogroup scheduling")
def test_own_background_group_moves_the_process_and_its_later_children_to_a_group_at_low_priority():
    """A process of its own session (so its own autogroup: across sessions nice and SCHED_IDLE do not count) at
    autogroup nice +19, and so is a process it starts afterwards; the caller's group is left as it was.
    A process that never left the kernel's default autogroup (no setsid since boot in its line, as under CI's
    runner) reads an empty /proc/self/autogroup: that group is named '(default)' here."""
    before = Path("/proc/self/autogroup").read_text()
    code = ("import os, subprocess, sys\nfrom core.inference.threads import own_background_group\n"
            "before = (open('/proc/self/autogroup').read().split() or ['(default)'])[0]\n"
            "ok = own_background_group(19)\n"
            "child = subprocess.run([sys.executable, '-c', \"print(open('/proc/self/autogroup').read().strip())\"],"
            " capture_output=True, text=True).stdout.strip()\n"
            "print(ok, os.getsid(0) == os.getpid(), before, open('/proc/self/autogroup').read().strip(), '|', child)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    ok, leader, group_before, group, nice_word, nice, bar, child_group, child_nice_word, child_nice = out.stdout.split()
    assert (ok, leader) == ("True", "True")
    assert group != group_before and (nice_word, nice) == ("nice", "19")
    assert (child_group, child_nice) == (group, "19")          # a process started later (DataLoader workers)
    assert Path("/proc/self/autogroup").read_text() == before


def test_warm_up_moves_to_its_background_group_between_the_first_step_and_the_lanes(monkeypatch):
    """`background` runs once, after the first step (which the server waits for, at the server's priority) and
    before any other step; the warm-up process passes own_background_group at WARM_UP_GROUP_NICE."""
    import run_app
    order = []
    steps = [("evaluation of test", lambda: order.append("first")),
             ("evaluation of ood", lambda: order.append("ood")),
             ("robustness sweep of test", lambda: order.append("sweep"))]
    monkeypatch.setattr(run_app, "warm_up_steps", lambda: steps)
    run_app.warm_up(log=lambda *a: None, background=lambda: order.append("background"))
    assert order[:2] == ["first", "background"] and sorted(order[2:]) == ["ood", "sweep"]

    import core.inference.threads
    calls = []
    monkeypatch.setattr(core.inference.threads, "own_background_group", lambda nice: calls.append(nice))
    monkeypatch.setattr(run_app, "import_compute_modules", lambda: None)
    monkeypatch.setattr(run_app, "warm_up", lambda log, first_done, background: background())
    r, w = os.pipe()
    try:
        assert run_app.warm_up_process(w, os.getppid()) == 0
    finally:
        os.close(r)
    assert calls == [run_app.WARM_UP_GROUP_NICE] == [19]


def test_a_caller_blocked_on_a_result_another_process_holds_says_so_while_it_waits(tmp_path):
    """A blocking acquire of a result another process holds leaves a marker next to the lock file for as long as
    it waits: the holder sees it (waited_for, waited_for_here: run_app's warm-up then runs at nice 0); gone once
    the lock is acquired, and never left by an acquire that did not wait."""
    from core.model.checkpoint import result_lock, waited_for_here
    out = tmp_path / "runs" / "eval-abc"
    lock = result_lock(out)
    assert lock.acquire()
    assert not lock.waited_for() and not waited_for_here()      # held here, nobody waits
    waiter = ("import sys\nfrom core.model.checkpoint import result_lock\nlock = result_lock(sys.argv[1])\n"
              "print('waiting', flush=True)\nlock.acquire()\nprint('got it', flush=True)\nlock.release()")
    p = subprocess.Popen([sys.executable, "-c", waiter, str(out)], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                         stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "waiting"
        end = time.time() + 60
        while not waited_for_here() and time.time() < end:
            time.sleep(0.05)
        assert lock.waited_for() and waited_for_here()
        assert len(list((out.parent / ".locks").glob("eval-abc.lock.waiting-*"))) == 1
        lock.release()
        assert p.stdout.readline().strip() == "got it"
        assert p.wait(30) == 0
        assert not lock.waited_for() and not list((out.parent / ".locks").glob("*.waiting-*"))
        assert not waited_for_here()                              # not held here any more either
    finally:
        if lock.locked():
            lock.release()
        stop_process(p)


def test_the_warm_ups_priority_follows_whether_a_page_waits_for_it(monkeypatch):
    """follow_waiters: nice 0 while core.model.checkpoint.waited_for_here() says a caller waits, WARM_UP_GROUP_NICE
    otherwise; a refused change (the kernel's rate limit) is tried again at the next poll."""
    import core.model.checkpoint
    import run_app
    answers = iter([False, True, True, True, False, False])
    stop = threading.Event()

    def waited():
        try:
            return next(answers)
        except StopIteration:
            stop.set()
            return False
    monkeypatch.setattr(core.model.checkpoint, "waited_for_here", waited)
    calls, refuse = [], [True]

    def set_nice(n):
        calls.append(n)
        if n == 0 and refuse[0]:            # the first try refused
            refuse[0] = False
            return False
        return True
    run_app.follow_waiters(set_nice, stop=stop, poll=0.001)
    assert calls == [0, 0, run_app.WARM_UP_GROUP_NICE]


def test_a_thread_waiting_for_a_result_is_not_counted_as_computing_it(tmp_path):
    """waited_for_here counts only results a thread of this process holds: a thread here that is itself blocked
    on a result another process computes (its own marker beside the lock file) does not raise the warm-up's
    priority."""
    from core.model.checkpoint import result_lock, waited_for_here
    out = tmp_path / "runs" / "eval-xyz"
    holder = ("import sys, time\nfrom core.model.checkpoint import result_lock\nlock = result_lock(sys.argv[1])\n"
              "lock.acquire()\nprint('held', flush=True)\nsys.stdin.readline()\nlock.release()")
    p = subprocess.Popen([sys.executable, "-c", holder, str(out)], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    lock = result_lock(out)
    try:
        assert p.stdout.readline().strip() == "held"
        t = threading.Thread(target=lock.acquire)
        t.start()
        end = time.time() + 30
        while not lock.waited_for() and time.time() < end:
            time.sleep(0.05)
        assert lock.waited_for() and lock.locked() and not lock.held     # waiting here, not holding
        assert not waited_for_here()
        p.stdin.write("go\n")
        p.stdin.flush()
        t.join(30)
        assert lock.held and not lock.waited_for()
        lock.release()
        assert not lock.held
    finally:
        stop_process(p)
