"""Which recipe makes verdicts hold on new content? Train the candidates, then score each on the sample's test and
ood splits and on the new-content probe, in one run.

    python benchmarks/new_content_ablation.py [--out runs/new_content_ablation] [--only NAME,...] [--score-only]

Candidates (each a `python -m core train` / `python -m core recalibrate` command, written to OUT/NAME.log):
- `shipped`: weights/default.pt as it is (model features + colour);
- `shipped+content`: the same weights with the content part (recalibrate --fit-content, encoder on its train set);
- `wide`: the shipped recipe trained on data/sample plus data/extra (more photographs, icons, renders, and fakes
  of them: regenerated, a DCGAN and a VAE trained here), with the content part;
- `wide+aug`: `wide` plus blur, JPEG and resampling augmentation at p = 0.1 each (Wang et al., CVPR 2020).

Selection rule, fixed before the runs: a candidate qualifies when its sample test accuracy is 97% or more and its
test UNSURE share 5% or less. Among those, the lowest worst-domain share "wrong and not UNSURE" on the probe wins;
candidates within 2 points of it are told apart by the probe's REAL images' UNSURE share (lower wins), then by
ood accuracy (higher wins). Writes benchmarks/results/new_content_ablation.json.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from common import ROOT, save

sys.path.insert(0, str(ROOT))

SHIPPED_RECIPE = ["--arch", "two-stream", "--epochs", "50", "--finetune-epochs", "3", "--pseudo-fakes", "0.3",
                  "--fit-platt", "--verdict-alpha", "0.02", "--seed", "1", "--split-seed", "0",
                  "--content-epochs", "30"]
AUGMENT = ["--aug-blur", "0.1", "--aug-jpeg", "0.1", "--aug-resample", "0.1"]
CANDIDATES = {
    "shipped": None,
    "shipped+content": ["recalibrate", "--weights", "weights/default.pt", "--fit-content", "{out}",
                        "--content-epochs", "30"],
    "wide": ["train", "--data", "data/sample", "--extra-data", "data/extra", *SHIPPED_RECIPE, "--out", "{out}"],
    "wide+aug": ["train", "--data", "data/sample", "--extra-data", "data/extra", *SHIPPED_RECIPE, *AUGMENT,
                 "--out", "{out}"],
}


def make(name: str, out_dir: Path) -> Path:
    if CANDIDATES[name] is None:
        return ROOT / "weights" / "default.pt"
    ck = out_dir / f"{name}.pt"
    if ck.is_file():
        return ck
    cmd = [sys.executable, "-m", "core", *[a.format(out=ck) for a in CANDIDATES[name]]]
    t0 = time.perf_counter()
    with open(out_dir / f"{name}.log", "w") as log:
        log.write(" ".join(cmd) + "\n")
        log.flush()
        subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, check=True)
    print(f"{name}: made in {time.perf_counter() - t0:.0f} s", flush=True)
    return ck


def score(ck: Path, runs: str) -> dict:
    from core.audits.new_content import evaluate_new_content, probe_available
    from core.data.datasets import open_dataset
    from core.inference.evaluate import cached_evaluation
    from core.model.checkpoint import load_checkpoint
    from core.verdict.verdict import verdict_summary
    lm = load_checkpoint(ck)
    row = {"weights": str(ck.relative_to(ROOT) if ck.is_relative_to(ROOT) else ck)}
    for split in ("test", "ood"):
        df, m = cached_evaluation(lm, open_dataset(ROOT / "data" / "sample", split=split), runs_dir=runs)
        fam = df["familiarity"].to_numpy() if df["familiarity"].notna().any() else None
        s = verdict_summary(df["label"], df["logit"], fam, lm.verdict, 0.5, lm.temperature)
        row[split] = {"accuracy": m["accuracy"], "roc_auc": m["roc_auc"], "share_unsure": s["share_unsure"],
                      "share_wrong_decided": s["share_wrong_decided"]}
    if probe_available(str(ROOT / "data" / "new_content" / "probe")):
        table, summary = evaluate_new_content(lm, str(ROOT / "data" / "new_content" / "probe"), runs)
        row["probe"] = summary
        row["probe_table"] = table.round(4).to_dict(orient="records")
    return row


def choose(rows: dict) -> str | None:
    ok = {k: r for k, r in rows.items() if "probe" in r and r["test"]["accuracy"] >= 0.97
          and r["test"]["share_unsure"] <= 0.05}
    if not ok:
        return None
    best = min(r["probe"]["worst_wrong_decided"] for r in ok.values())
    near = {k: r for k, r in ok.items() if r["probe"]["worst_wrong_decided"] <= best + 0.02}
    return min(near, key=lambda k: (near[k]["probe"]["real_unsure"], -near[k]["ood"]["accuracy"]))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/new_content_ablation", help="checkpoints and logs (default: %(default)s)")
    p.add_argument("--only", default=None, help="comma list of candidates (default: all)")
    p.add_argument("--score-only", action="store_true", help="score the checkpoints already made; train none")
    p.add_argument("--runs", default="runs", help="evaluation cache (default: runs)")
    a = p.parse_args()
    out_dir = ROOT / a.out
    out_dir.mkdir(parents=True, exist_ok=True)
    names = a.only.split(",") if a.only else list(CANDIDATES)
    rows = {}
    for name in names:
        ck = (ROOT / "weights" / "default.pt") if CANDIDATES[name] is None else out_dir / f"{name}.pt"
        if not a.score_only:
            ck = make(name, out_dir)
        if ck.is_file():
            rows[name] = score(ck, a.runs)
            print(name, json.dumps({k: v for k, v in rows[name].items() if k != "probe_table"}), flush=True)
    chosen = choose(rows)
    print(f"chosen by the rule: {chosen}")
    save("new_content_ablation", {"candidates": {k: CANDIDATES[k] for k in rows}, "rows": rows, "chosen": chosen,
                                  "rule": __doc__.split("Selection rule, fixed before the runs: ")[1].split("Writes")[0]
                                  .replace("\n", " ").strip()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
