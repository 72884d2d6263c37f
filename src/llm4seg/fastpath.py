"""Inference fast path: an equivalent, frozen copy of an LLM4Seg network built for speed.

``prepare_for_inference(model)`` returns a :class:`FusedLLM4Seg` that computes the same logits (within
float rounding, ~1e-5) with fewer passes over memory and fewer FLOPs:

- every BatchNorm is folded away: into the conv before it (conv → BN), into the 1×1 conv after it
  (GELU → BN → 1×1 conv) or, where neither is exact (BN before a padded conv or a residual add), kept
  as a single ``addcmul`` pass;
- conv + GELU/ReLU run as one oneDNN call on CPU (``mkldnn._convolution_pointwise``, exact erf GELU);
- nearest 2× upsampling + 3×3 conv becomes four 2×2 convs on the low-resolution map (exact, 2.25× fewer
  FLOPs), interleaved straight into the skip-concatenation buffer; bilinear upsampling (the reference
  architecture, ``ModelConfig.upsample``) is interpolated, then convolved with its BatchNorm folded in;
- activations are channels_last.

The frozen LLM booster is shared with the source model, not copied. The source model is never changed,
and training never sees the fused copy. :func:`fast_model` caches the fused copy per model and rebuilds
it when any parameter or buffer of the source changes (e.g. after a fine-tune step).
"""
from __future__ import annotations

import os
import warnings
import weakref
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .model.cmunext import CMUNeXtBlock, ConvBlock, FusionConv, UpConv
from .model.network import STRIDE, with_zero_prompts

__all__ = ["FusedLLM4Seg", "FastPathUnsupported", "prepare_for_inference", "fast_model", "configure_threads",
           "mkldnn_fusion_available"]

_ONE = [1, 1]


def mkldnn_fusion_available() -> bool:
    """Whether oneDNN's fused conv + activation op exists in this torch build."""
    try:
        return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise")
    except (AttributeError, RuntimeError):
        return False


_MKLDNN = mkldnn_fusion_available()


def configure_threads() -> int:
    """Cap torch's intra-op threads at the CPUs this process may use (containers often report more)."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count() or 1
    if torch.get_num_threads() > usable:
        torch.set_num_threads(usable)
    return torch.get_num_threads()


# -- BatchNorm algebra -------------------------------------------------------------------------------
def bn_affine(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode BN as ``y = x * scale + shift`` (computed in float64)."""
    var = bn.running_var.double()
    mean = bn.running_mean.double()
    gamma = bn.weight.double() if bn.weight is not None else torch.ones_like(var)
    beta = bn.bias.double() if bn.bias is not None else torch.zeros_like(var)
    scale = gamma / torch.sqrt(var + bn.eps)
    return scale, beta - mean * scale


def _conv_params(conv: nn.Conv2d) -> tuple[torch.Tensor, torch.Tensor]:
    w = conv.weight.detach().double()
    b = conv.bias.detach().double() if conv.bias is not None else torch.zeros(w.shape[0], dtype=torch.float64,
                                                                             device=w.device)
    return w, b


