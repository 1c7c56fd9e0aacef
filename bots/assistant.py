"""The default bot: a helpful assistant that remembers the conversation.

It keeps the memory key chinwag used before bots existed (``chinwag``), so an upgrade loses no
history. It has no tools of its own; the MCP servers of ``MCP_CONFIG`` are offered when set.
``SYSTEM_PROMPT`` (or the built-in default) is its persona.
"""

from __future__ import annotations

from bots import Bot

bot = Bot(name="assistant", memory_key="chinwag")
