"""``chinwag kb``: add, list, remove and re-embed the documents a bot answers from.

``chinwag [--bot NAME] kb add PATH... [--scope bot|user:PLATFORM:ID|chat:PLATFORM:ID]`` adds
files and folders (recursively, supported extensions only) with a progress bar on stderr when
it is a terminal; ``kb list [--json]``, ``kb remove ID`` and ``kb reindex`` work on one scope
(default: the bot's own documents). Also builds the knowledge base the engine answers from
(:func:`build_knowledge`): its embedder starts only when a question meets a document.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from adapters.kb.readers import SUPPORTED
from core.errors import ConfigError, KbError
from core.knowledge import DocumentInfo, Embedder, KbScope, ScopeKind
from core.settings import KbSettings

if TYPE_CHECKING:
    from adapters.llm.openai_wire import OpenAISettings

__all__ = [
    "BadInput",
    "add_kb_parser",
    "build_embedder",
    "document_rows",
    "files_to_add",
    "parse_scope",
    "run_kb",
]

SCOPE_HELP = (
    "whose documents: bot (default: every conversation), user:PLATFORM:ID (one user's own, "
    "e.g. user:telegram:123456) or chat:PLATFORM:ID (one chat's)"
)


class BadInput(ValueError):
    """A path or scope on the command line that cannot be used (exit status 2)."""


def add_kb_parser(sub: Any, with_bot: argparse.ArgumentParser) -> None:
    """Register ``kb add|list|remove|reindex`` on the CLI's subparsers."""
    kb = sub.add_parser(
        "kb",
        parents=[with_bot],
        help="the knowledge base: documents the bot answers from",
        description="Add, list, remove and re-embed the documents the bot answers from.",
    )
    kb_sub = kb.add_subparsers(dest="kb_command", required=True, metavar="ACTION")
    scope = argparse.ArgumentParser(add_help=False)
    scope.add_argument("--scope", default="bot", help=SCOPE_HELP)
    add = kb_sub.add_parser(
        "add",
        parents=[scope],
        help="add files and folders",
        description=(
            f"Add files and folders (recursively) of the supported types ({', '.join(SUPPORTED)}). "
            "An unchanged file is skipped; a changed one replaces its earlier version."
        ),
    )
    add.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    listing = kb_sub.add_parser("list", parents=[scope], help="list the documents")
    listing.add_argument("--json", action="store_true", help="print JSON")
    remove = kb_sub.add_parser("remove", parents=[scope], help="remove a document by its ID")
    remove.add_argument("id", type=int, metavar="ID")
    kb_sub.add_parser(
        "reindex",
        parents=[scope],
        help="re-embed every document with the configured embedder",
        description="Re-embed the documents' chunks (after changing KB_EMBEDDINGS or its model).",
    )


def parse_scope(bot: str, text: str) -> KbScope:
    """``bot``, ``user:PLATFORM:ID`` or ``chat:PLATFORM:ID`` as a scope of ``bot``.

    Raises:
        BadInput: anything else.
    """
    if text == ScopeKind.BOT.value:
        return KbScope.of_bot(bot)
    kind, _, rest = text.partition(":")
    platform, _, ident = rest.partition(":")
    if kind in (ScopeKind.USER.value, ScopeKind.CHAT.value) and platform and ident:
        return KbScope(bot, ScopeKind(kind), f"{platform}:{ident}")
    raise BadInput(
        f"--scope {text!r}: use bot, user:PLATFORM:ID or chat:PLATFORM:ID "
        "(e.g. user:telegram:123456)"
    )


def files_to_add(paths: Sequence[Path]) -> list[Path]:
    """The files ``paths`` name: files as given, folders searched recursively, in order.

    In folders only supported types are taken (others are skipped quietly); a file named
    outright must be of a supported type.

    Raises:
        BadInput: a path that does not exist, a named file of another type, or nothing to add.
    """
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(_supported_in(path))
        elif path.is_file():
            if path.suffix.lower() not in SUPPORTED:
                raise BadInput(
                    f"{path}: unsupported file type; supported are {', '.join(SUPPORTED)}"
                )
            found.append(path)
        else:
            raise BadInput(f"{path}: no such file or folder")
    if not found:
        raise BadInput(f"no files of the supported types ({', '.join(SUPPORTED)}) found")
    return list(dict.fromkeys(p.resolve() for p in found))


def _supported_in(folder: Path) -> Iterator[Path]:
    for path in sorted(folder.rglob("*")):
        hidden = any(part.startswith(".") for part in path.relative_to(folder).parts)
        if not hidden and path.is_file() and path.suffix.lower() in SUPPORTED:
            yield path


