"""The features the data audits read, computed in one pass over a dataset and cached under runs/.

Per decodable image, from the model's own input (what the model sees, `lm.preprocess`):
- `model`: the detector's pooled last-block features (core.verdict.verdict.pooled_features), (N, C) float32;
- `content`: the familiarity's content-encoder features, (N, D) float32, where the checkpoint has a content
  encoder (`content_encoder(lm)`), else None;
- `thumbs`: an 8 x 8 RGB thumbnail in pixel levels (0-255), (N, 192) float32, and `detail`: the RMS of the
  thumbnail minus its 4 x 4 blur, (N,) float32. A JPEG re-encode or a mild resize moves a 32 x 32 image's 8 x 8
  thumbnail by a few levels only, so the leakage check (core.audits.data_issues) reads these, not the model's
  features, which a forensic detector makes sensitive to exactly those changes.

The embedding map (core.audits.embedding) and the data issues (core.audits.data_issues) share one cached table per
(weights, preprocessing, dataset, FEATURES_VERSION): runs/features-KEY/features.npz.
"""
from __future__ import annotations

import hashlib
import json
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

# Bump when a feature's definition changes: part of the runs/ key of the features and of everything made from them.
FEATURES_VERSION = 1
THUMB_SIDE = 8          # px: the content thumbnail's side
BLUR_SIDE = 4           # px: the blur the thumbnail's detail is measured against
FEATURE_KINDS = ("model", "content")


@dataclass(frozen=True)
class FeatureTable:
    """One row per decodable item of a dataset, in dataset order; `skipped` lists the others with their reasons."""
    ids: list[str]
    labels: np.ndarray              # int64 (N,): 0 = REAL, 1 = FAKE
    sources: list[str]
    logits: np.ndarray              # float32 (N,): raw logits (core.inference.evaluate.predict_logits)
    model: np.ndarray               # float32 (N, C): pooled last-block features
    thumbs: np.ndarray              # float32 (N, 3 * THUMB_SIDE**2): thumbnail in pixel levels
    detail: np.ndarray              # float32 (N,): RMS of the thumbnail minus its blur, pixel levels
    content: np.ndarray | None = None   # float32 (N, D): content-encoder features, where the checkpoint has them
    skipped: tuple = ()             # ((id, reason), ...)

    def __len__(self) -> int:
        return len(self.ids)

    def of_kind(self, kind: str) -> np.ndarray:
        """The features the embedding reads: "model" or "content" (FEATURE_KINDS); ValueError when absent."""
        if kind == "model":
            return self.model
        if kind == "content":
            if self.content is None:
                raise ValueError("this checkpoint has no content features (its familiarity has no content encoder): "
                                 "only --features model is available")
            return self.content
        raise ValueError(f"features must be one of {FEATURE_KINDS}, not {kind!r}")


def content_encoder(lm):
    """The familiarity's content model of a loaded checkpoint, or None: an object whose `features(x_uint8)` maps
    uint8 model inputs (N, 3, S, S) (or (N, K, 3, S, S)) to (N, D) features."""
    fam = getattr(lm.verdict, "familiarity", None)
    content = getattr(fam, "content", None)
    return content if callable(getattr(content, "features", None)) else None


