"""Train a detector and save a self-describing checkpoint.

    python -m core train --data data/sample --arch seed-v21 --epochs 12 --out weights/default.pt
    torchrun --nproc_per_node=2 -m core train --data data/sample --arch seed-v21 --epochs 12 --out weights/ddp.pt

Recipe (the V2.1 seed's, made explicit): AdamW with a one-cycle learning-rate schedule, then a
fine-tuning phase at a reduced learning rate starting from the best weights so far; the checkpoint
kept is the best on the validation split (carved from train, seeded, when the dataset has none).
Augmentation (core.model.augment): horizontal flip and 2-pixel translation; per-image blur, JPEG and resampling
with --aug-blur/--aug-jpeg/--aug-resample; optional robustness augmentation
(grayscale, JPEG, blur, noise) with --robust-aug, off by default so the limitations page measures
the plain model.

Decoded training images are held in memory as uint8 when they fit (--cache-limit-gb): the sample's
10k 32x32 images are 31 MB, and decoding them once instead of every epoch is most of the speed.
Under torchrun (WORLD_SIZE > 1) it trains with DistributedDataParallel: a DistributedSampler
splits each epoch, rank 0 logs and writes the checkpoint (same format), gloo on CPU, NCCL on GPU.

Parts (torchvision-references style): `load_data` (decode + split), `train_one_epoch`, `evaluate`
(numbers on tensors in memory), and `train`, which wires them together, calls `on_epoch` after every
epoch (benchmarks and the app observe epochs through it) and tears the process group down in a
`finally`. `train` returns a `TrainResult`: the checkpoint, the best model and the validation data.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from core.model.augment import (ALL_PSEUDO_FAKE_KINDS, PSEUDO_FAKE_KINDS, AugmentRecipe, augment, parse_pseudo_fake_kinds,
                      pseudo_fakes)
from core.model.checkpoint import make_checkpoint, platt_calibrated, save_checkpoint
from core.data.datasets import DatasetError, concat_datasets, open_dataset
from core.inference.evaluate import decode_dataset
from core.data.labels import LabelMappingError, parse_class_map
from core.metrics.metrics import classification_metrics
from core.model.models import ARCHITECTURES, build_model, count_parameters, select_device
from core.data.preprocess import SEED_V21_PREPROCESS, PreprocessConfig, to_model_input
from core.verdict.content import fit_content
from core.verdict.verdict import CONTENT_SHARE, calibration_temperature, fit_verdict


@dataclass
class TrainConfig:
    data: str = "data/sample"
    split: str = "train"              # split folder of a CIFAKE-layout root
    extra_data: list = field(default_factory=list)   # more training datasets (their split `split` if CIFAKE-layout)
    val_data: str | None = None       # separate validation set; else carved from train
    val_fraction: float = 0.1         # share of train held out for validation when val_data is None
    format: str = "auto"
    class_map: str | None = None
    arch: str = "seed-v21"
    model_args: dict = field(default_factory=dict)
    preprocess: str = "native"        # "native" (resize to image_size) or "seed-v21" (32 -> 128)
    image_size: int = 32              # model input side for "native", pixels
    fit: str = "squash"               # "squash" / "center": resize to image_size; "crop": image_size windows
                                      # at native resolution, a random one per image and epoch
    crops: int = 1                    # fit "crop": windows averaged at inference (stored in the checkpoint)
    draft: bool = False               # JPEGs draft-decoded at >= 2x image_size before resizing (not with crop)
    epochs: int = 12                  # main phase, one-cycle schedule
    finetune_epochs: int = 3          # the seed's reduced-learning-rate phase
    finetune_lr_factor: float = 0.05  # fine-tuning lr = lr * this
    batch_size: int = 128
    lr: float = 2e-3                  # peak learning rate of the one-cycle schedule
    weight_decay: float = 5e-4
    label_smoothing: float = 0.0
    robust_aug: bool = False          # random grayscale / JPEG / blur / noise on 30% of each batch
    aug_blur: float = 0.0             # per-image probability of Gaussian blur (core.model.augment)
    aug_jpeg: float = 0.0             # per-image probability of JPEG re-encoding (core.model.augment)
    aug_resample: float = 0.0         # per-image probability of down-and-up resampling (core.model.augment)
    pseudo_fakes: float = 0.0         # share of REAL images also added as self-synthesised FAKEs (core.model.augment)
    pseudo_fake_kinds: str = ",".join(PSEUDO_FAKE_KINDS)   # their traces, comma list (core.model.augment)
    fit_temperature: bool = False     # store T fitted on the calibration split (core.verdict.verdict.calibration_temperature)
    fit_platt: bool = False           # Platt-calibrate (T and a logit offset) on the calibration split (core.model.checkpoint)
    exclude_fake_sources: list = field(default_factory=list)   # FAKE sources left out (leave-one-generator-out)
    calib_fraction: float = 0.1       # share of train held out from fitting AND selection, for verdicts
    calib_split: str = "group"        # "group": whole photos (ds.groups()) go to calibration, so its guarantees
                                      # are about new photos; "random": images at random (also the fallback
                                      # for data without groups)
    verdict_alpha: float = 0.05       # conformal miscoverage of the "near the threshold" band
    familiarity_flag_rate: float = 0.05   # share of in-distribution images the familiarity cut-off may flag
    content_epochs: int = 0           # epochs of the familiarity's content encoder (core.verdict.content); 0: none
    max_train_images: int | None = None   # subsample train (seeded), for quick runs
    seed: int = 0
    split_seed: int | None = None     # seeds the calibration / validation / train split (None: `seed`); models
                                      # of different seeds on one split can form an ensemble (core.model.ensemble)
    device: str = "auto"
    workers: int | None = None        # DataLoader workers for decoding (None: auto)
    cache_limit_gb: float = 4.0       # hold decoded uint8 images in memory below this size
    out: str = "weights/model.pt"
    name: str | None = None

    def preprocess_config(self) -> PreprocessConfig:
        if self.preprocess == "seed-v21":
            return SEED_V21_PREPROCESS
        return PreprocessConfig(size=self.image_size, fit=self.fit, crops=self.crops, draft=self.draft)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass
class Dist:
    """Where this process sits: world size, ranks and its device (single process: world 1, rank 0)."""
    world: int
    rank: int
    local_rank: int
    device: torch.device

    @property
    def distributed(self) -> bool:
        return self.world > 1


@dataclass
class TrainData:
    """Decoded training and validation sets, uint8 (N, 3, S, S) in memory, labels (N,) 0 = REAL, 1 = FAKE."""
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_cal: torch.Tensor               # held out from fitting and model selection: conformal + familiarity
    y_cal: torch.Tensor
    preprocess: PreprocessConfig
    description: str                  # the training dataset's describe()
    skipped: list                     # [(id, reason)] undecodable training files
    dataset: ImageDataset | None = None       # the training dataset (re-read each epoch for fit "crop")
    train_index: torch.Tensor | None = None   # int64 (N,): dataset positions of x_train's rows


@dataclass
class EpochReport:
    """What `on_epoch` receives after every epoch (on every rank): the history row and the live model.

    `model` is the plain (unwrapped) model in eval mode; observers may run it but must not change it.
    """
    epoch: int
    epochs: int
    phase: str                        # "main" or "finetune"
    record: dict                      # the history row (losses, accuracies, lr, seconds, ...)
    model: torch.nn.Module
    device: torch.device
    rank: int


@dataclass
class TrainResult:
    """What `train` returns: the checkpoint dict (as saved), the best model (eval mode) and its data.

    Post-training steps (calibration fits, familiarity statistics) start from `model` and
    `data.x_val` / `data.y_val`, the validation split that chose the checkpoint.
    """
    checkpoint: dict
    model: torch.nn.Module
    data: TrainData
    dist: Dist

    @property
    def history(self) -> list[dict]:
        return self.checkpoint["history"]


def grouped_holdout(perm: torch.Tensor, groups: list[str], n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Split the shuffled row order `perm` into (held, rest) by whole groups; both keep `perm`'s order.

    groups[i] names row i's group (a photo; a generated image is its own). Rows of one group are never
    on both sides. Photos (groups of several rows) and single rows are held out separately, each in
    proportion to its share of the rows, groups drawn in a random order (`g`) until the share is
    reached: a photo holds a hundred crops, and drawing among all groups at once would fill the
    held-out split with photos (REAL) and leave out the single generated images (FAKE)."""
    count: dict[str, int] = {}
    for name in groups:
        count[name] = count.get(name, 0) + 1
    names = sorted(count)
    order = [names[j] for j in torch.randperm(len(names), generator=g).tolist()]
    total_rows = len(groups)
    take = set()
    for multi in (True, False):
        pool = [name for name in order if (count[name] > 1) == multi]
        want = n * sum(count[name] for name in pool) / max(total_rows, 1)
        got = 0
        for name in pool:
            if got >= want:
                break
            take.add(name)
            got += count[name]
    held = torch.tensor([i for i in perm.tolist() if groups[i] in take], dtype=torch.long)
    rest = torch.tensor([i for i in perm.tolist() if groups[i] not in take], dtype=torch.long)
    return held, rest


