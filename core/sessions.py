"""What the engine keeps per conversation slot between messages, in front of the store.

The current conversation id and the preferences (persona, model) of recently active slots
are cached in bounded LRU maps, so an ordinary message costs no extra store read for them.
The store stays the truth: every change is written through, and ``/forget`` drops the
caches whole. The model a slot is answered by and its token budget follow from these.

The budget splits the model's context window between the prompt and the reply. With
``LLM_MAX_REPLY_TOKENS`` set, that many tokens (at most half the window) are kept free and
asked for as the request's ``max_tokens``, so prompt and reply always fit. Unset, a quarter
of the window (at most :data:`DEFAULT_REPLY_RESERVE`) is kept free and the request names no
limit: an API model uses its own, the local backend half its context.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Final, TypeVar

from core.ports import LLMBackend, MemoryStore
from core.settings import LLMSettings
from core.types import ConversationKey, Preferences

_CACHE_SIZE = 10_000

DEFAULT_REPLY_RESERVE: Final = 4096
"""The most tokens kept free for the reply when ``LLM_MAX_REPLY_TOKENS`` is unset."""


@dataclass(frozen=True, slots=True)
class Budget:
    """How one reply may spend a model's context window.

    Attributes:
        window: the context window it was computed from (the backend's, capped).
        prompt: the most tokens the prompt may take.
        max_tokens: the request's reply limit; ``None`` leaves it to the backend.
    """

    window: int
    prompt: int
    max_tokens: int | None

    @classmethod
    def of(cls, window: int, max_reply_tokens: int | None) -> Budget:
        """The split of ``window`` for a reply limit of ``max_reply_tokens`` (``None``: unset)."""
        if max_reply_tokens is None:
            return cls(window, window - min(window // 4, DEFAULT_REPLY_RESERVE), None)
        reserve = min(max_reply_tokens, window // 2)
        return cls(window, window - reserve, reserve)

    def halved(self) -> Budget:
        """The same with half the prompt (after the server refused a prompt as too long)."""
        return replace(self, prompt=self.prompt // 2)


V = TypeVar("V")


def _remember(
    cache: OrderedDict[ConversationKey, V], key: ConversationKey, value: V, size: int
) -> None:
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > size:
        cache.popitem(last=False)


class Sessions:
    """Conversation ids and preferences per slot, cached; models and budgets.

    Args:
        backend: the LLM backend (its models and context windows).
        store: where conversations and preferences are stored.
        llm: ``LLM_CONTEXT_WINDOW`` and ``LLM_MAX_REPLY_TOKENS``.
        cached: keep ids and preferences in memory. Off where several processes serve the
            same conversations (queue workers): another one may change them (``/model``,
            ``/reset``, ``/forget``) at any time, so each message reads them.
    """

    def __init__(
        self, backend: LLMBackend, store: MemoryStore, llm: LLMSettings, *, cached: bool = True
    ) -> None:
        self._size = _CACHE_SIZE if cached else 0
        self._backend = backend
        self._store = store
        self._llm = llm
        self._conversations: OrderedDict[ConversationKey, int] = OrderedDict()
        self._preferences: OrderedDict[ConversationKey, Preferences] = OrderedDict()

    async def conversation_id(self, key: ConversationKey) -> int:
        """The id of ``key``'s current conversation (created by the store if none)."""
        cached = self._conversations.get(key)
        if cached is not None:
            self._conversations.move_to_end(key)
            return cached
        conversation = await self._store.current_conversation(key)
        _remember(self._conversations, key, conversation.id, self._size)
        return conversation.id

    async def new_conversation(self, key: ConversationKey) -> int:
        """Start a new conversation for ``key`` (``/reset``) and return its id."""
        conversation = await self._store.new_conversation(key)
        _remember(self._conversations, key, conversation.id, self._size)
        return conversation.id

    async def preferences(self, key: ConversationKey) -> Preferences:
        """``key``'s preferences (the defaults when none were saved)."""
        cached = self._preferences.get(key)
        if cached is None:
            cached = await self._store.get_preferences(key)
            _remember(self._preferences, key, cached, self._size)
        return cached

    async def save_preferences(self, key: ConversationKey, prefs: Preferences) -> None:
        """Store ``prefs`` for ``key``; they apply from the next message."""
        await self._store.save_preferences(key, prefs)
        _remember(self._preferences, key, prefs, self._size)

    def clear(self) -> None:
        """Forget every cached id and preference (after ``/forget``)."""
        self._conversations.clear()
        self._preferences.clear()

    def model_for(self, prefs: Preferences) -> str:
        """The model chosen in ``prefs`` if the backend still offers it, else the default."""
        models = self._backend.models()
        if prefs.model and prefs.model in models:
            return prefs.model
        return self._backend.default_model

    def window(self, model: str) -> int:
        """``model``'s context window as the backend knows it now, capped by the setting."""
        window = self._backend.context_window(model)
        if self._llm.context_window:
            window = min(window, self._llm.context_window)
        return window

    def budget(self, model: str) -> Budget:
        """The prompt and reply budget for ``model`` from its current window (see above)."""
        return Budget.of(self.window(model), self._llm.max_reply_tokens)


__all__ = ["DEFAULT_REPLY_RESERVE", "Budget", "Sessions"]
