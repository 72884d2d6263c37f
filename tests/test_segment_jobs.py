"""The widget's worker jobs without Qt: device fallback, out-of-memory retry on the CPU, post-processing."""
from __future__ import annotations

import numpy as np
import torch

from _widget_models import ThresholdModel, disk
from llm4seg.events import Log, Progress
from llm4seg.postprocess import PostprocessOptions
from napari_llm4seg import _workers


def _drive(gen):
    events = []
    while True:
        try:
            events.append(next(gen))
        except StopIteration as stop:
            return events, stop.value


class _OOMOnce(ThresholdModel):
    """Raises CUDA out-of-memory on its first batch, as a too-small GPU would."""

    def __init__(self) -> None:
        super().__init__()
        self.devices: list[str] = []

    def to(self, device):  # stays on the CPU here; records where it was sent
        self.devices.append(str(device))
        return self

    def forward(self, x):
        if len(self.devices) == 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return super().forward(x)


def test_unavailable_device_falls_back_to_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    img, mask = disk()
    events, outcome = _drive(_workers.segment_job(img, ThresholdModel(), device="cuda:0"))
    assert isinstance(events[0], Log) and "CUDA" in events[0].text and "CPU" in events[0].text
    assert any(isinstance(e, Progress) for e in events)
    assert outcome.device == "cpu" and np.array_equal(outcome.labels, mask) and outcome.notes


def test_out_of_memory_retries_on_cpu(monkeypatch):
    """The one out-of-memory policy (llm4seg.oom) inside the segmentation: at one slice per batch on the GPU,
    the run moves to the CPU and goes on; the widget and CLI see a warning with topic "fallback"."""
    import llm4seg.infer
    import llm4seg.jobs
    from llm4seg.oom import OomBackoff

    monkeypatch.setattr(llm4seg.jobs, "pick_device", lambda requested: (torch.device("cuda:0"), None))
    monkeypatch.setattr(llm4seg.infer, "OomBackoff", lambda batch, device, **kw: OomBackoff(batch, "cuda:0", **kw))
    model = _OOMOnce()
    img, mask = disk()
    events, outcome = _drive(_workers.segment_job(img, model, device="cuda:0", batch_size=1))
    assert model.devices == ["cuda:0", "cpu"]
    said = [e for e in events if isinstance(e, Log)]
    assert [e.topic for e in said] == ["fallback"] and "falling back to the CPU" in said[0].text
    assert outcome.notes == [said[0].text] and np.array_equal(outcome.labels, mask)


def test_out_of_memory_halves_the_batch_first(monkeypatch):
    import llm4seg.infer
    from llm4seg.oom import OomBackoff

    sizes: list[int] = []

    class Tight(ThresholdModel):
        def forward(self, x):
            sizes.append(len(x))
            if len(x) > 2:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory")
            return super().forward(x)

    monkeypatch.setattr(llm4seg.infer, "OomBackoff", lambda batch, device, **kw: OomBackoff(batch, "cuda:0", **kw))
    vol = np.stack([disk()[0]] * 6)
    events, outcome = _drive(_workers.segment_job(vol, Tight(), device="cpu", volume=True, batch_size=8))
    assert sizes == [6, 4, 2, 2, 2] and outcome.device == "cpu"
    said = [e for e in events if isinstance(e, Log)]
    assert [e.topic for e in said] == ["memory", "memory"] and "2 slice(s) at a time" in said[-1].text
    assert np.array_equal(outcome.labels, np.stack([disk()[1]] * 6))


def test_cancel_and_postprocessing_of_a_z_range():
    from llm4seg.events import CancelToken

    vol = np.stack([disk()[0]] * 4)
    vol[:, 2:4, 2:4] = 200  # a speck
    token = CancelToken()
    token.cancel()
    _, outcome = _drive(_workers.segment_job(vol, ThresholdModel(), device="cpu", volume=True, cancel=token))
    assert outcome.result is None and outcome.labels is None
    opts = PostprocessOptions(min_size=10)
    _, outcome = _drive(_workers.segment_job(vol, ThresholdModel(), device="cpu", volume=True, z_range=(1, 3),
                                             options=opts))
    assert outcome.labels[1:3, 2, 2].sum() == 0 and outcome.result.labels[1:3, 2, 2].all()
    assert outcome.labels[[0, 3]].sum() == 0
    raw, kept = outcome.result.labels[1:3], outcome.labels[1:3]
    assert raw.sum() > 100 and kept.sum() >= raw.sum() - 2 * 2 * 4  # only the 2×2 speck (per slice) removed
    assert np.all(kept <= raw)  # post-processing removed pixels, never added any
    name, error = _workers.load_named("/nonexistent/model.safetensors")
    assert name.endswith("model.safetensors") and isinstance(error, Exception)
