"""Summarise a checkpoint's verdict on a dataset (per source too), or write a recalibrated copy of it: the
temperature, Platt calibration, conformal level, colour reference or content part set from its training data.

    python -m core recalibrate --weights weights/default.pt --data data/sample --split test
    python -m core recalibrate --weights weights/default.pt --fit-platt runs/platt.pt

It imports training and evaluation (to re-derive a calibration split and to evaluate), which is why it is not
part of core.verdict.verdict: the checkpoint module imports the verdict, and training and evaluation import the
checkpoint module.
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import torch

from core.data.datasets import DatasetError, open_dataset
from core.inference.evaluate import evaluate
from core.model.checkpoint import (CheckpointError, load_checkpoint, read_checkpoint, save_checkpoint, with_platt,
                                   with_temperature, with_verdict_alpha)
from core.model.train import config_of_checkpoint, content_entry, load_data
from core.verdict.content import CONTENT_EPOCHS
from core.verdict.verdict import (COLOUR_SHARE, _np, calibration_temperature, check_calibration_split,
                                  colourfulness, verdict_summary)


def with_colour_reference(source_path, out_path, data: str | None = None, device: str = "cpu", log=print) -> int:
    """Save a copy of a checkpoint whose familiarity gains the colour part (`Familiarity.score`): the
    colourfulness of its calibration split, re-derived from its training config (`data` overrides the
    recorded path) and checked against the logits stored at training time. Returns the number of reference
    images. The original is not modified."""
    ck, _ = read_checkpoint(source_path)
    v = ck.get("verdict") or {}
    if not v.get("familiarity") or not v.get("calibration"):
        raise CheckpointError(f"{source_path} has no familiarity model or calibration split: retrain it with "
                              "core.model.train, which fits both and the colour reference")
    if ck.get("arch") == "ensemble":
        raise ValueError("an ensemble's colour reference comes from core.model.ensemble (it refits its verdict)")
    td = load_data(config_of_checkpoint(ck, source_path, data), log=log)
    lm = load_checkpoint(source_path, device=device)
    check_calibration_split(lm.inference_model, ck, td.x_cal, lm.device, source_path)
    colour = np.sort(colourfulness(td.x_cal))
    if len(colour) != len(_np(v["familiarity"]["reference"])):
        raise ValueError(f"{source_path}: {len(colour)} calibration images against "
                         f"{len(_np(v['familiarity']['reference']))} familiarity reference images")
    v["familiarity"]["colour_reference"] = torch.tensor(colour, dtype=torch.float32)
    v["familiarity"]["colour_share"] = float(COLOUR_SHARE)
    save_checkpoint(ck, out_path)
    return len(colour)


def with_content(source_path, out_path, data: str | None = None, epochs: int = CONTENT_EPOCHS, seed: int = 0,
                 log=print) -> dict:
    """Save a copy of a checkpoint whose familiarity gains the content part (core.verdict.content): an encoder
    trained self-supervised on its training images (re-derived from its training config; `data` overrides the
    recorded path), their features as the kNN bank, and the calibration split's distances as the reference.
    Returns the fit's summary. The original is not modified."""
    ck, _ = read_checkpoint(source_path)
    v = ck.get("verdict") or {}
    if not v.get("familiarity") or not v.get("calibration"):
        raise CheckpointError(f"{source_path} has no familiarity model or calibration split: retrain it with "
                              "core.model.train, which fits both and the content part")
    td = load_data(config_of_checkpoint(ck, source_path, data), log=log)
    lm = load_checkpoint(source_path)
    check_calibration_split(lm.inference_model, ck, td.x_cal, lm.device, source_path)
    v["familiarity"].update(content_entry(td, epochs=epochs, seed=seed, log=log))
    save_checkpoint(ck, out_path)
    return v["familiarity"]["content"]["train"]


