"""Verdict stability: does the call survive the everyday things that happen to an image on its way to you?

    python -m core stability --weights weights/default.pt --data data/sample/test --out runs/stability
    python -m core predict --stability photo.jpg          # adds "flips_under" to each JSON line

For one image, P(AI) and the call at the threshold under a fixed battery of changes (CHANGES): JPEG
quality 95, 75 and 50, downscaling x0.5, upscaling x2, grayscale, a 90% centre crop and a horizontal
flip, each applied to the decoded image at its own resolution, then the project's one preprocessing.
A change "flips" the image when the call differs from the call on the unchanged image (not from the
truth). For a dataset: the flip rate per change with its Wilson interval, and the images that flip.
Writes DIR/stability.csv (per image: P(AI) unchanged and under each change) and DIR/flip_rates.csv.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image, ImageOps

from core.data.images import MAX_PIXELS, ImageError, load_image
from core.data.labels import CLASS_NAMES
from core.data.preprocess import preprocess_image

# name -> human-readable description; the order is the order of every table.
CHANGES = {
    "jpeg:95": "JPEG quality 95", "jpeg:75": "JPEG quality 75", "jpeg:50": "JPEG quality 50",
    "downscale:0.5": "downscaled x0.5", "upscale:2": "upscaled x2", "grayscale": "grayscale",
    "crop:0.9": "90% centre crop", "hflip": "horizontal flip",
}


def apply_change(img: Image.Image, name: str) -> Image.Image:
    """RGB PIL -> RGB PIL under one change of CHANGES. The input is not modified; upscaling stops at the
    decoder's MAX_PIXELS."""
    from core.data.shifts import apply_shift, pil_to_tensor, tensor_to_pil
    w, h = img.size
    if name.startswith("jpeg:"):
        # The same JPEG re-encode as the robustness sweep's jpeg shift (core.data.shifts).
        return tensor_to_pil(apply_shift(pil_to_tensor(img), "jpeg", float(name[5:])))
    if name == "grayscale":
        return tensor_to_pil(apply_shift(pil_to_tensor(img), "grayscale", 1.0))
    if name in ("downscale:0.5", "upscale:2"):
        f = 0.5 if name == "downscale:0.5" else 2.0
        if f > 1 and w * h * f * f > MAX_PIXELS:
            # Never build an image the decoder itself would refuse: a photo already near the limit is
            # enlarged only up to it (the model sees 32x32 either way).
            f = max(1.0, (MAX_PIXELS / (w * h)) ** 0.5)
        # PIL's bicubic widens its kernel when shrinking: an antialiased downscale, as a resizing app does.
        return img.resize((max(1, round(w * f)), max(1, round(h * f))), Image.Resampling.BICUBIC)
    if name == "crop:0.9":
        cw, ch = max(1, round(w * 0.9)), max(1, round(h * 0.9))
        x0, y0 = (w - cw) // 2, (h - ch) // 2
        return img.crop((x0, y0, x0 + cw, y0 + ch))
    if name == "hflip":
        return ImageOps.mirror(img)
    raise ValueError(f"unknown change {name!r}; known: {', '.join(CHANGES)}")


def _probs(lm, tensors: list[torch.Tensor], batch_size: int = 512) -> np.ndarray:
    from core.inference.evaluate import predict_logits
    from core.metrics.metrics import apply_temperature
    z = [predict_logits(lm.inference_model, torch.stack(tensors[i:i + batch_size]), lm.device).numpy()
         for i in range(0, len(tensors), batch_size)]
    return apply_temperature(np.concatenate(z), lm.temperature) if z else np.zeros(0)


def stability_probs(lm, images: list[Image.Image], changes=tuple(CHANGES)) -> np.ndarray:
    """P(AI) of each RGB image unchanged and under each change: float (N, 1 + len(changes)), column 0 unchanged."""
    tensors = []
    for img in images:
        tensors.append(preprocess_image(img, lm.preprocess))
        tensors += [preprocess_image(apply_change(img, c), lm.preprocess) for c in changes]
    return _probs(lm, tensors).reshape(len(images), 1 + len(changes))


def flips(probs_row, threshold: float, changes=tuple(CHANGES)) -> list[str]:
    """The changes whose call (P >= threshold means FAKE) differs from the unchanged image's call."""
    base = probs_row[0] >= threshold
    return [c for c, p in zip(changes, probs_row[1:]) if (p >= threshold) != base]


def check_image(lm, img: Image.Image, threshold: float = 0.5) -> dict:
    """{"prob_fake", "label", "changes": [{change, description, prob_fake, label, flipped}], "flips_under",
    "stable"} for one decoded RGB image."""
    row = stability_probs(lm, [img])[0]
    fl = flips(row, threshold)
    return {"prob_fake": float(row[0]), "label": CLASS_NAMES[int(row[0] >= threshold)],
            "changes": [{"change": c, "description": CHANGES[c], "prob_fake": float(p),
                         "label": CLASS_NAMES[int(p >= threshold)], "flipped": c in fl}
                        for c, p in zip(CHANGES, row[1:])],
            "flips_under": fl, "stable": not fl}


