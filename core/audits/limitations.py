"""The Limitations audit: every limitation the seed project documented, tested, with a verdict computed
from the numbers. The Limitations page renders these verdicts; this module computes them.

    python -m core limitations --weights weights/default.pt --data data/sample/test
    python -m core limitations --weights W --data /data/cifake --split test --sample data/sample --threshold 0.4

prints the page's summary table (one verdict per limitation). Each verdict is a `Verdict`: the
limitation, a status from a closed set (STATUSES), the sentence shown, and the numbers it was
computed from. The cut-offs between statuses are the named constants below, nowhere else.

Inputs, as on the page: the robustness sweep of the evaluation data (core.audits.robustness, at threshold
0.5: it stores summary numbers per level), its evaluation at the threshold, the verdict-stability
battery (core.audits.stability), the sample's `test` and `ood` splits for the unseen-generator test, and a
Grad-CAM audit of up to AUDIT_IMAGES images. Everything is stored under runs/ as in the app. On data
larger than SWEEP_MAX_IMAGES / STABILITY_MAX_IMAGES the sweep and the stability battery run on a seeded,
label-stratified subsample, and their rates carry 95% Wilson intervals; the Grad-CAM audit's means carry t
intervals. The verdicts state the intervals, and the CLI ends with the subsample sizes (subsample_note).
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from core.data.labels import CLASS_NAMES
from core.metrics.metrics import HIGH_CONFIDENCE, annotate_calls, classification_metrics

# ----------------------------------------------------------------------------- cut-offs
SHIFT_HOLDS_DROP = 0.05        # accuracy lost at a shift's worst level for "holds" (5 points)
SHIFT_WEAK_DROP = 0.02         # ... for "holds weakly"; below this: "not observed"
ONE_SIDED_RECALL_GAP = 0.10    # recall gap between the classes at the worst level that makes the errors one-sided
BIAS_HOLDS_DROP = 0.05         # accuracy lost from `test` to `ood` for "holds"
NEW_CONTENT_WRONG = 0.10       # a probe domain's share wrong and not UNSURE above which new content "holds"
NEW_CONTENT_REAL_UNSURE = 0.30  # the probe's REAL images' UNSURE share above which it "holds weakly"
BIAS_WEAK_DROP = 0.02          # ... for "holds weakly"
HQ_SURE_REAL = 0.1             # P(AI) below this: an AI image the model is sure is real
CAM_DIFFUSE = 0.20             # Grad-CAM concentration (heat share of the hottest 10%) below this: diffuse
CAM_LOOSE = 0.35               # ... below this: a loose focus; at or above: concentrated
CAM_DELETION_MARGIN = 0.02     # removing hot pixels must drop P(called class) by this much more than random ones
AUDIT_IMAGES = 200             # images in the Grad-CAM audit (a seeded random subsample; means with t intervals)
STABILITY_MAX_IMAGES = 200     # the stability battery (8 re-encodings per image) runs on a seeded stratified
                               # subsample of this many images when the data is larger (Wilson intervals shown);
                               # the sweep does the same (core.audits.robustness.SWEEP_MAX_IMAGES)
# Forward passes per image of each test (the Grad-CAM audit: the maps' forward + backward, counted as 2, and the
# deletion test's two forwards), and the budget the page's first view is sized for: FIRST_VIEW_FORWARDS at the
# shipped model's fused ~1,100 img/s on 2 cores is about 10 s (README "First views"). 500 images each were
# about 24,000 forwards and a 44 s first view.
FORWARDS_PER_IMAGE = {"sweep": 36, "stability": 9, "gradcam": 4}
FIRST_VIEW_FORWARDS = 11_000
AUDIT_TOP = 0.1                # the "hottest pixels" fraction of the audit

STATUSES = ("holds", "holds weakly", "holds partly", "does not hold", "not observed", "not tested", "by design")

SEED = "AI-Generated vs Real Image Classification (seed README, 'Limitations')"
CLAIMS = {
    "hq": "Sensitivity to High-Quality AI Images: Modern AI-generated images can be highly realistic and lack "
          "obvious artifacts. In these cases, the model may misclassify AI images as real because it relies on "
          "global texture consistency rather than explicit synthetic indicators.",
    "bias": "Dataset Bias and Generalization: The model is trained on a specific dataset and may learn "
            "dataset-dependent patterns. Performance can degrade when evaluated on images from unseen sources or "
            "newer generative models.",
    "cam": "Limited Grad-CAM Interpretability: Grad-CAM highlights regions that influence predictions but does not "
           "explain the underlying reasoning. Activations are often distributed across the image, making it "
           "difficult to isolate specific features driving the decision.",
    "shift": "Sensitivity to Preprocessing Changes: Accuracy may fluctuate when images are converted to grayscale "
             "or undergo distribution shifts, indicating partial reliance on color-based cues.",
    "scope": "Binary Classification Scope: The model only distinguishes between AI-generated and real images and "
             "does not identify the source model, detect partial manipulations, or assess confidence in "
             "authenticity beyond a single score.",
    "conf": "Confidence vs. Correctness: High confidence predictions do not always correspond to correct "
            "classifications, particularly for visually ambiguous images. The model should be used as a "
            "decision-support tool rather than a definitive detector.",
}
# The shifts of the preprocessing section, grouped and ordered as the page shows them.
SHIFT_FAMILIES = {
    "Grayscale and colour (saturation, hue)": ("grayscale", "saturation", "hue"),
    "JPEG quality": ("jpeg",),
    "Blur": ("blur",),
    "Noise": ("noise",),
    "Downscaling": ("downscale",),
    "Brightness and contrast": ("brightness", "contrast"),
}


@dataclass(frozen=True)
class Verdict:
    limitation: str
    status: str                  # one of STATUSES
    text: str                    # the sentence the page shows
    numbers: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.status not in STATUSES:
            raise ValueError(f"unknown status {self.status!r}")


def _points(diff: float) -> float:
    """An accuracy difference rounded to 1e-9, so that a drop of exactly a cut-off (0.95 - 0.90) meets it."""
    return round(float(diff), 9)


def pct(v) -> str:
    return "n/a" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{100 * v:.1f}%"


def level_text(name: str, level: float) -> str:
    return {"grayscale": f"grayscale {level:.0%}", "jpeg": f"JPEG quality {level:g}", "blur": f"blur sigma {level:g}",
            "noise": f"noise std {level:g}/255", "downscale": f"downscaling x{level:g}",
            "brightness": f"brightness x{level:g}", "contrast": f"contrast x{level:g}",
            "saturation": f"saturation x{level:g}", "hue": f"hue rotated {level:g} turn"}.get(name, f"{name} {level:g}")


# ----------------------------------------------------------------------------- verdicts from numbers

def shift_verdict(base: dict, rows: pd.DataFrame, name: str) -> Verdict:
    """How far accuracy falls at a shift's worst level, and for which class.

    base: the sweep's clean row (accuracy); rows: the sweep rows of this shift (level, accuracy,
    recall_REAL, recall_FAKE).
    """
    worst = rows.loc[rows["accuracy"].idxmin()]
    a0, aw = float(base["accuracy"]), float(worst["accuracy"])
    where = level_text(name, float(worst["level"]))
    drop = _points(a0 - aw)
    if drop >= SHIFT_HOLDS_DROP:
        status, s = "holds", f"Holds: accuracy falls from {pct(a0)} to {pct(aw)} at {where}."
    elif drop >= SHIFT_WEAK_DROP:
        status, s = "holds weakly", f"Holds weakly: accuracy falls from {pct(a0)} to {pct(aw)} at {where}."
    else:
        status, s = "not observed", (f"Not observed here: accuracy stays within {SHIFT_WEAK_DROP * 100:g} points of "
                                     f"{pct(a0)} (lowest {pct(aw)}, at {where}).")
    ci = _interval_sentence(base, worst)
    s += ci
    rr, rf = float(worst["recall_REAL"]), float(worst["recall_FAKE"])
    one_sided = drop >= SHIFT_WEAK_DROP and abs(rr - rf) >= ONE_SIDED_RECALL_GAP
    if one_sided:
        if rr < rf:
            s += f" The errors are one-sided: real images are called AI (recall of REAL {pct(rr)}, of FAKE {pct(rf)})."
        else:
            s += f" The errors are one-sided: AI images pass as real (recall of FAKE {pct(rf)}, of REAL {pct(rr)})."
    return Verdict(f"Preprocessing: {name}", status, s,
                   {"clean_accuracy": a0, "worst_accuracy": aw, "worst_level": float(worst["level"]), "drop": drop,
                    "recall_REAL": rr, "recall_FAKE": rf, "one_sided": one_sided})


def _interval_sentence(base, worst) -> str:
    """" On 200 of 3,000 images: 95% intervals ..." for sweep rows that carry Wilson intervals, else ""."""
    def band(r):
        lo, hi = r.get("accuracy_ci_low"), r.get("accuracy_ci_high")
        ok = lo is not None and hi is not None and not (np.isnan(lo) or np.isnan(hi))
        return f"{pct(lo)}-{pct(hi)}" if ok else None
    b0, bw = band(dict(base)), band(dict(worst))
    if b0 is None or bw is None:
        return ""
    n, n_total = worst.get("n"), worst.get("n_total")
    on = (f"On a stratified subsample of {int(n):,} of {int(n_total):,} images, the" if n is not None and
          n_total is not None and int(n) < int(n_total) else "The")
    return f" {on} 95% intervals are {b0} (clean) and {bw} (worst level)."


def probe_of(sample_dir) -> str:
    """The new-content probe beside the sample (data/new_content/probe for data/sample)."""
    return str(Path(sample_dir).parent / "new_content" / "probe")


def split_row(split: str, df: pd.DataFrame, threshold: float) -> dict:
    """One row of the unseen-generator table: a split's metrics at the threshold and its FAKE generators."""
    m = classification_metrics(df["label"].to_numpy(), df["prob_fake"].to_numpy(), threshold)
    fakes = ", ".join(sorted(set(df.loc[df["label"] == 1, "source"].astype(str)) - {""})) or "n/a"
    has = m["n"] > 0
    return {"split": split, "images": m["n"], "accuracy": m.get("accuracy"), "roc_auc": m.get("roc_auc"),
            "ece": m.get("ece"), "recall_REAL": m["per_class"]["REAL"]["recall"] if has else None,
            "recall_FAKE": m["per_class"]["FAKE"]["recall"] if has else None,
            "mean P(AI) of FAKE": float(df.loc[df["label"] == 1, "prob_fake"].mean()) if (df["label"] == 1).any() else None,
            "FAKE generator(s)": fakes}


