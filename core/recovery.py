"""Crash recovery: replies left in progress by a dead process are finished, once.

A reply in progress carries its writer's instance id (:mod:`core.instance`). When that
process is dead (killed, crashed, or stopped with the reply unfinished after
``SHUTDOWN_GRACE_SECONDS``), this process claims the reply in the store (atomically: two
processes never both take it) and, in the conversation's lane:

* if it began less than ``RECOVER_WITHIN_SECONDS`` ago, produces it again from the same
  prompt (the history before it) and edits the messages already on screen into the
  complete answer (extra parts posted, spares deleted): the user ends with one answer;
* otherwise marks it: its messages are edited to end with :data:`INTERRUPTED_MARK` (or,
  when nothing was on screen, a short notice is sent), and it is stored as interrupted.

It runs at start, before the adapters take messages (a claimed reply is queued in its lane
ahead of them, and edits once the adapters are connected), then on every heartbeat (a peer
that dies is taken over), and for a redelivered message whose reply was left in progress.
A reply whose owner is alive is never touched.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime, timedelta
from typing import Final

from core.chat_ports import ResumableAdapter
from core.errors import AdapterError, StoreError
from core.instance import Instance
from core.ports import MemoryStore, ReplyChannel
from core.types import (
    ConversationKey,
    IncomingMessage,
    MessageStatus,
    ReplyEvent,
    ReplyInProgress,
    Role,
    StoredMessage,
)

_log = logging.getLogger(__name__)

INTERRUPTED_MARK: Final = "…reply interrupted, send it again"
"""What ends an interrupted reply's messages when it was too old to produce again."""
INTERRUPTED_NOTICE: Final = (
    "My reply to your last message was interrupted (the bot restarted). Please send it again."
)
"""Sent when an interrupted reply had nothing on screen yet."""

Submit = Callable[[ConversationKey, IncomingMessage, ReplyChannel, ReplyInProgress], None]
"""Queues a claimed reply in its conversation's lane, to be produced again."""


async def _once(text: str) -> AsyncIterator[ReplyEvent]:
    yield text


class _Reopened:
    """A reply channel into a stored chat, opened once the adapters are connected.

    Recovery claims replies (and queues them in their lanes, ahead of messages that arrive
    while the adapters start) before the adapters can edit; each call waits for them.
    """

    def __init__(self, recovery: Recovery, resumer: ResumableAdapter, reply: ReplyInProgress):
        self._recovery = recovery
        self._resumer = resumer
        self._reply = reply
        self._channel: ReplyChannel | None = None

    async def _open(self) -> ReplyChannel:
        if self._channel is None:
            await self._recovery.ready.wait()
            reply = self._reply
            try:
                self._channel = self._resumer.resume(
                    reply.chat_id, reply.key.thread_id, reply.platform_message_ids
                )
            except (RuntimeError, ValueError) as exc:
                raise AdapterError(f"cannot reopen a {reply.key.platform} chat: {exc}") from exc
        return self._channel

    async def send_text(self, text: str) -> Sequence[str]:
        return await (await self._open()).send_text(text)

    async def stream_reply(
        self,
        events: AsyncIterator[ReplyEvent],
        on_posted: Callable[[Sequence[str]], None] | None = None,
    ) -> Sequence[str]:
        return await (await self._open()).stream_reply(events, on_posted)

    async def ask_confirmation(self, prompt: str, action_id: str) -> None:
        await (await self._open()).ask_confirmation(prompt, action_id)

    async def send_file(self, filename: str, data: bytes, caption: str = "") -> None:
        await (await self._open()).send_file(filename, data, caption)