def fold_bn_after(w: torch.Tensor, b: torch.Tensor, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """``BN(conv(x))`` as one conv."""
    scale, shift = bn_affine(bn)
    return w * scale.view(-1, 1, 1, 1), b * scale + shift


def fold_bn_before_1x1(w: torch.Tensor, b: torch.Tensor, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """``conv1x1(BN(x))`` as one 1×1 conv (exact: a 1×1 conv has no padding)."""
    scale, shift = bn_affine(bn)
    return w * scale.view(1, -1, 1, 1), b + w[:, :, 0, 0] @ shift


def subpixel_weights(w: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest 2× upsampling + 3×3 conv (padding 1) as one 2×2 conv (padding 1) with 4 output phases.

    Phase (py, px) of the result at low-res pixel (i, j) is read from the conv output at (i + py, j + px).
    """
    rows = (((0,), (1, 2)), ((0, 1), (2,)))  # 3×3 taps summed into each 2×2 tap, per phase
    cout = w.shape[0]
    out = w.new_zeros((4 * cout, w.shape[1], 2, 2))
    for py in range(2):
        for px in range(2):
            phase = 2 * py + px
            for r in range(2):
                for c in range(2):
                    taps = w[:, :, list(rows[py][r]), :][:, :, :, list(rows[px][c])]
                    out[phase * cout:(phase + 1) * cout, :, r, c] = taps.sum(dim=(2, 3))
    return out, b.repeat(4)


# -- fused modules ----------------------------------------------------------------------------------
class FusedConv(nn.Module):
    """conv2d (+ bias) followed by an optional ReLU/GELU, in one oneDNN call on CPU float32."""

    def __init__(self, w: torch.Tensor, b: torch.Tensor, padding: int, groups: int = 1, act: str | None = None) -> None:
        super().__init__()
        self.register_buffer("weight", w.float().contiguous())
        self.register_buffer("bias", b.float().contiguous())
        self.padding, self.groups, self.act = [padding, padding], groups, act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _MKLDNN and x.device.type == "cpu" and x.dtype == torch.float32:
            return torch.ops.mkldnn._convolution_pointwise(
                x, self.weight, self.bias, self.padding, _ONE, _ONE, self.groups, self.act or "none", [],
                "none" if self.act == "gelu" else None,
            )
        w, b = self.weight.to(x.dtype), self.bias.to(x.dtype)
        y = F.conv2d(x, w, b, padding=self.padding, groups=self.groups)
        if self.act == "relu":
            return F.relu(y, inplace=True)
        return F.gelu(y) if self.act == "gelu" else y


class Affine(nn.Module):
    """Per-channel ``x * scale + shift`` (an eval BatchNorm), plus an optional residual, in one pass."""

    def __init__(self, scale: torch.Tensor, shift: torch.Tensor | None) -> None:
        super().__init__()
        self.register_buffer("scale", scale.float().view(1, -1, 1, 1))
        self.register_buffer("shift", None if shift is None else shift.float().view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        base = residual if residual is not None else self.shift.to(x.dtype)
        return torch.addcmul(base, x, self.scale.to(x.dtype))


class FusedUnit(nn.Module):
    """One CMUNeXt unit: ``r = x + BN1(GELU(dw(x)))`` → GELU(1×1) → BN2 → GELU(1×1) → BN3."""

    def __init__(self, unit: nn.Sequential) -> None:
        super().__init__()
        dw, _, bn1 = unit[0].fn
        pw1, _, bn2, pw2, _, bn3 = unit[1:]
        self.dw = FusedConv(*_conv_params(dw), padding=dw.padding[0], groups=dw.groups, act="gelu")
        s1, t1 = bn_affine(bn1)
        self.res = Affine(s1, None)  # BN1's shift moves into pw1's bias (pw1 is 1×1)
        w, b = _conv_params(pw1)
        self.pw1 = FusedConv(w, b + w[:, :, 0, 0] @ t1, padding=0, act="gelu")
        self.pw2 = FusedConv(*fold_bn_before_1x1(*_conv_params(pw2), bn2), padding=0, act="gelu")
        self.bn3 = Affine(*bn_affine(bn3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.res(self.dw(x), residual=x)
        return self.bn3(self.pw2(self.pw1(r)))


def _conv_bn_relu(block: ConvBlock) -> FusedConv:
    conv, bn, _ = block.conv
    return FusedConv(*fold_bn_after(*_conv_params(conv), bn), padding=conv.padding[0], act="relu")


class FusedEncoderBlock(nn.Module):
    """A CMUNeXtBlock: its units, then the 3×3 ConvBlock with BN folded and ReLU fused."""

    def __init__(self, block: CMUNeXtBlock) -> None:
        super().__init__()
        self.units = nn.ModuleList(FusedUnit(u) for u in block.block)
        self.up = _conv_bn_relu(block.up)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for unit in self.units:
            x = unit(x)
        return self.up(x)


class FusedDecoderStage(nn.Module):
    """UpConv + skip concatenation + FusionConv; returns features before BN_c.

    Nearest upsampling + 3×3 conv runs as a sub-pixel conv on the low-resolution map; bilinear upsampling
    (the reference architecture) is interpolated first, then convolved with the BatchNorm folded in.
    ``pre`` is the previous stage's pending BN_c (applied once, on the low-resolution map).
    """

    def __init__(self, up: UpConv, fusion: FusionConv, pre: Affine | None) -> None:
        super().__init__()
        upsample, conv, bn, _ = up.up
        self.mode = check_upsample(upsample)
        self.pre = pre
        w, b = fold_bn_after(*_conv_params(conv), bn)
        self.up = FusedConv(*(subpixel_weights(w, b) if self.mode == "nearest" else (w, b)), padding=1, act="relu")
        self.cout = conv.out_channels
        g, _, bna, pa, _, bnb, pb, _, _ = fusion.conv  # BN_c is applied by the consumer (next stage or head)
        self.g = FusedConv(*_conv_params(g), padding=g.padding[0], groups=g.groups, act="gelu")
        self.pa = FusedConv(*fold_bn_before_1x1(*_conv_params(pa), bna), padding=0, act="gelu")
        self.pb = FusedConv(*fold_bn_before_1x1(*_conv_params(pb), bnb), padding=0, act="gelu")

    def forward(self, skip: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if self.pre is not None:
            x = self.pre(x)
        if self.mode == "bilinear":
            o = self.up(F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False))
            return self.pb(self.pa(self.g(torch.cat((skip, o.to(memory_format=_format(skip))), dim=1))))
        o = self.up(x)  # (N, 4*cout, h+1, w+1)
        n, cs, h2, w2 = skip.shape
        h, w, c = h2 // 2, w2 // 2, self.cout
        buf = torch.empty((n, cs + c, h2, w2), dtype=o.dtype, device=o.device, memory_format=_format(skip))
        buf[:, :cs].copy_(skip)
        for py in range(2):
            for px in range(2):
                p = 2 * py + px
                buf[:, cs:, py::2, px::2].copy_(o[:, p * c:(p + 1) * c, py:py + h, px:px + w])
        return self.pb(self.pa(self.g(buf)))


def _format(x: torch.Tensor) -> torch.memory_format:
    return torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format


def check_upsample(module: nn.Module) -> str:
    """The upsampling mode of a decoder stage, after checking the fast path reproduces it exactly."""
    if not isinstance(module, nn.Upsample) or module.scale_factor not in (2, 2.0, (2.0, 2.0)):
        raise FastPathUnsupported(f"expected a 2x nn.Upsample in the decoder, got {module!r}")
    if module.mode == "nearest" or module.mode == "bilinear" and not module.align_corners:
        return module.mode
    raise FastPathUnsupported(f"upsampling {module.mode!r} (align_corners={module.align_corners}) has no fast path")


class FastPathUnsupported(ValueError):
    """The model is not one the fast path reproduces exactly; the plain model runs instead."""


def to_channels_last(x: torch.Tensor) -> torch.Tensor:
    """NHWC strides that torch recognises even for one channel.

    ``contiguous(memory_format=channels_last)`` returns a 1-channel NCHW tensor unchanged (it is already
    "contiguous" in both formats), and convolutions then pick NCHW for the whole network.
    """
    if x.shape[1] == 1 and x.is_contiguous():
        n, _, h, w = x.shape
        return x.as_strided(x.shape, (h * w, 1, w, 1))
    return x.contiguous(memory_format=torch.channels_last)


def max_pool2x2(x: torch.Tensor) -> torch.Tensor:
    """2×2/2 max-pool of a channels_last map as two ``maximum`` passes (3× faster than max_pool2d here)."""
    if not x.is_contiguous(memory_format=torch.channels_last):
        return F.max_pool2d(x, 2, 2)
    n, c, h, w = x.shape
    v = x.permute(0, 2, 3, 1).reshape(n, h // 2, 2, w // 2, 2 * c)
    t = torch.maximum(v[:, :, 0], v[:, :, 1]).view(n, h // 2, w // 2, 2, c)
    return torch.maximum(t[:, :, :, 0], t[:, :, :, 1]).permute(0, 3, 1, 2)


class FusedLLM4Seg(nn.Module):
    """Inference-only equivalent of an :class:`~llm4seg.model.LLM4Seg` (see the module docstring)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.config = model.config
        self.card = getattr(model, "card", None)
        self.stem = _conv_bn_relu(model.stem)
        self.encoders = nn.ModuleList(
            FusedEncoderBlock(getattr(model, f"encoder{i}")) for i in range(1, 6)
        )
        self.booster = model.booster  # shared: the frozen LLM layer is not copied
        stages, pre = [], None
        for i in (5, 4, 3, 2):
            fusion = getattr(model, f"Up_conv{i}")
            stages.append(FusedDecoderStage(getattr(model, f"Up{i}"), fusion, pre))
            pre = Affine(*bn_affine(fusion.conv[-1]))
        self.stages = nn.ModuleList(stages)
        self.head = FusedConv(*fold_bn_before_1x1(*_conv_params(model.Conv_1x1), model.Up_conv2.conv[-1]), padding=0)
        self.train(False)

    def train(self, mode: bool = False) -> "FusedLLM4Seg":
        """Inference only; the shared booster's mode and ``requires_grad`` flags belong to the source model."""
        self.training = False
        for name, child in self.named_children():
            if name != "booster":
                child.train(False)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = with_zero_prompts(x, self.config)
        if x.shape[-1] % STRIDE or x.shape[-2] % STRIDE:
            raise ValueError(f"expected H, W multiples of {STRIDE}, got {tuple(x.shape)}")
        if x.device.type in ("cpu", "cuda"):  # oneDNN and cuDNN prefer NHWC; MPS keeps NCHW
            x = to_channels_last(x)
        skips = []
        x = self.encoders[0](self.stem(x))
        for enc in self.encoders[1:]:
            skips.append(x)
            x = enc(max_pool2x2(x))
        if self.booster is not None:
            x = self.booster(x)
        for stage, skip in zip(self.stages, reversed(skips)):
            x = stage(skip, x)
        return self.head(x)

    @property
    def device(self) -> torch.device:
        return self.head.weight.device


def prepare_for_inference(model: nn.Module) -> FusedLLM4Seg:
    """A fused, frozen, inference-only copy of ``model`` on the same device (the source is untouched)."""
    with torch.no_grad():
        fused = FusedLLM4Seg(model)
    return fused.to(model.device)


_CACHE: "weakref.WeakKeyDictionary[nn.Module, tuple[Any, FusedLLM4Seg]]" = weakref.WeakKeyDictionary()


def _fingerprint(model: nn.Module) -> tuple:
    """Changes whenever any parameter or buffer is replaced or modified in place."""
    return tuple((t.data_ptr(), t._version, t.device.type) for t in (*model.parameters(), *model.buffers()))


def fast_model(model: nn.Module) -> nn.Module:
    """The cached fused copy of ``model``, or ``model`` itself when it cannot be fused."""
    if isinstance(model, FusedLLM4Seg):
        return model
    key = _fingerprint(model)
    hit = _CACHE.get(model)
    if hit is not None and hit[0] == key:
        return hit[1]
    try:
        fused = prepare_for_inference(model)
    except (AttributeError, TypeError, ValueError, IndexError) as exc:  # not the standard LLM4Seg layout
        warnings.warn(f"llm4seg: the fast path does not apply to this model ({exc}); running the plain model",
                      RuntimeWarning, stacklevel=2)
        return model
    _CACHE[model] = (key, fused)
    return fused
