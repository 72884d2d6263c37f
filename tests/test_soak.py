"""Soak: one viewer, 50 rounds of segment + cancel with a tiny network; process memory must level off.

Soak tests run first in the session (tests/conftest.py). Run it alone with ``pytest -s tests/test_soak.py``
to see the RSS trend.
"""
from __future__ import annotations

import ctypes
import gc
import time
import weakref

import numpy as np
import pytest


import torch  # noqa: E402

from _factories import tiny_model  # noqa: E402
from _widget_models import disk  # noqa: E402
from llm4seg.checkpoint import ModelCard  # noqa: E402
from llm4seg.preprocess import Preprocessing  # noqa: E402
from napari_llm4seg import _workers  # noqa: E402
from test_segment_widget import (  # noqa: E402,F401 - shared fixtures
    TIMEOUT, _isolated_settings, labels_layers, make_widget, run_and_wait,
)

pytestmark = pytest.mark.gui
ROUNDS = 50
MiB = 1024 * 1024


def rss_bytes() -> int:
    """Resident set size of this process (psutil, else /proc/self/status), after glibc hands freed memory
    back to the system (less allocator noise: worker threads come and go with their malloc arenas)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass
    try:
        import psutil
    except ImportError:
        with open("/proc/self/status") as f:
            kib = next(line.split()[1] for line in f if line.startswith("VmRSS:"))
        return int(kib) * 1024
    return int(psutil.Process().memory_info().rss)


@pytest.fixture
def one_thread_in_workers(monkeypatch):
    """One torch thread in the segmentation workers: with other jobs busy on the CPU, two spinning threads per
    run make it many times slower. Set in the worker itself (a pooled thread keeps its own thread count)."""
    segment_job, before = _workers.segment_job, torch.get_num_threads()

    def single_threaded(*args, **kwargs):
        torch.set_num_threads(1)
        return (yield from segment_job(*args, **kwargs))

    monkeypatch.setattr(_workers, "segment_job", single_threaded)
    yield
    torch.set_num_threads(before)


@pytest.mark.slow
@pytest.mark.soak
def test_segment_and_cancel_memory_levels_off(make_widget, qtbot, one_thread_in_workers):
    net = tiny_model(seed=1)
    prep = Preprocessing(size=None).to_dict()
    net.card = ModelCard(name="tiny", classes=["background", "lesion"], preprocessing=prep)
    viewer, widget = make_widget(net)
    image = viewer.add_image(np.stack([disk(256, 256)[0]] * 12), name="vol")  # 768 KiB; labels as much
    gc.collect()  # garbage left by earlier tests goes now, not in the middle of the soak
    started, rss = time.perf_counter(), [rss_bytes()]
    for _ in range(ROUNDS):
        run_and_wait(qtbot, widget, image)
        assert widget.run(image)
        widget.cancel()
        qtbot.waitUntil(lambda: not widget.busy, timeout=TIMEOUT)
        assert widget.last_outcome.result is None and widget.run_button.isEnabled()
        rss.append(rss_bytes())
    seconds = time.perf_counter() - started
    assert [layer.name for layer in labels_layers(viewer)] == ["vol labels"]
    half = ROUNDS // 2
    slope = growth_per_round(rss[half:]) / MiB
    mib = [f"{r / MiB:.1f}" for r in (rss[0], rss[1], rss[half], rss[ROUNDS])]
    print(f"\nsoak: {ROUNDS} rounds of segment + cancel in {seconds:.1f} s; RSS MiB before / after round 1 / "
          f"{half} / {ROUNDS}: {' / '.join(mib)}; growth over rounds {half}-{ROUNDS}: {slope * 1024:+.0f} KiB "
          "per round (median of pairwise slopes)")
    # a copy of the input or of the labels kept per run grows by 768 KiB per round (both: 1.5 MiB)
    assert slope < 0.375, f"memory keeps growing with every run: {slope * 1024:+.0f} KiB per round"


def growth_per_round(series: list[int]) -> float:
    """Theil-Sen slope (bytes per round): the median of all pairwise slopes, so that a few rounds where RSS
    swings (a worker's arena, a late garbage collection) do not decide the verdict."""
    slopes = [(series[j] - series[i]) / (j - i) for i in range(len(series)) for j in range(i + 1, len(series))]
    return float(np.median(slopes))


def test_function_jobs_do_not_keep_their_arguments(make_widget, qtbot):
    """napari keeps every worker of a window alive (its task list); the arguments must not stay with them."""
    make_widget()  # a window, so that napari registers the worker
    data = np.zeros((256, 256), np.uint8)
    ref, done = weakref.ref(data), []
    worker = _workers.start(np.count_nonzero, data, connect={"returned": done.append})
    del data
    qtbot.waitUntil(lambda: done == [0] and not worker.is_running, timeout=TIMEOUT)
    gc.collect()
    assert ref() is None
