"""Forward pass at 256²: CMUNeXt alone and with frozen LLM layers of 135M- to 1.5B-class shapes.

``plain``: the network as built (eager, NCHW) under ``torch.inference_mode``.
``fast``: ``llm4seg.fastpath`` (folded BatchNorm, fused conv+activation, sub-pixel up-convs, channels_last),
plus bf16 autocast on CUDA.
"""
from __future__ import annotations

import contextlib
import json
import statistics
import sys
from typing import Any

from .common import Row, RssSampler, emit, peak_gpu_mb, repeat, setup_worker, stats

#: a Llama-3.2-1B-like layer (hidden 2048, ffn 8192, 32 heads / 8 KV heads), random weights
LLAMA_1B = {
    "hidden_size": 2048, "intermediate_size": 8192, "num_attention_heads": 32, "num_key_value_heads": 8,
    "num_hidden_layers": 16, "head_dim": 64, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
    "max_position_embeddings": 131072, "vocab_size": 128256, "hidden_act": "silu", "tie_word_embeddings": True,
}
#: a Qwen2-1.5B-like layer (hidden 1536, ffn 8960, 12 heads / 2 KV heads), random weights
QWEN2_15B = {
    "hidden_size": 1536, "intermediate_size": 8960, "num_attention_heads": 12, "num_key_value_heads": 2,
    "num_hidden_layers": 28, "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "max_position_embeddings": 131072,
    "vocab_size": 151936, "hidden_act": "silu", "tie_word_embeddings": False,
}
MODELS = {
    "cmunext": "CMUNeXt (no LLM)",
    "smollm2": "+SmolLM2-135M layer 15 (embedded GGUF)",
    "llama-1b": "+1B-class layer (2048/8192, 32/8 heads, random)",
    "qwen2-1.5b": "+Qwen2-1.5B-shape layer (1536/8960, 12/2 heads, random)",
}


def build(name: str) -> Any:
    """The benchmarked network ``name`` (see :data:`MODELS`)."""
    from llm4seg.model import ModelConfig, build_model

    if name == "cmunext":
        return build_model(ModelConfig(llm=None))
    if name == "smollm2":
        return build_model(ModelConfig())
    arch, cfg, layer = {"llama-1b": ("llama", LLAMA_1B, 8), "qwen2-1.5b": ("qwen2", QWEN2_15B, 14)}[name]
    config = ModelConfig(llm=f"{name}-shape:{layer}", llm_init="random", llm_arch=arch, llm_config=dict(cfg))
    return build_model(config, load_llm=False)


def specs(quick: bool) -> list[dict[str, Any]]:
    """One worker process per model; each measures its batch sizes and modes."""
    return [{"suite": "forward", "model": m, "batches": [1] if quick else [1, 8],
             "repeats": 2 if quick else 5, "modes": ["plain", "fast"]} for m in MODELS]


def run(spec: dict[str, Any]) -> list[Row]:
    import torch

    from llm4seg.fastpath import prepare_for_inference
    from llm4seg.infer import _autocast

    device = setup_worker(spec)
    model = build(spec["model"]).to(device).eval()
    fused = prepare_for_inference(model)
    rows, per_b1 = [], {}
    for batch in spec["batches"]:
        x = torch.randn(batch, 1, 256, 256, device=device)
        for mode in spec["modes"]:
            net = fused if mode == "fast" else model
            n = spec["repeats"] if batch == 1 or spec["model"] in ("cmunext", "smollm2") else min(2, spec["repeats"])

            def step(net: Any = net, fast: bool = mode == "fast") -> None:
                with torch.inference_mode(), (_autocast(device) if fast else contextlib.nullcontext()):
                    net(x)

            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            with RssSampler() as rss:
                times, cpu = repeat(step, n)
            st = stats(times)
            per_slice = st["median_s"] / batch
            cpu_s = statistics.median(cpu)
            note = f"{per_slice * 1000:.0f} ms/slice; CPU time {cpu_s * 1000:.0f} ms"
            if mode == "fast" and (batch, "plain") in per_b1:
                note += f"; ×{per_b1[(batch, 'plain')] / st['median_s']:.2f} vs plain"
            per_b1[(batch, mode)] = st["median_s"]
            rows.append(Row("forward 256²", f"{MODELS[spec['model']]}, batch {batch}, {mode}", **st,
                            peak_rss_mb=rss.peak_mb, peak_gpu_mb=peak_gpu_mb(), device=str(device),
                            threads=torch.get_num_threads(), notes=note,
                            extra={"model": spec["model"], "batch": batch, "mode": mode, "per_slice_s": per_slice,
                                   "cpu_s": cpu_s}))
    return rows


if __name__ == "__main__":
    emit(run(json.loads(sys.argv[1])))
