"""The detector architectures, by name, and the contract every one of them keeps.

Registry: `build_model(arch, **model_args)` with arch in `ARCHITECTURES`:
- "seed-v1":  the Grad-CAM seed's CNN: 3 x (conv3x3 + ReLU + max-pool), then FC layers.
- "two-stream": two seed-v21 bodies, on the image and on its NPR residual, one head (`TwoStream`).
- "seed-v21": the V2.1 seed's CNN: 4 x (conv3x3 + BatchNorm + ReLU [+ max-pool]), global average
  pooling, dropout-regularised FC layers. `input_filter="npr"` feeds it the neighbouring-pixel
  residual instead of the image (see `npr_residual`), `"rgb+npr"` both (6 input channels).

Contract (used by training, evaluation, Grad-CAM and the app):
- `forward(x)`: x float32 (B, 3, S, S) in [0, 1] -> logits (B,), P(FAKE) = sigmoid(logit).
  Normalisation is inside the model, so preprocessing stays one function.
- `features(x)` -> (B, C, h, w) activations of the last conv block (the Grad-CAM layer);
  `head(f)` -> logits (B,). forward(x) == head(features(x)).
Grad-CAM uses `features`/`head` instead of module hooks, so concurrent calls on one shared model
cannot see each other's hooks (see core.model.gradcam).

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


def rgb_and_npr(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, S, S) -> (B, 6, S, S): the image and its NPR residual side by side, so the first conv sees
    both the content and the upsampling trace (the residual alone discards the colours)."""
    return torch.cat([x, npr_residual(x)], dim=1)


INPUT_FILTERS = {"none": None, "npr": npr_residual, "rgb+npr": rgb_and_npr}
INPUT_CHANNELS = {"none": 3, "npr": 3, "rgb+npr": 6}


def _conv_bn(cin, cout):
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


def _conv_body(cin: int, channels, pool_last: bool, double_conv: bool, pool_first: bool) -> nn.Sequential:
    """seed-v21's conv blocks: conv + BatchNorm + ReLU (twice with double_conv), max-pool after every
    block but the last (unless pool_last) and the first (unless pool_first)."""
    blocks = []
    for i, c in enumerate(channels):
        layers = _conv_bn(cin, c) + (_conv_bn(c, c) if double_conv else [])
        if (i < len(channels) - 1 or pool_last) and (i > 0 or pool_first):
            layers.append(nn.MaxPool2d(2))
        blocks.append(nn.Sequential(*layers))
        cin = c
    return nn.Sequential(*blocks)


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
        self.blocks = _conv_body(INPUT_CHANNELS[input_filter], channels, pool_last, double_conv, pool_first)
        cin = channels[-1]
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


class TwoStream(nn.Module):
    """Two seed-v21 bodies side by side: one on the image, one on its NPR residual (`npr_residual`);
    their last-block maps are concatenated (B, 2 x C4, h, w) and share one GAP + dropout FC head.

    Why: trained alone, the image stream is the better judge of real photos and the residual stream
    of upsampling generators (DCGAN-like fakes), while one input holding both (`input_filter="rgb+npr"`)
    learns to lean on the image and loses the residual's advantage (README, ablation).
    Twice seed-v21's FLOPs. `features` is the concatenated map, so Grad-CAM and the familiarity model
    see both streams.

    `stream_dropout` p (training only): per image, with probability p the image stream's map is zeroed
    and with probability p the residual stream's (never both), so each stream must decide alone and
    neither one's rule (e.g. "no upsampling trace = REAL") can silence the other (modality dropout,
    Neverova et al., ModDrop, 2015). Inference always sees both.
    """

    def __init__(self, input_size: int = 32, channels: tuple = (32, 64, 128, 256), hidden: int = 128,
                 dropout: float = 0.3, pool_last: bool = False, double_conv: bool = False, pool_first: bool = True,
                 stream_dropout: float = 0.0):
        super().__init__()
        if not 0 <= stream_dropout <= 0.5:
            raise ValueError(f"stream_dropout must be in [0, 0.5], got {stream_dropout}")
        self.stream_dropout = float(stream_dropout)
        self.normalize = _Normalize()
        self.rgb = _conv_body(3, channels, pool_last, double_conv, pool_first)
        self.npr = _conv_body(3, channels, pool_last, double_conv, pool_first)
        self.classifier = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(2 * channels[-1], hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(hidden, 1))

    def features(self, x):                     # (B, 3, S, S) -> (B, 2 C4, S/8, S/8)
        x = self.normalize(x)
        a, b = self.rgb(x), self.npr(npr_residual(x))
        if self.training and self.stream_dropout:
            p = self.stream_dropout
            r = torch.rand(a.shape[0], 1, 1, 1, device=a.device)
            a = a * (r >= p).to(a.dtype)                          # r < p: image stream dropped
            b = b * ((r < p) | (r >= 2 * p)).to(b.dtype)          # p <= r < 2p: residual stream dropped
        return torch.cat([a, b], dim=1)

    def head(self, f):                         # (B, 2 C4, h, w) -> (B,)
        return self.classifier(f.mean(dim=(2, 3))).squeeze(1)

    def forward(self, x):
        return self.head(self.features(x))