def config_of_checkpoint(ck: dict, path, data: str | None = None) -> TrainConfig:
    """The TrainConfig a checkpoint was trained with, as far as it decides the splits, so that `load_data`
    re-derives its calibration split; `data` overrides the recorded data path (same dataset, moved).
    Raises ValueError when the checkpoint has no training config (not trained by core.model.train)."""
    tc = ck.get("train_config") or {}
    if "data" not in tc:
        raise ValueError(f"{path}: no training config in the checkpoint (not trained by core.model.train), "
                         "so its calibration split cannot be re-derived")
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    cfg = TrainConfig(**{k: v for k, v in tc.items() if k in fields and k not in ("out", "name")})
    # checkpoints from before the field drew their calibration images at random
    cfg = dataclasses.replace(cfg, calib_split=tc.get("calib_split", "random"))
    return dataclasses.replace(cfg, data=data) if data else cfg


def load_data(cfg: TrainConfig, log=print, progress=None) -> TrainData:
    """Open, decode (once, into memory) and split the training data per `cfg`.

    Validation comes from cfg.val_data, else a seeded cfg.val_fraction of train. `progress(done, total)`
    follows the decoding. Raises DatasetError when the data cannot be trained on.
    """
    pcfg = cfg.preprocess_config()
    class_map = parse_class_map(cfg.class_map)
    ds = open_dataset(cfg.data, split=cfg.split, fmt=cfg.format, class_map=class_map)
    if cfg.extra_data:
        ds = concat_datasets([ds] + [open_dataset(p, split=cfg.split, class_map=class_map) for p in cfg.extra_data])
    if cfg.exclude_fake_sources:
        drop = set(cfg.exclude_fake_sources)
        keep = [i for i, (_, label, src) in enumerate(ds.items) if not (label == 1 and src in drop)]
        if len(keep) == len(ds):
            raise DatasetError(f"no FAKE images with source {', '.join(sorted(drop))} to leave out")
        ds = ds.subset(keep)
        log(f"left out FAKE sources: {', '.join(sorted(drop))}")
    log(f"train data: {ds.describe()}")
    for w in ds.warnings:
        log(f"warning: {w}")
    need_gb = len(ds) * 3 * pcfg.size ** 2 / 1e9
    if need_gb > cfg.cache_limit_gb:
        raise DatasetError(f"decoded training set needs {need_gb:.1f} GB > --cache-limit-gb {cfg.cache_limit_gb}; "
                           "raise the limit or use --max-train-images")
    t_decode = time.perf_counter()
    # One decoded view per image: fit "crop" keeps the centre window here (validation); training windows
    # are drawn afresh every epoch (training_windows).
    once = dataclasses.replace(pcfg, crops=1) if pcfg.fit == "crop" else pcfg
    dec = decode_dataset(ds, once, workers=cfg.workers, progress=progress)
    if len(dec.x) == 0:
        raise DatasetError(f"no decodable images in {ds.root}")
    log(f"decoded {len(dec.x)} images in {time.perf_counter() - t_decode:.1f} s ({len(dec.skipped)} skipped)")
    for p, r in dec.skipped[:10]:
        log(f"skipped: {p}: {r}")
    g = torch.Generator().manual_seed(cfg.seed if cfg.split_seed is None else cfg.split_seed)
    perm = torch.randperm(len(dec.x), generator=g)
    # The calibration split comes first and is never trained on nor used to pick the checkpoint, so the
    # conformal guarantee and the familiarity cut-off hold for new in-distribution images. New *photos*
    # need whole photos held out: crops of a training photo are not new draws (calibrated on them, the
    # band promised at most 2% decided wrongly and test photos gave 3.5%).
    n_cal = int(round(cfg.calib_fraction * len(dec.x))) if cfg.calib_fraction > 0 else 0
    groups = ds.groups() if cfg.calib_split == "group" else None
    if groups is not None and n_cal:
        row_groups = [groups[i] for i in dec.index.tolist()]
        cal_idx, perm = grouped_holdout(perm, row_groups, n_cal, g)
        held = Counter(row_groups[i] for i in cal_idx.tolist())
        n_photos = sum(1 for name, k in held.items() if k > 1)
        log(f"calibration split: {len(cal_idx)} images, {sum(k for k in held.values() if k > 1)} of them from "
            f"{n_photos} whole photos (groups) that training never sees")
    else:
        if cfg.calib_split == "group" and n_cal:
            log("calibration split: images at random (the data names no photo groups)")
        cal_idx, perm = perm[:n_cal], perm[n_cal:]
    x_cal, y_cal = dec.x[cal_idx], dec.y[cal_idx]
    if cfg.val_data:
        vds = open_dataset(cfg.val_data, split="test", fmt=cfg.format, class_map=class_map)
        vdec = decode_dataset(vds, once, workers=cfg.workers)
        if len(vdec.x) == 0:
            raise DatasetError(f"no decodable images in {vds.root}")
        x_val, y_val, train_idx = vdec.x, vdec.y, perm
    else:
        n_val = max(1, int(round(cfg.val_fraction * len(dec.x))))
        val_idx, train_idx = perm[:n_val], perm[n_val:]
        x_val, y_val = dec.x[val_idx], dec.y[val_idx]
    if cfg.max_train_images:
        train_idx = train_idx[:cfg.max_train_images]
    x_tr, y_tr = dec.x[train_idx], dec.y[train_idx]
    if len(torch.unique(y_tr)) < 2:
        raise DatasetError("training needs both REAL and FAKE images")
    return TrainData(x_tr, y_tr, x_val, y_val, x_cal, y_cal, pcfg, ds.describe(), dec.skipped, ds, dec.index[train_idx])


