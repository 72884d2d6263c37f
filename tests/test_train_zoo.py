"""scripts/train_zoo.py: part selection and the validation lists that let `llm4seg evaluate` reproduce a card."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from test_make_models import _tiny_data

ROOT = Path(__file__).resolve().parents[1]


def zoo(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "train_zoo.py"), *args], capture_output=True,
                          text=True, timeout=300)


def test_val_lists_name_the_held_out_items_of_each_2d_part(tmp_path):
    _tiny_data(tmp_path / "data")
    out = tmp_path / "runs" / "m.safetensors"
    proc = zoo("--data", str(tmp_path / "data"), "--parts", "busi", "cvc_clinicdb", "ircad17_liver",
               "--out", str(out), "--val-lists-only", "--threads", "1")
    assert proc.returncode == 0, proc.stderr[-2000:]
    busi = (tmp_path / "runs" / "m.val.busi.txt").read_text().split("\n")[:-1]
    clinic = (tmp_path / "runs" / "m.val.cvc_clinicdb.txt").read_text().split("\n")[:-1]
    assert len(busi) == 1 and busi[0].startswith("case (")  # 20 % of 6, seeded
    assert all((tmp_path / "data" / "busi" / "images" / f"{n}.png").is_file() for n in busi)
    assert len(clinic) == 1 and (tmp_path / "data" / "cvc_clinicdb" / "images" / f"{clinic[0]}.jpg").is_file()
    assert not (tmp_path / "runs" / "m.val.ircad17_liver.txt").exists()  # one volume: split by slice, no list
    assert "busi: 5 training, 1 validation" in proc.stdout
    again = zoo("--data", str(tmp_path / "data"), "--parts", "busi", "--out", str(tmp_path / "again.safetensors"),
                "--val-lists-only", "--threads", "1")
    assert (tmp_path / "again.val.busi.txt").read_text().split("\n")[:-1] == busi  # same split alone or mixed
    bad = zoo("--data", str(tmp_path / "data"), "--parts", "cvc_colondb", "--out", str(out), "--val-lists-only")
    assert bad.returncode != 0 and "unknown part(s) ['cvc_colondb']" in bad.stderr
