"""What the LLM4Seg widgets of one viewer share, without looking for each other through Qt.

The Segment widget registers itself here when it is built; the Fine-tune widget asks the session for it (its
model, device and CT window) and hands fine-tuned weights back through it.
"""
from __future__ import annotations

import weakref
from typing import Any

from ._layers import unwrap

_SESSIONS: dict[int, "Session"] = {}


class Session:
    """The shared state of one viewer's LLM4Seg widgets (held weakly: closing them frees everything)."""

    def __init__(self, viewer: Any) -> None:
        self._viewer = weakref.ref(viewer)
        self._segment: weakref.ref | None = None

    @classmethod
    def of(cls, viewer: Any) -> "Session":
        """The session of ``viewer`` (created on first use)."""
        for key in [k for k, s in _SESSIONS.items() if s._viewer() is None]:
            del _SESSIONS[key]  # viewers that are gone
        session = _SESSIONS.get(id(viewer))
        if session is None or session._viewer() is not viewer:
            session = _SESSIONS[id(viewer)] = cls(viewer)
        return session

    @property
    def segment(self) -> Any:
        """The viewer's Segment widget, or None (never built, or closed)."""
        widget = self._segment() if self._segment is not None else None
        try:
            if widget is not None:
                widget.objectName()  # raises RuntimeError once Qt deleted it
        except RuntimeError:
            return None
        return widget

    @segment.setter
    def segment(self, widget: Any) -> None:
        self._segment = weakref.ref(widget) if widget is not None else None

    def forget(self, widget: Any) -> None:
        """``widget`` is closing: it no longer serves the session."""
        if self.segment is widget:
            self._segment = None


PLUGIN, SEGMENT_WIDGET = "napari-llm4seg", "LLM4Seg: Segment"


def find_segment_widget(viewer: Any) -> Any:
    """The Segment widget of ``viewer``'s LLM4Seg session, or None."""
    return Session.of(unwrap(viewer)).segment