def content_entry(data: TrainData, epochs: int, seed: int = 0, log=print) -> dict:
    """The familiarity's content part for a checkpoint (core.verdict.content): an encoder trained on the training
    images, their features as the kNN bank (with their file ids), the calibration split as the reference."""
    ds, index = data.dataset, data.train_index
    # A file's path as the dataset opened it (relative to the working folder when the data path was), so the
    # app can show the image; a parquet row's id otherwise.
    paths = [ds.items[int(i)][0] if isinstance(ds.items[int(i)][0], str) else ds.item_id(int(i)) for i in index] \
        if ds is not None and index is not None else [""] * len(data.x_train)
    fam, info = fit_content(data.x_train, data.y_train.numpy(), paths, data.x_cal, epochs=epochs, seed=seed,
                            log=log)
    log(f"content familiarity: encoder {info['epochs']} epochs in {info['seconds']:.0f} s, bank of "
        f"{len(fam.paths):,} training images, k = {fam.k}")
    return {"content": fam.as_meta(info), "content_share": float(CONTENT_SHARE)}


def training_windows(data: TrainData, epoch: int, seed: int, workers: int | None = None) -> torch.Tensor:
    """fit "crop": the training images as a fresh random window each (seeded by seed and epoch), uint8
    (N, 3, S, S) in x_train's row order. Images that decoded once decode again (same files)."""
    dec = decode_dataset(data.dataset, dataclasses.replace(data.preprocess, crops=1), workers=workers,
                         indices=data.train_index.tolist(), crop_seed=seed * 100_003 + epoch)
    if len(dec.x) != len(data.x_train):
        raise DatasetError(f"{len(data.x_train) - len(dec.x)} training image(s) stopped decoding during training")
    return dec.x


