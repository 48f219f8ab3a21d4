"""Classification and calibration metrics on (labels, P(FAKE)) arrays; scikit-learn where it has them.

All functions take `y` int array (N,) of 0/1 (0 = REAL, 1 = FAKE) and `p` float array (N,) of
P(FAKE) in [0, 1]; none of them mutate their inputs.

Confidence has one definition, `confidence(p, threshold)`: the probability the model gives to the
class it calls at the threshold, P(AI) for images called FAKE and 1 - P(AI) for images called REAL.
Every page, the model cards, the Limitations verdicts and the risk-coverage curve use it. The
reliability diagram and ECE describe the probabilities themselves, so they use it at threshold 0.5,
where it is max(p, 1 - p), the usual definition (Guo et al. 2017).
"""
from __future__ import annotations

import math

import numpy as np
from sklearn import metrics as skm

from core.data.labels import CLASS_NAMES


HIGH_CONFIDENCE = 0.9    # "confident" calls: confidence above this (Limitations, cards, Calibration, Misclassifications)


def called_fake(p, threshold: float = 0.5) -> np.ndarray:
    """bool (N,): the class called at `threshold`, True = FAKE (P(FAKE) >= threshold)."""
    return np.asarray(p, dtype=np.float64) >= threshold


def confidence(p, threshold: float = 0.5) -> np.ndarray:
    """Confidence in the called class: P(FAKE) where it is >= threshold (called FAKE), else 1 - P(FAKE).

    float (N,) in [0, 1]; at threshold 0.5 it is max(p, 1 - p). Below 0.5 when the threshold calls a
    class the model itself finds less likely (e.g. threshold 0.3, P(FAKE) 0.4: called FAKE, confidence 0.4).
    """
    p = np.asarray(p, dtype=np.float64)
    return np.where(called_fake(p, threshold), p, 1 - p)


def _arrays(y, p):
    y = np.asarray(y, dtype=np.int64)
    p = np.asarray(p, dtype=np.float64)
    if y.shape != p.shape or y.ndim != 1:
        raise ValueError(f"y and p must be 1-D of equal length, got {y.shape} and {p.shape}")
    return y, p


def reliability_bins(y, p, n_bins: int = 10) -> list[dict]:
    """Equal-width confidence bins over [0.5, 1]: count, mean confidence, accuracy, gap (accuracy - confidence).

    Calibration of the probabilities themselves: `confidence` at threshold 0.5, i.e. max(p, 1-p).
    """
    y, p = _arrays(y, p)
    pred = called_fake(p, 0.5).astype(np.int64)
    conf = confidence(p, 0.5)
    correct = (pred == y).astype(np.float64)
    edges = np.linspace(0.5, 1.0, n_bins + 1)
    idx = np.clip(np.searchsorted(edges, conf, side="right") - 1, 0, n_bins - 1)
    out = []
    for b in range(n_bins):
        m = idx == b
        n = int(m.sum())
        acc, c = (float(correct[m].mean()), float(conf[m].mean())) if n else (float("nan"), float("nan"))
        out.append({"lo": float(edges[b]), "hi": float(edges[b + 1]), "count": n, "confidence": c,
                    "accuracy": acc, "gap": acc - c if n else None})
    return out


def expected_calibration_error(y, p, n_bins: int = 10) -> float:
    """ECE: sum over bins of (count/N) * |accuracy - mean confidence|, in [0, 1]."""
    bins = reliability_bins(y, p, n_bins)
    n = sum(b["count"] for b in bins)
    if n == 0:
        return float("nan")
    return float(sum(b["count"] / n * abs(b["accuracy"] - b["confidence"]) for b in bins if b["count"]))


def maximum_calibration_error(y, p, n_bins: int = 10) -> float:
    bins = [b for b in reliability_bins(y, p, n_bins) if b["count"]]
    return float(max(abs(b["accuracy"] - b["confidence"]) for b in bins)) if bins else float("nan")


def bootstrap_ece(y, p, n_bins: int = 10, n_boot: int = 200, alpha: float = 0.05, seed: int = 0) -> tuple[float, float]:
    """(lo, hi) percentile bootstrap interval of the ECE at level 1 - alpha."""
    y, p = _arrays(y, p)
    if len(y) == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    vals = [expected_calibration_error(y[i], p[i], n_bins)
            for i in (rng.integers(0, len(y), len(y)) for _ in range(n_boot))]
    return float(np.quantile(vals, alpha / 2)), float(np.quantile(vals, 1 - alpha / 2))


