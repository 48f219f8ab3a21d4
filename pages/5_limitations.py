"""Limitations page: every limitation the seed project documented, quoted, tested and given a verdict.

Each section: the claim (quoted from the seed's README), the test, the measured result and a plain
verdict sentence computed from the numbers. Robustness numbers come from one cached sweep
(core.robustness.sweep via sweep_ui); the unseen-generator test evaluates the sample's `ood` split
next to `test`; the Grad-CAM audit (concentration and deletion test) runs on up to 500 images.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from core.images import ImageError
from core.labels import CLASS_NAMES
from core.metrics import classification_metrics
from core.predict import predict_many
from core.robustness import gradcam_audit_dataset
from core.shifts import SWEEP_LEVELS, shift_array
from pages import _common
from pages._common import (Context, evaluation_ui, get_context, image_bytes, load_model_cached, open_dataset_cached,
                           sweep_ui)
from pages._forensics_views import flip_rate_section
from pages._views import enlarged, gallery, num, pct, predicted_confidence, severity_figure

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
# Shift families shown in the preprocessing section: title -> [(shift, axis title)]
FAMILIES = {
    "Grayscale and colour (saturation, hue)": [("grayscale", "grayscale amount (1 = fully gray)"),
                                               ("saturation", "saturation factor (0 = gray, 1 = unchanged)"),
                                               ("hue", "hue rotation (fraction of a turn)")],
    "JPEG quality": [("jpeg", "JPEG quality (lower = stronger compression)")],
    "Blur": [("blur", "gaussian blur sigma (pixels)")],
    "Noise": [("noise", "gaussian noise std (of 255)")],
    "Downscaling": [("downscale", "downscale factor (shrink, then re-enlarge)")],
    "Brightness and contrast": [("brightness", "brightness factor (1 = unchanged)"),
                                ("contrast", "contrast factor (1 = unchanged)")],
}
N_EXAMPLES = 1          # example images per class shown under each shift
AUDIT_IMAGES = 500      # images in the Grad-CAM audit


def level_text(name: str, level: float) -> str:
    return {"grayscale": f"grayscale {level:.0%}", "jpeg": f"JPEG quality {level:g}", "blur": f"blur sigma {level:g}",
            "noise": f"noise std {level:g}/255", "downscale": f"downscaling x{level:g}",
            "brightness": f"brightness x{level:g}", "contrast": f"contrast x{level:g}",
            "saturation": f"saturation x{level:g}", "hue": f"hue rotated {level:g} turn"}.get(name, f"{name} {level:g}")


def shift_verdict(base: dict, rows: pd.DataFrame, name: str) -> str:
    """One sentence from the numbers: how far accuracy falls at the worst level, and for which class."""
    worst = rows.loc[rows["accuracy"].idxmin()]
    a0, aw = base["accuracy"], float(worst["accuracy"])
    where = level_text(name, float(worst["level"]))
    drop = a0 - aw
    if drop >= 0.05:
        s = f"Holds: accuracy falls from {pct(a0)} to {pct(aw)} at {where}."
    elif drop >= 0.02:
        s = f"Holds weakly: accuracy falls from {pct(a0)} to {pct(aw)} at {where}."
    else:
        s = f"Not observed here: accuracy stays within 2 points of {pct(a0)} (lowest {pct(aw)}, at {where})."
    rr, rf = float(worst["recall_REAL"]), float(worst["recall_FAKE"])
    if drop >= 0.02 and abs(rr - rf) >= 0.1:
        if rr < rf:
            s += f" The errors are one-sided: real images are called AI (recall of REAL {pct(rr)}, of FAKE {pct(rf)})."
        else:
            s += f" The errors are one-sided: AI images pass as real (recall of FAKE {pct(rf)}, of REAL {pct(rr)})."
    return s


@st.cache_data(show_spinner="Shifted examples...", max_entries=64)
def _examples(sha: str, weights_path: str, dataset_key: tuple, stamp: float, ids: tuple[str, ...], name: str,
              levels: tuple[float, ...]) -> list[dict]:
    """For each id: the clean image and the image at each level, with the model's P(AI) for each."""
    lm = load_model_cached(weights_path, sha)
    ds = open_dataset_cached(*dataset_key, stamp)
    index = {ds.item_id(i): i for i in range(len(ds))}
    out = []
    for item in ids:
        try:
            arr = np.asarray(ds.load(index[item]).image)
        except (ImageError, KeyError):
            continue
        shifted = [("clean", arr)] + [(level_text(name, lv), shift_array(arr, name, lv, seed=k))
                                      for k, lv in enumerate(levels)]
        preds = predict_many(lm, [(t, image_bytes(a)) for t, a in shifted])   # PNG: lossless
        out.append({"id": item, "tiles": [(t, a, pr.prob_fake) for (t, a), pr in zip(shifted, preds)]})
    return out