def recipe_of(cfg: TrainConfig) -> AugmentRecipe:
    return AugmentRecipe(blur=cfg.aug_blur, jpeg=cfg.aug_jpeg, resample=cfg.aug_resample, robust=cfg.robust_aug)


def train_one_epoch(model: torch.nn.Module, opt, x: torch.Tensor, y: torch.Tensor, order: torch.Tensor,
                    cfg: TrainConfig, device: torch.device, gen: torch.Generator, scaler=None, sched=None,
                    progress=None) -> dict:
    """One pass over x[order] in batches of cfg.batch_size (a trailing partial batch is dropped).

    model: the module to step (DDP-wrapped under torchrun); x uint8 (N, 3, S, S) on the CPU, y (N,);
    `sched.step()` after every batch when given. Returns {"loss", "accuracy", "seen", "seconds"}
    (this process's images). `progress(batch, batches)` after every batch.
    """
    model.train()
    steps = len(order) // cfg.batch_size or 1
    t0 = time.perf_counter()
    tot_loss, tot_correct, seen = 0.0, 0, 0
    kinds = parse_pseudo_fake_kinds(cfg.pseudo_fake_kinds)
    for b in range(steps):
        idx = order[b * cfg.batch_size:(b + 1) * cfg.batch_size]
        xb, yb = pseudo_fakes(x[idx], y[idx], gen, cfg.pseudo_fakes, kinds)
        xb = augment(xb, gen, recipe_of(cfg))
        yb = yb.float().to(device, non_blocking=True)
        xb = to_model_input(xb.to(device, non_blocking=True))     # channels_last, like the model
        with torch.autocast(device.type, dtype=torch.float16, enabled=device.type == "cuda"):
            logits = model(xb)
            target = yb * (1 - cfg.label_smoothing) + 0.5 * cfg.label_smoothing
            loss = F.binary_cross_entropy_with_logits(logits.float(), target)
        opt.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()
        if sched is not None:
            sched.step()
        tot_loss += loss.item() * len(yb)
        tot_correct += int(((logits.detach() > 0).float() == yb).sum())
        seen += len(yb)
        if progress:
            progress(b + 1, steps)
    seconds = time.perf_counter() - t0
    return {"loss": tot_loss / max(seen, 1), "accuracy": tot_correct / max(seen, 1), "seen": seen,
            "seconds": seconds}


