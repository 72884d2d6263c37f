"""CT end to end (read → preprocess → segment every slice → uint8 label volume), a naive per-slice loop for
comparison, and time / peak memory against the slice count on synthetic 512² volumes."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from .common import CT_FULL, CT_SAMPLE, Row, RssSampler, emit, peak_gpu_mb, peak_rss_mb, setup_worker, stats


def specs(quick: bool, gpu: bool) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for path, label in ((CT_SAMPLE, "CT sample"), (CT_FULL, "ircad17 CT")):
        out.append({"suite": "ct", "case": "end-to-end", "path": str(path), "label": label,
                    "repeats": 1 if quick else (3 if path == CT_SAMPLE else 2), "z_range": [40, 56] if quick else None,
                    "naive_slices": 4 if quick else (24 if path == CT_SAMPLE else 0)})
    out.append({"suite": "ct", "case": "end-to-end", "path": str(CT_SAMPLE), "label": "CT sample", "shipped": True,
                "repeats": 1 if quick else 3, "z_range": [40, 56] if quick else None, "naive_slices": 0})
    sizes = [8, 16] if quick else ([100, 200, 500] if gpu else [40, 80, 160])
    out += [{"suite": "ct", "case": "scaling", "slices": n} for n in sizes]
    return out


def _model(device: Any, shipped: bool = False) -> Any:
    """The paper configuration at 256² (CMUNeXt + SmolLM2 layer, untrained weights: speed does not depend on
    them), or with ``shipped`` the installed default checkpoint (whatever its input size)."""
    from llm4seg.models import load_model, untrained_default

    return load_model("default", device=device) if shipped else untrained_default().to(device).eval()


def end_to_end(spec: dict[str, Any]) -> list[Row]:
    import torch

    from llm4seg.infer import segment
    from llm4seg.io import read_image

    device = setup_worker(spec)
    path, label = Path(spec["path"]), spec["label"]
    if not path.is_file():
        return [Row("ct", f"{label} end to end", None, notes=f"skipped: {path} not found")]
    t = time.perf_counter()
    model = _model(device, spec.get("shipped", False))
    load_s = time.perf_counter() - t
    label += f" [{model.card.name}, {model.card.preprocess.size}²]"
    env = dict(device=str(device), threads=torch.get_num_threads())
    cpus: list[float] = []
    totals, segs, stages, first = [], [], {"read": [], "setup": [], "preprocess": [], "model": [], "postprocess": []}, None
    shape = None
    with RssSampler() as rss:
        for _ in range(spec["repeats"]):
            t, c = time.perf_counter(), time.process_time()
            data = read_image(path)
            read_s = time.perf_counter() - t
            res = segment(data.array, model, z_range=spec.get("z_range"))
            total = time.perf_counter() - t
            cpus.append(time.process_time() - c)
            first = total if first is None else first
            totals.append(total)
            segs.append(res.seconds)
            stages["read"].append(read_s)
            for key, value in res.timings.items():
                stages[key].append(value)
            shape, batch = data.array.shape, res.batch_size
            del data, res
    z0, z1 = spec.get("z_range") or (0, shape[0])
    n = z1 - z0
    size = "×".join(str(s) for s in shape[1:]) + f"×{n}"
    rows = [Row("ct", f"{label} {size}: end to end", **stats(totals), peak_rss_mb=rss.peak_mb,
                peak_gpu_mb=peak_gpu_mb(), **env,
                notes=f"{np.median(totals) / n * 1000:.0f} ms/slice; CPU time {np.median(cpus):.1f} s; batch {batch}; "
                      f"first run {first:.2f} s "
                      f"(incl. building the fused copy); model load {load_s:.2f} s (not included)",
                extra={"slices": n, "shape": list(shape), "load_model_s": load_s})]
    if spec.get("shipped"):
        return rows
    for key, values in stages.items():
        rows.append(Row("ct", f"{label}: stage {key}", **stats(values), **env,
                        notes=f"{np.median(values) / max(np.median(totals), 1e-9) * 100:.0f}% of total"))
    k = min(spec.get("naive_slices", 0), n)
    if k:
        rows.append(_naive(data_path=path, model=model, z0=z0, k=k, label=label,
                           real_per_slice=float(np.median(segs)) / n, env=env))
    return rows


def _naive(data_path: Path, model: Any, z0: int, k: int, label: str, real_per_slice: float, env: dict) -> Row:
    """Batch 1, float32, autograd on (no inference_mode), the plain network, one Python iteration per slice."""
    from llm4seg.io import read_image
    from llm4seg.preprocess import from_model_output, intensity_range, logits_to_labels, to_model_input

    stack = read_image(data_path).array
    prep, device = model.card.preprocess, model.device
    lo, hi = intensity_range(stack, prep)
    labels = np.zeros((k,) + stack.shape[1:], np.uint8)
    model.eval()
    times = []
    with RssSampler() as rss:
        for i in range(k):
            t = time.perf_counter()
            x = to_model_input(stack[z0 + i:z0 + i + 1], prep, lo, hi, device)
            logits = from_model_output(model(x), stack.shape[1:], prep)
            labels[i] = logits_to_labels(logits)[0].detach().cpu().numpy()
            times.append(time.perf_counter() - t)
    per = float(np.median(times))
    return Row("ct", f"{label}: naive path (batch 1, fp32, autograd on, per slice)", **stats(times),
               peak_rss_mb=rss.peak_mb, **env,
               notes=f"per slice over {k} slices; real path {real_per_slice * 1000:.0f} ms/slice = "
                     f"**×{per / real_per_slice:.1f} faster**",
               extra={"speedup": per / real_per_slice, "naive_per_slice_s": per, "real_per_slice_s": real_per_slice})


def scaling(spec: dict[str, Any]) -> list[Row]:
    """Synthetic int16 512²×N volume: time and process peak RSS (one process per N)."""
    import torch

    from llm4seg.infer import segment

    device = setup_worker(spec)
    model = _model(device)
    base_rss = peak_rss_mb()
    n = spec["slices"]
    vol = np.empty((n, 512, 512), np.int16)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:512, :512]
    body = (((yy - 256) / 200.0) ** 2 + ((xx - 256) / 240.0) ** 2 < 1).astype(np.int16)
    for z in range(n):  # a body-like ellipse in air, with noise; built slice by slice (no float volume)
        vol[z] = body * (40 + (z % 50)) - (1 - body) * 1000 + rng.integers(-30, 30, (512, 512), dtype=np.int16)
    t = time.perf_counter()
    res = segment(vol, model)
    total = time.perf_counter() - t
    return [Row("ct scaling", f"synthetic 512²×{n}", total, total, total, 1, peak_rss_mb=peak_rss_mb(),
                peak_gpu_mb=peak_gpu_mb(), device=str(device), threads=torch.get_num_threads(),
                notes=f"{total / n * 1000:.0f} ms/slice; RSS before the volume {base_rss:.0f} MB",
                extra={"slices": n, "seconds": total, "per_slice_s": total / n, "rss_before_mb": base_rss,
                       "timings": res.timings})]


def scaling_summary(rows: list[Row]) -> Row | None:
    """Least-squares lines through (slices, seconds) and (slices, peak RSS): linear growth check."""
    pts = [(r.extra["slices"], r.median_s, r.peak_rss_mb) for r in rows if r.suite == "ct scaling" and r.median_s]
    if len(pts) < 2:
        return None
    n, t, m = (np.array(v, float) for v in zip(*pts))
    (bt, at), (bm, am) = np.polyfit(n, t, 1), np.polyfit(n, m, 1)
    resid = max(np.max(np.abs(np.polyval((bt, at), n) - t) / t), np.max(np.abs(np.polyval((bm, am), n) - m) / m))
    ideal = 512 * 512 * 3 / 2**20  # int16 input + uint8 labels
    return Row("ct scaling", "fit over slice counts", None, device=rows[0].device, threads=rows[0].threads,
               notes=f"time ≈ {at:.2f} s + {bt * 1000:.0f} ms·N; peak RSS ≈ {am:.0f} MB + {bm:.2f} MB·N "
                     f"(input int16 + labels uint8 = {ideal:.2f} MB/slice); worst deviation from the lines "
                     f"{resid * 100:.1f}%", extra={"time_slope_s": bt, "rss_slope_mb": bm, "max_rel_dev": resid})


if __name__ == "__main__":
    spec = json.loads(sys.argv[1])
    emit(end_to_end(spec) if spec["case"] == "end-to-end" else scaling(spec))
