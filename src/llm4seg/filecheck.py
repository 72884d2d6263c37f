"""Checks on model files before anything is read from them: pickles are refused, safetensors headers verified.

Nothing here executes data from a file: pickles are recognised by their bytes and never opened with
``pickle``/``torch.load``; a safetensors header is parsed as JSON and checked against the file size.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

PICKLE_SUFFIXES = {".pt", ".pth", ".ckpt", ".bin", ".pkl", ".pickle", ".tar"}
MAX_HEADER_BYTES = 100 * 1024 * 1024
DTYPE_SIZES = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
    "U16": 2, "U32": 4, "U64": 8, "F8_E4M3": 1, "F8_E5M2": 1,
}


class CheckpointError(ValueError):
    """A model file that cannot be used; the message says why and what to do."""


def is_pickle(path: Path) -> bool:
    """True for PyTorch/pickle files (zip-based torch.save, or raw pickle protocol 2+)."""
    with open(path, "rb") as f:
        head = f.read(4)
    return head.startswith(b"PK\x03\x04") or (len(head) >= 2 and head[0] == 0x80 and head[1] in range(2, 6))


def refuse_pickle(path: Path) -> None:
    """Raise a clear CheckpointError for pickle files; they are never unpickled."""
    if path.suffix.lower() in PICKLE_SUFFIXES or is_pickle(path):
        raise CheckpointError(
            f"{path.name} is a PyTorch pickle file. Loading a pickle can run arbitrary code, so llm4seg never "
            "does it. If it holds a plain state dict from a source you trust, convert it once with "
            f"`llm4seg convert {path} --out model.safetensors` and load the .safetensors file."
        )


def read_safetensors_header(path: str | Path) -> dict[str, Any]:
    """Parse and validate a safetensors header: sizes, offsets and dtypes must fit the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist (or is not a file)")
    refuse_pickle(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise CheckpointError(f"{path.name} is empty or truncated: not a safetensors checkpoint")
        (n,) = struct.unpack("<Q", raw)
        if n > MAX_HEADER_BYTES or 8 + n > size:
            raise CheckpointError(
                f"{path.name} is not a valid safetensors file (header of {n} bytes in a {size}-byte file): "
                "it is truncated or corrupt; download or export it again"
            )
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"{path.name}: unreadable safetensors header ({exc}); the file is corrupt") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path.name}: safetensors header is not a JSON object; the file is corrupt")
    data_bytes = size - 8 - n
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (start, end) = info["dtype"], info["shape"], info["data_offsets"]
            count = 1
            for s in shape:
                count *= int(s)
            expected = count * DTYPE_SIZES[dtype]
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{path.name}: malformed entry for tensor {name!r}; the file is corrupt") from None
        if not (0 <= start <= end <= data_bytes) or end - start != expected:
            raise CheckpointError(
                f"{path.name}: tensor {name!r} claims {expected} bytes at [{start}, {end}) but the file holds "
                f"{data_bytes} bytes of data: the file is truncated or corrupt"
            )
    return header
