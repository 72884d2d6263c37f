"""Loading one frozen decoder layer's weights and building transformers' own layer around them."""
from __future__ import annotations

import hashlib
import operator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from .configs import IMPORT_LOCK, make_config, normalise_config
from .descriptor import LLMDescriptor, parse_descriptor, resolve_layer
from .gguf_file import gguf_config, read_gguf_layer, read_header
from .hf_dir import read_hf_config, read_hf_layer
from .sources import SUPPORTED_MODEL_TYPES, resolve_source

@dataclass
class LayerWeights:
    """One decoder layer's float32 tensors plus the full model's HF config."""

    arch: str
    config: dict[str, Any]
    layer_index: int
    descriptor: str
    tensors: dict[str, torch.Tensor] = field(repr=False)

    @property
    def sha256(self) -> str:
        return tensors_sha256(self.tensors)


def _layer_class(arch: str):
    with IMPORT_LOCK:
        from transformers.models.llama.modeling_llama import LlamaDecoderLayer
        from transformers.models.qwen2.modeling_qwen2 import Qwen2DecoderLayer

    return LlamaDecoderLayer if arch == "llama" else Qwen2DecoderLayer


def _rotary_class(arch: str):
    with IMPORT_LOCK:
        from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding
        from transformers.models.qwen2.modeling_qwen2 import Qwen2RotaryEmbedding

    return LlamaRotaryEmbedding if arch == "llama" else Qwen2RotaryEmbedding


def build_decoder_layer(arch: str, config: dict[str, Any], layer_index: int, *,
                        empty: bool = False) -> tuple[nn.Module, nn.Module]:
    """transformers' own decoder layer (sdpa attention) and the model's rotary embedding module.

    Both are in eval mode with ``requires_grad=False``. The layer is randomly initialised, or with
    ``empty=True`` left uninitialised (no time spent on random weights that a state dict replaces at once:
    ~1 s for a 1B-class layer); load :attr:`LayerWeights.tensors` into it with ``load_state_dict``. Call the rotary module as
    ``cos, sin = rotary(x, position_ids)`` and pass ``position_embeddings=(cos, sin)`` to the layer.
    """
    cfg = make_config(arch, config)
    n = cfg.num_hidden_layers
    index = operator.index(layer_index) if isinstance(layer_index, (int, np.integer)) else None
    if index is None or isinstance(layer_index, bool) or not 0 <= index < n:
        raise ValueError(
            f"layer_index {layer_index!r} is not a layer of this {n}-layer {arch} model: "
            f"pass an int in 0..{n - 1} (e.g. LayerWeights.layer_index)"
        )
    layer_index = index
    if empty:
        with torch.device("meta"):
            layer = _layer_class(arch)(cfg, layer_idx=layer_index)
        if any(True for _ in layer.buffers()):  # buffers outside the state dict would stay uninitialised
            layer = _layer_class(arch)(cfg, layer_idx=layer_index)
        else:
            layer = layer.to_empty(device="cpu")
    else:
        layer = _layer_class(arch)(cfg, layer_idx=layer_index)
    rotary = _rotary_class(arch)(config=cfg)
    for module in (layer, rotary):
        module.eval().requires_grad_(False)
    return layer, rotary


def _check_tensors(arch: str, config: dict[str, Any], layer_index: int, tensors: dict[str, torch.Tensor],
                   where: str) -> dict[str, torch.Tensor]:
    """Keep exactly the decoder layer's state-dict keys and check every shape."""
    with torch.device("meta"):
        expected = _layer_class(arch)(make_config(arch, config), layer_idx=layer_index).state_dict()
    missing = sorted(set(expected) - set(tensors))
    if missing:
        raise ValueError(f"{where}: layer {layer_index} lacks tensors {missing} expected by a {arch} decoder layer")
    for key, ref in expected.items():
        if tuple(tensors[key].shape) != tuple(ref.shape):
            raise ValueError(
                f"{where}: tensor {key} of layer {layer_index} has shape {tuple(tensors[key].shape)}, "
                f"but the config implies {tuple(ref.shape)}"
            )
    return {key: tensors[key] for key in expected}


def load_layer_weights(descriptor: str | LLMDescriptor) -> LayerWeights:
    """Resolve a descriptor locally and read only its decoder layer (never the network).

    Raises :class:`LLMNotFoundError` when the weights are not on this machine and ``ValueError``
    for a bad layer index or an unsupported model.
    """
    desc = parse_descriptor(descriptor)
    where = resolve_source(desc.source, str(desc))
    if where.kind == "gguf":
        arch, raw = gguf_config(read_header(where.path))
        index = resolve_layer(desc, int(raw["num_hidden_layers"]))
        arch, raw, tensors = read_gguf_layer(where.path, index)
    else:
        raw = read_hf_config(where.path, str(desc))
        arch = raw.get("model_type")
        if arch not in SUPPORTED_MODEL_TYPES:
            raise ValueError(
                f"LLM '{desc.source}' has model_type {arch!r} in {where.path / 'config.json'}; "
                f"only {', '.join(SUPPORTED_MODEL_TYPES)} models are supported"
            )
        index = resolve_layer(desc, int(raw["num_hidden_layers"]))
        tensors = read_hf_layer(where.path, index, str(desc))
    config = normalise_config(arch, raw)
    tensors = _check_tensors(arch, config, index, tensors, str(where.path))
    return LayerWeights(arch, config, index, f"{desc.source}:{index}", tensors)


def tensors_sha256(tensors: dict[str, torch.Tensor]) -> str:
    """Canonical digest: names sorted; each name, dtype, shape and its float32 little-endian bytes."""
    h = hashlib.sha256(b"llm4seg-tensors-v1\0")
    for name in sorted(tensors):
        t = tensors[name].detach()
        h.update(f"{name}\0{str(t.dtype).removeprefix('torch.')}\0{tuple(t.shape)}\0".encode())
        arr = t.to(device="cpu", dtype=torch.float32).contiguous().numpy()
        h.update(np.ascontiguousarray(arr, dtype="<f4").tobytes())
    return h.hexdigest()
