"""scripts/recipe_folds.py: recipes share the ablation's folds, a time budget sets the steps, runs resume."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from test_train_data import make_folder

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("recipe_folds", ROOT / "scripts" / "recipe_folds.py")
recipes = importlib.util.module_from_spec(spec)
spec.loader.exec_module(recipes)


def test_recipes_train_on_the_same_folds_and_report_against_the_paper(tmp_path, capsys):
    data = make_folder(tmp_path / "busi", n=6, size=40)
    out = tmp_path / "rec"
    argv = ["run", "--data", str(data), "--out", str(out), "--folds", "1", "--steps", "2",
            "--recipes", "paper-sgd", "adamw-2e-3", "--threads", "1"]
    assert recipes.main(argv) == 0
    runs = {p.stem: json.loads(p.read_text()) for p in out.glob("*.json")}
    assert sorted(runs) == ["adamw-2e-3-fold0", "paper-sgd-fold0"]
    assert set(runs["paper-sgd-fold0"]["images"]) == set(runs["adamw-2e-3-fold0"]["images"])  # the same fold
    assert runs["paper-sgd-fold0"]["steps"] == 2 and runs["paper-sgd-fold0"]["probe_s_per_step"] is None
    before = (out / "paper-sgd-fold0.json").stat().st_mtime_ns
    assert recipes.main(argv) == 0 and (out / "paper-sgd-fold0.json").stat().st_mtime_ns == before  # resumes
    capsys.readouterr()
    assert recipes.main(["report", str(out), "--svg", str(tmp_path / "r.svg")]) == 0
    text = capsys.readouterr().out
    assert "Δ vs paper-sgd" in text and "AdamW 2e-3, warm-up + cosine, 128²" in text
    assert "<svg" in (tmp_path / "r.svg").read_text()
    assert recipes.main(["report", str(out), "--recipes", "paper-sgd"]) == 0
    assert "AdamW 2e-3" not in capsys.readouterr().out
    assert recipes.main(["report", str(out), "--reference", "adamw-2e-3"]) == 0
    assert "Δ vs adamw-2e-3" in capsys.readouterr().out


def test_a_time_budget_sets_the_number_of_steps(tmp_path):
    data = make_folder(tmp_path / "busi", n=6, size=40)
    out = tmp_path / "rec"
    argv = ["run", "--data", str(data), "--out", str(out), "--folds", "1", "--minutes", "0.001",
            "--recipes", "adamw-2e-3-b4", "--threads", "1"]
    assert recipes.main(argv) == 0
    run = json.loads((out / "adamw-2e-3-b4-fold0.json").read_text())
    assert run["steps"] == 10 and run["probe_s_per_step"] > 0  # 0.06 s buys fewer than the 10-step floor
    budget = json.loads((out / "steps.json").read_text())
    assert budget["adamw-2e-3-b4"]["steps"] == 10 and budget["adamw-2e-3-b4"]["minutes"] == 0.001
    budget["adamw-2e-3-b4"]["steps"] = 12  # the stored count is what later folds and sessions train
    (out / "steps.json").write_text(json.dumps(budget))

    def fold(k: int, minutes: str = "0.001") -> list[str]:
        return ["run", "--data", str(data), "--out", str(out), "--folds", "3", "--only-folds", str(k),
                "--minutes", minutes, "--recipes", "adamw-2e-3-b4", "--threads", "1"]

    assert recipes.main(fold(1)) == 0
    assert json.loads((out / "adamw-2e-3-b4-fold1.json").read_text())["steps"] == 12
    with pytest.raises(SystemExit, match="another --minutes"):
        recipes.main(fold(2, "0.002"))
    config = recipes.train_config("adamw-2e-3-b4", 50, 0, 1)
    assert config.batch_size == 4 and config.warmup_steps == 5 and config.select == "last"


def test_only_folds_runs_a_part_of_the_study(tmp_path):
    data = make_folder(tmp_path / "busi", n=6, size=40)
    out = tmp_path / "rec"
    argv = ["run", "--data", str(data), "--out", str(out), "--folds", "2", "--only-folds", "1", "--steps", "2",
            "--recipes", "paper-sgd", "--threads", "1"]
    assert recipes.main(argv) == 0
    assert sorted(p.stem for p in out.glob("*.json")) == ["paper-sgd-fold1"]