@torch.inference_mode()
def evaluate(model, x: torch.Tensor, y: torch.Tensor, device, batch_size=512) -> dict:
    """Loss, accuracy, ECE and ROC AUC of `model` on uint8 tensors x (N, 3, S, S), y (N,) in memory."""
    model.eval()
    logits = []
    for i in range(0, len(x), batch_size):
        xb = to_model_input(x[i:i + batch_size].to(device))
        logits.append(model(xb).float().cpu())
    z = torch.cat(logits) if logits else torch.zeros(0)
    loss = F.binary_cross_entropy_with_logits(z, y.float()).item()
    m = classification_metrics(y.numpy(), torch.sigmoid(z).numpy())
    return {"loss": loss, "accuracy": m["accuracy"], "ece": m["ece"], "roc_auc": m["roc_auc"]}


def setup_distributed(cfg: TrainConfig) -> Dist:
    """Read torchrun's environment; under WORLD_SIZE > 1 join the process group (NCCL on GPU, else gloo)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = select_device(cfg.device)
    if world > 1:
        import torch.distributed as dist
        if device.type == "cuda":
            device = torch.device("cuda", local)
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    return Dist(world, rank, local, device)


def sync_buffers(model: torch.nn.Module) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank.

    DDP averages gradients, so parameters stay identical, but each rank's BatchNorm statistics follow
    its own batches. Without this, ranks validate different models, may keep different "best"
    epochs, and then fine-tune from different weights.
    """
    import torch.distributed as dist
    for b in model.buffers():
        dist.broadcast(b, src=0)


def teardown_distributed() -> None:
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def train(cfg: TrainConfig, progress=None, log=print, on_epoch=None) -> TrainResult:
    """Train per `cfg`, write the best checkpoint to cfg.out (rank 0), return a TrainResult.

    `progress(info)` is called after every batch with a dict: phase, epoch, epochs, batch, batches,
    and after every epoch with `record` (the history row) added (rank 0 only). `log` receives one
    line per epoch (rank 0 only). `on_epoch(EpochReport)` is called after every epoch's validation on
    every rank. The process group is torn down however training ends.
    """
    dist_ = setup_distributed(cfg)
    try:
        return _train(cfg, dist_, progress, log, on_epoch)
    finally:
        teardown_distributed()


