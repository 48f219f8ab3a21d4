"""One definition of confidence (core.metrics.metrics.confidence), checked by hand, and every number built on it:
confident errors, risk-coverage order, abstention; plus the confusion-cell helpers pages render."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core.metrics.metrics import (abstention, annotate_calls, classification_metrics, confidence, confusion_cells,
                          operating_point, reliability_bins, risk_coverage, row_shares)

P = np.array([0.02, 0.25, 0.45, 0.6, 0.95])
Y = np.array([1, 0, 1, 0, 1])


def test_confidence_is_the_probability_of_the_called_class():
    assert confidence(P, 0.5).tolist() == pytest.approx([0.98, 0.75, 0.55, 0.6, 0.95])     # = max(p, 1 - p)
    assert confidence(P, 0.5).tolist() == pytest.approx(np.maximum(P, 1 - P).tolist())
    # Threshold 0.3: 0.45 and 0.6 are called FAKE, so their confidence is P(AI) itself.
    assert confidence(P, 0.3).tolist() == pytest.approx([0.98, 0.75, 0.45, 0.6, 0.95])
    # Threshold 0.96: everything is called REAL.
    assert confidence(P, 0.96).tolist() == pytest.approx([0.98, 0.75, 0.55, 0.4, 0.05])


def test_confident_errors_follow_the_threshold():
    # t = 0.5: wrong are 0.02 and 0.45 (FAKE called REAL, conf 0.98 and 0.55) and 0.6 (REAL called FAKE, 0.6).
    m = classification_metrics(Y, P, 0.5)
    assert (m["errors"], m["errors_confidence_over_0.9"], m["confident_calls"]) == (3, 1, 2)
    assert m["accuracy_of_confident_calls"] == 0.5
    # t = 0.97: 0.95 is now a REAL call on a FAKE image with confidence 0.05; 0.02 still conf 0.98.
    m = classification_metrics(Y, P, 0.97)
    assert (m["errors"], m["errors_confidence_over_0.9"], m["confident_calls"]) == (3, 1, 1)
    # The max(p, 1 - p) definition would have counted 0.95 as a confident error at this threshold.
    assert int(((P >= 0.97) != Y)[np.maximum(P, 1 - P) > 0.9].sum()) == 2


def test_risk_coverage_uses_the_same_confidence():
    # t = 0.3: confidences [0.98, 0.75, 0.45, 0.6, 0.95] -> order 0.02, 0.95, 0.25, 0.6, 0.45.
    rc = risk_coverage(Y, P, 0.3)
    # correct?   0.02 no (FAKE called REAL), 0.95 yes, 0.25 yes, 0.6 no, 0.45 yes
    assert rc["accuracy"].tolist() == pytest.approx([0, 1 / 2, 2 / 3, 2 / 4, 3 / 5])
    # |p - t| would rank 0.95 first (0.65 from the threshold): a different curve.
    ab = abstention(Y, P, 0.3, 0.4)
    assert (ab["kept"], ab["accuracy_kept"], ab["accuracy_all"]) == (3, pytest.approx(2 / 3), pytest.approx(0.6))
    assert abstention(Y, P, 0.3, 0.99)["kept"] == 1 and abstention(Y, P, 0.3, 0.0)["kept"] == 5


def test_annotate_calls_and_reliability_use_it():
    df = pd.DataFrame({"label": Y, "prob_fake": P})
    a = annotate_calls(df, 0.3)
    assert a["called"].tolist() == [0, 0, 1, 1, 1] and a["correct"].tolist() == [False, True, True, False, True]
    assert a["confidence"].tolist() == pytest.approx(confidence(P, 0.3).tolist())
    assert "called" not in df                                        # input untouched
    bins = reliability_bins(Y, P, 5)                                 # bins of width 0.1 over [0.5, 1]
    assert [b["count"] for b in bins] == [1, 1, 1, 0, 2]
    assert bins[4]["accuracy"] == 0.5 and bins[4]["gap"] == pytest.approx(0.5 - (0.98 + 0.95) / 2)


def test_confusion_cells_shares_and_operating_point():
    cm = [[3, 1], [2, 4]]                                            # TN FP / FN TP
    cells = {c["cell"]: c for c in confusion_cells(cm)}
    assert {k: v["count"] for k, v in cells.items()} == {"TN": 3, "FP": 1, "FN": 2, "TP": 4}
    assert cells["FP"]["share_of_true_class"] == 0.25 and cells["FN"]["share_of_true_class"] == pytest.approx(1 / 3)
    assert row_shares(cm) == [[0.75, 0.25], [pytest.approx(1 / 3), pytest.approx(2 / 3)]]
    assert row_shares([[0, 0], [1, 1]])[0] == [0.0, 0.0]
    assert operating_point(cm) == {"fpr": 0.25, "tpr": pytest.approx(2 / 3), "precision": 0.8}
    assert operating_point([[0, 0], [0, 0]]) == {"fpr": None, "tpr": None, "precision": None}
