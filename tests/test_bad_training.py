"""Bad inputs to training (``llm4seg.train.fit``, ``llm4seg.finetune`` and the Fine-tune widget): each is
refused with a message naming the problem and the fix, or handled in a stated way; nothing is lost.

No labels, label values the model lacks, shape mismatches, a single pair, cancel in the first step, running
out of memory; also the epoch count of the training log and the frozen LLM layer.
"""
from __future__ import annotations

import types

import numpy as np
import pytest
import torch

from _factories import TINY, TINY_LLAMA, disk_image, one_thread, tiny_model  # noqa: F401 - one_thread: autouse
from llm4seg.checkpoint import ModelCard
from llm4seg.events import CancelToken, Cancelled, Failed, Log, Progress, run_to_end
from llm4seg.finetune import NO_VALIDATION, TrainingPair, finetune, preset_config, summarise
from llm4seg.model import ModelConfig, build_model
from llm4seg.preprocess import Preprocessing
from llm4seg.train import NothingToLearn, SliceSet, TrainConfig, fit, from_arrays
from llm4seg.train import features, loop
from llm4seg.train.loop import NO_VALIDATION_SET
from llm4seg.oom import OomBackoff, OutOfMemory, is_oom
from llm4seg.train.steps import epoch_number

CLASSES = ["background", "lesion"]
PREP = Preprocessing(size=32)


def carded(model=None):
    model = model if model is not None else tiny_model()
    model.card = ModelCard(name="tiny", classes=list(CLASSES), model=model.config.to_dict(),
                           preprocessing=PREP.to_dict())
    return model.eval()


def pairs(n: int = 3) -> list[TrainingPair]:
    return [TrainingPair(*disk_image(32, 32, seed=i), name=f"p{i}") for i in range(n)]


def slices(n: int = 4) -> SliceSet:
    return from_arrays([disk_image(32, 32, seed=i) for i in range(n)], PREP, CLASSES)


