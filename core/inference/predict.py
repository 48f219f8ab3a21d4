"""Predict P(FAKE) for image files, folders and zips; one JSON line per file.

    python -m core predict --weights weights/default.pt photo.jpg more_images/ batch.zip
    python -m core predict --stability photo.jpg      # adds "flips_under": [...] (core.audits.stability)

Output lines: {"file": ..., "verdict": "FAKE", "prob_fake": 0.93, "label": "FAKE", "familiarity": 0.41}
(verdict REAL/FAKE/UNSURE, see core.verdict.verdict; an UNSURE line adds "why": ["near the threshold" and/or
"unlike the training data"]), or {"file": ..., "error": "reason"}.
Exit status 0 when every file was processed (per-file errors included), 2 for usage errors
(no files given, unusable weights).

The library part (`predict_one`, `predict_many`) is what the app's Predict page calls.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from core.data.archive import ArchiveError, read_zip_images
from core.model.checkpoint import CheckpointError, LoadedModel, load_checkpoint, with_crops
from core.model.gradcam import gradcam_pair
from core.data.images import ImageError, LoadedImage, load_image
from core.data.labels import CLASS_NAMES
from core.data.preprocess import preprocess_views, to_model_input
from core.verdict.verdict import WHY_UNFAMILIAR, VerdictModel, colourfulness, decide, fired_parts, pooled_features


@dataclass
class Prediction:
    """Everything the app shows about one image."""
    name: str
    prob_fake: float | None = None            # sigmoid(logit / T)
    logit: float | None = None
    error: str | None = None
    model_input: np.ndarray | None = None      # uint8 (S, S, 3): exactly what the model sees
    cam_fake: np.ndarray | None = None         # float (S, S) in [0, 1], Grad-CAM explaining FAKE
    cam_real: np.ndarray | None = None         # float (S, S) in [0, 1], Grad-CAM explaining REAL
    original_size: tuple[int, int] | None = None
    notes: list[str] = field(default_factory=list)
    familiarity: float | None = None           # core.verdict.verdict familiarity in [0, 1]; None without a model
    temperature: float = 1.0
    colourfulness: float | None = None         # core.verdict.verdict.colourfulness of the model input (its windows)
    familiarity_parts: dict | None = None      # Familiarity.parts of this image: part name -> value
    nearest: list | None = None                # [{path, label, distance}]: nearest training images (content space)

    def label(self, threshold: float = 0.5) -> str | None:
        return None if self.prob_fake is None else CLASS_NAMES[int(self.prob_fake >= threshold)]

    def cam(self, threshold: float = 0.5) -> np.ndarray | None:
        """Grad-CAM of the class called at `threshold` (the label shown), float (S, S) in [0, 1]."""
        if self.prob_fake is None or self.cam_fake is None:
            return None
        return self.cam_fake if self.prob_fake >= threshold else self.cam_real

    def verdict(self, vm: VerdictModel | None, threshold: float = 0.5) -> tuple[str | None, list[str]]:
        """(REAL/FAKE/UNSURE, reasons) at `threshold` (core.verdict.verdict.decide); (None, []) for a failed file."""
        if self.logit is None:
            return None, []
        v, why = decide([self.logit], None if self.familiarity is None else [self.familiarity], vm, threshold,
                        self.temperature)
        return v[0], why[0]

    def as_json(self, threshold: float = 0.5, vm: VerdictModel | None = None) -> dict:
        if self.error:
            return {"file": self.name, "error": self.error}
        verdict, why = self.verdict(vm, threshold)
        d = {"file": self.name, "verdict": verdict, "prob_fake": round(self.prob_fake, 6),
             "label": self.label(threshold),
             "familiarity": None if self.familiarity is None else round(self.familiarity, 4)}
        if why:
            d["why"] = why
            fired = fired_parts(self.familiarity_parts, vm.familiarity.flag_rate) if vm and vm.familiarity else []
            if WHY_UNFAMILIAR in why and fired:
                d["unfamiliar_parts"] = fired
        if self.familiarity_parts:
            d["familiarity_parts"] = {k: round(float(v), 4) for k, v in self.familiarity_parts.items()}
        if self.nearest is not None:
            d["nearest"] = self.nearest
        if self.notes:
            d["notes"] = self.notes
        return d


def predict_tensors(lm: LoadedModel, x_uint8: torch.Tensor, with_cam: bool = False, nearest: int = 0):
    """uint8 (B, 3, S, S) -> (prob_fake (B,), logits (B,), cams or None, familiarity parts {name: (B,)} or None,
    colourfulness (B,), nearest or None). Thread-safe.

    nearest > 0, with a content part: (bank indices (B, n), distances (B, n)) of the nearest training images in
    the content encoder's space (`ContentFamiliarity.neighbours`).

    cams: (explaining FAKE (B, S, S), explaining REAL (B, S, S)); pick per image by the called class.
    uint8 (B, K, 3, S, S), K windows per image: logits averaged over the windows (as
    core.inference.evaluate.predict_logits); Grad-CAM explains the first (centre) window.
    """
    views = x_uint8.shape[1] if x_uint8.ndim == 5 else 0
    x = to_model_input((x_uint8.flatten(0, 1) if views else x_uint8).to(lm.device))
    fam, colour, near = None, colourfulness(x_uint8), None
    fm = lm.verdict.familiarity
    if fm is not None:
        with torch.inference_mode():
            _, f = pooled_features(lm.inference_model, x)
        f = f.float().cpu()
        if views:
            f = f.view(-1, views, f.shape[1]).mean(dim=1)          # the windows' mean, as for the logits
        content = None if fm.content is None else fm.content.features(x_uint8)
        fam = fm.parts(f.numpy(), colour, content)
        if nearest and content is not None:
            near = fm.content.neighbours(content, nearest)
    if with_cam:
        cam_fake, cam_real, logits = gradcam_pair(lm.inference_model, x)
        if views:
            cam_fake, cam_real = cam_fake[::views], cam_real[::views]
        cams = (cam_fake.cpu(), cam_real.cpu())
    else:
        with torch.inference_mode():
            logits = lm.inference_model(x)
        cams = None
    logits = logits.float().cpu()
    if views:
        logits = logits.view(-1, views).mean(dim=1)
    return torch.sigmoid(logits / lm.temperature), logits, cams, fam, colour, near


def predict_many(lm: LoadedModel, sources: list[tuple[str, object]], with_cam: bool = False,
                 batch_size: int = 128, progress=None, nearest: int = 0) -> list[Prediction]:
    """Predict for [(name, path | bytes)]; every input gets a Prediction, failed ones with `error`. nearest > 0:
    each Prediction also lists that many nearest training images (with a content part; else `nearest` is None)."""
    out: list[Prediction] = []
    pending: list[tuple[Prediction, torch.Tensor]] = []

    def flush():
        if not pending:
            return
        x = torch.stack([t for _, t in pending])                   # (B, 3, S, S) or (B, K, 3, S, S) uint8
        probs, logits, cams, fam, colour, near = predict_tensors(lm, x, with_cam, nearest)
        score = None if fam is None else np.minimum.reduce(list(fam.values()))
        for i, (pred, t) in enumerate(pending):
            pred.prob_fake, pred.logit, pred.temperature = float(probs[i]), float(logits[i]), lm.temperature
            pred.familiarity = None if fam is None else float(score[i])
            pred.familiarity_parts = None if fam is None else {k: float(v[i]) for k, v in fam.items()}
            if near is not None:
                c = lm.verdict.familiarity.content
                pred.nearest = [{"path": c.paths[j], "label": CLASS_NAMES[int(c.labels[j])],
                                 "distance": round(float(d), 4)} for j, d in zip(near[0][i], near[1][i])]
            pred.colourfulness = float(colour[i])
            pred.model_input = (t[0] if t.ndim == 4 else t).permute(1, 2, 0).numpy()   # the (centre) window
            if cams is not None:
                pred.cam_fake, pred.cam_real = cams[0][i].numpy(), cams[1][i].numpy()
        pending.clear()

    for n, (name, src) in enumerate(sources):
        pred = Prediction(name=name)
        out.append(pred)
        try:
            loaded: LoadedImage = load_image(src, draft_side=lm.preprocess.draft_side)
            pred.original_size, pred.notes = loaded.original_size, loaded.notes
            pending.append((pred, preprocess_views(loaded.decoded, lm.preprocess)))
        except ImageError as e:
            pred.error = str(e)
        if len(pending) >= batch_size:
            flush()
        if progress:
            progress(n + 1, len(sources))
    flush()
    return out


def predict_one(lm: LoadedModel, name: str, src, with_cam: bool = True, nearest: int = 0) -> Prediction:
    return predict_many(lm, [(name, src)], with_cam=with_cam, nearest=nearest)[0]


def expand_inputs(paths: list[str]) -> list[tuple[str, object]]:
    """Files stay files; folders become every file inside them (recursive, sorted); zips their entries.

    Nothing is dropped: a folder's non-image files (an .svg, a .heic, a README) are passed on like the
    rest and get load_image's one-line reason ("an SVG vector image, which is not supported ...").
    Problems become (name, ImageError) entries so they are reported in order, not raised.
    """
    out: list[tuple[str, object]] = []
    for p in paths:
        path = Path(p)
        if path.is_dir():
            files = sorted(f for f in path.rglob("*") if f.is_file())
            if not files:
                out.append((p, ImageError("folder has no files")))
            out += [(str(f), str(f)) for f in files]
        elif path.suffix.lower() == ".zip" and path.is_file():
            try:
                images, skipped = read_zip_images(path.read_bytes())
            except ArchiveError as e:
                out.append((p, ImageError(str(e))))
                continue
            out += [(f"{p}!{n}", b) for n, b in images]
            out += [(f"{p}!{n}", ImageError(r)) for n, r in skipped]
        else:
            out.append((p, p))
    return out


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Predict P(FAKE) for images; one JSON line per file.")
    p.add_argument("--weights", default="weights/default.pt", help="checkpoint (default: weights/default.pt)")
    p.add_argument("--threshold", type=float, default=0.5, help="P(FAKE) threshold for the FAKE label (default: 0.5)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, mps or auto (default: cpu)")
    p.add_argument("--crops", type=int, default=None,
                   help="windows averaged per image, 1-9, for checkpoints trained with --fit crop "
                        "(default: the checkpoint's)")
    p.add_argument("--stability", action="store_true",
                   help="add \"flips_under\": the everyday changes (core.audits.stability.CHANGES) that flip the label")
    p.add_argument("--nearest", type=int, default=0, metavar="N",
                   help="add \"nearest\": the N training images nearest to each input in the familiarity's content "
                        "space, with labels and distances (needs a checkpoint with a content part; default: 0)")
    p.add_argument("inputs", nargs="+", help="image files, folders or zip archives")
    return p


def main(argv=None) -> int:
    args = get_args_parser().parse_args(argv)
    from core.model.models import select_device
    try:
        lm = with_crops(load_checkpoint(args.weights, select_device(args.device)), args.crops)
    except (CheckpointError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    items = expand_inputs(args.inputs)
    ok = [(n, s) for n, s in items if not isinstance(s, ImageError)]
    if args.nearest and (lm.verdict.familiarity is None or lm.verdict.familiarity.content is None):
        print(f"error: --nearest needs a checkpoint with a content part; {args.weights} has none "
              "(python -m core recalibrate --weights W --fit-content OUT adds one)", file=sys.stderr)
        return 2
    preds = iter(predict_many(lm, ok, nearest=max(0, args.nearest)))
    if args.stability:
        from core.audits.stability import stability_of_sources
        flips = iter(stability_of_sources(lm, ok, args.threshold))
    for name, src in items:
        if isinstance(src, ImageError):
            line = {"file": name, "error": str(src)}
        else:
            line = next(preds).as_json(args.threshold, lm.verdict)
            if args.stability:
                f = next(flips)
                if "error" not in line and f is not None:
                    line["flips_under"] = f
        print(json.dumps(line), flush=False)
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
