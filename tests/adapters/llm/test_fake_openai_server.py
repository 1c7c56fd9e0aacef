"""The loopback fake speaks the real API: the official client's other calls work on it."""

from __future__ import annotations

import openai
import pytest

from tests.fakes.openai_server import FakeOpenAIServer


async def test_non_streamed_completion_and_models_with_the_real_client() -> None:
    async with (
        FakeOpenAIServer(api_key="sk-fake") as srv,
        openai.AsyncOpenAI(api_key="sk-fake", base_url=srv.base_url, max_retries=0) as client,
    ):
        models = [m.id async for m in client.models.list()]
        completion = await client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "ping"}],
        )
    assert models == ["gpt-4o-mini", "gpt-4o"]
    assert completion.choices[0].message.content == "You said: ping. I received 1 messages."
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == 1 + 4 + 3
    assert [r.path for r in srv.requests] == ["/v1/models", "/v1/chat/completions"]


@pytest.mark.parametrize(
    ("message", "complaint"),
    [
        ({"role": "user", "content": "hi", "name": "Ann Lee"}, "name"),
        ({"role": "tool", "content": "42"}, "tool_call_id"),
        ({"role": "wizard", "content": "hi"}, "wizard"),
    ],
)
async def test_malformed_requests_are_refused_as_the_real_api_does(
    message: dict[str, str], complaint: str
) -> None:
    async with (
        FakeOpenAIServer() as srv,
        openai.AsyncOpenAI(api_key="k", base_url=srv.base_url, max_retries=0) as client,
    ):
        with pytest.raises(openai.BadRequestError) as info:
            await client.chat.completions.create(model="gpt-4o-mini", messages=[message])  # type: ignore[list-item]  # malformed on purpose
    assert complaint in info.value.message


async def test_wrong_key_gets_the_real_401_with_a_masked_key() -> None:
    async with (
        FakeOpenAIServer(api_key="sk-right-0000") as srv,
        openai.AsyncOpenAI(
            api_key="sk-wrong-123456789", base_url=srv.base_url, max_retries=0
        ) as client,
    ):
        with pytest.raises(openai.AuthenticationError) as info:
            await client.models.list()
    assert info.value.code == "invalid_api_key"
    assert "sk-***6789" in info.value.message
