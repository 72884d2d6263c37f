"""The training loop: events, determinism, resume, cancel, divergence, frozen parts, checkpoints."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from _factories import TINY, TINY_LLAMA, disk_image, one_thread, tiny_model  # noqa: F401 - one_thread: autouse
from llm4seg.checkpoint import load_checkpoint, read_card
from llm4seg.events import CancelToken, Cancelled, Failed, Log, Metric, Progress, run_to_end
from llm4seg.model import ModelConfig, build_model
from llm4seg.preprocess import Preprocessing
from llm4seg.train import TrainConfig, fit, from_arrays, load_state, split, state_path_for


@pytest.fixture(scope="module")
def data():
    pairs = [disk_image(48, 48, seed=i) for i in range(10)]
    return split(from_arrays(pairs, Preprocessing(size=32)), 0.2, seed=0)


def tiny_llm_model(seed: int = 0):
    cfg = ModelConfig(**TINY, llm="tiny-llama:0", llm_init="random", llm_arch="llama", llm_config=dict(TINY_LLAMA))
    return build_model(cfg, load_llm=False, seed=seed)


def weights(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def run(model, train, val, cfg, **kw):
    events = []
    result = run_to_end(fit(model, train, val, cfg, **kw), events.append)
    return result, events


def test_events_metrics_and_loss_goes_down(data, tmp_path):
    train, val = data
    model = tiny_model()
    cfg = TrainConfig(steps=30, batch_size=4, lr=0.05, val_every=10)
    result, events = run(model, train, val, cfg, out=tmp_path / "m.safetensors")
    assert not isinstance(events[-1], (Cancelled, Failed)) and result.status == "done"
    names = {e.name for e in events if isinstance(e, Metric)}
    assert names == {"loss", "lr", "val_iou", "val_dice"}
    progress = [e for e in events if isinstance(e, Progress)]
    assert progress[-1].done == progress[-1].total == 30
    assert any(isinstance(e, Log) and "val IoU" in e.text for e in events)
    losses = [v for _, v in result.history["loss"]]
    assert np.mean(losses[-5:]) < np.mean(losses[:5])
    lrs = [v for _, v in result.history["lr"]]
    assert lrs[0] == pytest.approx(0.05) and lrs[-1] < lrs[0]  # poly decay
    # the checkpoint holds the best weights by validation IoU, with provenance and metrics in its card
    card = read_card(result.checkpoint)
    assert card.training["preset"] == "paper" and card.training["best_step"] == result.best_step
    assert card.metrics["val_iou"] == pytest.approx(max(v for _, v in result.history["val_iou"]))
    assert card.classes == ["background", "foreground"] and card.preprocessing["size"] == 32
    loaded = load_checkpoint(result.checkpoint, device="cpu")
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    assert not model.training and all(p.requires_grad for p in model.parameters())


def test_paper_preset_defaults():
    cfg = TrainConfig.paper()
    assert (cfg.optimizer, cfg.lr, cfg.momentum, cfg.weight_decay, cfg.batch_size) == ("sgd", 0.01, 0.9, 1e-4, 8)
    assert cfg.schedule == "poly" and cfg.poly_power == 0.9 and cfg.augment and cfg.train == "all"
    assert cfg.total_steps(80) == 300 * 10
    assert cfg.lr_at(0, 100) == pytest.approx(0.01) and cfg.lr_at(50, 100) == pytest.approx(0.01 * 0.5 ** 0.9)
    quick = TrainConfig.quick()
    assert (quick.optimizer, quick.steps, quick.batch_size, quick.train) == ("adamw", 100, 4, "decoder")


def test_deterministic_with_a_seed(data):
    train, val = data
    cfg = TrainConfig(steps=6, batch_size=4, lr=0.05, seed=3)
    a, b = tiny_model(seed=1), tiny_model(seed=1)
    ra, _ = run(a, train, None, cfg)
    rb, _ = run(b, train, None, cfg)
    assert ra.history["loss"] == rb.history["loss"]
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k
    c = tiny_model(seed=1)
    rc, _ = run(c, train, None, cfg.replace(seed=4))
    assert rc.history["loss"] != ra.history["loss"]


def test_jitter_trains_deterministically_and_differently_from_symmetries_alone(data):
    train, _ = data
    cfg = TrainConfig(steps=4, batch_size=4, lr=0.05, seed=3, jitter=1.0)
    a, b, c = tiny_model(seed=1), tiny_model(seed=1), tiny_model(seed=1)
    ra, rb = run(a, train, None, cfg)[0], run(b, train, None, cfg)[0]
    rc = run(c, train, None, cfg.replace(jitter=0.0))[0]
    assert ra.history["loss"] == rb.history["loss"]
    assert ra.history["loss"] != rc.history["loss"]
    with pytest.raises(ValueError, match="cache_features"):
        TrainConfig.quick(jitter=1.0)


@pytest.mark.parametrize("preset", ["paper", "quick"])
def test_resume_continues_exactly(data, tmp_path, preset):
    train, _ = data
    cfg = TrainConfig.from_preset(preset, steps=6, batch_size=4, seed=0, crop=16 if preset == "quick" else None)
    full = tiny_model()
    run(full, train, None, cfg)
    part = tiny_model()
    token = CancelToken()
    out = tmp_path / "part.safetensors"
    events = []

    def on_event(event):
        events.append(event)
        if isinstance(event, Metric) and event.name == "loss" and event.step == 3:
            token.cancel()

    stopped = run_to_end(fit(part, train, None, cfg, token, out=out), on_event)
    assert isinstance(events[-1], Cancelled) and stopped.steps == 3 and stopped.status == "cancelled"
    state = load_state(state_path_for(out))
    assert state.step == 3 and state.optimizer["state"]  # optimiser tensors were saved
    resumed = load_checkpoint(out, device="cpu")
    result, _ = run(resumed, train, None, cfg, out=out, resume=state)
    assert result.steps == 6 and [s for s, _ in result.history["loss"]] == list(range(1, 7))
    for k, v in full.state_dict().items():
        assert torch.allclose(resumed.state_dict()[k].float(), v.float(), atol=1e-6), k


def test_cancel_during_a_step_drops_that_step(data):
    train, val = data
    model = tiny_model()
    token = CancelToken()
    calls = {"n": 0}

    def third_step(*_):
        calls["n"] += 1
        if calls["n"] == 3:
            token.cancel()  # cancel arrives in the middle of the third step

    hook = model.Conv_1x1.register_forward_hook(third_step)
    result, events = run(model, train, None, TrainConfig(steps=50, batch_size=4), cancel=token)
    hook.remove()
    assert result.status == "cancelled" and result.steps == 2
    assert isinstance(events[-1], Cancelled) and result.status == "cancelled"
    assert all(torch.isfinite(v.float()).all() for v in model.state_dict().values())
    assert all(p.requires_grad for p in model.parameters()) and not model.training


def test_cancel_while_caching_features(data):
    train, val = data
    token = CancelToken()
    token.cancel()
    result, events = run(tiny_model(), train, val, TrainConfig.quick(steps=5), cancel=token)
    assert result.status == "cancelled" and result.steps == 0 and isinstance(events[-1], Cancelled)


def test_diverging_loss_fails_and_keeps_the_last_good_weights(data):
    train, _ = data
    model = tiny_model()
    calls = {"n": 0}

    def poison(module, inputs, output):
        calls["n"] += 1
        return output * float("nan") if calls["n"] == 3 else output

    token = CancelToken()
    cfg = TrainConfig(steps=10, batch_size=4)
    run_to_end(fit(model, train, None, cfg, token),
               lambda e: token.cancel() if isinstance(e, Metric) and e.name == "loss" and e.step == 2 else None)
    good = weights(model)
    model2 = tiny_model()
    hook = model2.Conv_1x1.register_forward_hook(poison)
    result, events = run(model2, train, None, cfg)
    hook.remove()
    assert result.status == "failed" and result.steps == 2
    assert isinstance(events[-1], Failed) and "learning rate" in events[-1].reason
    for k, v in good.items():
        assert torch.equal(model2.state_dict()[k], v), k


def test_quick_preset_trains_only_the_decoder_on_cached_features(data):
    train, val = data
    model = tiny_llm_model()
    before = weights(model)
    result, events = run(model, train, val, TrainConfig.quick(steps=8, crop=16, val_every=4, augment=True))
    assert result.status == "done"
    assert any(isinstance(e, Log) and "× 4 version(s)" in e.text for e in events)
    # without a checkpoint path the new card still records what was done (for "save as…" later)
    assert model.card.training["steps"] == 8 and model.card.training["preset"] == "quick"
    assert model.card.metrics["val_iou"] == result.metrics["val_iou"]
    after = model.state_dict()
    encoder = [k for k in before if k.split(".")[0] in ("stem", "encoder1", "encoder5", "booster")]
    assert encoder and all(torch.equal(before[k], after[k]) for k in encoder)  # incl. BatchNorm statistics
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("Up_conv2"))


def test_frozen_real_llm_layer_is_bit_identical_and_in_eval_mode(data):
    from llm4seg.llm import DEFAULT_LLM

    train, val = data
    model = tiny_model(llm=DEFAULT_LLM)
    layer_before = {k: v.clone() for k, v in model.frozen_layer_state().items()}
    modes = []
    hook = model.booster.layer.register_forward_pre_hook(lambda m, a: modes.append(m.training))
    result, _ = run(model, train, val, TrainConfig(steps=3, batch_size=4, lr=0.05, val_every=3))
    hook.remove()
    assert result.status == "done" and modes and not any(modes)
    assert all(not p.requires_grad for p in model.booster.layer.parameters())
    after = model.frozen_layer_state()
    assert layer_before.keys() == after.keys()
    assert all(torch.equal(layer_before[k], after[k]) for k in layer_before)


def test_multiclass_training_runs():

    pairs = []
    for i in range(4):
        img, mask = disk_image(32, 32, seed=i)
        lab = mask.astype(np.uint8)
        lab[:8, :8] = 2
        img[:8, :8] = 250
        pairs.append((img, lab))
    ds = from_arrays(pairs, Preprocessing(size=32))
    model = tiny_model(num_classes=3)
    result, _ = run(model, ds, ds, TrainConfig(steps=80, batch_size=4, optimizer="adamw", lr=1e-2, augment=False,
                                               val_every=80))
    assert result.status == "done" and result.metrics["val_iou"] > 0.6  # both classes learnt, not just run
    with torch.no_grad():
        pred = model.eval()(ds.images[:1].float()).argmax(1)[0]
    assert (pred[:8, :8] == 2).float().mean() > 0.8 and (pred[12:20, 12:20] == 1).float().mean() > 0.8
    with pytest.raises(ValueError, match="predicts 1 class"):
        run(tiny_model(), ds, None, TrainConfig(steps=1))


def test_feature_cache_holds_the_encoder_output_of_each_augmented_version(data):
    from llm4seg.train.augment import dihedral
    from llm4seg.train.features import build_feature_cache

    train, _ = data
    model = tiny_llm_model().eval()
    cache = run_to_end(build_feature_cache(model, train.subset([0, 1]), versions=3, seed=0))
    assert cache.versions == 3 and cache.symmetries[:, 0].eq(0).all()
    assert len(set(cache.symmetries[0].tolist())) == 3
    for item in range(2):
        x, y = train.subset([0, 1]).batch(torch.tensor([item]))
        for v in range(3):
            k = int(cache.symmetries[item, v])
            with torch.no_grad():
                skips, x5 = model.encode(dihedral(x, k))
                x5 = model.boost(x5)
            entry = item * 3 + v
            assert torch.allclose(cache.skips[0][entry].float(), skips[0][0], atol=1e-2, rtol=1e-2)
            assert torch.allclose(cache.bottleneck[entry].float(), x5[0], atol=1e-2, rtol=1e-2)
            assert torch.equal(cache.labels[entry].long(), dihedral(y, k)[0])
    skips, x5, labels = cache.batch(torch.tensor([1]), torch.tensor([2]), torch.device("cpu"), crop=16,
                                    offsets=torch.tensor([[16, 0]]))
    assert [s.shape[-1] for s in skips] == [16, 8, 4, 2] and x5.shape[-1] == 1
    assert torch.equal(labels[0], cache.labels[5, 16:32, 0:16].long())
    assert torch.equal(skips[1][0], cache.skips[1][5, :, 8:16, 0:8].float())
