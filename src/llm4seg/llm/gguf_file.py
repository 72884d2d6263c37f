"""GGUF reading: a fast header parser, single-layer dequantisation and a full-model builder.

``gguf.GGUFReader`` decodes every metadata array (the 49k-token vocabulary, merges, ...) and takes
seconds; the header parser here keeps only what the config needs and skips the rest, then the
layer's tensors are read through a memory map and dequantised with ``gguf.quants.dequantize``.
"""
from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .configs import config_class, normalise_config

_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
_KEEP_ARRAY = 64  # longer metadata arrays are skipped and only their length is kept
_HEADER_CHUNK = 1 << 22  # first read size for the header; grown until the header fits

#: GGUF per-layer tensor names -> ``LlamaDecoderLayer``/``Qwen2DecoderLayer`` state-dict names.
LAYER_NAMES = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
}
GLOBAL_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}


@dataclass(frozen=True)
class ArrayLen:
    """A long metadata array that was skipped; only its length is known."""

    length: int


@dataclass(frozen=True)
class TensorInfo:
    shape: tuple[int, ...]  # row-major (HF/numpy) order: (out, in) for matrices
    ggml_type: int
    offset: int  # absolute byte offset in the file


@dataclass(frozen=True)
class GGUFHeader:
    path: Path
    metadata: dict[str, Any]
    tensors: dict[str, TensorInfo]


class _Cursor:
    def __init__(self, buf: bytes) -> None:
        self.buf, self.pos = buf, 0

    def unpack(self, fmt: str) -> Any:
        value = struct.unpack_from(fmt, self.buf, self.pos)[0]
        self.pos += struct.calcsize(fmt)
        return value

    def string(self) -> str:
        n = self.unpack("<Q")
        self.pos += n
        return bytes(self.buf[self.pos - n:self.pos]).decode("utf-8", errors="replace")

    def skip_strings(self, count: int) -> None:
        buf, pos, unpack = self.buf, self.pos, struct.unpack_from
        for _ in range(count):
            pos += 8 + unpack("<Q", buf, pos)[0]
        self.pos = pos

    def value(self, vtype: int) -> Any:
        if vtype == 6:  # float32: keep its shortest decimal form (1e-05, not 9.99999974e-06)
            return float(str(np.float32(self.unpack("<f"))))
        if vtype in _SCALARS:
            return self.unpack(_SCALARS[vtype])
        if vtype == _STRING:
            return self.string()
        if vtype != _ARRAY:
            raise ValueError(f"unknown GGUF metadata value type {vtype}")
        itype, count = self.unpack("<I"), self.unpack("<Q")
        if count <= _KEEP_ARRAY:
            return [self.value(itype) for _ in range(count)]
        if itype in _SCALARS:
            self.pos += count * struct.calcsize(_SCALARS[itype])
        elif itype == _STRING:
            self.skip_strings(count)
        else:
            for _ in range(count):
                self.value(itype)
        return ArrayLen(count)


@lru_cache(maxsize=8)
def _read_header_cached(path: str, mtime_ns: int, size: int) -> GGUFHeader:
    import gguf

    with open(path, "rb") as f:
        head = f.read(24)
        if head[:4] != b"GGUF":
            raise ValueError(f"{path} is not a GGUF file (bad magic {head[:4]!r})")
        version = struct.unpack_from("<I", head, 4)[0]
        if version not in (2, 3):
            raise ValueError(f"{path}: unsupported GGUF version {version} (only little-endian v2/v3 are read)")
        # the header (metadata + tensor infos) is small next to the tensor data; grow until it fits
        chunk = _HEADER_CHUNK
        while True:
            f.seek(0)
            buf = f.read(chunk)
            try:
                cur = _Cursor(buf)
                cur.pos = 8
                n_tensors, n_kv = cur.unpack("<Q"), cur.unpack("<Q")
                metadata = {}
                for _ in range(n_kv):
                    key = cur.string()
                    metadata[key] = cur.value(cur.unpack("<I"))
                infos = []
                for _ in range(n_tensors):
                    name = cur.string()
                    dims = [cur.unpack("<Q") for _ in range(cur.unpack("<I"))]
                    infos.append((name, tuple(reversed(dims)), cur.unpack("<I"), cur.unpack("<Q")))
                break
            except struct.error:
                if len(buf) < chunk:
                    raise ValueError(f"{path}: truncated GGUF header") from None
                chunk *= 4
    align = int(metadata.get("general.alignment", gguf.GGUF_DEFAULT_ALIGNMENT))
    data_start = (cur.pos + align - 1) // align * align
    tensors = {name: TensorInfo(shape, ggml_type, data_start + off) for name, shape, ggml_type, off in infos}
    return GGUFHeader(Path(path), metadata, tensors)


