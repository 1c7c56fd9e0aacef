"""A reply cut by the token limit, and one whose Markdown shows nothing, on Discord end to end:
the real discord.py client, the adapter, the real engine and store, the fake Discord."""

from __future__ import annotations

import pytest

from adapters.discord.split import escape_markdown
from core.notices import CUT_NOTICE
from core.types import CompletionRequest
from tests.adapters.discord.helpers import fences_balanced, idle
from tests.fakes.discord_server import FakeDiscord
from tests.fakes.scripted import ScriptedBackend

_CODE = "Like so:\n```js\n" + "".join(f"log({n});\n" for n in range(30)) + "```"
_REPLIES = {"show me": _CODE, "continue": "log(29);\n```", "say little": "```"}


@pytest.fixture
def backend() -> ScriptedBackend:
    def reply(request: CompletionRequest) -> str:
        return _REPLIES[request.messages[-1].content]

    return ScriptedBackend(reply)


async def test_a_cut_reply_closes_its_code_block_and_ends_with_the_notice(
    fake: FakeDiscord, make_bot, backend: ScriptedBackend
) -> None:
    bot = await make_bot(max_reply_tokens=10)
    alice = fake.add_user("alice")
    dm = fake.dm_channel(alice)

    await fake.user_message(dm, alice, "show me")
    await idle(fake, bot)
    [cut] = fake.bot_texts(dm)
    assert cut.startswith("Like so:\n```js\nlog(0);")
    assert cut.endswith(f"\n```\n\n{CUT_NOTICE}")  # the block closed, then the notice
    assert fences_balanced(cut)

    await fake.user_message(dm, alice, "continue")
    await idle(fake, bot)
    assert fake.bot_texts(dm)[-1] == "```js\nlog(29);\n```"  # shown inside the block again
    assert backend.calls[-1].messages[-2].content == cut.removesuffix(f"\n```\n\n{CUT_NOTICE}")


async def test_a_reply_of_markup_alone_is_sent_as_its_characters(
    fake: FakeDiscord, make_bot
) -> None:
    bot = await make_bot()
    alice = fake.add_user("alice")
    dm = fake.dm_channel(alice)

    await fake.user_message(dm, alice, "say little")
    await idle(fake, bot)
    assert fake.bot_texts(dm) == [escape_markdown("```")]  # shows ``` literally
