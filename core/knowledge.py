"""The knowledge base: documents a bot answers from, and the ports that store and embed them.

A document belongs to a bot and a :class:`KbScope`: the whole bot (added by admins), one chat,
or one user (the same scopes as memory). It is read into :class:`ChunkDraft` pieces (text with
its title, page or heading path and position, for citations), each embedded by an
:class:`Embedder` and stored by a :class:`KnowledgeStore` together with the embedder's id and
dimension (mixing models is refused; ``chinwag kb reindex`` re-embeds). A question is answered
from the chunks a :meth:`KnowledgeStore.search` returns: dense vectors fused with keyword
search, filtered by scope before ranking.

Nothing here imports a vendor library: readers (PDF, HTML), embedders (ONNX, OpenAI) and the
SQL store live in ``adapters/``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Protocol, runtime_checkable


class ScopeKind(StrEnum):
    """Whose a knowledge base is."""

    BOT = "bot"  # every conversation of the bot (documents added by admins or the CLI)
    CHAT = "chat"  # one chat (a group's shared documents)
    USER = "user"  # one user, in every chat


@dataclass(frozen=True, slots=True)
class KbScope:
    """One knowledge base: a bot's, a chat's or a user's.

    ``owner`` is ``""`` for the bot scope, ``"<platform>:<chat id>"`` for a chat and
    ``"<platform>:<user id>"`` for a user.
    """

    bot: str
    kind: ScopeKind
    owner: str = ""

    @staticmethod
    def of_bot(bot: str) -> KbScope:
        """The bot-wide knowledge base."""
        return KbScope(bot, ScopeKind.BOT, "")

    @staticmethod
    def of_chat(bot: str, platform: str, chat_id: str) -> KbScope:
        """A chat's knowledge base."""
        return KbScope(bot, ScopeKind.CHAT, f"{platform}:{chat_id}")

    @staticmethod
    def of_user(bot: str, platform: str, user_id: str) -> KbScope:
        """A user's own knowledge base."""
        return KbScope(bot, ScopeKind.USER, f"{platform}:{user_id}")


@dataclass(frozen=True, slots=True)
class ChunkDraft:
    """A piece of a document, before it is embedded and stored.

    Attributes:
        text: the chunk's text (about ``KB_CHUNK_CHARS`` characters, paragraphs kept whole).
        position: its order in the document, from 0.
        page: the page it starts on (PDF), from 1.
        heading: the heading path it sits under (Markdown, HTML): ``"Setup > Network"``.
    """

    text: str
    position: int
    page: int | None = None
    heading: str | None = None


@dataclass(frozen=True, slots=True)
class DocumentInfo:
    """A stored document (without its chunks).

    Attributes:
        id: the store's id (what ``/kb remove ID`` takes).
        scope: whose it is.
        title: shown in citations: the document's own title, else its file name.
        source: where it came from: a file path (CLI) or ``"<platform> upload: name"``.
        content_hash: SHA-256 of the file's bytes; re-adding the same bytes changes nothing.
        chunks: how many chunks it has.
        pages: pages (PDF) or ``None``.
        embedder: the id of the model its vectors come from (e.g. ``minilm-l6-int8``).
        dimension: the vectors' length.
        added_by: ``"<platform>:<user id>"``, or ``"cli"``.
    """

    id: int
    scope: KbScope
    title: str
    source: str
    content_hash: str
    chunks: int
    pages: int | None
    embedder: str
    dimension: int
    added_by: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class NewDocument:
    """A document to store: what it is, and its chunks with their vectors (same order)."""

    scope: KbScope
    title: str
    source: str
    content_hash: str
    chunks: Sequence[ChunkDraft]
    vectors: Sequence[Sequence[float]]
    embedder: str
    dimension: int
    added_by: str
    pages: int | None = None


@dataclass(frozen=True, slots=True)
class Hit:
    """A chunk a search found, with why.

    Attributes:
        score: the cosine similarity of its vector with the query's (0 when only keyword
            search found it): what ``KB_MIN_SCORE`` is compared with.
        rank: its place in the fused ranking, from 1.
        keyword: whether keyword search found it too.
    """

    document_id: int
    chunk_id: int
    title: str
    text: str
    position: int
    page: int | None
    heading: str | None
    score: float
    rank: int
    keyword: bool = False

    @property
    def where(self) -> str:
        """How a citation points into the document: ``p. 12``, ``§ Setup > Network``, or ``""``."""
        if self.page is not None:
            return f"p. {self.page}"
        if self.heading:
            return f"§ {self.heading}"
        return ""


@dataclass(frozen=True, slots=True)
class Source:
    """One line of the ``Sources:`` list the bot renders under an answer (``[n] Title, p. N``)."""

    number: int
    title: str
    page: int | None = None
    heading: str | None = None
    document_id: int | None = None

    def line(self) -> str:
        """``[n] Title, p. N`` for a page, ``[n] Title § Heading`` for a section."""
        if self.page is not None:
            return f"[{self.number}] {self.title}, p. {self.page}"
        if self.heading:
            return f"[{self.number}] {self.title} § {self.heading}"
        return f"[{self.number}] {self.title}"


