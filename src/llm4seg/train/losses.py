"""Training losses: 0.5·BCE + Dice (binary, as the CMUNeXt/LLM4Seg reference) and CE + Dice (multi-class)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["BCEDiceLoss", "CEDiceLoss", "make_loss", "soft_dice_loss"]

SMOOTH = 1e-5


def soft_dice_loss(probs: torch.Tensor, target: torch.Tensor, smooth: float = SMOOTH) -> torch.Tensor:
    """1 − soft Dice per sample and channel, averaged; ``probs``/``target`` (B, K, H, W) in [0, 1]."""
    dims = (2, 3)
    inter = (probs * target).sum(dims)
    denom = probs.sum(dims) + target.sum(dims)
    return 1.0 - ((2.0 * inter + smooth) / (denom + smooth)).mean()


class BCEDiceLoss(nn.Module):
    """Binary: ``0.5 * BCE(logits) + (1 − soft Dice(sigmoid))``. Targets are (B, H, W) in {0, 1}."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        t = target.to(logits.dtype).unsqueeze(1)
        bce = F.binary_cross_entropy_with_logits(logits, t)
        return 0.5 * bce + soft_dice_loss(torch.sigmoid(logits), t)


class CEDiceLoss(nn.Module):
    """Multi-class: ``CE(logits) + (1 − soft Dice)`` over the foreground classes of the softmax.

    ``logits`` (B, K+1, H, W) for background + K classes; targets (B, H, W) integer labels 0..K.
    """

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        t = target.long()
        ce = F.cross_entropy(logits, t)
        probs = torch.softmax(logits, 1)[:, 1:]
        onehot = F.one_hot(t, logits.shape[1]).permute(0, 3, 1, 2)[:, 1:].to(probs.dtype)
        return ce + soft_dice_loss(probs, onehot)


def make_loss(num_classes: int) -> nn.Module:
    """The loss for a model with ``num_classes`` outputs (1 = binary)."""
    return BCEDiceLoss() if num_classes == 1 else CEDiceLoss()