def bias_verdict(test: dict, ood: dict) -> Verdict:
    """From the `split_row`s of the seen (`test`) and unseen (`ood`) splits."""
    drop = _points((test["accuracy"] or 0) - (ood["accuracy"] or 0))
    if drop >= BIAS_HOLDS_DROP:
        status, v = "holds", (f"Holds: accuracy falls from {pct(test['accuracy'])} on test to {pct(ood['accuracy'])} on "
                              f"ood; recall of FAKE from {pct(test['recall_FAKE'])} to {pct(ood['recall_FAKE'])} on the "
                              f"unseen generator ({ood['FAKE generator(s)']}).")
    elif drop >= BIAS_WEAK_DROP:
        status, v = "holds weakly", (f"Holds weakly: accuracy falls from {pct(test['accuracy'])} on test to "
                                     f"{pct(ood['accuracy'])} on ood.")
    else:
        status, v = "not observed", (f"Not observed on this sample: accuracy {pct(test['accuracy'])} on test vs "
                                     f"{pct(ood['accuracy'])} on ood. The sample's generators are weak; this says "
                                     "nothing about modern generators.")
    return Verdict("Dataset bias / unseen generators", status, v,
                   {"test_accuracy": test["accuracy"], "ood_accuracy": ood["accuracy"], "drop": drop})