@st.cache_data(show_spinner="Grad-CAM audit (concentration and deletion test)...", max_entries=8)
def _gradcam_audit(sha: str, weights_path: str, dataset_key: tuple, stamp: float, n: int) -> dict:
    lm = load_model_cached(weights_path, sha)
    return gradcam_audit_dataset(lm, open_dataset_cached(*dataset_key, stamp), n=n, seed=0)


def _stamp(key) -> float:
    try:
        return Path(key[0]).stat().st_mtime
    except (OSError, IndexError, TypeError):
        return 0.0


def claim(key: str) -> None:
    st.markdown(f"> *{CLAIMS[key]}*  \n> — {SEED}")


def examples_ui(ctx: Context, df: pd.DataFrame, name: str) -> None:
    ids = tuple(df[df["label"] == k]["path"].head(N_EXAMPLES).tolist() for k in (0, 1))
    ids = ids[0] + ids[1]
    ex = _examples(ctx.lm.sha256, ctx.weights_path, tuple(ctx.dataset_key), _stamp(ctx.dataset_key), ids, name,
                   tuple(float(v) for v in SWEEP_LEVELS[name]))
    labels = dict(zip(df["path"], df["label"]))
    for e in ex:
        cols = st.columns(len(e["tiles"]))
        for c, (title, arr, p) in zip(cols, e["tiles"]):
            c.image(enlarged(arr, 96), caption=f"{title} · P(AI) {num(p)}", width=96)
        st.caption(f"{e['id']} (true {CLASS_NAMES[int(labels[e['id']])]})")


def preprocessing_section(ctx: Context, df: pd.DataFrame, verdicts: list) -> None:
    st.header("Sensitivity to preprocessing changes")
    claim("shift")
    st.markdown("**Test.** Every image of the evaluation set is transformed at increasing severity before "
                "preprocessing, and accuracy, ECE and per-class recall are measured again (core.robustness.sweep). "
                "Sweep metrics use threshold 0.5: the sweep stores summary numbers per level, not per-image scores.")
    sw = sweep_ui(ctx)
    if sw is None or sw.empty:
        st.warning("The robustness sweep could not be computed for this dataset.")
        return
    base = sw[sw["shift"] == "none"].iloc[0].to_dict()
    st.caption(f"Clean baseline on {int(base['n']):,} images: accuracy {pct(base['accuracy'])}, "
               f"ECE {num(base['ece'])}, recall REAL {pct(base['recall_REAL'])}, recall FAKE {pct(base['recall_FAKE'])}.")
    show_examples = st.toggle("Show example images at each level", value=True, key="lim_examples")
    for title, shifts in FAMILIES.items():
        st.subheader(title)
        for name, axis in shifts:
            rows = sw[sw["shift"] == name].sort_values("level")
            if rows.empty:
                continue
            clean = pd.DataFrame([{**base, "shift": name, "level": _identity_level(name)}])
            curve = pd.concat([clean, rows]).sort_values("level", ascending=name != "jpeg")
            verdict = shift_verdict(base, rows, name)
            verdicts.append({"limitation": f"Preprocessing: {name}", "verdict": verdict})
            st.markdown(f"**{name}** — {verdict}")
            fig = severity_figure(curve, axis, base)
            if name == "jpeg":
                fig.update_xaxes(autorange="reversed")
            st.plotly_chart(fig, key=f"sev-{name}")
            if name == "jpeg":
                st.caption("The x axis runs from quality 100 (the clean set; the sample is itself stored as "
                           "JPEG) to 10: severity increases to the right.")
            with st.expander(f"{name}: numbers"):
                st.dataframe(curve[["level", "n", "accuracy", "ece", "roc_auc", "recall_REAL", "recall_FAKE",
                                    "mean_prob_fake"]], hide_index=True, key=f"sev-table-{name}")
            if show_examples:
                examples_ui(ctx, df, name)


