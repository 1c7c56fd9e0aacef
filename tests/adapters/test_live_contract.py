"""The live-message contract, over every chat platform.

Telegram and Discord show a streamed reply through ``adapters.live.LiveMessage``; each is
driven here through its real client (python-telegram-bot, discord.py) against the loopback
fakes, with a stub engine that hands the test the adapter's ``ReplyChannel``. The console
can only post (a terminal cannot edit or delete): it is held to what applies.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any, Protocol

import pytest

from adapters.console.adapter import ConsoleAdapter, _ConsoleReply
from adapters.discord.adapter import DiscordAdapter
from adapters.discord.split import DISCORD_LIMIT, escape_markdown, split_message
from adapters.telegram import TelegramAdapter
from adapters.telegram.split import TELEGRAM_LIMIT, plain_parts, render_parts
from core.ports import ReplyChannel
from core.types import CommandInfo, IncomingAction, IncomingMessage, QueuePosition, ReplyEvent
from tests.adapters.discord.conftest import discord_settings
from tests.adapters.telegram.conftest import fast_settings
from tests.fakes.discord_server import FakeDiscord
from tests.fakes.telegram_server import FakeChat, FakeTelegram, FakeUser

_END = object()
_ids = itertools.count(5000)


class StubEngine:
    """The inbound port, recording what the adapter submits; replies are the test's to drive."""

    bot_name = "contract"
    default_model = "stub"

    def __init__(self) -> None:
        self.received: list[tuple[IncomingMessage, ReplyChannel]] = []
        self._futures: list[asyncio.Future[None]] = []
        self._arrived = asyncio.Event()

    def commands(self) -> Sequence[CommandInfo]:
        return ()

    def submit(self, msg: IncomingMessage, out: ReplyChannel) -> asyncio.Future[None]:
        self.received.append((msg, out))
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._futures.append(future)
        self._arrived.set()
        return future

    async def handle(self, msg: IncomingMessage, out: ReplyChannel) -> None:
        await self.submit(msg, out)

    async def handle_action(self, action: IncomingAction, out: ReplyChannel) -> None:
        return None

    async def wait_received(self, count: int) -> None:
        async with asyncio.timeout(10):
            while len(self.received) < count:
                self._arrived.clear()
                await self._arrived.wait()

    def settle_all(self) -> None:
        for future in self._futures:
            if not future.done():
                future.set_result(None)


