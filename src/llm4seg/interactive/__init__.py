"""Correcting a mask with clicks: prompts, the simulated user, ``refine`` and propagation through a volume.

    from llm4seg.interactive import Click, refine
    mask = refine(image, model, [Click(120, 88), Click(40, 60, positive=False)], previous=mask)
"""
from __future__ import annotations

from .clicker import click_session, iou, next_click
from .prompts import Box, Click, click_radius
from .propagate import iter_propagate
from .refine import METHODS, RefineInput, prepare, refine, takes_prompts

__all__ = ["Box", "Click", "METHODS", "RefineInput", "click_radius", "click_session", "iou", "iter_propagate", "next_click",
           "prepare", "refine", "takes_prompts"]
