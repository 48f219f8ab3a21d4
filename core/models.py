"""The detector architectures, by name, and the contract every one of them keeps.

Registry: `build_model(arch, **model_args)` with arch in `ARCHITECTURES`:
- "seed-v1":  the Grad-CAM seed's CNN: 3 x (conv3x3 + ReLU + max-pool), then FC layers.
- "seed-v21": the V2.1 seed's CNN: 4 x (conv3x3 + BatchNorm + ReLU [+ max-pool]), global average
  pooling, dropout-regularised FC layers. `input_filter="npr"` feeds it the neighbouring-pixel
  residual instead of the image (see `npr_residual`).

Contract (used by training, evaluation, Grad-CAM and the app):
- `forward(x)`: x float32 (B, 3, S, S) in [0, 1] -> logits (B,), P(FAKE) = sigmoid(logit).
  Normalisation is inside the model, so preprocessing stays one function.
- `features(x)` -> (B, C, h, w) activations of the last conv block (the Grad-CAM layer);
  `head(f)` -> logits (B,). forward(x) == head(features(x)).
Grad-CAM uses `features`/`head` instead of module hooks, so concurrent calls on one shared model
cannot see each other's hooks (see core.gradcam).

Inference runs on `fuse_for_inference(model)`: a separate copy with every Conv2d -> BatchNorm2d pair
folded into one Conv2d (the BatchNorm's running statistics and affine folded into the weights and a
bias). Same function, one pass over the activations fewer per block: seed-v21 runs 1.2-1.8x faster
(benchmarks/bench_inference.py). The trained module is never modified.
"""
from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


class _Normalize(nn.Module):
    def __init__(self, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))

    def forward(self, x):
        return (x - self.mean) / self.std


class SeedV1(nn.Module):
    """3 conv layers with ReLU and max pooling, then two FC layers (the Grad-CAM seed)."""

    def __init__(self, input_size: int = 32, channels: tuple = (32, 64, 128), hidden: int = 256, dropout: float = 0.0):
        super().__init__()
        if input_size % 8:
            raise ValueError("seed-v1 needs an input size divisible by 8")
        c1, c2, c3 = channels
        self.normalize = _Normalize()
        self.block1 = nn.Sequential(nn.Conv2d(3, c1, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2))
        self.block2 = nn.Sequential(nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2))
        self.conv3 = nn.Sequential(nn.Conv2d(c2, c3, 3, padding=1), nn.ReLU(inplace=True))
        self.pool3 = nn.MaxPool2d(2)
        side = input_size // 8
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(c3 * side * side, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(hidden, 1))

    def features(self, x):                     # (B, 3, S, S) -> (B, c3, S/4, S/4)
        return self.conv3(self.block2(self.block1(self.normalize(x))))

    def head(self, f):                         # (B, c3, S/4, S/4) -> (B,)
        return self.classifier(self.pool3(f)).squeeze(1)

    def forward(self, x):
        return self.head(self.features(x))


def npr_residual(x: torch.Tensor) -> torch.Tensor:
    """Neighbouring-pixel relationships (Tan et al., CVPR 2024): x minus its 2x nearest down-and-up copy.
    (B, 3, S, S) -> (B, 3, S, S); keeps the local pixel correlations that generators' upsampling leaves."""
    down = x[:, :, ::2, ::2]
    return x - down.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)[:, :, :x.shape[2], :x.shape[3]]


INPUT_FILTERS = {"none": None, "npr": npr_residual}


def _conv_bn(cin, cout):
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class SeedV21(nn.Module):
    """4 conv blocks (conv + BatchNorm + ReLU, max-pool after the first three), GAP, dropout FC layers.

    The seed pooled after every block; at 32x32 input that leaves a 2x2 map, too coarse for Grad-CAM,
    so by default the last block keeps its 4x4 map (`pool_last=False`); GAP follows either way.
    `pool_first=False` keeps full resolution through the second conv (as forensic detectors drop the
    first downsampling, Gragnaniello et al. 2021): the pixel-level traces meet two convolutions before
    any pooling; about 2.5x the FLOPs at 32 px.
    """

    def __init__(self, input_size: int = 32, channels: tuple = (32, 64, 128, 256), hidden: int = 128,
                 dropout: float = 0.3, pool_last: bool = False, double_conv: bool = False,
                 input_filter: str = "none", pool_first: bool = True):
        super().__init__()
        if input_filter not in INPUT_FILTERS:
            raise ValueError(f"unknown input_filter {input_filter!r}; known: {', '.join(INPUT_FILTERS)}")
        self.input_filter = input_filter
        self.normalize = _Normalize()
        blocks = []
        cin = 3
        for i, c in enumerate(channels):
            layers = _conv_bn(cin, c) + (_conv_bn(c, c) if double_conv else [])
            if (i < len(channels) - 1 or pool_last) and (i > 0 or pool_first):
                layers.append(nn.MaxPool2d(2))
            blocks.append(nn.Sequential(*layers))
            cin = c
        self.blocks = nn.Sequential(*blocks)
        self.classifier = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(cin, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(hidden, 1))

    def features(self, x):                     # (B, 3, S, S) -> (B, C4, S/8, S/8)
        x = self.normalize(x)
        if self.input_filter != "none":
            x = INPUT_FILTERS[self.input_filter](x)
        return self.blocks(x)

    def head(self, f):                         # (B, C4, h, w) -> (B,)
        return self.classifier(f.mean(dim=(2, 3))).squeeze(1)

    def forward(self, x):
        return self.head(self.features(x))


ARCHITECTURES = {"seed-v1": SeedV1, "seed-v21": SeedV21}


def build_model(arch: str, **model_args) -> nn.Module:
    """Instantiate a registered architecture; unknown names raise ValueError listing the known ones."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; known: {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[arch](**model_args)


def fuse_for_inference(model: nn.Module) -> nn.Module:
    """A new eval-mode copy of `model` with each Conv2d directly followed by a BatchNorm2d (in the same
    nn.Sequential) folded into one Conv2d; the BatchNorm becomes nn.Identity. `model` is not modified.

    Exact up to float rounding (eval-mode BatchNorm is an affine map per channel): logits agree within
    ~1e-5 on the shipped seed-v21 (tests/test_fused.py). Parameters of the copy do not require grad;
    Grad-CAM still works, it differentiates with respect to the features, not the weights.
    Layout (channels_last) and device follow `model`.
    """
    fused = copy.deepcopy(model).eval()
    for seq in fused.modules():
        if not isinstance(seq, nn.Sequential):
            continue
        children = list(seq.named_children())
        for (name_c, conv), (name_b, bn) in zip(children, children[1:]):
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats:
                folded = fuse_conv_bn_eval(conv, bn)
                folded.weight.data = folded.weight.data.contiguous(memory_format=_memory_format(conv.weight))
                setattr(seq, name_c, folded)
                setattr(seq, name_b, nn.Identity())
    return fused.requires_grad_(False)


def _memory_format(t: torch.Tensor) -> torch.memory_format:
    return torch.channels_last if t.ndim == 4 and t.is_contiguous(memory_format=torch.channels_last) \
        and not t.is_contiguous() else torch.contiguous_format


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def select_device(name: str = "auto") -> torch.device:
    """'auto' picks cuda, then mps, then cpu; an explicit name is used as given."""
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")
