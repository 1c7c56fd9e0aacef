"""The knowledge base the chat end-to-end tests run: ``bots.app.build_knowledge`` itself.

The composition root's wiring (``SqlKnowledgeStore`` on the memory store, ``Ingestor`` with
``KB_CHUNK_*``, the ``add_file`` that names an upload's source) is used as it is; only the
embedder is the deterministic ``HashingEmbedder`` (the real model is covered elsewhere). A
2-page PDF whose second page answers :data:`QUESTION` is what the admin uploads.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from adapters.discord.settings import DiscordSettings
from adapters.memory.settings import MemorySettings
from adapters.memory.store import SqlMemoryStore
from adapters.telegram.settings import TelegramSettings
from bots.app import Settings, build_knowledge
from core.kb import KnowledgeBase
from core.settings import AccessSettings, CoreSettings, KbSettings, LLMSettings
from tests.adapters.kb.pdfs import text_pdf
from tests.fakes.embedder import HashingEmbedder

PAGE_1 = " ".join(f"Unpack the router and connect the antenna to socket {n}." for n in range(1, 14))
PAGE_2 = (
    "Error E-4711 means the cooling fan is stuck. Switch the router off and clean the "
    "cooling fan with a soft brush, then switch it on again."
)
QUESTION = "What does error E-4711 mean for the cooling fan?"


def router_pdf(folder: Path) -> bytes:
    """The bytes of a 2-page PDF: setup on page 1, error E-4711 on page 2."""
    return text_pdf(folder / "built.pdf", [PAGE_1, PAGE_2]).read_bytes()


def wired_knowledge(
    store: SqlMemoryStore, monkeypatch: pytest.MonkeyPatch, **kb: Any
) -> tuple[KnowledgeBase, HashingEmbedder]:
    """``build_knowledge`` on ``store`` with ``KB_*`` = ``kb`` and the hashing embedder."""
    embedder = HashingEmbedder()
    monkeypatch.setattr("bots.kb.build_embedder", lambda *args: embedder)
    settings = Settings(
        env_file=None,
        core=CoreSettings(_env_file=None),
        llm=LLMSettings(_env_file=None),
        access=AccessSettings(_env_file=None),
        memory=MemorySettings(_env_file=None),
        telegram=TelegramSettings(_env_file=None),
        discord=DiscordSettings(_env_file=None),
        kb=KbSettings(_env_file=None, **kb),
    )
    return build_knowledge(settings, store), embedder


def system_prompt(body: Mapping[str, Any]) -> str:
    """The system message of a chat completion request."""
    return str(next(m["content"] for m in body["messages"] if m["role"] == "system"))


__all__ = ["PAGE_2", "QUESTION", "router_pdf", "system_prompt", "wired_knowledge"]
