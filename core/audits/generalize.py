"""Leave-one-generator-out (LOGO): the honest measure of how a recipe handles generators it never saw.

    python -m core generalize --data data/sample --arch seed-v21 --epochs 12 --out runs/logo
    python -m core generalize --data my_manifest.csv --test-data my_test.csv --out runs/logo   # any source column

For each FAKE family F (the `source` of the FAKE images in the training data: the sample's
manifest.csv, a manifest CSV's `source` column, or a parquet `source`/`generator` column):
  1. train on the train REAL images plus every other family's train FAKE images;
  2. evaluate that model on the test REAL images plus F's test FAKE images.
DIR/F/model.pt and DIR/F/eval/{predictions.csv,metrics.json} sit beside DIR/leaderboard.csv, one row per
held-out family: held_out, n, auc, ap, acc, tpr_at_5pct_fpr, fake_recall, share_unsure,
share_wrong_decided. A family whose model and evaluation are already complete is not redone,
so an interrupted run resumes where it stopped. DIR/summary.json holds the mean and minimum AUC.

`source_table` computes the same columns for each source of any evaluation (no retraining): the
per-source leaderboard of the Generalization page.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pandas as pd

from core.model.augment import PSEUDO_FAKE_KINDS
from core.metrics.metrics import tpr_at_fpr
from core.verdict.verdict import UNSURE, WHY_UNFAMILIAR, VerdictModel, decide

LEADERBOARD_COLUMNS = ["held_out", "n", "n_fake", "auc", "ap", "acc", "tpr_at_5pct_fpr", "fake_recall",
                       "share_unsure", "share_wrong_decided", "fake_unsure", "fake_unfamiliar"]
# fake_unsure: share of the FAKE images whose verdict is UNSURE (for a held-out family: how often the
# app says "don't trust this one" on a generator it never saw); fake_unfamiliar: share of them flagged
# "unlike the training data" (None when the checkpoint has no familiarity model).


def held_out_row(y, logits, familiarity, vm: VerdictModel | None, threshold: float = 0.5,
                 temperature: float = 1.0) -> dict:
    """The leaderboard columns for one set of REAL + one family's FAKE images (labels y, raw logits)."""
    from sklearn.metrics import average_precision_score, roc_auc_score
    y = np.asarray(y).astype(int)
    z = np.asarray(logits, np.float64)
    p = 1 / (1 + np.exp(-z / temperature))
    both = len(np.unique(y)) == 2
    pred = (p >= threshold).astype(int)
    verdicts, reasons = decide(z, familiarity, vm, threshold, temperature)
    unsure = np.asarray(verdicts) == UNSURE
    unfamiliar = np.array([WHY_UNFAMILIAR in r for r in reasons], bool)
    has_familiarity = familiarity is not None and vm is not None and vm.familiarity is not None
    wrong = pred != y
    fake = y == 1
    return {"n": int(len(y)), "n_fake": int(fake.sum()),
            "auc": float(roc_auc_score(y, p)) if both else None,
            "ap": float(average_precision_score(y, p)) if both else None,
            "acc": float((~wrong).mean()) if len(y) else None,
            "tpr_at_5pct_fpr": tpr_at_fpr(y, p, 0.05) if both else None,
            "fake_recall": float(pred[fake].mean()) if fake.any() else None,
            "share_unsure": float(unsure.mean()) if len(y) else None,
            "share_wrong_decided": float((wrong & ~unsure).mean()) if len(y) else None,
            "fake_unsure": float(unsure[fake].mean()) if fake.any() else None,
            "fake_unfamiliar": float(unfamiliar[fake].mean()) if fake.any() and has_familiarity else None}


def source_table(df: pd.DataFrame, vm: VerdictModel | None, threshold: float = 0.5, temperature: float = 1.0
                 ) -> pd.DataFrame:
    """Per FAKE source of an evaluation (predictions.csv columns label, logit, source[, familiarity]):
    all REAL images against that source's FAKE images. Worst AP first."""
    rows = []
    real = df[df["label"] == 0]
    for src in sorted(set(df.loc[df["label"] == 1, "source"].astype(str))):
        sub = pd.concat([real, df[(df["label"] == 1) & (df["source"].astype(str) == src)]])
        fam = sub["familiarity"].to_numpy() if "familiarity" in sub else None
        rows.append({"source": src or "(none)", **held_out_row(sub["label"], sub["logit"], fam, vm, threshold,
                                                                temperature)})
    out = pd.DataFrame(rows)
    return out.sort_values("ap", na_position="first").reset_index(drop=True) if len(out) else out


