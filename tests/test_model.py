"""CMUNeXt + LLM booster: shapes, frozen layer, position and attention modes."""
from __future__ import annotations

import pytest
import torch

from _factories import tiny_model
from llm4seg.llm import DEFAULT_LLM
from llm4seg.model import ModelConfig, build_model


def test_paper_cmunext_size_and_shapes():
    model = build_model(ModelConfig(llm=None, in_channels=3, num_classes=1))
    n = sum(p.numel() for p in model.parameters())
    assert 3.10e6 < n < 3.20e6  # the paper's CMUNeXt: 3.14 M parameters
    skips, x5 = model.encode(torch.zeros(1, 3, 256, 256))
    assert x5.shape == (1, 256, 16, 16)  # 16×16 bottleneck tokens at 256² input
    assert [s.shape[1] for s in skips] == [16, 32, 128, 160]


@pytest.mark.parametrize("in_ch,classes", [(1, 1), (3, 1), (1, 4)])
def test_forward_shapes(in_ch, classes):
    model = tiny_model(in_channels=in_ch, num_classes=classes)
    with torch.no_grad():
        y = model(torch.randn(2, in_ch, 48, 80))
    assert y.shape == (2, classes, 48, 80)


def test_input_not_multiple_of_16_is_explained():
    model = tiny_model()
    with pytest.raises(ValueError, match="multiples of 16"):
        model(torch.randn(1, 1, 50, 64))


@pytest.fixture(scope="module")
def llm_model():
    return tiny_model(llm=DEFAULT_LLM)


def test_llm_layer_is_frozen_and_stays_in_eval(llm_model):
    layer = llm_model.booster.layer
    assert all(not p.requires_grad for p in layer.parameters())
    assert llm_model.booster.proj_in.weight.requires_grad and llm_model.booster.proj_out.weight.requires_grad
    llm_model.train()
    assert llm_model.training and not layer.training
    llm_model.eval()
    trainable = {id(p) for p in llm_model.trainable_parameters()}
    assert not any(id(p) in trainable for p in layer.parameters())