def new_content_verdict(summary: dict, probe: str) -> Verdict:
    """From the new-content probe's summary (core.audits.new_content): does the verdict hold on content the
    training data lacks? Holds (the limitation) when some domain has more than NEW_CONTENT_WRONG of its images
    wrong and not UNSURE; holds weakly when none has, but only by calling more than NEW_CONTENT_REAL_UNSURE of
    the REAL images UNSURE."""
    worst, real = summary["worst_wrong_decided"], summary["real_unsure"]
    facts = (f"on the new-content probe ({probe}): worst domain {summary['worst_domain']} {pct(worst)} wrong and not "
             f"UNSURE, REAL images UNSURE {pct(real)}, ROC AUC {summary['auc']:.3f}" if summary["auc"] is not None
             else f"on the new-content probe ({probe}): worst domain {summary['worst_domain']} {pct(worst)} wrong "
                  f"and not UNSURE, REAL images UNSURE {pct(real)}")
    if worst > NEW_CONTENT_WRONG:
        status, v = "holds", f"Holds {facts}: on content it never saw, the model is confidently wrong."
    elif real is not None and real > NEW_CONTENT_REAL_UNSURE:
        status, v = "holds weakly", f"Holds weakly {facts}: few confident errors, but by abstaining on many real images."
    else:
        status, v = "not observed", (f"Not observed {facts}. The probe's domains are small and made here; new "
                                     "content elsewhere may still fool it.")
    return Verdict("Dataset bias / new content", status, v,
                   {"worst_domain": summary["worst_domain"], "worst_wrong_decided": worst, "real_unsure": real,
                    "auc": summary["auc"]})