def probs_of_sources(lm, sources: list[tuple[str, object]], chunk: int = 64, progress=None) -> list[np.ndarray | None]:
    """`stability_probs` rows for each (name, path | bytes); None where the file cannot be decoded (its
    reason is reported by the prediction itself)."""
    out: list[np.ndarray | None] = []
    for i in range(0, len(sources), chunk):
        imgs, slots = [], []
        for _, src in sources[i:i + chunk]:
            try:
                imgs.append(load_image(src).image)
                slots.append(True)
            except ImageError:
                slots.append(False)
        probs = iter(stability_probs(lm, imgs)) if imgs else iter(())
        out += [next(probs) if ok else None for ok in slots]
        if progress:
            progress(min(i + chunk, len(sources)), len(sources))
    return out


def stability_of_sources(lm, sources: list[tuple[str, object]], threshold: float = 0.5) -> list[list[str] | None]:
    """flips_under for each (name, path | bytes); None where the file cannot be decoded."""
    return [None if row is None else flips(row, threshold) for row in probs_of_sources(lm, sources)]


def dataset_stability(lm, ds, chunk: int = 128, progress=None,
                      indices: list[int] | None = None) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """P(AI) of every decodable item (or of `indices`) unchanged (`prob_fake`) and under each change (`p:<change>`).

    Returns (DataFrame path, label, source, prob_fake, p:jpeg:95, ...; skipped [(id, reason)]).
    Thresholds are applied later (flip_table), so one run serves every threshold.
    """
    rows, skipped = [], []
    order = list(range(len(ds))) if indices is None else list(indices)
    for i0 in range(0, len(order), chunk):
        imgs, meta = [], []
        for i in order[i0:i0 + chunk]:
            try:
                imgs.append(ds.load(i).image)
                meta.append((ds.item_id(i), int(ds.items[i][1]), ds.items[i][2] or ""))
            except ImageError as e:
                skipped.append((ds.item_id(i), str(e)))
        if imgs:
            probs = stability_probs(lm, imgs)
            for (pid, lab, src), row in zip(meta, probs):
                rows.append({"path": pid, "label": lab, "source": src, "prob_fake": float(row[0]),
                             **{f"p:{c}": float(p) for c, p in zip(CHANGES, row[1:])}})
        if progress:
            progress(min(i0 + chunk, len(order)), len(order))
    cols = ["path", "label", "source", "prob_fake"] + [f"p:{c}" for c in CHANGES]
    return pd.DataFrame(rows, columns=cols), skipped


def flip_table(df: pd.DataFrame, threshold: float = 0.5) -> pd.DataFrame:
    """Per change: images, flips, flip_rate with its 95% Wilson interval, accuracy unchanged and under the
    change; plus a row "any" (images that flip under at least one change)."""
    from core.metrics.stats import wilson_interval
    y = df["label"].to_numpy()
    base = df["prob_fake"].to_numpy() >= threshold
    rows, any_flip = [], np.zeros(len(df), bool)
    for c, desc in CHANGES.items():
        call = df[f"p:{c}"].to_numpy() >= threshold
        f = call != base
        any_flip |= f
        lo, hi = wilson_interval(int(f.sum()), len(df))
        rows.append({"change": c, "description": desc, "images": len(df), "flips": int(f.sum()),
                     "flip_rate": float(f.mean()) if len(df) else None, "ci_low": lo, "ci_high": hi,
                     "flips_to_FAKE": int((f & call).sum()), "flips_to_REAL": int((f & ~call).sum()),
                     "accuracy_unchanged": float((base == y).mean()) if len(df) else None,
                     "accuracy_changed": float((call == y).mean()) if len(df) else None})
    lo, hi = wilson_interval(int(any_flip.sum()), len(df))
    rows.append({"change": "any", "description": "at least one change", "images": len(df), "flips": int(any_flip.sum()),
                 "flip_rate": float(any_flip.mean()) if len(df) else None, "ci_low": lo, "ci_high": hi,
                 "flips_to_FAKE": None, "flips_to_REAL": None,
                 "accuracy_unchanged": float((base == y).mean()) if len(df) else None, "accuracy_changed": None})
    return pd.DataFrame(rows)


def flips_column(df: pd.DataFrame, threshold: float = 0.5) -> pd.Series:
    """Per image: "stable" or "flips under: a, b" at `threshold`."""
    base = df["prob_fake"].to_numpy() >= threshold
    out = []
    for k in range(len(df)):
        fl = [c for c in CHANGES if (df[f"p:{c}"].iat[k] >= threshold) != base[k]]
        out.append("flips under: " + ", ".join(fl) if fl else "stable")
    return pd.Series(out, index=df.index, name="stability")


