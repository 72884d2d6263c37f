"""LLM4Seg networks: CMUNeXt + one frozen pre-trained LLM decoder layer at the bottleneck."""
from __future__ import annotations

import torch

from .booster import LLMBooster, NoLayer, init_random_layer
from .config import ModelConfig
from .network import STRIDE, LLM4Seg

__all__ = ["LLM4Seg", "LLMBooster", "ModelConfig", "STRIDE", "build_model"]


def build_model(config: ModelConfig, weights=None, *, load_llm: bool = True, seed: int = 0) -> LLM4Seg:
    """Build an LLM4Seg network.

    ``weights`` (an ``llm4seg.llm.LayerWeights``) supplies the frozen layer; when omitted and
    ``load_llm`` is true, ``config.llm`` is resolved locally. With ``load_llm=False`` (checkpoint
    loading) the layer is built from ``config.llm_arch``/``config.llm_config`` and its weights are
    expected from a state dict. ``seed`` fixes the random initialisation: the CNN's from ``seed`` alone,
    so a baseline and its LLM arms start from the same CNN weights; the booster's from ``seed + 1``.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1)
        booster = _build_booster(config, weights, load_llm, torch.Generator().manual_seed(seed + 1))
    torch.manual_seed(seed)
    return LLM4Seg(config, booster).eval()


def _build_booster(config: ModelConfig, weights, load_llm: bool, gen: torch.Generator) -> LLMBooster | None:
    booster = None
    if config.uses_llm:
        from ..llm import build_decoder_layer, load_layer_weights

        if weights is None and load_llm:
            weights = load_layer_weights(config.llm)
        if weights is not None:
            config.llm_arch, config.llm_config = weights.arch, dict(weights.config)
            config.llm = weights.descriptor
        if config.llm_arch is None or config.llm_config is None:
            raise ValueError(
                f"cannot build the LLM layer of {config.llm!r}: no weights given and no llm_arch/llm_config "
                "in the model config"
            )
        layer_index = _layer_index(config.llm)
        if config.llm_init == "none":  # adapters only (ablation)
            layer, rotary = NoLayer(), None
        else:  # the layer's weights come from ``weights`` or from the checkpoint's state dict
            layer, rotary = build_decoder_layer(config.llm_arch, config.llm_config, layer_index,
                                                empty=config.llm_init != "random")
            if weights is not None:
                layer.load_state_dict(weights.tensors, strict=True)
            if config.llm_init == "random":
                init_random_layer(layer, gen)
        booster = LLMBooster(
            config.dims[-1], layer, rotary, int(config.llm_config["hidden_size"]),
            position=config.position, attention=config.attention,
        )
    if booster is not None and config.calibrate and (weights is not None or config.llm_init != "pretrained"):
        booster.calibrate(gen)
    return booster


def _layer_index(descriptor: str) -> int:
    from ..llm import parse_descriptor

    return parse_descriptor(descriptor).layer
