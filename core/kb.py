"""The knowledge base as a conversation uses it: scopes, retrieval, the prompt block, sources.

:class:`KnowledgeBase` is the vendor-free service the engine is given (``Engine(knowledge=)``):
it knows which knowledge bases a message can see (:meth:`KnowledgeBase.scopes_for`: the
bot's, the chat's and the user's own), retrieves the chunks for a user message once per
message (:meth:`KnowledgeBase.retrieve`), and adds, lists and removes documents for the chat
commands. Reading files, embedding and storing are behind the ports of
:mod:`core.knowledge` and the ``add_file`` callable the composition root injects, so nothing
here imports a vendor library.

The rest are pure functions the reply path uses:

* :func:`render_documents` - the numbered block the system prompt carries, with the
  instruction to cite ``[n]`` and to say when the documents do not contain the answer;
* :func:`fit_documents` - building a prompt whose history is trimmed first and whose
  documents are dropped whole, lowest-ranked first, only when even no history fits;
* :func:`sources_for` / :func:`sources_text` - the ``Sources:`` list the bot renders under an
  answer from the chunks it cited (never from model-written titles);
* :func:`retrieval_record` / :func:`source_records` - what is stored with the reply
  (``extra["retrieval"]``, ``extra["sources"]``) for ``/why`` and ``/export``.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol, TypeVar

from core.errors import ContextTooLong
from core.knowledge import (
    AddReport,
    DocumentInfo,
    Embedder,
    Hit,
    KbScope,
    KnowledgeStore,
    Retrieval,
    ScopeKind,
    Source,
)
from core.settings import KbSettings
from core.types import IncomingMessage

_log = logging.getLogger(__name__)

KB_GUIDANCE: Final = (
    "Answer from the documents above when they are relevant. Cite every document you use "
    "with its number in square brackets, like [1] or [2], right after what it supports. "
    "Do not write a list of sources: it is added for you. If the documents do not contain "
    "the answer, say so plainly, and say so before anything you answer without them."
)
"""Follows the numbered documents in the system prompt."""

NOTHING_RELEVANT: Final = (
    "I found nothing relevant to that in the documents I have, so I can't answer it from them."
)
"""What a ``KB_STRICT`` bot says (without asking the model) when no chunk is relevant."""

SNIPPET_CHARS: Final = 160
"""How much of each retrieved chunk ``extra["retrieval"]`` keeps for ``/why``."""

_CITATION = re.compile(r"\[(\d{1,3}(?:\s*,\s*\d{1,3})*)\]")


class AddFile(Protocol):
    """Reads, chunks, embeds and stores one file (the composition root's ingestor)."""

    def __call__(
        self, path: Path, scope: KbScope, added_by: str, name: str
    ) -> Awaitable[AddReport]:
        """Add the file at ``path`` to ``scope``; return the short report.

        Args:
            path: the downloaded file (private, removed after the call).
            scope: the knowledge base it goes into.
            added_by: ``"<platform>:<user id>"``.
            name: the file name the user sent (its extension says the format).

        Raises ``KbError`` with a one-line reason a person can act on (an unsupported
        format, no extractable text, another embedder's vectors in the scope).
        """
        ...


@dataclass(frozen=True, slots=True)
class Grounding:
    """A user message's retrieval, shared by every model round answering it.

    Attributes:
        retrieval: what the search found (``used``: the chunks go into the prompt).
        searched: whether any knowledge base in scope held a document (else nothing was
            searched, and ``KB_STRICT`` does not apply).
    """

    retrieval: Retrieval
    searched: bool = True

    @property
    def hits(self) -> Sequence[Hit]:
        """The chunks the prompt carries, best first (none below ``KB_MIN_SCORE``)."""
        return self.retrieval.hits if self.retrieval.used else ()


@dataclass(slots=True)
class _Started:
    done: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class KnowledgeBase:
    """The knowledge bases a bot's conversations answer from.

    Args:
        store: documents, chunks and vectors (started and closed by the caller).
        embedder: embeds questions; started here on the first search that needs it (so a
            bot with no documents in scope never loads a model); closed by the caller.
        settings: ``KB_*``.
        add_file: ingests a file for ``/kb add`` (without it, chats cannot add documents).
    """

    def __init__(
        self,
        store: KnowledgeStore,
        embedder: Embedder,
        settings: KbSettings,
        *,
        add_file: AddFile | None = None,
    ) -> None:
        self.store = store
        self.embedder = embedder
        self.settings = settings
        self.add_file = add_file
        self._started = _Started()

    # --- scopes ----------------------------------------------------------------------------

    @staticmethod
    def own_scope(bot: str, msg: IncomingMessage) -> KbScope:
        """The user's own knowledge base."""
        return KbScope.of_user(bot, msg.platform, msg.user_id)

    @staticmethod
    def chat_scope(bot: str, msg: IncomingMessage) -> KbScope:
        """The chat's knowledge base."""
        return KbScope.of_chat(bot, msg.platform, msg.chat_id)

    def scopes_for(self, bot: str, msg: IncomingMessage) -> list[KbScope]:
        """What ``msg`` may read: the bot's documents, the chat's and the user's own."""
        scopes = [KbScope.of_bot(bot)]
        if not msg.is_private:
            scopes.append(self.chat_scope(bot, msg))
        scopes.append(self.own_scope(bot, msg))
        return scopes

    def removable_scopes(self, bot: str, msg: IncomingMessage, *, admin: bool) -> list[KbScope]:
        """What ``msg``'s author may remove from: their own; admins the bot's and chat's too."""
        own = [self.own_scope(bot, msg)]
        return self.scopes_for(bot, msg) if admin else own

    # --- retrieval -------------------------------------------------------------------------

    async def _start_embedder(self) -> None:
        started = self._started
        if started.done:
            return
        async with started.lock:
            if not started.done:
                await self.embedder.start()
                started.done = True

    async def retrieve(self, bot: str, msg: IncomingMessage, text: str) -> Grounding:
        """Search the knowledge bases ``msg`` may read for ``text`` (once per user message).

        ``used`` is set when the best hit's cosine similarity reaches ``KB_MIN_SCORE``.
        Scopes without documents cost one store read and no embedding.
        """
        scopes = self.scopes_for(bot, msg)
        if not await self.store.documents(scopes):
            return Grounding(Retrieval(text), searched=False)
        await self._start_embedder()
        # The store searches by keywords while the question is embedded.
        vector = self.embedder.embed_query(text)
        hits = await self.store.search(scopes, text, vector, limit=self.settings.top_k)
        best = max((h.score for h in hits), default=0.0)
        used = bool(hits) and best >= self.settings.min_score
        _log.debug("retrieved %d chunk(s), best score %.3f, used=%s", len(hits), best, used)
        return Grounding(Retrieval(text, tuple(hits), used))

    # --- documents ------------------------------------------------------------------------

    async def documents(self, bot: str, msg: IncomingMessage) -> list[DocumentInfo]:
        """The documents ``msg`` may read, oldest first."""
        return await self.store.documents(self.scopes_for(bot, msg))

    async def remove(
        self, bot: str, msg: IncomingMessage, document_id: int, *, admin: bool
    ) -> bool:
        """Remove a document the author may remove; whether it was removed."""
        scopes = self.removable_scopes(bot, msg, admin=admin)
        return await self.store.remove_document(document_id, scopes)

    async def forget(self, bot: str, platform: str, user_id: str) -> int:
        """Delete a user's own documents (``/forget``); return how many."""
        return await self.store.forget_owner(bot, f"{platform}:{user_id}")


# --- the prompt -----------------------------------------------------------------------------


def _heading(number: int, hit: Hit) -> str:
    where = hit.where
    if where.startswith("§"):
        return f"[{number}] {hit.title} {where}"
    return f"[{number}] {hit.title}, {where}" if where else f"[{number}] {hit.title}"


def render_documents(hits: Sequence[Hit]) -> str:
    """The block the system prompt carries: chunks numbered [1]..[k], then how to cite."""
    parts = ["Documents from the knowledge base:"]
    for number, hit in enumerate(hits, 1):
        parts.append(f"{_heading(number, hit)}\n{hit.text.strip()}")
    parts.append(KB_GUIDANCE)
    return "\n\n".join(parts)


def with_documents(system_prompt: str, hits: Sequence[Hit]) -> str:
    """``system_prompt`` followed by the documents block (unchanged without hits)."""
    return f"{system_prompt}\n\n{render_documents(hits)}" if hits else system_prompt


_P = TypeVar("_P")


async def fit_documents(
    build: Callable[[str], Awaitable[_P]], system_prompt: str, hits: Sequence[Hit]
) -> tuple[_P, int]:
    """Build a prompt with as many of ``hits`` as fit; return it and how many it holds.

    ``build(system)`` fits the history into the budget after ``system`` (trimming the
    history first) and raises ``ContextTooLong`` when not even the newest message fits: then
    the lowest-ranked chunk is dropped whole and the prompt built again. A chunk is never
    cut; with no chunk left the error is raised.
    """
    count = len(hits)
    while True:
        try:
            return await build(with_documents(system_prompt, hits[:count])), count
        except ContextTooLong:
            if count == 0:
                raise
            count -= 1
            _log.info("documents do not fit the prompt: dropping chunk %d", count + 1)


# --- sources --------------------------------------------------------------------------------


def cited(text: str, count: int) -> list[int]:
    """The numbers ``[n]`` (or ``[n, m]``) in ``text`` within 1..``count``, ascending."""
    numbers: set[int] = set()
    for match in _CITATION.finditer(text):
        for part in match.group(1).split(","):
            number = int(part)
            if 1 <= number <= count:
                numbers.add(number)
    return sorted(numbers)


def sources_for(text: str, hits: Sequence[Hit]) -> list[Source]:
    """The sources of an answer: the chunks it cited, or every chunk of the prompt.

    An out-of-range ``[n]`` is dropped; titles and pages come from the chunks, never from
    the model's text.
    """
    numbers = cited(text, len(hits)) or list(range(1, len(hits) + 1))
    return [
        Source(n, hits[n - 1].title, hits[n - 1].page, hits[n - 1].heading, hits[n - 1].document_id)
        for n in numbers
    ]


def sources_text(sources: Sequence[Source]) -> str:
    """``Sources:`` and one line per source (the bot's own message under the answer)."""
    return "\n".join(["Sources:", *(s.line() for s in sources)])


def source_records(sources: Sequence[Source]) -> list[dict[str, Any]]:
    """Sources as stored with the reply (``extra["sources"]``)."""
    return [
        {
            "number": s.number,
            "title": s.title,
            "page": s.page,
            "heading": s.heading,
            "document_id": s.document_id,
        }
        for s in sources
    ]


def sources_of(extra: Mapping[str, Any] | None) -> list[Source]:
    """The sources stored with a reply (none for a reply without documents)."""
    found: list[Source] = []
    for item in (extra or {}).get("sources") or ():
        if isinstance(item, Mapping) and isinstance(item.get("title"), str):
            found.append(
                Source(
                    int(item.get("number") or 0),
                    str(item["title"]),
                    item.get("page"),
                    item.get("heading"),
                    item.get("document_id"),
                )
            )
    return found


def retrieval_record(grounding: Grounding, in_prompt: int) -> dict[str, Any]:
    """The retrieval as stored with the reply (``extra["retrieval"]``, for ``/why``).

    Compact: per chunk its rank, document, title, place, score and a short snippet.
    """
    retrieval = grounding.retrieval
    return {
        "used": retrieval.used,
        "in_prompt": in_prompt,
        "hits": [
            {
                "rank": number,
                "document_id": hit.document_id,
                "chunk_id": hit.chunk_id,
                "title": hit.title,
                "where": hit.where,
                "score": round(hit.score, 4),
                "keyword": hit.keyword,
                "snippet": " ".join(hit.text.split())[:SNIPPET_CHARS],
            }
            for number, hit in enumerate(retrieval.hits, 1)
        ],
    }


def scope_label(scope: KbScope) -> str:
    """How ``/kb`` names a scope."""
    if scope.kind is ScopeKind.BOT:
        return "bot"
    if scope.kind is ScopeKind.CHAT:
        return "this chat"
    return "yours"


__all__ = [
    "KB_GUIDANCE",
    "NOTHING_RELEVANT",
    "AddFile",
    "Grounding",
    "KnowledgeBase",
    "cited",
    "fit_documents",
    "render_documents",
    "retrieval_record",
    "scope_label",
    "source_records",
    "sources_for",
    "sources_of",
    "sources_text",
    "with_documents",
]