def read_header(path: str | Path) -> GGUFHeader:
    """Parse a GGUF file's metadata and tensor table (cached per file version)."""
    st = Path(path).stat()
    return _read_header_cached(str(path), st.st_mtime_ns, st.st_size)


def map_file(path: str | Path) -> np.ndarray:
    """A read-only uint8 view of the whole file through a memory map (pages load on access)."""
    with open(path, "rb") as f:
        return np.frombuffer(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ), dtype=np.uint8)


def read_tensor(header: GGUFHeader, name: str, data: np.ndarray | None = None) -> np.ndarray:
    """Dequantise one tensor to a writable float32 array of its row-major shape."""
    import gguf

    info = header.tensors[name]
    qtype = gguf.GGMLQuantizationType(info.ggml_type)
    block, type_size = gguf.GGML_QUANT_SIZES[qtype]
    if info.shape[-1] % block:
        raise ValueError(f"{header.path}: tensor {name} row length {info.shape[-1]} is not a multiple of {block}")
    row_bytes = info.shape[-1] // block * type_size
    nbytes = int(np.prod(info.shape[:-1], dtype=np.int64)) * row_bytes
    if data is None:
        data = map_file(header.path)
    raw = data[info.offset:info.offset + nbytes].reshape(*info.shape[:-1], row_bytes)
    out = gguf.quants.dequantize(raw, qtype).reshape(info.shape)
    if out.dtype != np.float32 or not (out.flags.writeable and out.flags.c_contiguous):
        out = np.array(out, dtype=np.float32, copy=True)  # e.g. F32 tensors are read-only views of the map
    return out


