"""scripts/compare_checkpoints.py: both models scored on the same images, the paired difference and its CI."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np

from _factories import tiny_model
from llm4seg.checkpoint import ModelCard, save_checkpoint
from llm4seg.preprocess import Preprocessing
from test_train_data import make_folder

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))  # the script imports its neighbour ablation_folds
spec = importlib.util.spec_from_file_location("compare_checkpoints", ROOT / "scripts" / "compare_checkpoints.py")
compare = importlib.util.module_from_spec(spec)
spec.loader.exec_module(compare)


def checkpoint(path: Path, seed: int) -> Path:
    card = ModelCard(name=path.stem, classes=["background", "lesion"], preprocessing=Preprocessing(size=32).to_dict())
    return save_checkpoint(path, tiny_model(seed=seed), card)


def test_paired_difference_is_the_mean_of_per_image_differences(tmp_path, capsys):
    data = make_folder(tmp_path / "set", n=5, size=40)
    a, b = checkpoint(tmp_path / "a.safetensors", 0), checkpoint(tmp_path / "b.safetensors", 1)
    (tmp_path / "some.txt").write_text("case0\ncase2\ncase4\n")
    out = tmp_path / "cmp.json"
    assert compare.main([str(data), str(a), str(b), "--list", str(tmp_path / "some.txt"), "--json", str(out),
                         "--threads", "1"]) == 0
    result = json.loads(out.read_text())
    assert sorted(result["images"]["new"]) == ["case0", "case2", "case4"]  # only the listed images
    for metric in ("dice", "iou"):
        new, old = result["images"]["new"], result["images"]["old"]
        diffs = [new[n][metric] - old[n][metric] for n in ("case0", "case2", "case4")]
        s = result["summary"][metric]
        assert abs(s["diff"] - float(np.mean(diffs))) < 1e-9 and s["ci"][0] <= s["diff"] <= s["ci"][1]
    assert "new − old (95 % CI)" in capsys.readouterr().out
    assert compare.main([str(data), str(a), str(a), "--json", str(out), "--threads", "1"]) == 0
    same = json.loads(out.read_text())["summary"]["dice"]
    assert same["diff"] == 0 and same["ci"] == [0.0, 0.0]  # a model against itself


def test_one_model_with_and_without_test_time_flips_and_clean_up(tmp_path):
    from ablation_folds import score_held_out
    from llm4seg.infer import segment
    from llm4seg.models import load_model
    from llm4seg.postprocess import PostprocessOptions, postprocess
    from llm4seg.train.sources import find_sources

    data = make_folder(tmp_path / "set", n=3, size=40)
    a = checkpoint(tmp_path / "a.safetensors", 0)
    out = tmp_path / "cmp.json"
    assert compare.main([str(data), str(a), str(a), "--tta-new", "flips", "--post-new", "largest", "fill",
                         "--json", str(out), "--threads", "1"]) == 0
    new = json.loads(out.read_text())["images"]["new"]
    model, sources = load_model(str(a), device="cpu"), find_sources(data)[0]
    opts = PostprocessOptions(largest=True, fill_holes=True)
    for src in sources:  # the NEW side: flipped copies averaged, then the largest component with holes filled
        image, labels = src.load()
        pred = postprocess(segment(image, model, tta="flips").labels, opts) == 1
        truth = labels > 0
        dice = 2 * (pred & truth).sum() / (pred.sum() + truth.sum()) if pred.sum() + truth.sum() else 1.0
        assert abs(new[src.name]["dice"] - dice) < 1e-9
    assert score_held_out(model, sources, {s.name for s in sources}, model.card.preprocess) == \
        json.loads(out.read_text())["images"]["old"]
