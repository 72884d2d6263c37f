"""CMUNeXt building blocks (Tang et al., ISBI 2024), as used by LLM4Seg.

Module names follow the reference implementation, so its state dicts map one to one.

Stem conv, CMUNeXt blocks (large-kernel depthwise residual + inverted bottleneck), four
max-pools, and a decoder of up-convs and fusion convs with skip concatenation.
"""
from __future__ import annotations

import torch
from torch import nn


class Residual(nn.Module):
    """``fn(x) + x``."""

    def __init__(self, fn: nn.Module) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x) + x


class ConvBlock(nn.Module):
    """3×3 conv → BatchNorm → ReLU."""

    def __init__(self, ch_in: int, ch_out: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(ch_in, ch_out, kernel_size=3, padding=1, bias=True),
            nn.BatchNorm2d(ch_out),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class CMUNeXtBlock(nn.Module):
    """``depth`` × (depthwise k×k residual → 1×1 expand ×4 → 1×1 project), then a ConvBlock to ``ch_out``."""

    def __init__(self, ch_in: int, ch_out: int, depth: int = 1, k: int = 3) -> None:
        super().__init__()
        self.block = nn.Sequential(
            *[
                nn.Sequential(
                    Residual(
                        nn.Sequential(
                            nn.Conv2d(ch_in, ch_in, kernel_size=k, groups=ch_in, padding=k // 2),
                            nn.GELU(),
                            nn.BatchNorm2d(ch_in),
                        )
                    ),
                    nn.Conv2d(ch_in, ch_in * 4, kernel_size=1),
                    nn.GELU(),
                    nn.BatchNorm2d(ch_in * 4),
                    nn.Conv2d(ch_in * 4, ch_in, kernel_size=1),
                    nn.GELU(),
                    nn.BatchNorm2d(ch_in),
                )
                for _ in range(depth)
            ]
        )
        self.up = ConvBlock(ch_in, ch_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.block(x))


class UpConv(nn.Module):
    """2× upsampling (``mode`` nearest or bilinear) → 3×3 conv → BatchNorm → ReLU."""

    def __init__(self, ch_in: int, ch_out: int, mode: str = "nearest") -> None:
        super().__init__()
        self.up = nn.Sequential(
            nn.Upsample(scale_factor=2, mode=mode, align_corners=False if mode == "bilinear" else None),
            nn.Conv2d(ch_in, ch_out, kernel_size=3, padding=1, bias=True),
            nn.BatchNorm2d(ch_out),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(x)


class FusionConv(nn.Module):
    """Grouped 3×3 conv over the concatenated skip + up features, then an inverted bottleneck."""

    def __init__(self, ch_in: int, ch_out: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(ch_in, ch_in, kernel_size=3, padding=1, groups=2, bias=True),
            nn.GELU(),
            nn.BatchNorm2d(ch_in),
            nn.Conv2d(ch_in, ch_out * 4, kernel_size=1),
            nn.GELU(),
            nn.BatchNorm2d(ch_out * 4),
            nn.Conv2d(ch_out * 4, ch_out, kernel_size=1),
            nn.GELU(),
            nn.BatchNorm2d(ch_out),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)
