"""Admission on its own: who gets in, how often refusals are sent, rate, quota and size."""

from __future__ import annotations

from datetime import date
from typing import Any

from core.admission import Admission
from core.notices import REFUSAL
from core.settings import AccessSettings
from core.types import IncomingMessage, UsageSummary
from tests.core.conftest import Clock
from tests.fakes.channel import RecordingChannel


class UsageStore:
    """The one store call admission makes: today's usage, as set by the test."""

    def __init__(self) -> None:
        self.tokens_today = 0
        self.asked: list[tuple[str, str, str, date]] = []

    async def get_usage(self, bot: str, platform: str, user_id: str, day: date) -> UsageSummary:
        self.asked.append((bot, platform, user_id, day))
        return UsageSummary(tokens_today=self.tokens_today, tokens_total=self.tokens_today)


def _admission(clock: Clock, store: UsageStore | None = None, **access: Any) -> Admission:
    settings = AccessSettings(_env_file=None, **access)
    return Admission(settings, store or UsageStore(), "bot", clock)  # type: ignore[arg-type]


def _msg(user: str = "alice", chat: str | None = None) -> IncomingMessage:
    return IncomingMessage(platform="test", chat_id=chat or user, user_id=user, text="hi")


async def test_stranger_is_refused_once_a_day_per_chat() -> None:
    clock = Clock()
    admission = _admission(clock, allowed_users="test:alice")
    out = RecordingChannel()
    assert await admission.allowed(_msg("alice"), out)
    assert not await admission.allowed(_msg("eve"), out)
    assert not await admission.allowed(_msg("eve"), out)
    assert not await admission.allowed(_msg("eve", chat="group"), out)  # another chat
    assert out.notices == [REFUSAL, REFUSAL]
    clock.advance(24 * 3600 + 1)
    assert not await admission.allowed(_msg("eve"), out)
    assert out.notices == [REFUSAL, REFUSAL, REFUSAL]


def test_size_limit_names_the_limit() -> None:
    admission = _admission(Clock(), max_input_chars=10)
    assert admission.size_refusal("x" * 10) is None
    assert admission.size_refusal("x" * 11) == (
        "Your message is too long: 11 characters, and I accept at most 10. "
        "Please shorten it or send it in parts."
    )


async def test_rate_limit_tells_once_per_window_and_admins_pass() -> None:
    clock = Clock()
    admission = _admission(clock, rate_limit_per_minute=2, admin_users="test:root")
    out = RecordingChannel()
    assert [await admission.within_limits(_msg(), out) for _ in range(4)] == [
        True,
        True,
        False,
        False,
    ]
    assert len(out.notices) == 1 and "limit: 2 per minute" in out.notices[0]
    assert all([await admission.within_limits(_msg("root"), out) for _ in range(5)])
    clock.advance(60)
    assert await admission.within_limits(_msg(), out)
    assert len(out.notices) == 1


async def test_quota_refuses_until_midnight_and_reads_todays_usage() -> None:
    clock, store = Clock(), UsageStore()
    admission = _admission(clock, store, daily_token_quota=100)
    out = RecordingChannel()
    store.tokens_today = 99
    assert await admission.within_limits(_msg(), out)
    store.tokens_today = 100
    assert not await admission.within_limits(_msg(), out)
    assert out.notices == [
        "You've used your daily quota of 100 tokens. It resets at 00:00 UTC, in 12 h."
    ]
    assert store.asked[-1] == ("bot", "test", "alice", clock.now.date())
