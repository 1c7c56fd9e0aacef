"""Tools end to end on Telegram, as a user sees them.

The real python-telegram-bot talks to the fake Telegram; the engine runs the real
``OpenAIBackend`` against the loopback OpenAI server, scripted to emit tool calls; the tools
are the real Home Assistant pack against the fake Home Assistant (plus a Python tool or two);
memory is the SQL store on a SQLite file. What is checked is what users and operators see:
the chat, the fake Home Assistant's log of service calls, the audit, and what the model was
sent.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from adapters.homeassistant.tools import HomeAssistantTools
from adapters.llm.openai import OpenAIBackend, OpenAISettings
from adapters.memory.store import SqlMemoryStore
from adapters.telegram import TelegramAdapter, TelegramSettings
from core.engine import Engine
from core.instance import HEARTBEAT_SECONDS
from core.rounds import DECLINED, EXPIRED, TOOL_FAILED
from core.settings import AccessSettings, CoreSettings, LLMSettings, ToolSettings
from core.tool_actions import (
    ALREADY,
    CANCELLED_NOTICE,
    DECLINED_NOTICE,
    EXPIRED_NOTICE,
    NOT_YOURS,
    UNKNOWN,
)
from core.tools import FunctionTools, Toolbox, tool
from core.turns import ROUND_LIMIT_NOTICE
from core.types import AuditEntry, ToolDecision
from tests._db import UpgradeHead
from tests.adapters.homeassistant.helpers import make_settings
from tests.core.conftest import Clock
from tests.fakes.homeassistant_server import FakeHomeAssistant, ServiceCall
from tests.fakes.openai_server import FakeOpenAIServer, FakeReply, FakeToolCall
from tests.fakes.telegram_server import FakeChat, FakeMessage, FakeTelegram, FakeUser

pytestmark = pytest.mark.timeout(60)

BOT = "tghome"
ALICE = FakeUser(7001, "Alice", "alice_7001")
BOB = FakeUser(7002, "Bob", "bob_7002")
CAROL = FakeUser(7003, "Carol", "carol_7003")
GROUP = FakeChat(-100888, "supergroup", "Home")
ENTITIES = "light.kitchen,sensor.outside"  # light.hall exists in Home Assistant, not here


def private(user: FakeUser) -> FakeChat:
    return FakeChat(user.id, "private")


# --- the scripted model ---------------------------------------------------------------------


def since_user(body: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The messages after the newest user message of a request."""
    messages = list(body["messages"])
    last = max(i for i, m in enumerate(messages) if m["role"] == "user")
    return messages[last + 1 :]


def tool_texts(body: Mapping[str, Any]) -> list[str]:
    """The tool results the model reads, answering the newest user message."""
    return [str(m["content"]) for m in since_user(body) if m["role"] == "tool"]


Step = FakeReply | str | Callable[[Mapping[str, Any]], "FakeReply | str"]


def script(*steps: Step) -> Callable[[Mapping[str, Any]], FakeReply | str]:
    """A model answering round ``n`` of every turn with ``steps[n]`` (the last repeats)."""

    def reply(body: Mapping[str, Any]) -> FakeReply | str:
        done = sum(1 for m in since_user(body) if m["role"] == "assistant" and m.get("tool_calls"))
        step = steps[min(done, len(steps) - 1)]
        return step(body) if callable(step) else step

    return reply


def call(name: str, text: str = "", **arguments: Any) -> FakeReply:
    """A round with one tool call."""
    return FakeReply(text, [FakeToolCall("call_1", name, json.dumps(arguments))])


def turn_on(entity_id: str) -> FakeReply:
    return call("ha_call_service", domain="light", service="turn_on", entity_id=entity_id)


def says_state(body: Mapping[str, Any]) -> str:
    """The continuation: what the tool said, in words (or the error it read)."""
    (found,) = tool_texts(body)
    try:
        return f"The kitchen light is {json.loads(found)['state']}."
    except (ValueError, KeyError):
        return f"That did not work: {found}"


# --- the bot ---------------------------------------------------------------------------------


