"""The turn queue's port and its jobs: what ingress hands to queue workers.

In the scaled deployment (``chinwag ingress`` and ``chinwag worker`` on PostgreSQL) an
ingress process takes platform events and enqueues one job per turn; workers take the
jobs, answer through the platforms' REST APIs and record the replies. A job carries the
event as plain JSON (:func:`message_payload`, :func:`action_payload`) and is locked by its
conversation slot (:func:`conversation_lock`): jobs of one conversation run one at a time,
oldest first, on whichever worker; different conversations run in parallel.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import asdict
from enum import StrEnum
from typing import Any, Protocol

from core.types import Attachment, ConversationKey, IncomingAction, IncomingMessage


class JobKind(StrEnum):
    """What a queued turn is."""

    MESSAGE = "message"  # a message to answer (text, a command, files)
    ACTION = "action"  # a button press answering a confirmation


def conversation_lock(key: ConversationKey) -> str:
    """The queue lock of ``key``'s jobs: one conversation slot, one job at a time."""
    parts = (key.bot, key.platform, key.chat_id, key.thread_id or "", key.user_id or "")
    return "chinwag:" + "\x1f".join(parts)


def message_payload(msg: IncomingMessage) -> dict[str, Any]:
    """``msg`` as JSON-able data (attachments as their platform handles)."""
    return asdict(msg)


def message_from(payload: Mapping[str, Any]) -> IncomingMessage:
    """The message :func:`message_payload` made.

    Raises:
        ValueError: the payload is not one (a job written by another version, say).
    """
    try:
        data = dict(payload)
        data["attachments"] = tuple(Attachment(**a) for a in data.get("attachments") or ())
        data["reply_attachments"] = tuple(
            Attachment(**a) for a in data.get("reply_attachments") or ()
        )
        return IncomingMessage(**data)
    except (TypeError, AttributeError) as exc:
        raise ValueError(f"not a queued message: {exc}") from exc


def action_payload(action: IncomingAction) -> dict[str, Any]:
    """``action`` as JSON-able data."""
    return asdict(action)


def action_from(payload: Mapping[str, Any]) -> IncomingAction:
    """The button press :func:`action_payload` made.

    Raises:
        ValueError: the payload is not one.
    """
    try:
        return IncomingAction(**payload)
    except TypeError as exc:
        raise ValueError(f"not a queued button press: {exc}") from exc


class TurnQueue(Protocol):
    """Where ingress puts turns for workers (``adapters.queue`` implements it)."""

    async def enqueue(
        self, kind: JobKind, key: ConversationKey, payload: Mapping[str, Any]
    ) -> bool:
        """Queue one turn behind the earlier ones of ``key``'s conversation.

        Returns once the job is stored (durable): the platform event may be acknowledged.
        A message whose platform id (``payload["message_id"]``, in its chat) was queued
        before is not queued again: a platform delivering an event twice, to one ingress
        or to two, makes one turn. Returns whether a job was made.

        Raises:
            StoreError: the queue's database cannot be reached (the event is not
                acknowledged, so the platform delivers it again).
        """
        ...


class StopSignal(Protocol):
    """``/stop`` across processes: ingress publishes, the worker holding the reply stops it.

    ``adapters.shared`` implements it on Redis (pub/sub).
    """

    async def publish(self, key: ConversationKey) -> bool:
        """Ask whichever process writes ``key``'s reply to stop it.

        Returns whether one did (it answers within about a second), so ``/stop`` can say
        "there's no reply in progress" otherwise.
        """
        ...

    async def listen(self, on_stop: Callable[[ConversationKey], bool]) -> None:
        """Call ``on_stop`` for every stop published (by any process) until cancelled.

        ``on_stop`` returns whether this process stopped a reply (``Replier.stop``); a
        ``True`` is what makes :meth:`publish` return ``True``.
        """
        ...


class LocalStopSignal:
    """``/stop`` inside one process: :meth:`publish` calls this process's listeners.

    For ``chinwag run`` and tests; ingress and workers share Redis's (``adapters.shared``).
    """

    def __init__(self) -> None:
        self._listeners: list[Callable[[ConversationKey], bool]] = []

    async def publish(self, key: ConversationKey) -> bool:
        """Ask this process's listeners to stop ``key``'s reply; whether one did."""
        return any([on_stop(key) for on_stop in list(self._listeners)])

    async def listen(self, on_stop: Callable[[ConversationKey], bool]) -> None:
        """Call ``on_stop`` for every stop published until cancelled."""
        self._listeners.append(on_stop)
        try:
            await asyncio.Event().wait()
        finally:
            self._listeners.remove(on_stop)


__all__ = [
    "JobKind",
    "LocalStopSignal",
    "StopSignal",
    "TurnQueue",
    "action_from",
    "action_payload",
    "conversation_lock",
    "message_from",
    "message_payload",
]