def stability_result_dir(lm, ds, runs_dir="runs", max_images: int | None = None) -> Path:
    from core.report.audit_cache import result_dir
    from core.inference.evaluate import dataset_fingerprint
    parts = [lm.sha256, dataset_fingerprint(ds), ",".join(CHANGES)] + ([f"max{max_images}"] if max_images else [])
    return result_dir(runs_dir, "stability", *parts)


def read_stability(out_dir) -> pd.DataFrame | None:
    try:
        return pd.read_csv(Path(out_dir) / "stability.csv", keep_default_na=False, dtype={"path": str, "source": str})
    except (OSError, ValueError):
        return None


def cached_dataset_stability(lm, ds, runs_dir="runs", progress=None, max_images: int | None = None) -> pd.DataFrame:
    """`dataset_stability` once per (weights hash, dataset fingerprint[, max_images]); stored as
    runs/stability-*/stability.csv. max_images: a seeded label-stratified subsample of at most that many
    items (core.data.datasets.stratified_subset); flip_table's Wilson intervals then say how sure the rates are."""
    from core.report.audit_cache import write_result_dir
    from core.data.datasets import stratified_subset
    from core.model.checkpoint import result_lock
    out = stability_result_dir(lm, ds, runs_dir, max_images)
    with result_lock(out):           # a concurrent caller (the app's warm-up, another session) waits, then reads it
        df = read_stability(out)
        if df is None:
            df, skipped = dataset_stability(lm, ds, progress=progress, indices=stratified_subset(ds.labels, max_images))
            write_result_dir(out, {"stability.csv": df.to_csv(index=False).encode()})
    return df


def stability_verdict(table: pd.DataFrame) -> str:
    """One sentence from flip_table's numbers, in the Limitations page's wording: "Holds" when some change
    flips at least 5% of the calls, "Holds weakly" from 1%, else "Not observed here"."""
    rows = table[table["change"] != "any"]
    if rows.empty or not rows["images"].iloc[0]:
        return "Not tested: no image could be decoded."
    anyr = table[table["change"] == "any"].iloc[0]
    worst = rows.loc[rows["flip_rate"].idxmax()]
    rate = float(worst["flip_rate"])
    if rate < 0.01:
        return (f"Not observed here: no change flips more than 1% of the {int(anyr['images']):,} calls "
                f"(at most {rate:.1%}, under {worst['description']}).")
    head = "Holds" if rate >= 0.05 else "Holds weakly"
    return (f"{head}: {anyr['flip_rate']:.1%} of the calls ({int(anyr['flips']):,} of {int(anyr['images']):,}) flip "
            f"under at least one everyday change; the worst is {worst['description']} ({rate:.1%}: "
            f"{int(worst['flips_to_REAL'])} to REAL, {int(worst['flips_to_FAKE'])} to FAKE).")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Flip rate of the model's call under everyday image changes.")
    p.add_argument("--weights", default="weights/default.pt", help="checkpoint (default: weights/default.pt)")
    p.add_argument("--data", required=True, help="dataset path (any supported format)")
    p.add_argument("--split", default="test", help="split of a CIFAKE root (default: test)")
    p.add_argument("--class-map", default=None, help="map class names to REAL/FAKE, e.g. 'AiArtData=FAKE,RealArt=REAL'")
    p.add_argument("--threshold", type=float, default=0.5, help="P(FAKE) threshold (default: 0.5)")
    p.add_argument("--out", default=None, help="folder for stability.csv and flip_rates.csv (default: print only)")
    args = p.parse_args(argv)
    from core.model.checkpoint import CheckpointError, load_checkpoint
    from core.data.datasets import DatasetError, open_dataset
    from core.data.labels import LabelMappingError, parse_class_map
    try:
        lm = load_checkpoint(args.weights)
        ds = open_dataset(args.data, split=args.split, class_map=parse_class_map(args.class_map))
    except (CheckpointError, DatasetError, LabelMappingError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    df, skipped = dataset_stability(lm, ds)
    table = flip_table(df, args.threshold)
    for pid, reason in skipped[:20]:
        print(f"skipped: {pid}: {reason}", file=sys.stderr)
    print(table.to_string(index=False), file=sys.stderr)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        df.assign(stability=flips_column(df, args.threshold)).to_csv(out / "stability.csv", index=False)
        table.to_csv(out / "flip_rates.csv", index=False)
    print(json.dumps({"n": len(df), "n_skipped": len(skipped), "threshold": args.threshold,
                      "flip_rate": {r["change"]: round(r["flip_rate"], 4) for r in table.to_dict("records")}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