class Feed:
    """The reply's event stream, pushed by the test."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[object] = asyncio.Queue()

    def push(self, *items: ReplyEvent) -> None:
        for item in items:
            self._queue.put_nowait(item)

    def end(self) -> None:
        self._queue.put_nowait(_END)

    async def events(self) -> AsyncIterator[ReplyEvent]:
        while (item := await self._queue.get()) is not _END:
            assert isinstance(item, str | QueuePosition)
            yield item


class Platform(Protocol):
    """What the contract needs to see of a platform."""

    limit: int
    engine: StubEngine

    async def ask(self, text: str) -> ReplyChannel: ...

    def render(self, text: str) -> list[str]: ...

    def plain(self, text: str) -> list[str]: ...

    def texts(self) -> list[str]: ...

    def ids(self) -> list[str]: ...

    def posts(self) -> int: ...

    def edits(self, message_id: str) -> int: ...

    def delete_as_user(self, message_id: str) -> None: ...

    def deleted(self, message_id: str) -> bool: ...

    async def wait_for(self, predicate: Callable[[], bool]) -> None: ...

    async def quiet(self) -> None: ...


class TelegramPlatform:
    limit = TELEGRAM_LIMIT

    def __init__(self, fake: FakeTelegram, adapter: TelegramAdapter, engine: StubEngine) -> None:
        self.fake, self.adapter, self.engine = fake, adapter, engine
        user_id = next(_ids)
        self.user = FakeUser(user_id, "Alice", f"alice_{user_id}")
        self.chat = FakeChat(user_id, "private")

    async def ask(self, text: str) -> ReplyChannel:
        self.fake.send_text(self.chat, self.user, text)
        await self.engine.wait_received(len(self.engine.received) + 1)
        return self.engine.received[-1][1]

    def render(self, text: str) -> list[str]:
        return [part.text for part in render_parts(text)]

    def plain(self, text: str) -> list[str]:
        return [part.text.strip() for part in plain_parts(text)]  # Telegram trims the edges

    def texts(self) -> list[str]:
        return [m.text for m in self.fake.bot_messages(self.chat.id)]

    def ids(self) -> list[str]:
        return [str(m.message_id) for m in self.fake.bot_messages(self.chat.id)]

    def posts(self) -> int:
        return len([c for c in self.fake.calls_to("sendMessage") if c.ok])

    def _message(self, message_id: str) -> Any:
        message = self.fake.find_message(self.chat.id, int(message_id))
        assert message is not None
        return message

    def edits(self, message_id: str) -> int:
        # Edit calls, not accepted edits: the fake refuses an edit that changes nothing.
        calls = self.fake.calls_to("editMessageText")
        return len([c for c in calls if str(c.params.get("message_id")) == message_id])

    def delete_as_user(self, message_id: str) -> None:
        self._message(message_id).deleted = True

    def deleted(self, message_id: str) -> bool:
        return bool(self._message(message_id).deleted)

    def refusals(self) -> list[Any]:
        return [c for c in self.fake.calls if not c.ok]

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        await self.fake.wait_for(predicate, timeout=10)

    async def quiet(self) -> None:
        # Not fake.wait_idle(): it also waits for pending updates, which here must stay.
        while (wait := self.fake.calls[-1].at + 0.2 - time.monotonic()) > 0:
            await asyncio.sleep(wait)


class DiscordPlatform:
    limit = DISCORD_LIMIT

    def __init__(self, fake: FakeDiscord, adapter: DiscordAdapter, engine: StubEngine) -> None:
        self.fake, self.adapter, self.engine = fake, adapter, engine
        self.user = fake.add_user(f"alice{next(_ids)}")
        self.chat = fake.dm_channel(self.user)

    async def ask(self, text: str) -> ReplyChannel:
        await self.fake.user_message(self.chat, self.user, text)
        await self.engine.wait_received(len(self.engine.received) + 1)
        return self.engine.received[-1][1]

    def render(self, text: str) -> list[str]:
        return split_message(text)

    def plain(self, text: str) -> list[str]:
        return split_message(escape_markdown(text))

    def texts(self) -> list[str]:
        return self.fake.bot_texts(self.chat)

    def ids(self) -> list[str]:
        return [m.id for m in self.fake.bot_messages(self.chat)]

    def posts(self) -> int:
        return len([s for s in self.fake.sends if s.kind == "create"])

    def edits(self, message_id: str) -> int:
        return self.fake.messages[message_id].edits

    def delete_as_user(self, message_id: str) -> None:
        self.fake.messages[message_id].deleted = True

    def deleted(self, message_id: str) -> bool:
        return self.fake.messages[message_id].deleted

    def refusals(self) -> list[Any]:
        return [c for c in self.fake.calls if c.status >= 400]

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        await self.fake.wait_for(predicate, timeout=10, what="the messages")

    async def quiet(self) -> None:
        await self.fake.settle(quiet=0.2)


@pytest.fixture(params=["telegram", "discord"])
async def platform(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    engine = StubEngine()
    async with AsyncExitStack() as stack:
        if request.param == "telegram":
            fake_tg = await stack.enter_async_context(FakeTelegram())
            telegram = TelegramAdapter(fast_settings(fake_tg), engine)
            stack.push_async_callback(telegram.aclose)
            await telegram.start()
            yield TelegramPlatform(fake_tg, telegram, engine)
        else:
            fake_dc = await stack.enter_async_context(FakeDiscord())
            discord = DiscordAdapter(discord_settings(fake_dc), engine, data_dir=tmp_path / "data")
            stack.push_async_callback(discord.aclose)
            await discord.start()
            yield DiscordPlatform(fake_dc, discord, engine)
        engine.settle_all()


def _paragraphs(limit: int, count: int, fill: float = 0.6) -> list[str]:
    words = int(limit * fill) // 8
    return [" ".join(f"p{n}w{i:03}" for i in range(words)) for n in range(count)]


async def _stream(out: ReplyChannel, feed: Feed) -> asyncio.Task[Sequence[str]]:
    return asyncio.create_task(out.stream_reply(feed.events()), name="contract-stream")


async def test_a_long_reply_is_split_and_every_part_accepted(platform: Any) -> None:
    text = "\n\n".join(_paragraphs(platform.limit, 5))
    out = await platform.ask("write a lot")
    feed = Feed()
    task = await _stream(out, feed)
    for start in range(0, len(text), 500):
        feed.push(text[start : start + 500])
    feed.end()
    ids = await task

    expected = platform.render(text)
    assert len(expected) >= 3
    assert platform.texts() == expected
    assert list(ids) == platform.ids()
    assert platform.refusals() == []  # no part was over the platform's limit


async def test_changed_parts_are_edited_and_unchanged_ones_left_alone(platform: Any) -> None:
    first, second = _paragraphs(platform.limit, 2, fill=0.9)
    out = await platform.ask("two parts")
    feed = Feed()
    task = await _stream(out, feed)
    partial = f"{first}\n\n{second[: len(second) // 2]}"
    feed.push(partial)
    await platform.wait_for(lambda: platform.texts() == platform.render(partial))
    head_id = platform.ids()[0]
    head_edits = platform.edits(head_id)

    feed.push(second[len(second) // 2 :])
    feed.end()
    ids = await task

    assert platform.texts() == [first, second]
    assert platform.edits(head_id) == head_edits  # the first part never changed
    assert platform.edits(ids[1]) >= 1  # the second grew in place
    assert platform.posts() == 2


async def test_a_short_reply_is_posted_once_and_never_edited(platform: Any) -> None:
    out = await platform.ask("quick")
    feed = Feed()
    task = await _stream(out, feed)
    feed.push("Short ", "and sweet.")
    feed.end()
    [message_id] = await task

    assert platform.texts() == ["Short and sweet."]
    assert platform.posts() == 1
    assert platform.edits(message_id) == 0


async def test_a_message_deleted_by_someone_is_posted_again(platform: Any) -> None:
    out = await platform.ask("count")
    feed = Feed()
    task = await _stream(out, feed)
    feed.push("one two")
    await platform.wait_for(lambda: platform.texts() == ["one two"])
    [gone] = platform.ids()
    platform.delete_as_user(gone)  # a moderator removes it while it streams

    feed.push(" three four")
    feed.end()
    [shown] = await task

    assert platform.texts() == ["one two three four"]
    assert shown != gone


async def test_a_queue_notice_shows_until_the_answer_replaces_it(platform: Any) -> None:
    notice = QueuePosition(2).notice
    out = await platform.ask("busy?")
    feed = Feed()
    task = await _stream(out, feed)
    feed.push(QueuePosition(2))
    await platform.wait_for(lambda: platform.texts() == platform.render(notice))
    [notice_id] = platform.ids()

    feed.push("Here is ", "your answer.")
    await platform.wait_for(lambda: platform.texts() == ["Here is your answer."])  # mid-stream
    feed.end()
    ids = await task

    assert platform.texts() == ["Here is your answer."]
    assert list(ids) == [notice_id]  # the notice's message became the answer
    assert platform.posts() == 1


async def test_a_notice_never_followed_by_text_is_taken_down(platform: Any) -> None:
    out = await platform.ask("busy?")
    feed = Feed()
    task = await _stream(out, feed)
    feed.push(QueuePosition(1))
    await platform.wait_for(lambda: len(platform.texts()) == 1)
    [notice_id] = platform.ids()
    feed.end()

    assert list(await task) == []  # the notice is never part of the reply
    assert platform.deleted(notice_id)


@pytest.mark.parametrize("reply", ["```", "# ", "> ", "_ _", "```\n```"])
async def test_a_reply_that_renders_to_nothing_is_shown_as_its_characters(
    platform: Any, reply: str
) -> None:
    out = await platform.ask("say little")
    feed = Feed()
    task = await _stream(out, feed)
    feed.push(reply)
    await platform.quiet()
    # While it streams, markup alone is shown as nothing (or, where visible, as itself).
    assert platform.texts() in ([], platform.plain(reply))
    feed.end()
    ids = await task

    assert platform.texts() == platform.plain(reply)
    assert len(ids) == 1
    assert platform.refusals() == []


async def test_existing_messages_are_edited_into_the_complete_answer(platform: Any) -> None:
    out = await platform.ask("again")
    old = list(await out.send_text("partial answer, cut by a crash"))
    text = "\n\n".join(_paragraphs(platform.limit, 4))
    expected = platform.render(text)
    assert len(expected) >= 2

    live = out.adopt(old)
    live.add(text)
    ids = await live.finish()

    assert platform.texts() == expected
    assert ids[0] == old[0]  # edited in place, the rest posted after it


async def test_spare_existing_messages_are_deleted_when_the_answer_is_shorter(
    platform: Any,
) -> None:
    out = await platform.ask("again")
    old = [
        *await out.send_text("first old part"),
        *await out.send_text("second old part"),
        *await out.send_text("third old part"),
    ]

    live = out.adopt(old)
    live.add("The whole answer, short.")
    ids = await live.finish()

    assert ids == [old[0]]
    assert platform.texts() == ["The whole answer, short."]
    assert [platform.deleted(i) for i in old] == [False, True, True]


async def test_posted_messages_are_reported_while_streaming_never_for_a_short_reply(
    platform: Any,
) -> None:
    reported: list[list[str]] = []
    out = await platform.ask("quick")
    feed = Feed()
    task = asyncio.create_task(
        out.stream_reply(feed.events(), lambda ids: reported.append(list(ids)))
    )
    feed.push("Short ", "and sweet.")
    feed.end()
    await task
    assert reported == []  # the final record stores its id: nothing extra on the hot path

    first, second = _paragraphs(platform.limit, 2, fill=0.9)
    out = await platform.ask("two parts")
    feed = Feed()
    task = asyncio.create_task(
        out.stream_reply(feed.events(), lambda ids: reported.append(list(ids)))
    )
    feed.push(first)
    await platform.wait_for(lambda: len(reported) == 1)
    assert reported == [platform.ids()[-1:]]  # told as soon as it was posted
    feed.push(f"\n\n{second}")
    feed.end()
    ids = await task
    assert len(ids) == 2
    assert reported[0] == [ids[0]]


async def test_a_resumed_chat_edits_the_messages_already_on_screen(platform: Any) -> None:
    out = await platform.ask("again")
    old = list(await out.send_text("partial answer, cut by a crash"))
    chat_id = str(getattr(platform.chat, "id", platform.chat))
    resumed = platform.adapter.resume(chat_id, None, old)
    feed = Feed()
    task = await _stream(resumed, feed)
    feed.push("The whole ", "answer.")
    feed.end()
    assert list(await task) == old
    assert platform.texts() == ["The whole answer."]  # edited in place, no second copy
    assert platform.posts() == 1


async def test_after_stop_intake_new_messages_wait_and_replies_in_flight_arrive(
    platform: Any,
) -> None:
    out = await platform.ask("first")
    feed = Feed()
    task = await _stream(out, feed)
    await platform.adapter.stop_intake()
    await platform.adapter.stop_intake()  # idempotent

    if isinstance(platform, TelegramPlatform):
        platform.fake.send_text(platform.chat, platform.user, "too late")
    else:
        await platform.fake.user_message(platform.chat, platform.user, "too late")
    feed.push("still delivered")
    feed.end()
    await task
    await platform.quiet()  # the in-flight reply's calls gave the intake time to act

    assert platform.texts() == ["still delivered"]
    assert [msg.text for msg, _ in platform.engine.received] == ["first"]
    if isinstance(platform, TelegramPlatform):
        assert platform.fake.pending_updates == 1  # left with Telegram for the next start


# --- the console: it can only post ----------------------------------------------------------


async def _console_reply(*events: ReplyEvent) -> tuple[str, Sequence[str]]:
    out = io.StringIO()
    adapter = ConsoleAdapter(
        StubEngine(), files_dir=Path("."), stdin=io.StringIO(""), stdout=out, interactive=False
    )
    feed = Feed()
    feed.push(*events)
    feed.end()
    ids = await _ConsoleReply(adapter).stream_reply(feed.events())
    return out.getvalue(), ids


async def test_console_prints_a_reply_once_whole() -> None:
    printed, ids = await _console_reply("Short ", "and sweet.")
    assert printed == "Short and sweet.\n"
    assert ids == ()


async def test_console_prints_the_queue_notice_above_the_answer() -> None:
    printed, _ = await _console_reply(QueuePosition(3), "The answer.")
    assert printed == f"{QueuePosition(3).notice}\nThe answer.\n"


async def test_console_stop_intake_answers_no_later_line(tmp_path: Path) -> None:
    engine = StubEngine()
    adapter = ConsoleAdapter(
        engine,
        files_dir=tmp_path,
        stdin=io.StringIO("first\nsecond\n"),
        stdout=io.StringIO(),
        interactive=False,
    )
    await adapter.start()
    await engine.wait_received(1)  # "first" is being answered; "second" is already read
    await adapter.stop_intake()
    await adapter.stop_intake()  # idempotent
    engine.settle_all()
    async with asyncio.timeout(5):  # a console still reading would answer "second" and hang
        await adapter.wait_closed()
    await adapter.aclose()

    assert [msg.text for msg, _ in engine.received] == ["first"]
