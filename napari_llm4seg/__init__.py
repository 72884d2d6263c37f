"""napari-llm4seg: LLM4Seg segmentation widgets, readers, writers and sample data for napari.

Importing the package is cheap: napari, Qt and torch are only imported when a contribution is used.
"""
from __future__ import annotations

import importlib
from typing import Any

try:
    from importlib.metadata import PackageNotFoundError, version

    __version__ = version("napari-llm4seg")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0+unknown"

_LAZY = {
    "get_reader": "napari_llm4seg._reader",
    "sample_root": "napari_llm4seg._sample_data",
    "SegmentWidget": "napari_llm4seg._segment_widget",
    "FineTuneWidget": "napari_llm4seg._finetune_widget",
    "LLM4SegPanel": "napari_llm4seg._panel",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
