"""Shared pieces of the benchmark suite: result rows, timing statistics, isolated worker processes."""
from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parent.parent
CT_SAMPLE = REPO / "sample_data" / "ircad17_ct.nii.gz"
CT_FULL = REPO.parent / "shared" / "data" / "ircad17" / "ct.nii.gz"
BUSI = REPO / "sample_data" / "busi"
MARK = "@@BENCH@@"


@dataclass
class Row:
    """One measured case: timing statistics over ``runs`` repeats plus where and with what it ran."""

    suite: str
    case: str
    median_s: float | None
    min_s: float | None = None
    max_s: float | None = None
    runs: int = 0
    peak_rss_mb: float | None = None
    peak_gpu_mb: float | None = None
    device: str = "cpu"
    threads: int = 0
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def stats(times: list[float]) -> dict[str, float]:
    """Median, min and max of a list of seconds."""
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "runs": len(times)}


def repeat(fn: Callable[[], Any], n: int, warmup: int = 1) -> tuple[list[float], list[float]]:
    """Wall-clock and process-CPU seconds of ``n`` calls of ``fn`` after ``warmup`` untimed calls.

    CPU time (all threads) is less sensitive than wall time to other processes sharing the cores.
    """
    for _ in range(warmup):
        fn()
    _sync()
    times, cpu = [], []
    for _ in range(n):
        t, c = time.perf_counter(), time.process_time()
        fn()
        _sync()
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return times, cpu


def _sync() -> None:
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MB): VmHWM, which, unlike ``ru_maxrss``, does not
    inherit the parent's peak across fork + exec."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def peak_gpu_mb() -> float | None:
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return None
    return torch.cuda.max_memory_allocated() / 2**20


def emit(rows: list[Row]) -> None:
    """Worker side: hand rows back to the parent on stdout."""
    print(MARK + json.dumps([r.to_dict() for r in rows]), flush=True)


def run_worker(module: str, spec: dict[str, Any], timeout: float = 900.0, env: dict[str, str] | None = None) -> list[Row]:
    """Run ``python -m benchmarks.<module> '<spec json>'`` in a fresh process (honest peak RSS per case)."""
    cmd = [sys.executable, "-m", f"benchmarks.{module}", json.dumps(spec)]
    full_env = {**os.environ, **(env or {})}
    try:
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout, env=full_env)
    except subprocess.TimeoutExpired:
        return [Row(spec.get("suite", module), spec.get("case", "?"), None, notes=f"timed out after {timeout:.0f} s")]
    rows = []
    for line in proc.stdout.splitlines():
        if line.startswith(MARK):
            rows += [Row(**d) for d in json.loads(line[len(MARK):])]
    if proc.returncode != 0 or not rows:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        rows.append(Row(spec.get("suite", module), spec.get("case", "?"), None,
                        notes=f"failed (exit {proc.returncode}): {tail[0][:160]}"))
    return rows


def setup_worker(spec: dict[str, Any]) -> Any:
    """Worker side: threads and device as the parent asked; returns the torch device."""
    import torch

    from llm4seg.device import resolve_device
    from llm4seg.fastpath import configure_threads

    configure_threads()
    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    return resolve_device(spec.get("device", "auto"))


def fmt_s(s: float | None) -> str:
    if s is None:
        return "—"
    return f"{s * 1000:.0f} ms" if s < 1 else f"{s:.2f} s"


def markdown(rows: list[Row]) -> str:
    """The result table."""
    head = "| suite | case | median | min–max | runs | peak RSS | peak GPU | device | threads | notes |"
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        span = f"{fmt_s(r.min_s)}–{fmt_s(r.max_s)}" if r.min_s is not None else "—"
        rss = f"{r.peak_rss_mb:.0f} MB" if r.peak_rss_mb else "—"
        gpu = f"{r.peak_gpu_mb:.0f} MB" if r.peak_gpu_mb else "—"
        lines.append(f"| {r.suite} | {r.case} | {fmt_s(r.median_s)} | {span} | {r.runs or '—'} | {rss} | {gpu} | "
                     f"{r.device} | {r.threads or '—'} | {r.notes} |")
    return "\n".join(lines)


def environment() -> dict[str, Any]:
    """What the numbers were measured on."""
    import platform

    import torch

    info: dict[str, Any] = {
        "python": platform.python_version(), "torch": torch.__version__, "machine": platform.machine(),
        "cpu": _cpu_name(), "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "torch_threads": torch.get_num_threads(), "cuda": torch.cuda.is_available(),
        "load_avg": os.getloadavg(), "thp_mem_alloc": os.environ.get("THP_MEM_ALLOC_ENABLE", ""),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor()


class RssSampler:
    """Peak resident memory (MB) while the ``with`` block runs, sampled every ``interval`` seconds."""

    def __init__(self, interval: float = 0.002) -> None:
        self.interval, self.peak_mb = interval, 0.0
        self._stop = False
        self._page = os.sysconf("SC_PAGE_SIZE") / 2**20

    def _rss(self) -> float:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self._page

    def _loop(self) -> None:
        while not self._stop:
            self.peak_mb = max(self.peak_mb, self._rss())
            time.sleep(self.interval)

    def __enter__(self) -> "RssSampler":
        import threading

        self.peak_mb = self._rss()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop = True
        self._thread.join()
        self.peak_mb = max(self.peak_mb, self._rss())
