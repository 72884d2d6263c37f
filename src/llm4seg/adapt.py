"""Adapting a trained model to a user's data before fine-tuning: colour input and BatchNorm statistics.

* :func:`expand_to_rgb` turns a 1-channel model into a 3-channel one whose output is *identical* on any
  RGB input: the stem's weights are split over R, G, B by the luma weights the 1-channel model's
  preprocessing uses (0.299, 0.587, 0.114), so colour is no longer thrown away and fine-tuning can learn it.
* :func:`recalibrate_batchnorm` re-estimates every BatchNorm's running mean and variance on the user's
  images (labelled and unlabelled), so the network's features are normalised for the new modality.

And after it: :func:`blend_weights` moves fine-tuned weights part of the way back to where they started
(weight-space interpolation, as in WiSE-FT), so a few labelled images do not make the model forget
what it knew.
"""
from __future__ import annotations

import dataclasses
from typing import Iterable

import torch
from torch import nn

__all__ = ["expand_to_rgb", "recalibrate_batchnorm", "blend_weights", "LUMA"]

LUMA = (0.299, 0.587, 0.114)


def _stem_conv(model: nn.Module) -> nn.Conv2d:
    conv = model.stem.conv[0]
    if not isinstance(conv, nn.Conv2d):
        raise TypeError(f"expected the stem's first layer to be a Conv2d, got {type(conv).__name__}")
    return conv


def expand_to_rgb(model: nn.Module) -> nn.Module:
    """Make a 1-channel model take 3 channels, in place, with the same output on every RGB image; returns it.

    A 3-channel model is returned unchanged. The card's preprocessing is updated to 3 channels."""
    if model.config.in_channels == 3:
        return model
    if model.config.in_channels != 1:
        raise ValueError(f"only 1-channel models can be expanded to RGB (this one has {model.config.in_channels})")
    old = _stem_conv(model)
    luma = torch.tensor(LUMA, dtype=old.weight.dtype, device=old.weight.device).view(1, 3, 1, 1)
    _replace_stem(model, torch.cat([old.weight[:, :1] * luma, old.weight[:, 1:]], dim=1))
    model.config.in_channels = 3
    card = getattr(model, "card", None)
    if card is not None:
        card.preprocessing = dataclasses.replace(card.preprocess, channels=3).to_dict()
        card.model = {**card.model, "in_channels": 3}
    return model


def _replace_stem(model: nn.Module, weight: torch.Tensor) -> None:
    """A new stem conv with ``weight`` (out, in, k, k), the old bias and the old ``requires_grad``."""
    old = _stem_conv(model)
    new = nn.Conv2d(weight.shape[1], old.out_channels, old.kernel_size, old.stride, old.padding,
                    bias=old.bias is not None).to(device=old.weight.device, dtype=old.weight.dtype)
    with torch.no_grad():
        new.weight.copy_(weight)
        if old.bias is not None:
            new.bias.copy_(old.bias)
    new.weight.requires_grad_(old.weight.requires_grad)
    model.stem.conv[0] = new


def add_prompt_channels(model: nn.Module, prompts: tuple[str, ...] = ("previous", "positive", "negative")) -> nn.Module:
    """Give ``model`` the prompt input channels ``prompts`` (``ModelConfig.prompts``), in place; returns it.

    The new channels' stem weights are zero, so the model's output is unchanged until training teaches it
    the prompts. A model that already takes exactly these prompts is returned unchanged."""
    prompts = tuple(prompts)
    if tuple(model.config.prompts) == prompts:
        return model
    if model.config.prompts:
        raise ValueError(f"the model already takes prompts {list(model.config.prompts)}, not {list(prompts)}")
    if getattr(model.config, "num_classes", 1) != 1:
        raise ValueError("clicks need a model with one foreground class (this one has "
                         f"{model.config.num_classes}): prompts are for binary models")
    old = _stem_conv(model).weight
    zeros = old.new_zeros((old.shape[0], len(prompts), *old.shape[2:]))
    _replace_stem(model, torch.cat([old.detach(), zeros], dim=1))
    model.config.prompts = prompts
    card = getattr(model, "card", None)
    if card is not None:
        card.model = {**card.model, "prompts": list(prompts)}
    return model


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, batches: Iterable[torch.Tensor]) -> int:
    """Re-estimate the running statistics of every BatchNorm of ``model`` from ``batches`` (model input,
    (B, C, H, W)): a plain average over all batches, replacing the old statistics. Weights are untouched.
    Returns the number of images seen (0 leaves the model as it was)."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return 0
    saved = [(m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone(), m.momentum) for m in norms]
    was_training = model.training
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches
    model.train()
    seen = 0
    device = next(model.parameters()).device
    try:
        for x in batches:
            if x.shape[0] < 2:  # BatchNorm cannot use a batch of one in training mode
                continue
            model(x.to(device))
            seen += int(x.shape[0])
    finally:
        model.train(was_training)
        for m, (mean, var, n, momentum) in zip(norms, saved):
            m.momentum = momentum
            if not seen:
                m.running_mean.copy_(mean)
                m.running_var.copy_(var)
                m.num_batches_tracked.copy_(n)
    return seen


@torch.no_grad()
def blend_weights(start: nn.Module, trained: nn.Module, alpha: float) -> nn.Module:
    """Set ``trained``'s floating-point parameters and buffers to ``start + alpha * (trained - start)``, in
    place; returns it. ``alpha`` 1 keeps the trained weights, 0 restores the start. Integer buffers (BatchNorm
    batch counts) keep the trained values. Both models must have the same architecture."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    begin = start.state_dict()
    end = trained.state_dict()
    if begin.keys() != end.keys():
        raise ValueError("blend_weights needs two models of the same architecture (their tensors differ)")
    for name, value in end.items():
        first = begin[name]
        if first.shape != value.shape:
            raise ValueError(f"blend_weights: {name} has shape {tuple(first.shape)} at the start and "
                             f"{tuple(value.shape)} after training")
        if value.is_floating_point() and alpha != 1.0:
            value.copy_(first.to(value) + alpha * (value - first.to(value)))
    return trained
