"""Preprocessing: intensity mapping, channels, resize/pad and the exact inverse."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from llm4seg.preprocess import (
    WINDOWS, Preprocessing, from_model_output, intensity_range, logits_to_labels, looks_like_ct, to_model_input,
)


def test_ct_window_maps_level_and_width():
    prep = Preprocessing(window=WINDOWS["abdomen"], mean=0.0, std=1.0)
    lo, hi = intensity_range(np.zeros((2, 2), np.int16), prep)
    assert (lo, hi) == (-160.0, 240.0)
    x = to_model_input(np.array([[[-1000, -160, 40, 240, 3000]]], np.int16), Preprocessing(size=None, window=(40, 400), mean=0, std=1), lo, hi)
    assert x[0, 0, 0, :5].tolist() == pytest.approx([0.0, 0.0, 0.5, 1.0, 1.0])


def test_uint8_range_and_robust_range_for_other_dtypes():
    prep = Preprocessing()
    assert intensity_range(np.zeros((4, 4), np.uint8), prep) == (0.0, 255.0)
    img = np.linspace(0, 4000, 10000).astype(np.uint16).reshape(100, 100)
    lo, hi = intensity_range(img, prep)
    assert 0 <= lo < 50 and 3950 < hi <= 4000
    const = np.full((8, 8), 7.0, np.float32)
    lo, hi = intensity_range(const, prep)
    assert hi > lo  # constant image: no division by zero


def test_nan_and_inf_become_finite():
    prep = Preprocessing(size=None)
    img = np.array([[[np.nan, np.inf, -np.inf, 0.5] * 4] * 16], np.float32)
    lo, hi = intensity_range(img, prep)
    x = to_model_input(img, prep, lo, hi)
    assert torch.isfinite(x).all()


def test_ct_detection():
    assert looks_like_ct(np.array([-1024, 0, 400], np.int16))
    assert not looks_like_ct(np.array([0, 255], np.uint8))


@pytest.mark.parametrize("channels,shape", [(1, (2, 30, 40, 3)), (3, (2, 30, 40)), (1, (2, 30, 40, 4)), (3, (2, 30, 40, 3))])
def test_channels(channels, shape):
    x = to_model_input(np.random.rand(*shape).astype(np.float32), Preprocessing(channels=channels, size=64), 0, 1)
    assert x.shape == (2, channels, 64, 64)


@pytest.mark.parametrize("size", [None, 64])
def test_inverse_restores_exact_shape(size):
    prep = Preprocessing(size=size)
    x = to_model_input(np.random.rand(3, 37, 53).astype(np.float32), prep, 0, 1)
    assert x.shape[-1] % 16 == 0 and x.shape[-2] % 16 == 0
    back = from_model_output(torch.randn(3, 2, *x.shape[-2:]), (37, 53), prep)
    assert back.shape == (3, 2, 37, 53)
    # and the values come back where they were: a smooth ramp survives the round trip
    yy, xx = np.mgrid[:37, :53]
    ramp = np.stack([(yy / 36.0 + k * xx / 52.0) / (1 + k) for k in range(3)]).astype(np.float32)
    plain = Preprocessing(size=size, mean=0.0, std=1.0)
    again = from_model_output(to_model_input(ramp, plain, 0, 1), (37, 53), plain)[:, 0].numpy()
    assert np.abs(again - ramp).max() < 0.05


def test_pad_mode_crop_is_exact():
    prep = Preprocessing(size=None, mean=0, std=1)
    img = np.random.rand(1, 20, 33).astype(np.float32)
    x = to_model_input(img, prep, 0, 1)
    assert x.shape == (1, 1, 32, 48)
    np.testing.assert_allclose(from_model_output(x, (20, 33), prep)[0, 0].numpy(), img[0], rtol=1e-6)


def test_logits_to_labels():
    assert logits_to_labels(torch.tensor([[[[-1.0, 2.0]]]])).tolist() == [[[0, 1]]]
    multi = torch.tensor([[[[0.0, 0.0]], [[1.0, -1.0]], [[0.5, 3.0]]]])
    assert logits_to_labels(multi).tolist() == [[[1, 2]]]


def test_bad_settings_are_explained():
    with pytest.raises(ValueError, match="multiple of 16"):
        Preprocessing(size=100)
    with pytest.raises(ValueError, match="width"):
        Preprocessing(window=(40, 0))


def test_colour_is_gray_tells_gray_exports_from_colour_images():
    from llm4seg.preprocess import colour_is_gray

    rng = np.random.default_rng(0)
    gray = rng.integers(0, 255, (64, 64), dtype=np.uint8)
    stored = np.repeat(gray[..., None], 3, -1)
    assert colour_is_gray(stored) and colour_is_gray(np.dstack([stored, np.full((64, 64), 255, np.uint8)]))
    jpeg_like = (stored.astype(np.int16) + rng.integers(-1, 2, stored.shape)).clip(0, 255).astype(np.uint8)
    assert colour_is_gray(jpeg_like)  # compression noise of a unit or two
    marked = stored.copy()
    marked[:2, :10] = (255, 255, 0)  # a coloured marker on 0.5 % of the pixels
    assert colour_is_gray(marked)
    tinted = stored.copy()
    tinted[..., 0] = np.clip(gray.astype(int) + 40, 0, 255)  # a sepia-like tint: colour
    assert not colour_is_gray(tinted)
    assert not colour_is_gray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    assert not colour_is_gray(gray) and not colour_is_gray(np.zeros((4, 64, 64)))  # no channel axis
