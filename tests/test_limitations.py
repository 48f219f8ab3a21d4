"""core.audits.limitations: every verdict branch on hand-built numbers, the cut-offs at their edges, and the CLI
printing the page's summary table."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core.audits import limitations as lim
from core.audits.limitations import Verdict


def sweep_rows(name, accs, rr=None, rf=None):
    n = len(accs)
    return pd.DataFrame({"shift": [name] * n, "level": [float(i + 1) for i in range(n)], "accuracy": accs,
                         "recall_REAL": rr or accs, "recall_FAKE": rf or accs})


BASE = {"accuracy": 0.90}


@pytest.mark.parametrize("worst, status, start", [
    (0.84, "holds", "Holds: accuracy falls from 90.0% to 84.0% at blur sigma 2."),        # drop 0.06
    (0.85, "holds", "Holds:"),                                                            # drop 0.05 = cut-off
    (0.87, "holds weakly", "Holds weakly: accuracy falls from 90.0% to 87.0%"),           # drop 0.03
    (0.881, "not observed", "Not observed here: accuracy stays within 2 points of 90.0% (lowest 88.1%"),
    (0.93, "not observed", "Not observed here"),                                          # improves
])
def test_shift_verdict_branches(worst, status, start):
    v = lim.shift_verdict(BASE, sweep_rows("blur", [0.89, worst]), "blur")
    assert v.status == status and v.text.startswith(start), v.text
    lowest = min(0.89, worst)
    assert v.numbers["worst_level"] == (2.0 if worst < 0.89 else 1.0) and v.numbers["drop"] == pytest.approx(0.90 - lowest)
    assert "one-sided" not in v.text


def test_shift_verdict_one_sided_errors_both_ways():
    # Accuracy 0.80 at the worst level; REAL recall 0.65 vs FAKE 0.95: real images are called AI.
    v = lim.shift_verdict(BASE, sweep_rows("jpeg", [0.80], rr=[0.65], rf=[0.95]), "jpeg")
    assert v.numbers["one_sided"] and "real images are called AI (recall of REAL 65.0%, of FAKE 95.0%)" in v.text
    v = lim.shift_verdict(BASE, sweep_rows("jpeg", [0.80], rr=[0.95], rf=[0.65]), "jpeg")
    assert "AI images pass as real (recall of FAKE 65.0%, of REAL 95.0%)" in v.text
    # A gap just under 0.10 is not one-sided; nor is any gap when accuracy holds.
    assert not lim.shift_verdict(BASE, sweep_rows("jpeg", [0.80], rr=[0.755], rf=[0.845]), "jpeg").numbers["one_sided"]
    assert not lim.shift_verdict(BASE, sweep_rows("jpeg", [0.89], rr=[0.6], rf=[1.0]), "jpeg").numbers["one_sided"]


def _split(acc, rf=0.9, gens="gen"):
    return {"split": "x", "accuracy": acc, "recall_FAKE": rf, "FAKE generator(s)": gens}


@pytest.mark.parametrize("test_acc, ood_acc, status", [(0.95, 0.70, "holds"), (0.95, 0.90, "holds"),
                                                      (0.95, 0.92, "holds weakly"), (0.95, 0.94, "not observed"),
                                                      (0.90, 0.97, "not observed")])
def test_bias_verdict_branches(test_acc, ood_acc, status):
    v = lim.bias_verdict(_split(test_acc), _split(ood_acc, rf=0.37, gens="vae"))
    assert v.status == status
    if status == "holds":
        assert f"from {100 * test_acc:.1f}% on test to {100 * ood_acc:.1f}% on ood" in v.text and "(vae)" in v.text
        assert "37.0%" in v.text
    assert lim.bias_not_tested(["test"]).status == "not tested"


def _preds(labels, probs, sources=None):
    n = len(labels)
    return pd.DataFrame({"path": [f"f{i}" for i in range(n)], "label": labels, "prob_fake": probs,
                         "source": sources or [""] * n})


def test_high_quality_verdict_and_sources():
    df = _preds([0, 1, 1, 1, 1], [0.1, 0.05, 0.3, 0.8, 0.95], ["p", "g1", "g1", "g2", "g2"])
    v = lim.high_quality_verdict(df, 0.5)
    assert v.status == "holds" and v.numbers == {"fakes": 4, "missed": 2, "share_missed": 0.5, "sure_real": 1,
                                                 "lowest_p_ai": 0.05}
    assert v.text == "Holds: 2 of 4 AI images (50.0%) are called REAL; the most convincing gets P(AI) 0.050."
    v = lim.high_quality_verdict(df, 0.04)
    assert v.status == "not observed" and "lowest P(AI) 0.050" in v.text
    assert lim.high_quality_verdict(_preds([0, 0], [0.2, 0.9]), 0.5) is None
    per = lim.fake_source_table(df, 0.5).set_index("source")
    assert per.loc["g1", "recall_FAKE"] == 0.0 and per.loc["g2", "recall_FAKE"] == 1.0
    assert per.loc["g2", "mean_p_ai"] == pytest.approx(0.875)
    assert lim.fake_source_table(_preds([1], [0.5]), 0.5) is None


def test_per_source_table_at_threshold():
    df = _preds([0, 0, 1, 1], [0.2, 0.6, 0.7, 0.4], ["a", "a", "g", "g"])
    per = lim.per_source_table(df, 0.5).set_index("source")
    assert per.loc["a", "accuracy"] == 0.5 and per.loc["g", "accuracy"] == 0.5 and per.loc["a", "label"] == "REAL"
    assert lim.per_source_table(df, 0.65).set_index("source").loc["a", "accuracy"] == 1.0


@pytest.mark.parametrize("conc, status", [(0.15, "holds"), (0.20, "holds partly"), (0.3, "holds partly"),
                                          (0.35, "does not hold"), (0.8, "does not hold")])
def test_gradcam_verdict_branches(conc, status):
    s = {"n": 10, "concentration_mean": conc, "drop_cam_mean": 0.30, "drop_random_mean": 0.05}
    v = lim.gradcam_verdict(s)
    assert v.status == status and v.numbers["hot_pixels_matter"]
    assert "The hot pixels do matter" in v.text and v.text.endswith("shows where, not why.")
    # Deletion margin: 0.02 more than random is not enough.
    v = lim.gradcam_verdict({**s, "drop_cam_mean": 0.07})
    assert not v.numbers["hot_pixels_matter"] and "no more than removing random ones (0.070 vs 0.050)" in v.text
    assert lim.gradcam_verdict({"n": 0}) is None


def test_confidence_verdict_branches_use_the_one_confidence():
    # threshold 0.3: p 0.25 -> REAL (confidence 0.75, wrong); 0.97 -> FAKE (0.97, wrong); 0.02 -> REAL (0.98,
    # wrong); 0.1 -> REAL (0.9, right); 0.4 -> FAKE (0.4, right; at 0.5 it would be a fourth error).
    df = _preds([1, 0, 1, 0, 1], [0.25, 0.97, 0.02, 0.1, 0.4])
    v = lim.confidence_verdict(df, 0.3)
    assert v.status == "holds" and v.numbers["errors"] == 3 and v.numbers["confident_errors"] == 2
    assert v.text == "Holds: 2 of 3 errors (66.7%) were made with confidence above 0.9."
    assert v.numbers["confident_calls"] == 2 and v.numbers["accuracy_of_confident_calls"] == 0.0
    assert lim.confidence_verdict(df, 0.5).numbers["errors"] == 4
    v = lim.confidence_verdict(_preds([0, 1], [0.6, 0.45]), 0.5)        # errors at 0.6 and 0.55 confidence
    assert v.status == "not observed" and v.text == "Not observed here: none of the 2 errors had confidence above 0.9."
    assert lim.confidence_verdict(_preds([1, 0], [0.9, 0.1]), 0.5).text == "Not observed here: no errors at this threshold."


def test_statuses_are_closed_and_table_shape():
    with pytest.raises(ValueError):
        Verdict("x", "probably", "text")
    t = lim.summary_table([lim.scope_verdict(), Verdict("A", "holds", "Holds: a.")])
    assert list(t.index) == ["Binary scope", "A"] and list(t.columns) == ["verdict"]
    assert lim.scope_verdict().status == "by design"


def test_stability_wrapper_maps_every_sentence(monkeypatch):
    import core.audits.stability as stab
    for text, status in (("Holds: x", "holds"), ("Holds weakly: x", "holds weakly"),
                         ("Not observed here: x", "not observed"), ("Not tested: x", "not tested")):
        monkeypatch.setattr(stab, "stability_verdict", lambda table, t=text: t)
        assert lim.stability_verdict(pd.DataFrame()).status == status
    monkeypatch.setattr(stab, "stability_verdict", lambda table: "Maybe")
    with pytest.raises(ValueError):
        lim.stability_verdict(pd.DataFrame())
