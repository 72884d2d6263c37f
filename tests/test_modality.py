"""The model hint: the kind of image from its pixels, and the shipped model that fits it."""
from __future__ import annotations

import numpy as np

from llm4seg.modality import guess_modality, model_hint


def colonoscopy_frame() -> np.ndarray:
    frame = np.zeros((120, 140, 3), np.uint8)  # the video's black border
    frame[12:108, 16:124] = (190, 70, 50)      # saturated red mucosa
    return frame


def dermoscopy_image() -> np.ndarray:
    rng = np.random.default_rng(0)
    skin = np.full((120, 140, 3), (205, 160, 140), np.uint8)
    skin[40:80, 50:90] = (120, 80, 60)         # a brown lesion
    return np.clip(skin + rng.normal(0, 4, skin.shape), 0, 255).astype(np.uint8)


def test_modalities_from_pixels():
    assert guess_modality(colonoscopy_frame(), rgb=True) == "colonoscopy"
    assert guess_modality(dermoscopy_image(), rgb=True) == "dermoscopy"
    gray = np.random.default_rng(1).integers(0, 255, (64, 80), dtype=np.uint8)
    assert guess_modality(gray) == "ultrasound"
    assert guess_modality(np.repeat(gray[..., None], 3, -1), rgb=True) == "ultrasound"  # gray stored as RGB
    assert guess_modality(np.full((4, 16, 16), -1000, np.int16)) == "CT"
    assert guess_modality(np.zeros((6, 16, 16), np.uint8)) == "MR"
    assert guess_modality(np.zeros((0,), np.uint8)) == ""


def test_the_hint_names_the_one_model_that_fits_and_says_when_the_model_in_use_does_not():
    hint = model_hint(colonoscopy_frame(), rgb=True, in_use="isic-lesion")
    assert hint.model == "polyp" and not hint.fits
    assert hint.text == "Colonoscopy frame: polyp fits it (isic-lesion, in use, was trained on dermoscopy)."
    assert model_hint(colonoscopy_frame(), rgb=True, in_use="polyp-finetuned").fits
    gray = np.zeros((32, 32), np.uint8)
    assert model_hint(gray, in_use="thyroid").fits and model_hint(gray, in_use="busi-lesion").fits
    ct = model_hint(np.full((4, 16, 16), -1000, np.int16), in_use="busi-lesion")
    assert ct.model == "ct-liver" and not ct.fits and "breast ultrasound" in ct.text
    mr = model_hint(np.zeros((6, 16, 16), np.uint8), in_use="busi-lesion")
    assert not mr.fits and "gray-start" in mr.text and "fine-tune" in mr.text