@dataclass
class World:
    """What outlives a restart of the bot: the fakes, the database file and the clock."""

    telegram: FakeTelegram
    openai: FakeOpenAIServer
    ha: FakeHomeAssistant
    url: str
    clock: Clock

    def texts(self, chat: FakeChat) -> list[str]:
        """The bot's visible messages in ``chat``, oldest first."""
        return [m.text for m in self.telegram.bot_messages(chat.id)]

    async def shows(self, chat: FakeChat, text: str) -> None:
        """Wait until the bot shows ``text`` in ``chat``, then until it is quiet."""
        await self.telegram.wait_for(lambda: text in self.texts(chat))
        await self.telegram.wait_idle(quiet=0.25)

    async def ask(self, chat: FakeChat, user: FakeUser, text: str) -> FakeMessage:
        """``user`` says ``text``; returns the confirmation question the bot asked."""
        before = {m.message_id for m in self.telegram.bot_messages(chat.id)}

        def question() -> FakeMessage | None:
            for m in self.telegram.bot_messages(chat.id):
                if m.message_id not in before and buttons(m):
                    return m
            return None

        self.telegram.send_text(chat, user, text)
        await self.telegram.wait_for(lambda: question() is not None)
        await self.telegram.wait_idle(quiet=0.25)
        found = question()
        assert found is not None
        return found

    async def say(self, chat: FakeChat, user: FakeUser, text: str, replies: int = 1) -> list[str]:
        """``user`` says ``text``; returns the bot's new messages once it is quiet."""
        before = len(self.texts(chat))
        self.telegram.send_text(chat, user, text)
        await self.telegram.wait_for(lambda: len(self.texts(chat)) >= before + replies)
        await self.telegram.wait_idle(quiet=0.3)
        return self.texts(chat)[before:]


@dataclass
class Bot:
    engine: Engine
    store: SqlMemoryStore
    stack: AsyncExitStack

    async def audit(self) -> list[AuditEntry]:
        return await self.store.audit_entries(bot=BOT)

    async def aclose(self) -> None:
        await self.stack.aclose()


def buttons(message: FakeMessage | None) -> list[str]:
    markup = (message.reply_markup if message else None) or {}
    return [b["callback_data"] for row in markup.get("inline_keyboard", []) for b in row]


def yes(message: FakeMessage) -> str:
    return next(b for b in buttons(message) if b.startswith("y|"))


@pytest.fixture
async def world(tmp_path: Path, upgrade_head: UpgradeHead) -> AsyncIterator[World]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'memory.db'}"
    await upgrade_head(url)
    async with (
        FakeTelegram() as telegram,
        FakeOpenAIServer() as openai,
        FakeHomeAssistant() as ha,
    ):
        yield World(telegram, openai, ha, url, Clock())


StartBot = Callable[..., Awaitable[Bot]]


@pytest.fixture
async def start(world: World) -> AsyncIterator[StartBot]:
    """Start a bot on the world's fakes and database; every one is closed at the end."""
    stacks: list[AsyncExitStack] = []

    async def build(
        *,
        tool_users: tuple[FakeUser, ...] = (ALICE,),
        admins: tuple[FakeUser, ...] = (),
        entities: str = ENTITIES,
        extra_tools: tuple[Any, ...] = (),
        heartbeat: float = HEARTBEAT_SECONDS,
        **tool_settings: Any,
    ) -> Bot:
        stack = AsyncExitStack()
        stacks.append(stack)  # closed at the end, even if this start fails half-way
        store = SqlMemoryStore(world.url)
        await store.start()
        stack.push_async_callback(store.aclose)
        backend = OpenAIBackend(
            OpenAISettings(_env_file=None, base_url=world.openai.base_url, api_key="sk-loopback"),
            timeout=10,
        )
        await backend.start()
        stack.push_async_callback(backend.aclose)
        sources: list[Any] = [HomeAssistantTools(make_settings(world.ha, entities=entities))]
        if extra_tools:
            sources.append(FunctionTools(extra_tools))
        toolbox = Toolbox(sources)
        await toolbox.start()
        stack.push_async_callback(toolbox.aclose)
        engine = Engine(
            backend=backend,
            store=store,
            core=CoreSettings(_env_file=None, bot_name=BOT, memory_scope_groups="user"),
            llm=LLMSettings(_env_file=None),
            access=AccessSettings(_env_file=None, admin_users=[f"telegram:{u.id}" for u in admins]),
            clock=world.clock,
            heartbeat=heartbeat,
            toolbox=toolbox,
            tool_settings=ToolSettings(
                _env_file=None, tool_users=[f"telegram:{u.id}" for u in tool_users], **tool_settings
            ),
        )
        await engine.start()
        stack.push_async_callback(engine.aclose, grace=1)
        settings = TelegramSettings(
            _env_file=None,
            bot_token=world.telegram.token,
            api_base_url=world.telegram.base_url,
            group_mode="all",
            edit_interval=0.05,
            group_edit_interval=0.05,
            first_flush_delay=0.02,
            poll_timeout=1,
            request_timeout=10,
        )
        adapter = TelegramAdapter(settings, engine)
        engine.use_adapters([adapter])  # as bots/app.py wires it: recovery can reopen chats
        await engine.recover(adapters_ready=False)
        await adapter.start()
        stack.push_async_callback(adapter.aclose)
        engine.adapters_ready()
        return Bot(engine, store, stack)

    yield build
    for stack in reversed(stacks):
        await stack.aclose()


