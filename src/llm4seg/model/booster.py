"""The LLM booster: bottleneck tokens → Linear → one frozen LLM decoder layer → Linear."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn


class NoLayer(nn.Module):
    """Stands where the decoder layer would be in the adapters-only ablation: tokens pass unchanged."""

    def forward(self, tokens: torch.Tensor, **_: Any) -> torch.Tensor:
        return tokens


class LLMBooster(nn.Module):
    """Pass a (B, C, h, w) bottleneck through one frozen pre-trained decoder layer.

    Tokens are the h·w positions in raster order. ``position="rope"`` feeds the LLM's own rotary
    embedding; ``"paper"`` feeds scalar ``sin(t)``, ``cos(t)`` of the token index in the order
    (sin, cos), as the reference implementation does. ``attention`` is ``"causal"`` (what the
    reference effectively ran) or ``"bidirectional"``.
    """

    def __init__(
        self,
        channels: int,
        layer: nn.Module,
        rotary: nn.Module,
        hidden_size: int,
        position: str = "rope",
        attention: str = "causal",
    ) -> None:
        super().__init__()
        self.proj_in = nn.Linear(channels, hidden_size)
        self.layer = layer
        self.rotary = rotary
        self.proj_out = nn.Linear(hidden_size, channels)
        self.position = position
        self.attention = attention
        self.freeze_layer()

    def freeze_layer(self) -> None:
        """Frozen weights, eval mode: the decoder layer never trains."""
        for p in self.layer.parameters():
            p.requires_grad_(False)
        self.layer.eval()

    def train(self, mode: bool = True) -> "LLMBooster":
        super().train(mode)
        self.layer.eval()
        return self

    def position_embeddings(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(cos, sin)-shaped pair the decoder layer expects, for ``tokens`` of shape (B, T, hidden)."""
        n = tokens.shape[1]
        if self.position == "paper":
            t = torch.arange(n, device=tokens.device, dtype=tokens.dtype).view(1, n, 1)
            return torch.sin(t), torch.cos(t)  # (sin, cos): the reference's order, kept on purpose
        position_ids = torch.arange(n, device=tokens.device).unsqueeze(0)
        return self.rotary(tokens, position_ids)

    def run_layer(self, tokens: torch.Tensor) -> torch.Tensor:
        """The frozen decoder layer on (B, T, hidden) tokens; handles tuple and tensor returns."""
        if isinstance(self.layer, NoLayer):
            return tokens
        out: Any = self.layer(
            tokens,
            attention_mask=None,
            position_embeddings=self.position_embeddings(tokens),
            is_causal=self.attention == "causal",
        )
        # transformers < 4.54 returns a tuple (hidden_states, ...); newer versions the tensor itself.
        # Never index a tensor with [0]: that would silently take batch element 0.
        return out[0] if isinstance(out, tuple) else out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = self.proj_in(x.flatten(2).transpose(1, 2))
        tokens = self.proj_out(self.run_layer(tokens))
        return tokens.transpose(1, 2).reshape(b, c, h, w)

    @torch.no_grad()
    def calibrate(self, generator: torch.Generator | None = None, n_tokens: int = 256) -> float:
        """Scale ``proj_out`` so unit-variance input tokens give unit-variance output; return the gain found.

        Middle layers of pre-trained LLMs amplify their input by an order of magnitude; without this the
        decoder sees a bottleneck an order of magnitude louder than the encoder's features at the start.
        """
        c = self.proj_in.in_features
        x = torch.randn(1, c, 1, n_tokens, generator=generator).to(self.proj_in.weight)
        gain = float(self.forward(x).std())
        if gain > 0 and torch.isfinite(torch.tensor(gain)):
            self.proj_out.weight.mul_(1.0 / gain)
            self.proj_out.bias.mul_(1.0 / gain)
        return gain


def init_random_layer(layer: nn.Module, generator: torch.Generator | None = None) -> None:
    """Random weights for the layer, as the reference code's random arm does: every Linear weight
    xavier-uniform, biases zero; the normalisation weights stay as they were (pre-trained when loaded)."""
    with torch.no_grad():
        for module in layer.modules():
            if isinstance(module, nn.Linear):
                fan_out, fan_in = module.weight.shape
                bound = (6.0 / (fan_in + fan_out)) ** 0.5
                module.weight.copy_(torch.rand(module.weight.shape, generator=generator) * 2 * bound - bound)
                if module.bias is not None:
                    module.bias.zero_()
