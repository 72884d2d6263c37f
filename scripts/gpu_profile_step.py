"""Where the time of one training step of the paper's schedule goes on a CUDA GPU (after ``paper_schedule.py pack``).

    python scripts/gpu_profile_step.py [--data .gpu] [--task busi]

Times the captured step (CUDA graph replay) in four variants (bfloat16 autocast or float32/TF32, NHWC or NCHW
tensors), then profiles a few eager steps of the default variant and prints the CUDA kernels by total time.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import paper_schedule as paper  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT / ".gpu")
    ap.add_argument("--task", default="busi")
    ap.add_argument("--steps", type=int, default=30)
    args = ap.parse_args(argv)
    import json

    from llm4seg.llm import DEFAULT_LLM, load_layer_weights

    device = torch.device("cuda")
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    info = json.loads((args.data / "meta.json").read_text())["tasks"][args.task]
    layer = load_layer_weights(DEFAULT_LLM)
    for amp in ("bf16", "off"):
        for cl in ("on", "off"):
            ns = argparse.Namespace(seed=0, graph="auto", probe_steps=args.steps, amp=amp, channels_last=cl)
            run = paper.build(args.task, info, args.data, layer, ns, device)
            print(f"variant amp={amp} channels_last={cl}: {run['s_per_step'] * 1e3:.2f} ms per step", flush=True)
            del run
            torch.cuda.empty_cache()
    ns = argparse.Namespace(seed=0, graph="off", probe_steps=2, amp="bf16", channels_last="on")
    run = paper.build(args.task, info, args.data, layer, ns, device)
    step = run["step"]
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(5):
            step()
        torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="self_device_time_total", row_limit=25, max_name_column_width=70))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
