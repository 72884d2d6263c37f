"""Resumable training state in one safetensors file (never pickle), written atomically.

Holds the last weights (every tensor except the frozen LLM layer, which the checkpoint has), the
optimiser's tensors, and a JSON header with the step, the training config, best-so-far and history.
Batch order and augmentation are pure functions of (seed, step), so no RNG state is needed.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

__all__ = ["TrainState", "save_state", "load_state", "state_path_for", "STATE_KEY"]

STATE_KEY = "llm4seg.train_state"
STATE_VERSION = 1
FROZEN_PREFIX = "booster.layer."


def state_path_for(checkpoint: str | Path) -> Path:
    """``model.safetensors`` → ``model.train-state.safetensors`` next to it."""
    p = Path(checkpoint)
    stem = p.name[: -len(".safetensors")] if p.name.endswith(".safetensors") else p.name
    return p.with_name(stem + ".train-state.safetensors")


@dataclass
class TrainState:
    """What a resumed run needs besides the checkpoint."""

    step: int
    config: dict[str, Any]
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    best: dict[str, Any] = field(default_factory=dict)
    history: dict[str, list] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


def _atomic_save(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=metadata)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual permissions
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save_state(path: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, *, step: int,
               config: dict[str, Any], param_names: list[str], best: dict[str, Any] | None = None,
               history: dict[str, list] | None = None, extra: dict[str, Any] | None = None) -> Path:
    """Write the training state atomically. ``param_names`` name the optimiser's parameters in order."""
    tensors = {f"model/{k}": v.detach().cpu().contiguous()
               for k, v in model.state_dict().items() if not k.startswith(FROZEN_PREFIX)}
    opt = optimizer.state_dict()
    scalars: dict[str, dict[str, Any]] = {}
    for idx, entry in opt["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim/{idx}/{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(idx), {})[key] = value
    groups = [{k: v for k, v in g.items()} for g in opt["param_groups"]]
    header = {
        "format_version": STATE_VERSION, "step": int(step), "config": config, "param_names": param_names,
        "optimizer": {"param_groups": groups, "scalars": scalars}, "best": best or {}, "history": history or {},
        "extra": extra or {},
    }
    return _atomic_save(tensors, Path(path), {STATE_KEY: json.dumps(header), "format": "pt"})


def load_state(path: str | Path) -> TrainState:
    """Read a training-state file written by :func:`save_state`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"no training state at {path}: resuming needs the .train-state.safetensors file written next to the "
            "checkpoint; to start a new run from the checkpoint's weights use --init instead"
        )
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        if STATE_KEY not in meta:
            raise ValueError(f"{path.name} is not an llm4seg training-state file (no {STATE_KEY} header)")
        header = json.loads(meta[STATE_KEY])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    if header.get("format_version", 0) > STATE_VERSION:
        raise ValueError(f"{path.name} was written by a newer llm4seg: upgrade to resume it")
    model = {k[len("model/"):]: v for k, v in tensors.items() if k.startswith("model/")}
    state: dict[int, dict[str, Any]] = {}
    for k, v in tensors.items():
        if k.startswith("optim/"):
            _, idx, key = k.split("/", 2)
            state.setdefault(int(idx), {})[key] = v
    for idx, entry in header["optimizer"]["scalars"].items():
        state.setdefault(int(idx), {}).update(entry)
    optimizer = {"state": state, "param_groups": header["optimizer"]["param_groups"],
                 "param_names": header["param_names"]}
    return TrainState(step=header["step"], config=header["config"], model=model, optimizer=optimizer,
                      best=header.get("best", {}), history=header.get("history", {}), extra=header.get("extra", {}))


def restore(state: TrainState, model: torch.nn.Module, optimizer: torch.optim.Optimizer, param_names: list[str]) -> None:
    """Load the last weights and the optimiser state; the parameter names must match the saved run."""
    if list(state.optimizer["param_names"]) != list(param_names):
        raise ValueError(
            "the training state trains different parameters than this run (another preset or model?): "
            "resume with the same --preset, or start anew with --init"
        )
    missing = model.load_state_dict(state.model, strict=False)
    bad = [k for k in missing.missing_keys if not k.startswith(FROZEN_PREFIX)] + list(missing.unexpected_keys)
    if bad:
        raise ValueError(f"the training state does not match the model ({', '.join(bad[:3])} …)")
    opt = {"state": state.optimizer["state"], "param_groups": state.optimizer["param_groups"]}
    optimizer.load_state_dict(opt)
