"""Safetensors checkpoints: round trips, the model card, references, and refusals."""
from __future__ import annotations

import json
import pickle
import struct

import pytest
import torch

from _factories import tiny_model
from llm4seg.checkpoint import LAYER_PREFIX, CheckpointError, ModelCard, load_checkpoint, read_card, save_checkpoint
from llm4seg.llm import DEFAULT_LLM, tensors_sha256


@pytest.fixture(scope="module")
def llm_model():
    return tiny_model(llm=DEFAULT_LLM, num_classes=3)


def _out(model, x):
    with torch.no_grad():
        return model(x)


def test_round_trip_embedded(tmp_path, llm_model):
    card = ModelCard(name="t", classes=["background", "a", "b"], metrics={"iou": 0.5})
    path = save_checkpoint(tmp_path / "m.safetensors", llm_model, card)
    loaded = load_checkpoint(path, device="cpu")
    x = torch.randn(2, 1, 64, 64)
    torch.testing.assert_close(_out(loaded, x), _out(llm_model, x), rtol=0, atol=0)
    assert loaded.card.classes == ["background", "a", "b"] and loaded.card.metrics == {"iou": 0.5}
    assert loaded.card.llm["embedded"] and loaded.card.llm["sha256"] == tensors_sha256(llm_model.frozen_layer_state())
    assert not loaded.training and all(not p.requires_grad for p in loaded.booster.layer.parameters())
    assert not list(tmp_path.glob("*.tmp"))  # atomic write leaves no temp file


def test_reference_checkpoint_resolves_and_verifies(tmp_path, llm_model):
    path = save_checkpoint(tmp_path / "ref.safetensors", llm_model, embed_llm=False)
    embedded = save_checkpoint(tmp_path / "emb.safetensors", llm_model)
    assert path.stat().st_size < embedded.stat().st_size / 3
    loaded = load_checkpoint(path, device="cpu")
    x = torch.randn(1, 1, 64, 64)
    torch.testing.assert_close(_out(loaded, x), _out(llm_model, x), rtol=0, atol=0)


def test_reference_with_wrong_sha_is_refused(tmp_path, llm_model):
    path = save_checkpoint(tmp_path / "ref.safetensors", llm_model, embed_llm=False)
    card = read_card(path)
    card.llm["sha256"] = "0" * 64
    _rewrite_card(path, card)
    with pytest.raises(CheckpointError, match="sha256"):
        load_checkpoint(path, device="cpu")


def test_bf16_embedded_layer_stays_close(tmp_path, llm_model):
    path = save_checkpoint(tmp_path / "bf16.safetensors", llm_model, llm_dtype="bfloat16")
    loaded = load_checkpoint(path, device="cpu")
    x = torch.randn(1, 1, 64, 64)
    a, b = _out(loaded, x), _out(llm_model, x)
    assert float((a - b).abs().max()) < 0.05 * float(b.abs().max())


def test_baseline_round_trip(tmp_path):
    model = tiny_model()
    loaded = load_checkpoint(save_checkpoint(tmp_path / "b.safetensors", model), device="cpu")
    assert loaded.booster is None and loaded.card.llm == {}
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), loaded.eval()(x))  # the same network, bit for bit


def _rewrite_card(path, card):
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    save_file(tensors, str(path), metadata={"llm4seg.card": card.to_json()})


def test_pickle_is_never_unpickled(tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    for name in ("evil.pt", "evil.safetensors"):
        path = tmp_path / name
        path.write_bytes(pickle.dumps(Exploit(), protocol=4))
        with pytest.raises(CheckpointError, match="pickle"):
            load_checkpoint(path, device="cpu")
    zipped = tmp_path / "state.pth"
    torch.save({"w": torch.zeros(1)}, zipped)
    with pytest.raises(CheckpointError, match="never"):
        load_checkpoint(zipped, device="cpu")
    assert not marker.exists()


def test_truncated_and_lying_headers(tmp_path, llm_model):
    good = save_checkpoint(tmp_path / "m.safetensors", llm_model).read_bytes()
    (tmp_path / "trunc.safetensors").write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(tmp_path / "trunc.safetensors")
    header = json.dumps({"w": {"dtype": "F32", "shape": [1 << 20, 1 << 20], "data_offsets": [0, 16]}}).encode()
    (tmp_path / "huge.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 16)
    with pytest.raises(CheckpointError, match="claims"):
        load_checkpoint(tmp_path / "huge.safetensors")
    (tmp_path / "empty.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        load_checkpoint(tmp_path / "empty.safetensors")


def test_card_problems(tmp_path, llm_model):
    from safetensors.torch import save_file

    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(plain))
    with pytest.raises(CheckpointError, match="no llm4seg model card"):
        read_card(plain)
    path = save_checkpoint(tmp_path / "m.safetensors", llm_model)
    card = read_card(path)
    card.format_version = 99
    _rewrite_card(path, card)
    with pytest.raises(CheckpointError, match="newer"):
        load_checkpoint(path)


def test_shape_mismatch_is_named(tmp_path):
    path = save_checkpoint(tmp_path / "m.safetensors", tiny_model(num_classes=2))
    card = read_card(path)
    card.model["num_classes"] = 5
    _rewrite_card(path, card)
    with pytest.raises(CheckpointError, match="Conv_1x1"):
        load_checkpoint(path)


def test_tampered_embedded_layer_is_detected(tmp_path, llm_model):
    from safetensors import safe_open
    from safetensors.torch import save_file

    path = save_checkpoint(tmp_path / "m.safetensors", llm_model)
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    tensors[LAYER_PREFIX + "mlp.up_proj.weight"][0, 0] += 1
    save_file(tensors, str(path), metadata=meta)
    with pytest.raises(CheckpointError, match="sha256"):
        load_checkpoint(path)
