"""The reply's share of the context window, prompts refused as too long, and cut replies.

Engine level, through ``RecordingChannel``: the platform does not matter here. The scripted
backend counts words as tokens and cuts a reply at ``max_tokens`` words with
``Finish("length")``, as a real model does.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from core.errors import ContextTooLong
from core.notices import CUT_NOTICE, cut_ending, open_fence, reopening
from core.sessions import Budget
from core.types import BackendEvent, CompletionRequest, MessageStatus, Role
from tests.core.conftest import dm
from tests.core.test_engine import history
from tests.fakes.channel import RecordingChannel
from tests.fakes.scripted import ScriptedBackend


def _prompt_words(request: CompletionRequest) -> int:
    return sum(len(m.content.split()) + 3 for m in request.messages)


# --- the budget -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("window", "setting", "prompt", "max_tokens"),
    [
        (8192, None, 6144, None),  # unset: a quarter kept free, the model's own limit
        (128_000, None, 128_000 - 4096, None),  # ...but never more than 4,096
        (8192, 1024, 7168, 1024),  # set: that much kept free and asked for
        (1000, 900, 500, 500),  # ...but at most half the window
    ],
)
def test_the_window_is_split_between_prompt_and_reply(
    window: int, setting: int | None, prompt: int, max_tokens: int | None
) -> None:
    budget = Budget.of(window, setting)
    assert (budget.prompt, budget.max_tokens) == (prompt, max_tokens)
    assert budget.window == window


async def test_without_a_reply_limit_the_request_names_none_and_a_quarter_stays_free(
    make_engine,
):
    backend = ScriptedBackend("ok")
    engine = make_engine(backend_override=backend, context_window=400)
    out = RecordingChannel()
    for n in range(20):
        await engine.handle(dm(f"turn {n} " + "word " * 20), out)
    request = backend.calls[-1]
    assert request.max_tokens is None
    assert 260 < _prompt_words(request) <= 300  # trimmed to 400 - 100


async def test_a_set_reply_limit_is_asked_for_and_capped_at_half_the_window(make_engine):
    backend = ScriptedBackend("ok")
    engine = make_engine(backend_override=backend, context_window=400, max_reply_tokens=300)
    out = RecordingChannel()
    for n in range(20):
        await engine.handle(dm(f"turn {n} " + "word " * 20), out)
    request = backend.calls[-1]
    assert request.max_tokens == 200
    assert 170 < _prompt_words(request) <= 200


# --- a prompt refused as too long ---------------------------------------------------------------


class LearningServer(ScriptedBackend):
    """Assumes a big window until a prompt overflows the real one, which it then knows."""

    def __init__(self, real_window: int) -> None:
        super().__init__(context_window=8192)
        self.real_window = real_window
        self.refused = 0

    async def stream(self, request: CompletionRequest) -> AsyncIterator[BackendEvent]:
        if _prompt_words(request) > self.real_window:
            self.calls.append(request)
            self.refused += 1
            self.window = self.real_window  # learned from the refusal, as OpenAIBackend does
            raise ContextTooLong(self.real_window, "the prompt does not fit")
        async for event in super().stream(request):
            yield event


async def test_an_overflow_rebuilds_the_prompt_from_the_learned_window_and_answers(
    make_engine,
):
    server = LearningServer(real_window=200)
    engine = make_engine(backend_override=server)
    out = RecordingChannel()
    for n in range(8):
        await engine.handle(dm(f"turn {n} " + "word " * 30), out)
        assert out.replies[-1].startswith(f"echo: turn {n} ")  # every message answered
    assert out.notices == []
    assert server.refused == 1  # once learned, every later prompt fits at the first try
    refused = next(i for i, c in enumerate(server.calls) if _prompt_words(c) > 200)
    retry = server.calls[refused + 1]
    # Rebuilt from the learned window (200 - 50), not merely halved (8192 * 3/4 / 2).
    assert 100 < _prompt_words(retry) <= 150


async def test_an_overflow_at_an_unchanged_window_halves_the_prompt(make_engine):
    # budget 256 - 64 = 192 words: the 100-word first turn fits; half of it (96) does not
    backend = ScriptedBackend("ok")
    engine = make_engine(backend_override=backend, context_window=256)
    out = RecordingChannel()
    await engine.handle(dm("long " * 100), out)
    backend.failures.append(ContextTooLong(limit=256))
    await engine.handle(dm("two"), out)
    assert out.texts == ["ok", "ok"]
    first_try, retry = backend.calls[-2], backend.calls[-1]
    assert any(m.content.startswith("long long") for m in first_try.messages)
    assert not any(m.content.startswith("long long") for m in retry.messages)


# --- replies cut by the token limit ----------------------------------------------------------

_CODE = "Try this:\n```python\n" + "".join(f"x{n} = {n}\n" for n in range(40)) + "```\nDone."


def _code_or_rest(request: CompletionRequest) -> str:
    if request.messages[-1].content == "continue":
        return "x39 = 39\n```\nDone."
    return _CODE


def test_the_cut_ending_closes_an_open_code_block() -> None:
    assert open_fence("a\n```python\nx = 1") == "```python"
    assert open_fence("a\n```python\nx = 1\n```\nb") is None
    assert open_fence("a\n~~~~\nx\n```\n") == "~~~~"
    assert open_fence("run ```ls``` now") is None
    assert cut_ending("a\n```python\nx = 1") == f"\n```\n\n{CUT_NOTICE}"
    assert cut_ending("plain words") == f"\n\n{CUT_NOTICE}"
    assert cut_ending("a\n~~~~ text\nx\n") == f"~~~~\n\n{CUT_NOTICE}"


def test_a_continuation_inside_a_cut_code_block_is_shown_reopened() -> None:
    cut = "Try:\n```python\nx = 1\n"
    assert reopening(cut, "continue", "y = 2\n```") == "```python\n"
    assert reopening(cut, "Continue.", "  y = 2") == "```python\n"
    assert reopening(cut, "continue", "```python\ny = 2") == ""  # the model reopened it
    assert reopening(cut, "thanks, that's enough", "You're welcome!") == ""
    assert reopening("Plain words cut", "continue", "more words") == ""


async def test_a_cut_reply_ends_with_a_notice_is_stored_cut_and_continue_resumes_it(
    make_engine, store
):
    backend = ScriptedBackend(_code_or_rest)
    engine = make_engine(backend_override=backend, max_reply_tokens=20)
    out = RecordingChannel()
    await engine.handle(dm("show me code"), out)

    [shown] = out.replies
    [_, cut] = await history(store, engine)
    assert cut.status is MessageStatus.CUT
    assert cut.content.startswith("Try this:\n```python\nx0 = 0") and "Done" not in cut.content
    assert shown == cut.content + "\n```\n\n" + CUT_NOTICE  # block closed, then the notice
    assert out.notices == []

    await engine.handle(dm("continue"), out)

    resumed = backend.calls[-1].messages
    assert (resumed[-2].role, resumed[-2].content) == (Role.ASSISTANT, cut.content)
    assert resumed[-1].content == "continue"
    # Shown inside the reopened block, so the code renders as code; stored as written.
    assert out.replies[-1] == "```python\nx39 = 39\n```\nDone."
    statuses = [m.status for m in await history(store, engine) if m.role is Role.ASSISTANT]
    assert statuses == [MessageStatus.CUT, MessageStatus.COMPLETE]
    assert (await history(store, engine))[-1].content == "x39 = 39\n```\nDone."

    await engine.handle(dm("/history"), out)
    assert out.notices[-1].startswith("In context: 4 message(s)")  # the cut reply counts
    document = await engine.export("test", "alice")
    assert "(cut)" in document and CUT_NOTICE not in document


async def test_a_reply_within_the_limit_is_complete_without_a_notice(make_engine, store):
    engine = make_engine(max_reply_tokens=20)
    out = RecordingChannel()
    await engine.handle(dm("short"), out)
    assert out.replies == ["echo: short | remembered: nothing"]
    [_, reply] = await history(store, engine)
    assert reply.status is MessageStatus.COMPLETE


async def test_after_a_cut_reply_another_question_is_shown_as_written(make_engine, store):
    backend = ScriptedBackend(_code_or_rest)
    engine = make_engine(backend_override=backend, max_reply_tokens=20)
    out = RecordingChannel()
    await engine.handle(dm("show me code"), out)
    await engine.handle(dm("something else then"), out)
    second = [m for m in await history(store, engine) if m.role is Role.ASSISTANT][-1]
    assert out.replies[-1] == second.content + "\n```\n\n" + CUT_NOTICE  # no reopened block
