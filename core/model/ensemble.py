"""One checkpoint from several trained detectors (core.model.models.Ensemble), and the LOGO of an ensemble recipe.

    python -m core ensemble --members weights/default.pt runs/v21pf.pt --out runs/ensemble.pt
    python -m core ensemble --logo weights/logo runs/logo-v21pf --out runs/logo-ensemble

Members must have been trained on the same data with the same split (data, split, seed, validation and
calibration fractions, left-out sources, preprocessing): the calibration split that the ensemble's
verdict is fitted on is then held out from every member, so the conformal band and the familiarity
cut-off keep their guarantees. That is checked, not assumed: each member's logits on the
re-derived calibration split must equal the calibration logits stored in its checkpoint.

Each member's logit is divided by its own temperature, fitted on its stored calibration logits
(core.verdict.verdict.calibration_temperature), so members trained to different confidence scales vote on one
scale; the ensemble then gets its verdict data (core.verdict.verdict.fit_verdict, which adds the members'
spread to the familiarity) and its own temperature, on the same calibration split.

--logo combines the fold models of LOGO runs (core.audits.generalize) family by family, evaluates each
ensemble on its held-out family exactly as core.audits.generalize does, and writes the same leaderboard.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

# Training-config fields that decide which images each split holds; members must agree on all of them.
SPLIT_FIELDS = ("data", "split", "val_data", "val_fraction", "calib_fraction", "calib_split", "split_seed", "format",
                "class_map", "exclude_fake_sources", "max_train_images")


def _split_field(tc: dict, f: str):
    if f == "split_seed":                   # the seed that drew the split: --split-seed, else --seed
        return tc.get("seed") if tc.get("split_seed") is None else tc.get("split_seed")
    if f == "calib_split":                  # checkpoints before the field drew calibration images at random
        return tc.get("calib_split", "random")
    return tc.get(f)


def _train_config(ck: dict, path) -> dict:
    tc = ck.get("train_config") or {}
    if "data" not in tc:
        raise ValueError(f"{path}: no training config in the checkpoint (not trained by core.model.train), "
                         "so its calibration split cannot be re-derived")
    return tc


def build_ensemble(member_paths, out, weights=None, data: str | None = None, name: str | None = None,
                   device: str = "cpu", log=print) -> dict:
    """Write an ensemble checkpoint of `member_paths` to `out`; returns the checkpoint dict.

    `data` overrides the members' recorded training data path (same dataset, moved). Raises ValueError
    with a one-line reason when the members cannot form an ensemble."""
    from core.model.checkpoint import make_checkpoint, read_checkpoint, save_checkpoint
    from core.model.models import build_model
    from core.model.train import config_of_checkpoint, evaluate, load_data
    from core.verdict.verdict import calibration_temperature, check_calibration_split, fit_verdict
    if len(member_paths) < 2:
        raise ValueError("an ensemble needs two or more member checkpoints")
    cks, digests = zip(*(read_checkpoint(p) for p in member_paths))
    configs = [_train_config(ck, p) for ck, p in zip(cks, member_paths)]
    for ck, tc, p in zip(cks[1:], configs[1:], member_paths[1:]):
        if ck["arch"] == "ensemble":
            raise ValueError(f"{p} is itself an ensemble; give its members instead")
        if ck["preprocess"] != cks[0]["preprocess"]:
            raise ValueError(f"{p} preprocesses images differently from {member_paths[0]}: "
                             f"{ck['preprocess']} vs {cks[0]['preprocess']}")
        differ = [f for f in SPLIT_FIELDS if _split_field(tc, f) != _split_field(configs[0], f)]
        if differ:
            raise ValueError(f"{p} was not trained on the same split as {member_paths[0]} "
                             f"(differs in {', '.join(differ)}), so no calibration split is held out from both")
    temps = []
    for ck, p in zip(cks, member_paths):
        t = calibration_temperature(ck.get("verdict"))
        if t is None:
            raise ValueError(f"{p} has no calibration split (retrain it with core.model.train)")
        temps.append(float(t))
    cfg = config_of_checkpoint(cks[0], member_paths[0], data)
    dev = torch.device(device)
    td = load_data(cfg, log=log)
    members = [{"arch": ck["arch"], "model_args": dict(ck["model_args"])} for ck in cks]
    model_args = {"members": members, "temperatures": temps,
                  "input_size": int(cks[0]["preprocess"].get("size", 32))}
    if weights is not None:
        model_args["weights"] = [float(w) for w in weights]
    model = build_model("ensemble", **model_args)
    for i, ck in enumerate(cks):
        model.members[i].load_state_dict(ck["state_dict"])
    model.to(dev).eval()
    for i, ck in enumerate(cks):
        # the re-derived calibration split must be the one each member was calibrated on
        check_calibration_split(model.members[i], ck, td.x_cal, dev, member_paths[i])
    verdict = fit_verdict(model, td.x_train, td.y_train, td.x_cal, td.y_cal, dev, cfg.verdict_alpha,
                          cfg.familiarity_flag_rate)
    temperature = calibration_temperature(verdict) or 1.0
    train_cfg = {**configs[0], "arch": "ensemble", "model_args": model_args,
                 "members": [{"path": str(p), "name": ck.get("name"), "arch": ck["arch"], "sha256": d,
                              "temperature": t, "train_seconds": (ck.get("train_config") or {}).get("train_seconds"),
                              "epochs": (ck.get("train_config") or {}).get("epochs"),
                              "finetune_epochs": (ck.get("train_config") or {}).get("finetune_epochs"),
                              "pseudo_fakes": (ck.get("train_config") or {}).get("pseudo_fakes")}
                             for p, ck, d, t in zip(member_paths, cks, digests, temps)],
                 "train_seconds": round(sum(float((c or {}).get("train_seconds") or 0) for c in configs), 1)}
    val = evaluate(model, td.x_val, td.y_val, dev)
    ckpt = make_checkpoint(model, "ensemble", model_args, td.preprocess, temperature=temperature,
                           train_config=train_cfg, history=[], metrics={"val": val},
                           name=name or Path(out).stem, verdict=verdict)
    save_checkpoint(ckpt, out)
    log(f"ensemble of {len(cks)} ({', '.join(m['arch'] for m in members)}; member T "
        f"{', '.join(f'{t:.3f}' for t in temps)}) -> {out}: val accuracy {val['accuracy']:.4f}, T {temperature:.4f}")
    return ckpt


def ensemble_logo(logo_dirs, out_dir, weights=None, log=print):
    """Ensembles of the fold models of LOGO runs, family by family, evaluated and tabulated as
    core.audits.generalize does; returns the leaderboard."""
    from core.data.datasets import open_dataset
    from core.audits.generalize import load_leaderboard, run_folds, write_leaderboard
    if len(logo_dirs) < 2:
        raise ValueError("--logo needs two or more LOGO folders")
    boards = [load_leaderboard(d) for d in logo_dirs]
    for d, b in zip(logo_dirs, boards):
        if b is None:
            raise ValueError(f"{d} holds no LOGO leaderboard (run core.audits.generalize first)")
    fams = [f for f in boards[0][0]["held_out"].astype(str) if all(f in set(b[0]["held_out"].astype(str))
                                                                    for b in boards[1:])]
    if not fams:
        raise ValueError("the LOGO folders share no held-out family")
    cfg0 = json.loads((Path(logo_dirs[0]) / "config.json").read_text())
    test_ds = open_dataset(cfg0["test_data"], split=cfg0.get("test_split", "test"))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.json").write_text(json.dumps({
        "ensemble_of": [str(d) for d in logo_dirs], "weights": weights, "families": fams,
        "test_data": cfg0["test_data"], "test_split": cfg0.get("test_split", "test"),
        "train": cfg0.get("train")}, indent=2, default=str))
    rows = run_folds(out_dir, fams, test_ds, lambda fam, fdir: build_ensemble(
        [Path(d) / fam / "model.pt" for d in logo_dirs], fdir / "model.pt", weights, name=f"logo-ensemble-{fam}",
        log=log), log, "logo-ensemble")
    recipes = [((b[1] or {}).get("config") or {}).get("recipe", str(d)) for d, b in zip(logo_dirs, boards)]
    return write_leaderboard(out_dir, rows, test_ds, {"recipe": "ensemble of: " + " | ".join(recipes),
                                                      "arch": "ensemble", "members": recipes})


def main(argv=None) -> int:
    from core.model.checkpoint import CheckpointError
    from core.data.datasets import DatasetError
    from core.audits.generalize import summarize
    p = argparse.ArgumentParser(description="Build an ensemble checkpoint from trained detectors, or the "
                                            "leave-one-generator-out leaderboard of an ensemble recipe.")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--members", nargs="+", help="member checkpoints (trained by core.model.train on the same split)")
    g.add_argument("--logo", nargs="+", help="LOGO folders (core.audits.generalize --out) of the member recipes")
    p.add_argument("--out", required=True, help="output checkpoint (--members) or folder (--logo)")
    p.add_argument("--weights", default=None, help="comma list of member weights summing to 1 (default: equal)")
    p.add_argument("--data", default=None, help="the members' training data, if it moved (default: as recorded)")
    p.add_argument("--name", default=None, help="checkpoint name (default: the file name)")
    p.add_argument("--device", default="cpu", help="default: cpu")
    args = p.parse_args(argv)
    try:
        weights = [float(w) for w in args.weights.split(",")] if args.weights else None
    except ValueError:
        print(f"error: --weights must be numbers separated by commas, got {args.weights!r}", file=sys.stderr)
        return 2

    def log(s):
        print(s, file=sys.stderr)
    try:
        if args.members:
            build_ensemble(args.members, args.out, weights, args.data, args.name, args.device, log=log)
        else:
            board = ensemble_logo(args.logo, args.out, weights, log=log)
            print(board.to_string(index=False))
            print(json.dumps(summarize(board)))
    except (CheckpointError, DatasetError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