def state(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def same(model, before) -> bool:
    return all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def collect(gen):
    events: list = []
    return run_to_end(gen, events.append), events


def warnings(events) -> list[str]:
    return [e.text for e in events if isinstance(e, Log) and e.level == "warning"]


def oom_after(model, failures: int, sizes: list[int]) -> None:
    """Make ``model``'s forward raise CUDA's out-of-memory error on its first ``failures`` calls (a bound
    method: the copy that fine-tuning trains gets one bound to itself)."""

    def flaky(self, x, *a, **k):
        sizes.append(len(x))
        if len(sizes) <= failures:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return type(self).forward(self, x, *a, **k)

    model.forward = types.MethodType(flaky, model)


@pytest.fixture
def on_a_gpu(monkeypatch):
    """Training believes it started on a GPU (this machine has none), so the CPU fallback is visible."""
    monkeypatch.setattr(loop, "OomBackoff", lambda batch, device, **kw: OomBackoff(batch, torch.device("cuda", 0), **kw))


def test_no_labels_is_refused():
    img, mask = disk_image(32, 32)
    empty = [TrainingPair(img, np.zeros_like(mask), "empty")]
    with pytest.raises(NothingToLearn, match="no labelled image to learn from: paint labels in a Labels layer"):
        run_to_end(finetune(carded(), summarise(empty, CLASSES), preset_config("thorough", steps=2)))
    data = from_arrays([(img, np.zeros_like(mask))] * 2, PREP, CLASSES)
    with pytest.raises(NothingToLearn, match=r"no labelled object in the 2 training .* label at least one object"):
        run_to_end(fit(carded(), data, None, TrainConfig(steps=2)))


def test_label_value_the_model_lacks_names_the_value_and_the_classes():
    img, mask = disk_image(32, 32)
    plan = summarise([TrainingPair(img, mask * 3, "three")], CLASSES)
    msg = ("three: label value 3 but the model knows 1 class (1 = lesion): repaint those pixels with the model's "
           "values (0 = background, 1 = lesion) or fine-tune a model with 3 classes")
    assert plan.reason() == msg
    with pytest.raises(NothingToLearn, match=r"label value 3 but the model knows 1 class \(1 = lesion\)"):
        run_to_end(finetune(carded(), plan, preset_config("thorough", steps=2)))
    data = slices(2)
    bad = SliceSet(data.images, data.labels * 3, data.names, data.groups, CLASSES, PREP)
    with pytest.raises(ValueError, match=r"label value 3 in the training data, but the model has 1 class\(es\) "
                                         r"\(1 = lesion\): relabel"):
        run_to_end(fit(carded(), bad, None, TrainConfig(steps=2)))
    inferred = from_arrays([(img, mask * 3)], PREP)  # class names from the values: the model does not match
    with pytest.raises(ValueError, match="the model predicts 1 class.* but the data has 3"):
        run_to_end(fit(carded(), inferred, None, TrainConfig(steps=2)))


def test_image_and_labels_of_different_shapes_name_both():
    img, mask = disk_image(32, 32)
    plan = summarise([TrainingPair(img, mask[:16], "half")], CLASSES)
    assert plan.reason() == ("half: labels of shape 16 × 32 do not match the image's 32 × 32: pair the image "
                             "with labels of its own shape (a Labels layer created for that image)")
    with pytest.raises(NothingToLearn, match="16 × 32 do not match the image's 32 × 32"):
        run_to_end(finetune(carded(), plan, preset_config("thorough", steps=2)))
    with pytest.raises(ValueError, match=r"labels of shape \(16, 32\) do not match .* \(32, 32\)"):
        from_arrays([(img, mask[:16])], PREP, CLASSES)
    data = slices(2)
    bad = SliceSet(data.images, data.labels[:, :16], data.names, data.groups, CLASSES, PREP)
    with pytest.raises(ValueError, match=r"training images \(2 × 32 × 32\) and labels \(2 × 16 × 32\) do not "):
        run_to_end(fit(carded(), bad, None, TrainConfig(steps=2)))


def test_single_pair_trains_without_validation_and_says_so(tmp_path):
    outcome, events = collect(finetune(carded(), summarise(pairs(1), CLASSES), preset_config("thorough", steps=2)))
    assert warnings(events) == [NO_VALIDATION]  # said once, the precise way
    assert outcome.result.status == "done" and outcome.result.steps == 2 and outcome.val_items == 0
    data = slices(1)
    result, events = collect(fit(carded(), data, data.subset([]), TrainConfig(steps=2, batch_size=2),
                                 out=tmp_path / "one.safetensors"))
    assert warnings(events) == [NO_VALIDATION_SET] and result.status == "done"
    assert result.steps == 2 and result.checkpoint is not None and result.checkpoint.is_file()


def test_cancel_during_the_first_step_changes_nothing_and_writes_nothing(tmp_path):
    model = carded()
    before, card = state(model), model.card
    token = CancelToken()
    hook = model.Conv_1x1.register_forward_hook(lambda *a: token.cancel())  # cancel arrives mid-step
    result, events = collect(fit(model, slices(), None, TrainConfig(steps=20, batch_size=2), token,
                                 out=tmp_path / "m.safetensors"))
    assert isinstance(events[-1], Cancelled) and result.steps == 0 and result.checkpoint is None
    assert "the weights are unchanged" in events[-2].text
    assert same(model, before) and model.card is card  # BatchNorm statistics included
    assert not list(tmp_path.iterdir())
    token = CancelToken()
    outcome, events = collect(finetune(model, summarise(pairs(), CLASSES), preset_config("thorough"), cancel=token))
    hook.remove()
    assert isinstance(events[-1], Cancelled) and outcome.result.steps == 0 and same(model, before)


def test_out_of_memory_halves_the_batch_then_falls_back_to_the_cpu(on_a_gpu):
    cfg = ModelConfig(**TINY, llm="tiny-llama:0", llm_init="random", llm_arch="llama", llm_config=dict(TINY_LLAMA))
    model = carded(build_model(cfg, load_llm=False))
    layer = {k: v.clone() for k, v in model.frozen_layer_state().items()}
    sizes: list[int] = []
    oom_after(model, 3, sizes)
    result, events = collect(fit(model, slices(), None, TrainConfig(steps=3, batch_size=4)))
    told = warnings(events)
    assert "micro-batches of 2" in told[1] and "micro-batches of 1" in told[2] and "batch stays 4" in told[2]
    assert told[3] == ("out of memory on cuda:0 even one item at a time: falling back to the CPU (slower) "
                       "with batch 4")
    assert result.status == "done" and result.steps == 3
    assert sizes == [4, 2, 1, 4, 4, 4]  # the step retried smaller, then every step at the full batch on the CPU
    after = model.frozen_layer_state()
    assert all(torch.equal(layer[k], after[k]) for k in layer)  # the LLM layer stays bit-identical
    base = carded()
    base_before = state(base)
    sizes.clear()
    oom_after(base, 1, sizes)  # the fine-tune path goes through the same back-off
    outcome, events = collect(finetune(base, summarise(pairs(), CLASSES), preset_config("thorough", steps=2)))
    assert outcome.result.status == "done" and any("micro-batches of 2" in t for t in warnings(events))
    assert same(base, base_before) and not same(outcome.model, base_before)  # the copy trained, not the base


def test_out_of_memory_everywhere_fails_with_a_message_and_keeps_the_weights(on_a_gpu):
    model = carded()
    before = state(model)
    oom_after(model, 10**6, [])
    result, events = collect(fit(model, slices(), None, TrainConfig(steps=3, batch_size=2)))
    assert isinstance(events[-1], Failed) and result.status == "failed" and result.steps == 0
    assert events[-1].reason.startswith("out of memory on cpu even one item at a time (training): train at a smaller input")
    assert same(model, before)


def test_out_of_memory_while_caching_features_backs_off_then_uses_the_cpu(monkeypatch):
    """The quick preset caches encoder features first: out of memory there halves the batch, then moves the
    caching to the CPU, each time telling the user; the cached features are those of an unhindered run."""
    calls: list[tuple[int, str]] = []
    real = features._encode

    def flaky(model, data, items, symmetries, device):
        calls.append((len(items), device.type))
        if len(calls) <= 3:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB")
        return real(model, data, items, symmetries, torch.device("cpu"))  # this machine's "GPU" is its CPU

    model, data = carded(), slices(5)
    expected = run_to_end(features.build_feature_cache(model, data, versions=2, batch_size=4), lambda e: None)
    monkeypatch.setattr(features, "OomBackoff",
                        lambda batch, device, **kw: OomBackoff(batch, torch.device("cuda", 0), **kw))
    monkeypatch.setattr(features, "_encode", flaky)
    events: list = []
    cache = run_to_end(features.build_feature_cache(model, data, versions=2, batch_size=4), events.append)
    assert calls == [(4, "cuda"), (2, "cuda"), (1, "cuda"), (4, "cpu"), (4, "cpu"), (2, "cpu")]
    assert [t.split(":")[0] for t in warnings(events)] == ["out of memory on cuda"] * 3
    assert "falling back to the CPU (slower) with batch 4" in warnings(events)[-1]
    assert "caching features 2 item(s) at a time" in warnings(events)[0]
    assert torch.equal(cache.bottleneck, expected.bottleneck) and torch.equal(cache.labels, expected.labels)
    assert events[-1].done == events[-1].total == 10  # progress reached every item × version


def test_out_of_memory_while_caching_on_the_cpu_fails_the_run_cleanly(monkeypatch):
    def always(*args):
        raise MemoryError()

    monkeypatch.setattr(features, "_encode", always)
    model = carded()
    before = state(model)
    cfg = TrainConfig(steps=2, batch_size=2, train="decoder", cache_features=True)
    result, events = collect(fit(model, slices(), None, cfg))
    assert isinstance(events[-1], Failed) and result.status == "failed" and result.steps == 0
    assert events[-1].reason.startswith("out of memory on cpu even one item at a time (caching)")
    assert "the weights are unchanged" in events[-1].reason and same(model, before)


def test_oom_policy():
    policy = OomBackoff(8, "cuda:0")
    steps = [policy.on_oom() for _ in range(7)]
    assert [(b, d.type) for b, d in steps] == [(4, "cuda"), (2, "cuda"), (1, "cuda"), (8, "cpu"), (4, "cpu"),
                                                (2, "cpu"), (1, "cpu")]
    with pytest.raises(OutOfMemory, match="use the quick preset"):
        policy.on_oom()
    cpu = OomBackoff(3, "cpu")
    assert cpu.on_oom() == (1, torch.device("cpu")) and "micro-batches of 1" in cpu.message
    with pytest.raises(OutOfMemory):
        cpu.on_oom()
    seg = OomBackoff(2, "cuda:0", task="segmenting")
    assert seg.on_oom()[0] == 1 and seg.message == "out of memory on cuda:0: segmenting 1 slice(s) at a time"
    with pytest.raises(ValueError, match="task"):
        OomBackoff(2, "cpu", task="dreaming")
    assert is_oom(torch.cuda.OutOfMemoryError("CUDA out of memory")) and is_oom(MemoryError())
    assert is_oom(RuntimeError("MPS backend out of memory")) and not is_oom(RuntimeError("shape mismatch"))


def test_epoch_in_the_log_counts_steps_as_the_schedule_does():
    per_epoch = TrainConfig(batch_size=8).steps_per_epoch(362)
    assert per_epoch == 46 and epoch_number(92, per_epoch) == 2 and epoch_number(93, per_epoch) == 3
    assert epoch_number(1, per_epoch) == 1 and epoch_number(46, per_epoch) == 1
    result, events = collect(fit(carded(), slices(5), None, TrainConfig(epochs=2, batch_size=2, augment=False)))
    lines = [e.text for e in events if isinstance(e, Log) and "(epoch" in e.text]
    assert result.steps == 6 and [line.split(":")[0] for line in lines] == ["step 3/6 (epoch 1)", "step 6/6 (epoch 2)"]


# --- the Fine-tune widget: a notification and the status line, buttons usable again, layers untouched -------

try:
    import napari  # noqa: F401
    import pytestqt  # noqa: F401
    GUI = ""
except ImportError as exc:
    GUI = f"the widget needs napari and pytest-qt ({exc})"


@pytest.fixture
def widgets(make_napari_viewer, monkeypatch, qtbot, tmp_path):
    """A viewer with the Segment widget holding a tiny model, the Fine-tune widget and two labelled pairs."""
    from napari.utils.notifications import notification_manager
    from qtpy.QtCore import QSettings

    from napari_llm4seg import _workers
    from napari_llm4seg._finetune_widget import FineTuneWidget
    from napari_llm4seg._segment_widget import SegmentWidget

    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(tmp_path / "settings"))
    model = carded()
    monkeypatch.setattr(_workers, "load_job", lambda name: model)
    viewer = make_napari_viewer()
    seg = SegmentWidget(viewer)
    viewer.window.add_dock_widget(seg, name="LLM4Seg: Segment")
    qtbot.waitUntil(lambda: not seg.busy and seg.model is model, timeout=60_000)
    ft = FineTuneWidget(viewer)
    viewer.window.add_dock_widget(ft, name="LLM4Seg: Fine-tune")
    ft.options.preset.setCurrentIndex(ft.options.preset.findData("thorough"))
    ft.options.steps.setValue(3)
    layers = []
    for p in pairs(2):
        viewer.add_image(p.image, name=p.name)
        layers.append(viewer.add_labels(p.labels, name=f"{p.name} labels"))
    start = len(notification_manager.records)
    notes = lambda: [(str(n.severity), str(n.message)) for n in notification_manager.records[start:]]  # noqa: E731
    return ft, seg, model, layers, notes


