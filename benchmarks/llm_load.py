"""Loading one frozen LLM layer: the embedded GGUF, and one layer of a synthetic sharded 1B-class HF checkpoint
with ``llm4seg.llm.load_layer_weights`` against ``transformers.AutoModelForCausalLM.from_pretrained``.
Each case runs in its own process, so peak RSS is that of the loader alone (plus the imports)."""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from .common import Row, emit, peak_rss_mb, stats

CACHE = Path(os.environ.get("LLM4SEG_BENCH_CACHE", "/tmp/llm4seg-bench-1b"))
#: Llama-3.2-1B's shape (1.24 B parameters, ~2.5 GB in bf16)
FULL = {"hidden_size": 2048, "intermediate_size": 8192, "num_attention_heads": 32, "num_key_value_heads": 8,
        "num_hidden_layers": 16, "head_dim": 64, "vocab_size": 128256}
#: a smaller stand-in for --quick (4 layers, 32k vocab: ~0.35 B parameters)
MINI = {**FULL, "num_hidden_layers": 4, "vocab_size": 32000}
SHARD_BYTES = 1_000_000_000


def checkpoint_dir(quick: bool) -> Path:
    return CACHE.with_name(CACHE.name + "-mini") if quick else CACHE


def ensure_checkpoint(quick: bool) -> tuple[Path, float]:
    """Write the synthetic checkpoint once (random bf16 weights, sharded, with an index); return (dir, seconds)."""
    import torch
    from safetensors.torch import save_file

    folder = checkpoint_dir(quick)
    if (folder / "DONE").is_file():
        return folder, 0.0
    t = time.perf_counter()
    folder.mkdir(parents=True, exist_ok=True)
    shape = MINI if quick else FULL
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "torch_dtype": "bfloat16",
              "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "max_position_embeddings": 131072,
              "hidden_act": "silu", "tie_word_embeddings": True, "bos_token_id": 1, "eos_token_id": 2, **shape}
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    h, f, v = shape["hidden_size"], shape["intermediate_size"], shape["vocab_size"]
    kv = shape["num_key_value_heads"] * shape["head_dim"]
    names: list[tuple[str, tuple[int, ...]]] = [("model.embed_tokens.weight", (v, h))]
    for i in range(shape["num_hidden_layers"]):
        p = f"model.layers.{i}."
        names += [(p + "input_layernorm.weight", (h,)), (p + "post_attention_layernorm.weight", (h,)),
                  (p + "self_attn.q_proj.weight", (h, h)), (p + "self_attn.k_proj.weight", (kv, h)),
                  (p + "self_attn.v_proj.weight", (kv, h)), (p + "self_attn.o_proj.weight", (h, h)),
                  (p + "mlp.gate_proj.weight", (f, h)), (p + "mlp.up_proj.weight", (f, h)),
                  (p + "mlp.down_proj.weight", (h, f))]
    names.append(("model.norm.weight", (h,)))
    gen = torch.Generator().manual_seed(0)
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, shp in names:
        n = 1
        for s in shp:
            n *= s
        if size and size + 2 * n > SHARD_BYTES:
            shards.append({})
            size = 0
        t_ = torch.ones(shp) if name.endswith("norm.weight") else torch.randn(shp, generator=gen).mul_(0.02)
        shards[-1][name] = t_.to(torch.bfloat16)
        size += 2 * n
    weight_map, total = {}, 0
    for k, shard in enumerate(shards):
        fname = f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(folder / fname), metadata={"format": "pt"})
        for name, tensor in shard.items():
            weight_map[name] = fname
            total += tensor.numel() * 2
        shards[k] = {}
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=1))
    (folder / "DONE").write_text("ok\n")
    return folder, time.perf_counter() - t


def specs(quick: bool) -> list[dict[str, Any]]:
    """``processes``: fresh processes per case (each loads once, like a user's session does)."""
    n = 1 if quick else 3
    return [{"suite": "llm", "case": "gguf", "processes": n},
            {"suite": "llm", "case": "single-layer", "processes": n, "quick": quick},
            {"suite": "llm", "case": "from_pretrained", "processes": 1, "quick": quick}]