def families_of(ds) -> list[str]:
    """The FAKE sources of a dataset, sorted; '' (no source) is not a family."""
    return sorted({src for _, label, src in ds.items if label == 1 and src})


def _complete(fdir: Path, fingerprint: str | None = None) -> bool:
    """model.pt and an evaluation of the current result format, made on the test data of `fingerprint`."""
    from core.inference.evaluate import load_evaluation
    if not (fdir / "model.pt").is_file():
        return False
    from core.model.checkpoint import file_sha256
    res = load_evaluation(fdir / "eval")
    return (res is not None and (fingerprint is None or res[1].get("test_fingerprint") == fingerprint)
            and res[1].get("weights_sha256") == file_sha256(fdir / "model.pt"))


def run_logo(cfg, out_dir, test_data: str | None = None, test_split: str = "test", families=None, log=print,
             progress=None) -> pd.DataFrame:
    """Train one model per held-out family (core.model.train with `exclude_fake_sources`), evaluate it on that
    family, write DIR/leaderboard.csv + DIR/summary.json; returns the leaderboard."""
    from core.data.datasets import open_dataset
    from core.data.labels import parse_class_map
    from core.model.train import train
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    class_map = parse_class_map(cfg.class_map)
    train_ds = open_dataset(cfg.data, split=cfg.split, fmt=cfg.format, class_map=class_map)
    test_ds = open_dataset(test_data or cfg.data, split=test_split, fmt=cfg.format, class_map=class_map)
    fams = families or families_of(train_ds)
    test_fams = set(families_of(test_ds))
    missing = [f for f in fams if f not in test_fams]
    if len(fams) < 2:
        raise ValueError(f"leave-one-generator-out needs 2 or more FAKE sources in the training data; found {fams}")
    if missing:
        raise ValueError(f"families with no FAKE images in the test data: {', '.join(missing)}")
    (out_dir / "config.json").write_text(json.dumps({"train": asdict(cfg), "families": fams,
                                                     "test_data": test_data or cfg.data, "test_split": test_split},
                                                    indent=2, default=str))

    if getattr(cfg, "fit_platt", False):
        platt_stored_folds(out_dir, fams, log)

    def make_fold(fam: str, fdir: Path) -> None:
        log(f"[logo] {fam}: training without it")
        train(replace(cfg, exclude_fake_sources=[fam], out=str(fdir / "model.pt"), name=f"logo-{fam}"),
              progress=progress, log=log)
    rows = run_folds(out_dir, fams, test_ds, make_fold, log, "logo", progress)
    return write_leaderboard(out_dir, rows, test_ds, {
        "recipe": recipe_text(cfg), "arch": cfg.arch, "epochs": cfg.epochs, "finetune_epochs": cfg.finetune_epochs})


def platt_stored_folds(out_dir: Path, fams: list[str], log=print) -> None:
    """Platt-calibrate the stored fold models trained before the recipe had --fit-platt: the same step that
    core.model.train does after training, on the fold's own calibration split (no retraining); their
    evaluations are then redone (`_complete` compares the model's hash)."""
    from core.model.checkpoint import is_platt_calibrated, platt_calibrated, read_checkpoint, save_checkpoint
    for fam in fams:
        path = Path(out_dir) / fam / "model.pt"
        if path.is_file():
            ckpt, _ = read_checkpoint(path)
            if not is_platt_calibrated(ckpt):
                out = platt_calibrated(ckpt)
                save_checkpoint(out, path)
                pl = out["metrics"]["platt"]
                log(f"[logo] {fam}: stored model Platt-calibrated (T {pl['temperature']:.4f}, "
                    f"logit offset {pl['logit_offset']:+.4f})")