def _identity_level(name: str) -> float:
    from core.shifts import IDENTITY_LEVEL
    return float(IDENTITY_LEVEL[name])


def bias_section(ctx: Context, verdicts: list) -> None:
    st.header("Dataset bias and unseen generators")
    claim("bias")
    splits = _common.sample_splits()
    if not {"test", "ood"} <= set(splits):
        st.info(f"Not available: the embedded sample at {_common.SAMPLE_DIR} has no `test` and `ood` splits "
                f"(found: {', '.join(splits) or 'none'}), so there is no unseen-source set to compare against.")
        verdicts.append({"limitation": "Dataset bias", "verdict": "Not tested: no ood split available."})
        return
    st.markdown("**Test.** The same model on the sample's `test` split (photos and generator seen in training, "
                "different images) and its `ood` split (unseen photo groups *and* an unseen generator family), "
                f"at threshold {ctx.threshold:.2f}.")
    results = {}
    for split in ("test", "ood"):
        key = (str(_common.SAMPLE_DIR), split, "cifake", None)
        ds = open_dataset_cached(*key, _stamp(key))
        sub = Context(lm=ctx.lm, weights_path=ctx.weights_path, ds=ds, dataset_key=key, threshold=ctx.threshold)
        res = evaluation_ui(sub)
        if res is None or res[0].empty:
            st.warning(f"The `{split}` split could not be evaluated.")
            return
        results[split] = (sub, res[0])
    rows = []
    for split, (_, d) in results.items():
        m = classification_metrics(d["label"].to_numpy(), d["prob_fake"].to_numpy(), ctx.threshold)
        fakes = ", ".join(sorted(set(d.loc[d["label"] == 1, "source"].astype(str)) - {""})) or "n/a"
        rows.append({"split": split, "images": m["n"], "accuracy": m.get("accuracy"), "roc_auc": m.get("roc_auc"),
                     "ece": m.get("ece"), "recall_REAL": m["per_class"]["REAL"]["recall"],
                     "recall_FAKE": m["per_class"]["FAKE"]["recall"],
                     "mean P(AI) of FAKE": float(d.loc[d["label"] == 1, "prob_fake"].mean()),
                     "FAKE generator(s)": fakes})
    table = pd.DataFrame(rows)
    st.dataframe(table, hide_index=True, key="bias_table")
    t, o = rows
    drop = (t["accuracy"] or 0) - (o["accuracy"] or 0)
    if drop >= 0.05:
        v = (f"Holds: accuracy falls from {pct(t['accuracy'])} on test to {pct(o['accuracy'])} on ood; recall of "
             f"FAKE from {pct(t['recall_FAKE'])} to {pct(o['recall_FAKE'])} on the unseen generator "
             f"({o['FAKE generator(s)']}).")
    elif drop >= 0.02:
        v = f"Holds weakly: accuracy falls from {pct(t['accuracy'])} on test to {pct(o['accuracy'])} on ood."
    else:
        v = (f"Not observed on this sample: accuracy {pct(t['accuracy'])} on test vs {pct(o['accuracy'])} on ood. "
             "The sample's generators are weak; this says nothing about modern generators.")
    verdicts.append({"limitation": "Dataset bias / unseen generators", "verdict": v})
    st.markdown(f"**Verdict.** {v}")
    st.markdown("Accuracy per source (where each image comes from):")
    cols = st.columns(2)
    for c, (split, (_, d)) in zip(cols, results.items()):
        d = d.assign(correct=((d["prob_fake"] >= ctx.threshold).astype(int) == d["label"]))
        per = d.groupby(["source", "label"]).agg(images=("path", "size"), accuracy=("correct", "mean"),
                                                 mean_p_ai=("prob_fake", "mean")).reset_index()
        per["label"] = per["label"].map(lambda v: CLASS_NAMES[int(v)])
        c.markdown(f"`{split}`")
        c.dataframe(per, hide_index=True, key=f"bias-src-{split}")
    sub, d = results["ood"]
    wrong = d[(d["prob_fake"] >= ctx.threshold).astype(int) != d["label"]].copy()
    if len(wrong):
        wrong["confidence"] = predicted_confidence(wrong["prob_fake"], ctx.threshold)
        st.markdown("The most confident mistakes on `ood`:")
        gallery(sub, wrong.sort_values("confidence", ascending=False).head(12))