def run(spec: dict[str, Any]) -> list[Row]:
    """One load in this (fresh) process; then a few warm repeats of the small loaders for the notes."""
    import torch

    # imports are the same for both loaders and counted in the baseline, not in the loading times
    import gguf  # noqa: F401
    import transformers.models.llama.modeling_llama  # noqa: F401
    from transformers import AutoModelForCausalLM

    from llm4seg.llm import load_layer_weights

    case = spec["case"]
    base = peak_rss_mb()
    env = dict(device="cpu", threads=torch.get_num_threads())
    if case == "gguf":
        what, load = "embedded SmolLM2-135M GGUF, layer 15 (Q4_1 → float32)", lambda: load_layer_weights("smollm2-135m:15")
    else:
        folder = checkpoint_dir(spec["quick"])
        layers = json.loads((folder / "config.json").read_text())["num_hidden_layers"]
        what = f"synthetic sharded Llama ({layers} layers, bf16, {_size_gb(folder):.1f} GB): "
        if case == "single-layer":
            what += f"layer {layers // 2} with load_layer_weights"
            load = lambda: load_layer_weights(f"{folder}:{layers // 2}")  # noqa: E731
        else:
            what += "AutoModelForCausalLM.from_pretrained"
            load = lambda: AutoModelForCausalLM.from_pretrained(str(folder))  # noqa: E731
    t = time.perf_counter()
    obj = load()
    seconds = time.perf_counter() - t
    rows: list[Row] = []
    if case == "from_pretrained":  # transformers maps the shards lazily: read every weight once
        peak = peak_rss_mb()
        rows.append(Row("llm loading", what + ", as returned", seconds, seconds, seconds, 1, peak_rss_mb=peak, **env,
                        notes=f"{peak - base:.0f} MB above the imports (weights memory-mapped, not yet read)",
                        extra={"case": "from_pretrained_lazy", "rss_above_imports_mb": peak - base}))
        t = time.perf_counter()
        with torch.no_grad():
            for p in obj.parameters():
                p.view(-1)[:: max(1, 4096 // p.element_size())].float().sum()
        seconds += time.perf_counter() - t
        what += " + first read of every weight (what a forward pass does)"
    peak = peak_rss_mb()
    warm = ""
    if case != "from_pretrained":
        del obj
        t = time.perf_counter()
        load()
        warm = f"; again in the same process {time.perf_counter() - t:.2f} s"
    rows.append(Row("llm loading", what, seconds, seconds, seconds, 1, peak_rss_mb=peak, **env,
                    notes=f"{peak - base:.0f} MB above the imports{warm}",
                    extra={"case": case, "rss_above_imports_mb": peak - base}))
    return rows


def merge(runs: list[list[Row]]) -> list[Row]:
    """Rows of the same case from several fresh processes → one row each (median time, worst memory)."""
    out: list[Row] = []
    for group in zip(*runs):
        ok = [r for r in group if r.median_s is not None]
        if not ok:
            out.append(group[0])
            continue
        times = [r.median_s for r in ok]
        first = max(ok, key=lambda r: r.peak_rss_mb or 0)
        first.median_s, first.min_s, first.max_s, first.runs = stats(times).values()
        first.notes += f"; {len(ok)} fresh processes" if len(ok) > 1 else ""
        out.append(first)
    return out


def _size_gb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.glob("*.safetensors")) / 1e9


def compare(rows: list[Row]) -> Row | None:
    """Single-layer loader against from_pretrained (read in full): time and memory ratios."""
    by = {r.extra.get("case"): r for r in rows if r.suite == "llm loading" and r.median_s}
    a, b, lazy = by.get("single-layer"), by.get("from_pretrained"), by.get("from_pretrained_lazy")
    if a is None or b is None:
        return None
    t, m = b.median_s / a.median_s, b.extra["rss_above_imports_mb"] / max(a.extra["rss_above_imports_mb"], 1.0)
    note = (f"×{t:.1f} faster and ×{m:.1f} less memory above the imports (×{b.peak_rss_mb / a.peak_rss_mb:.1f} "
            f"less peak RSS of the whole process) than loading the model and reading its weights")
    if lazy is not None:
        note += f"; ×{lazy.median_s / a.median_s:.1f} faster than from_pretrained alone"
    return Row("llm loading", "single layer vs from_pretrained", None, device="cpu", threads=a.threads, notes=note,
               extra={"time_ratio": t, "mem_ratio": m})


if __name__ == "__main__":
    if sys.argv[1] == "--prepare":  # python -m benchmarks.llm_load --prepare [--quick]
        path, secs = ensure_checkpoint("--quick" in sys.argv)
        print(f"{path} {secs:.1f}")
    else:
        emit(run(json.loads(sys.argv[1])))