# --- confirmations ---------------------------------------------------------------------------

KITCHEN_ON = ServiceCall("light", "turn_on", {"entity_id": "light.kitchen"}, 200)


async def test_a_light_is_switched_on_after_the_press_and_never_before(
    world: World, start: StartBot
) -> None:
    world.openai.reply = script(turn_on("light.kitchen"), says_state)
    bot = await start()
    chat = private(ALICE)
    question = await world.ask(chat, ALICE, "turn on the kitchen light")
    assert question.text.startswith("Action: turn on Kitchen light (light.kitchen)")
    assert world.ha.service_calls == []  # nothing before the press
    assert world.ha.state_of("light.kitchen") == "off"
    assert [e.decision for e in await bot.audit()] == [ToolDecision.PENDING]
    assert len(world.openai.chat_requests) == 1  # the model waits for the answer

    world.telegram.press_button(question, ALICE, yes(question))
    await world.shows(chat, "The kitchen light is on.")
    assert world.ha.service_calls == [KITCHEN_ON]
    assert world.ha.state_of("light.kitchen") == "on"
    texts = world.texts(chat)
    assert texts[-2:] == ["✅ light.kitchen → on", "The kitchen light is on."]
    assert buttons(world.telegram.find_message(chat.id, question.message_id)) == []
    (entry,) = await bot.audit()
    assert (entry.tool, entry.decision, entry.result_status) == (
        "ha_call_service",
        ToolDecision.CONFIRMED,
        "ok",
    )
    assert (entry.platform, entry.user_id) == ("telegram", str(ALICE.id))


async def test_a_strangers_press_is_refused_and_the_askers_press_works(
    world: World, start: StartBot
) -> None:
    world.openai.reply = script(turn_on("light.kitchen"), says_state)
    bot = await start(tools_in_groups=True)
    question = await world.ask(GROUP, ALICE, "turn on the kitchen light")

    world.telegram.press_button(question, BOB, yes(question))
    await world.shows(GROUP, NOT_YOURS)
    assert world.ha.service_calls == []
    assert buttons(world.telegram.find_message(GROUP.id, question.message_id))  # still Alice's
    assert [e.decision for e in await bot.audit()] == [ToolDecision.PENDING]

    world.telegram.press_button(question, ALICE, yes(question))
    await world.shows(GROUP, "The kitchen light is on.")
    assert world.ha.service_calls == [KITCHEN_ON]
    assert world.texts(GROUP)[-2:] == ["✅ light.kitchen → on", "The kitchen light is on."]
    (entry,) = await bot.audit()
    assert entry.decision is ToolDecision.CONFIRMED


async def test_a_press_after_a_restart_runs_the_action_once(world: World, start: StartBot) -> None:
    world.openai.reply = script(turn_on("light.kitchen"), says_state)
    first = await start()
    chat = private(ALICE)
    question = await world.ask(chat, ALICE, "turn on the kitchen light")
    await first.aclose()  # adapter, engine, store: all gone; the database file stays

    second = await start()
    pressed = yes(question)
    world.telegram.press_button(question, ALICE, pressed)
    await world.shows(chat, "The kitchen light is on.")
    assert world.ha.service_calls == [KITCHEN_ON]
    assert world.texts(chat)[-2:] == ["✅ light.kitchen → on", "The kitchen light is on."]

    world.telegram.press_button(question, ALICE, pressed)  # the same button again
    await world.shows(chat, ALREADY)
    assert world.ha.service_calls == [KITCHEN_ON]
    (entry,) = await second.audit()
    assert (entry.decision, entry.result_status) == (ToolDecision.CONFIRMED, "ok")