def high_quality_section(ctx: Context, df: pd.DataFrame, verdicts: list) -> None:
    st.header("High-quality AI images")
    claim("hq")
    fakes = df[df["label"] == 1].sort_values("prob_fake")
    if fakes.empty:
        st.info("The evaluation set has no FAKE images.")
        return
    missed = fakes[fakes["prob_fake"] < ctx.threshold]
    sure = fakes[fakes["prob_fake"] < 0.1]
    st.markdown(f"**Test.** The AI images of the evaluation set that the model is most sure are real. "
                f"{len(missed):,} of {len(fakes):,} AI images ({pct(len(missed) / len(fakes))}) pass as REAL at "
                f"threshold {ctx.threshold:.2f}; {len(sure):,} get P(AI) below 0.1.")
    if len(missed):
        v = (f"Holds: {len(missed):,} of {len(fakes):,} AI images ({pct(len(missed) / len(fakes))}) are called REAL; "
             f"the most convincing gets P(AI) {fakes['prob_fake'].iloc[0]:.3f}.")
    else:
        v = (f"Not observed here: every AI image is caught (lowest P(AI) {fakes['prob_fake'].iloc[0]:.3f}); the "
             "evaluation set may not contain high-quality AI images.")
    verdicts.append({"limitation": "High-quality AI images", "verdict": v})
    st.markdown(f"**Verdict.** {v}")
    if "source" in fakes and fakes["source"].astype(str).ne("").any():
        per = fakes.assign(caught=fakes["prob_fake"] >= ctx.threshold).groupby("source").agg(
            images=("path", "size"), recall_FAKE=("caught", "mean"), mean_p_ai=("prob_fake", "mean")).reset_index()
        st.dataframe(per, hide_index=True, key="hq_sources")
    cam = st.toggle("Grad-CAM on these images", key="hq_cam")
    gallery(ctx, fakes.head(12), cam=cam)
    st.caption("The sample's fakes come from tiny CPU-trained generators; realistic modern AI images are not in it, "
               "so this measures the mechanism (AI images that look real to the model), not its size in the wild.")


def gradcam_section(ctx: Context, verdicts: list) -> None:
    st.header("Grad-CAM interpretability")
    claim("cam")
    n = min(AUDIT_IMAGES, len(ctx.ds))
    st.markdown(f"**Test.** On {n:,} images of the evaluation set: (1) *concentration*, the share of the total "
                "heat held by the hottest 10% of pixels (0.10 for a uniform map, 1.0 when all heat sits in them); "
                "(2) a *deletion test*, replacing the hottest 10% of pixels with the image's mean colour vs "
                "replacing a random 10%, and measuring the fall in the probability of the predicted class.")
    audit = _gradcam_audit(ctx.lm.sha256, ctx.weights_path, tuple(ctx.dataset_key), _stamp(ctx.dataset_key), n)
    s = audit["summary"]
    if not s["n"]:
        st.warning("No image could be decoded for the audit.")
        return
    cols = st.columns(4)
    cols[0].metric("Concentration (top 10%)", num(s["concentration_mean"]), help="0.10 = uniform")
    cols[1].metric("P drop, hottest 10% removed", num(s["drop_cam_mean"]))
    cols[2].metric("P drop, random 10% removed", num(s["drop_random_mean"]))
    cols[3].metric("Flips: hottest vs random", f"{pct(s['flip_rate_cam'])} vs {pct(s['flip_rate_random'])}")
    conc = s["concentration_mean"]
    if conc < 0.2:
        v = f"Holds: the maps are diffuse; the hottest 10% of pixels hold {pct(conc)} of the heat (10% if uniform)."
    elif conc < 0.35:
        v = f"Holds partly: the hottest 10% of pixels hold {pct(conc)} of the heat (10% if uniform), a loose focus."
    else:
        v = f"Does not hold as stated: the maps are concentrated; the hottest 10% of pixels hold {pct(conc)} of the heat."
    if s["drop_cam_mean"] > s["drop_random_mean"] + 0.02:
        v += (f" The hot pixels do matter: removing them lowers the predicted class's probability by "
              f"{s['drop_cam_mean']:.3f} against {s['drop_random_mean']:.3f} for random pixels.")
    else:
        v += (f" Removing the hottest pixels changes the prediction no more than removing random ones "
              f"({s['drop_cam_mean']:.3f} vs {s['drop_random_mean']:.3f}): the map does not single out what the "
              "decision rests on.")
    v += " Either way a heat map shows where, not why."
    verdicts.append({"limitation": "Grad-CAM interpretability", "verdict": v})
    st.markdown(f"**Verdict.** {v}")
    a, b = st.columns(2)
    fig = go.Figure(go.Histogram(x=audit["concentration"], xbins=dict(start=0, end=1.0001, size=0.025)))
    fig.add_vline(x=0.1, line=dict(dash="dash", color="gray"), annotation_text="uniform")
    fig.update_layout(height=280, margin=dict(l=10, r=10, t=30, b=10), xaxis_title="concentration per image",
                      yaxis_title="images")
    a.plotly_chart(fig, key="cam_conc")
    fig = go.Figure([go.Histogram(x=audit["drop_cam"], name="hottest 10% removed", opacity=0.7),
                     go.Histogram(x=audit["drop_random"], name="random 10% removed", opacity=0.7)])
    fig.update_layout(barmode="overlay", height=280, margin=dict(l=10, r=10, t=30, b=10),
                      xaxis_title="fall in P(predicted class)", yaxis_title="images", legend=dict(orientation="h"))
    b.plotly_chart(fig, key="cam_drop")


