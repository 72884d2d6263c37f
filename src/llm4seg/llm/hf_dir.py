"""Single-layer reading from an HF model folder (``config.json`` + ``*.safetensors``, sharded or not).

Only the ``model.layers.{i}.*`` tensors are read (``safetensors.safe_open`` reads tensors lazily
from a memory map), so one layer of a 1B model costs its own few hundred MB, not the model's GBs.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from .descriptor import LLMNotFoundError

INDEX_FILE = "model.safetensors.index.json"


def read_hf_config(folder: Path, descriptor: str) -> dict[str, Any]:
    """The folder's ``config.json`` as a dict."""
    path = folder / "config.json"
    if not path.is_file():
        raise LLMNotFoundError(
            descriptor, [str(path)],
            f"'{folder}' is not an HF model folder: it needs config.json and *.safetensors "
            "(as written by `save_pretrained` or `huggingface-cli download`).",
        )
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from exc


def _files_and_keys(folder: Path, descriptor: str) -> dict[Path, list[str] | None]:
    """Map each safetensors file to the keys to read from it (``None``: decide from its header)."""
    index = folder / INDEX_FILE
    if index.is_file():
        weight_map: dict[str, str] = json.loads(index.read_text())["weight_map"]
        files: dict[Path, list[str] | None] = {}
        for key, fname in weight_map.items():
            files.setdefault(folder / fname, []).append(key)  # type: ignore[union-attr]
        return files
    shards = sorted(folder.glob("*.safetensors"))
    if not shards:
        has_pickle = any(folder.glob("*.bin")) or any(folder.glob("*.pt"))
        raise LLMNotFoundError(
            descriptor, [f"{folder}/*.safetensors", str(index)],
            "this folder has only pickle weights (*.bin), which are never loaded; convert them to safetensors "
            "(e.g. `model.save_pretrained(dir, safe_serialization=True)`)." if has_pickle else
            "put the model's *.safetensors (and model.safetensors.index.json if sharded) next to config.json.",
        )
    return {path: None for path in shards}


def read_hf_layer(folder: Path, layer: int, descriptor: str) -> dict[str, torch.Tensor]:
    """Float32 tensors of decoder layer ``layer`` keyed as in the decoder layer's state dict."""
    from safetensors import safe_open

    prefixes = (f"model.layers.{layer}.", f"layers.{layer}.")
    tensors: dict[str, torch.Tensor] = {}
    for path, keys in _files_and_keys(folder, descriptor).items():
        if keys is not None and not any(k.startswith(prefixes) for k in keys):
            continue
        if not path.is_file():
            raise LLMNotFoundError(descriptor, [str(path)], f"the shard {path.name} listed in {INDEX_FILE} is missing.")
        with safe_open(str(path), framework="pt") as f:
            for key in keys if keys is not None else f.keys():
                prefix = next((p for p in prefixes if key.startswith(p)), None)
                if prefix is not None:
                    tensors[key[len(prefix):]] = f.get_tensor(key).to(torch.float32).contiguous()
    return tensors