async def test_a_double_press_runs_the_action_once(world: World, start: StartBot) -> None:
    world.openai.reply = script(turn_on("light.kitchen"), says_state)
    bot = await start()
    chat = private(ALICE)
    question = await world.ask(chat, ALICE, "turn on the kitchen light")
    pressed = yes(question)
    world.telegram.press_button(question, ALICE, pressed)
    world.telegram.press_button(question, ALICE, pressed)  # before the first is handled
    await world.shows(chat, "The kitchen light is on.")
    await world.shows(chat, ALREADY)
    assert world.ha.service_calls == [KITCHEN_ON]
    texts = world.texts(chat)
    assert texts.count("✅ light.kitchen → on") == 1
    assert texts.count("The kitchen light is on.") == 1
    assert len(await bot.audit()) == 1


async def test_an_expired_confirmation_runs_nothing(world: World, start: StartBot) -> None:
    world.openai.reply = script(turn_on("light.kitchen"), says_state)
    # No heartbeat sweep during the test: the press itself finds the question expired.
    bot = await start(tool_confirm_seconds=30, heartbeat=3600)
    chat = private(ALICE)
    question = await world.ask(chat, ALICE, "turn on the kitchen light")
    assert "expires in 30 s" in question.text
    world.clock.advance(31)

    world.telegram.press_button(question, ALICE, yes(question))
    await world.shows(chat, f"That did not work: {EXPIRED}")
    assert EXPIRED_NOTICE in world.texts(chat)
    assert world.ha.service_calls == []
    assert world.ha.state_of("light.kitchen") == "off"
    assert tool_texts(world.openai.chat_requests[-1].body) == [EXPIRED]
    (entry,) = await bot.audit()
    assert (entry.decision, entry.result_status) == (ToolDecision.EXPIRED, None)


async def test_a_question_left_unanswered_over_a_restart_expires_and_is_told(
    world: World, start: StartBot
) -> None:
    world.openai.reply = script(turn_on("light.kitchen"), says_state)
    first = await start(tool_confirm_seconds=30)
    chat = private(ALICE)
    question = await world.ask(chat, ALICE, "turn on the kitchen light")
    pressed = yes(question)
    await first.aclose()
    world.clock.advance(31)

    second = await start(tool_confirm_seconds=30, heartbeat=0.2)  # its sweep finds it expired
    await world.shows(chat, f"That did not work: {EXPIRED}")
    assert "The request to run ha_call_service expired: nothing was done." in world.texts(chat)
    (entry,) = await second.audit()
    assert entry.decision is ToolDecision.EXPIRED

    world.telegram.press_button(question, ALICE, pressed)  # too late
    await world.telegram.wait_idle(quiet=0.5)
    assert world.ha.service_calls == []
    assert world.texts(chat)[-1] in (ALREADY, UNKNOWN)


async def test_no_runs_nothing_and_the_model_is_told(world: World, start: StartBot) -> None:
    world.openai.reply = script(turn_on("light.kitchen"), says_state)
    bot = await start()
    chat = private(ALICE)
    question = await world.ask(chat, ALICE, "turn on the kitchen light")
    world.telegram.press_button(question, ALICE, buttons(question)[1])
    await world.shows(chat, f"That did not work: {DECLINED}")
    assert world.texts(chat)[-2:] == [DECLINED_NOTICE, f"That did not work: {DECLINED}"]
    assert world.ha.service_calls == []
    (entry,) = await bot.audit()
    assert entry.decision is ToolDecision.REFUSED


async def test_a_new_message_cancels_the_waiting_action(world: World, start: StartBot) -> None:
    world.openai.reply = script(turn_on("light.kitchen"), says_state)
    bot = await start()
    chat = private(ALICE)
    question = await world.ask(chat, ALICE, "turn on the kitchen light")
    pressed = yes(question)
    world.openai.reply = lambda body: "Fine, I will leave it."
    replies = await world.say(chat, ALICE, "no wait, leave it off", replies=2)
    assert replies == [CANCELLED_NOTICE.format(count=1), "Fine, I will leave it."]
    (entry,) = await bot.audit()
    assert entry.decision is ToolDecision.CANCELLED

    world.telegram.press_button(question, ALICE, pressed)  # the stale button
    await world.telegram.wait_idle(quiet=0.5)
    assert world.ha.service_calls == []
    assert world.texts(chat)[-1] in (ALREADY, UNKNOWN)


# --- the gate ---------------------------------------------------------------------------------


