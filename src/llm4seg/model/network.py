"""LLM4Seg: CMUNeXt with an optional frozen-LLM booster at the bottleneck."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .booster import LLMBooster
from .cmunext import CMUNeXtBlock, ConvBlock, FusionConv, UpConv
from .config import ModelConfig

STRIDE = 16  # four 2× max-pools: input sides must be multiples of 16


def with_zero_prompts(x: torch.Tensor, config: ModelConfig) -> torch.Tensor:
    """Check the input's shape; append zero prompt channels when only the image channels are given."""
    if x.ndim == 4 and config.prompts and x.shape[1] == config.in_channels:
        x = torch.cat([x, x.new_zeros((x.shape[0], len(config.prompts), *x.shape[2:]))], dim=1)
    if x.ndim != 4 or x.shape[1] != config.stem_channels:
        extra = f" (+ {len(config.prompts)} prompt channels)" if config.prompts else ""
        raise ValueError(f"expected input (B, {config.in_channels}{extra}, H, W), got {tuple(x.shape)}")
    return x


class LLM4Seg(nn.Module):
    """CMUNeXt encoder → (LLM booster) → CMUNeXt decoder → 1×1 head with ``num_classes`` logits."""

    def __init__(self, config: ModelConfig, booster: LLMBooster | None = None) -> None:
        super().__init__()
        self.config = config
        self.card: Any = None  # the ModelCard, set by load_checkpoint
        d, dp, k = config.dims, config.depths, config.kernels
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2)
        self.stem = ConvBlock(config.stem_channels, d[0])
        self.encoder1 = CMUNeXtBlock(d[0], d[0], depth=dp[0], k=k[0])
        self.encoder2 = CMUNeXtBlock(d[0], d[1], depth=dp[1], k=k[1])
        self.encoder3 = CMUNeXtBlock(d[1], d[2], depth=dp[2], k=k[2])
        self.encoder4 = CMUNeXtBlock(d[2], d[3], depth=dp[3], k=k[3])
        self.encoder5 = CMUNeXtBlock(d[3], d[4], depth=dp[4], k=k[4])
        self.booster = booster
        self.Up5 = UpConv(d[4], d[3], config.upsample)
        self.Up_conv5 = FusionConv(d[3] * 2, d[3])
        self.Up4 = UpConv(d[3], d[2], config.upsample)
        self.Up_conv4 = FusionConv(d[2] * 2, d[2])
        self.Up3 = UpConv(d[2], d[1], config.upsample)
        self.Up_conv3 = FusionConv(d[1] * 2, d[1])
        self.Up2 = UpConv(d[1], d[0], config.upsample)
        self.Up_conv2 = FusionConv(d[0] * 2, d[0])
        self.Conv_1x1 = nn.Conv2d(d[0], config.num_classes, kernel_size=1)

    # -- parts, so that training can freeze and cache what does not change -----------------------
    def encode(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Skip features [x1..x4] and the bottleneck x5 (before the booster).

        ``x`` holds the image channels, then the prompt channels when the model takes prompts; the image
        channels alone run a prompted model in its automatic mode (zero prompts)."""
        x = with_zero_prompts(x, self.config)
        if x.shape[-1] % STRIDE or x.shape[-2] % STRIDE:
            raise ValueError(
                f"input height and width must be multiples of {STRIDE}, got {tuple(x.shape[-2:])}: "
                "pad or resize first (llm4seg.preprocess does this)"
            )
        x1 = self.encoder1(self.stem(x))
        x2 = self.encoder2(self.pool(x1))
        x3 = self.encoder3(self.pool(x2))
        x4 = self.encoder4(self.pool(x3))
        x5 = self.encoder5(self.pool(x4))
        return [x1, x2, x3, x4], x5

    def boost(self, x5: torch.Tensor) -> torch.Tensor:
        """The bottleneck after the LLM booster (identity for the baseline)."""
        return x5 if self.booster is None else self.booster(x5)

    def decode(self, skips: list[torch.Tensor], x5: torch.Tensor) -> torch.Tensor:
        """Logits (B, num_classes, H, W) from skips and the (boosted) bottleneck."""
        x1, x2, x3, x4 = skips
        d = self.Up_conv5(torch.cat((x4, self.Up5(x5)), dim=1))
        d = self.Up_conv4(torch.cat((x3, self.Up4(d)), dim=1))
        d = self.Up_conv3(torch.cat((x2, self.Up3(d)), dim=1))
        d = self.Up_conv2(torch.cat((x1, self.Up2(d)), dim=1))
        return self.Conv_1x1(d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips, x5 = self.encode(x)
        return self.decode(skips, self.boost(x5))

    # -- training helpers ---------------------------------------------------------------------------
    def train(self, mode: bool = True) -> "LLM4Seg":
        super().train(mode)
        if self.booster is not None:
            self.booster.layer.eval()  # the frozen layer stays in eval mode
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Parameters the optimiser may update (never the frozen LLM layer)."""
        return [p for p in self.parameters() if p.requires_grad]

    def frozen_layer_state(self) -> dict[str, torch.Tensor]:
        """The frozen LLM layer's tensors (names relative to the layer); empty for the baseline."""
        if self.booster is None:
            return {}
        return {k: v for k, v in self.booster.layer.state_dict().items()}

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def is_binary(self) -> bool:
        return self.config.num_classes == 1
