"""Replies cut by the token limit, and replies whose Markdown renders to nothing, end to end.

Fake Telegram <- real python-telegram-bot <- adapter <- real engine <- scripted backend, whose
replies stop after ``max_tokens`` words with ``Finish("length")`` as a real model's would.
"""

from __future__ import annotations

import pytest

from core.notices import CUT_NOTICE, EMPTY_MODEL_REPLY
from core.types import CompletionRequest, MessageStatus, Role, StoredMessage
from tests.adapters.telegram.conftest import Harness, HarnessFactory
from tests.fakes.scripted import ScriptedBackend

_CODE = "Here is the loop:\n```python\n" + "".join(f"print({n})\n" for n in range(1, 30)) + "```"


async def _last_stored(bot: Harness, chat_id: int, user_id: int) -> StoredMessage:
    key = bot.engine.key_for("telegram", str(chat_id), str(user_id))
    conversation = await bot.store.current_conversation(key)
    return (await bot.store.recent_messages(conversation.id, limit=1))[0]


def _code_then_rest(request: CompletionRequest) -> str:
    """The long code answer; asked to "continue", the rest of it after the cut."""
    last = request.messages[-1].content
    if last == "continue":
        return "print(29)\n```\nThat is all."
    return _CODE


async def test_a_cut_reply_shows_a_notice_outside_its_code_and_continue_completes_it(
    harness_factory: HarnessFactory,
) -> None:
    backend = ScriptedBackend(_code_then_rest)
    bot = await harness_factory(backend=backend, max_reply_tokens=12)
    alice = bot.user("Alice")
    chat = bot.private(alice)

    [cut] = await bot.say(chat, alice, "write a loop")

    assert cut.text.startswith("Here is the loop:")
    assert cut.text.endswith(CUT_NOTICE)
    assert "```" not in cut.text  # the open code block was closed, not shown as backticks
    [pre] = [e for e in cut.entities if e.type == "pre"]
    code = cut.text[pre.offset : pre.offset + pre.length]
    assert code.startswith("print(1)") and "print(5)" in code
    assert CUT_NOTICE not in code  # the notice sits after the closed block

    stored = await _last_stored(bot, chat.id, alice.id)
    assert stored.role is Role.ASSISTANT and stored.status is MessageStatus.CUT
    assert CUT_NOTICE not in stored.content  # shown by the bot, never stored as the model's

    [rest] = await bot.say(chat, alice, "continue")

    # The continuation starts inside the cut code block: it is shown reopened, as code.
    assert rest.text == "print(29)\nThat is all."
    [pre] = [e for e in rest.entities if e.type == "pre"]
    assert rest.text[pre.offset : pre.offset + pre.length] == "print(29)"
    resumed = backend.calls[-1].messages
    assert [m.role for m in resumed[-2:]] == [Role.ASSISTANT, Role.USER]
    assert resumed[-2].content == stored.content  # the model sees its cut reply, no notice
    assert resumed[-1].content == "continue"


@pytest.mark.parametrize("reply", ["```", "# ", "> ", "``", "```\n```"])
async def test_a_reply_that_renders_to_nothing_is_sent_as_its_characters(
    harness_factory: HarnessFactory, reply: str
) -> None:
    bot = await harness_factory(backend=ScriptedBackend(reply))
    alice = bot.user("Alice")
    chat = bot.private(alice)

    [shown] = await bot.say(chat, alice, "say nothing much")

    assert shown.text == reply.strip()
    assert shown.text != EMPTY_MODEL_REPLY
    assert shown.entities == []
    stored = await _last_stored(bot, chat.id, alice.id)
    assert (stored.content, stored.status) == (reply, MessageStatus.COMPLETE)  # what was shown