DEFAULT_MEMBERS = ({"arch": "two-stream"}, {"arch": "seed-v21"})   # the pair benchmarks/ensemble_recipes.py measures


class Ensemble(nn.Module):
    """Independently trained detectors side by side, one logit: the mean of the members' calibrated logits
    (member i's logit divided by its own temperature T_i, weight w_i, weights summing to 1).

    `members`: [{"arch": ..., "model_args": {...}}, ...] of registered architectures whose `features` maps
    share one spatial size (all at 32 px here: 4 x 4). `features` is their maps concatenated along the
    channels, so Grad-CAM and the familiarity model see every member; `head` splits it back and
    averages the members' heads. `member_logits` gives each member's calibrated logit, whose spread
    core.verdict.verdict uses as a second "unlike the training data" signal: members that were trained on
    different views of the image agree on what they learned and disagree off it (deep ensembles,
    Lakshminarayanan et al., NeurIPS 2017). Built from trained checkpoints by core.model.ensemble.
    """

    def __init__(self, members: list | None = None, temperatures: list | None = None, weights: list | None = None,
                 input_size: int = 32):
        super().__init__()
        members = DEFAULT_MEMBERS if members is None else members
        if not members:
            raise ValueError("an ensemble needs at least one member")
        if any(m.get("arch") == "ensemble" for m in members):
            raise ValueError("ensemble members cannot be ensembles")
        self.members = nn.ModuleList(build_model(m["arch"], **{"input_size": input_size, **(m.get("model_args") or {})})
                                     for m in members)
        k = len(self.members)
        t = [1.0] * k if temperatures is None else [float(v) for v in temperatures]
        w = [1.0 / k] * k if weights is None else [float(v) for v in weights]
        if len(t) != k or len(w) != k or min(t) <= 0 or min(w) < 0 or abs(sum(w) - 1) > 1e-6:
            raise ValueError(f"need {k} positive temperatures and {k} non-negative weights summing to 1")
        self.register_buffer("temperatures", torch.tensor(t), persistent=False)
        self.register_buffer("weights", torch.tensor(w), persistent=False)
        with torch.no_grad():
            probe = torch.zeros(1, 3, input_size, input_size)
            shapes = [tuple(m.eval().features(probe).shape[1:]) for m in self.members]
        if len({s[1:] for s in shapes}) != 1:
            raise ValueError(f"ensemble members' feature maps differ in size: {shapes}")
        self.widths = [s[0] for s in shapes]

    def features(self, x):                     # (B, 3, S, S) -> (B, sum C_i, h, w)
        return torch.cat([m.features(x) for m in self.members], dim=1)

    def member_logits(self, f):                # (B, sum C_i, h, w) -> (B, k) calibrated logits
        parts = torch.split(f, self.widths, dim=1)
        return torch.stack([m.head(p) for m, p in zip(self.members, parts)], dim=1) / self.temperatures

    def head(self, f):                         # (B, sum C_i, h, w) -> (B,)
        return self.member_logits(f) @ self.weights

    def forward(self, x):
        return self.head(self.features(x))


ARCHITECTURES = {"seed-v1": SeedV1, "seed-v21": SeedV21, "two-stream": TwoStream, "ensemble": Ensemble}


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