def confidence_section(ctx: Context, df: pd.DataFrame, verdicts: list) -> None:
    st.header("Confidence vs correctness")
    claim("conf")
    m = classification_metrics(df["label"].to_numpy(), df["prob_fake"].to_numpy(), ctx.threshold)
    errors, hi = m.get("errors", 0), m.get("errors_confidence_over_0.9", 0)
    conf = predicted_confidence(df["prob_fake"], ctx.threshold)
    correct = (df["prob_fake"] >= ctx.threshold).astype(int) == df["label"]
    confident = conf > 0.9
    acc_conf = float(correct[confident].mean()) if confident.any() else None
    st.markdown(f"**Test.** Errors at threshold {ctx.threshold:.2f} made with confidence above 0.9, and accuracy of "
                f"the confident calls. {int(confident.sum()):,} of {len(df):,} calls have confidence > 0.9; "
                f"their accuracy is {pct(acc_conf)}.")
    if errors == 0:
        v = "Not observed here: no errors at this threshold."
    elif hi:
        v = (f"Holds: {hi:,} of {errors:,} errors ({pct(hi / errors)}) were made with confidence above 0.9.")
    else:
        v = f"Not observed here: none of the {errors:,} errors had confidence above 0.9."
    verdicts.append({"limitation": "Confidence vs correctness", "verdict": v})
    st.markdown(f"**Verdict.** {v}")
    st.page_link("pages/3_calibration.py", label="Calibration page: reliability, ECE, temperature scaling",
                 icon="📏")


def scope_section(verdicts: list) -> None:
    st.header("Binary classification scope")
    claim("scope")
    v = ("Holds by design, no test possible: the model outputs one number, P(AI). It cannot say which generator "
         "made an image, cannot locate a partial edit (an inpainted region, a pasted face), cannot tell "
         "'AI-edited photo' from 'AI-generated image', and its P(AI) is only as trustworthy as its calibration on "
         "data like yours (see Calibration). Grad-CAM shows where the evidence sits, not a manipulation mask.")
    verdicts.append({"limitation": "Binary scope", "verdict": v})
    st.markdown(f"**Verdict.** {v}")


def main() -> None:
    st.title("Limitations")
    ctx = get_context()
    if ctx is None:
        st.stop()
    st.markdown("Each limitation documented by the seed project, quoted, with a test on the selected model and "
                "data and a verdict computed from the measured numbers. Verdicts are about **this** model on "
                "**this** data; on the embedded sample (weak generators) they are a mechanism check, not "
                "evidence about real-world AI images.")
    summary = st.container()
    res = evaluation_ui(ctx)
    if res is None:
        st.stop()
    df = res[0]
    if df.empty:
        st.error("No image of this dataset could be decoded.")
        st.stop()
    verdicts: list[dict] = []
    preprocessing_section(ctx, df, verdicts)
    flip_rate_section(ctx, verdicts)
    bias_section(ctx, verdicts)
    high_quality_section(ctx, df, verdicts)
    gradcam_section(ctx, verdicts)
    confidence_section(ctx, df, verdicts)
    scope_section(verdicts)
    with summary:
        st.subheader("Summary")
        st.table(pd.DataFrame(verdicts).set_index("limitation"))      # st.table wraps the long verdicts


main()
