"""The fused inference copy computes the same logits as the plain network and never touches it."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from _factories import disk_image, tiny_model
from llm4seg.fastpath import FusedLLM4Seg, fast_model, max_pool2x2, prepare_for_inference, subpixel_weights
from llm4seg.infer import segment


def _scramble_batchnorm(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Non-trivial running statistics and affine parameters, so that folding is really exercised."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5, generator=g)
                m.running_var.uniform_(0.3, 2.0, generator=g)
                m.weight.uniform_(0.5, 1.5, generator=g)
                m.bias.uniform_(-0.3, 0.3, generator=g)
    return model.eval()


@pytest.mark.parametrize("kw,shape", [
    ({}, (2, 1, 48, 80)),
    ({"in_channels": 3, "num_classes": 3}, (1, 3, 32, 32)),
    ({"depths": (2, 1, 1, 3, 2)}, (3, 1, 64, 48)),
    ({"upsample": "bilinear"}, (2, 1, 48, 80)),  # the reference architecture
    ({"upsample": "bilinear", "in_channels": 3}, (1, 3, 64, 32)),
])
def test_fused_logits_match_plain_network(kw, shape):
    model = _scramble_batchnorm(tiny_model(**kw))
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    fused = prepare_for_inference(model)
    with torch.inference_mode():
        ref, out = model(x), fused(x)
    assert out.shape == ref.shape
    assert float(ref.abs().max()) > 1e-2  # a meaningful comparison, not zeros against zeros
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)


def test_fused_with_the_embedded_llm_layer():
    model = _scramble_batchnorm(tiny_model(llm="smollm2-135m:15", dims=(8, 16, 32, 32, 64)))
    x = torch.randn(2, 1, 64, 64, generator=torch.Generator().manual_seed(2))
    fused = prepare_for_inference(model)
    assert fused.booster is model.booster  # shared, not copied
    with torch.inference_mode():
        torch.testing.assert_close(fused(x), model(x), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("llm", [None, "smollm2-135m:15"])
def test_source_model_is_untouched_and_still_trains(llm):
    model = tiny_model(llm=llm).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    grads = {k: p.requires_grad for k, p in model.named_parameters()}
    fused = prepare_for_inference(model)
    fused.train()
    frozen = {id(m) for m in model.booster.layer.modules()} if llm else set()
    assert all(m.training for m in model.modules() if id(m) not in frozen)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert grads == {k: p.requires_grad for k, p in model.named_parameters()}
    model(torch.randn(2, 1, 32, 32)).mean().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    if llm is not None:
        assert model.booster.proj_in.weight.requires_grad and not any(p.requires_grad for p in model.booster.layer.parameters())


def test_cache_follows_parameter_updates():
    model = _scramble_batchnorm(tiny_model())
    first = fast_model(model)
    assert isinstance(first, FusedLLM4Seg) and fast_model(model) is first
    with torch.no_grad():
        model.Conv_1x1.bias.add_(1.0)  # what an optimiser step does: in place
    second = fast_model(model)
    assert second is not first
    x = torch.randn(1, 1, 32, 32)
    with torch.inference_mode():
        torch.testing.assert_close(second(x), model(x), atol=1e-4, rtol=1e-4)


def test_subpixel_conv_equals_upsample_then_conv():
    g = torch.Generator().manual_seed(3)
    w, b = torch.randn(5, 4, 3, 3, generator=g, dtype=torch.float64), torch.randn(5, generator=g, dtype=torch.float64)
    x = torch.randn(2, 4, 6, 7, generator=g, dtype=torch.float64)
    ref = F.conv2d(F.interpolate(x, scale_factor=2, mode="nearest"), w, b, padding=1)
    w4, b4 = subpixel_weights(w, b)
    o = F.conv2d(x, w4, b4, padding=1)
    out = torch.empty_like(ref)
    for py in range(2):
        for px in range(2):
            p = 2 * py + px
            out[:, :, py::2, px::2] = o[:, 5 * p:5 * (p + 1), py:py + 6, px:px + 7]
    torch.testing.assert_close(out, ref)


def test_max_pool():
    x = torch.randn(2, 5, 8, 12).contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(max_pool2x2(x), F.max_pool2d(x, 2, 2))


def test_segment_fast_and_plain_agree():
    model = _scramble_batchnorm(tiny_model())
    vol = np.stack([disk_image(40, 56, seed=i)[0] for i in range(3)])
    fast = segment(vol, model, return_probs=True)
    plain = segment(vol, model, return_probs=True, fast=False)
    np.testing.assert_allclose(fast.probs, plain.probs, atol=1e-5)
    assert set(fast.timings) >= {"preprocess", "model", "postprocess"}


def test_fast_path_refuses_what_it_cannot_reproduce():
    from llm4seg.fastpath import FastPathUnsupported

    model = tiny_model()
    model.Up4.up[0] = torch.nn.Upsample(scale_factor=2, mode="bicubic")
    with pytest.raises(FastPathUnsupported, match="bicubic"):
        prepare_for_inference(model)
    with pytest.warns(RuntimeWarning, match="plain model"):
        assert fast_model(model) is model  # the plain model runs, and the user is told