def run_folds(out_dir: Path, fams: list[str], test_ds, make_fold, log=print, tag: str = "logo",
              progress=None) -> list[dict]:
    """For each held-out family: `make_fold(fam, fdir)` writes fdir/model.pt unless it is there, then it is
    evaluated on that family (`evaluate_fold`) unless a current evaluation of this test data is stored; returns
    the leaderboard rows. Resumable; a new result format or rebuilt test data re-evaluates the stored models,
    never retrains them."""
    rows = []
    fingerprint = test_fingerprint(test_ds)
    for k, fam in enumerate(fams):
        fdir = Path(out_dir) / fam
        if _complete(fdir, fingerprint):
            log(f"[{tag}] {fam}: complete, reused ({k + 1}/{len(fams)})")
        elif (fdir / "model.pt").is_file():      # saved only when its training finished (atomic write)
            log(f"[{tag}] {fam}: model reused, evaluation (missing, of another result format, model or test "
                "data) recomputed")
            evaluate_fold(fdir, fam, test_ds, fingerprint)
        else:
            fdir.mkdir(parents=True, exist_ok=True)
            make_fold(fam, fdir)
            evaluate_fold(fdir, fam, test_ds, fingerprint)
        rows.append(leaderboard_row(fdir, fam))
        log(f"[{tag}] {fam}: AUC {rows[-1]['auc']:.4f}, fake recall {rows[-1]['fake_recall']:.3f} "
            f"({k + 1}/{len(fams)})")
        if progress:
            progress({"phase": tag, "done": k + 1, "total": len(fams), "held_out": fam})
    return rows


def evaluate_fold(fdir: Path, fam: str, test_ds, fingerprint: str | None = None) -> None:
    """Evaluate the fold's model.pt on the test REALs plus family `fam`'s test FAKEs into fdir/eval."""
    from core.model.checkpoint import load_checkpoint
    from core.inference.evaluate import evaluate, write_evaluation
    lm = load_checkpoint(fdir / "model.pt")
    keep = [i for i, (_, label, src) in enumerate(test_ds.items) if label == 0 or src == fam]
    df, m = evaluate(lm, test_ds.subset(keep))
    m["held_out"] = fam
    m["test_fingerprint"] = fingerprint or test_fingerprint(test_ds)
    write_evaluation(fdir / "eval", df, m)


def write_leaderboard(out_dir: Path, rows: list[dict], test_ds, config: dict) -> pd.DataFrame:
    """DIR/leaderboard.csv (one row per held-out family) and DIR/summary.json; returns the leaderboard."""
    board = pd.DataFrame(rows, columns=LEADERBOARD_COLUMNS)
    tmp = out_dir / ".leaderboard.csv.tmp"
    board.to_csv(tmp, index=False)
    os.replace(tmp, out_dir / "leaderboard.csv")
    from core.inference.evaluate import RESULT_FORMAT
    summary = {**summarize(board), "test_root": str(test_ds.root), "test_fingerprint": test_fingerprint(test_ds),
               "config": config, "result_format": RESULT_FORMAT}
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return board


def recipe_text(cfg) -> str:
    """One line naming a training recipe's choices that matter for generalisation."""
    bits = [cfg.arch, f"{cfg.epochs}+{cfg.finetune_epochs} epochs"]
    if cfg.max_train_images:
        bits.append(f"{cfg.max_train_images:,} training images")
    ma = cfg.model_args or {}
    if ma.get("input_filter", "none") != "none":
        bits.append(f"input {ma['input_filter']}")
    if ma.get("pool_first") is False:
        bits.append("no early pooling")
    if ma.get("double_conv"):
        bits.append("two convs per block")
    if ma.get("stream_dropout"):
        bits.append(f"stream dropout {ma['stream_dropout']:g}")
    if getattr(cfg, "pseudo_fakes", 0):
        kinds = getattr(cfg, "pseudo_fake_kinds", ",".join(PSEUDO_FAKE_KINDS))
        bits.append(f"pseudo-fakes {cfg.pseudo_fakes:g}"
                    + ("" if kinds == ",".join(PSEUDO_FAKE_KINDS) else f" ({kinds.replace(',', ', ')})"))
    for k in ("aug_blur", "aug_jpeg", "aug_resample"):
        v = getattr(cfg, k, 0)
        if v:
            bits.append(f"{k[4:]} p={v:g}")
    if cfg.label_smoothing:
        bits.append(f"label smoothing {cfg.label_smoothing:g}")
    if cfg.robust_aug:
        bits.append("robust-aug")
    if getattr(cfg, "fit_platt", False):
        bits.append("Platt-calibrated")
    return ", ".join(bits)


def leaderboard_row(fdir: Path, fam: str) -> dict:
    """One leaderboard row recomputed from the fold's stored predictions and checkpoint."""
    from core.model.checkpoint import read_checkpoint
    from core.inference.evaluate import load_evaluation
    df, m = load_evaluation(fdir / "eval")
    ck, _ = read_checkpoint(fdir / "model.pt")
    vm = VerdictModel.from_checkpoint_meta(ck)
    fam_col = df["familiarity"].to_numpy() if "familiarity" in df else None
    return {"held_out": fam, **held_out_row(df["label"], df["logit"], fam_col, vm, 0.5,
                                            float(ck.get("temperature", 1.0)))}


