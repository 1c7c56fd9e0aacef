"""The crash-recovery part of :class:`adapters.memory.in_memory.InMemoryStore`.

Instances, owners of replies in progress, their progress and the (bot, platform) leases,
with the semantics of :mod:`adapters.memory.recovery` on SQL (the contract tests run over
both).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from core.types import (
    InstanceInfo,
    MessageStatus,
    ReplyInProgress,
    StoredMessage,
)

_PlatformId = tuple[str, str, str, str]  # bot, platform, chat_id, platform message id


@dataclass(slots=True)
class RecoveryState:
    """What the in-memory store keeps for recovery."""

    owners: dict[int, str | None] = field(default_factory=dict)  # message id -> instance
    instances: dict[str, InstanceInfo] = field(default_factory=dict)
    leases: dict[tuple[str, str], tuple[str, datetime]] = field(default_factory=dict)


class InMemoryRecovery:
    """Recovery methods of the ``MemoryStore`` port over the in-memory store's dicts."""

    _recovery: RecoveryState
    _messages: dict[int, StoredMessage]
    _platform_ids: dict[_PlatformId, int]
    _enter: Callable[[], Awaitable[None]]
    _now: Callable[[], datetime]

    def _conversation_key(self, message: StoredMessage) -> Any:
        raise NotImplementedError  # provided by InMemoryStore

    async def save_progress(
        self,
        message_id: int,
        *,
        content: str | None,
        platform_chat_id: str | None = None,
        platform_message_ids: Sequence[str] = (),
    ) -> None:
        """Save a reply in progress: text so far (unless ``None``) and new message ids."""
        await self._enter()
        message = self._messages.get(message_id)
        if message is None or message.status is not MessageStatus.IN_PROGRESS:
            return
        if content is not None:
            self._messages[message_id] = replace(message, content=content)
        key = self._conversation_key(message)
        chat_id = platform_chat_id if platform_chat_id is not None else key.chat_id
        for pid in platform_message_ids:
            platform_id = (key.bot, key.platform, chat_id, pid)
            if platform_id not in self._platform_ids:
                self._platform_ids[platform_id] = message_id

    async def register_instance(self, instance: InstanceInfo) -> None:
        """Record a running process (or renew its heartbeat)."""
        await self._enter()
        known = self._recovery.instances.get(instance.id)
        if known is not None:
            instance = replace(known, heartbeat_at=instance.heartbeat_at)
        self._recovery.instances[instance.id] = instance

    async def heartbeat(self, instance_id: str, at: datetime) -> bool:
        """Say ``instance_id`` is alive at ``at``; ``False`` if its row is gone."""
        await self._enter()
        known = self._recovery.instances.get(instance_id)
        if known is None:
            return False
        self._recovery.instances[instance_id] = replace(known, heartbeat_at=at)
        return True

    async def retire_instance(self, instance_id: str) -> None:
        """Forget a process and release its leases."""
        await self._enter()
        self._recovery.instances.pop(instance_id, None)
        leases = self._recovery.leases
        for place in [p for p, (owner, _) in leases.items() if owner == instance_id]:
            del leases[place]

    async def instances(self, bot: str) -> list[InstanceInfo]:
        """The processes recorded for ``bot``, oldest first."""
        await self._enter()
        found = [i for i in self._recovery.instances.values() if i.bot == bot]
        return sorted(found, key=lambda i: i.started_at)

    async def claim_replies(
        self, bot: str, owner: str, live: Sequence[str], *, message_id: int | None = None
    ) -> list[ReplyInProgress]:
        """Take over ``bot``'s replies in progress whose owner is not in ``live``."""
        await self._enter()
        alive = set(live)
        owners = self._recovery.owners
        claimed: list[ReplyInProgress] = []
        ids = sorted(self._messages) if message_id is None else [message_id]
        for mid in ids:
            message = self._messages.get(mid)
            if message is None or message.status is not MessageStatus.IN_PROGRESS:
                continue
            key = self._conversation_key(message)
            if key.bot != bot or owners.get(mid) in alive:
                continue
            owners[mid] = owner
            shown = [(p[2], p[3]) for p, m in self._platform_ids.items() if m == mid]
            claimed.append(
                ReplyInProgress(
                    message=message,
                    key=key,
                    chat_id=shown[0][0] if shown else key.chat_id,
                    platform_message_ids=tuple(pid for _, pid in shown),
                )
            )
        return claimed

    async def acquire_lease(self, bot: str, platform: str, owner: str, live: Sequence[str]) -> str:
        """Hold the (bot, platform) lease unless a live holder has it; return the holder."""
        await self._enter()
        leases = self._recovery.leases
        held = leases.get((bot, platform))
        if held is None or (held[0] != owner and held[0] not in live):
            leases[(bot, platform)] = (owner, self._now())
        return leases[(bot, platform)][0]

    async def release_lease(self, bot: str, platform: str, owner: str) -> None:
        """Give up the (bot, platform) lease if ``owner`` holds it."""
        await self._enter()
        held = self._recovery.leases.get((bot, platform))
        if held is not None and held[0] == owner:
            del self._recovery.leases[(bot, platform)]


__all__ = ["InMemoryRecovery", "RecoveryState"]