def unpermute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """Undo llama.cpp's Q/K row permutation for rotary "NORM" mode (rows of each head interleaved)."""
    d = w.shape[0]
    return w.reshape(n_head, d // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def permute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's Q/K permutation (HF -> GGUF); the inverse of :func:`unpermute_qk`."""
    d = w.shape[0]
    return w.reshape(n_head, 2, d // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def gguf_config(header: GGUFHeader) -> tuple[str, dict[str, Any]]:
    """``(arch, raw HF-style config dict)`` from the GGUF metadata (legacy ``rope_theta`` form)."""
    md = header.metadata
    arch = md.get("general.architecture")
    if arch not in ("llama", "qwen2"):
        raise ValueError(f"{header.path}: GGUF architecture {arch!r} is not supported (only 'llama' and 'qwen2')")
    if "rope_freqs.weight" in header.tensors:
        raise ValueError(
            f"{header.path}: this GGUF stores llama3-style RoPE frequency factors, which cannot be mapped back to "
            "an HF rope config; use the model's HF safetensors folder instead"
        )

    def get(key: str, default: Any = None) -> Any:
        value = md.get(f"{arch}.{key}", default)
        if value is None:
            raise ValueError(f"{header.path}: GGUF metadata lacks '{arch}.{key}'")
        return value

    hidden, n_head = int(get("embedding_length")), int(get("attention.head_count"))
    vocab = md.get(f"{arch}.vocab_size") or md.get("tokenizer.ggml.tokens")
    vocab = vocab.length if isinstance(vocab, ArrayLen) else len(vocab) if isinstance(vocab, list) else vocab
    if not vocab:
        vocab = header.tensors["token_embd.weight"].shape[0]
    cfg: dict[str, Any] = {
        "model_type": arch,
        "architectures": ["LlamaForCausalLM" if arch == "llama" else "Qwen2ForCausalLM"],
        "hidden_size": hidden,
        "intermediate_size": int(get("feed_forward_length")),
        "num_hidden_layers": int(get("block_count")),
        "num_attention_heads": n_head,
        "num_key_value_heads": int(get("attention.head_count_kv", n_head)),
        "rms_norm_eps": float(get("attention.layer_norm_rms_epsilon", 1e-6)),
        "rope_theta": float(get("rope.freq_base", 10000.0)),
        "max_position_embeddings": int(get("context_length", 2048)),
        "vocab_size": int(vocab),
        "hidden_act": "silu",
        "tie_word_embeddings": "output.weight" not in header.tensors,
    }
    for key, meta in (("bos_token_id", "tokenizer.ggml.bos_token_id"), ("eos_token_id", "tokenizer.ggml.eos_token_id")):
        if isinstance(md.get(meta), int):
            cfg[key] = md[meta]
    if arch == "llama":
        cfg["head_dim"] = int(get("attention.key_length", hidden // n_head))
        cfg["attention_bias"] = "blk.0.attn_q.bias" in header.tensors
    scaling = md.get(f"{arch}.rope.scaling.type")
    if scaling in ("linear", "yarn"):
        rope: dict[str, Any] = {"rope_type": scaling, "factor": float(get("rope.scaling.factor"))}
        if scaling == "yarn":
            rope["original_max_position_embeddings"] = int(get("rope.scaling.original_context_length"))
        cfg["rope_scaling"] = rope
    elif scaling not in (None, "none"):
        raise ValueError(f"{header.path}: GGUF rope scaling {scaling!r} is not supported")
    return arch, cfg


def _hf_tensor(header: GGUFHeader, gguf_name: str, arch: str, cfg: dict, data: np.ndarray) -> torch.Tensor:
    w = read_tensor(header, gguf_name, data)
    kind = gguf_name.split(".")[-2]
    if arch == "llama" and kind in ("attn_q", "attn_k"):
        w = unpermute_qk(w, cfg["num_attention_heads"] if kind == "attn_q" else cfg["num_key_value_heads"])
        w = np.ascontiguousarray(w)
    return torch.from_numpy(w)


def read_gguf_layer(path: str | Path, layer: int) -> tuple[str, dict[str, Any], dict[str, torch.Tensor]]:
    """``(arch, raw config, tensors)`` of one decoder layer; only that layer's bytes are read."""
    header = read_header(path)
    arch, cfg = gguf_config(header)
    data = map_file(header.path)
    prefix = f"blk.{layer}."
    tensors: dict[str, torch.Tensor] = {}
    for name in header.tensors:
        if not name.startswith(prefix):
            continue
        kind, suffix = name[len(prefix):].rsplit(".", 1)
        if kind not in LAYER_NAMES:
            raise ValueError(f"{header.path}: unexpected layer tensor {name!r} for a {arch} model")
        tensors[f"{LAYER_NAMES[kind]}.{suffix}"] = _hf_tensor(header, name, arch, cfg, data)
    return arch, cfg, tensors


def build_full_model(path: str | Path) -> torch.nn.Module:
    """The whole causal LM (``LlamaForCausalLM``/``Qwen2ForCausalLM``, float32, eval) from a GGUF file.

    For verification: the frozen-layer path never needs it. The lm_head is tied to the embeddings
    when the file has no ``output.weight``.
    """
    header = read_header(path)
    arch, raw = gguf_config(header)
    config = config_class(arch)(**normalise_config(arch, raw))
    config._attn_implementation = "sdpa"
    data = map_file(header.path)
    state: dict[str, torch.Tensor] = {}
    for name in header.tensors:
        stem, suffix = name.rsplit(".", 1)
        if stem in GLOBAL_NAMES:
            state[f"{GLOBAL_NAMES[stem]}.{suffix}"] = _hf_tensor(header, name, arch, raw, data)
        elif stem.startswith("blk."):
            _, idx, kind = stem.split(".", 2)
            state[f"model.layers.{idx}.{LAYER_NAMES[kind]}.{suffix}"] = _hf_tensor(header, name, arch, raw, data)
    if config.tie_word_embeddings:
        state["lm_head.weight"] = state["model.embed_tokens.weight"]
    from transformers import LlamaForCausalLM, Qwen2ForCausalLM

    cls = LlamaForCausalLM if arch == "llama" else Qwen2ForCausalLM
    with torch.device("meta"):
        model = cls(config)
    model.load_state_dict(state, strict=True, assign=True)
    if config.tie_word_embeddings:
        model.lm_head.weight = model.model.embed_tokens.weight
    # non-persistent buffers (rotary inv_freq) were created on the meta device: rebuild them
    for module in model.modules():
        if hasattr(module, "inv_freq"):
            fresh = type(module)(config=config)
            module.inv_freq = fresh.inv_freq
            if hasattr(module, "original_inv_freq"):
                module.original_inv_freq = fresh.original_inv_freq
    return model.eval().requires_grad_(False)