def untouched(layers, before) -> bool:
    return all(layer.data is data and np.array_equal(layer.data, copy) for layer, (data, copy) in zip(layers, before))


@pytest.mark.skipif(bool(GUI), reason=GUI)
def test_widget_refuses_no_labels_with_a_message(widgets):
    ft, seg, model, layers, notes = widgets
    for layer in layers:
        layer.data = np.zeros_like(layer.data)
    before = [(layer.data, layer.data.copy()) for layer in layers]
    assert not ft.run() and ft._job is None
    reason = "no labelled image to learn from: paint labels in a Labels layer paired with an image"
    assert notes()[-1] == ("warning", f"LLM4Seg fine-tune: nothing to learn from: {reason}.")
    assert ft.bar.status.text() == f"Not started: {reason}."
    assert ft.run_button.isEnabled() and ft.options.isEnabled() and untouched(layers, before)


@pytest.mark.skipif(bool(GUI), reason=GUI)
def test_widget_out_of_memory_warns_then_fails_cleanly(widgets, qtbot, on_a_gpu):
    ft, seg, model, layers, notes = widgets
    before, weights = [(layer.data, layer.data.copy()) for layer in layers], state(model)
    oom_after(model, 10**6, [])
    assert ft.run()
    qtbot.waitUntil(lambda: not ft.busy, timeout=60_000)
    said = notes()
    assert ("warning", "LLM4Seg fine-tune: out of memory on cuda:0 even one item at a time: falling back to the "
                       "CPU (slower) with batch 4.") in said
    assert said[-1][0] == "error" and "out of memory on cpu even one item at a time" in said[-1][1]
    assert "use the quick preset" in ft.bar.status.text() and ft.outcome is None
    assert ft.run_button.isEnabled() and not ft.cancel_button.isEnabled() and ft.options.isEnabled()
    assert untouched(layers, before) and seg.model is model and same(model, weights)


def test_events_say_their_phase_and_topic_for_code():
    """GUIs act on ``Progress.phase`` and ``Log.topic``, never on the wording of a message."""
    from llm4seg.events import PHASES, TOPICS

    model = tiny_model()
    data = from_arrays([disk_image(32, 32, seed=i) for i in range(2)], Preprocessing(size=32))
    config = TrainConfig.quick(steps=2, crop=None, seed=0)
    events = list(fit(model, data, None, config, CancelToken()))
    phases = {e.phase for e in events if isinstance(e, Progress)}
    assert phases == {"caching", "training"} and phases <= set(PHASES)
    topics = [e.topic for e in events if isinstance(e, Log) and e.level == "warning"]
    assert topics == ["no-validation"] and set(topics) <= set(TOPICS)
