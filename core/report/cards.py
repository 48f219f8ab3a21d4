"""Model cards in Markdown, generated from checkpoints and fresh evaluations (never typed by hand).

    python -m core cards weights/default.pt weights/seed-v1.pt weights/seed-v21-128.pt --data data/sample --splits test ood > weights/README.md

(the checkpoints come first: --splits takes every name after it)

Each card: architecture and parameter count, preprocessing, training config and time, the training
history's last epochs, and `core.inference.evaluate` metrics per split (accuracy, AUC, ECE, per-class recall),
so `python -m core evaluate --weights W --data data/sample/test --out DIR` reproduces its numbers.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from core.model.checkpoint import LoadedModel, load_checkpoint
from core.data.datasets import open_dataset
from core.inference.evaluate import evaluate
from core.model.models import count_parameters


def _pct(v) -> str:
    return "n/a" if v is None else f"{v * 100:.2f}%"


def metrics_table(evals: dict[str, dict]) -> str:
    rows = ["| split | images | accuracy | ROC AUC | ECE | recall REAL | recall FAKE | errors with conf > 0.9 "
            "| UNSURE | wrong, not UNSURE |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for split, m in evals.items():
        pc = m.get("per_class", {})
        share = m.get("share_of_errors_confidence_over_0.9")
        rows.append(f"| {split} | {m['n']:,} | {_pct(m.get('accuracy'))} | "
                    f"{m['roc_auc']:.4f} | {m['ece']:.4f} | {_pct(pc.get('REAL', {}).get('recall'))} | "
                    f"{_pct(pc.get('FAKE', {}).get('recall'))} | "
                    f"{m.get('errors_confidence_over_0.9', 0)} of {m.get('errors', 0)}"
                    + (f" ({share:.0%})" if share is not None else "") + " | "
                    + f"{_pct((m.get('verdict') or {}).get('share_unsure'))} | "
                    + f"{_pct((m.get('verdict') or {}).get('share_wrong_decided'))} |")
    return "\n".join(rows)


def _members_line(lm: LoadedModel, tc: dict) -> str:
    """An ensemble's members (core.model.ensemble): which checkpoints, their recipes, temperatures and weights."""
    members = tc.get("members") or []
    w = (lm.meta.get("model_args") or {}).get("weights") or [1 / max(1, len(members))] * len(members)
    parts = [f"`{m.get('name') or m.get('path')}` ({m.get('arch')}, {m.get('epochs')} + {m.get('finetune_epochs')} "
             f"epochs, pseudo-fakes {m.get('pseudo_fakes') or 0}, sha256 `{str(m.get('sha256'))[:16]}`; T "
             f"{m.get('temperature', 1.0):.3f}, weight {wi:g})" for m, wi in zip(members, w)]
    return (f"- Ensemble of {len(members)} (core.model.ensemble): " + "; ".join(parts) + f"; all trained on one split "
            f"(seed {tc.get('seed')}, {_count(tc.get('train_images'))} train / {_count(tc.get('val_images'))} "
            "validation images)")


def _count(n) -> str:
    """1,234 for a number; "?" when the checkpoint does not say (one made outside core.model.train)."""
    return f"{n:,}" if isinstance(n, (int, float)) else "?"


def _platt_text(lm: LoadedModel) -> str:
    pl = (lm.meta.get("metrics") or {}).get("platt")
    if not pl:
        return ""
    return (f" (Platt calibration on {pl['calibration_images']:,} calibration images: logit offset "
            f"{pl['logit_offset']:+.3f} folded into the last layer's bias)")


def model_card(path: str, lm: LoadedModel, evals: dict[str, dict]) -> str:
    tc = lm.meta.get("train_config", {})
    hist = lm.meta.get("history", [])
    best = max(hist, key=lambda h: (h.get("val_acc", 0), -h.get("val_loss", 0))) if hist else {}
    lines = [f"## `{Path(path).name}` — {lm.arch}", "",
             f"- Architecture: `{lm.arch}` with `{lm.meta.get('model_args')}`; {count_parameters(lm.model):,} parameters; "
             f"file {Path(path).stat().st_size / 1e6:.2f} MB, sha256 `{lm.sha256[:16]}`",
             f"- Preprocessing: {lm.preprocess.describe()}; temperature {lm.temperature:g}" + _platt_text(lm),
             f"- Trained on: {tc.get('dataset', '?')}",
             _members_line(lm, tc) if lm.arch == "ensemble" else
             f"- Training: {tc.get('epochs')} epochs one-cycle (peak lr {tc.get('lr')}, AdamW, weight decay "
             f"{tc.get('weight_decay')}, batch {tc.get('batch_size')}) + {tc.get('finetune_epochs')} fine-tuning epochs at "
             f"lr x {tc.get('finetune_lr_factor')}; augmentation: blur p={tc.get('aug_blur', 0)}, JPEG "
             f"p={tc.get('aug_jpeg', 0)}, resampling p={tc.get('aug_resample', 0)}, robustness mix "
             f"{'on' if tc.get('robust_aug') else 'off'}; pseudo-fakes {tc.get('pseudo_fakes', 0)}"
             f"{' (' + tc['pseudo_fake_kinds'].replace(',', ', ') + ')' if tc.get('pseudo_fakes') and tc.get('pseudo_fake_kinds') else ''}; "
             f"label smoothing {tc.get('label_smoothing', 0)}; "
             f"seed {tc.get('seed')}; {_count(tc.get('train_images'))} train / {_count(tc.get('val_images'))} validation images",
             f"- Training time: {tc.get('train_seconds', '?')} s on {tc.get('device', '?')} "
             f"(torch {tc.get('torch', '?')}, {tc.get('world_size', 1)} process(es))",
             f"- Best validation epoch: {best.get('epoch')} ({best.get('phase')}), val accuracy {_pct(best.get('val_acc'))}, "
             f"val ECE {best.get('val_ece', float('nan')):.4f}" if best else "- No training history stored",
             *[f"- Verdict: {line}" for line in lm.verdict.describe()],
             "", "Evaluation with `python -m core evaluate` (threshold 0.5):", "", metrics_table(evals), ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Write Markdown model cards from checkpoints and fresh evaluations.")
    ap.add_argument("weights", nargs="+", help="checkpoint files")
    ap.add_argument("--data", default="data/sample", help="CIFAKE-layout root (default: data/sample)")
    ap.add_argument("--splits", nargs="+", default=["test", "ood"], help="splits to evaluate (default: test ood)")
    ap.add_argument("--title", default="# Model cards", help="heading of the document")
    args = ap.parse_args(argv)
    out = [args.title, ""]
    for w in args.weights:
        lm = load_checkpoint(w)
        evals = {}
        for s in args.splits:
            _, m = evaluate(lm, open_dataset(args.data, split=s))
            evals[s] = m
            print(f"{w} {s}: accuracy {m['accuracy']:.4f}", file=sys.stderr)
        out.append(model_card(w, lm, evals))
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