class Recovery:
    """Finds, claims and finishes replies of dead owners; built and driven by the engine.

    Args:
        store: the memory store.
        instance: this process's identity.
        bot: the ``BOT_NAME``.
        within: ``RECOVER_WITHIN_SECONDS``: younger replies are produced again.
        clock: the current UTC time.
        submit: queues a reply to produce again in its conversation's lane.
    """

    def __init__(
        self,
        *,
        store: MemoryStore,
        instance: Instance,
        bot: str,
        within: float,
        clock: Callable[[], datetime],
        submit: Submit,
    ) -> None:
        self._store = store
        self._instance = instance
        self._bot = bot
        self._within = timedelta(seconds=within)
        self._clock = clock
        self._submit = submit
        self._lock = asyncio.Lock()
        self.resumers: dict[str, ResumableAdapter] = {}
        self.enabled = False
        # The adapters are connected and chats can be reopened; cleared by the composition
        # root while they start (see Engine.recover).
        self.ready = asyncio.Event()
        self.ready.set()

    def use(self, adapters: Sequence[object]) -> None:
        """Remember the adapters that can reopen a reply (before they start)."""
        for adapter in adapters:
            if isinstance(adapter, ResumableAdapter):
                self.resumers[adapter.name] = adapter

    async def sweep(self) -> int:
        """Claim the replies of dead owners and finish each; return how many were claimed.

        Does nothing until :attr:`enabled` (the adapters are connected).
        """
        if not self.enabled:
            return 0
        async with self._lock:
            live = await self._instance.live()
            claimed = await self._store.claim_replies(self._bot, self._instance.id, live)
            for reply in claimed:
                await self.take_over(reply)
            for dead in await self._instance.dead():
                await self._store.retire_instance(dead.id)  # its leases go with it
        if claimed:
            _log.warning(
                "took over %d reply(ies) left in progress by a stopped process", len(claimed)
            )
        return len(claimed)

    async def redelivered(
        self, reply: StoredMessage, out: ReplyChannel, *, wait: bool = False
    ) -> None:
        """A message came again whose ``reply`` is in progress: take it over if orphaned.

        With ``wait`` (a queue worker retrying a job), a reply a live process is writing is
        waited for, and taken over if that process dies meanwhile: the job holds its
        conversation until the reply is finished, so the next message cannot overtake it.
        """
        while True:
            live = await self._instance.live()
            claimed = await self._store.claim_replies(
                self._bot, self._instance.id, live, message_id=reply.id
            )
            if claimed:
                await self.take_over(claimed[0], fallback=out)
                return
            if not wait:
                _log.info("a redelivered message's reply is being written by a live process")
                return
            await asyncio.sleep(self._instance.interval)
            rows = await self._store.recent_messages(
                reply.conversation_id, limit=1, before_seq=reply.seq + 1
            )
            if (
                not rows
                or rows[0].id != reply.id
                or rows[0].status is not MessageStatus.IN_PROGRESS
            ):
                return  # finished (or gone with /forget) meanwhile

    async def take_over(self, reply: ReplyInProgress, fallback: ReplyChannel | None = None) -> None:
        """Queue a claimed reply in its conversation's lane (see :meth:`finish`)."""
        resumer = self.resumers.get(reply.key.platform)
        out = _Reopened(self, resumer, reply) if resumer is not None else fallback
        if out is None:
            _log.warning("no %s adapter to finish an interrupted reply in", reply.key.platform)
            await self._store.finish_message(
                reply.message.id, content=reply.message.content, status=MessageStatus.INTERRUPTED
            )
            return
        self._submit(reply.key, await self._incoming(reply), out, reply)

    def too_old(self, reply: ReplyInProgress) -> bool:
        """Whether ``reply`` began longer than ``RECOVER_WITHIN_SECONDS`` ago."""
        return self._clock() - reply.message.created_at > self._within

    async def _incoming(self, reply: ReplyInProgress) -> IncomingMessage:
        """The message the reply answers, as far as a reply run needs it."""
        message = reply.message
        # The newest user message before it (tool rounds may stand in between).
        before = await self._store.recent_messages(
            message.conversation_id, limit=16, before_seq=message.seq
        )
        asker = next((m for m in before if m.role is Role.USER), None)
        author = asker.author_id if asker is not None else None
        key = reply.key
        return IncomingMessage(
            platform=key.platform,
            chat_id=reply.chat_id,
            user_id=author or key.user_id or "",
            text="",
            thread_id=key.thread_id,
            is_private=key.user_id is not None and key.chat_id == key.user_id,
        )

    async def mark(self, reply: ReplyInProgress, out: ReplyChannel) -> None:
        """Too old to produce again: say so in its messages, store it interrupted."""
        text = reply.message.content
        posted: Sequence[str] = ()
        try:
            if reply.platform_message_ids:
                shown = (
                    f"{text.rstrip()}\n\n{INTERRUPTED_MARK}" if text.strip() else INTERRUPTED_MARK
                )
                posted = await out.stream_reply(_once(shown))
            else:
                await out.send_text(INTERRUPTED_NOTICE)
        except AdapterError as exc:
            _log.warning("could not mark an interrupted reply: %s", exc)
        try:
            await self._store.finish_message(
                reply.message.id,
                content=text,
                status=MessageStatus.INTERRUPTED,
                platform_chat_id=reply.chat_id,
                platform_message_ids=[i for i in posted if i not in reply.platform_message_ids],
            )
        except StoreError as exc:
            _log.warning("could not store an interrupted reply: %s", exc)


__all__ = ["INTERRUPTED_MARK", "INTERRUPTED_NOTICE", "Recovery"]
