"""The shipped checkpoints are any good on the shipped samples, and the registry refuses what it cannot trust."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from llm4seg import models
from llm4seg.infer import segment
from llm4seg.io import read_image

SAMPLES = Path(__file__).resolve().parents[1] / "sample_data"


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    return float(2 * (a & b).sum() / (a.sum() + b.sum())) if a.any() or b.any() else 1.0


def test_busi_lesion_on_its_samples():
    """Measured: per-image Dice 0.891 on these six images, 0.939 on 'benign (100)' (the sample a new user sees
    first); the floors sit just below."""
    model = models.load_model("busi-lesion", device="cpu")
    scores = []
    for path in sorted((SAMPLES / "busi" / "images").glob("*.png")):
        truth = read_image(SAMPLES / "busi" / "masks" / "0" / path.name).array > 0
        scores.append(dice(segment(read_image(path).array, model).labels == 1, truth))
    assert len(scores) == 6 and np.mean(scores) > 0.86, scores
    assert scores[0] > 0.9, scores  # benign (100)


def test_ct_liver_on_the_ct_sample():
    """Card: Dice 0.877 over the 60-slice CT sample."""
    model = models.load_model("ct-liver", device="cpu")
    ct = read_image(SAMPLES / "ircad17_ct.nii.gz").array
    truth = read_image(SAMPLES / "ircad17_liver_label.nii.gz").array > 0
    assert dice(segment(ct, model).labels == 1, truth) > 0.85


def test_generalist_reads_its_layer_by_reference_and_segments_colour():
    model = models.load_model("generalist", device="cpu")
    assert model.config.in_channels == 3 and not model.card.llm["embedded"]
    img = read_image(sorted((SAMPLES / "busi" / "images").glob("*.png"))[0]).array
    rgb = np.stack([img] * 3, axis=-1)
    np.testing.assert_array_equal(segment(rgb, model).labels, segment(img, model).labels)  # gray = replicated RGB


def test_every_shipped_model_loads_and_the_starting_points_are_shipped():
    """A by-reference checkpoint whose frozen layer is not the installed one cannot load: every entry must."""
    entries = models.list_models()
    for entry in entries:
        model = models.load_model(entry.name, device="cpu")
        assert model.card.name == entry.name and len(model.card.classes) >= 2
    shipped = {e.name for e in entries}
    assert {name for name, _ in models.FINETUNE_STARTS} <= shipped
    gray = models.load_model("gray-start", device="cpu")
    assert gray.config.in_channels == 1 and not gray.card.llm["embedded"]


def test_registry_refuses_a_changed_or_missing_file(tmp_path, monkeypatch):
    for entry in models.list_models():
        shutil.copy(entry.path, tmp_path / entry.file)
    (tmp_path / "registry.json").write_text((models.WEIGHTS_DIR / "registry.json").read_text())
    monkeypatch.setattr(models, "WEIGHTS_DIR", tmp_path)
    first = models.list_models()[0]
    with open(tmp_path / first.file, "r+b") as f:  # one flipped byte deep in the tensors
        f.seek(-100, 2)
        byte = f.read(1)
        f.seek(-100, 2)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(Exception, match="sha256"):
        models.load_model(first.name, device="cpu")
    second = models.list_models()[1]
    (tmp_path / second.file).unlink()
    with pytest.raises(Exception, match=second.file):
        models.load_model(second.name, device="cpu")
    data = json.loads((tmp_path / "registry.json").read_text())
    assert {e["name"] for e in data["models"]} == {e.name for e in models.list_models()}


def test_recommend_names_models_by_modality_never_unshipped_ones():
    shipped = {e.name for e in models.list_models()}
    colour = np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    rgb = models.recommend(colour, rgb=True)
    names = [name for name, _ in rgb]
    assert names == [n for n, _ in models.COLOUR_MODELS if n in shipped] and "generalist" in names
    assert all(why.startswith("RGB, for ") for _, why in rgb)
    ct = np.full((4, 32, 32), -1000, np.int16)
    ct[:, 8:24, 8:24] = 60
    assert models.recommend(ct) == [("ct-liver", "the image looks like CT in Hounsfield units")]
    gray = [name for name, _ in models.recommend(np.zeros((32, 32), np.uint8))]
    assert gray == [n for n, _ in models.GRAY_MODELS if n in shipped] and "busi-lesion" in gray
    assert models.recommend(np.zeros((32, 32), np.float32)) == []  # neither 8-bit nor CT: nothing to say
    stored = np.repeat(np.arange(32, dtype=np.uint8)[None, :, None], 32, 0).repeat(3, -1)
    assert [name for name, _ in models.recommend(stored, rgb=True)] == gray  # gray exported as colour


def test_gray_stored_as_colour_is_no_colour_image_to_the_hints():
    from llm4seg.checkpoint import ModelCard
    from llm4seg.preprocess import Preprocessing
    from napari_llm4seg._segment_messages import modality_hint

    stored = np.repeat(np.arange(32, dtype=np.uint8)[None, :, None], 32, 0).repeat(3, -1)
    busi = ModelCard(name="busi-lesion", classes=["background", "lesion"], preprocessing=Preprocessing().to_dict())
    polyp = ModelCard(name="polyp", classes=["background", "polyp"], preprocessing=Preprocessing(channels=3).to_dict())
    assert modality_hint("us", stored, busi, None, rgb=True) is None  # no 'colour is converted to gray'
    assert "is a colour image" in modality_hint("c", stored[..., ::-1] * np.array([1, 0, 0], np.uint8), busi,
                                                 None, rgb=True)
    text = modality_hint("us", stored, polyp, None, rgb=True)
    assert "gray image" in text and "'busi-lesion'" in text


def test_a_gray_image_on_a_colour_specialist_names_the_ultrasound_models():
    from llm4seg.checkpoint import ModelCard
    from llm4seg.preprocess import Preprocessing
    from napari_llm4seg._segment_messages import modality_hint

    card = ModelCard(name="polyp", classes=["background", "polyp"], preprocessing=Preprocessing(channels=3).to_dict())
    text = modality_hint("us", np.zeros((32, 32), np.uint8), card, None)
    assert "gray image" in text and "colour colonoscopy images" in text
    assert "'busi-lesion' (breast-ultrasound lesions)" in text
    generalist = ModelCard(name="generalist", classes=["background", "fg"], preprocessing=card.preprocessing)
    assert modality_hint("us", np.zeros((32, 32), np.uint8), generalist, None) is None  # meant for anything


def test_card_brief_gives_one_score_per_data_set():
    from llm4seg.cardtext import card_brief

    rows = dict(card_brief(models.load_model("polyp", device="cpu").card))
    assert rows["input"] == "RGB, 256×256" and rows["classes"] == "polyp"
    assert rows["scores"].count("(validation)") == 1 and "(colondb)" in rows["scores"]


def test_an_mri_volume_on_an_ultrasound_model_points_to_fine_tuning():
    from llm4seg.checkpoint import ModelCard
    from llm4seg.preprocess import Preprocessing
    from napari_llm4seg._segment_messages import modality_hint

    busi = ModelCard(name="busi-lesion", classes=["background", "lesion"], preprocessing=Preprocessing().to_dict())
    mr = np.random.default_rng(0).normal(300, 50, (6, 32, 32)).astype(np.float32)
    text = modality_hint("mr", mr, busi, None)
    assert "'mr' is a volume of more than 8 bits" in text and "'gray-start'" in text
    assert modality_hint("cine", mr.astype(np.uint8), busi, None) is None  # 8-bit stacks: ultrasound cine loops
    assert modality_hint("mr", mr[0], busi, None) is None  # one 2D image: nothing to say
