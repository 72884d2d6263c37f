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
