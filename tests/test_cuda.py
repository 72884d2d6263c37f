"""On a CUDA GPU: segmentation with autocast agrees with the CPU, a real out-of-memory error halves the batch,
fine-tuning runs, and the fast path matches the plain network in reduced precision.

    make test-gpu            (= pytest -m cuda; every test here is skipped on a machine without CUDA)
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from _factories import disk_image, tiny_model
from llm4seg.checkpoint import ModelCard
from llm4seg.events import run_to_end
from llm4seg.fastpath import prepare_for_inference
from llm4seg.finetune import TrainingPair, finetune, preset_config, summarise
from llm4seg.infer import segment
from llm4seg.preprocess import Preprocessing

BUSI_SAMPLE = Path(__file__).resolve().parents[1] / "sample_data" / "busi" / "images" / "benign (100).png"
pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (make test-gpu on one)")]


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    return float(2 * (a & b).sum() / max(1, a.sum() + b.sum()))


def _shipped():
    from llm4seg.models import load_model

    return load_model("default", device="cpu")


def test_volume_on_the_gpu_with_autocast_matches_the_cpu():
    """On a lesion the shipped model finds (a volume of the BUSI sample and its flips), the bfloat16/float16
    GPU masks agree with the float32 CPU ones; not on synthetic disks, where it finds a few dozen pixels and
    a handful of borderline ones decide the Dice."""
    from llm4seg.io import read_image

    model = _shipped()
    img = read_image(BUSI_SAMPLE).array
    vol = np.stack([img, img[:, ::-1], img[::-1]])
    cpu = segment(vol, model, volume=True, return_probs=True)
    gpu = segment(vol, model.to("cuda"), volume=True, return_probs=True)  # bf16/fp16 autocast inside
    model.to("cpu")
    assert cpu.labels.sum() > 1000 and _dice(cpu.labels, gpu.labels) > 0.99
    assert float(np.abs(cpu.probs - gpu.probs).max()) < 0.1


def test_real_out_of_memory_halves_the_batch_and_finishes():
    model = tiny_model().to("cuda")
    torch.cuda.empty_cache()
    free, total = torch.cuda.mem_get_info()
    vol = np.random.default_rng(0).integers(0, 255, (64, 512, 512), dtype=np.uint8)
    torch.cuda.set_per_process_memory_fraction(min(1.0, (total - free + 600 * 2**20) / total))
    try:  # 64 slices of 512² in one batch need more than ~600 MiB of activations: the loop must back off
        result = segment(vol, model, volume=True, batch_size=64)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
    assert result.labels.shape == vol.shape
    reference = segment(vol[:4], model, volume=True, batch_size=1).labels
    assert (result.labels[:4] == reference).mean() > 0.999


def test_fine_tune_a_few_steps_on_the_gpu():
    model = tiny_model().to("cuda")
    model.card = ModelCard(name="tiny", classes=["background", "lesion"], model=model.config.to_dict(),
                           preprocessing=Preprocessing(size=64).to_dict())
    pairs = [TrainingPair(*disk_image(64, 64, seed=i), name=f"p{i}") for i in range(3)]
    for preset in ("quick", "thorough"):
        outcome = run_to_end(finetune(model, summarise(pairs, model.card.classes),
                                      preset_config(preset, steps=5, device="cuda")))
        assert outcome.result.status == "done" and next(outcome.model.parameters()).is_cuda


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_fast_path_matches_the_plain_network_in_reduced_precision(dtype):
    model = tiny_model(upsample="bilinear").to("cuda").eval()
    fused = prepare_for_inference(model)
    x = torch.randn(2, 1, 64, 96, device="cuda")
    with torch.inference_mode(), torch.autocast("cuda", dtype=dtype):
        plain, fast = model(x).float(), fused(x).float()
    assert float((plain - fast).abs().max()) < 0.05 * max(1.0, float(plain.abs().max()))
