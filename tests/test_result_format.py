"""Results on disk know what made them: the result-format version is in every runs/ key and in
metrics.json, and a stored result of another version is recomputed, never served."""
from __future__ import annotations

import json

from core.inference import evaluate as ev
from core.audits import robustness
from core.model.checkpoint import load_checkpoint
from core.data.datasets import open_dataset


def test_stale_result_format_is_recomputed(trained_ckpt, tiny_cifake, tmp_path, monkeypatch):
    lm, ds = load_checkpoint(trained_ckpt), open_dataset(tiny_cifake, split="test")
    df, m = ev.cached_evaluation(lm, ds, tmp_path)
    out = ev.evaluation_dir(tmp_path, lm, ds, None)
    stored = json.loads((out / "metrics.json").read_text())
    assert stored["result_format"] == m["result_format"] == ev.RESULT_FORMAT
    # A result written by other code (older format) under the same folder: never served.
    stored.update(result_format=ev.RESULT_FORMAT - 1, accuracy=-1.0)
    (out / "metrics.json").write_text(json.dumps(stored))
    assert ev.load_evaluation(out) is None
    _, m2 = ev.cached_evaluation(lm, ds, tmp_path)
    assert m2["accuracy"] == m["accuracy"] != -1.0
    assert json.loads((out / "metrics.json").read_text())["result_format"] == ev.RESULT_FORMAT
    # A new format version gives new cache keys, for evaluations and sweeps alike.
    from core.report import audit_cache
    sweep_key, audit_key = robustness.sweep_path(tmp_path, lm, ds), audit_cache.result_dir(tmp_path, "stability", "k")
    monkeypatch.setattr(ev, "RESULT_FORMAT", ev.RESULT_FORMAT + 1)
    monkeypatch.setattr(robustness, "RESULT_FORMAT", ev.RESULT_FORMAT)
    monkeypatch.setattr(audit_cache, "RESULT_FORMAT", ev.RESULT_FORMAT)
    assert ev.evaluation_dir(tmp_path, lm, ds, None) != out
    assert robustness.sweep_path(tmp_path, lm, ds) != sweep_key
    assert audit_cache.result_dir(tmp_path, "stability", "k") != audit_key       # the audit tools' results too