def test_batch_elements_are_independent(llm_model):
    """Guards against taking output[0] of a tensor (which would return batch element 0 for all)."""
    x = torch.randn(3, 1, 64, 64)
    with torch.no_grad():
        together = llm_model(x)
        alone = torch.cat([llm_model(x[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(together[0], together[1])


def test_tuple_returning_layer_is_handled(llm_model):
    booster = llm_model.booster
    tokens = torch.randn(2, 16, booster.proj_in.out_features)
    expected = booster.run_layer(tokens)
    original = booster.layer.forward
    booster.layer.forward = lambda *a, **k: (original(*a, **k), None)  # transformers < 4.54 style
    try:
        got = booster.run_layer(tokens)
    finally:
        del booster.layer.forward
    torch.testing.assert_close(got, expected)


def _first_token_sensitivity(booster) -> float:
    torch.manual_seed(0)
    tokens = torch.randn(1, 16, booster.proj_in.out_features)
    changed = tokens.clone()
    changed[:, -1] += 5.0  # perturb the last token only
    with torch.no_grad():
        a, b = booster.run_layer(tokens), booster.run_layer(changed)
    return float((a[:, 0] - b[:, 0]).abs().max())


def test_causal_vs_bidirectional_attention(llm_model):
    booster = llm_model.booster
    booster.attention = "causal"
    assert _first_token_sensitivity(booster) == 0.0  # the first token cannot see the last
    booster.attention = "bidirectional"
    try:
        assert _first_token_sensitivity(booster) > 1e-3
    finally:
        booster.attention = "causal"


def test_rope_mode_uses_the_llms_rotary_embedding(llm_model):
    booster = llm_model.booster
    tokens = torch.randn(1, 16, booster.proj_in.out_features)
    cos, sin = booster.position_embeddings(tokens)
    head_dim = booster.layer.self_attn.head_dim
    assert cos.shape == (1, 16, head_dim) and sin.shape == (1, 16, head_dim)
    ref_cos, ref_sin = booster.rotary(tokens, torch.arange(16)[None])
    torch.testing.assert_close(cos, ref_cos)
    assert torch.allclose(cos[0, 0], torch.ones(head_dim))  # position 0: no rotation


def test_paper_mode_passes_scalar_sin_cos_in_reference_order():
    model = tiny_model(llm=DEFAULT_LLM, position="paper")
    tokens = torch.zeros(1, 16, model.booster.proj_in.out_features)
    first, second = model.booster.position_embeddings(tokens)
    t = torch.arange(16, dtype=torch.float32).view(1, 16, 1)
    torch.testing.assert_close(first, torch.sin(t))
    torch.testing.assert_close(second, torch.cos(t))
    with torch.no_grad():
        assert torch.isfinite(model(torch.randn(1, 1, 64, 64))).all()


def test_random_layer_has_same_shape_other_weights(llm_model):
    rand = tiny_model(llm=DEFAULT_LLM, llm_init="random")
    a, b = llm_model.frozen_layer_state(), rand.frozen_layer_state()
    assert a.keys() == b.keys()
    assert all(a[k].shape == b[k].shape for k in a)
    assert not torch.equal(a["self_attn.q_proj.weight"], b["self_attn.q_proj.weight"])
    assert all(not p.requires_grad for p in rand.booster.layer.parameters())
    # the reference's random arm: xavier-uniform Linear weights, the pre-trained norm weights kept
    for k in a:
        if k.endswith("norm.weight"):
            assert torch.equal(a[k], b[k]), k
    q = b["self_attn.q_proj.weight"]
    bound = (6.0 / sum(q.shape)) ** 0.5
    assert float(q.abs().max()) <= bound and float(q.abs().max()) > 0.9 * bound
    assert abs(float(q.std()) - bound / 3 ** 0.5) < 0.05 * bound  # uniform(-b, b) has sd b/sqrt(3)


def test_arms_of_one_seed_share_the_cnn_start():
    """Baseline, pre-trained and random LLM arms: identical CNN weights for the same seed (paired ablation)."""
    arms = [tiny_model(seed=3), tiny_model(llm=DEFAULT_LLM, seed=3), tiny_model(llm=DEFAULT_LLM, llm_init="random", seed=3)]
    cnn = [{k: v for k, v in m.state_dict().items() if not k.startswith("booster.")} for m in arms]
    assert all(c.keys() == cnn[0].keys() and all(torch.equal(c[k], cnn[0][k]) for k in c) for c in cnn[1:])
    assert not torch.equal(cnn[0]["stem.conv.0.weight"], tiny_model(seed=4).state_dict()["stem.conv.0.weight"])


def test_faithful_config_and_calibration_switch():
    faithful = ModelConfig.faithful(llm=DEFAULT_LLM)
    assert (faithful.upsample, faithful.position, faithful.attention, faithful.calibrate) == (
        "bilinear", "paper", "causal", False)
    assert ModelConfig.from_dict(faithful.to_dict()) == faithful
    old = ModelConfig().to_dict()
    del old["upsample"], old["calibrate"]
    assert ModelConfig.from_dict(old).upsample == "nearest"  # checkpoints from before the option
    plain = tiny_model(llm=DEFAULT_LLM, calibrate=False, seed=5)
    calibrated = tiny_model(llm=DEFAULT_LLM, seed=5)
    a, b = plain.booster.proj_out.weight.detach(), calibrated.booster.proj_out.weight.detach()
    ratio = float((b / a).mean())
    assert ratio < 0.5 and torch.allclose(b, a * ratio, rtol=1e-4)  # calibration only rescales proj_out
    with pytest.raises(ValueError, match="upsample"):
        ModelConfig(upsample="bicubic")


def test_adapter_calibration_keeps_bottleneck_scale(llm_model):
    booster = llm_model.booster
    x = torch.randn(4, booster.proj_in.in_features, 16, 16)
    raw = tiny_model(llm=DEFAULT_LLM, calibrate=False).booster
    with torch.no_grad():
        std, raw_std = float(booster(x).std()), float(raw(x).std())
    assert 0.8 < std < 1.25  # unit-variance tokens stay unit-variance (calibrated on other random tokens)
    assert raw_std > 2.5  # without calibration the middle layer amplifies them several-fold


def test_adapters_only_arm_has_no_layer_and_round_trips(tmp_path):
    from llm4seg.checkpoint import load_checkpoint, save_checkpoint, ModelCard

    arm = tiny_model(llm=DEFAULT_LLM, llm_init="none", seed=3)
    assert arm.frozen_layer_state() == {} and arm.booster.proj_in.out_features == 576  # SmolLM2's width
    x = torch.randn(1, arm.booster.proj_in.in_features, 4, 4)
    with torch.no_grad():
        expected = arm.booster.proj_out(arm.booster.proj_in(x.flatten(2).transpose(1, 2)))
        torch.testing.assert_close(arm.booster(x), expected.transpose(1, 2).reshape(x.shape))
    base = tiny_model(seed=3)  # same CNN start as the baseline of the same seed
    assert torch.equal(arm.state_dict()["stem.conv.0.weight"], base.state_dict()["stem.conv.0.weight"])
    path = save_checkpoint(tmp_path / "a.safetensors", arm, ModelCard(name="adapters", classes=["background", "x"]))
    back = load_checkpoint(path, device="cpu")
    img = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(back(img), arm(img))
    from llm4seg.cardtext import card_text

    assert "adapters only" in card_text(back.card)
