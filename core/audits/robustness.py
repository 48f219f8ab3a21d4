"""Robustness sweeps and the Grad-CAM audit behind the limitations page.

    python -m core robustness --weights weights/default.pt --data data/sample/test --out runs/sweep

`sweep` measures accuracy, ECE, AUC and per-class recall under every named shift at several
levels (core.data.shifts.SWEEP_LEVELS). When every image already has the model's input size (CIFAKE,
the sample), preprocessing is the identity, so the set is decoded once and each shift is applied to
whole batches of tensors; otherwise each image is decoded, shifted and preprocessed per level
through the dataset (slower, same definition).
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from core.model.checkpoint import LoadedModel, load_checkpoint, result_lock
from core.data.datasets import ImageDataset, open_dataset, stratified_subset
from core.inference.evaluate import RESULT_FORMAT, _predict_rows, dataset_fingerprint, decode_dataset, predict_logits
from core.model.gradcam import called_fake, deletion_test, gradcam_pair, heat_concentration
from core.metrics.metrics import apply_temperature, classification_metrics
from core.data.preprocess import to_model_input
from core.data.shifts import SWEEP_LEVELS, Shift
from core.metrics.stats import mean_interval, wilson_interval

# The sweep runs 36 passes over its images (35 shift levels + clean): on more than this many images it
# runs on a seeded, label-stratified subsample of this size, and every accuracy comes with its 95%
# Wilson interval. The passes are forward-bound (1 s of one core per 500 images and level, measured
# with the shipped two-stream model): 200 images are 7,200 forwards, about 6.5 s at its fused limit of
# ~1,100 img/s on 2 cores, which with the stability battery and the Grad-CAM audit (core.audits.limitations)
# keeps the Limitations page's first view within its 20 s; the interval half-width is then about 3
# points near 95% accuracy (about 2 at 500 images, for 2.5x the work).
SWEEP_MAX_IMAGES = 200


def decode_for_sweep(lm: LoadedModel, ds: ImageDataset, progress=None, indices: list[int] | None = None):
    """(Decoded at the model's preprocessing, identity_preprocess), of `indices` (default all items).

    identity_preprocess is True when every decoded image already had the model's input size and no
    upsampling is configured, i.e. the decoded x holds the original pixels and shifts may be applied to x.
    """
    dec = decode_dataset(ds, lm.preprocess, progress=progress, indices=indices)
    identity = lm.preprocess.upsample_from is None and lm.preprocess.crops == 1 and \
        _all_native_size(ds, lm.preprocess.size)
    return dec, identity


def _all_native_size(ds: ImageDataset, size: int, sample: int = 64) -> bool:
    """Whether the dataset's images are stored at size x size (checked on an even sample of items)."""
    idx = np.linspace(0, len(ds) - 1, min(sample, len(ds))).astype(int)
    for i in idx:
        try:
            if ds.load(int(i)).original_size != (size, size):
                return False
        except Exception:
            continue
    return True


def _row(name, level, y, z, lm, seconds, n_total):
    p = apply_temperature(z, lm.temperature)
    m = classification_metrics(y, p)
    lo, hi = wilson_interval(m["n"] - m["errors"], m["n"]) if m["n"] else (None, None)
    return {"shift": name, "level": level, "n": m["n"], "n_total": n_total, "accuracy": m.get("accuracy"),
            "accuracy_ci_low": lo, "accuracy_ci_high": hi, "ece": m.get("ece"),
            "roc_auc": m.get("roc_auc"), "recall_REAL": m["per_class"]["REAL"]["recall"] if m["n"] else None,
            "recall_FAKE": m["per_class"]["FAKE"]["recall"] if m["n"] else None,
            "mean_prob_fake": float(np.mean(p)) if len(p) else None, "seconds": round(seconds, 3)}


def sweep(lm: LoadedModel, ds: ImageDataset, levels: dict | None = None, batch_size: int = 512,
          progress=None, max_images: int | None = SWEEP_MAX_IMAGES, on_row=None, workers: int = 1) -> pd.DataFrame:
    """One row per (shift, level), plus ("none", 0) for the clean set; see module docstring.

    Runs on `stratified_subset(labels, max_images)` when the dataset is larger (`n` of `n_total` images;
    accuracy_ci_low/high: 95% Wilson interval). `on_row(row dict)` is called as each row is finished,
    so a page can show the levels as they come; `progress(done, total)` after each shift level.

    workers > 1: the shift levels are measured by that many threads on one torch thread each
    (core.inference.threads), taking levels from one queue; callbacks then come in the order the levels finish
    (one at a time), the returned table is in the same order as with one worker, and every number is the
    same (each level's images and forward pass do not depend on which thread measures them).
    """
    levels = levels or SWEEP_LEVELS
    jobs = [(n, lv) for n, lvs in levels.items() for lv in lvs]
    subset = stratified_subset(ds.labels, max_images)
    dec, identity = decode_for_sweep(lm, ds, indices=subset)
    x, y_np = dec.x, dec.y.numpy()

    def logits_of(xx):
        return np.concatenate([predict_logits(lm.inference_model, xx[i:i + batch_size], lm.device).numpy()
                               for i in range(0, len(xx), batch_size)]) if len(xx) else np.zeros(0)

    def measure(name, level):
        t0 = time.perf_counter()
        if identity:
            zs = []
            for i in range(0, len(x), batch_size):
                # Per-image seeds = dataset positions: the same noise as the per-image path (ds.record).
                xb = Shift(name, level).apply(x[i:i + batch_size], index=dec.index[i:i + batch_size].tolist())
                zs.append(predict_logits(lm.inference_model, xb, lm.device).numpy())
            z, yy = (np.concatenate(zs) if zs else np.zeros(0)), y_np
        else:
            df, *_ = _predict_rows(lm, ds, batch_size, shift=Shift(name, level), indices=subset)
            z, yy = df["logit"].to_numpy(), df["label"].to_numpy()
        return _row(name, level, yy, z, lm, time.perf_counter() - t0, len(ds))

    t0 = time.perf_counter()
    rows = [_row("none", 0.0, y_np, logits_of(x), lm, time.perf_counter() - t0, len(ds))] + [None] * len(jobs)
    if on_row:
        on_row(rows[0])
    guard = threading.Lock()
    todo = iter(range(len(jobs)))
    done, errors = [0], []

    def work():
        while not errors:
            with guard:
                k = next(todo, None)
            if k is None:
                return
            try:
                row = measure(*jobs[k])
            except BaseException as e:      # re-raised in the caller
                errors.append(e)
                return
            with guard:                      # callbacks one at a time, progress counting up
                rows[k + 1] = row
                done[0] += 1
                if on_row:
                    on_row(row)
                if progress:
                    progress(done[0], len(jobs))
    if workers <= 1:
        work()
    else:
        from core.inference.threads import start_single_threaded
        for t in start_single_threaded([work] * workers, name="sweep worker"):
            t.join()
    if errors:
        raise errors[0]
    return pd.DataFrame(rows)


def gradcam_audit(lm: LoadedModel, x_uint8: torch.Tensor, top: float = 0.1, batch_size: int = 256, seed: int = 0,
                  threshold: float = 0.5) -> dict:
    """How concentrated Grad-CAM maps are, and whether their hottest pixels matter more than random ones.

    The maps explain the class called at `threshold` (on P(FAKE) with the model's temperature), as
    everywhere in the app. Returns per-image arrays (concentration, drop_cam, drop_random, flip_cam,
    flip_random) and means.
    """
    conc, dc, dr, fc, fr = [], [], [], [], []
    for i in range(0, len(x_uint8), batch_size):
        x = to_model_input(x_uint8[i:i + batch_size].to(lm.device))
        cam_fake, cam_real, logits = gradcam_pair(lm.inference_model, x)
        called = called_fake(logits, lm.temperature, threshold)
        cams = torch.where(called.view(-1, 1, 1), cam_fake, cam_real)
        conc.append(heat_concentration(cams, top))
        d = deletion_test(lm.inference_model, x, cams, frac=top, seed=seed + i, temperature=lm.temperature, threshold=threshold)
        dc.append(d["drop_cam"]); dr.append(d["drop_random"]); fc.append(d["flip_cam"]); fr.append(d["flip_random"])
    cat = lambda v: torch.cat(v).float().cpu().numpy() if v else np.zeros(0)   # noqa: E731
    out = {"concentration": cat(conc), "drop_cam": cat(dc), "drop_random": cat(dr),
           "flip_cam": cat(fc), "flip_random": cat(fr), "top_fraction": top}
    out["summary"] = audit_summary(out, top)
    return out


def audit_summary(arrays: dict, top: float) -> dict:
    """Means of the audit's per-image arrays, each with its 95% interval (t interval of a mean; Wilson for
    the flip rates), and the paired difference drop_cam - drop_random with its interval. Intervals are
    [lo, hi] lists (JSON), None when undefined (fewer than 2 images)."""
    def mean(k):
        v = np.asarray(arrays[k], dtype=np.float64)
        return float(np.nanmean(v)) if len(v) and not np.isnan(v).all() else None

    def ci(v):
        lo, hi = mean_interval(v)
        return None if np.isnan(lo) else [lo, hi]

    def rate_ci(k):
        v = np.asarray(arrays[k], dtype=np.float64)
        return list(wilson_interval(int(v.sum()), len(v))) if len(v) else None
    n = int(len(arrays["concentration"]))
    gap = np.asarray(arrays["drop_cam"], np.float64) - np.asarray(arrays["drop_random"], np.float64)
    return {
        "n": n, "uniform_concentration": top,
        "concentration_mean": mean("concentration"), "concentration_ci": ci(arrays["concentration"]),
        "drop_cam_mean": mean("drop_cam"), "drop_cam_ci": ci(arrays["drop_cam"]),
        "drop_random_mean": mean("drop_random"), "drop_random_ci": ci(arrays["drop_random"]),
        "drop_gap_ci": ci(gap),
        "flip_rate_cam": mean("flip_cam"), "flip_rate_cam_ci": rate_ci("flip_cam"),
        "flip_rate_random": mean("flip_random"), "flip_rate_random_ci": rate_ci("flip_random"),
    }


def gradcam_audit_dataset(lm: LoadedModel, ds: ImageDataset, n: int = 500, seed: int = 0, top: float = 0.1,
                          threshold: float = 0.5) -> dict:
    """`gradcam_audit` on a seeded random sample of at most n decodable items of ds (only those are decoded).

    Adds "ids" and "labels" (N,) of the audited items to the result; undecodable items are left out.
    """
    idx = np.sort(np.random.default_rng(seed).permutation(len(ds))[:n])
    recs = [r for r in (ds.record(int(i), lm.preprocess) for i in idx) if r["image"] is not None]
    x = torch.stack([r["image"] for r in recs]) if recs else \
        torch.zeros(0, 3, lm.preprocess.size, lm.preprocess.size, dtype=torch.uint8)   # (N, 3, S, S) uint8
    out = gradcam_audit(lm, x, top=top, seed=seed, threshold=threshold)
    out["ids"] = [r["id"] for r in recs]
    out["labels"] = np.array([r["label"] for r in recs], dtype=np.int64)
    return out


AUDIT_ARRAYS = ("concentration", "drop_cam", "drop_random", "flip_cam", "flip_random", "labels")
AUDIT_FORMAT = 2        # 2: the summary carries 95% intervals (audit_summary); part of the stored result's key


def cached_gradcam_audit(lm: LoadedModel, ds: ImageDataset, runs_dir="runs", n: int = 500, seed: int = 0,
                         top: float = 0.1, threshold: float = 0.5) -> dict:
    """`gradcam_audit_dataset`, computed once per (weights, dataset, n, seed, top, threshold) and stored as
    runs/gradcam-audit-KEY/{audit.npz, audit.json}; later calls (and other processes) read it back."""
    from core.report.audit_cache import json_bytes, result_dir, write_result_dir
    out = result_dir(runs_dir, "gradcam-audit", RESULT_FORMAT, AUDIT_FORMAT, lm.sha256, dataset_fingerprint(ds), n, seed, top,
                     threshold, json.dumps(lm.preprocess.to_dict(), sort_keys=True))
    with result_lock(out):           # a concurrent caller (the app's warm-up, another session) waits, then reads it
        try:
            meta = json.loads((out / "audit.json").read_text())
            with np.load(out / "audit.npz") as z:
                return {**{k: z[k] for k in AUDIT_ARRAYS}, "ids": meta["ids"], "summary": meta["summary"],
                        "top_fraction": meta["top_fraction"]}
        except (OSError, ValueError, KeyError):
            pass
        res = gradcam_audit_dataset(lm, ds, n=n, seed=seed, top=top, threshold=threshold)
        buf = io.BytesIO()
        np.savez(buf, **{k: np.asarray(res[k]) for k in AUDIT_ARRAYS})
        write_result_dir(out, {"audit.npz": buf.getvalue(), "audit.json": json_bytes(
            {"ids": res["ids"], "summary": res["summary"], "top_fraction": res["top_fraction"]})})
        return res


def sweep_path(runs_dir, lm: LoadedModel, ds: ImageDataset) -> Path:
    """runs/sweep-KEY.csv, KEY from the result format, weights hash, dataset fingerprint and levels."""
    key = hashlib.sha256(f"v{RESULT_FORMAT}|{lm.sha256}|{dataset_fingerprint(ds)}|"
                         f"{json.dumps(SWEEP_LEVELS, sort_keys=True)}|max{SWEEP_MAX_IMAGES}|"
                         f"{json.dumps(lm.preprocess.to_dict(), sort_keys=True)}".encode()).hexdigest()[:20]
    return Path(runs_dir) / f"sweep-{key}.csv"


def partial_path(path: Path) -> Path:
    """The rows of the sweep stored at `path` while it is being computed: one JSON object per line, appended
    as each level is measured, removed when the table is stored (read by callers in other threads and
    processes, such as a Limitations page while the app's warm-up process computes the sweep)."""
    return path.with_name(path.name + ".partial")


def _json_row(row: dict) -> str:
    return json.dumps({k: (v.item() if isinstance(v, np.generic) else v) for k, v in row.items()})


def _read_new_rows(partial: Path, offset: int) -> tuple[list[dict], int]:
    """Complete lines of `partial` after byte `offset` as rows, and the offset after the last of them."""
    try:
        with open(partial, "rb") as f:
            f.seek(offset)
            data = f.read()
    except OSError:                     # not started yet, or already stored and removed
        return [], offset
    end = data.rfind(b"\n") + 1        # a line being written is read on the next call
    return [json.loads(line) for line in data[:end].splitlines() if line.strip()], offset + end


FOLLOW_POLL_S = 0.1     # how often a caller of a sweep in progress looks for new rows


def cached_sweep(lm: LoadedModel, ds: ImageDataset, runs_dir="runs", progress=None, on_row=None,
                 workers: int = 1) -> pd.DataFrame:
    """`sweep` computed once per `sweep_path` key, stored as CSV atomically; the result format is in the
    key, so a sweep made by older code is never read.

    A caller that arrives while another thread or process computes the same sweep (the app's warm-up
    process, another session) is not kept waiting blind: it receives the rows already measured and then
    each new one (from `partial_path`, every FOLLOW_POLL_S) through its own `on_row` / `progress`, in its
    own thread, and then the stored result. If the computing process dies, the caller computes the sweep
    itself (its `on_row` then sees the rows measured so far a second time).
    `workers`: `sweep`'s (the key does not depend on it: the numbers do not).
    """
    path = sweep_path(runs_dir, lm, ds)
    partial = partial_path(path)
    lock = result_lock(path)
    total = sum(len(v) for v in SWEEP_LEVELS.values())
    seen, offset = 0, 0
    if not lock.acquire(blocking=False):
        with lock.waiting():            # the computing process may speed up while someone follows it (run_app)
            while not lock.acquire(blocking=False):
                rows, offset = _read_new_rows(partial, offset)
                for row in rows:
                    seen += 1
                    if on_row:
                        on_row(row)
                    if progress and seen > 1:
                        progress(seen - 1, total)
                time.sleep(FOLLOW_POLL_S)
    try:
        if path.is_file():
            try:
                return pd.read_csv(path)
            except (OSError, ValueError):
                pass
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(partial, "w") as live:

            def add(row):
                live.write(_json_row(row) + "\n")
                live.flush()
                if on_row:
                    on_row(row)
            try:
                df = sweep(lm, ds, progress=progress, on_row=add, workers=workers)
            except BaseException:
                partial.unlink(missing_ok=True)
                raise
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-sweep-", suffix=".csv")
        os.close(fd)
        df.to_csv(tmp, index=False)
        os.replace(tmp, path)
        partial.unlink(missing_ok=True)
        return df
    finally:
        lock.release()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Robustness sweep: metrics under every shift and level.")
    p.add_argument("--weights", default="weights/default.pt", help="checkpoint (default: weights/default.pt)")
    p.add_argument("--data", default="data/sample/test", help="dataset (default: data/sample/test)")
    p.add_argument("--split", default="test", help="split of a CIFAKE root (default: test)")
    p.add_argument("--out", default=None, help="CSV path for the table (default: print only)")
    args = p.parse_args(argv)
    from core.model.checkpoint import CheckpointError
    from core.data.datasets import DatasetError
    try:
        lm = load_checkpoint(args.weights)
        ds = open_dataset(args.data, split=args.split)
    except (CheckpointError, DatasetError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    df = sweep(lm, ds)
    print(df.to_string(index=False))
    print(f"sweep of {len(df) - 1} shift levels on {int(df['n'].iloc[0])} of {len(ds)} images (stratified subsample "
          f"above {SWEEP_MAX_IMAGES}): {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    if args.out:
        df.to_csv(args.out, index=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