def main(argv=None) -> int:
    """Print the verdict summary of a checkpoint on a dataset (per source too), or write a copy of the
    checkpoint with its temperature (--fit-temperature), Platt calibration (--fit-platt) or conformal level
    (--set-alpha) set from its calibration split."""
    p = argparse.ArgumentParser(description="Verdict summary (REAL/FAKE/UNSURE) of a checkpoint on a dataset.")
    p.add_argument("--weights", default="weights/default.pt", help="default: weights/default.pt")
    p.add_argument("--data", help="dataset path (required unless a copy is written)")
    p.add_argument("--split", default="test", help="default: test")
    p.add_argument("--threshold", type=float, default=0.5, help="default: 0.5")
    p.add_argument("--fit-temperature", metavar="OUT",
                   help="write a copy of --weights to OUT with T fitted on its stored calibration split")
    p.add_argument("--set-alpha", nargs=2, metavar=("ALPHA", "OUT"),
                   help="write a copy of --weights to OUT whose 'near the threshold' band is at conformal level "
                        "ALPHA (at most ALPHA of in-distribution images decided wrongly; smaller: wider band)")
    p.add_argument("--fit-colour", metavar="OUT",
                   help="write a copy of --weights to OUT whose familiarity also flags images far less colourful "
                        "than its calibration split (re-derived from the training data; --data overrides its path)")
    p.add_argument("--fit-content", metavar="OUT",
                   help="write a copy of --weights to OUT whose familiarity also flags content far from every "
                        "training image (a content encoder trained on its training data, re-derived from its "
                        "training config; --data overrides its path)")
    p.add_argument("--content-epochs", type=int, default=CONTENT_EPOCHS,
                   help=f"with --fit-content: the content encoder's training epochs (default: {CONTENT_EPOCHS})")
    p.add_argument("--fit-platt", metavar="OUT",
                   help="write a copy of --weights to OUT Platt-calibrated on its stored calibration split: T and "
                        "a logit offset (folded into the logit layer's bias) fitted together")
    args = p.parse_args(argv)
    if args.fit_colour:
        try:
            n = with_colour_reference(args.weights, args.fit_colour, data=args.data,
                                      log=lambda m: print(m, file=sys.stderr))
        except (CheckpointError, DatasetError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        print(f"colour reference of {n:,} calibration images -> {args.fit_colour}")
        return 0
    if args.fit_content:
        try:
            info = with_content(args.weights, args.fit_content, data=args.data, epochs=args.content_epochs,
                                log=lambda m: print(m, file=sys.stderr))
        except (CheckpointError, DatasetError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        print(f"content part: {json.dumps(info)} -> {args.fit_content}")
        return 0
    if args.fit_platt:
        try:
            pl = with_platt(args.weights, args.fit_platt)
        except (CheckpointError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        print(f"T = {pl['temperature']:.4f}, logit offset {pl['logit_offset']:+.4f} "
              f"(b = {pl['b']:+.4f}, {pl['calibration_images']} calibration images) -> {args.fit_platt}")
        return 0
    if args.set_alpha:
        try:
            alpha = float(args.set_alpha[0])
            with_verdict_alpha(args.weights, alpha, args.set_alpha[1])
        except (CheckpointError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        print(f"alpha = {alpha} -> {args.set_alpha[1]}")
        return 0
    if args.fit_temperature:
        try:
            t = calibration_temperature(read_checkpoint(args.weights)[0].get("verdict"))
        except CheckpointError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        if t is None:
            print(f"error: {args.weights} has no calibration split to fit a temperature on", file=sys.stderr)
            return 2
        with_temperature(args.weights, t, args.fit_temperature)
        print(f"T = {t:.4f} -> {args.fit_temperature}")
        return 0
    if not args.data:
        p.error("--data is required")
    try:
        lm = load_checkpoint(args.weights)
        ds = open_dataset(args.data, split=args.split)
    except (CheckpointError, DatasetError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    df, _ = evaluate(lm, ds, threshold=args.threshold)
    vm = lm.verdict
    fam = df["familiarity"].to_numpy() if "familiarity" in df else None
    out = {"all": verdict_summary(df["label"], df["logit"], fam, vm, args.threshold, lm.temperature)}
    for src, g in df.groupby("source"):
        out[str(src)] = verdict_summary(g["label"], g["logit"], g["familiarity"] if fam is not None else None,
                                        vm, args.threshold, lm.temperature)
    print(json.dumps({"describe": vm.describe(args.threshold, lm.temperature), "summary": out}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
