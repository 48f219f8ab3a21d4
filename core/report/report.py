"""A one-file audit report: everything the dashboard says about a model on a dataset, in one HTML file.

    python -m core report --weights weights/default.pt --data data/sample/test --out report.html

The file is self-contained: figures and thumbnails are PNGs embedded as data: URIs, the styles are
inline, and nothing refers to a network address, so it opens offline and can be handed on as is.
It holds the model card (core.report.cards), the headline metrics, confusion matrix and calibration at the
threshold (core.inference.evaluate's predictions, core.metrics.metrics), the Limitations verdicts (core.audits.limitations),
the generalization leaderboard when one is stored (core.audits.generalize), the residual spectra and the
shortcut check (core.audits.forensics), verdict stability (core.audits.stability), the worst slices
(core.audits.slices) and the data issues: label issues, near duplicates, outliers and leakage from the training
data (core.audits.data_issues). Every result comes from the same cached computations as the app (runs/), so the
report's numbers are the pages' numbers for the same model, data and threshold. The numbers are
also embedded as JSON (<script id="audit-data" type="application/json">) for machines.
"""
from __future__ import annotations

import argparse
import base64
import html
import json
import math
import re
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from core.data.labels import CLASS_NAMES

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.45}
h1{border-bottom:2px solid #444;padding-bottom:.2em}h2{margin-top:2em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3}td.l,th.l{text-align:left}.warn{background:#fff3cd;border-left:4px solid #e0a800;padding:.5em 1em}
.ok{background:#e8f5e9;border-left:4px solid #43a047;padding:.5em 1em}.muted{color:#666;font-size:.9em}
.thumbs{display:flex;flex-wrap:wrap;gap:6px}.thumbs figure{margin:0;width:104px;font-size:.72em;text-align:center}
.thumbs img{width:96px;height:96px;image-rendering:pixelated;border:1px solid #ccc}
.scroll{overflow-x:auto;max-width:100%}.figs{display:flex;flex-wrap:wrap;gap:12px;align-items:flex-start}code{background:#f3f3f3;padding:0 3px}
"""


def esc(text) -> str:
    """HTML-escaped text; '://' is broken up so no text can ever read as a network address."""
    return html.escape(str(text)).replace("://", ":&#47;&#47;")


def fmt(v, spec=".4f") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (int, np.integer)):
        return f"{int(v):,}"
    if isinstance(v, (float, np.floating)):
        return format(float(v), spec)
    return str(v)


def table_html(df: pd.DataFrame, spec=".4f", max_rows: int = 200) -> str:
    cols = list(df.columns)
    # Columns holding only whole numbers (counts stored as float by pandas) print as integers.
    numeric = {c for c in cols if pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c])}
    whole = {c for c in numeric if df[c].notna().any()
             and np.all(np.mod(df[c].dropna().to_numpy(float), 1) == 0) and c not in ("accuracy", "value")}
    head = "".join(f"<th>{esc(c)}</th>" if c in numeric else f"<th class='l'>{esc(c)}</th>" for c in cols)
    rows = []
    for _, r in df.head(max_rows).iterrows():
        cells = []
        for c in cols:
            v = r[c]
            if c in whole and v is not None and not (isinstance(v, float) and math.isnan(v)):
                v = int(v)
            left = c not in numeric
            cells.append(f"<td class='l'>{esc(fmt(v, spec))}</td>" if left else f"<td>{esc(fmt(v, spec))}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    more = f"<p class='muted'>{len(df) - max_rows:,} more rows not shown.</p>" if len(df) > max_rows else ""
    return f"<div class='scroll'><table><tr>{head}</tr>{''.join(rows)}</table></div>{more}"


def img_tag(png: bytes, alt: str = "", width: int | None = None) -> str:
    w = f" width='{width}'" if width else ""
    return f"<img alt='{esc(alt)}'{w} src='data:image/png;base64,{base64.b64encode(png).decode()}'>"


def markdown_html(md: str) -> str:
    """The subset of Markdown that core.report.cards writes: headings, bullets, pipe tables, `code`, paragraphs."""
    out, in_list, table = [], False, []

    def inline(s):
        return re.sub(r"`([^`]*)`", r"<code>\1</code>", esc(s))

    def flush_table():
        if table:
            rows = [[c.strip() for c in t.strip().strip("|").split("|")] for t in table
                    if not re.match(r"^\|\s*-", t.strip())]
            out.append("<table>" + "".join(
                "<tr>" + "".join(f"<{'th' if k == 0 else 'td'}>{inline(c)}</{'th' if k == 0 else 'td'}>" for c in r)
                + "</tr>" for k, r in enumerate(rows)) + "</table>")
            table.clear()

    for line in md.splitlines():
        if line.startswith("|"):
            table.append(line)
            continue
        flush_table()
        if line.startswith("- "):
            if not in_list:
                out.append("<ul>")
                in_list = True
            out.append(f"<li>{inline(line[2:])}</li>")
            continue
        if in_list:
            out.append("</ul>")
            in_list = False
        if line.startswith("#"):
            level = min(6, len(line) - len(line.lstrip("#")) + 1)
            out.append(f"<h{level}>{inline(line.lstrip('#').strip())}</h{level}>")
        elif line.strip():
            out.append(f"<p>{inline(line)}</p>")
    flush_table()
    if in_list:
        out.append("</ul>")
    return "\n".join(out)


def _thumbs(ds, ids: list[str], captions: list[str], side: int = 96) -> str:
    return _figures([(ds, pid, cap) for pid, cap in zip(ids, captions)], side)


def _figures(items, side: int = 96) -> str:
    """Thumbnails of (dataset, item id, caption) triples, in order; items that cannot be read are left out."""
    from PIL import Image
    from core.report.figures import png_bytes
    from core.data.images import ImageError
    indexes: dict[int, dict] = {}
    figs = []
    for ds, pid, cap in items:
        index = indexes.setdefault(id(ds), {ds.item_id(i): i for i in range(len(ds))})
        try:
            img = ds.load(index[pid]).image
        except (KeyError, ImageError):
            continue
        img = img.copy()
        img.thumbnail((side, side), Image.Resampling.LANCZOS)
        if max(img.size) < side:        # small images shown pixel for pixel, enlarged
            f = side // max(img.size)
            img = img.resize((img.width * f, img.height * f), Image.Resampling.NEAREST)
        figs.append(f"<figure>{img_tag(png_bytes(img), pid)}<figcaption>{esc(cap)}</figcaption></figure>")
    return f"<div class='thumbs'>{''.join(figs)}</div>" if figs else "<p class='muted'>No images.</p>"


def data_issues_html(di: dict, ds, reference) -> str:
    """The data-issues section: what was checked and how, counts per type, the evaluation without the flagged
    images, the worst label issues and the leakage pairs side by side (core.audits.data_issues)."""
    from core.audits.data_issues import ISSUE_TITLES, ISSUES
    issues, summary, rescore = di["issues"], di["summary"], di["rescore"]
    counts = pd.DataFrame([{"issue": ISSUE_TITLES[k], "images": summary["counts"][k]} for k in ISSUES])
    leak = (f"Leakage: images of this data whose 8 x 8 content thumbnail is within {summary['leak_ratio']} of a "
            f"training image's ({esc(summary['reference'])})." if summary.get("reference") else
            "Leakage is not checked: no training data was given (<code>--reference</code>).")
    body = (f"<p>cleanlab's Datalab on {summary['images']:,} images: label issues from "
            f"{esc(summary['pred_probs_meaning'])}; near duplicates on content thumbnails; outliers on the model's "
            f"features. {leak} <code>python -m core data-issues</code> writes every flagged image.</p>"
            + table_html(counts.fillna("not checked")) + "<h3>The evaluation without the flagged images</h3>"
            + table_html(rescore))
    labels = issues[issues["issue"] == "label"].head(8)
    if len(labels):
        body += "<h3>Worst label issues</h3>" + _thumbs(ds, labels["path"].tolist(), [
            f"labelled {g}, looks {s} (score {v:.3f})" for g, s, v in
            zip(labels["given_label"], labels["suggested_label"], labels["score"])])
    pairs = issues[issues["issue"] == "leakage"].head(6)
    if len(pairs) and reference is not None:
        body += "<h3>Leakage pairs: each image beside its training image</h3>" + _figures(
            [item for _, r in pairs.iterrows() for item in
             ((ds, r["path"], f"{r['path']} (ratio {r['score']:.3f})"), (reference, r["pair"], f"train {r['pair']}"))])
    return body


# ----------------------------------------------------------------------------- the report

def collect(lm, weights_path, ds, threshold: float = 0.5, runs_dir="runs", sample_dir="data/sample",
            logo_dir=None, reencode_quality: int | None = 90, log=None, reference=None) -> dict:
    """Every number of the report, from the cached computations the app uses (see module docstring). `reference`:
    the training data the data-issue check looks for leakage from (None: not checked)."""
    from core.inference.evaluate import cached_evaluation
    from core.audits.forensics import cached_analysis, cached_reencoding, load_spectra_npz
    from core.audits.limitations import audit
    from core.metrics.metrics import classification_metrics, reliability_bins
    from core.audits.slices import cached_properties, join, members, slice_table
    from core.audits.stability import cached_dataset_stability, flip_table
    log = log or (lambda s: None)
    log("evaluation")
    df, stored = cached_evaluation(lm, ds, runs_dir)
    y, p = df["label"].to_numpy(), df["prob_fake"].to_numpy()
    m = classification_metrics(y, p, threshold)
    out = {"model": Path(weights_path).name, "weights_sha256": lm.sha256, "arch": lm.arch,
           "dataset": ds.describe(), "threshold": threshold, "created": time.strftime("%Y-%m-%d %H:%M:%S"),
           "metrics": m, "n_skipped": stored.get("n_skipped", 0), "card_metrics": stored,
           "reliability": reliability_bins(y, p)}
    log("forensics")
    fdir = cached_analysis(ds, runs_dir)
    out["shortcuts"] = json.loads((fdir / "shortcuts.json").read_text())
    out["spectra"] = load_spectra_npz(fdir / "spectra.npz")
    if reencode_quality:
        log("re-encoding control")
        out["reencoding"] = cached_reencoding(lm, ds, runs_dir, reencode_quality, threshold)
    log("stability")
    out["flip_rates"] = flip_table(cached_dataset_stability(lm, ds, runs_dir), threshold)
    log("slices")
    merged = join(df, cached_properties(ds, runs_dir))
    out["slices"] = slice_table(merged, threshold)
    out["slice_members"] = [members(merged, r["dimension"], r["slice"], threshold)
                            for _, r in out["slices"].head(3).iterrows()]
    wrong = df[(df["prob_fake"] >= threshold).astype(int) != df["label"]].copy()
    wrong["confidence"] = wrong["prob_fake"].where(wrong["prob_fake"] >= threshold, 1 - wrong["prob_fake"])
    out["errors"] = wrong.sort_values("confidence", ascending=False)
    log("data issues")
    from core.audits.data_issues import cached_data_issues, rescore_without
    issues, summary = cached_data_issues(lm, ds, reference, runs_dir)
    out["data_issues"] = {"issues": issues, "summary": summary,
                          "rescore": rescore_without(df, issues["path"], threshold)}
    log("limitations")
    out["limitations"] = audit(lm, ds, threshold, Path(sample_dir), runs_dir, log=log)
    from core.audits.new_content import DEFAULT_PROBE, evaluate_new_content, probe_available
    out["new_content"] = None
    if probe_available(DEFAULT_PROBE):
        log("new-content probe")
        out["new_content"] = evaluate_new_content(lm, DEFAULT_PROBE, runs_dir, threshold)
    out["leaderboard"], out["leaderboard_dir"] = None, str(logo_dir) if logo_dir else None
    if logo_dir is not None:
        from core.audits.generalize import load_leaderboard
        out["leaderboard"] = load_leaderboard(logo_dir)
    return out


def headline(m: dict) -> dict:
    pc = m.get("per_class", {})
    return {"images": m.get("n"), "accuracy": m.get("accuracy"), "roc_auc": m.get("roc_auc"),
            "average_precision": m.get("average_precision"), "ece": m.get("ece"), "mce": m.get("mce"),
            "brier": m.get("brier"), "recall_REAL": pc.get("REAL", {}).get("recall"),
            "recall_FAKE": pc.get("FAKE", {}).get("recall"), "precision_FAKE": pc.get("FAKE", {}).get("precision"),
            "errors": m.get("errors"), "errors_confidence_over_0.9": m.get("errors_confidence_over_0.9")}


def render(data: dict, lm, ds, weights_path, reference=None) -> str:
    """The HTML document for `collect`'s numbers (`reference`: the training data of the leakage pairs' images)."""
    from core.report.cards import model_card
    from core.report.figures import line_plot_png
    from core.audits.forensics import FLAG_THRESHOLD, radial_table, spectrum_figures
    m, t = data["metrics"], data["threshold"]
    h = headline(m)
    parts = [f"<h1>Audit report: {esc(data['model'])}</h1>",
             f"<p class='muted'>Model <code>{esc(data['model'])}</code> ({esc(data['arch'])}, sha256 "
             f"<code>{esc(data['weights_sha256'][:16])}</code>) on {esc(data['dataset'])}; threshold on P(AI) "
             f"{t:.2f}; made {esc(data['created'])} by <code>python -m core report</code>. Labels: 0 = REAL, 1 = FAKE; "
             "P(AI) = P(FAKE).</p>"]
    toc = ["Headline metrics", "Confusion matrix", "Calibration", "Limitations verdicts", "Generalization",
           "Shortcut check", "Residual spectra", "Verdict stability", "Worst slices", "Data issues",
           "Most confident errors", "Model card"]
    parts.append("<p>" + " · ".join(f"<a href='#s{k}'>{esc(s)}</a>" for k, s in enumerate(toc)) + "</p>")

    def section(k, body):
        parts.append(f"<h2 id='s{k}'>{esc(toc[k])}</h2>{body}")

    section(0, table_html(pd.DataFrame([{"metric": k, "value": fmt(v)} for k, v in h.items()]))
            + (f"<p class='muted'>{data['n_skipped']:,} unreadable file(s) skipped.</p>" if data["n_skipped"] else ""))
    (tn, fp), (fn, tp) = m["confusion_matrix"]
    cm = pd.DataFrame([{"true": "REAL", "called REAL": tn, "called FAKE": fp, "share right": tn / max(tn + fp, 1)},
                       {"true": "FAKE", "called REAL": fn, "called FAKE": tp, "share right": tp / max(fn + tp, 1)}])
    section(1, table_html(cm))
    rel = pd.DataFrame(data["reliability"])
    filled = rel[rel["count"] > 0]
    png = line_plot_png([{"x": filled["confidence"], "y": filled["accuracy"], "name": "model"}],
                        "reliability (bins of confidence, decided at 0.5)", "mean confidence", "accuracy",
                        xlim=(0.5, 1), ylim=(0, 1), diagonal=True)
    section(2, f"<p>ECE {fmt(m.get('ece'))}, MCE {fmt(m.get('mce'))}, Brier {fmt(m.get('brier'))}, "
               f"log loss {fmt(m.get('log_loss'))}.</p><div class='figs'>{img_tag(png, 'reliability')}"
               f"{table_html(rel)}</div>")
    lim = pd.DataFrame([{"limitation": v.limitation, "status": v.status, "verdict": v.text} for v in data["limitations"]])
    section(3, table_html(lim) if len(lim) else "<p>No verdicts.</p>")
    lb = data.get("leaderboard")
    if lb is not None:
        board, summary = lb
        section(4, f"<p>Leave-one-generator-out leaderboard stored in <code>{esc(data['leaderboard_dir'])}</code>: one "
                   "model per held-out FAKE family, trained with that folder's recipe (core.audits.generalize), which need "
                   "not be this model's.</p>"
                + table_html(board) + f"<p class='muted'>{esc(json.dumps(summary, default=str))}</p>")
    else:
        section(4, "<p class='muted'>No stored leave-one-generator-out leaderboard for this model "
                   "(<code>python -m core generalize</code> makes one; pass <code>--logo DIR</code>).</p>")
    nc = data.get("new_content")
    if nc is not None:
        table, summary = nc
        parts.append("<h3>New content: the probe (data/new_content)</h3><p>Content domains the training data lacks "
                     "(drawings, icons, art, new photographs, and fakes of them made by generators trained here): "
                     "leave-one-generator-out measures a new generator on old content, this measures new content. "
                     f"Worst domain <b>{esc(summary['worst_domain'])}</b>: {fmt(summary['worst_wrong_decided'], '.1%')} "
                     f"wrong and not UNSURE; REAL images UNSURE {fmt(summary['real_unsure'], '.1%')}; ROC AUC "
                     f"{fmt(summary['auc'], '.3f')} (<code>python -m core new-content</code>).</p>" + table_html(table))
    s = data["shortcuts"]
    acc = s["metadata_only_accuracy"]
    box = (f"<div class='warn'>Flagged: file-level features alone separate the classes (balanced accuracy "
           f"{fmt(acc, '.3f')} &gt; {FLAG_THRESHOLD:.2f}); the detector may be learning how the files were made.</div>"
           if s["flagged"] else f"<div class='ok'>Not flagged: metadata-only balanced accuracy {fmt(acc, '.3f')} "
                                f"(flagged above {FLAG_THRESHOLD:.2f}).</div>")
    per = pd.DataFrame([{"property": g, "balanced accuracy alone": v} for g, v in s["per_feature_accuracy"].items()])
    from core.audits.forensics import distributions_table
    body = box + table_html(per) + "<h3>Distributions per class</h3>" + table_html(
        distributions_table(s["per_class"]), ".3f")
    rc = data.get("reencoding")
    if rc:
        rows = pd.DataFrame([{"metric": k, "original files": rc["clean"][k], "re-encoded": rc["reencoded"][k],
                              "change": None if rc["clean"][k] is None or rc["reencoded"][k] is None
                              else rc["reencoded"][k] - rc["clean"][k]}
                             for k in ("accuracy", "roc_auc", "recall_REAL", "recall_FAKE", "ece")])
        body += (f"<h3>Re-encoding control</h3><p>Both classes re-encoded identically ({rc['size']}, JPEG quality "
                 f"{rc['quality']}, {rc['subsampling']}) and evaluated again; metadata-only accuracy of the copies "
                 f"{fmt(rc['metadata_only_accuracy_after'], '.3f')}.</p>" + table_html(rows))
    section(5, body)
    sp = data["spectra"]
    figs = spectrum_figures(sp)
    imgs = "".join(img_tag(b, n, None if n == "spectrum_1d.png" else 200) for n, b in figs.items())
    section(6, f"<p>Mean log(1 + |FFT|) of the high-pass residual, centre {sp['crop']}x{sp['crop']} crop, per class, "
               f"FAKE - REAL, per source, and the azimuthal means (core.audits.forensics).</p><div class='figs'>{imgs}</div>"
               + table_html(radial_table(sp)))
    fl = data["flip_rates"]
    section(7, "<p>Share of calls that change under each everyday change (core.audits.stability), with 95% Wilson intervals.</p>"
            + table_html(fl[["change", "description", "images", "flips", "flip_rate", "ci_low", "ci_high",
                             "flips_to_FAKE", "flips_to_REAL", "accuracy_changed"]]))
    sl = data["slices"]
    body = table_html(sl.head(15))
    for (_, r), mem in zip(sl.head(3).iterrows(), data["slice_members"]):
        wrong = mem[~mem["correct"]].head(8)
        body += (f"<h3>{esc(r['dimension'])}: {esc(r['slice'])} — {fmt(r['accuracy'])} of {r['images']:,}</h3>"
                 + _thumbs(ds, wrong["path"].tolist(),
                           [f"P(AI) {v:.3f} true {CLASS_NAMES[int(lab)]}" for v, lab in zip(wrong["prob_fake"], wrong["label"])]))
    section(8, body)
    section(9, data_issues_html(data["data_issues"], ds, reference))
    err = data["errors"].head(12)
    section(10, _thumbs(ds, err["path"].tolist(), [f"P(AI) {v:.3f} true {CLASS_NAMES[int(lab)]}"
                                                 for v, lab in zip(err["prob_fake"], err["label"])]))
    card_split = data["card_metrics"]
    section(11, "<p class='muted'>core.report.cards on this evaluation, at threshold 0.5 as every model card.</p>"
            + markdown_html(model_card(str(weights_path), lm, {"evaluation": card_split})))
    machine = {"model": data["model"], "weights_sha256": data["weights_sha256"], "dataset": data["dataset"],
               "threshold": t, "headline": h, "confusion_matrix": m["confusion_matrix"],
               "metadata_only_accuracy": acc, "shortcut_flagged": s["flagged"],
               "reencoding": {k: rc[k] for k in ("quality", "delta_accuracy", "delta_roc_auc")} if rc else None,
               "flip_rates": {r["change"]: r["flip_rate"] for r in fl.to_dict("records")},
               "worst_slices": sl.head(3)[["dimension", "slice", "images", "accuracy", "ci_low", "ci_high"]].to_dict("records"),
               "limitations": [{"limitation": v.limitation, "status": v.status} for v in data["limitations"]],
               "data_issues": {**{k: data["data_issues"]["summary"][k] for k in ("counts", "flagged_images",
                                                                                "pred_probs", "reference")},
                               "rescore": data["data_issues"]["rescore"].to_dict("records")}}
    blob = json.dumps(machine, default=float).replace("</", "<\\/")
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>Audit report: "
            f"{esc(data['model'])}</title><style>{CSS}</style></head><body>{''.join(parts)}"
            f"<script id='audit-data' type='application/json'>{blob}</script></body></html>")


def build_report(lm, weights_path, ds, threshold: float = 0.5, runs_dir="runs", sample_dir="data/sample",
                 logo_dir=None, reencode_quality: int | None = 90, log=None, reference=None) -> str:
    """The report as one HTML string (see module docstring); `reference`: training data for the leakage check."""
    data = collect(lm, weights_path, ds, threshold, runs_dir, sample_dir, logo_dir, reencode_quality, log, reference)
    return render(data, lm, ds, weights_path, reference)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Write a self-contained HTML audit report of a model on a dataset.")
    p.add_argument("--weights", default="weights/default.pt", help="checkpoint (default: weights/default.pt)")
    p.add_argument("--data", required=True, help="dataset path (any supported format)")
    p.add_argument("--out", required=True, help="the HTML file to write")
    p.add_argument("--split", default="test", help="split of a CIFAKE root (default: test)")
    p.add_argument("--class-map", default=None, help="map class names to REAL/FAKE, e.g. 'AiArtData=FAKE,RealArt=REAL'")
    p.add_argument("--threshold", type=float, default=0.5, help="P(AI) threshold (default: 0.5)")
    p.add_argument("--runs", default="runs", help="cache folder shared with the app (default: runs)")
    p.add_argument("--sample", default="data/sample", help="CIFAKE root with test and ood splits for the "
                                                          "unseen-generator verdict (default: data/sample)")
    p.add_argument("--logo", default="weights/logo", help="folder of a stored leave-one-generator-out leaderboard "
                                                          "(core.audits.generalize --out DIR), used when it holds "
                                                          "leaderboard.csv (default: weights/logo, the shipped recipe's)")
    p.add_argument("--reference", default=None,
                   help="training data for the data-issue leakage check: a split of the --data root or a dataset "
                        "path, or 'none' (default: the root's train split when --split is another one)")
    p.add_argument("--reencode-quality", type=int, default=90, help="JPEG quality of the re-encoding control; "
                                                                    "0 skips it (default: 90)")
    args = p.parse_args(argv)
    from core.model.checkpoint import CheckpointError, load_checkpoint
    from core.data.datasets import DatasetError, open_dataset
    from core.data.labels import LabelMappingError, parse_class_map
    from core.audits.data_issues import open_reference
    try:
        lm = load_checkpoint(args.weights)
        ds = open_dataset(args.data, split=args.split, class_map=parse_class_map(args.class_map))
        reference = open_reference(args.data, args.split, args.reference, parse_class_map(args.class_map))
    except (CheckpointError, DatasetError, LabelMappingError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    logo = args.logo if args.logo and (Path(args.logo) / "leaderboard.csv").is_file() else None
    doc = build_report(lm, args.weights, ds, args.threshold, args.runs, args.sample, logo,
                       args.reencode_quality or None, log=lambda s: print(f"... {s}", file=sys.stderr),
                       reference=reference)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(doc, encoding="utf-8")
    print(f"wrote {out} ({len(doc.encode()) / 1e6:.2f} MB)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