def build_embedder(kb: KbSettings, openai: OpenAISettings) -> Embedder:
    """The embedder ``KB_EMBEDDINGS`` names, not started (the model loads on first use).

    Raises:
        ConfigError: ``local`` without the offline model installed, or ``openai`` with no
            endpoint configured.
    """
    if kb.embeddings == "openai":
        from adapters.kb.embed_openai import OpenAIEmbedder

        return OpenAIEmbedder(
            model=kb.embedding_model,
            base_url=openai.base_url,
            api_key=openai.api_key,
        )
    try:
        from adapters.kb.embed_local import LocalEmbedder
    except ImportError as exc:
        raise ConfigError(
            "KB_EMBEDDINGS",
            "is local, but the offline embedder is not installed (pip install 'chinwag[kb]'"
            ", or make install); or use an OpenAI-compatible endpoint",
            "openai",
        ) from exc
    return LocalEmbedder()


@dataclass(frozen=True, slots=True)
class _Row:
    info: DocumentInfo

    def as_dict(self) -> dict[str, Any]:
        info = self.info
        scope = info.scope
        return {
            "id": info.id,
            "scope": scope.kind.value if not scope.owner else f"{scope.kind.value}:{scope.owner}",
            "title": info.title,
            "source": info.source,
            "chunks": info.chunks,
            "pages": info.pages,
            "embedder": info.embedder,
            "dimension": info.dimension,
            "added_by": info.added_by,
            "created_at": info.created_at.isoformat(),
        }


def document_rows(documents: Sequence[DocumentInfo], *, as_json: bool) -> str:
    """``kb list``'s output: one line a document (id, chunks, pages, title, source), or JSON."""
    rows = [_Row(doc).as_dict() for doc in documents]
    if as_json:
        return json.dumps(rows, indent=2, ensure_ascii=False)
    if not rows:
        return "no documents"
    lines = []
    for row in rows:
        pages = f", {row['pages']} pages" if row["pages"] else ""
        lines.append(
            f"#{row['id']}  {row['title']}  ({row['chunks']} chunks{pages}, {row['embedder']})"
            f"  {row['source']}"
        )
    return "\n".join(lines)


class ProgressBar:
    """A one-line progress bar on a terminal (nothing when ``stream`` is not one)."""

    def __init__(self, stream: TextIO = sys.stderr, width: int = 30) -> None:
        self._stream = stream
        self._width = width
        self._on = stream.isatty()
        self.label = ""

    def __call__(self, done: int, total: int) -> None:
        """Show ``done`` of ``total`` chunks embedded (the ingestor's progress callback)."""
        if not self._on or total <= 0:
            return
        filled = self._width * done // total
        bar = "#" * filled + "-" * (self._width - filled)
        self._stream.write(f"\r{self.label[:40]:40} [{bar}] {done}/{total} chunks")
        if done >= total:
            self._stream.write("\n")
        self._stream.flush()


async def run_kb(
    args: argparse.Namespace, *, bot: str, memory: Any, kb: KbSettings, openai: OpenAISettings
) -> None:
    """Run ``chinwag kb ACTION`` on ``bot``'s knowledge base in the memory database.

    Raises:
        BadInput: a bad path or scope (exit 2).
        KbError, StoreError: the knowledge base failed (one line, exit 1).
    """
    from adapters.memory.knowledge import SqlKnowledgeStore
    from bots.app import open_store

    scope = parse_scope(bot, args.scope)
    files = files_to_add(args.paths) if args.kb_command == "add" else []
    store = await open_store(memory)
    knowledge = SqlKnowledgeStore(store)
    try:
        if args.kb_command == "list":
            print(document_rows(await knowledge.documents([scope]), as_json=args.json))
        elif args.kb_command == "remove":
            if not await knowledge.remove_document(args.id, [scope]):
                raise BadInput(f"no document #{args.id} in the {args.scope} knowledge base")
            print(f"removed document #{args.id}")
        else:
            await _embedding(args, files, scope, knowledge, kb, openai)
    finally:
        await knowledge.aclose()
        await store.aclose()


async def _embedding(
    args: argparse.Namespace,
    files: Sequence[Path],
    scope: KbScope,
    knowledge: Any,
    kb: KbSettings,
    openai: OpenAISettings,
) -> None:
    from adapters.kb.ingest import Ingestor

    embedder = build_embedder(kb, openai)
    await embedder.start()
    try:
        ingestor = Ingestor(knowledge, embedder, kb.chunk_chars, kb.chunk_overlap)
        bar = ProgressBar()
        if args.kb_command == "reindex":
            bar.label = "reindex"
            print((await ingestor.reindex([scope], bar)).line())
            return
        failed = 0
        for path in files:
            bar.label = path.name
            try:
                added = await ingestor.add(path, scope, added_by="cli", progress=bar)
            except KbError as exc:  # one bad file does not stop the others
                failed += 1
                print(f"chinwag: {path}: {exc}", file=sys.stderr)
                continue
            print(added.line())
        if failed:
            raise KbError(f"{failed} of {len(files)} files were not added")
    finally:
        await embedder.aclose()