@dataclass(frozen=True, slots=True)
class AddReport:
    """What adding one document did (the short report a user gets)."""

    title: str
    status: str  # "added", "replaced", "unchanged", "empty" (no extractable text)
    document_id: int | None = None
    pages: int | None = None
    chunks: int = 0
    seconds: float = 0.0
    detail: str = ""

    def line(self) -> str:
        """One line: ``Added "Manual" (#3): 12 pages, 80 chunks in 3.1 s``."""
        if self.status == "empty":
            return f'Nothing added from "{self.title}": {self.detail or "no extractable text"}.'
        if self.status == "unchanged":
            return f'"{self.title}" (#{self.document_id}) is already in the knowledge base.'
        verb = "Replaced" if self.status == "replaced" else "Added"
        pages = f"{self.pages} pages, " if self.pages else ""
        return (
            f'{verb} "{self.title}" (#{self.document_id}): {pages}{self.chunks} chunks '
            f"in {self.seconds:.1f} s."
        )


@runtime_checkable
class Embedder(Protocol):
    """Turns text into vectors (unit length, so a dot product is the cosine similarity)."""

    @property
    def id(self) -> str:
        """The model's id, stored with every chunk (``minilm-l6-int8``, ``openai:<model>``)."""
        ...

    @property
    def dimension(self) -> int:
        """The vectors' length."""
        ...

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Vectors for ``texts`` (documents), in order. Raises ``KbError``."""
        ...

    async def embed_query(self, text: str) -> list[float]:
        """The vector of a question. Raises ``KbError``."""
        ...

    async def start(self) -> None:
        """Load the model or open the connection. Idempotent."""
        ...

    async def aclose(self) -> None:
        """Release it. Idempotent."""
        ...


QueryVector = Sequence[float] | Awaitable[Sequence[float]]
"""A question's vector for :meth:`KnowledgeStore.search`, or an awaitable of it."""


@runtime_checkable
class KnowledgeStore(Protocol):
    """Documents, chunks and their vectors, searched by meaning and by keywords.

    Raises ``core.errors.StoreError`` on failure.
    """

    async def find_document(
        self, scope: KbScope, *, source: str | None = None, content_hash: str | None = None
    ) -> DocumentInfo | None:
        """The scope's document with this source (path or upload name) or these bytes."""
        ...

    async def add_document(self, document: NewDocument, *, replaces: int | None = None) -> int:
        """Store a document with its chunks and vectors in one transaction; return its id.

        With ``replaces``, that document (and its chunks) is deleted in the same
        transaction. Raises ``KbError`` when the scope already holds vectors of another
        embedder or dimension (mixing models is refused).
        """
        ...

    async def documents(self, scopes: Sequence[KbScope]) -> list[DocumentInfo]:
        """The documents of ``scopes``, oldest first."""
        ...

    async def remove_document(self, document_id: int, scopes: Sequence[KbScope]) -> bool:
        """Delete a document of one of ``scopes`` with its chunks; whether it existed there."""
        ...

    async def chunks_of(self, document_id: int) -> list[tuple[int, ChunkDraft]]:
        """A document's chunks (id, draft) in order (``kb reindex`` re-embeds them)."""
        ...

    async def replace_vectors(
        self,
        document_id: int,
        vectors: Sequence[tuple[int, Sequence[float]]],
        *,
        embedder: str,
        dimension: int,
    ) -> None:
        """Set new vectors (by chunk id) and the embedder of a document (``kb reindex``)."""
        ...

    async def search(
        self,
        scopes: Sequence[KbScope],
        query: str,
        vector: QueryVector,
        *,
        limit: int = 5,
    ) -> list[Hit]:
        """The best chunks of ``scopes`` for a question, best first.

        Dense (cosine with ``vector``) and keyword (``query``) rankings are fused by
        reciprocal rank; only chunks of ``scopes`` are ever considered. ``vector`` may be
        given still being computed, as an awaitable (``embedder.embed_query(query)`` not yet
        awaited): the store then runs its keyword search meanwhile, awaits it exactly once
        (or closes it unawaited when there is nothing to search), and raises what it raised.
        """
        ...

    async def forget_owner(self, bot: str, owner: str) -> int:
        """Delete the documents of the user scope ``owner`` (``/forget``); return how many."""
        ...

    async def aclose(self) -> None:
        """Release caches and connections it holds of its own. Idempotent."""
        ...


@dataclass(frozen=True, slots=True)
class Retrieval:
    """What a reply was given from the knowledge base (stored with the reply, for ``/why``)."""

    query: str
    hits: Sequence[Hit] = field(default=())
    used: bool = False  # whether the chunks went into the prompt (best score >= KB_MIN_SCORE)


__all__ = [
    "AddReport",
    "ChunkDraft",
    "DocumentInfo",
    "Embedder",
    "Hit",
    "KbScope",
    "KnowledgeStore",
    "NewDocument",
    "QueryVector",
    "Retrieval",
    "ScopeKind",
    "Source",
]
