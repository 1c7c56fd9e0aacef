"""Home Assistant as a tool pack, over its REST API (httpx).

``HomeAssistantSettings`` (``HOMEASSISTANT_*``) imports no vendor library; the pack itself,
:class:`~adapters.homeassistant.tools.HomeAssistantTools`, loads httpx on first access.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from adapters.homeassistant.settings import HomeAssistantSettings

if TYPE_CHECKING:
    from adapters.homeassistant.client import HomeAssistantError
    from adapters.homeassistant.tools import HomeAssistantTools

__all__ = ["HomeAssistantError", "HomeAssistantSettings", "HomeAssistantTools"]

_LAZY = {
    "HomeAssistantError": "adapters.homeassistant.client",
    "HomeAssistantTools": "adapters.homeassistant.tools",
}


def __getattr__(name: str) -> Any:
    """Import the pack's modules when one of their classes is first asked for (PEP 562)."""
    module = _LAZY.get(name)
    if module is not None:
        return getattr(importlib.import_module(module), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
