"""scripts/ablation_folds.py: folds are disjoint and shared by every arm, runs resume, the report pairs images."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np

from test_train_data import make_folder

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("ablation_folds", ROOT / "scripts" / "ablation_folds.py")
ablation = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ablation)


def test_folds_partition_the_names():
    names = [f"n{i}" for i in range(11)]
    folds = ablation.folds_of(names, 3, seed=0)
    assert sorted(sum(folds, [])) == sorted(names) and sorted(len(f) for f in folds) == [3, 4, 4]
    assert folds == ablation.folds_of(names, 3, seed=0) and folds != ablation.folds_of(names, 3, seed=1)


def test_run_scores_each_held_out_image_once_and_report_pairs_them(tmp_path, capsys):
    data = make_folder(tmp_path / "busi", n=6, size=40)
    out = tmp_path / "abl"
    argv = ["run", "--data", str(data), "--out", str(out), "--folds", "2", "--steps", "2", "--size", "32",
            "--arms", "baseline", "adapters", "--threads", "1"]
    assert ablation.main(argv) == 0
    runs = {p.name: json.loads(p.read_text()) for p in out.glob("*.json")}
    assert sorted(runs) == ["adapters-fold0.json", "adapters-fold1.json", "baseline-fold0.json", "baseline-fold1.json"]
    for arm in ("baseline", "adapters"):
        held = [set(runs[f"{arm}-fold{k}.json"]["images"]) for k in (0, 1)]
        assert not held[0] & held[1] and len(held[0] | held[1]) == 6  # every image scored once per arm
    before = (out / "baseline-fold0.json").stat().st_mtime_ns
    assert ablation.main(argv) == 0 and (out / "baseline-fold0.json").stat().st_mtime_ns == before  # resumes
    text, summary = ablation.report(out)
    assert "CMUNeXt baseline" in text and "adapters only" in text
    base = {n: v["iou"] for k in (0, 1) for n, v in runs[f"baseline-fold{k}.json"]["images"].items()}
    arm = {n: v["iou"] for k in (0, 1) for n, v in runs[f"adapters-fold{k}.json"]["images"].items()}
    expected = float(np.mean([arm[n] - base[n] for n in base]))
    assert abs(summary["adapters"]["delta"] - expected) < 1e-9
    lo, hi = summary["adapters"]["ci"]
    assert lo <= expected <= hi
    ablation.plot(out, tmp_path / "plot.svg")
    svg = (tmp_path / "plot.svg").read_text()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg and "2 fold(s)" in svg


def test_bootstrap_interval_covers_a_known_mean():
    diffs = np.random.default_rng(0).normal(0.05, 0.2, size=400)
    lo, hi = ablation.bootstrap_ci(diffs)
    assert lo < 0.05 < hi and 0.02 < hi - lo < 0.06  # ≈ ±1.96·0.2/√400 = ±0.0196