def classification_metrics(y, p, threshold: float = 0.5, n_bins: int = 10) -> dict:
    """Accuracy, per-class precision/recall/F1, ROC AUC, AP, ECE, MCE, Brier, confusion matrix, counts.

    The confusion matrix is [[TN, FP], [FN, TP]] with rows = true class (REAL, FAKE) and columns =
    predicted class; undefined quantities (one class absent) are None, never a crash.
    """
    y, p = _arrays(y, p)
    pred = (p >= threshold).astype(np.int64)
    n = len(y)
    out: dict = {"n": n, "threshold": threshold,
                 "counts": {CLASS_NAMES[k]: int((y == k).sum()) for k in (0, 1)}}
    if n == 0:
        return out
    cm = skm.confusion_matrix(y, pred, labels=[0, 1])
    out["confusion_matrix"] = cm.tolist()
    out["confusion_matrix_by_true_class"] = row_shares(cm.tolist())
    out["accuracy"] = float(skm.accuracy_score(y, pred))
    prec, rec, f1, sup = skm.precision_recall_fscore_support(y, pred, labels=[0, 1], zero_division=0)
    out["per_class"] = {CLASS_NAMES[k]: {"precision": float(prec[k]), "recall": float(rec[k]), "f1": float(f1[k]),
                                         "support": int(sup[k])} for k in (0, 1)}
    both = len(np.unique(y)) == 2
    out["roc_auc"] = float(skm.roc_auc_score(y, p)) if both else None
    out["average_precision"] = float(skm.average_precision_score(y, p)) if both else None
    out["ece"] = expected_calibration_error(y, p, n_bins)
    out["mce"] = maximum_calibration_error(y, p, n_bins)
    out["brier"] = float(skm.brier_score_loss(y, p, pos_label=1)) if n else None
    out["log_loss"] = float(skm.log_loss(y, np.clip(p, 1e-7, 1 - 1e-7), labels=[0, 1]))
    wrong = pred != y
    sure = confidence(p, threshold) > HIGH_CONFIDENCE
    out["errors"] = int(wrong.sum())
    out["errors_confidence_over_0.9"] = int((wrong & sure).sum())
    out["share_of_errors_confidence_over_0.9"] = float((wrong & sure).sum() / wrong.sum()) if wrong.any() else None
    out["confident_calls"] = int(sure.sum())
    out["accuracy_of_confident_calls"] = float((~wrong[sure]).mean()) if sure.any() else None
    return out


def annotate_calls(df, threshold: float):
    """A copy of a predictions table (columns label, prob_fake) with the calls at `threshold` added:
    called (0/1), correct (bool), confidence (`confidence`). Pages filter and sort on these."""
    out = df.copy()
    p = out["prob_fake"].to_numpy(dtype=np.float64)
    out["called"] = called_fake(p, threshold).astype(np.int64)
    out["correct"] = out["called"].to_numpy() == out["label"].to_numpy()
    out["confidence"] = confidence(p, threshold)
    return out


CELLS = {  # confusion cell -> (true label, called label, plain meaning)
    "TN": (0, 0, "REAL called REAL"), "FP": (0, 1, "REAL called FAKE"),
    "FN": (1, 0, "FAKE called REAL"), "TP": (1, 1, "FAKE called FAKE"),
}


def confusion_cells(cm) -> list[dict]:
    """Rows cell, meaning, true, predicted, count, share_of_true_class from a [[TN, FP], [FN, TP]] matrix.

    share_of_true_class is the count over its row (e.g. FP / all REAL); None for an empty row.
    """
    rows = []
    for cell, (t, c, meaning) in CELLS.items():
        row_total = sum(cm[t])
        rows.append({"cell": cell, "meaning": meaning, "true": CLASS_NAMES[t], "predicted": CLASS_NAMES[c],
                     "count": int(cm[t][c]), "share_of_true_class": cm[t][c] / row_total if row_total else None})
    return rows