def _train(cfg: TrainConfig, dist_: Dist, progress, log, on_epoch) -> TrainResult:
    world, rank, device = dist_.world, dist_.rank, dist_.device
    if rank != 0:
        log = lambda *a, **k: None   # noqa: E731  rank-0 logging only
        progress = None
    seed_everything(cfg.seed)
    data = load_data(cfg, log, (lambda d, t: progress({"phase": "decode", "batch": d, "batches": t}))
                     if progress else None)
    x_tr, y_tr = data.x_train, data.y_train

    model_args = {"input_size": data.preprocess.size, **cfg.model_args}
    model = build_model(cfg.arch, **model_args).to(device, memory_format=torch.channels_last)
    step_model = model
    if dist_.distributed:
        from torch.nn.parallel import DistributedDataParallel
        step_model = DistributedDataParallel(model, device_ids=[dist_.local_rank] if device.type == "cuda" else None)
    log(f"model {cfg.arch} {model_args}: {count_parameters(model):,} parameters; device {device}"
        + (f"; {world} processes" if dist_.distributed else ""))

    from torch.utils.data import DistributedSampler
    sampler = DistributedSampler(range(len(x_tr)), num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed,
                                 drop_last=True) if dist_.distributed else None
    steps_per_epoch = (len(x_tr) // world) // cfg.batch_size or 1
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    total_steps = cfg.epochs * steps_per_epoch
    # OneCycleLR divides by its phase lengths: with a handful of steps (tiny runs) keep the lr constant.
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=total_steps, pct_start=0.25) \
        if total_steps >= 20 else torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    scaler = torch.amp.GradScaler("cuda") if device.type == "cuda" else None
    g = torch.Generator().manual_seed(cfg.seed)
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
        if data.preprocess.fit == "crop":
            x_tr = training_windows(data, epoch, cfg.seed, cfg.workers)
        tr = train_one_epoch(step_model, opt, x_tr, y_tr, order, cfg, device, g, scaler,
                             sched if phase == "main" else None,
                             (lambda b, n: progress({"phase": phase, "epoch": epoch, "epochs": total_epochs,
                                                     "batch": b, "batches": n})) if progress else None)
        if dist_.distributed:
            sync_buffers(model)
        val = evaluate(model, data.x_val, data.y_val, device)
        rec = {"epoch": epoch, "phase": phase, "lr": opt.param_groups[0]["lr"], "train_loss": tr["loss"],
               "train_acc": tr["accuracy"], "val_loss": val["loss"], "val_acc": val["accuracy"],
               "val_ece": val["ece"], "val_auc": val["roc_auc"], "seconds": round(tr["seconds"], 2),
               "images_per_second": round(tr["seen"] * world / tr["seconds"], 1)}
        history.append(rec)
        key = (val["accuracy"], -val["loss"])
        if best is None or key > best:
            best = key
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            rec["best"] = True
        log(f"epoch {epoch}/{total_epochs} [{phase}] loss {rec['train_loss']:.4f} acc {rec['train_acc']:.4f} | "
            f"val loss {val['loss']:.4f} acc {val['accuracy']:.4f} ece {val['ece']:.4f} | "
            f"{tr['seconds']:.1f}s {rec['images_per_second']:.0f} img/s" + (" *" if rec.get("best") else ""))
        if progress:
            progress({"phase": phase, "epoch": epoch, "epochs": total_epochs, "batch": steps_per_epoch,
                      "batches": steps_per_epoch, "record": rec})
        if on_epoch:
            on_epoch(EpochReport(epoch, total_epochs, phase, rec, model, device, rank))
    model.load_state_dict(best_state)
    final_val = evaluate(model, data.x_val, data.y_val, device)
    wall = time.perf_counter() - t_start
    train_cfg = asdict(cfg)
    train_cfg.update({"world_size": world, "device": str(device), "torch": torch.__version__,
                      "train_images": len(x_tr), "val_images": len(data.x_val), "skipped": len(data.skipped),
                      "train_seconds": round(wall, 1), "dataset": data.description})
    verdict = None
    if len(data.x_cal) and len(torch.unique(data.y_cal)) == 2:
        verdict = fit_verdict(model, x_tr, y_tr, data.x_cal, data.y_cal, device, cfg.verdict_alpha,
                              cfg.familiarity_flag_rate)
        if cfg.content_epochs:
            verdict["familiarity"].update(content_entry(data, cfg.content_epochs, cfg.seed, log))
        log(f"verdict: conformal band on {len(data.x_cal)} calibration images, familiarity fitted on {len(x_tr)}")
    else:
        log("verdict: no calibration split with both classes (--calib-fraction 0 or too little data): "
            "the checkpoint carries no UNSURE band or familiarity model")
    train_cfg["calib_images"] = len(data.x_cal)
    temperature = (calibration_temperature(verdict) or 1.0) if cfg.fit_temperature else 1.0
    if cfg.fit_temperature:
        log(f"temperature {temperature:.4f} fitted on the calibration split")
    ckpt = make_checkpoint(model, cfg.arch, model_args, data.preprocess, temperature=temperature,
                           train_config=train_cfg, history=history,
                           metrics={"val": final_val}, name=cfg.name or os.path.splitext(os.path.basename(cfg.out))[0],
                           verdict=verdict)
    if cfg.fit_platt and verdict:
        ckpt = platt_calibrated(ckpt)
        getattr(model, "module", model).load_state_dict(ckpt["state_dict"])
        ckpt["metrics"]["val"] = evaluate(model, data.x_val, data.y_val, device)
        pl = ckpt["metrics"]["platt"]
        log(f"Platt calibration on the calibration split: T {pl['temperature']:.4f}, logit offset "
            f"{pl['logit_offset']:+.4f} (val acc {ckpt['metrics']['val']['accuracy']:.4f} after it)")
    if rank == 0:
        save_checkpoint(ckpt, cfg.out)
        log(f"saved {cfg.out} (best val acc {final_val['accuracy']:.4f}, {wall:.0f} s)")
    if dist_.distributed:
        import torch.distributed as dist
        dist.barrier()       # no rank leaves (and tears down) before rank 0 has written the checkpoint
    return TrainResult(checkpoint=ckpt, model=model.eval(), data=data, dist=dist_)