def thumbnails(x_uint8: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (B, 3, S, S), or (B, K, 3, S, S) for K windows (averaged) -> (thumbs (B, 3 * 8 * 8) float32 in pixel
    levels, detail (B,) float32: RMS of the thumbnail minus its bilinearly enlarged 4 x 4 blur)."""
    x = x_uint8.float()
    if x.ndim == 5:
        x = x.mean(dim=1)
    thumb = F.adaptive_avg_pool2d(x, THUMB_SIDE)                                    # (B, 3, 8, 8)
    blur = F.interpolate(F.adaptive_avg_pool2d(x, BLUR_SIDE), size=THUMB_SIDE, mode="bilinear", align_corners=False)
    detail = (thumb - blur).square().flatten(1).mean(dim=1).sqrt()
    return thumb.flatten(1).numpy(), detail.numpy()


def _score_unit(lm, content_model, batch: dict) -> dict:
    """One collated batch (core.data.datasets.collate_records) -> its rows of the table."""
    from core.inference.evaluate import predict_logits
    out = {"ids": batch["ids"], "sources": batch["sources"], "skipped": batch["skipped"], "y": batch["y"].numpy()}
    if len(batch["ids"]):
        with torch.inference_mode():
            z, f = predict_logits(lm.inference_model, batch["x"], lm.device, with_features=True)
        out["z"], out["f"] = z.numpy(), f.numpy()
        out["thumbs"], out["detail"] = thumbnails(batch["x"])
        if content_model is not None:
            out["content"] = np.asarray(content_model.features(batch["x"]), np.float32)
    return out


def compute_features(lm, ds, batch_size: int = 256, progress=None) -> FeatureTable:
    """Every item of `ds` through the model once: logits, pooled features, thumbnails (and content features).

    Decoding and the forward run as the evaluation's do (core.inference.evaluate.decoding_schedule): on a CPU in
    lanes of FORWARD_CHUNK images, one torch thread each; elsewhere in batches of `batch_size`. `progress(done,
    total)` after each unit, on the calling thread. `ds` is only read (a per-call view carries the preprocessing)."""
    from core.data.datasets import collate_records
    from core.inference.evaluate import FORWARD_CHUNK, build_loader, decoding_schedule
    from core.inference.threads import map_in_lanes
    content_model = content_encoder(lm)
    view = ds.view(lm.preprocess)
    if decoding_schedule(lm.device) == "lanes":
        order = list(range(len(ds)))
        units = [order[i:i + FORWARD_CHUNK] for i in range(0, len(order), FORWARD_CHUNK)]
        parts = map_in_lanes(lambda unit: _score_unit(lm, content_model, collate_records([view[i] for i in unit])),
                             units, lanes=torch.get_num_threads(), name="features lane")
    else:
        parts = (_score_unit(lm, content_model, b) for b in build_loader(view, batch_size=batch_size))
    rows: dict[str, list] = {k: [] for k in ("ids", "sources", "skipped", "y", "z", "f", "thumbs", "detail", "content")}
    done = 0
    try:
        for part in parts:
            rows["skipped"] += part["skipped"]
            if "z" in part:
                rows["ids"] += part["ids"]
                rows["sources"] += part["sources"]
                for k in ("y", "z", "f", "thumbs", "detail", "content"):
                    if k in part:
                        rows[k].append(part[k])
            done += len(part["ids"]) + len(part["skipped"])
            if progress:
                progress(done, len(ds))
    finally:
        parts.close()          # a progress that raises (a Streamlit rerun) stops the lanes
    width = 3 * THUMB_SIDE ** 2

    def cat(key, shape):
        return np.concatenate(rows[key]).astype(np.float32) if rows[key] else np.zeros(shape, np.float32)
    return FeatureTable(ids=rows["ids"], sources=rows["sources"], skipped=tuple(rows["skipped"]),
                        labels=np.concatenate(rows["y"]).astype(np.int64) if rows["y"] else np.zeros(0, np.int64),
                        logits=cat("z", (0,)), model=cat("f", (0, 0)), thumbs=cat("thumbs", (0, width)),
                        detail=cat("detail", (0,)), content=cat("content", (0, 0)) if content_model is not None else None)


def features_dir(runs_dir, lm, ds) -> Path:
    """runs/features-KEY: KEY from the result format, FEATURES_VERSION, weights hash, preprocessing, dataset."""
    from core.inference.evaluate import dataset_fingerprint
    from core.report.audit_cache import result_dir
    return result_dir(runs_dir, "features", FEATURES_VERSION, lm.sha256,
                      json.dumps(lm.preprocess.to_dict(), sort_keys=True), dataset_fingerprint(ds))


def save_features(out_dir, table: FeatureTable) -> Path:
    """features.npz + skipped.json into out_dir, atomically (core.report.audit_cache.write_result_dir)."""
    import io
    from core.report.audit_cache import json_bytes, write_result_dir
    buf = io.BytesIO()
    arrays = {"ids": np.array(table.ids, dtype=str), "labels": table.labels, "sources": np.array(table.sources, dtype=str),
              "logits": table.logits, "model": table.model, "thumbs": table.thumbs, "detail": table.detail}
    if table.content is not None:
        arrays["content"] = table.content
    np.savez(buf, **arrays)
    return write_result_dir(out_dir, {"features.npz": buf.getvalue(),
                                      "skipped.json": json_bytes([list(s) for s in table.skipped])})


def load_features(out_dir) -> FeatureTable | None:
    """The table stored in out_dir, or None when it is missing or unreadable."""
    out_dir = Path(out_dir)
    try:
        with np.load(out_dir / "features.npz", allow_pickle=False) as z:
            a = {k: z[k] for k in z.files}
        skipped = tuple(tuple(s) for s in json.loads((out_dir / "skipped.json").read_text()))
    except (OSError, ValueError, KeyError):
        return None
    return FeatureTable(ids=a["ids"].tolist(), labels=a["labels"].astype(np.int64), sources=a["sources"].tolist(),
                        logits=a["logits"], model=a["model"], thumbs=a["thumbs"], detail=a["detail"],
                        content=a.get("content"), skipped=skipped)


def cached_features(lm, ds, runs_dir="runs", progress=None) -> FeatureTable:
    """`compute_features` once per (weights, preprocessing, dataset); later calls read runs/features-KEY."""
    from core.model.checkpoint import result_lock
    out = features_dir(runs_dir, lm, ds)
    with result_lock(out):           # a concurrent caller of the same table waits, then reads it
        hit = load_features(out)
        if hit is not None:
            return hit
        table = compute_features(lm, ds, progress=progress)
        save_features(out, table)
        return table


def array_sha256(a: np.ndarray) -> str:
    """sha256 of an array's dtype, shape and bytes: the fingerprint of the features a result was made from."""
    a = np.ascontiguousarray(a)
    h = hashlib.sha256(f"{a.dtype.str}|{a.shape}|".encode())
    h.update(a.tobytes())
    return h.hexdigest()


def add_input_args(p) -> None:
    """The data audits' shared options: --weights, --data, --split, --class-map, --runs."""
    p.add_argument("--weights", default="weights/default.pt", help="checkpoint (default: weights/default.pt)")
    p.add_argument("--data", required=True, help="dataset path (any supported format)")
    p.add_argument("--split", default="test", help="split of a CIFAKE root (default: test)")
    p.add_argument("--class-map", default=None, help="map class names to REAL/FAKE, e.g. 'AiArtData=FAKE,RealArt=REAL'")
    p.add_argument("--runs", default="runs", help="cache folder (default: runs)")


def cli_inputs(args):
    """(model, dataset, class map) of a data audit's command line (--weights, --data, --split, --class-map), or
    None after printing why they cannot be used."""
    import sys
    from core.data.datasets import DatasetError, open_dataset
    from core.data.labels import LabelMappingError, parse_class_map
    from core.model.checkpoint import CheckpointError, load_checkpoint
    try:
        class_map = parse_class_map(args.class_map)
        return load_checkpoint(args.weights), open_dataset(args.data, split=args.split, class_map=class_map), class_map
    except (CheckpointError, DatasetError, LabelMappingError) as e:
        print(f"error: {e}", file=sys.stderr)
        return None


def run_cli(args, desc: str, compute):
    """A data audit's command line: `compute(lm, ds, class_map, progress)` on its inputs (`cli_inputs`) under a
    percent bar; its result, or None after printing why not (bad inputs, a ValueError or ImportError from core)."""
    import sys
    inputs = cli_inputs(args)
    if inputs is None:
        return None
    try:
        with percent_bar(desc) as progress:
            return compute(*inputs, progress)
    except (ValueError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return None


@contextmanager
def percent_bar(desc: str):
    """A tqdm bar in percent for a command line; yields the `progress(fraction, text)` callback core takes."""
    from tqdm import tqdm
    with tqdm(total=100, unit="%", desc=desc) as bar:
        def progress(fraction: float, text: str) -> None:
            bar.set_postfix_str(text, refresh=False)
            bar.update(round(100 * fraction) - bar.n)
        yield progress


def write_files(out_dir, files: dict[str, bytes], skipped=()) -> None:
    """A data audit's command-line output: each file written atomically into out_dir (other files there stay), then
    the first 20 skipped items with their reasons on stderr."""
    import sys
    from core.model.checkpoint import atomic_write_bytes
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        atomic_write_bytes(out / name, data)
    for path, reason in list(skipped)[:20]:
        print(f"skipped: {path}: {reason}", file=sys.stderr)
