"""Evaluate a checkpoint on a dataset: per-image predictions and metrics, cached on disk.

    python -m core evaluate --weights weights/default.pt --data data/sample/test --out runs/eval
    python -m core evaluate --weights weights/default.pt --data data/sample --split ood --shift jpeg:30 --out DIR

Writes DIR/predictions.csv (path, label, prob_fake, logit, source, familiarity, verdict) and
DIR/metrics.json (accuracy,
per-class precision/recall/F1, ROC AUC, AP, ECE, MCE, Brier, confusion matrix, counts, skipped
files, weights hash, dataset description). Both are written to temporary files and renamed, so an
interrupted run never leaves a result that looks complete.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import queue
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from core.model.checkpoint import (CheckpointError, LoadedModel, atomic_write_dir, load_checkpoint, result_lock,
                         with_crops)
from core.data.datasets import DatasetError, DatasetView, ImageDataset, collate_records, open_dataset
from core.data.labels import LabelMappingError, describe_mapping, parse_class_map
from core.metrics.metrics import apply_temperature, classification_metrics
from core.data.preprocess import PreprocessConfig, to_model_input
from core.data.shifts import Shift, ShiftError, parse_shift
from core.inference.threads import map_in_lanes
from core.verdict.verdict import PART_COLUMN, colourfulness, decide, pooled_features, verdict_summary

PREDICTION_COLUMNS = ["path", "label", "prob_fake", "logit", "source", "familiarity", "verdict"]
# The version of what a stored result means. Bump it whenever preprocessing, a shift, a metric or the
# file layout changes: it is part of every runs/ cache key and of metrics.json, and a stored result
# with another version is recomputed, never served.
#   2: per-image noise seeds (core.data.shifts), one confidence definition (core.metrics.metrics.confidence)
#   3: familiarity and verdict columns (core.verdict.verdict)
#   4: an empty conformal prediction set is decided, not UNSURE (core.verdict.verdict.decide)
RESULT_FORMAT = 5


def auto_workers(n_items: int) -> int:
    # Worker start-up costs ~1 s; small sets decode faster in-process (measured in benchmarks/).
    return 0 if n_items < 4096 else min(2, os.cpu_count() or 1)


def build_loader(view: DatasetView, batch_size: int = 256, workers: int | None = None, shuffle=False,
                 sampler=None, drop_last=False, generator=None) -> DataLoader:
    """Batches of `collate_records` over a per-call view (`ds.view(preprocess, shift)`)."""
    if not isinstance(view, DatasetView):
        raise TypeError("build_loader takes ds.view(preprocess, shift): preprocessing is chosen per call")
    ds = view
    workers = auto_workers(len(ds)) if workers is None else workers
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle if sampler is None else False, sampler=sampler,
                      num_workers=workers, collate_fn=collate_records, drop_last=drop_last,
                      persistent_workers=False, generator=generator,
                      pin_memory=torch.cuda.is_available())


def prefetch(iterable, depth: int = 2):
    """Iterate `iterable` in a background thread, up to `depth` items ahead of the consumer.

    Decoding (libjpeg, file reads) and the forward pass (torch ops) both release the GIL, so the next
    batch is decoded while the model runs on this one. Exceptions are re-raised in the consumer; a
    consumer that stops early stops the thread.
    """
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def produce():
        try:
            for item in iterable:
                while not stop.is_set():
                    try:
                        q.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put((done, None))
        except BaseException as e:          # forwarded to the consumer
            q.put((done, e))

    t = threading.Thread(target=produce, name="prefetch", daemon=True)
    t.start()
    try:
        while True:
            item, err = q.get()
            if item is done:
                if err is not None:
                    raise err
                return
            yield item
    finally:
        stop.set()
        while t.is_alive():
            try:
                q.get(timeout=0.05)
            except queue.Empty:
                pass
        t.join()


@dataclass
class Decoded:
    """A dataset decoded into memory: the decodable items in dataset order, and the others with reasons."""
    x: torch.Tensor                  # uint8 (N, 3, S, S): preprocessed (and shifted) images
    y: torch.Tensor                  # int64 (N,): 0 = REAL, 1 = FAKE
    index: torch.Tensor              # int64 (N,): each row's position in the dataset
    ids: list[str]
    sources: list[str]
    skipped: list[tuple[str, str]]   # (id, reason) of undecodable items


def decode_dataset(ds: ImageDataset, preprocess: PreprocessConfig, shift: Shift | None = None,
                   workers: int | None = None, batch_size: int = 512, progress=None,
                   indices: list[int] | None = None, crop_seed: int | None = None) -> Decoded:
    """Decode, shift and preprocess every item of ds once (the one decoding loop of training and sweeps).

    `indices`: only these items, in this order (default all). `crop_seed`: one random window per item
    (training with fit "crop"; see core.data.preprocess). `progress(done, total)` after each batch. ds is only
    read: concurrent calls do not interact.
    """
    xs, ys, idx, ids, srcs, skipped, done = [], [], [], [], [], [], 0
    total = len(ds) if indices is None else len(indices)
    for b in build_loader(ds.view(preprocess, shift, crop_seed), batch_size=batch_size,
                          workers=auto_workers(total) if workers is None else workers, sampler=indices):
        if len(b["ids"]):
            xs.append(b["x"])
            ys.append(b["y"])
            idx.append(b["index"])
        ids += b["ids"]
        srcs += b["sources"]
        skipped += b["skipped"]
        done += len(b["ids"]) + len(b["skipped"])
        if progress:
            progress(done, total)
    s = preprocess.size
    return Decoded(x=torch.cat(xs) if xs else torch.zeros(0, 3, s, s, dtype=torch.uint8),
                   y=torch.cat(ys) if ys else torch.zeros(0, dtype=torch.long),
                   index=torch.cat(idx) if idx else torch.zeros(0, dtype=torch.long),
                   ids=ids, sources=srcs, skipped=skipped)


# On a CPU the forward runs on at most this many images at once, whatever the loader's batch: a batch's activations
# then stay in the caches. `python benchmarks/bench_inference.py` times the fused forward at batches of 64, 128
# and 256 in one run (its best_seconds; README, Performance). A GPU takes the whole batch.
FORWARD_CHUNK = 64


@torch.inference_mode()
def predict_logits(model: torch.nn.Module, x_uint8: torch.Tensor, device: torch.device,
                   with_features: bool = False):
    """uint8 (B, 3, S, S) -> raw logits (B,) float32 on the CPU; with_features: (logits, pooled (B, C)).

    uint8 (B, K, 3, S, S), K windows per image (PreprocessConfig.crops): the mean of each image's K
    logits (and pooled features), (B,). Logits, not probabilities, are averaged: one logit per image
    keeps temperature scaling and the predictions' `logit` column meaning what they mean for one window.
    """
    views = x_uint8.shape[1] if x_uint8.ndim == 5 else 0
    x = to_model_input((x_uint8.flatten(0, 1) if views else x_uint8).to(device, non_blocking=True))
    if device.type == "cuda":
        with torch.autocast("cuda", dtype=torch.float16):
            out = _forward(model, x, with_features)
    elif len(x) > FORWARD_CHUNK:
        parts = [_forward(model, x[i:i + FORWARD_CHUNK], with_features) for i in range(0, len(x), FORWARD_CHUNK)]
        out = (torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])) if with_features \
            else torch.cat(parts)
    else:
        out = _forward(model, x, with_features)
    if not views:
        return out
    if with_features:
        z, f = out
        return z.view(-1, views).mean(dim=1), f.view(-1, views, f.shape[1]).mean(dim=1)
    return out.view(-1, views).mean(dim=1)


def _forward(model, x, with_features: bool):
    if with_features:
        z, f = pooled_features(model, x)
        return z.float().cpu(), f.float().cpu()
    return model(x).float().cpu()


# How in-process evaluation (no DataLoader workers) arranges decoding and the forward pass, per call:
#   "lanes":  on a CPU, one lane per torch thread of the caller; each lane decodes a unit of FORWARD_CHUNK items and
#             runs the forward on it on one thread (core.inference.threads.map_in_lanes); accepted on a GPU too (each lane then
#             sends its own units to the GPU), but never the default there;
#   "thread": decoding in a thread beside the forward (prefetch), the GPU's arrangement;
#   "serial": decoding between batches, all on the calling thread.
SCHEDULES = ("lanes", "thread", "serial")


def decoding_schedule(device: torch.device, threads: int | None = None) -> str:
    """The default arrangement (SCHEDULES) for a forward on `device` by a caller with `threads` torch threads
    (default: the calling thread's own).

    A GPU forward leaves the cores free: decoding goes in a thread beside it. On a CPU a torch call on a team of
    threads waits at every parallel region for its slowest member, so a decoding thread beside a team that
    occupies every core stalls it (on this project's 2-core machine that thread did not pay for itself). Lanes
    of one thread each, which decode and then run their own unit, keep every core busy without such waits:
    `python benchmarks/bench_inference.py` measures the three in one run. A caller with one torch thread (a
    warm-up or sweep lane, core.inference.threads.start_single_threaded) decodes between batches on its own thread.
    """
    if device.type != "cpu":
        return "thread"
    return "lanes" if (torch.get_num_threads() if threads is None else threads) > 1 else "serial"


def predict_dataset(lm: LoadedModel, ds: ImageDataset, batch_size: int = 256, workers: int | None = None,
                    shift: Shift | None = None, progress=None, schedule: str | None = None
                    ) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """Run the model over a dataset. Returns (predictions DataFrame, skipped [(id, reason)]).

    DataFrame columns: path (item id), label (0/1), prob_fake (sigmoid(logit / T)), logit (raw), source.
    `progress(done, total)` is called after each batch (with lanes, each unit of at most FORWARD_CHUNK items), on
    the calling thread. `ds` is only read (a per-call view
    carries the model's preprocessing and the shift), so concurrent calls on one shared dataset are independent.
    `schedule`: one of SCHEDULES for in-process decoding (default `decoding_schedule`); every schedule gives the
    same rows in dataset order.
    """
    df, skipped, _, _ = _predict_rows(lm, ds, batch_size, workers, shift, progress, schedule=schedule)
    return df, skipped


def _score_batch(lm: LoadedModel, batch: dict) -> dict:
    """One collated batch (collate_records) -> its logits, familiarity, labels, positions, ids and sources."""
    out = {"skipped": batch["skipped"], "ids": batch["ids"], "sources": batch["sources"], "z": None, "fam": None,
           "y": batch["y"].numpy(), "index": batch["index"].numpy()}
    if len(batch["ids"]):
        fam_model = lm.verdict.familiarity
        if fam_model is not None:
            z, f = predict_logits(lm.inference_model, batch["x"], lm.device, with_features=True)
            content = None if fam_model.content is None else fam_model.content.features(batch["x"])
            out["fam"] = fam_model.parts(f.numpy(), colourfulness(batch["x"]), content)
        else:
            z = predict_logits(lm.inference_model, batch["x"], lm.device)
        out["z"] = z.numpy()
    return out


def _predict_rows(lm: LoadedModel, ds: ImageDataset, batch_size: int = 256, workers: int | None = None,
                  shift: Shift | None = None, progress=None, indices: list[int] | None = None,
                  schedule: str | None = None):
    """predict_dataset over `indices` (default: all, in order), plus the dataset positions of the rows and
    of the skipped items: (df, skipped, row_index (N,) int64, skipped_index list)."""
    if schedule is not None and schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, not {schedule!r}")
    schedule = schedule or decoding_schedule(lm.device)
    rows_id, rows_y, rows_z, rows_f, rows_src, rows_idx, skipped = [], [], [], [], [], [], []
    visited = range(len(ds)) if indices is None else indices
    done, total = 0, len(visited)
    view = ds.view(lm.preprocess, shift)
    if schedule == "lanes" and not workers:
        # Units of one forward chunk: a lane that finishes early waits at most one unit for the other.
        unit = max(1, min(batch_size, FORWARD_CHUNK))
        order = list(visited)
        scored = map_in_lanes(lambda part: _score_batch(lm, collate_records([view[i] for i in part])),
                              [order[i:i + unit] for i in range(0, len(order), unit)],
                              lanes=torch.get_num_threads(), name="evaluation lane")
        opened = [scored]
    else:
        loader = build_loader(view, batch_size, workers, sampler=indices)
        # Worker processes already overlap decoding with the forward pass; in-process decoding goes in a thread
        # beside it only with schedule "thread" (a GPU's default).
        batches = prefetch(loader) if loader.num_workers == 0 and schedule == "thread" else loader
        scored = (_score_batch(lm, b) for b in batches)
        opened = [scored] + ([batches] if batches is not loader else [])       # prefetch's thread
    try:
        for part in scored:
            skipped += part["skipped"]
            if part["z"] is not None:
                rows_z.append(part["z"])
                if part["fam"] is not None:
                    rows_f.append(part["fam"])
                rows_y.append(part["y"])
                rows_idx.append(part["index"])
                rows_id += part["ids"]
                rows_src += part["sources"]
            done += len(part["ids"]) + len(part["skipped"])
            if progress:
                progress(done, total)
    finally:
        # A progress callback that raises (a Streamlit rerun or stop) must not leave lanes or a decoding thread
        # working through the rest of the dataset until the traceback is freed.
        for generator in opened:
            generator.close()
    z = np.concatenate(rows_z) if rows_z else np.zeros(0, np.float32)
    parts = {k: np.concatenate([r[k] for r in rows_f]) for k in rows_f[0]} if rows_f else {}
    fam = np.minimum.reduce(list(parts.values())) if parts else np.full(len(z), np.nan)
    df = pd.DataFrame({"path": rows_id, "label": np.concatenate(rows_y) if rows_y else np.zeros(0, np.int64),
                       "prob_fake": apply_temperature(z, lm.temperature), "logit": z, "source": rows_src,
                       "familiarity": fam, **{f"{PART_COLUMN}{k}": v for k, v in parts.items()}})
    row_index = np.concatenate(rows_idx) if rows_idx else np.zeros(0, np.int64)
    # Rows and skipped items keep the order of `visited`, so the positions not among the rows, sorted, are the
    # skipped items' positions.
    skipped_index = sorted(set(visited) - set(row_index.tolist()))
    return df, skipped, row_index, skipped_index


def shard_indices(n: int, rank: int, world: int) -> list[int]:
    """Rank `rank`'s share of n items: every world-th position from `rank` on. The shares are disjoint and
    cover 0..n-1 exactly once; their sizes differ by at most one."""
    return list(range(rank, n, world))


def predict_dataset_distributed(lm: LoadedModel, ds: ImageDataset, rank: int, world: int, batch_size: int = 256,
                                workers: int | None = None, shift: Shift | None = None, progress=None,
                                schedule: str | None = None):
    """predict_dataset with the items sharded over `world` processes of an initialised torch.distributed group.

    Every rank must call it. Rank 0 gets (df, skipped) with the rows and skipped items of all ranks in
    dataset order, i.e. what a single process would return; the other ranks get (None, None).
    """
    import torch.distributed as dist
    idx = shard_indices(len(ds), rank, world)
    rank_progress = (lambda d, t: progress(min(d * world, len(ds)), len(ds))) if progress else None
    df, skipped, row_index, skipped_index = _predict_rows(lm, ds, batch_size, workers, shift, rank_progress, idx,
                                                          schedule)
    payload = (df.to_dict("list"), row_index.tolist(), skipped, skipped_index)
    gathered = [None] * world if rank == 0 else None
    dist.gather_object(payload, gathered, dst=0)
    if rank != 0:
        return None, None
    frames = [pd.DataFrame(cols).assign(_index=rows) for cols, rows, _, _ in gathered]
    merged = pd.concat(frames, ignore_index=True).sort_values("_index", kind="stable")
    if len(merged) != len(set(merged["_index"])):
        raise RuntimeError("sharded evaluation produced duplicated rows")
    merged = merged.drop(columns="_index").reset_index(drop=True).astype(
        {"label": np.int64, "prob_fake": np.float64, "logit": np.float32, "familiarity": np.float64})
    skipped_all = sorted(((i, s) for _, _, sk, si in gathered for s, i in zip(sk, si)), key=lambda t: t[0])
    return merged, [s for _, s in skipped_all]


def add_verdicts(df: pd.DataFrame, lm: LoadedModel, threshold: float = 0.5) -> pd.DataFrame:
    """A copy of a predictions frame with the `verdict` column at `threshold` (core.verdict.verdict.decide)."""
    out = df.copy()
    fam = out["familiarity"].to_numpy(np.float64) if "familiarity" in out else None
    if fam is not None and np.isnan(fam).all():
        fam = None
    out["verdict"] = decide(out["logit"].to_numpy(), fam, lm.verdict, threshold, lm.temperature)[0] if len(out) else []
    return out


def dataset_fingerprint(ds: ImageDataset) -> str:
    """Changes when the dataset's files, labels or mapping change (paths, sizes, mtimes; not contents)."""
    h = hashlib.sha256()
    h.update(f"{ds.format}|{ds.root}|{sorted(ds.label_mapping.items())}|{len(ds)}".encode())
    files = getattr(ds, "shards", None) or [it[0] for it in ds.items]
    for p in files:
        try:
            st = os.stat(p)
            h.update(f"{p}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        except (OSError, TypeError):
            h.update(f"{p}|missing\n".encode())
    h.update(bytes(ds.labels))
    return h.hexdigest()[:16]


def write_evaluation(out_dir, df: pd.DataFrame, metrics: dict) -> None:
    """Write predictions.csv and metrics.json into out_dir atomically (core.model.checkpoint.atomic_write_dir)."""
    def write(tmp: Path) -> None:
        df.to_csv(tmp / "predictions.csv", index=False)
        with open(tmp / "metrics.json", "w") as f:
            json.dump(metrics, f, indent=2, default=float)
    atomic_write_dir(out_dir, write)


def evaluate(lm: LoadedModel, ds: ImageDataset, shift: Shift | None = None, threshold: float = 0.5,
             batch_size: int = 256, workers: int | None = None, progress=None,
             rank: int = 0, world: int = 1, schedule: str | None = None) -> tuple[pd.DataFrame, dict]:
    """Predictions plus the metrics dict written to metrics.json. `schedule`: see predict_dataset.

    With world > 1 (an initialised torch.distributed group) every rank evaluates its shard and rank 0
    returns the whole result, the same as a single process; other ranks return (None, None).
    """
    t0 = time.perf_counter()
    if world > 1:
        df, skipped = predict_dataset_distributed(lm, ds, rank, world, batch_size, workers, shift, progress,
                                                  schedule)
        if rank != 0:
            return None, None
    else:
        df, skipped = predict_dataset(lm, ds, batch_size, workers, shift, progress, schedule)
    seconds = time.perf_counter() - t0
    df = add_verdicts(df, lm, threshold)
    m = classification_metrics(df["label"].to_numpy(), df["prob_fake"].to_numpy(), threshold)
    fam = df["familiarity"].to_numpy(np.float64)
    m["verdict"] = verdict_summary(df["label"], df["logit"], None if np.isnan(fam).all() else fam, lm.verdict,
                                   threshold, lm.temperature) if len(df) else None
    m["verdict_threshold"] = threshold
    m.update({
        "result_format": RESULT_FORMAT,
        "skipped": [{"path": p, "reason": r} for p, r in skipped], "n_skipped": len(skipped),
        "weights_sha256": lm.sha256, "arch": lm.arch, "temperature": lm.temperature,
        "preprocess": lm.preprocess.to_dict(), "dataset": ds.describe(), "dataset_format": ds.format,
        "label_mapping": describe_mapping(ds.label_mapping), "dataset_warnings": ds.warnings,
        "shift": str(shift) if shift else None, "processes": world, "seconds": round(seconds, 3),
        "images_per_second": round(len(ds) / seconds, 1) if seconds > 0 else None,
    })
    return df, m


def evaluation_dir(runs_dir, lm: LoadedModel, ds: ImageDataset, shift: Shift | None) -> Path:
    """runs/eval-KEY, KEY from the result format, weights hash, preprocessing, dataset fingerprint and shift."""
    # The preprocessing is in the key: the same weights may be run with another number of windows (--crops).
    key = hashlib.sha256(f"v{RESULT_FORMAT}|{lm.sha256}|{json.dumps(lm.preprocess.to_dict(), sort_keys=True)}|"
                         f"{dataset_fingerprint(ds)}|{shift}".encode()).hexdigest()[:20]
    return Path(runs_dir) / f"eval-{key}"


def load_evaluation(out_dir) -> tuple[pd.DataFrame, dict] | None:
    """A complete evaluation of the current RESULT_FORMAT in out_dir, or None (missing, unreadable or
    written by another result format all count as missing)."""
    out_dir = Path(out_dir)
    try:
        with open(out_dir / "metrics.json") as f:
            metrics = json.load(f)
        if metrics.get("result_format") != RESULT_FORMAT:
            return None
        df = pd.read_csv(out_dir / "predictions.csv", keep_default_na=False,
                         dtype={"path": str, "source": str, "label": np.int64})
        if "familiarity" in df:      # empty cells (a checkpoint without a familiarity model) -> NaN
            df["familiarity"] = pd.to_numeric(df["familiarity"], errors="coerce")
        return df, metrics
    except (OSError, ValueError, pd.errors.ParserError):
        return None


def cached_evaluation(lm: LoadedModel, ds: ImageDataset, runs_dir="runs", shift: Shift | None = None,
                      progress=None, **kw) -> tuple[pd.DataFrame, dict]:
    """Evaluate once per (weights hash, dataset fingerprint, shift); later calls read the result from disk."""
    out = evaluation_dir(runs_dir, lm, ds, shift)
    with result_lock(out):           # a concurrent caller of the same result waits, then reads it
        hit = load_evaluation(out)
        if hit is not None:
            return hit
        df, m = evaluate(lm, ds, shift=shift, progress=progress, **kw)
        write_evaluation(out, df, m)
        return df, m


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Evaluate a checkpoint on a dataset (CIFAKE folder, class folder, "
                                            "manifest CSV or Hugging Face parquet).")
    p.add_argument("--weights", required=True, help="checkpoint saved by core.model.train")
    p.add_argument("--data", required=True, help="dataset path (format detected; see --format)")
    p.add_argument("--out", required=True, help="output folder for predictions.csv and metrics.json")
    p.add_argument("--split", default="test", help="split folder of a CIFAKE-layout root (default: test)")
    p.add_argument("--format", default="auto", choices=["auto", "cifake", "folder", "manifest", "parquet"],
                   help="force the dataset format (default: auto)")
    p.add_argument("--class-map", default=None,
                   help="map class names/label values to REAL/FAKE, e.g. 'AiArtData=FAKE,RealArt=REAL' or '0=REAL,1=FAKE'")
    p.add_argument("--case-sensitive", action="store_true", help="match class folder names case-sensitively")
    p.add_argument("--shift", default=None, help="distribution shift NAME:LEVEL applied before preprocessing, "
                                                   "e.g. jpeg:30, blur:1.5, grayscale, noise:16 (default: none)")
    p.add_argument("--threshold", type=float, default=0.5, help="P(FAKE) threshold for the FAKE label (default: 0.5)")
    p.add_argument("--batch-size", type=int, default=256, help="batch size (default: 256)")
    p.add_argument("--workers", type=int, default=None,
                   help="DataLoader worker processes (default: none where the schedule is lanes; otherwise 0 below "
                        "4096 images, else 2)")
    p.add_argument("--schedule", choices=SCHEDULES, default=None,
                   help="how in-process decoding meets the forward: lanes (one per torch thread, each decoding and "
                        "running its own images on one thread), thread (decoding beside the forward) or serial "
                        "(between batches); default: lanes on a CPU with several threads, serial with one, thread "
                        "on a GPU. Every schedule gives the same rows")
    p.add_argument("--device", default="auto", help="cuda, mps, cpu or auto (default: auto)")
    p.add_argument("--crops", type=int, default=None,
                   help="windows averaged per image, 1-9, for checkpoints trained with --fit crop "
                        "(default: the checkpoint's)")
    return p


def _setup_distributed(device: torch.device) -> tuple[int, int, torch.device]:
    """(rank, world, device) under torchrun (WORLD_SIZE > 1: process group initialised; gloo on CPU,
    NCCL on GPUs, one GPU per local rank), else (0, 1, device)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, device
    import torch.distributed as dist
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    else:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return rank, world, device


def main(argv=None) -> int:
    """The CLI; under torchrun every rank evaluates a shard and rank 0 writes the one result."""
    args = get_args_parser().parse_args(argv)
    from core.model.models import select_device
    rank, world, device = _setup_distributed(select_device(args.device))
    try:
        return _main(args, rank, world, device)
    finally:
        if world > 1:
            import torch.distributed as dist
            dist.destroy_process_group()


def _main(args, rank: int, world: int, device: torch.device) -> int:
    from tqdm import tqdm
    try:
        lm = with_crops(load_checkpoint(args.weights, device), args.crops)
        shift = parse_shift(args.shift)
        ds = open_dataset(args.data, split=args.split, fmt=args.format, class_map=parse_class_map(args.class_map),
                          case_sensitive=args.case_sensitive)
    except (CheckpointError, DatasetError, LabelMappingError, ShiftError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if rank == 0:
        print(f"dataset: {ds.describe()}", file=sys.stderr)
        print(f"label mapping: {describe_mapping(ds.label_mapping)}", file=sys.stderr)
        for w in ds.warnings:
            print(f"warning: {w}", file=sys.stderr)
        if world > 1:
            print(f"{world} processes, {len(shard_indices(len(ds), 0, world)):,} images each at most", file=sys.stderr)
    with tqdm(total=len(ds), unit="img", desc="evaluate", disable=rank != 0) as bar:
        df, m = evaluate(lm, ds, shift=shift, threshold=args.threshold, batch_size=args.batch_size,
                         workers=args.workers, progress=lambda d, t: bar.update(d - bar.n), rank=rank, world=world,
                         schedule=args.schedule)
    if rank != 0:
        return 0
    write_evaluation(args.out, df, m)
    for s in m["skipped"][:20]:
        print(f"skipped: {s['path']}: {s['reason']}", file=sys.stderr)
    if m["n_skipped"] > 20:
        print(f"... and {m['n_skipped'] - 20} more skipped (see metrics.json)", file=sys.stderr)
    summary = {k: m.get(k) for k in ("n", "n_skipped", "accuracy", "roc_auc", "average_precision", "ece", "brier")}
    summary["share_unsure"] = (m.get("verdict") or {}).get("share_unsure")
    summary["recall_REAL"] = m.get("per_class", {}).get("REAL", {}).get("recall")
    summary["recall_FAKE"] = m.get("per_class", {}).get("FAKE", {}).get("recall")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
