"""DistributedDataParallel: 2 CPU processes (gloo) under torchrun follow the single-process loss trend."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from _factories import disk_image, tiny_model
from llm4seg.events import run_to_end
from llm4seg.preprocess import Preprocessing
from llm4seg.train import TrainConfig, fit, from_arrays

pytestmark = pytest.mark.slow  # several processes: not in `make test-fast`

SCRIPT = textwrap.dedent("""
    import json, os, sys
    import torch
    torch.set_num_threads(1)
    from _factories import disk_image, tiny_model
    from llm4seg.events import run_to_end
    from llm4seg.preprocess import Preprocessing
    from llm4seg.train import TrainConfig, fit, from_arrays

    out = sys.argv[1]
    data = from_arrays([disk_image(48, 48, seed=i) for i in range(8)], Preprocessing(size=32))
    model = tiny_model()
    cfg = TrainConfig(steps=STEPS, batch_size=2, lr=0.05, seed=0, device="cpu", val_every=STEPS)
    result = run_to_end(fit(model, data, data, cfg, out=out if os.environ["RANK"] == "0" else None))
    with open(f"{out}.rank{os.environ['RANK']}.json", "w") as f:
        json.dump({"loss": result.history["loss"], "val_iou": result.metrics.get("val_iou"),
                   "head": model.Conv_1x1.weight.flatten().tolist()}, f)
""")
STEPS = 8


def test_two_gloo_processes_match_single_process_trend(tmp_path):
    script = tmp_path / "ddp_train.py"
    script.write_text(SCRIPT.replace("STEPS", str(STEPS)))
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(root / "src"), str(root / "tests"), os.environ.get("PYTHONPATH", "")])}
    out = tmp_path / "ddp.safetensors"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script), str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads(Path(f"{out}.rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["loss"] == ranks[1]["loss"]          # all-reduced: every rank logs the same loss
    assert ranks[0]["head"] == ranks[1]["head"]          # DDP keeps the replicas identical
    assert ranks[0]["val_iou"] == ranks[1]["val_iou"]
    assert out.is_file() and not Path(f"{out}.rank1").exists()

    torch.set_num_threads(1)
    data = from_arrays([disk_image(48, 48, seed=i) for i in range(8)], Preprocessing(size=32))
    single = run_to_end(fit(tiny_model(), data, None, TrainConfig(steps=STEPS, batch_size=4, lr=0.05, seed=0)))
    a = np.array([v for _, v in ranks[0]["loss"]])
    b = np.array([v for _, v in single.history["loss"]])
    # same samples and augmentations per global step; only BatchNorm sees 2 instead of 4 images per batch
    assert abs(a[0] - b[0]) < 0.05 * b[0]
    assert np.abs(a - b).max() < 0.1
    assert a[-2:].mean() < a[:2].mean() and b[-2:].mean() < b[:2].mean()
    assert np.corrcoef(a, b)[0, 1] > 0.8
