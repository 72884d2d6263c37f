"""``torch.compile`` against the hand-fused path (``llm4seg.fastpath``), forward 256² with the SmolLM2 layer.

Opt-in suite (``python -m benchmarks --only compile``): each compiled case spends 30–60 s compiling on a 2-core
CPU. Rows: steady-state time after the first call, and the first call with cold compile caches (what a GUI user
would wait the first time) in the notes.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from typing import Any

from .common import Row, emit, repeat, setup_worker, stats

CASES = {
    "fused": "fused eager (llm4seg.fastpath: what the plugin runs)",
    "plain": "plain eager (the network as built)",
    "plain-compiled": "torch.compile(plain)",
    "plain-compiled-freezing": "torch.compile(plain), inductor freezing (weights pre-packed)",
    "fused-compiled": "torch.compile(fused)",
}


def specs(quick: bool) -> list[dict[str, Any]]:
    """One fresh process per case (a compile cache from one case must not help the next)."""
    return [{"suite": "compile", "case": c, "repeats": 3 if quick else 7} for c in CASES]


def run(spec: dict[str, Any]) -> list[Row]:
    with tempfile.TemporaryDirectory() as cache:  # cold compile caches: a first session's first call
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache
        os.environ["TRITON_CACHE_DIR"] = cache
        return _run(spec)


def _run(spec: dict[str, Any]) -> list[Row]:
    import torch

    from llm4seg.fastpath import prepare_for_inference

    from .forward import build

    device = setup_worker(spec)
    case = spec["case"]
    model = build("smollm2").to(device).eval()
    net = prepare_for_inference(model) if case.startswith("fused") else model
    if case.endswith("compiled") or case.endswith("freezing"):
        import torch._inductor.config as inductor

        inductor.freezing = case.endswith("freezing")
        net = torch.compile(net, dynamic=False)
    x = torch.randn(1, 1, 256, 256, device=device)

    def step() -> None:
        with torch.inference_mode():
            net(x)

    t = time.perf_counter()
    try:
        step()
    except Exception as exc:  # noqa: BLE001 - a compiler failure is a result of this benchmark
        line = next((s for s in str(exc).splitlines() if s.strip()), type(exc).__name__)
        return [Row("torch.compile 256² b1", CASES[case], None, device=str(device), threads=torch.get_num_threads(),
                    notes=f"fails: {type(exc).__name__}: {line[:150]}")]
    first = time.perf_counter() - t
    times, _ = repeat(step, spec["repeats"], warmup=1)
    return [Row("torch.compile 256² b1", CASES[case], **stats(times), device=str(device),
                threads=torch.get_num_threads(), notes=f"first call {first:.1f} s", extra={"first_s": first})]


if __name__ == "__main__":
    emit(run(json.loads(sys.argv[1])))
