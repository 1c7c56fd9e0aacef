"""What the store keeps of one reply: its progress while it streams, then its record.

While a :class:`~core.reply.ReplyRun` streams, :func:`posted` and :func:`save_progress` save
the message ids as soon as the adapter posts them and the text at most every
:data:`PROGRESS_INTERVAL` seconds, so a restart knows what is on screen. Once it ends,
:func:`status_of` decides its final status (a reply the token limit cut, see :func:`cut`, is
stored as ``CUT``) and :func:`record` stores it with its usage (and the knowledge base's
retrieval and sources) and adds it to the in-memory history. A tool round is not recorded:
the tool loop (:mod:`core.turns`) stores it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Final

from core.errors import StoreError
from core.kb import retrieval_record, source_records, sources_for
from core.types import MessageStatus, UsageRecord

if TYPE_CHECKING:
    from core.reply import ReplyRun

_log = logging.getLogger(__name__)

PROGRESS_INTERVAL: Final = 1.0
"""Seconds between two saves of a streaming reply's text."""


def posted(run: ReplyRun, platform_ids: Sequence[str]) -> None:
    """The adapter posted a message of this reply: store the ids soon."""
    run.shown_ids = tuple(platform_ids)
    if run.saver is None:
        save_progress(run)


def save_progress(run: ReplyRun) -> None:
    """Start saving ``run``'s progress in the background (one saver at a time)."""
    run.saver = asyncio.create_task(_save(run), name="chinwag-reply-progress")


async def _save(run: ReplyRun) -> None:
    """Save what changed (new ids, the text) until nothing is left to save."""
    r = run.replier
    try:
        while True:
            ids = [i for i in run.shown_ids if i not in run.saved_ids]
            text = "".join(run.parts)
            content = text if len(text) != run.saved_len else None
            if not ids and content is None:
                return
            await r.store.save_progress(
                run.placeholder.id,
                content=content,
                platform_chat_id=run.msg.chat_id,
                platform_message_ids=ids,
            )
            run.saved_ids.update(ids)
            run.saved_len = len(text)
            run.next_save = r.clock_time() + PROGRESS_INTERVAL
            if not [i for i in run.shown_ids if i not in run.saved_ids]:
                return
    except StoreError as exc:
        _log.warning("could not save a reply's progress: %s", exc)
    finally:
        run.saver = None


def cut(run: ReplyRun) -> bool:
    """Whether the token limit cut the reply (and there is text to continue from)."""
    finish = run.finish
    return (
        finish is not None
        and finish.cut
        and run.error is None
        and not run.stopped
        and any(part.strip() for part in run.parts)
    )


def status_of(run: ReplyRun, text: str) -> MessageStatus:
    """The status ``run`` is recorded with, given its final ``text``."""
    if run.abandoned:
        return MessageStatus.IN_PROGRESS
    if run.delivery_failed:
        return MessageStatus.FAILED
    if run.stopped:
        return MessageStatus.INTERRUPTED
    if run.error is not None:
        return MessageStatus.INTERRUPTED if text else MessageStatus.FAILED
    return MessageStatus.CUT if cut(run) else MessageStatus.COMPLETE


async def record(run: ReplyRun, text: str, status: MessageStatus) -> None:
    """Store ``run``'s reply with its usage and add it to the history.

    A tool round only gets its new message ids stored; its usage is left in ``run.spent``
    for the tool loop to record.
    """
    r, msg, usage = run.replier, run.msg, run.usage
    if usage is not None:
        reply_tokens = usage.completion_tokens
    else:
        reply_tokens = await r.backend.count_tokens(text, run.model) if text else 0
    spent = status is not MessageStatus.FAILED or bool(text)
    tokenizer = r.backend.tokenizer_name(run.model)
    record = (
        UsageRecord(
            r.bot_name,
            msg.platform,
            msg.user_id,
            r.clock().date(),
            prompt_tokens=usage.prompt_tokens if usage else run.prompt_tokens,
            completion_tokens=reply_tokens,
        )
        if spent
        else None
    )
    if record is not None:
        cached = usage.cached_tokens if usage else 0
        r.telemetry.llm_tokens(record.prompt_tokens, record.completion_tokens, cached)
    ids = tuple(i for i in run.platform_ids if i not in run.saved_ids)
    if run.tool_round:
        # The tool loop stores the round (calls, results, status) and its usage.
        run.spent = record
        if ids:
            await r.store.save_progress(
                run.placeholder.id,
                content=None,
                platform_chat_id=msg.chat_id,
                platform_message_ids=ids,
            )
        return
    extra = _knowledge(run, text, status)
    await r.store.finish_message(
        run.placeholder.id,
        content=text,
        status=status,
        token_count=reply_tokens,
        tokenizer=tokenizer,
        platform_chat_id=msg.chat_id,
        platform_message_ids=ids,
        usage=record,
        extra=extra,
    )
    if status is not MessageStatus.IN_PROGRESS:
        r.telemetry.reply_finished(msg.platform, status.value, r.clock_time() - run.began)
    r.history.add(
        replace(
            run.placeholder,
            content=text,
            status=status,
            token_count=reply_tokens,
            tokenizer=tokenizer,
            extra={**(run.placeholder.extra or {}), **extra} if extra else run.placeholder.extra,
        )
    )


def _knowledge(run: ReplyRun, text: str, status: MessageStatus) -> dict[str, Any] | None:
    """What the reply stores of the knowledge base: the retrieval, and its sources.

    The sources (the chunks the answer cited, else every chunk of the prompt) are kept
    for :meth:`ReplyRun.run` to send after the answer; never in the reply's text.
    """
    grounding = run.grounding
    if grounding is None or not grounding.searched:
        return None
    extra: dict[str, Any] = {"retrieval": retrieval_record(grounding, run.documents)}
    shown = status in (MessageStatus.COMPLETE, MessageStatus.CUT, MessageStatus.INTERRUPTED)
    if run.documents and shown and text.strip():
        run.sources = sources_for(text, grounding.hits[: run.documents])
        extra["sources"] = source_records(run.sources)
    return extra


__all__ = ["PROGRESS_INTERVAL", "cut", "posted", "record", "save_progress", "status_of"]