async def test_a_call_outside_the_allowlist_never_reaches_home_assistant(
    world: World, start: StartBot
) -> None:
    world.openai.reply = script(turn_on("light.hall"), says_state)
    bot = await start()
    chat = private(ALICE)
    replies = await world.say(chat, ALICE, "turn on the hall light")
    refusal = "Error: light.hall is not one of the entities this bot may use"
    assert replies == [f"That did not work: {refusal}"]  # no question was asked
    assert tool_texts(world.openai.chat_requests[-1].body) == [refusal]
    assert world.ha.service_calls == []
    assert world.ha.state_of("light.hall") == "on"
    (entry,) = await bot.audit()
    assert entry.decision is ToolDecision.INVALID

    world.openai.reply = lambda body: "Anything else?"  # the chat goes on
    assert await world.say(chat, ALICE, "thanks") == ["Anything else?"]


async def test_only_the_tools_a_user_may_use_are_offered(world: World, start: StartBot) -> None:
    world.openai.reply = lambda body: "Hello."
    await start(tool_users=(ALICE,), admins=(CAROL,))
    for user in (BOB, ALICE, CAROL):
        assert await world.say(private(user), user, "hi") == ["Hello."]
    bob, alice, carol = world.openai.tools_offered
    assert sorted(bob) == ["ha_get_state", "ha_list_entities"]  # read tools only
    assert sorted(alice) == ["ha_call_service", "ha_get_state", "ha_list_entities"]
    assert sorted(carol) == sorted(alice)  # an admin may use every tool


# --- failures and limits ------------------------------------------------------------------------


@tool
async def weather(city: str) -> str:
    """Today's weather.

    Args:
        city: the city.
    """
    raise RuntimeError("the weather service's internals")


async def test_a_tool_that_raises_comes_back_to_the_model_as_an_error(
    world: World, start: StartBot
) -> None:
    world.openai.reply = script(call("weather", city="Oslo"), says_state)
    await start(extra_tools=(weather,))
    chat = private(ALICE)
    assert await world.say(chat, ALICE, "weather in Oslo?") == [f"That did not work: {TOOL_FAILED}"]
    assert tool_texts(world.openai.chat_requests[-1].body) == [TOOL_FAILED]
    assert "internals" not in " ".join(world.texts(chat))

    world.openai.reply = lambda body: "Anything else?"
    assert await world.say(chat, ALICE, "thanks") == ["Anything else?"]


async def test_a_tool_that_times_out_comes_back_to_the_model_as_an_error(
    world: World, start: StartBot
) -> None:
    world.openai.reply = script(call("ha_get_state", entity_id="sensor.outside"), says_state)
    bot = await start(tool_timeout_seconds=0.5)
    chat = private(ALICE)
    world.ha.hang()
    timed_out = "Error: the tool did not answer within 0.5 s."
    assert await world.say(chat, ALICE, "how cold is it?") == [f"That did not work: {timed_out}"]
    assert tool_texts(world.openai.chat_requests[-1].body) == [timed_out]
    (entry,) = await bot.audit()
    assert (entry.decision, entry.result_status) == (ToolDecision.ALLOWED, "timeout")

    world.ha.release()  # Home Assistant is back: the same question works
    world.openai.reply = script(
        call("ha_get_state", "Let me look.", entity_id="sensor.outside"),
        lambda body: f"It is {json.loads(tool_texts(body)[0])['state']} outside.",
    )
    replies = await world.say(chat, ALICE, "and now?", replies=2)
    assert replies == ["Let me look.", "It is 11.5 outside."]  # each round its own message


async def test_the_round_limit_holds(world: World, start: StartBot) -> None:
    world.openai.reply = lambda body: call("ha_list_entities")  # a model that never stops
    bot = await start(tool_max_rounds=2)
    chat = private(ALICE)
    listed_before = len([r for r in world.ha.requests if r.path == "/api/states"])
    replies = await world.say(chat, ALICE, "what is there?")
    assert replies == [ROUND_LIMIT_NOTICE.format(rounds=2)]
    assert len([r for r in world.ha.requests if r.path == "/api/states"]) == listed_before + 2
    assert len(world.openai.chat_requests) == 3  # two rounds ran; the third's call did not
    decisions = [e.decision for e in reversed(await bot.audit())]
    assert decisions == [ToolDecision.ALLOWED, ToolDecision.ALLOWED, ToolDecision.CANCELLED]

    world.openai.reply = lambda body: "Anything else?"
    assert await world.say(chat, ALICE, "ok") == ["Anything else?"]
