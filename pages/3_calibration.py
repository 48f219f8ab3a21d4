"""Calibration page: does P(AI) mean what it says?

Reliability diagram with per-bin counts, ECE (with a bootstrap interval), MCE and Brier score;
confidence of correct vs wrong calls; temperature scaling fitted on a seeded half of the evaluation
and checked on the other half, with a button to save the fitted temperature into a *copy* of the
checkpoint; and the risk-coverage curve (what abstaining on unsure images buys).
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from core.model.checkpoint import CheckpointError, with_temperature
from core.metrics.metrics import (HIGH_CONFIDENCE, abstention, annotate_calls, bootstrap_ece, classification_metrics,
                          reliability_bins, risk_coverage, temperature_scaling_split)
from core.verdict.verdict import conformal_curve, verdict_summary
from pages_support import charts
from pages_support import common as _common
from pages_support.common import context_and_evaluation_or_stop
from pages_support.views import num, pct, static_table


@st.cache_data(show_spinner="Bootstrapping the ECE...", max_entries=16)
def _bootstrap(y: np.ndarray, p: np.ndarray) -> tuple[float, float]:
    return bootstrap_ece(y, p, n_boot=200, seed=0)


def safe_checkpoint_name(text: str) -> str | None:
    """A plain file name ending in .pt (letters, digits, . _ -), or None."""
    text = text.strip()
    if not text.endswith(".pt"):
        text += ".pt"
    return text if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,100}\.pt", text) else None


def save_ui(ctx, temperature: float) -> None:
    weights_dir = Path(_common.WEIGHTS_DIR)
    stem = Path(ctx.weights_path).stem
    name = st.text_input("Name of the calibrated copy", f"{stem}-T{temperature:.3f}.pt", key="cal_save_name",
                         help=f"Saved under {weights_dir}; an existing file is never overwritten.")
    if st.button("Save a calibrated copy of the checkpoint", key="cal_save"):
        clean = safe_checkpoint_name(name)
        if clean is None:
            st.error("Use a plain file name: letters, digits, '.', '_' or '-', ending in .pt.")
            return
        out = weights_dir / clean
        if out.exists() or out.resolve() == Path(ctx.weights_path).resolve():
            st.error(f"{out} already exists; choose another name (files are never overwritten).")
            return
        try:
            with_temperature(ctx.weights_path, temperature, out)
        except (CheckpointError, OSError) as e:
            st.error(f"Could not save the copy: {e}")
            return
        st.success(f"Saved {out} with T = {temperature:.4f}. Pick `{clean}` in the sidebar's checkpoint list to use it; "
                   "the original checkpoint is unchanged.")


def main() -> None:
    st.title("Calibration")
    ctx, df, stored = context_and_evaluation_or_stop()
    if df.empty or df["label"].nunique() < 2:
        st.warning("Calibration needs decoded images of both classes in the evaluation set.")
        st.stop()
    y, p, z = df["label"].to_numpy(), df["prob_fake"].to_numpy(), df["logit"].to_numpy()
    m = classification_metrics(y, p, ctx.threshold)
    lo, hi = _bootstrap(y, p)
    st.caption(f"{stored.get('dataset', '')} · model temperature T = {ctx.lm.temperature:.3g}. Reliability, ECE, "
               "MCE and Brier describe the probabilities themselves, so they do not depend on the threshold; the "
               "correct/wrong split and the risk-coverage curve use the sidebar threshold "
               f"({ctx.threshold:.2f}).")
    cols = st.columns(4)
    cols[0].metric("ECE", num(m["ece"], ".4f"), help="Expected calibration error over 10 equal-width confidence "
                   "bins: the average gap between confidence and accuracy, weighted by bin size.")
    cols[0].caption(f"95% bootstrap interval {lo:.4f} to {hi:.4f}")
    cols[1].metric("MCE", num(m["mce"], ".4f"), help="Largest gap in any non-empty bin.")
    cols[2].metric("Brier score", num(m["brier"], ".4f"), help="Mean squared error of P(AI); 0.25 for a constant 0.5.")
    cols[3].metric("Accuracy at threshold", pct(m["accuracy"]))

    st.subheader("Reliability diagram")
    bins = reliability_bins(y, p)
    st.vega_lite_chart(charts.reliability({"model": bins}).to_dict(), key="reliability")
    static_table([{"bin": f"{b['lo']:.2f}-{b['hi']:.2f}", "images": b["count"], "mean confidence": b["confidence"],
                   "accuracy": b["accuracy"], "gap": b["gap"]} for b in bins],
                 {c: "{:.4f}" for c in ("mean confidence", "accuracy", "gap")})

    st.subheader("Confidence of correct and wrong calls")
    calls = annotate_calls(df, ctx.threshold)
    conf, correct = calls["confidence"], calls["correct"]
    st.vega_lite_chart(charts.histogram(
        {f"correct ({int(correct.sum()):,})": conf[correct].to_numpy(), f"wrong ({int((~correct).sum()):,})":
         conf[~correct].to_numpy()}, np.linspace(0, 1, 41), "confidence in the predicted class", "% of the group",
        normalize=True, colors={f"correct ({int(correct.sum()):,})": "#2ca02c",
                                f"wrong ({int((~correct).sum()):,})": "#d62728"}).to_dict(), key="conf_hist")
    n_wrong, hi_wrong = m["errors"], m["errors_confidence_over_0.9"]
    st.markdown(f"{n_wrong:,} wrong call(s); {hi_wrong:,} of them ({pct(m['share_of_errors_confidence_over_0.9'])}) "
                f"with confidence above {HIGH_CONFIDENCE}. Confidence = P(AI) for images called FAKE, 1 - P(AI) "
                "for images called REAL, at the sidebar threshold.")

    st.subheader("Temperature scaling")
    st.markdown("P(AI) = sigmoid(logit / T). One number T is fitted by maximum likelihood on a held-out part of "
                "this evaluation and checked on the other part, so the improvement is not measured on the "
                "images it was fitted on.")
    a, b = st.columns(2)
    frac = a.slider("Share used for fitting", 0.2, 0.8, 0.5, 0.1, key="cal_frac")
    seed = b.number_input("Split seed", 0, 10_000, 0, key="cal_seed")
    try:
        ts = temperature_scaling_split(z, y, fit_fraction=frac, seed=int(seed), current_temperature=ctx.lm.temperature)
    except ValueError as e:
        st.warning(f"Temperature scaling is not possible here: {e}")
    else:
        t_fit, before, after = ts["temperature"], ts["before"], ts["after"]
        cols = st.columns(4)
        cols[0].metric("Fitted T", f"{t_fit:.4f}", help=f"fitted on {len(ts['fit_idx']):,} images; T > 1 means "
                       "the model was over-confident")
        cols[1].metric("ECE on the other part", f"{after['ece']:.4f}", f"{after['ece'] - before['ece']:+.4f}",
                       delta_color="inverse")
        cols[2].metric("Brier on the other part", f"{after['brier']:.4f}", f"{after['brier'] - before['brier']:+.4f}",
                       delta_color="inverse")
        cols[3].metric("Log loss on the other part", f"{after['log_loss']:.4f}",
                       f"{after['log_loss'] - before['log_loss']:+.4f}", delta_color="inverse")
        static_table([{"temperature": f"current T = {before['temperature']:.4g}", "ECE": before["ece"],
                       "MCE": before["mce"], "Brier": before["brier"], "log loss": before["log_loss"]},
                      {"temperature": f"fitted T = {t_fit:.4g}", "ECE": after["ece"], "MCE": after["mce"],
                       "Brier": after["brier"], "log loss": after["log_loss"]}],
                     {c: "{:.4f}" for c in ("ECE", "MCE", "Brier", "log loss")})
        chart = charts.reliability({f"before (T = {before['temperature']:.3g})": before["bins"],
                                    f"after (T = {t_fit:.3g})": after["bins"]})
        st.vega_lite_chart(chart.to_dict(), key="reliability_ts")
        st.caption(f"Evaluated on the {len(ts['eval_idx']):,} images not used for fitting. Temperature scaling never "
                   "changes which side of 0.5 an image falls on, so accuracy at threshold 0.5 is unchanged.")
        save_ui(ctx, t_fit)

    st.subheader("Risk-coverage: abstaining on unsure images")
    rc = risk_coverage(y, p, ctx.threshold)
    abstain = st.slider("Abstain on the least confident (%)", 0, 90, 10, 5, key="cal_abstain")
    ab = abstention(y, p, ctx.threshold, abstain / 100)
    keep, acc_kept = ab["kept"], ab["accuracy_kept"]
    curve = charts.thin(pd.DataFrame({"coverage": rc["coverage"], "accuracy": rc["accuracy"]}))
    st.vega_lite_chart((charts.lines(curve, "coverage", "accuracy", x_title="coverage (share of images answered)",
                                 y_title="accuracy on answered images", x_reverse=True, height=300)
                    + charts.points(pd.DataFrame({"coverage": [keep / len(y)], "accuracy": [acc_kept],
                                                  "point": ["chosen"]}), "coverage", "accuracy", "point")).to_dict(),
                    key="risk_coverage")
    st.markdown(f"Abstaining on the **{abstain}%** least confident calls (lowest probability of the called class) "
                f"gives accuracy "
                f"**{pct(acc_kept)}** on the remaining {keep:,}, against {pct(m['accuracy'])} answering all "
                f"{len(y):,}.")

    st.subheader("The UNSURE verdict: what it answers, and which errors it catches")
    fam = df["familiarity"].to_numpy(np.float64) if "familiarity" in df else None
    fam = None if fam is None or np.isnan(fam).all() else fam
    vs = verdict_summary(y, z, fam, ctx.lm.verdict, ctx.threshold, ctx.lm.temperature)
    a, b, c, d = st.columns(4)
    a.metric("Coverage (decided)", pct(1 - vs["share_unsure"]), help="share of images that get REAL or FAKE")
    b.metric("Selective accuracy", pct(vs["accuracy_decided"]), help="accuracy on the decided images")
    c.metric("Errors caught by UNSURE", pct(vs["errors_caught_by_unsure"]),
             help=f"of the {vs['errors']:,} wrong calls at the threshold, the share that is UNSURE")
    d.metric("Wrong and not UNSURE", pct(vs["share_wrong_decided"]), help="share of ALL images")
    st.caption(f"UNSURE near the threshold: {pct(vs['share_unsure_band'])} · unlike the training data: "
               f"{pct(vs['share_unsure_unfamiliar'])}. " + " ".join(ctx.lm.verdict.describe(ctx.threshold,
                                                                                             ctx.lm.temperature)))
    if ctx.lm.verdict.has_band:
        curve = conformal_curve(y, z, fam, ctx.lm.verdict, ctx.threshold, ctx.lm.temperature)
        both = pd.concat([
            pd.DataFrame({"coverage": curve["coverage"], "accuracy": curve["accuracy_decided"], "alpha": curve["alpha"],
                          "curve": "UNSURE at conformal level alpha"}),
            charts.thin(pd.DataFrame({"coverage": rc["coverage"], "accuracy": rc["accuracy"]})).assign(
                alpha=np.nan, curve="abstaining by confidence")])
        chart = charts.lines(both, "coverage", "accuracy", series="curve", x_title="coverage (share decided)",
                             y_title="accuracy on decided images", x_reverse=True, height=300,
                             dashed={"abstaining by confidence": True},
                             tooltip=["curve", "alpha", charts.tip("coverage:Q", ".3f"),
                                      charts.tip("accuracy:Q", ".4f")])
        st.vega_lite_chart(chart.to_dict(), key="unsure_coverage")
        static_table(curve, {c: "{:.4f}" for c in ("coverage", "accuracy_decided", "errors_caught_by_unsure",
                                                   "share_wrong_decided")})


main()
