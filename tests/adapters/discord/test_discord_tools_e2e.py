"""Tools end to end on Discord: a person's press between the model's proposal and the act.

The real discord.py client talks to the fake Discord; the engine uses the real
``OpenAIBackend`` against the loopback OpenAI server, scripted to call Home Assistant's
``ha_call_service``; the real Home Assistant tool pack talks to the fake Home Assistant; the
store is the real SQL store on a migrated SQLite file. Everything happens in a server
channel with ``TOOLS_IN_GROUPS=true``: alice is in ``TOOL_USERS``, root is an admin, bob
is neither.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from adapters.discord.adapter import DiscordAdapter
from adapters.homeassistant.tools import HomeAssistantTools
from adapters.llm.openai import OpenAIBackend, OpenAISettings
from adapters.memory.store import SqlMemoryStore
from core.engine import Engine
from core.rounds import EXPIRED
from core.settings import AccessSettings, CoreSettings, LLMSettings, ToolSettings
from core.tool_actions import ALREADY, EXPIRED_NOTICE, NOT_YOURS
from core.tools import Toolbox
from core.types import AuditEntry, ToolDecision
from tests._db import UpgradeHead
from tests.adapters.discord.conftest import discord_settings
from tests.adapters.discord.helpers import idle
from tests.adapters.homeassistant.helpers import make_settings
from tests.core.conftest import Clock
from tests.fakes.discord_server import FakeDiscord, FakeMessage, FakeUser
from tests.fakes.homeassistant_server import FakeHomeAssistant, ServiceCall
from tests.fakes.openai_server import FakeOpenAIServer, FakeReply, FakeToolCall

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]

LIGHT_ON = {"domain": "light", "service": "turn_on", "entity_id": "light.kitchen"}
UNLOCK = {"domain": "lock", "service": "unlock", "entity_id": "lock.front_door"}
LIGHT_ON_DATA = {"entity_id": "light.kitchen"}  # what Home Assistant receives
FACT = "✅ light.kitchen → on"
DONE = "The kitchen light is on now."


def _since_user(body: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    messages = list(body["messages"])
    last = max(i for i, m in enumerate(messages) if m["role"] == "user")
    return messages[last:]


def home_model(body: Mapping[str, Any]) -> str | FakeReply:
    """Calls Home Assistant for the newest message; then says what the tool result says."""
    turn = _since_user(body)
    results = [str(m["content"]) for m in turn if m["role"] == "tool"]
    if results:
        if '"state": "on"' in results[-1]:
            return DONE
        return f"It was not done: {results[-1]}"
    asked = str(turn[0]["content"])
    arguments = UNLOCK if "door" in asked else LIGHT_ON
    return FakeReply(
        text="Let me do that.",
        tool_calls=[FakeToolCall("call_1", "ha_call_service", json.dumps(arguments))],
    )


class Running:
    """One bot process: store, backend, tools, engine and adapter, closed in order."""

    def __init__(
        self,
        store: SqlMemoryStore,
        backend: OpenAIBackend,
        toolbox: Toolbox,
        engine: Engine,
        adapter: DiscordAdapter,
    ) -> None:
        self.store = store
        self.backend = backend
        self.toolbox = toolbox
        self.engine = engine
        self.adapter = adapter
        self.closed = False

    async def aclose(self) -> None:
        if self.closed:
            return
        self.closed = True
        await self.engine.aclose(grace=5)
        await self.adapter.aclose()
        await self.toolbox.aclose()
        await self.backend.aclose()
        await self.store.aclose()


class World:
    """The fakes, the people, and bot processes started on one SQLite file."""

    def __init__(
        self,
        discord: FakeDiscord,
        ha: FakeHomeAssistant,
        openai: FakeOpenAIServer,
        url: str,
        data_dir: Path,
    ) -> None:
        self.discord, self.ha, self.openai = discord, ha, openai
        self.url = url
        self.data_dir = data_dir
        self.clock = Clock()
        self.channel = discord.add_channel(discord.add_guild())
        self.alice = discord.add_user("alice")
        self.bob = discord.add_user("bob")
        self.root = discord.add_user("root")
        self.bots: list[Running] = []

    async def start(self, **tools: Any) -> Running:
        """A bot process on the shared database (a second one is a restart)."""
        store = SqlMemoryStore(self.url)
        await store.start()
        backend = OpenAIBackend(
            OpenAISettings(
                _env_file=None,
                base_url=self.openai.base_url,
                api_key="sk-loopback",
                model="gpt-4o-mini",
            ),
            timeout=10,
        )
        await backend.start()
        toolbox = Toolbox([HomeAssistantTools(make_settings(self.ha))])
        await toolbox.start()
        engine = Engine(
            backend=backend,
            store=store,
            core=CoreSettings(_env_file=None, bot_name="chinwag"),
            llm=LLMSettings(_env_file=None),
            access=AccessSettings(_env_file=None, admin_users=[f"discord:{self.root.id}"]),
            clock=self.clock,
            heartbeat=3600,  # expiry is decided by the press, not by a sweep racing it
            toolbox=toolbox,
            tool_settings=ToolSettings(
                _env_file=None,
                tool_users=[f"discord:{self.alice.id}"],
                tools_in_groups=True,
                **tools,
            ),
        )
        await engine.start()
        adapter = DiscordAdapter(
            discord_settings(self.discord), engine, data_dir=self.data_dir / "data"
        )
        await adapter.start()
        bot = Running(store, backend, toolbox, engine, adapter)
        self.bots.append(bot)
        return bot

    async def ask(self, bot: Running, user: FakeUser, text: str) -> FakeMessage | None:
        """``user`` mentions the bot with ``text``; the question asked, if any."""
        before = set(self.discord.messages)
        await self.discord.user_message(self.channel, user, text, mention_bot=True)
        await settled(self.discord, bot)
        asked = [m for m in self.new_bot_messages(before) if buttons(m)]
        return asked[-1] if asked else None

    def new_bot_messages(self, before: set[str]) -> list[FakeMessage]:
        return [m for i, m in self.discord.messages.items() if i not in before and m.author.bot]

    async def audit(self, bot: Running) -> list[AuditEntry]:
        return await bot.store.audit_entries(bot="chinwag")

    def service_calls(self) -> list[ServiceCall]:
        return list(self.ha.service_calls)


async def settled(fake: FakeDiscord, bot: Running) -> None:
    """Wait until the engine (continuations included) and the adapter are idle."""
    engine = bot.engine
    async with asyncio.timeout(20):
        while True:
            await idle(fake, bot)
            if not (engine._lanes.tasks() or engine._side_tasks):
                await asyncio.sleep(0.05)
                if not (engine._lanes.tasks() or engine._side_tasks):
                    break
            await asyncio.sleep(0.02)
    await idle(fake, bot)


@pytest.fixture
async def world(
    fake: FakeDiscord, sqlite_url: str, tmp_path: Path, upgrade_head: UpgradeHead
) -> AsyncIterator[World]:
    await upgrade_head(sqlite_url)
    async with (
        FakeHomeAssistant() as ha,
        FakeOpenAIServer(reply=home_model) as openai,
    ):
        w = World(fake, ha, openai, sqlite_url, tmp_path)
        try:
            yield w
        finally:
            for bot in reversed(w.bots):
                await bot.aclose()


def buttons(message: FakeMessage) -> list[str]:
    return [c["custom_id"] for row in message.components for c in row["components"]]


def button(message: FakeMessage, answer: str) -> str:
    return next(b for b in buttons(message) if f"|{answer}|" in b)


def public_texts(world: World) -> list[str]:
    """What everyone in the channel sees from the bot (no ephemeral answers)."""
    return [m.content for m in world.discord.bot_messages(world.channel) if not m.ephemeral]


async def test_a_light_turns_on_once_after_the_askers_press(world: World) -> None:
    bot = await world.start()
    question = await world.ask(bot, world.alice, "turn on the kitchen light")
    assert question is not None
    assert not question.ephemeral
    assert "turn on Kitchen light (light.kitchen)" in question.content
    assert world.service_calls() == []  # nothing before the press
    assert world.ha.state_of("light.kitchen") == "off"
    (entry,) = await world.audit(bot)
    assert entry.decision is ToolDecision.PENDING
    assert entry.result_status is None

    press = await world.discord.press(question.id, button(question, "y"), world.alice)
    await settled(world.discord, bot)
    assert press.responses[0]["type"] == 7  # the question updated in place...
    assert question.components == []  # ...without its buttons
    assert question.content.endswith("\n\nYes.")
    assert world.service_calls() == [ServiceCall("light", "turn_on", LIGHT_ON_DATA, 200)]
    assert world.ha.state_of("light.kitchen") == "on"
    (entry,) = await world.audit(bot)
    assert entry.decision is ToolDecision.CONFIRMED
    assert entry.result_status == "ok"
    shown = public_texts(world)
    assert shown.index(FACT) < shown.index(DONE)  # the bot's fact, then the model's words


async def test_the_continuation_after_a_press_is_posted_to_the_channel(world: World) -> None:
    """Everyone saw the question in the server channel: everyone sees what came of it."""
    bot = await world.start()
    question = await world.ask(bot, world.alice, "turn on the kitchen light")
    assert question is not None
    await world.discord.press(question.id, button(question, "y"), world.alice)
    await settled(world.discord, bot)
    after = [m for m in world.discord.bot_messages(world.channel) if m.id > question.id]
    assert [m.content for m in after] == [FACT, DONE]
    assert not any(m.ephemeral for m in after)  # not just for the presser's eyes


async def test_a_strangers_press_is_refused_and_nothing_runs(world: World) -> None:
    bot = await world.start()
    question = await world.ask(bot, world.alice, "turn on the kitchen light")
    assert question is not None

    intruder = await world.discord.press(question.id, button(question, "y"), world.bob)
    await settled(world.discord, bot)
    refusal = intruder.responses[0]
    assert refusal["type"] == 4
    assert refusal["data"]["flags"] & 64
    assert refusal["data"]["content"] == NOT_YOURS
    assert buttons(question)  # still alice's to answer
    assert world.service_calls() == []
    (entry,) = await world.audit(bot)
    assert entry.decision is ToolDecision.PENDING
    assert NOT_YOURS not in public_texts(world)

    await world.discord.press(question.id, button(question, "y"), world.alice)
    await settled(world.discord, bot)
    assert len(world.service_calls()) == 1  # alice's answer still counts


async def test_an_admin_may_confirm_for_the_asker_and_the_channel_sees_the_rest(
    world: World,
) -> None:
    bot = await world.start()
    question = await world.ask(bot, world.alice, "turn on the kitchen light")
    assert question is not None

    await world.discord.press(question.id, button(question, "y"), world.root)
    await settled(world.discord, bot)
    assert len(world.service_calls()) == 1
    (entry,) = await world.audit(bot)
    assert entry.decision is ToolDecision.CONFIRMED
    assert entry.result_status == "ok"
    answers = [m for m in world.discord.bot_messages(world.channel) if m.content == FACT]
    assert [m.ephemeral for m in answers] == [True]  # root's answer, in private
    assert DONE in public_texts(world)  # the conversation goes on where everyone sees it


async def test_a_press_after_a_restart_runs_the_call_once(world: World) -> None:
    first = await world.start()
    question = await world.ask(first, world.alice, "turn on the kitchen light")
    assert question is not None
    await first.aclose()

    second = await world.start()  # a new process on the same database
    await world.discord.press(question.id, button(question, "y"), world.alice)
    await settled(world.discord, second)
    assert world.service_calls() == [ServiceCall("light", "turn_on", LIGHT_ON_DATA, 200)]
    (entry,) = await world.audit(second)
    assert entry.decision is ToolDecision.CONFIRMED
    assert entry.result_status == "ok"
    shown = public_texts(world)
    assert shown.index(FACT) < shown.index(DONE)


async def test_a_double_press_runs_the_call_once(world: World) -> None:
    bot = await world.start()
    question = await world.ask(bot, world.alice, "turn on the kitchen light")
    assert question is not None
    yes = button(question, "y")
    # Both presses reach Discord before the bot answers either (a double click).
    await asyncio.gather(
        world.discord.press(question.id, yes, world.alice),
        world.discord.press(question.id, yes, world.alice),
    )
    await settled(world.discord, bot)
    assert len(world.service_calls()) == 1
    (entry,) = await world.audit(bot)
    assert entry.decision is ToolDecision.CONFIRMED
    assert entry.result_status == "ok"
    shown = public_texts(world)
    assert shown.count(FACT) == 1
    assert shown.count(DONE) == 1
    assert ALREADY in [m.content for m in world.discord.bot_messages(world.channel)]


async def test_a_press_after_the_expiry_is_refused(world: World) -> None:
    bot = await world.start()
    question = await world.ask(bot, world.alice, "turn on the kitchen light")
    assert question is not None
    assert "expires in 2 min" in question.content
    world.clock.advance(121)

    await world.discord.press(question.id, button(question, "y"), world.alice)
    await settled(world.discord, bot)
    assert world.service_calls() == []
    assert world.ha.state_of("light.kitchen") == "off"
    (entry,) = await world.audit(bot)
    assert entry.decision is ToolDecision.EXPIRED
    assert entry.result_status is None
    shown = public_texts(world)
    assert EXPIRED_NOTICE in shown
    assert f"It was not done: {EXPIRED}" in shown  # the model was told, and said so


async def test_a_dangerous_call_needs_more_than_tool_users(world: World) -> None:
    """alice may make ``act`` calls; unlocking a door is ``dangerous``: root's alone."""
    bot = await world.start()
    assert await world.ask(bot, world.alice, "unlock the front door") is None  # nobody asked
    assert world.service_calls() == []
    (denied,) = await world.audit(bot)
    assert denied.decision is ToolDecision.DENIED
    assert denied.risk == "dangerous"
    assert any(
        t.startswith("It was not done: Denied: this user may not make dangerous calls")
        for t in public_texts(world)
    )

    question = await world.ask(bot, world.root, "unlock the front door")
    assert question is not None
    assert question.content.startswith("⚠️ Dangerous action")
    assert world.service_calls() == []
    await world.discord.press(question.id, button(question, "y"), world.root)
    await settled(world.discord, bot)
    assert world.service_calls() == [
        ServiceCall("lock", "unlock", {"entity_id": "lock.front_door"}, 200)
    ]
    assert world.ha.state_of("lock.front_door") == "unlocked"
    confirmed, _ = await world.audit(bot)  # newest first
    assert confirmed.decision is ToolDecision.CONFIRMED
    assert confirmed.result_status == "ok"
    assert "✅ lock.front_door → unlocked" in public_texts(world)


async def test_a_user_without_tool_rights_is_not_offered_the_act_tool(world: World) -> None:
    bot = await world.start()
    assert await world.ask(bot, world.bob, "turn on the kitchen light") is None
    assert world.openai.tools_offered[0] == ["ha_list_entities", "ha_get_state"]
    assert world.service_calls() == []
    (entry,) = await world.audit(bot)  # the model tried anyway: denied, never sent
    assert entry.decision is ToolDecision.DENIED
