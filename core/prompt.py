"""Build the prompt for one reply: the system prompt, then the most recent turns that fit.

Reads history newest-first, a page at a time, so the cost depends on the context window and
not on how much history a conversation holds. Trimming never deletes stored turns.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from core.errors import ContextTooLong
from core.ports import LLMBackend, MemoryStore
from core.types import ChatMessage, Role, StoredMessage

_PAGE = 64


@dataclass(slots=True)
class Prompt:
    """A prompt ready for the backend, with what it cost.

    Attributes:
        messages: system message first, then history oldest to newest.
        tokens: the prompt's size in the backend's tokens (content plus per-message overhead).
        turns: how many stored messages it includes.
        complete: whether the whole conversation fitted.
    """

    messages: list[ChatMessage]
    tokens: int
    turns: int
    complete: bool


def speaker_name(extra: Mapping[str, Any] | None, author_id: str | None) -> str:
    """The name to show the model for a user message in a shared memory."""
    if extra and isinstance(extra.get("author_name"), str) and extra["author_name"]:
        return str(extra["author_name"])
    return author_id or "user"


class PromptBuilder:
    """Builds prompts for one backend; caches only token counts of system prompts."""

    def __init__(self, backend: LLMBackend, store: MemoryStore) -> None:
        self._backend = backend
        self._store = store
        self._system_counts: dict[tuple[str, str], int] = {}

    async def count(self, message: StoredMessage, model: str, tokenizer: str) -> int:
        """The message's content tokens, recounted if stored with another tokenizer."""
        if message.token_count is not None and message.tokenizer == tokenizer:
            return message.token_count
        return await self._backend.count_tokens(message.content, model)

    async def _system_tokens(self, text: str, model: str) -> int:
        key = (model, text)
        cached = self._system_counts.get(key)
        if cached is None:
            cached = await self._backend.count_tokens(text, model)
            if len(self._system_counts) > 1024:
                self._system_counts.clear()
            self._system_counts[key] = cached
        return cached

    async def build(
        self,
        *,
        conversation_id: int,
        before_seq: int | None,
        system_prompt: str,
        model: str,
        budget: int,
        shared: bool,
    ) -> Prompt:
        """Fit the system prompt and the newest turns (seq < ``before_seq``) into ``budget``.

        Raises:
            ContextTooLong: if even the system prompt and the newest message don't fit.
        """
        backend = self._backend
        overhead = backend.message_overhead(model)
        tokenizer = backend.tokenizer_name(model)
        used = await self._system_tokens(system_prompt, model) + overhead + 3  # reply priming
        picked: list[ChatMessage] = []
        complete = True
        cursor = before_seq
        while True:
            page = await self._store.recent_messages(
                conversation_id, limit=_PAGE, before_seq=cursor
            )
            for message in page:
                cost = await self.count(message, model, tokenizer) + overhead
                content = message.content
                if shared and message.role is Role.USER:
                    name = speaker_name(message.extra, message.author_id)
                    content = f"{name}: {content}"
                    cost += len(name) // 3 + 2
                if used + cost > budget:
                    complete = False
                    break
                used += cost
                picked.append(ChatMessage(role=message.role, content=content))
            else:
                if len(page) == _PAGE:
                    cursor = page[-1].seq
                    continue
            break
        if not picked and not complete:
            raise ContextTooLong(
                limit=budget, message="the newest message alone exceeds the budget"
            )
        picked.reverse()
        messages = [ChatMessage(role=Role.SYSTEM, content=system_prompt), *picked]
        return Prompt(messages=messages, tokens=used, turns=len(picked), complete=complete)
