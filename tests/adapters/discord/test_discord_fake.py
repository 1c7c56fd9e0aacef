"""The fake Discord enforces the rules the real one does (so the adapter tests mean something)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests.fakes.discord_server import FakeDiscord


@pytest.fixture
async def http(fake: FakeDiscord) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(
        base_url=fake.api_base_url + "/",
        headers={"Authorization": f"Bot {fake.token}"},
    ) as session:
        yield session


async def _post(http: aiohttp.ClientSession, path: str, body: Any) -> tuple[int, Any, Any]:
    async with http.post(path, json=body) as response:
        return response.status, await response.json(), response.headers


async def test_content_over_2000_and_empty_messages_are_refused(
    fake: FakeDiscord, http: aiohttp.ClientSession
) -> None:
    channel = fake.add_channel(fake.add_guild())

    status, body, _ = await _post(http, f"channels/{channel}/messages", {"content": "x" * 2001})
    assert (status, body["code"]) == (400, 50035)
    status, body, _ = await _post(http, f"channels/{channel}/messages", {"content": ""})
    assert (status, body["code"]) == (400, 50006)
    status, _, _ = await _post(http, f"channels/{channel}/messages", {"content": "x" * 2000})
    assert status == 200
    assert fake.bot_texts(channel) == ["x" * 2000]


async def test_rate_limits_answer_429_with_headers(
    fake: FakeDiscord, http: aiohttp.ClientSession
) -> None:
    channel = fake.add_channel(fake.add_guild())
    fake.set_rate_limit("send", ["POST /channels/{channel_id}/messages"], limit=2, per=0.5)

    results = [await _post(http, f"channels/{channel}/messages", {"content": "hi"}) for _ in "abc"]

    assert [r[0] for r in results] == [200, 200, 429]
    assert results[1][2]["X-RateLimit-Remaining"] == "0"
    status, body, headers = results[2]
    assert 0 < body["retry_after"] <= 0.5 and body["global"] is False
    assert headers["X-RateLimit-Bucket"] == "fake-send"
    await asyncio.sleep(0.55)
    status, _, _ = await _post(http, f"channels/{channel}/messages", {"content": "later"})
    assert status == 200


async def test_interactions_expire_after_three_seconds_and_ack_once(
    fake: FakeDiscord, http: aiohttp.ClientSession
) -> None:
    fake.interaction_window = 0.2  # the 3-second rule, shortened for the test
    user = fake.add_user("alice")
    channel = fake.dm_channel(user)
    fake.commands = [{"id": "1", "name": "help", "description": "Help"}]
    on_time = await fake.slash(channel, user, "help")
    late = await fake.slash(channel, user, "help")

    ack = {"type": 5}
    status, _, _ = await _post(http, f"interactions/{on_time.id}/{on_time.token}/callback", ack)
    assert status == 200
    status, body, _ = await _post(http, f"interactions/{on_time.id}/{on_time.token}/callback", ack)
    assert (status, body["code"]) == (400, 40060)
    await asyncio.sleep(0.25)
    status, body, _ = await _post(http, f"interactions/{late.id}/{late.token}/callback", ack)
    assert (status, body["code"]) == (404, 10062)


async def test_rest_calls_need_the_bot_token(fake: FakeDiscord) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{fake.api_base_url}/users/@me", headers={"Authorization": "Bot nope"}) as r,
    ):
        assert r.status == 401
    assert fake.calls[-1].status == 401
