"""Train a detector and save a self-describing checkpoint.

    python -m core.train --data data/sample --arch seed-v21 --epochs 12 --out weights/default.pt
    torchrun --nproc_per_node=2 -m core.train --data data/sample --arch seed-v21 --epochs 12 --out weights/ddp.pt

Recipe (the V2.1 seed's, made explicit): AdamW with a one-cycle learning-rate schedule, then a
fine-tuning phase at a reduced learning rate starting from the best weights so far; the checkpoint
kept is the best on the validation split (carved from train, seeded, when the dataset has none).
Augmentation: horizontal flip and 2-pixel translation; optional robustness augmentation
(grayscale, JPEG, blur, noise) with --robust-aug, off by default so the limitations page measures
the plain model.

Decoded training images are held in memory as uint8 when they fit (--cache-limit-gb): the sample's
10k 32x32 images are 31 MB, and decoding them once instead of every epoch is most of the speed.
Under torchrun (WORLD_SIZE > 1) it trains with DistributedDataParallel: a DistributedSampler
splits each epoch, rank 0 logs and writes the checkpoint (same format), gloo on CPU, NCCL on GPU.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from .checkpoint import make_checkpoint, save_checkpoint
from .datasets import DatasetError, ImageDataset, open_dataset
from .evaluate import build_loader
from .labels import LabelMappingError, parse_class_map
from .metrics import classification_metrics
from .models import build_model, count_parameters, select_device
from .preprocess import SEED_V21_PREPROCESS, PreprocessConfig, to_model_input
from .shifts import apply_shift


@dataclass
class TrainConfig:
    data: str = "data/sample"
    split: str = "train"              # split folder of a CIFAKE-layout root
    val_data: str | None = None       # separate validation set; else carved from train
    val_fraction: float = 0.1         # share of train held out for validation when val_data is None
    format: str = "auto"
    class_map: str | None = None
    arch: str = "seed-v21"
    model_args: dict = field(default_factory=dict)
    preprocess: str = "native"        # "native" (resize to image_size) or "seed-v21" (32 -> 128)
    image_size: int = 32              # model input side for "native", pixels
    epochs: int = 12                  # main phase, one-cycle schedule
    finetune_epochs: int = 3          # the seed's reduced-learning-rate phase
    finetune_lr_factor: float = 0.05  # fine-tuning lr = lr * this
    batch_size: int = 128
    lr: float = 2e-3                  # peak learning rate of the one-cycle schedule
    weight_decay: float = 5e-4
    label_smoothing: float = 0.0
    robust_aug: bool = False          # random grayscale / JPEG / blur / noise on 30% of each batch
    max_train_images: int | None = None   # subsample train (seeded), for quick runs
    seed: int = 0
    device: str = "auto"
    workers: int | None = None        # DataLoader workers for decoding (None: auto)
    cache_limit_gb: float = 4.0       # hold decoded uint8 images in memory below this size
    out: str = "weights/model.pt"
    name: str | None = None

    def preprocess_config(self) -> PreprocessConfig:
        return SEED_V21_PREPROCESS if self.preprocess == "seed-v21" else PreprocessConfig(size=self.image_size)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def decode_all(ds: ImageDataset, workers=None, progress=None) -> tuple[torch.Tensor, torch.Tensor, list]:
    """Decode and preprocess a whole dataset once: uint8 (N, 3, S, S), labels (N,), skipped list."""
    xs, ys, skipped, done = [], [], [], 0
    for b in build_loader(ds, batch_size=512, workers=workers):
        xs.append(b["x"])
        ys.append(b["y"])
        skipped += b["skipped"]
        done += len(b["ids"]) + len(b["skipped"])
        if progress:
            progress(done, len(ds))
    if not xs or sum(len(x) for x in xs) == 0:
        raise DatasetError(f"no decodable images in {ds.root}")
    xs = [x for x in xs if len(x)]
    return torch.cat(xs), torch.cat(ys), skipped


def augment(x: torch.Tensor, gen: torch.Generator, robust: bool = False) -> torch.Tensor:
    """Batch augmentation on uint8 (B, 3, S, S): flip, 2-px translation, optional robustness shifts."""
    b, _, s, _ = x.shape
    flip = torch.rand(b, generator=gen) < 0.5
    x = torch.where(flip.view(b, 1, 1, 1), x.flip(3), x)
    pad = F.pad(x, (2, 2, 2, 2), mode="replicate" if x.is_floating_point() else "constant")
    dx, dy = torch.randint(0, 5, (2,), generator=gen).tolist()   # one offset per batch: cheap, enough
    x = pad[:, :, dy:dy + s, dx:dx + s].contiguous()
    if robust:
        idx = torch.nonzero(torch.rand(b, generator=gen) < 0.3).flatten()
        if len(idx):
            kind = ["grayscale", "jpeg", "blur", "noise"][int(torch.randint(0, 4, (1,), generator=gen))]
            level = {"grayscale": 1.0, "jpeg": float(torch.randint(20, 95, (1,), generator=gen)),
                     "blur": float(torch.empty(1).uniform_(0.3, 1.5, generator=gen)),
                     "noise": float(torch.empty(1).uniform_(2, 16, generator=gen))}[kind]
            x[idx] = apply_shift(x[idx], kind, level, seed=int(torch.randint(0, 2**31, (1,), generator=gen)))
    return x


@torch.inference_mode()
def evaluate_tensors(model, x: torch.Tensor, y: torch.Tensor, device, batch_size=512) -> dict:
    """Loss, accuracy and ECE of `model` on uint8 tensors already in memory."""
    model.eval()
    logits = []
    for i in range(0, len(x), batch_size):
        xb = to_model_input(x[i:i + batch_size].to(device))
        logits.append(model(xb).float().cpu())
    z = torch.cat(logits)
    loss = F.binary_cross_entropy_with_logits(z, y.float()).item()
    m = classification_metrics(y.numpy(), torch.sigmoid(z).numpy())
    return {"loss": loss, "accuracy": m["accuracy"], "ece": m["ece"], "roc_auc": m["roc_auc"]}


def _dist_info():
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    return world, rank, local


def train(cfg: TrainConfig, progress=None, log=print) -> dict:
    """Train per `cfg`, write the best checkpoint to cfg.out (rank 0), return the checkpoint dict.

    `progress(info)` is called after every batch with a dict: phase, epoch, epochs, batch, batches,
    and after every epoch with `record` (the history row) added. `log` receives one line per epoch.
    """
    world, rank, local_rank = _dist_info()
    distributed = world > 1
    device = select_device(cfg.device)
    if distributed:
        import torch.distributed as dist
        if device.type == "cuda":
            device = torch.device("cuda", local_rank)
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    if rank != 0:
        log = lambda *a, **k: None   # noqa: E731  rank-0 logging only
        progress = None
    seed_everything(cfg.seed)
    pcfg = cfg.preprocess_config()
    class_map = parse_class_map(cfg.class_map)
    ds = open_dataset(cfg.data, split=cfg.split, fmt=cfg.format, class_map=class_map, preprocess=pcfg)
    log(f"train data: {ds.describe()}")
    for w in ds.warnings:
        log(f"warning: {w}")
    need_gb = len(ds) * 3 * pcfg.size ** 2 / 1e9
    if need_gb > cfg.cache_limit_gb:
        raise DatasetError(f"decoded training set needs {need_gb:.1f} GB > --cache-limit-gb {cfg.cache_limit_gb}; "
                           "raise the limit or use --max-train-images")
    t_decode = time.perf_counter()
    x_all, y_all, skipped = decode_all(ds, cfg.workers,
                                       (lambda d, t: progress({"phase": "decode", "batch": d, "batches": t}))
                                       if progress else None)
    log(f"decoded {len(x_all)} images in {time.perf_counter() - t_decode:.1f} s ({len(skipped)} skipped)")
    for p, r in skipped[:10]:
        log(f"skipped: {p}: {r}")
    g = torch.Generator().manual_seed(cfg.seed)
    perm = torch.randperm(len(x_all), generator=g)
    if cfg.val_data:
        vds = open_dataset(cfg.val_data, split="test", fmt=cfg.format, class_map=class_map, preprocess=pcfg)
        x_val, y_val, _ = decode_all(vds, cfg.workers)
        train_idx = perm
    else:
        n_val = max(1, int(round(cfg.val_fraction * len(x_all))))
        val_idx, train_idx = perm[:n_val], perm[n_val:]
        x_val, y_val = x_all[val_idx], y_all[val_idx]
    if cfg.max_train_images:
        train_idx = train_idx[:cfg.max_train_images]
    x_tr, y_tr = x_all[train_idx], y_all[train_idx]
    del x_all
    if len(torch.unique(y_tr)) < 2:
        raise DatasetError("training needs both REAL and FAKE images")

    model_args = {"input_size": pcfg.size, **cfg.model_args}
    model = build_model(cfg.arch, **model_args).to(device, memory_format=torch.channels_last)
    ddp_model = model
    if distributed:
        from torch.nn.parallel import DistributedDataParallel
        ddp_model = DistributedDataParallel(model, device_ids=[local_rank] if device.type == "cuda" else None)
    log(f"model {cfg.arch} {model_args}: {count_parameters(model):,} parameters; device {device}"
        + (f"; {world} processes" if distributed else ""))

    from torch.utils.data import DistributedSampler
    index_ds = list(range(len(x_tr)))
    sampler = DistributedSampler(index_ds, num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed, drop_last=True) \
        if distributed else None
    steps_per_epoch = (len(x_tr) // world) // cfg.batch_size or 1
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    total_steps = cfg.epochs * steps_per_epoch
    # OneCycleLR divides by its phase lengths: with a handful of steps (tiny runs) keep the lr constant.
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=total_steps, pct_start=0.25) \
        if total_steps >= 20 else torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda")
    history, best, best_state = [], None, None
    total_epochs = cfg.epochs + cfg.finetune_epochs
    t_start = time.perf_counter()
    for epoch in range(1, total_epochs + 1):
        phase = "main" if epoch <= cfg.epochs else "finetune"
        if phase == "finetune" and epoch == cfg.epochs + 1:
            if best_state is not None:
                model.load_state_dict(best_state)
            for group in opt.param_groups:
                group["lr"] = cfg.lr * cfg.finetune_lr_factor
        if sampler is not None:
            sampler.set_epoch(epoch)
            order = torch.tensor(list(iter(sampler)))
        else:
            order = torch.randperm(len(x_tr), generator=g)
        model.train()
        t0 = time.perf_counter()
        tot_loss, tot_correct, seen = 0.0, 0, 0
        for b in range(steps_per_epoch):
            idx = order[b * cfg.batch_size:(b + 1) * cfg.batch_size]
            xb = augment(x_tr[idx], g, cfg.robust_aug)
            yb = y_tr[idx].float().to(device, non_blocking=True)
            xb = to_model_input(xb.to(device, non_blocking=True))     # channels_last, like the model
            with torch.autocast(device.type, dtype=torch.float16, enabled=device.type == "cuda"):
                logits = ddp_model(xb)
                target = yb * (1 - cfg.label_smoothing) + 0.5 * cfg.label_smoothing
                loss = F.binary_cross_entropy_with_logits(logits.float(), target)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            if phase == "main":
                sched.step()
            tot_loss += loss.item() * len(idx)
            tot_correct += int(((logits.detach() > 0).float() == yb).sum())
            seen += len(idx)
            if progress:
                progress({"phase": phase, "epoch": epoch, "epochs": total_epochs, "batch": b + 1,
                          "batches": steps_per_epoch})
        train_seconds = time.perf_counter() - t0
        val = evaluate_tensors(model, x_val, y_val, device)
        rec = {"epoch": epoch, "phase": phase, "lr": opt.param_groups[0]["lr"], "train_loss": tot_loss / seen,
               "train_acc": tot_correct / seen, "val_loss": val["loss"], "val_acc": val["accuracy"],
               "val_ece": val["ece"], "val_auc": val["roc_auc"], "seconds": round(train_seconds, 2),
               "images_per_second": round(seen * world / train_seconds, 1)}
        history.append(rec)
        key = (val["accuracy"], -val["loss"])
        if best is None or key > best:
            best = key
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            rec["best"] = True
        log(f"epoch {epoch}/{total_epochs} [{phase}] loss {rec['train_loss']:.4f} acc {rec['train_acc']:.4f} | "
            f"val loss {val['loss']:.4f} acc {val['accuracy']:.4f} ece {val['ece']:.4f} | "
            f"{train_seconds:.1f}s {rec['images_per_second']:.0f} img/s" + (" *" if rec.get("best") else ""))
        if progress:
            progress({"phase": phase, "epoch": epoch, "epochs": total_epochs, "batch": steps_per_epoch,
                      "batches": steps_per_epoch, "record": rec})
    model.load_state_dict(best_state)
    final_val = evaluate_tensors(model, x_val, y_val, device)
    wall = time.perf_counter() - t_start
    train_cfg = asdict(cfg)
    train_cfg.update({"world_size": world, "device": str(device), "torch": torch.__version__,
                      "train_images": len(x_tr), "val_images": len(x_val), "skipped": len(skipped),
                      "train_seconds": round(wall, 1), "dataset": ds.describe()})
    ckpt = make_checkpoint(model, cfg.arch, model_args, pcfg, train_config=train_cfg, history=history,
                           metrics={"val": final_val}, name=cfg.name or os.path.splitext(os.path.basename(cfg.out))[0])
    if rank == 0:
        save_checkpoint(ckpt, cfg.out)
        log(f"saved {cfg.out} (best val acc {final_val['accuracy']:.4f}, {wall:.0f} s)")
    if distributed:
        import torch.distributed as dist
        dist.barrier()
        dist.destroy_process_group()
    return ckpt


def get_args_parser() -> argparse.ArgumentParser:
    d = TrainConfig()
    p = argparse.ArgumentParser(description="Train an AI-generated-image detector.")
    p.add_argument("--data", required=True, help="dataset path: CIFAKE root, class folder, manifest CSV or parquet")
    p.add_argument("--split", default=d.split, help=f"split folder of a CIFAKE root (default: {d.split})")
    p.add_argument("--val-data", default=None, help="separate validation dataset (default: carve from train)")
    p.add_argument("--val-fraction", type=float, default=d.val_fraction, help=f"default: {d.val_fraction}")
    p.add_argument("--format", default="auto", choices=["auto", "cifake", "folder", "manifest", "parquet"],
                   help="force the dataset format (default: auto)")
    p.add_argument("--class-map", default=None, help="e.g. 'AiArtData=FAKE,RealArt=REAL' or '0=REAL,1=FAKE'")
    p.add_argument("--arch", default=d.arch, help=f"seed-v1 or seed-v21 (default: {d.arch})")
    p.add_argument("--model-args", default="{}", help="JSON dict of extra architecture arguments (default: {})")
    p.add_argument("--preprocess", default=d.preprocess, choices=["native", "seed-v21"],
                   help="native: resize to --image-size; seed-v21: 32 then upscale to 128 (default: native)")
    p.add_argument("--image-size", type=int, default=d.image_size, help=f"default: {d.image_size}")
    p.add_argument("--epochs", type=int, default=d.epochs, help=f"main-phase epochs (default: {d.epochs})")
    p.add_argument("--finetune-epochs", type=int, default=d.finetune_epochs, help=f"default: {d.finetune_epochs}")
    p.add_argument("--finetune-lr-factor", type=float, default=d.finetune_lr_factor, help=f"default: {d.finetune_lr_factor}")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help=f"default: {d.batch_size}")
    p.add_argument("--lr", type=float, default=d.lr, help=f"peak learning rate (default: {d.lr})")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay, help=f"default: {d.weight_decay}")
    p.add_argument("--label-smoothing", type=float, default=d.label_smoothing, help="default: 0")
    p.add_argument("--robust-aug", action="store_true", help="grayscale/JPEG/blur/noise augmentation (default: off)")
    p.add_argument("--max-train-images", type=int, default=None, help="subsample the training set (default: all)")
    p.add_argument("--seed", type=int, default=d.seed, help=f"default: {d.seed}")
    p.add_argument("--device", default=d.device, help="cuda, mps, cpu or auto (default: auto)")
    p.add_argument("--workers", type=int, default=None, help="decoding workers (default: auto)")
    p.add_argument("--cache-limit-gb", type=float, default=d.cache_limit_gb, help=f"default: {d.cache_limit_gb}")
    p.add_argument("--out", default=d.out, help=f"checkpoint path (default: {d.out})")
    p.add_argument("--name", default=None, help="model name stored in the checkpoint (default: file stem)")
    return p


def main(argv=None) -> int:
    args = get_args_parser().parse_args(argv)
    try:
        model_args = json.loads(args.model_args)
    except ValueError as e:
        print(f"error: --model-args is not JSON: {e}", file=sys.stderr)
        return 2
    cfg = TrainConfig(**{k: v for k, v in vars(args).items() if k != "model_args"}, model_args=model_args)
    from tqdm import tqdm
    bar = {"bar": None}

    def progress(info):
        if info.get("phase") == "decode":
            return
        if info["batch"] == 1 or bar["bar"] is None:
            if bar["bar"] is not None:
                bar["bar"].close()
            bar["bar"] = tqdm(total=info["batches"], desc=f"epoch {info['epoch']}/{info['epochs']} {info['phase']}",
                              leave=False, file=sys.stderr)
        bar["bar"].update(info["batch"] - bar["bar"].n)

    try:
        train(cfg, progress=progress, log=lambda s: tqdm.write(s, file=sys.stderr))
    except (DatasetError, LabelMappingError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        if bar["bar"] is not None:
            bar["bar"].close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
