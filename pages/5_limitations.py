"""Limitations page: every limitation the seed project documented, quoted, tested and given a verdict.

Each section: the claim (quoted from the seed's README), the test, the measured result and a plain
verdict sentence computed from the numbers (core.audits.limitations). Robustness numbers come from one stored
sweep (core.audits.robustness.sweep via sweep_ui; its levels appear as they are measured on a first visit); the
unseen-generator test evaluates the sample's `ood` split next to `test`; the Grad-CAM audit
(concentration and deletion test) runs on up to core.audits.limitations.AUDIT_IMAGES images and is stored under
runs/. On larger data the sweep and the stability battery run on a stated stratified subsample
(core.audits.limitations.subsample_note, the same sentence as the CLI's), every rate and mean with its 95%
interval, so a first visit to the sample completes in seconds (benchmarks/bench_browser.py).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from core.audits import limitations as lim
from core.audits.generalize import logo_frames
from core.data.images import ImageError
from core.data.labels import CLASS_NAMES
from core.audits.limitations import CLAIMS, SEED, level_text
from core.metrics.metrics import HIGH_CONFIDENCE, annotate_calls
from core.inference.predict import predict_many
from core.audits.robustness import SWEEP_MAX_IMAGES, cached_gradcam_audit
from core.data.shifts import SWEEP_LEVELS, shift_array
from pages_support import charts
from pages_support import common as _common
from pages_support.common import (Context, evaluation_ui, get_context, image_bytes, load_model_cached, open_dataset_cached,
                           sweep_ui)
from pages_support.forensics_views import flip_rate_section
from pages_support.views import enlarged, gallery, num, pct

# Axis titles of the preprocessing section's curves (the grouping and order come from core.audits.limitations).
AXIS = {"grayscale": "grayscale amount (1 = fully gray)", "saturation": "saturation factor (0 = gray, 1 = unchanged)",
        "hue": "hue rotation (fraction of a turn)", "jpeg": "JPEG quality (lower = stronger compression)",
        "blur": "gaussian blur sigma (pixels)", "noise": "gaussian noise std (of 255)",
        "downscale": "downscale factor (shrink, then re-enlarge)", "brightness": "brightness factor (1 = unchanged)",
        "contrast": "contrast factor (1 = unchanged)"}
N_EXAMPLES = 1          # example images per class shown under each shift


def record(verdicts: list, v) -> None:
    """Add a verdict (core.audits.limitations.Verdict, or the {"limitation", "verdict"} dicts other sections add)."""
    verdicts.append({"limitation": v.limitation, "verdict": v.text} if isinstance(v, lim.Verdict) else v)


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
def _gradcam_audit(sha: str, weights_path: str, dataset_key: tuple, stamp: float, n: int, threshold: float) -> dict:
    # Stored under runs/ by core (a new session or process reads it back); this cache saves the read.
    lm = load_model_cached(weights_path, sha)
    return cached_gradcam_audit(lm, open_dataset_cached(*dataset_key, stamp), _common.RUNS_DIR, n=n, seed=0,
                                top=lim.AUDIT_TOP, threshold=threshold)


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
    sub = (f" (a seeded subsample of {SWEEP_MAX_IMAGES:,} of its {len(ctx.ds):,} images, stratified by label: "
           "36 passes over every image would keep this page waiting; each accuracy comes with its 95% Wilson "
           "interval)") if len(ctx.ds) > SWEEP_MAX_IMAGES else ""
    st.markdown(f"**Test.** Every image of the evaluation set{sub} is transformed at increasing severity before "
                "preprocessing, and accuracy, ECE and per-class recall are measured again (core.audits.robustness.sweep). "
                "Sweep metrics use threshold 0.5: the sweep stores summary numbers per level, not per-image scores.")
    sw = sweep_ui(ctx)
    if sw is None or sw.empty:
        st.warning("The robustness sweep could not be computed for this dataset.")
        return
    base = sw[sw["shift"] == "none"].iloc[0].to_dict()
    st.caption(f"Clean baseline on {int(base['n']):,} images: accuracy {pct(base['accuracy'])} "
               f"(95% interval {pct(base['accuracy_ci_low'])}-{pct(base['accuracy_ci_high'])}), "
               f"ECE {num(base['ece'])}, recall REAL {pct(base['recall_REAL'])}, recall FAKE {pct(base['recall_FAKE'])}.")
    # Off on a first view: two images per shift at every level, each predicted, are about a hundred images
    # to compute and draw before the sections below appear; one click shows them.
    show_examples = st.toggle("Show example images at each level", value=False, key="lim_examples",
                              help="Two images per shift (one per class), clean and at each level, with the model's "
                                   "P(AI) for each.")
    for title, names in lim.SHIFT_FAMILIES.items():
        st.subheader(title)
        for name in names:
            rows = sw[sw["shift"] == name].sort_values("level")
            if rows.empty:
                continue
            clean = pd.DataFrame([{**base, "shift": name, "level": _identity_level(name)}])
            curve = pd.concat([clean, rows]).sort_values("level", ascending=name != "jpeg")
            verdict = lim.shift_verdict(base, rows, name)
            record(verdicts, verdict)
            st.markdown(f"**{name}** — {verdict.text}")
            chart = charts.severity(curve, AXIS[name], float(base["accuracy"]), reverse=name == "jpeg")
            st.vega_lite_chart(chart.to_dict(),
                            key=f"sev-{name}")
            if name == "jpeg":
                st.caption("The x axis runs from quality 100 (the clean set; the sample is itself stored as "
                           "JPEG) to 10: severity increases to the right.")
            with st.expander(f"{name}: numbers"):
                st.dataframe(curve[["level", "n", "accuracy", "accuracy_ci_low", "accuracy_ci_high", "ece", "roc_auc",
                                    "recall_REAL", "recall_FAKE", "mean_prob_fake"]], hide_index=True,
                             key=f"sev-table-{name}")
            if show_examples:
                examples_ui(ctx, df, name)


def _identity_level(name: str) -> float:
    from core.data.shifts import IDENTITY_LEVEL
    return float(IDENTITY_LEVEL[name])


def bias_section(ctx: Context, verdicts: list) -> None:
    st.header("Dataset bias and unseen generators")
    claim("bias")
    splits = _common.sample_splits()
    if not {"test", "ood"} <= set(splits):
        st.info(f"Not available: the embedded sample at {_common.SAMPLE_DIR} has no `test` and `ood` splits "
                f"(found: {', '.join(splits) or 'none'}), so there is no unseen-source set to compare against.")
        record(verdicts, lim.bias_not_tested(splits))
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
    rows = [lim.split_row(split, d, ctx.threshold) for split, (_, d) in results.items()]
    st.dataframe(pd.DataFrame(rows), hide_index=True, key="bias_table")
    v = lim.bias_verdict(*rows)
    record(verdicts, v)
    st.markdown(f"**Verdict.** {v.text}")
    st.markdown("Accuracy per source (where each image comes from):")
    cols = st.columns(2)
    for c, (split, (_, d)) in zip(cols, results.items()):
        c.markdown(f"`{split}`")
        c.dataframe(lim.per_source_table(d, ctx.threshold), hide_index=True, key=f"bias-src-{split}")
    sub, d = results["ood"]
    calls = annotate_calls(d, ctx.threshold)
    wrong = calls[~calls["correct"]]
    if len(wrong):
        st.markdown("The most confident mistakes on `ood`:")
        gallery(sub, wrong.sort_values("confidence", ascending=False).head(12))


def high_quality_section(ctx: Context, df: pd.DataFrame, verdicts: list) -> None:
    st.header("High-quality AI images")
    claim("hq")
    v = lim.high_quality_verdict(df, ctx.threshold)
    if v is None:
        st.info("The evaluation set has no FAKE images.")
        return
    n = v.numbers
    st.markdown(f"**Test.** The AI images of the evaluation set that the model is most sure are real. "
                f"{n['missed']:,} of {n['fakes']:,} AI images ({pct(n['share_missed'])}) pass as REAL at "
                f"threshold {ctx.threshold:.2f}; {n['sure_real']:,} get P(AI) below {lim.HQ_SURE_REAL}.")
    record(verdicts, v)
    st.markdown(f"**Verdict.** {v.text}")
    per = lim.fake_source_table(df, ctx.threshold)
    if per is not None:
        st.dataframe(per, hide_index=True, key="hq_sources")
    fakes = df[df["label"] == 1].sort_values("prob_fake")
    cam = st.toggle("Grad-CAM on these images", key="hq_cam")
    gallery(ctx, fakes.head(12), cam=cam)
    st.caption("The sample's fakes come from tiny CPU-trained generators; realistic modern AI images are not in it, "
               "so this measures the mechanism (AI images that look real to the model), not its size in the wild.")


def gradcam_section(ctx: Context, verdicts: list) -> None:
    st.header("Grad-CAM interpretability")
    claim("cam")
    n = min(lim.AUDIT_IMAGES, len(ctx.ds))
    st.markdown(f"**Test.** On {n:,} images of the evaluation set: (1) *concentration*, the share of the total "
                "heat held by the hottest 10% of pixels (0.10 for a uniform map, 1.0 when all heat sits in them); "
                "(2) a *deletion test*, replacing the hottest 10% of pixels with the image's mean colour vs "
                "replacing a random 10%, and measuring the fall in the probability of the class called at "
                f"threshold {ctx.threshold:.2f} (the maps explain that call).")
    audit = _gradcam_audit(ctx.lm.sha256, ctx.weights_path, tuple(ctx.dataset_key), _stamp(ctx.dataset_key), n,
                           ctx.threshold)
    s = audit["summary"]
    if not s["n"]:
        st.warning("No image could be decoded for the audit.")
        return
    cols = st.columns(4)
    cols[0].metric("Concentration (top 10%)", num(s["concentration_mean"]), help="0.10 = uniform")
    cols[1].metric("P drop, hottest 10% removed", num(s["drop_cam_mean"]))
    cols[2].metric("P drop, random 10% removed", num(s["drop_random_mean"]))
    cols[3].metric("Flips: hottest vs random", f"{pct(s['flip_rate_cam'])} vs {pct(s['flip_rate_random'])}")
    ci = {k: s.get(k) for k in ("concentration_ci", "drop_cam_ci", "drop_random_ci", "flip_rate_cam_ci",
                                "flip_rate_random_ci")}
    if all(ci.values()):
        st.caption(f"95% intervals on these {s['n']:,} images: concentration {num(ci['concentration_ci'][0])} to "
                   f"{num(ci['concentration_ci'][1])}; P drop with the hottest 10% removed {num(ci['drop_cam_ci'][0])} "
                   f"to {num(ci['drop_cam_ci'][1])}, with a random 10% removed {num(ci['drop_random_ci'][0])} to "
                   f"{num(ci['drop_random_ci'][1])}; flips {pct(ci['flip_rate_cam_ci'][0])}-"
                   f"{pct(ci['flip_rate_cam_ci'][1])} vs {pct(ci['flip_rate_random_ci'][0])}-"
                   f"{pct(ci['flip_rate_random_ci'][1])}.")
    v = lim.gradcam_verdict(s)
    record(verdicts, v)
    st.markdown(f"**Verdict.** {v.text}")
    a, b = st.columns(2)
    conc = charts.histogram({"images": audit["concentration"]}, np.linspace(0, 1, 41), "concentration per image",
                            height=240) + charts.rule_x(0.1, "uniform")
    a.vega_lite_chart(conc.to_dict(), key="cam_conc")
    drops = np.r_[audit["drop_cam"], audit["drop_random"]]
    edges = np.linspace(min(0.0, float(np.nanmin(drops))) if len(drops) else 0.0,
                        max(0.0, float(np.nanmax(drops))) if len(drops) else 1.0, 41)
    drop = charts.histogram({"hottest 10% removed": audit["drop_cam"], "random 10% removed": audit["drop_random"]},
                            edges if edges[-1] > edges[0] else np.linspace(0, 1, 41), "fall in P(called class)",
                            height=240)
    b.vega_lite_chart(drop.to_dict(), key="cam_drop")


def confidence_section(ctx: Context, df: pd.DataFrame, verdicts: list) -> None:
    st.header("Confidence vs correctness")
    claim("conf")
    v = lim.confidence_verdict(df, ctx.threshold)
    n = v.numbers
    st.markdown(f"**Test.** Errors at threshold {ctx.threshold:.2f} made with confidence above {HIGH_CONFIDENCE}, and "
                f"accuracy of the confident calls. {n['confident_calls']:,} of {n['images']:,} calls have confidence "
                f"> {HIGH_CONFIDENCE}; their accuracy is {pct(n['accuracy_of_confident_calls'])}. Confidence = P(AI) "
                "for images called FAKE, 1 - P(AI) for images called REAL (as on Calibration and Misclassifications).")
    record(verdicts, v)
    st.markdown(f"**Verdict.** {v.text}")
    st.markdown("**With the UNSURE verdict.** The same question, when the model may say UNSURE (near the threshold, "
                "or unlike the training data): the share of *all* images that are wrong and still decided, in "
                "distribution, on the sample's unseen `ood` family, and on each family held out of training "
                "(leave-one-generator-out models of the shipped recipe, `weights/logo/`).")
    frames = [("this evaluation", df, ctx.lm.verdict, ctx.lm.temperature)]
    if "ood" in _common.sample_splits():
        key = (str(_common.SAMPLE_DIR), "ood", "cifake", None)
        sub = Context(lm=ctx.lm, weights_path=ctx.weights_path, ds=open_dataset_cached(*key, _stamp(key)),
                      dataset_key=key, threshold=ctx.threshold)
        res = evaluation_ui(sub)
        if res is not None:
            frames.append(("sample ood (unseen family)", res[0], ctx.lm.verdict, ctx.lm.temperature))
    frames += logo_frames(_common.WEIGHTS_DIR / "logo")
    st.dataframe(lim.unsure_table(frames, ctx.threshold), hide_index=True, key="conf_unsure", column_config={
        c: st.column_config.NumberColumn(c, format="%.3f") for c in
        ("accuracy", f"wrong, confidence > {HIGH_CONFIDENCE}", "UNSURE", "wrong, not UNSURE",
         "errors caught by UNSURE", "accuracy when decided")})
    st.page_link("pages/3_calibration.py", label="Calibration page: reliability, ECE, temperature scaling",
                 icon="📏")


def scope_section(verdicts: list) -> None:
    st.header("Binary classification scope")
    claim("scope")
    v = lim.scope_verdict()
    record(verdicts, v)
    st.markdown(f"**Verdict.** {v.text}")


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
    with summary:
        # The first numbers, within a second or two of a first visit: the clean evaluation. The verdict
        # table below fills in when every section's test has run (each is stored under runs/).
        st.subheader("Summary")
        m = res[1]
        cols = st.columns(4)
        cols[0].metric("Images evaluated", f"{m['n']:,}")
        cols[1].metric("Accuracy (threshold 0.5)", pct(m.get("accuracy")))
        cols[2].metric("ROC AUC", num(m.get("roc_auc")))
        cols[3].metric("ECE", num(m.get("ece")))
        table_slot = st.empty()
        table_slot.info("The verdict of each limitation appears here when its test below has run.")
        st.caption(lim.subsample_note(len(ctx.ds)))
    verdicts: list[dict] = []
    preprocessing_section(ctx, df, verdicts)
    flip_rate_section(ctx, verdicts)
    bias_section(ctx, verdicts)
    high_quality_section(ctx, df, verdicts)
    gradcam_section(ctx, verdicts)
    confidence_section(ctx, df, verdicts)
    scope_section(verdicts)
    table_slot.table(pd.DataFrame(verdicts).set_index("limitation"))      # st.table wraps the long verdicts


main()
