"""Settings remembered across sessions (an INI file in the user's config folder, via QSettings)."""
from __future__ import annotations

from typing import Any

from qtpy.QtCore import QSettings

ORGANIZATION = "napari-llm4seg"
MAX_RECENT = 8


class WidgetSettings:
    """Typed access to one widget's QSettings group (e.g. "segment")."""

    def __init__(self, application: str = "segment") -> None:
        self._qs = QSettings(QSettings.Format.IniFormat, QSettings.Scope.UserScope, ORGANIZATION, application)

    def get(self, key: str, default: Any = None) -> Any:
        """The stored value converted to the type of ``default`` (str, bool, int, float or list)."""
        value = self._qs.value(key, default)
        if value is None or default is None:
            return value
        try:
            if isinstance(default, bool):
                return value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes")
            if isinstance(default, (int, float)):
                return type(default)(value)
            if isinstance(default, list):
                return [str(v) for v in value] if isinstance(value, (list, tuple)) else ([str(value)] if value else [])
            return str(value)
        except (TypeError, ValueError):
            return default

    def set(self, key: str, value: Any) -> None:
        self._qs.setValue(key, value)

    def sync(self) -> None:
        self._qs.sync()

    def add_recent(self, key: str, item: str) -> list[str]:
        """Put ``item`` first in the list stored under ``key`` (no duplicates, at most MAX_RECENT)."""
        items = [item] + [i for i in self.get(key, []) if i != item]
        self.set(key, items[:MAX_RECENT])
        return items[:MAX_RECENT]

    @property
    def path(self) -> str:
        return self._qs.fileName()
