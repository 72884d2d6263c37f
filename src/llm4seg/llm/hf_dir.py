"""Single-layer reading from an HF model folder (``config.json`` + ``*.safetensors``, sharded or not).

Only the ``model.layers.{i}.*`` tensors are read, one at a time with plain file reads at the offsets of the
validated safetensors header, so one layer of a 1B model costs its own float32 size, not the model's GBs.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import torch

from ..filecheck import read_safetensors_header
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
    prefixes = (f"model.layers.{layer}.", f"layers.{layer}.")
    tensors: dict[str, torch.Tensor] = {}
    for path, keys in _files_and_keys(folder, descriptor).items():
        if keys is not None and not any(k.startswith(prefixes) for k in keys):
            continue
        if not path.is_file():
            raise LLMNotFoundError(descriptor, [str(path)], f"the shard {path.name} listed in {INDEX_FILE} is missing.")
        for key, tensor in _read_tensors(path, lambda k: k.startswith(prefixes)).items():
            prefix = next(p for p in prefixes if key.startswith(p))
            tensors[key[len(prefix):]] = tensor
    return tensors


_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


def _read_tensors(path: Path, wanted) -> dict[str, torch.Tensor]:
    """Float32 copies of the tensors whose names pass ``wanted``, read with plain file reads.

    Only those tensors' bytes are read, one at a time (no memory map: the shard's pages never count
    towards the process's memory), after the header was validated against the file size.
    """
    header = read_safetensors_header(path)
    with open(path, "rb", buffering=0) as f:
        (n,) = struct.unpack("<Q", f.read(8))
        out: dict[str, torch.Tensor] = {}
        for key, info in header.items():
            if key == "__metadata__" or not wanted(key):
                continue
            dtype = _DTYPES.get(info["dtype"])
            if dtype is None:
                raise ValueError(f"{path.name}: tensor {key} has dtype {info['dtype']}; expected a float dtype")
            start, end = info["data_offsets"]
            buf = bytearray(end - start)
            f.seek(8 + n + start)
            if f.readinto(buf) != len(buf):
                raise ValueError(f"{path.name}: could not read tensor {key}: the file is truncated")
            raw = torch.frombuffer(buf, dtype=dtype) if buf else torch.empty(0, dtype=dtype)
            out[key] = raw.reshape(info["shape"]).to(torch.float32)
    return out