def row_shares(cm) -> list[list[float]]:
    """The confusion matrix divided by its row totals (each true class sums to 1; an empty row stays 0)."""
    out = []
    for row in cm:
        total = sum(row)
        out.append([v / total if total else 0.0 for v in row])
    return out


def operating_point(cm) -> dict:
    """The threshold's point on the ROC and PR curves from [[TN, FP], [FN, TP]]: fpr, tpr (= recall of
    FAKE) and precision of FAKE; None where the denominator is 0."""
    (tn, fp), (fn, tp) = cm
    return {"fpr": fp / (fp + tn) if fp + tn else None, "tpr": tp / (tp + fn) if tp + fn else None,
            "precision": tp / (tp + fp) if tp + fp else None}


def abstention(y, p, threshold: float, abstain_fraction: float) -> dict:
    """Answer only the most confident (1 - abstain_fraction) of the calls (`risk_coverage` order).

    Returns kept (images answered, at least 1), coverage, accuracy_kept and accuracy_all.
    """
    y, p = _arrays(y, p)
    if len(y) == 0:
        raise ValueError("no predictions")
    rc = risk_coverage(y, p, threshold)
    kept = max(1, int(math.ceil(round((1 - abstain_fraction) * len(y), 9))))
    return {"kept": kept, "coverage": kept / len(y), "accuracy_kept": float(rc["accuracy"][kept - 1]),
            "accuracy_all": float(rc["accuracy"][-1])}


def roc_curve(y, p) -> dict:
    y, p = _arrays(y, p)
    fpr, tpr, thr = skm.roc_curve(y, p)
    return {"fpr": fpr, "tpr": tpr, "thresholds": thr}


def tpr_at_fpr(y, p, max_fpr: float = 0.05) -> float:
    """Highest true-positive rate (FAKE recall) at a threshold whose false-positive rate is <= max_fpr."""
    y, p = _arrays(y, p)
    fpr, tpr, _ = skm.roc_curve(y, p)
    ok = fpr <= max_fpr + 1e-12
    return float(tpr[ok].max()) if ok.any() else 0.0


def pr_curve(y, p) -> dict:
    y, p = _arrays(y, p)
    prec, rec, thr = skm.precision_recall_curve(y, p)
    return {"precision": prec, "recall": rec, "thresholds": thr}


def risk_coverage(y, p, threshold: float = 0.5) -> dict:
    """Accuracy when the model may abstain on its least confident calls (`confidence` at `threshold`).

    Returns arrays `coverage` (fraction kept, from 1/N to 1) and `accuracy` (on the kept part),
    most confident first (ties keep their input order). AURC-style summaries can be computed from them.
    """
    y, p = _arrays(y, p)
    order = np.argsort(-confidence(p, threshold), kind="stable")
    correct = (called_fake(p, threshold).astype(np.int64) == y)[order].astype(np.float64)
    k = np.arange(1, len(y) + 1)
    return {"coverage": k / len(y), "accuracy": np.cumsum(correct) / k}


def apply_temperature(logits, temperature: float) -> np.ndarray:
    """P(FAKE) = sigmoid(logit / T)."""
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    return 1.0 / (1.0 + np.exp(-z))


def fit_temperature(logits, y, bounds: tuple[float, float] = (0.05, 20.0)) -> float:
    """The T > 0 minimising the negative log-likelihood of sigmoid(logit / T) (golden-section on log T).

    NLL in log T is unimodal for a binary logistic model, so a bracketed 1-D search is exact enough
    (tolerance 1e-4 in log T) and needs no optimiser state.
    """
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)

    def nll(log_t):
        s = z / math.exp(log_t)
        # log(1 + e^-s) for y=1, log(1 + e^s) for y=0, computed stably
        return float(np.mean(np.logaddexp(0, -s) * y + np.logaddexp(0, s) * (1 - y)))

    a, b = math.log(bounds[0]), math.log(bounds[1])
    g = (math.sqrt(5) - 1) / 2
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = nll(c), nll(d)
    while b - a > 1e-4:
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = nll(c)
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = nll(d)
    return float(math.exp((a + b) / 2))