def get_args_parser() -> argparse.ArgumentParser:
    d = TrainConfig()
    p = argparse.ArgumentParser(description="Train an AI-generated-image detector.")
    p.add_argument("--data", required=True, help="dataset path: CIFAKE root, class folder, manifest CSV or parquet")
    p.add_argument("--split", default=d.split, help=f"split folder of a CIFAKE root (default: {d.split})")
    p.add_argument("--extra-data", default="",
                   help="comma list of more training datasets, e.g. data/extra (default: none)")
    p.add_argument("--val-data", default=None, help="separate validation dataset (default: carve from train)")
    p.add_argument("--val-fraction", type=float, default=d.val_fraction, help=f"default: {d.val_fraction}")
    p.add_argument("--format", default="auto", choices=["auto", "cifake", "folder", "manifest", "parquet"],
                   help="force the dataset format (default: auto)")
    p.add_argument("--class-map", default=None, help="e.g. 'AiArtData=FAKE,RealArt=REAL' or '0=REAL,1=FAKE'")
    p.add_argument("--arch", default=d.arch, help=f"{', '.join(ARCHITECTURES)} (default: {d.arch})")
    p.add_argument("--model-args", default="{}", help="JSON dict of extra architecture arguments (default: {})")
    p.add_argument("--preprocess", default=d.preprocess, choices=["native", "seed-v21"],
                   help="native: resize to --image-size; seed-v21: 32 then upscale to 128 (default: native)")
    p.add_argument("--image-size", type=int, default=d.image_size,
                   help=f"model input side in pixels, e.g. 32, 64, 128, 224 (default: {d.image_size})")
    p.add_argument("--fit", default=d.fit, choices=["squash", "center", "crop"],
                   help="squash: resize the whole image; center: its centre square; crop: --image-size windows "
                        "at native resolution, random per image and epoch in training (default: squash)")
    p.add_argument("--crops", type=int, default=d.crops,
                   help="with --fit crop: windows averaged at inference, 1-9, stored in the checkpoint (default: 1)")
    p.add_argument("--draft", action="store_true",
                   help="decode large JPEGs at reduced DCT scale (>= 2x --image-size), then resize; "
                        "stored in the checkpoint (default: off)")
    p.add_argument("--epochs", type=int, default=d.epochs, help=f"main-phase epochs (default: {d.epochs})")
    p.add_argument("--finetune-epochs", type=int, default=d.finetune_epochs, help=f"default: {d.finetune_epochs}")
    p.add_argument("--finetune-lr-factor", type=float, default=d.finetune_lr_factor, help=f"default: {d.finetune_lr_factor}")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help=f"default: {d.batch_size}")
    p.add_argument("--lr", type=float, default=d.lr, help=f"peak learning rate (default: {d.lr})")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay, help=f"default: {d.weight_decay}")
    p.add_argument("--label-smoothing", type=float, default=d.label_smoothing, help="default: 0")
    p.add_argument("--robust-aug", action="store_true", help="grayscale/JPEG/blur/noise augmentation (default: off)")
    p.add_argument("--aug-blur", type=float, default=d.aug_blur, help="per-image blur probability (default: 0)")
    p.add_argument("--aug-jpeg", type=float, default=d.aug_jpeg, help="per-image JPEG probability (default: 0)")
    p.add_argument("--aug-resample", type=float, default=d.aug_resample,
                   help="per-image down-and-up resampling probability (default: 0)")
    p.add_argument("--pseudo-fakes", type=float, default=d.pseudo_fakes,
                   help="share of REAL training images also added, with a synthetic generator trace (noise, "
                        "over-smoothing, upsampling, banding), as FAKEs (default: 0)")
    p.add_argument("--pseudo-fake-kinds", default=d.pseudo_fake_kinds,
                   help=f"their traces, a comma list of {', '.join(ALL_PSEUDO_FAKE_KINDS)} "
                        f"(default: {d.pseudo_fake_kinds})")
    p.add_argument("--fit-temperature", action="store_true",
                   help="fit the temperature on the calibration split and store it (default: off, T = 1)")
    p.add_argument("--fit-platt", action="store_true",
                   help="Platt-calibrate on the calibration split: fit T and a logit offset b (P(FAKE) = "
                        "sigmoid(logit / T + b)), folded into the logit layer's bias (default: off)")
    p.add_argument("--exclude-fake-sources", default="",
                   help="comma list of FAKE sources to leave out of training (default: none)")
    p.add_argument("--calib-fraction", type=float, default=d.calib_fraction,
                   help=f"share of train held out for the verdict's calibration (default: {d.calib_fraction})")
    p.add_argument("--calib-split", default=d.calib_split, choices=["group", "random"],
                   help="calibration images: whole photo groups when the data names them (manifest group/origin "
                        "column), else at random; 'random' always at random (default: group)")
    p.add_argument("--verdict-alpha", type=float, default=d.verdict_alpha,
                   help=f"conformal miscoverage of the UNSURE band (default: {d.verdict_alpha})")
    p.add_argument("--familiarity-flag-rate", type=float, default=d.familiarity_flag_rate,
                   help=f"share of in-distribution images flagged as unfamiliar (default: {d.familiarity_flag_rate})")
    p.add_argument("--content-epochs", type=int, default=d.content_epochs,
                   help="train the familiarity's content encoder for this many epochs, so images whose content is "
                        "far from every training image are UNSURE (default: 0, none)")
    p.add_argument("--max-train-images", type=int, default=None, help="subsample the training set (default: all)")
    p.add_argument("--seed", type=int, default=d.seed, help=f"default: {d.seed}")
    p.add_argument("--split-seed", type=int, default=None,
                   help="seed of the calibration/validation/train split (default: --seed)")
    p.add_argument("--device", default=d.device, help="cuda, mps, cpu or auto (default: auto)")
    p.add_argument("--workers", type=int, default=None, help="decoding workers (default: auto)")
    p.add_argument("--cache-limit-gb", type=float, default=d.cache_limit_gb, help=f"default: {d.cache_limit_gb}")
    p.add_argument("--out", default=d.out, help=f"checkpoint path (default: {d.out})")
    p.add_argument("--name", default=None, help="model name stored in the checkpoint (default: file stem)")
    return p


def main_config(args: argparse.Namespace) -> TrainConfig:
    """The TrainConfig of parsed command-line arguments; raises ValueError when --model-args is not JSON."""
    try:
        model_args = json.loads(args.model_args)
    except ValueError as e:
        raise ValueError(f"--model-args is not JSON: {e}") from None
    kw = {k: v for k, v in vars(args).items() if k in TrainConfig.__dataclass_fields__ and k != "model_args"}
    if isinstance(kw.get("extra_data"), str):
        kw["extra_data"] = [s for s in kw["extra_data"].split(",") if s]
    if isinstance(kw.get("exclude_fake_sources"), str):
        kw["exclude_fake_sources"] = [s for s in kw["exclude_fake_sources"].split(",") if s]
    try:
        parse_pseudo_fake_kinds(kw.get("pseudo_fake_kinds", ""))
    except ValueError as e:
        raise ValueError(f"--pseudo-fake-kinds: {e}") from None
    return TrainConfig(**kw, model_args=model_args)


def main(argv=None) -> int:
    args = get_args_parser().parse_args(argv)
    try:
        cfg = main_config(args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
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
