"""Run the benchmark suite: ``python -m benchmarks [--quick] [--only NAME[,NAME]] [--device D] [--threads N]``.

Suites (each case in a fresh worker process): ``forward``, ``ct``, ``scaling``, ``llm``, ``finetune``, ``fewshot``
(``benchmarks.fewshot --quick``: Dice after fine-tuning on a few labelled items, when ``../shared/data`` is there), ``gui``;
``compile`` (torch.compile against the fused path, a few minutes) runs only when named with ``--only``.
Prints a Markdown table and writes ``bench-results/bench-<time>.json`` (and ``latest.json``).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import compile as compile_suite
from . import ct, finetune, forward, llm_load
from .common import REPO, Row, environment, markdown, run_worker

SUITES = ("forward", "ct", "scaling", "llm", "finetune", "fewshot", "gui")
OPT_IN = ("compile",)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer repeats and smaller sizes (a smoke run)")
    p.add_argument("--only", action="append", default=[], metavar="NAME",
                   help=f"run only these suites (repeatable or comma-separated): {', '.join(SUITES + OPT_IN)}")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N")
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: the CPUs this process may use)")
    p.add_argument("--out", default=str(REPO / "bench-results"), help="folder for the JSON results")
    p.add_argument("--no-thp", action="store_true",
                   help="do not set THP_MEM_ALLOC_ENABLE=1 for the workers (transparent huge pages for big tensors)")
    return p.parse_args(argv)


def _gui_rows(quick: bool, device: str, env: dict[str, str]) -> list[Row]:
    """Worst event-loop stall while the Segment widget segments the CT sample (``benchmarks/gui_stall.py``)."""
    if importlib.util.find_spec("benchmarks.gui_stall") is None:
        return [Row("gui", "event-loop stall", None, notes="skipped: benchmarks/gui_stall.py not present")]
    if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        return [Row("gui", "event-loop stall", None, notes="skipped: no display (run under xvfb-run, as make bench does)")]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "stall.json"
        cmd = [sys.executable, "-m", "benchmarks.gui_stall", "--json", str(out), "--device", device]
        if quick:
            cmd += ["--slices", "16"]
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900, env={**os.environ, **env})
        if not out.is_file():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            return [Row("gui", "event-loop stall", None, notes=f"failed (exit {proc.returncode}): {tail[0][:160]}")]
        r = json.loads(out.read_text())
    first = r.get("new_layer") or r
    net = first.get("during_network") or {}
    n = first.get("slices", r.get("shape", ["?"])[0])
    seconds = first.get("run_seconds")
    common = dict(device=str(r.get("device", device)), extra=r)
    rows = [Row("gui", f"worst event-loop stall while segmenting the CT sample ({n} slices, {r.get('checkpoint', '?')})",
                r.get("worst_stall_during_network_ms", r.get("worst_stall_ms", 0.0)) / 1000.0,
                notes=f"p99 {net.get('p99_ms', float('nan')):.0f} ms, {net.get('over_100ms', '?')} stalls > 100 ms, "
                      f"10 ms QTimer probe under xvfb; job {seconds if seconds is not None else '?'} s", **common)]
    if "worst_stall_ms" in r and "worst_stall_during_network_ms" in r:
        rows.append(Row("gui", "worst stall incl. creating/updating and drawing the Labels layer",
                        r["worst_stall_ms"] / 1000.0, notes="napari's add_labels / layer refresh", **common))
    return rows


def _fewshot_rows(env: dict[str, str]) -> list[Row]:
    """``python -m benchmarks.fewshot --quick`` in a fresh process: one row per (task, base, k)."""
    from .fewshot_tasks import DATA

    if not (DATA / "isic").is_dir():
        return [Row("fewshot", "few-shot fine-tuning", None, notes=f"skipped: {DATA} has no isic/ (see its README)")]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "fewshot.json"
        proc = subprocess.run([sys.executable, "-m", "benchmarks.fewshot", "--quick", "--json", str(out)], cwd=REPO,
                              capture_output=True, text=True, timeout=1800, env={**os.environ, **env})
        if not out.is_file():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            return [Row("fewshot", "few-shot fine-tuning", None, notes=f"failed (exit {proc.returncode}): {tail[0][:160]}")]
        table = json.loads(out.read_text())["summary"]
    return [Row("fewshot", f"{r['task']}: {r['k']} labelled, from {r['base']}", r["train_s"][0] if r["k"] else None,
                notes=f"Dice {r['dice'][0]:.3f}, IoU {r['iou'][0]:.3f} on the other items (quick preset)")
            for r in table]


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    only = {name for item in args.only for name in item.split(",") if name}
    unknown = only - set(SUITES + OPT_IN)
    if unknown:
        print(f"unknown suite(s) {sorted(unknown)}: choose from {', '.join(SUITES + OPT_IN)}", file=sys.stderr)
        return 2
    want = lambda name: name in only or (not only and name not in OPT_IN)  # noqa: E731
    env = {} if args.no_thp else {"THP_MEM_ALLOC_ENABLE": os.environ.get("THP_MEM_ALLOC_ENABLE", "1")}
    env["HF_HUB_OFFLINE"] = "1"
    os.environ.update(env)
    info = environment()
    gpu = bool(info["cuda"]) and args.device != "cpu"
    common = {"device": args.device, "threads": args.threads}
    started = time.perf_counter()
    print(f"# llm4seg benchmarks{' (quick)' if args.quick else ''}: {info['cpu']}, {info['cpus_usable']} CPUs, "
          f"torch {info['torch']} ({info['torch_threads']} threads), GPU: {info.get('gpu', 'none')}, "
          f"load average {' '.join(f'{v:.2f}' for v in info['load_avg'])}", flush=True)
    rows: list[Row] = []

    def add(new: list[Row]) -> None:
        rows.extend(new)
        now = time.perf_counter()
        for r in new:
            print(f"  [{now - started:4.0f} s] {r.suite}: {r.case}: "
                  f"{r.median_s if r.median_s is None else round(r.median_s, 4)} s {r.notes}", flush=True)

    if want("forward"):
        for spec in forward.specs(args.quick):
            add(run_worker("forward", {**spec, **common}, env=env))
        if not args.no_thp and not args.quick:  # what transparent huge pages buy
            spec = {"suite": "forward", "model": "smollm2", "batches": [1], "repeats": 5, "modes": ["fast"]}
            off = run_worker("forward", {**spec, **common}, env={**env, "THP_MEM_ALLOC_ENABLE": "0"})
            for r in off:
                r.case += " (THP_MEM_ALLOC_ENABLE=0)"
            add(off)
    for name in ("ct", "scaling"):
        if want(name):
            for spec in ct.specs(args.quick, gpu):
                if (spec["case"] == "scaling") == (name == "scaling"):
                    add(run_worker("ct", {**spec, **common}, env=env))
    if want("scaling"):
        summary = ct.scaling_summary(rows)
        if summary is not None:
            add([summary])
    if want("llm"):
        prep = subprocess.run([sys.executable, "-m", "benchmarks.llm_load", "--prepare"] + (["--quick"] if args.quick else []),
                              cwd=REPO, capture_output=True, text=True)
        if prep.returncode != 0:
            print(f"  could not write the synthetic checkpoint: {prep.stderr.strip()[-300:]}", flush=True)
        elif float(prep.stdout.split()[-1]):
            print(f"  (wrote the synthetic checkpoint {prep.stdout.split()[0]} in {prep.stdout.split()[-1]} s)", flush=True)
        for spec in llm_load.specs(args.quick):
            add(llm_load.merge([run_worker("llm_load", {**spec, **common}, env=env) for _ in range(spec["processes"])]))
        cmp_row = llm_load.compare(rows)
        if cmp_row is not None:
            add([cmp_row])
    if want("finetune"):
        why = finetune.available()
        if why is None:
            for spec in finetune.specs(args.quick):
                add(run_worker("finetune", {**spec, **common}, env=env))
        else:
            print(f"  note: quick fine-tune row left out: {why}", flush=True)
    if want("fewshot"):
        add(_fewshot_rows(env))
    if want("gui"):
        add(_gui_rows(args.quick, args.device, env))
    if want("compile"):
        for spec in compile_suite.specs(args.quick):
            add(run_worker("compile", {**spec, **common}, env=env))
    total = time.perf_counter() - started
    table = markdown(rows)
    print("\n" + table + "\n")
    print(f"total {total:.0f} s; load average now {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    payload = {"environment": info, "quick": args.quick, "seconds": total, "load_avg_end": os.getloadavg(),
               "rows": [r.to_dict() for r in rows], "markdown": table}
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for path in (out / f"bench-{stamp}.json", out / "latest.json"):
        path.write_text(json.dumps(payload, indent=1, default=str))
    print(f"results: {out / f'bench-{stamp}.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