def bias_not_tested(found: list[str]) -> Verdict:
    return Verdict("Dataset bias", "not tested", "Not tested: no ood split available.", {"splits": list(found)})


def per_source_table(df: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """Images, accuracy and mean P(AI) per (source, true class) at the threshold."""
    d = annotate_calls(df, threshold)
    per = d.groupby(["source", "label"]).agg(images=("path", "size"), accuracy=("correct", "mean"),
                                             mean_p_ai=("prob_fake", "mean")).reset_index()
    per["label"] = per["label"].map(lambda v: CLASS_NAMES[int(v)])
    return per


def high_quality_verdict(df: pd.DataFrame, threshold: float) -> Verdict | None:
    """AI images that pass as real at the threshold; None when the data has no FAKE images."""
    fakes = df[df["label"] == 1]["prob_fake"]
    if fakes.empty:
        return None
    missed, sure, lowest = int((fakes < threshold).sum()), int((fakes < HQ_SURE_REAL).sum()), float(fakes.min())
    n = len(fakes)
    if missed:
        status, v = "holds", (f"Holds: {missed:,} of {n:,} AI images ({pct(missed / n)}) are called REAL; the most "
                              f"convincing gets P(AI) {lowest:.3f}.")
    else:
        status, v = "not observed", (f"Not observed here: every AI image is caught (lowest P(AI) {lowest:.3f}); the "
                                     "evaluation set may not contain high-quality AI images.")
    return Verdict("High-quality AI images", status, v,
                   {"fakes": n, "missed": missed, "share_missed": missed / n, "sure_real": sure, "lowest_p_ai": lowest})


def fake_source_table(df: pd.DataFrame, threshold: float) -> pd.DataFrame | None:
    """Recall of FAKE and mean P(AI) per generator (source of the FAKE images); None without sources."""
    fakes = df[df["label"] == 1]
    if fakes.empty or not fakes["source"].astype(str).ne("").any():
        return None
    return fakes.assign(caught=fakes["prob_fake"] >= threshold).groupby("source").agg(
        images=("path", "size"), recall_FAKE=("caught", "mean"), mean_p_ai=("prob_fake", "mean")).reset_index()


def gradcam_verdict(summary: dict) -> Verdict | None:
    """From core.audits.robustness.gradcam_audit's summary (concentration, deletion-test drops); None when empty."""
    if not summary.get("n"):
        return None
    conc, dc, dr = summary["concentration_mean"], summary["drop_cam_mean"], summary["drop_random_mean"]
    if conc < CAM_DIFFUSE:
        status, v = "holds", f"Holds: the maps are diffuse; the hottest 10% of pixels hold {pct(conc)} of the heat (10% if uniform)."
    elif conc < CAM_LOOSE:
        status, v = "holds partly", (f"Holds partly: the hottest 10% of pixels hold {pct(conc)} of the heat (10% if "
                                     "uniform), a loose focus.")
    else:
        status, v = "does not hold", (f"Does not hold as stated: the maps are concentrated; the hottest 10% of pixels "
                                      f"hold {pct(conc)} of the heat.")
    matters = dc > dr + CAM_DELETION_MARGIN
    if matters:
        v += (f" The hot pixels do matter: removing them lowers the called class's probability by {dc:.3f} against "
              f"{dr:.3f} for random pixels.")
    else:
        v += (f" Removing the hottest pixels changes the prediction no more than removing random ones ({dc:.3f} vs "
              f"{dr:.3f}): the map does not single out what the decision rests on.")
    cc, gc = summary.get("concentration_ci"), summary.get("drop_gap_ci")
    if cc and gc:
        v += (f" On {summary['n']:,} images, 95% intervals: concentration {pct(cc[0])}-{pct(cc[1])}; difference of "
              f"the two drops {gc[0]:.3f} to {gc[1]:.3f}.")
    v += " Either way a heat map shows where, not why."
    return Verdict("Grad-CAM interpretability", status, v,
                   {"concentration": conc, "drop_cam": dc, "drop_random": dr, "hot_pixels_matter": matters,
                    "images": summary["n"], "concentration_ci": cc, "drop_gap_ci": gc})


def confidence_verdict(df: pd.DataFrame, threshold: float) -> Verdict:
    """Errors made with confidence above HIGH_CONFIDENCE (core.metrics.metrics.confidence) at the threshold."""
    m = classification_metrics(df["label"].to_numpy(), df["prob_fake"].to_numpy(), threshold)
    errors, hi = m.get("errors", 0), m.get("errors_confidence_over_0.9", 0)
    if errors == 0:
        status, v = "not observed", "Not observed here: no errors at this threshold."
    elif hi:
        status, v = "holds", f"Holds: {hi:,} of {errors:,} errors ({pct(hi / errors)}) were made with confidence above {HIGH_CONFIDENCE}."
    else:
        status, v = "not observed", f"Not observed here: none of the {errors:,} errors had confidence above {HIGH_CONFIDENCE}."
    return Verdict("Confidence vs correctness", status, v,
                   {"errors": errors, "confident_errors": hi, "confident_calls": m.get("confident_calls", 0),
                    "accuracy_of_confident_calls": m.get("accuracy_of_confident_calls"), "images": m["n"]})


def unsure_table(frames, threshold: float) -> pd.DataFrame:
    """Confidence vs correctness without and with the UNSURE verdict, one row per evaluation.

    frames: [(name, predictions DataFrame (label, prob_fake, logit[, familiarity]), VerdictModel or None,
    temperature)]. Shares are of ALL images of the row: confidently wrong (confidence > HIGH_CONFIDENCE,
    no UNSURE) against wrong and not UNSURE.
    """
    from core.verdict.verdict import verdict_summary
    rows = []
    for name, df, vm, temp in frames:
        if df is None or df.empty:
            continue
        y, p, z = df["label"].to_numpy(), df["prob_fake"].to_numpy(), df["logit"].to_numpy()
        fam = df["familiarity"].to_numpy(np.float64) if "familiarity" in df else None
        fam = None if fam is None or np.isnan(fam).all() else fam
        m = classification_metrics(y, p, threshold)
        v = verdict_summary(y, z, fam, vm, threshold, temp)
        n = max(m["n"], 1)
        rows.append({"evaluation": name, "images": m["n"], "accuracy": m["accuracy"],
                     f"wrong, confidence > {HIGH_CONFIDENCE}": m.get("errors_confidence_over_0.9", 0) / n,
                     "UNSURE": v["share_unsure"], "wrong, not UNSURE": v["share_wrong_decided"],
                     "errors caught by UNSURE": v["errors_caught_by_unsure"],
                     "accuracy when decided": v["accuracy_decided"]})
    return pd.DataFrame(rows)


def scope_verdict() -> Verdict:
    return Verdict("Binary scope", "by design", (
        "Holds by design, no test possible: the model outputs one number, P(AI). It cannot say which generator "
        "made an image, cannot locate a partial edit (an inpainted region, a pasted face), cannot tell "
        "'AI-edited photo' from 'AI-generated image', and its P(AI) is only as trustworthy as its calibration on "
        "data like yours (see Calibration). Grad-CAM shows where the evidence sits, not a manipulation mask."))


def stability_verdict(table: pd.DataFrame) -> Verdict:
    """core.audits.stability's flip-rate verdict (its own cut-offs and wording) as a structured Verdict."""
    from core.audits.stability import stability_verdict as sentence
    text = sentence(table)
    status = next((s for prefix, s in (("Holds weakly", "holds weakly"), ("Holds", "holds"),
                                       ("Not observed", "not observed"), ("Not tested", "not tested"))
                   if text.startswith(prefix)), None)
    if status is None:
        raise ValueError(f"core.audits.stability gave a verdict outside the known statuses: {text!r}")
    return Verdict("Verdict stability", status, text)


def summary_table(verdicts: list[Verdict]) -> pd.DataFrame:
    """The page's summary: one row per limitation, indexed by it, with its verdict sentence."""
    return pd.DataFrame([{"limitation": v.limitation, "verdict": v.text} for v in verdicts]).set_index("limitation")


def shift_verdicts(sweep: pd.DataFrame) -> list[Verdict]:
    """One verdict per swept shift, in SHIFT_FAMILIES order."""
    base = sweep[sweep["shift"] == "none"].iloc[0].to_dict()
    out = []
    for names in SHIFT_FAMILIES.values():
        for name in names:
            rows = sweep[sweep["shift"] == name].sort_values("level")
            if not rows.empty:
                out.append(shift_verdict(base, rows, name))
    return out


# ----------------------------------------------------------------------------- the whole audit

def subsample_sizes(n_images: int) -> dict:
    """Images each forward-bound test of the page runs on, for a dataset of n_images (the stated subsamples)."""
    from core.audits.robustness import SWEEP_MAX_IMAGES
    return {"sweep": min(n_images, SWEEP_MAX_IMAGES), "stability": min(n_images, STABILITY_MAX_IMAGES),
            "gradcam": min(n_images, AUDIT_IMAGES)}


def first_view_forwards(n_images: int) -> int:
    """Forward passes of the page's sweep, stability battery and Grad-CAM audit on n_images (FORWARDS_PER_IMAGE)."""
    return sum(FORWARDS_PER_IMAGE[k] * v for k, v in subsample_sizes(n_images).items())


def subsample_note(n_images: int) -> str:
    """The sentence the page and the CLI print about the subsamples the tests run on."""
    z = subsample_sizes(n_images)
    if min(z.values()) >= n_images:
        head = (f"The robustness sweep, the stability battery and the Grad-CAM audit run on all {n_images:,} images; "
                "their")
    else:
        head = (f"Of this dataset's {n_images:,} images, the robustness sweep runs on {z['sweep']:,} (seeded, "
                f"stratified by label), the stability battery on {z['stability']:,} (the same way) and the Grad-CAM "
                f"audit on {z['gradcam']:,} (seeded random); their")
    return (f"{head} accuracies, rates and means come with 95% intervals. About {first_view_forwards(n_images):,} "
            "forward passes in all.")


def audit(lm, ds, threshold: float = 0.5, sample_dir="data/sample", runs_dir="runs", log=None) -> list[Verdict]:
    """Every verdict of the Limitations page, in its order, for model `lm` on dataset `ds` at `threshold`.

    Uses (and fills) the same runs/ caches as the app: evaluations, the sweep and the stability battery.
    """
    from core.data.datasets import cifake_splits, open_dataset
    from core.inference.evaluate import cached_evaluation
    from core.audits.robustness import cached_gradcam_audit, cached_sweep
    from core.audits.stability import cached_dataset_stability, flip_table
    say = log or (lambda *a: None)
    verdicts: list[Verdict] = []
    df = cached_evaluation(lm, ds, runs_dir)[0]
    if df.empty:
        raise ValueError("no image of this dataset could be decoded")
    say("robustness sweep")
    sweep = cached_sweep(lm, ds, runs_dir)
    if not sweep.empty:
        verdicts += shift_verdicts(sweep)
    say("stability battery")
    stab = cached_dataset_stability(lm, ds, runs_dir, max_images=STABILITY_MAX_IMAGES)
    if stab is not None and not stab.empty:
        verdicts.append(stability_verdict(flip_table(stab, threshold)))
    splits = cifake_splits(sample_dir)
    if {"test", "ood"} <= set(splits):
        say("sample test and ood splits")
        rows = [split_row(s, cached_evaluation(lm, open_dataset(sample_dir, split=s), runs_dir)[0], threshold)
                for s in ("test", "ood")]
        verdicts.append(bias_verdict(*rows))
    else:
        verdicts.append(bias_not_tested(splits))
    from core.audits.new_content import evaluate_new_content, probe_available
    probe = probe_of(sample_dir)
    if probe_available(probe):
        say("new-content probe")
        verdicts.append(new_content_verdict(evaluate_new_content(lm, probe, runs_dir, threshold)[1], probe))
    hq = high_quality_verdict(df, threshold)
    if hq:
        verdicts.append(hq)
    say("Grad-CAM audit")
    cam = gradcam_verdict(cached_gradcam_audit(lm, ds, runs_dir, n=min(AUDIT_IMAGES, len(ds)), seed=0, top=AUDIT_TOP,
                                               threshold=threshold)["summary"])
    if cam:
        verdicts.append(cam)
    verdicts.append(confidence_verdict(df, threshold))
    verdicts.append(scope_verdict())
    return verdicts


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="The Limitations page's verdicts for a model on a dataset, as a table.")
    p.add_argument("--weights", default="weights/default.pt", help="checkpoint (default: weights/default.pt)")
    p.add_argument("--data", default="data/sample/test", help="evaluation dataset (default: data/sample/test)")
    p.add_argument("--split", default="test", help="split of a CIFAKE root (default: test)")
    p.add_argument("--format", default="auto", choices=["auto", "cifake", "folder", "manifest", "parquet"],
                   help="force the dataset format (default: auto)")
    p.add_argument("--class-map", default=None, help="e.g. 'AiArtData=FAKE,RealArt=REAL' (default: none)")
    p.add_argument("--sample", default="data/sample", help="CIFAKE root with test and ood splits for the "
                                                          "unseen-generator test (default: data/sample)")
    p.add_argument("--threshold", type=float, default=0.5, help="P(AI) threshold (default: 0.5)")
    p.add_argument("--runs", default="runs", help="cache folder shared with the app (default: runs)")
    p.add_argument("--json", action="store_true", help="print the structured verdicts as JSON lines instead")
    p.add_argument("--unsure", action="store_true",
                   help="also print the page's confidence-vs-correctness table with UNSURE (this evaluation, the "
                        "sample's ood split, the LOGO folds in WEIGHTS_DIR/logo)")
    args = p.parse_args(argv)
    import json
    from core.model.checkpoint import CheckpointError, load_checkpoint
    from core.data.datasets import DatasetError, open_dataset
    from core.data.labels import LabelMappingError, parse_class_map
    try:
        lm = load_checkpoint(args.weights)
        ds = open_dataset(args.data, split=args.split, fmt=args.format, class_map=parse_class_map(args.class_map))
        verdicts = audit(lm, ds, args.threshold, Path(args.sample), args.runs,
                         log=lambda s: print(f"... {s}", file=sys.stderr))
    except (CheckpointError, DatasetError, LabelMappingError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        for v in verdicts:
            print(json.dumps(asdict(v), default=float))
        return 0
    with pd.option_context("display.max_colwidth", None, "display.width", 250):
        print(summary_table(verdicts).to_string())
        print()
        print(subsample_note(len(ds)))
        if args.unsure:
            print()
            print("Confidence vs correctness with the UNSURE verdict (shares of all images of each row):")
            frames = unsure_frames(lm, ds, Path(args.sample), args.runs, Path(args.weights).parent / "logo")
            print(unsure_table(frames, args.threshold).to_string(index=False))
    return 0


def unsure_frames(lm, ds, sample_dir, runs_dir, logo_dir=None) -> list:
    """The rows of the Limitations page's UNSURE table: this evaluation, the sample's ood split, and the
    stored leave-one-generator-out folds (weights/logo beside the checkpoint's weights folder)."""
    from core.data.datasets import cifake_splits, open_dataset
    from core.inference.evaluate import cached_evaluation
    from core.audits.generalize import logo_frames
    frames = [("this evaluation", cached_evaluation(lm, ds, runs_dir)[0], lm.verdict, lm.temperature)]
    if "ood" in cifake_splits(sample_dir):
        ood = cached_evaluation(lm, open_dataset(sample_dir, split="ood"), runs_dir)[0]
        frames.append(("sample ood (unseen family)", ood, lm.verdict, lm.temperature))
    from core.audits.new_content import probe_available
    probe = probe_of(sample_dir)
    if probe_available(probe):
        frames.append(("new-content probe", cached_evaluation(lm, open_dataset(probe), runs_dir)[0], lm.verdict,
                       lm.temperature))
    return frames + (logo_frames(logo_dir) if logo_dir else [])


if __name__ == "__main__":
    sys.exit(main())
