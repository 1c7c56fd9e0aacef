"""Chat with the bot in a terminal, or through a pipe one message per line.

The console user is platform ``console`` with the OS login name as id, so memory persists
across runs. Interactive (a terminal): a banner, a prompt, replies printed as they stream.
Piped: standard output carries only the replies, every line is answered before the adapter
ends at end of input, and a confirmation reads the next line (``yes``/``y`` confirms).

On a terminal a reply can be stopped while it streams: ``/stop`` typed during it is handled
at once (not after the reply), and so is Ctrl-C (:meth:`ConsoleAdapter.interrupt`, which the
composition root calls on SIGINT); Ctrl-C again, or at the prompt, quits.

``/attach PATH [caption]`` sends a local file as a platform would (a photo, a voice note or a
document, by its extension: see :mod:`adapters.console.attach`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import getpass
import logging
import sys
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import TextIO

from adapters.console.attach import copy_local, parse_attach
from adapters.files import private_dir, write_private
from core.lifecycle import Lifecycle
from core.ports import ConversationEngine
from core.types import Attachment, IncomingAction, IncomingMessage, QueuePosition, ReplyEvent

_log = logging.getLogger(__name__)
PLATFORM = "console"
_EOF = object()


class _ConsoleReply:
    """The ``ReplyChannel`` of one console message."""

    def __init__(self, adapter: ConsoleAdapter) -> None:
        self._adapter = adapter

    async def send_text(self, text: str) -> Sequence[str]:
        self._adapter.write_reply(text)
        return ()

    async def stream_reply(
        self,
        events: AsyncIterator[ReplyEvent],
        on_posted: Callable[[Sequence[str]], None] | None = None,
    ) -> Sequence[str]:
        adapter = self._adapter
        adapter.begin_reply()
        wrote = False
        adapter.streaming = True
        try:
            async for piece in events:
                if isinstance(piece, QueuePosition):
                    # A terminal cannot take a line back: the notice stays above the answer.
                    adapter.write_reply(piece.notice)
                    adapter.begin_reply()
                    continue
                adapter.out.write(piece)
                adapter.mid_line = True
                if adapter.interactive:
                    adapter.out.flush()
                wrote = True
        finally:
            adapter.streaming = False
        if adapter.mid_line:
            adapter.out.write("\n")
            adapter.mid_line = False
            adapter.out.flush()
        elif adapter.interactive and not wrote:
            adapter.out.write("\r")
        return ()

    async def ask_confirmation(self, prompt: str, action_id: str) -> None:
        """Print the question; the next input line answers it (``yes``/``y`` confirms).

        The answer is read by the input loop, not here: the question may be asked from
        inside a reply, and the confirmed action continues in that conversation, so
        waiting for it here would wait for ourselves.
        """
        self._adapter.write_reply(f"{prompt} [yes/no]")
        self._adapter.questions.append(action_id)

    async def send_file(self, filename: str, data: bytes, caption: str = "") -> None:
        path = self._adapter.save_file(filename, data)
        self._adapter.write_reply(f"{caption} Saved to {path}".strip())

    async def download(self, attachment: Attachment, destination: Path) -> int:
        """A file sent with ``/attach``: copied from where it lies (a ``FileSource``)."""
        return await copy_local(attachment, destination)


class ConsoleAdapter:
    """Reads messages from ``stdin`` and prints replies to ``stdout``.

    Args:
        engine: the conversation engine.
        files_dir: where ``/export`` documents are saved.
        user_id: the console user's id; defaults to ``getpass.getuser()``.
        stdin: the input stream (a terminal or a pipe).
        stdout: where replies go.
        interactive: show a banner and prompts; defaults to ``stdin.isatty()``.
    """

    def __init__(
        self,
        engine: ConversationEngine,
        *,
        files_dir: Path,
        user_id: str | None = None,
        stdin: TextIO | None = None,
        stdout: TextIO | None = None,
        interactive: bool | None = None,
    ) -> None:
        self.engine = engine
        self.user_id = user_id or getpass.getuser()
        self._stdin = stdin or sys.stdin
        self.out = stdout or sys.stdout
        self.interactive = self._stdin.isatty() if interactive is None else interactive
        self._files_dir = files_dir
        self._lines: asyncio.Queue[object] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._state = Lifecycle.NEW
        self._intake_open = True
        self.streaming = False  # a reply is being printed now
        self.mid_line = False  # the last thing printed was part of a line
        self._interrupted = False  # Ctrl-C already stopped the reply in flight
        self._stoppers: set[asyncio.Task[None]] = set()
        # Action ids of the questions printed and not yet answered, oldest first: the next
        # input line answers the first one.
        self.questions: collections.deque[str] = collections.deque()

    @property
    def name(self) -> str:
        """The platform name."""
        return PLATFORM

    @property
    def connected(self) -> bool:
        """Whether input is being read (started, and neither ended nor stopped)."""
        return (
            self._state is Lifecycle.RUNNING
            and self._intake_open
            and self._task is not None
            and not self._task.done()
        )

    async def start(self) -> None:
        """Start reading input. Idempotent."""
        if not self._state.require_startable("ConsoleAdapter"):
            return
        self._state = Lifecycle.RUNNING
        loop = asyncio.get_running_loop()
        # A daemon thread, not the default executor: a read blocked on a terminal must not
        # keep the process alive at shutdown.
        threading.Thread(
            target=self._read_lines, args=(loop,), name="chinwag-console-stdin", daemon=True
        ).start()
        if self.interactive:
            self.out.write(
                f"chinwag console: chatting with {self.engine.bot_name} as {self.user_id} "
                f"(model {self.engine.default_model}). /help lists commands; "
                "/attach PATH [caption] sends a file; Ctrl-C stops a reply; Ctrl-D quits.\n"
            )
            self.out.flush()
        self._task = asyncio.create_task(self._serve(), name="chinwag-console")

    async def wait_closed(self) -> None:
        """Return at end of input, once every line was answered."""
        if self._task is None:
            raise RuntimeError("ConsoleAdapter.wait_closed() before start()")
        await asyncio.shield(self._task)

    async def stop_intake(self) -> None:
        """Stop reading input: no line read from now on is answered. Idempotent.

        The reply in flight is still printed; ``wait_closed()`` returns once it is done.
        """
        if not self._intake_open:
            return
        self._intake_open = False
        self._lines.put_nowait(_EOF)  # wakes a read waiting for the next line

    def resume(
        self, chat_id: str, thread_id: str | None, message_ids: Sequence[str]
    ) -> _ConsoleReply:
        """A channel for a reply recovered after a crash; the answer is printed anew.

        A terminal cannot edit what it printed.
        """
        return _ConsoleReply(self)

    async def aclose(self) -> None:
        """Stop reading. Idempotent."""
        self._intake_open = False
        self._state = Lifecycle.CLOSED
        tasks = [t for t in (self._task, *self._stoppers) if t is not None and not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)

    def _read_lines(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            for line in self._stdin:
                if self._state is Lifecycle.CLOSED:
                    return  # a line typed after the chat ended has no one to read it
                loop.call_soon_threadsafe(self._take_line, line.rstrip("\r\n"))
        except (OSError, ValueError):
            _log.debug("console input closed", exc_info=True)
        except RuntimeError:  # a line read after the loop closed: nobody reads any more
            _log.debug("console input read after the event loop closed")
        finally:
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                loop.call_soon_threadsafe(self._lines.put_nowait, _EOF)

    def _take_line(self, line: str) -> None:
        # ``/stop`` must reach the reply it stops now, not wait in line behind it.
        if self.interactive and self.streaming and line.strip() == "/stop":
            self._stop_reply()
        else:
            self._lines.put_nowait(line)

    def interrupt(self) -> bool:
        """Ctrl-C: stop the reply streaming now and return ``True``.

        ``False`` (the caller quits) when no reply is streaming, or Ctrl-C already stopped
        this one: a second Ctrl-C quits.
        """
        if not (self.interactive and self.streaming) or self._interrupted:
            return False
        self._interrupted = True
        self._stop_reply()
        return True

    def _stop_reply(self) -> None:
        message = self._message("/stop")
        task = asyncio.create_task(
            self.engine.handle(message, _ConsoleReply(self)), name="chinwag-console-stop"
        )
        self._stoppers.add(task)
        task.add_done_callback(self._stoppers.discard)

    def _message(self, text: str, attachments: tuple[Attachment, ...] = ()) -> IncomingMessage:
        return IncomingMessage(
            platform=PLATFORM,
            chat_id=self.user_id,
            user_id=self.user_id,
            text=text,
            is_private=True,
            user_name=self.user_id,
            attachments=attachments,
        )

    async def next_line(self, prompt: str = "you> ") -> str | None:
        """The next input line, or ``None`` at end of input."""
        if self.interactive:
            self.out.write(prompt)
            self.out.flush()
        line = await self._lines.get() if self._intake_open else _EOF
        if line is _EOF or not self._intake_open:
            self._lines.put_nowait(_EOF)  # stay at end of input for later readers
            return None
        assert isinstance(line, str)
        return line

    def begin_reply(self) -> None:
        """Mark the start of a reply on a terminal."""
        if self.interactive:
            self.out.write(f"{self.engine.bot_name}> ")
            self.out.flush()

    def write_reply(self, text: str) -> None:
        """Print a whole reply or notice (on a line of its own)."""
        if self.mid_line:
            self.out.write("\n")
            self.mid_line = False
        self.begin_reply()
        self.out.write(text.rstrip("\n") + "\n")
        self.out.flush()

    def save_file(self, filename: str, data: bytes) -> Path:
        """Save a delivered document and return its path."""
        return write_private(private_dir(self._files_dir) / Path(filename).name, data)

    async def _serve(self) -> None:
        reply = _ConsoleReply(self)
        while True:
            line = await self.next_line("yes/no> " if self.questions else "you> ")
            if line is None:
                while self.questions:  # end of input declines what is still asked
                    await self._answer(self.questions.popleft(), False, reply)
                if self.interactive:
                    self.out.write("\n")
                    self.out.flush()
                return
            if self.questions:
                accepted = line.strip().lower() in ("y", "yes")
                await self._answer(self.questions.popleft(), accepted, reply)
                continue
            if not line.strip() and self.interactive:
                continue
            self._interrupted = False
            command, _, arg = line.strip().partition(" ")
            if command == "/attach":
                parsed = parse_attach(arg)
                if isinstance(parsed, str):
                    self.write_reply(parsed)
                    continue
                await self.engine.handle(self._message(parsed[1], (parsed[0],)), reply)
                continue
            await self.engine.handle(self._message(line), reply)

    async def _answer(self, action_id: str, accepted: bool, reply: _ConsoleReply) -> None:
        await self.engine.handle_action(
            IncomingAction(
                platform=PLATFORM,
                chat_id=self.user_id,
                user_id=self.user_id,
                action_id=action_id,
                accepted=accepted,
            ),
            reply,
        )
