"""run_app.py: the server answers with the default results already being computed, once, under the pages' keys.

- core.checkpoint.result_lock: two concurrent callers of one stored result compute it once (the app's
  warm-up and a first page view would otherwise evaluate the same data twice on the same cores);
- the launcher, started like the README says, stores the evaluation of the sample's test split and the
  robustness sweep under runs/ before any browser session, at exactly the paths the pages look up.
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
from core import evaluate as ev
from core import robustness
from core.checkpoint import load_checkpoint
from core.datasets import open_dataset


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
        end = time.time() + 240
        health = False
        while time.time() < end and not (health and all(p.is_file() for p in want)):
            assert proc.poll() is None, log.read_text()
            try:
                with urllib.request.urlopen(f"http://localhost:{port}/_stcore/health", timeout=2) as r:
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
    finally:
        stop_process(proc)