def fit_platt(logits, y, t_bounds: tuple[float, float] = (0.05, 20.0)) -> tuple[float, float]:
    """Platt scaling: the (T, b) minimising the negative log-likelihood of sigmoid(logit / T + b).

    A one-feature logistic regression, s = a * logit + c with T = 1 / a and b = c, fitted by Newton's
    method with step halving (the NLL is convex in (a, c)). T is kept within `t_bounds` (a model whose
    calibration logits separate the classes perfectly has no finite optimum); at a bound, b alone is
    refitted. Returns (T, b); P(FAKE) = sigmoid(logit / T + b), so a model's logit shifted by b * T and
    divided by T gives the calibrated probability.
    """
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if len(z) == 0 or len(np.unique(y)) < 2:
        raise ValueError("Platt scaling needs calibration images of both classes")
    lo, hi = 1.0 / t_bounds[1], 1.0 / t_bounds[0]

    def nll(a, c):
        s = a * z + c
        return float(np.mean(np.logaddexp(0, s) - y * s))

    def newton(a, c, fix_a: bool):
        f = nll(a, c)
        for _ in range(100):
            s = a * z + c
            p = 1.0 / (1.0 + np.exp(-s))
            w = p * (1 - p) + 1e-12
            g = np.array([np.mean((p - y) * z), np.mean(p - y)])
            if fix_a:
                step = np.array([0.0, g[1] / np.mean(w)])
            else:
                h = np.array([[np.mean(w * z * z), np.mean(w * z)], [np.mean(w * z), np.mean(w)]])
                step = np.linalg.solve(h + 1e-12 * np.eye(2), g)
            k = 1.0
            while k > 1e-8:
                na, nc = a - k * step[0], c - k * step[1]
                if (fix_a or lo <= na <= hi) and nll(na, nc) <= f:
                    break
                k /= 2
            else:
                return a, c, False
            a, c, f_new = na, nc, nll(na, nc)
            if f - f_new < 1e-12 and np.abs(step).max() * k < 1e-10:
                return a, c, True
            f = f_new
        return a, c, True

    a, c, ok = newton(min(max(1.0, lo), hi), 0.0, fix_a=False)
    if not ok or not lo <= a <= hi:                  # the optimum lies beyond a bound: T at the bound, b refitted
        a = min(max(a, lo), hi)
        a, c, _ = newton(a, c, fix_a=True)
    return float(1.0 / a), float(c)


def temperature_scaling_split(logits, y, fit_fraction: float = 0.5, seed: int = 0, n_bins: int = 10,
                              current_temperature: float = 1.0) -> dict:
    """Fit a temperature on a seeded random `fit_fraction` of (logits, y); measure before/after on the rest.

    logits: raw logits (N,) (before any temperature); y: 0/1 (N,). "Before" uses
    `current_temperature` (the checkpoint's own T), "after" the fitted T (also relative to raw logits). Returns {"temperature", "fit_idx", "eval_idx", "before", "after"}
    where before/after hold ece, mce, brier, log_loss and reliability `bins` on the evaluation part.
    The split is stratified by class so both parts keep the class balance.
    """
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64)
    rng = np.random.default_rng(seed)
    fit_idx, eval_idx = [], []
    for k in (0, 1):
        idx = rng.permutation(np.flatnonzero(y == k))
        cut = int(round(fit_fraction * len(idx)))
        fit_idx.append(idx[:cut])
        eval_idx.append(idx[cut:])
    fit_idx, eval_idx = np.sort(np.concatenate(fit_idx)), np.sort(np.concatenate(eval_idx))
    if len(fit_idx) == 0 or len(eval_idx) == 0:
        raise ValueError("both the fitting part and the evaluation part need at least one image")
    t = fit_temperature(z[fit_idx], y[fit_idx])

    def report(temp):
        p = apply_temperature(z[eval_idx], temp)
        yy = y[eval_idx]
        return {"temperature": temp, "ece": expected_calibration_error(yy, p, n_bins),
                "mce": maximum_calibration_error(yy, p, n_bins),
                "brier": float(np.mean((p - yy) ** 2)),
                "log_loss": float(skm.log_loss(yy, np.clip(p, 1e-7, 1 - 1e-7), labels=[0, 1])),
                "bins": reliability_bins(yy, p, n_bins)}

    return {"temperature": t, "fit_idx": fit_idx, "eval_idx": eval_idx, "before": report(float(current_temperature)),
            "after": report(t)}
