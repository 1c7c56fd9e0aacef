"""Admission: whether a message may be stored and answered, and what the user is told if not.

The policy itself (who is listed, the sliding rate window) is :mod:`core.access`; this module
applies it to incoming messages and words the refusals: a stranger is refused once per day,
a user over the rate limit is told once per window, a user over the daily token quota is
told when it resets, and an over-long message is refused with the limit. Admins pass the
rate and quota checks. Time comes from the engine's clock.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from core.access import AccessPolicy, RateLimiter, RateLimits, format_wait, until_next_utc_day
from core.notices import REFUSAL, notify
from core.ports import MemoryStore, ReplyChannel
from core.settings import AccessSettings
from core.types import IncomingMessage

_log = logging.getLogger(__name__)


class Admission:
    """The gate every message passes before the engine stores or answers it.

    Args:
        settings: allowlists, admins and limits.
        store: where the daily token usage is read from (for the quota).
        bot_name: the bot whose usage counts.
        clock: the engine's clock (current UTC time).
        rate: the rate windows (shared by the bot's processes); ``None``: this process's
            own, in memory.
    """

    def __init__(
        self,
        settings: AccessSettings,
        store: MemoryStore,
        bot_name: str,
        clock: Callable[[], datetime],
        rate: RateLimits | None = None,
    ) -> None:
        self._settings = settings
        self._policy = AccessPolicy(settings)
        self._store = store
        self._bot_name = bot_name
        self._clock = clock
        per_minute = settings.rate_limit_per_minute
        self._per_minute = per_minute or 0
        self._rate: RateLimits | None = None
        if per_minute:
            self._rate = rate or RateLimiter(per_minute)
        self._rate_noticed: dict[str, float] = {}
        self._refused: dict[str, datetime] = {}

    def is_admin(self, msg: IncomingMessage) -> bool:
        """Whether the author of ``msg`` is listed in ``ADMIN_USERS``."""
        return self._policy.is_admin(msg.platform, msg.user_id)

    async def allowed(self, msg: IncomingMessage, out: ReplyChannel) -> bool:
        """The allowlist check: one short refusal per stranger (and chat) per day."""
        if self._policy.is_allowed(msg.platform, msg.user_id, msg.chat_id):
            return True
        subject = f"{msg.platform}:{msg.user_id}@{msg.chat_id}"
        now = self._clock()
        last = self._refused.get(subject)
        if last is None or now - last > timedelta(days=1):
            self._refused[subject] = now
            _log.info("refused a message from %s user %s (not allowed)", msg.platform, msg.user_id)
            await notify(out, REFUSAL)
        return False

    def size_refusal(self, text: str) -> str | None:
        """``None`` if ``text`` fits ``MAX_INPUT_CHARS``, else what to tell the user.

        Not a coroutine: the check costs an ordinary message nothing to await.
        """
        limit = self._settings.max_input_chars
        if len(text) <= limit:
            return None
        return (
            f"Your message is too long: {len(text):,} characters, and I accept at most "
            f"{limit:,}. Please shorten it or send it in parts."
        )

    async def within_limits(self, msg: IncomingMessage, out: ReplyChannel) -> bool:
        """The rate and daily-quota checks (admins always pass).

        A message refused for the rate is not counted, so waiting the time the user is told
        always works; the notice is sent at most once per full window, so a flood of
        messages does not become a flood of notices.
        """
        if self.is_admin(msg):
            return True
        now = self._clock()
        if self._rate is not None:
            refusal = await self._rate_refusal(self._rate, msg, now)
            if refusal is not None:
                if refusal:
                    await notify(out, refusal)
                return False
        quota = self._settings.daily_token_quota
        if quota is not None:
            usage = await self._store.get_usage(
                self._bot_name, msg.platform, msg.user_id, now.date()
            )
            if usage.tokens_today >= quota:
                await notify(
                    out,
                    f"You've used your daily quota of {quota:,} tokens. It resets at 00:00 UTC, "
                    f"in {format_wait(until_next_utc_day(now))}.",
                )
                return False
        return True

    async def _rate_refusal(
        self, rate: RateLimits, msg: IncomingMessage, now: datetime
    ) -> str | None:
        """``None`` if within the rate; else the notice to send, or ``""`` to stay silent."""
        subject = f"{msg.platform}:{msg.user_id}"
        wait = await rate.admit(subject, now.timestamp(), self._per_minute)
        if wait <= 0:
            return None
        noticed = self._rate_noticed.get(subject, 0.0)
        if now.timestamp() - noticed < wait:  # one notice per full window, no storm
            return ""
        self._rate_noticed[subject] = now.timestamp()
        limit = self._settings.rate_limit_per_minute
        return (
            f"You're sending messages too fast (limit: {limit} per minute). "
            f"Please try again in {format_wait(wait)}."
        )


__all__ = ["Admission"]
