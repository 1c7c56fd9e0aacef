"""Who may talk to the bot, who administers it, and the per-user limits.

Pure policy over :class:`core.settings.AccessSettings`; the engine asks it before storing or
answering anything. Time comes from the engine's clock so tests fake it instead of sleeping.

The rate window is a port (:class:`RateLimits`): :class:`RateLimiter` keeps it in memory for
one process; ``adapters.shared`` keeps it in Redis so a user's limit holds across all the
processes of one bot.
"""

from __future__ import annotations

from collections import deque
from datetime import UTC, datetime, timedelta
from typing import Protocol

from core.settings import AccessSettings

_WINDOW_SECONDS = 60.0


def _subject(platform: str, ident: str) -> str:
    return f"{platform}:{ident}"


class AccessPolicy:
    """Allowlists and admins.

    A non-empty ``ALLOWED_USERS`` or ``ALLOWED_CHATS`` applies to every platform; a message
    passes if its user or its chat is listed. Admins always pass.
    """

    def __init__(self, settings: AccessSettings) -> None:
        self._users = frozenset(settings.allowed_users)
        self._chats = frozenset(settings.allowed_chats)
        self._admins = frozenset(settings.admin_users)

    @property
    def restricted(self) -> bool:
        """Whether any allowlist is set."""
        return bool(self._users or self._chats)

    def is_admin(self, platform: str, user_id: str) -> bool:
        """Whether the user is listed in ``ADMIN_USERS``."""
        return _subject(platform, user_id) in self._admins

    def is_allowed(self, platform: str, user_id: str, chat_id: str) -> bool:
        """Whether a message from ``user_id`` in ``chat_id`` may be answered."""
        if not self.restricted or self.is_admin(platform, user_id):
            return True
        return (
            _subject(platform, user_id) in self._users or _subject(platform, chat_id) in self._chats
        )


class RateLimits(Protocol):
    """A sliding one-minute window of message times per subject (``"telegram:42"``)."""

    async def admit(self, subject: str, now: float, per_minute: int) -> float:
        """Record a message at ``now`` (seconds) and return 0, or the seconds to wait.

        At most ``per_minute`` messages are recorded in any 60 seconds; a refused message is
        not recorded, so waiting the returned time always works.
        """
        ...


class RateLimiter:
    """A sliding one-minute window of message times per user (in memory)."""

    def __init__(self, per_minute: int) -> None:
        self._per_minute = per_minute
        self._seen: dict[str, deque[float]] = {}

    def check(self, subject: str, now: float) -> float:
        """Record a message at ``now`` (seconds) and return 0, or the seconds to wait.

        A refused message is not recorded, so waiting the returned time always works.
        """
        times = self._seen.setdefault(subject, deque())
        while times and now - times[0] >= _WINDOW_SECONDS:
            times.popleft()
        if len(times) >= self._per_minute:
            return _WINDOW_SECONDS - (now - times[0])
        times.append(now)
        if len(self._seen) > 100_000:  # forget idle users so memory stays bounded
            self._prune(now)
        return 0.0

    async def admit(self, subject: str, now: float, per_minute: int) -> float:
        """:class:`RateLimits`: :meth:`check` at ``per_minute``."""
        self._per_minute = per_minute
        return self.check(subject, now)

    def _prune(self, now: float) -> None:
        idle = [s for s, t in self._seen.items() if not t or now - t[-1] >= _WINDOW_SECONDS]
        for subject in idle:
            del self._seen[subject]


def until_next_utc_day(now: datetime) -> timedelta:
    """Time from ``now`` until the next 00:00 UTC, when daily quotas reset."""
    now = now.astimezone(UTC)
    tomorrow = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return tomorrow - now


def format_wait(delta: timedelta | float) -> str:
    """``"42 s"``, ``"3 min"``, ``"5 h 12 min"``: a short, friendly duration."""
    seconds = int(delta.total_seconds() if isinstance(delta, timedelta) else delta + 0.999)
    seconds = max(seconds, 1)
    if seconds < 60:
        return f"{seconds} s"
    minutes = (seconds + 59) // 60
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"