def logo_frames(out_dir) -> list[tuple[str, pd.DataFrame, VerdictModel | None, float]]:
    """[(\"held out: F\", fold predictions, the fold model's VerdictModel, temperature)] of a stored LOGO run."""
    from core.model.checkpoint import read_checkpoint
    from core.inference.evaluate import load_evaluation
    res = load_leaderboard(out_dir)
    if res is None:
        return []
    frames = []
    for fam in res[0]["held_out"].astype(str):
        ev = load_evaluation(Path(out_dir) / fam / "eval")
        if ev is None:
            continue
        try:
            ck, _ = read_checkpoint(Path(out_dir) / fam / "model.pt")
            vm, temp = VerdictModel.from_checkpoint_meta(ck), float(ck.get("temperature", 1.0))
        except Exception:
            vm, temp = None, 1.0
        frames.append((f"held out: {fam}", ev[0], vm, temp))
    return frames


def test_fingerprint(ds) -> str:
    """Which test images a leaderboard was evaluated on, in a form a fresh clone reproduces (no mtimes, unlike
    core.inference.evaluate.dataset_fingerprint): every item's path relative to the root, label, and byte size. A rebuilt
    sample (new images under the same names) gets another fingerprint, so its stored rows are not shown as
    images of the current files."""
    h = hashlib.sha256()
    for ref, label, _ in ds.items:
        size = os.path.getsize(ref) if isinstance(ref, str) and os.path.isfile(ref) else -1
        rel = os.path.relpath(ref, ds.root) if isinstance(ref, str) else repr(ref)
        h.update(f"{rel}|{label}|{size}\n".encode())
    return h.hexdigest()[:16]


def same_test_data(summary: dict, root) -> bool | None:
    """Whether the data at `root` is what the stored leaderboard was evaluated on (None: it does not say, or
    the data cannot be opened)."""
    from core.data.datasets import DatasetError, open_dataset
    stored = summary.get("test_fingerprint")
    if not stored:
        return None
    try:
        return test_fingerprint(open_dataset(str(root))) == stored
    except (DatasetError, OSError, ValueError):
        return None


def summarize(board: pd.DataFrame) -> dict:
    auc = board["auc"].astype(float)
    return {"families": len(board), "mean_auc": float(auc.mean()), "min_auc": float(auc.min()),
            "worst_family": str(board.loc[auc.idxmin(), "held_out"]),
            "mean_share_wrong_decided": float(board["share_wrong_decided"].astype(float).mean()),
            "mean_share_unsure": float(board["share_unsure"].astype(float).mean())}


def load_leaderboard(out_dir) -> tuple[pd.DataFrame, dict] | None:
    """(leaderboard, summary) of a LOGO folder, or None when missing, unreadable or of another result
    format (its verdict columns would mean something else: run core.audits.generalize again, which re-evaluates
    the stored fold models)."""
    from core.inference.evaluate import RESULT_FORMAT
    out_dir = Path(out_dir)
    try:
        board = pd.read_csv(out_dir / "leaderboard.csv")
        summary = json.loads((out_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return None
    return (board, summary) if summary.get("result_format") == RESULT_FORMAT else None


def get_args_parser() -> argparse.ArgumentParser:
    from core.model.train import get_args_parser as train_parser
    p = train_parser()
    p.description = "Leave-one-generator-out: one model per held-out FAKE family, and a leaderboard."
    for a in p._actions:
        if a.dest == "out":
            a.required, a.default, a.help = True, None, "output folder for the leaderboard, models and evaluations"
    p.add_argument("--test-data", default=None, help="test dataset (default: --data, split --test-split)")
    p.add_argument("--test-split", default="test", help="split of a CIFAKE-layout root for testing (default: test)")
    p.add_argument("--families", default=None, help="comma list of families to hold out (default: all FAKE sources)")
    return p


def main(argv=None) -> int:
    from core.data.datasets import DatasetError
    from core.data.labels import LabelMappingError
    from core.model.train import main_config
    args = get_args_parser().parse_args(argv)
    try:
        cfg = main_config(args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from tqdm import tqdm

    def log(s):
        tqdm.write(s, file=sys.stderr)
    try:
        board = run_logo(cfg, args.out, args.test_data, args.test_split,
                         args.families.split(",") if args.families else None, log=log)
    except (DatasetError, LabelMappingError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(board.to_string(index=False))
    print(json.dumps(summarize(board)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
