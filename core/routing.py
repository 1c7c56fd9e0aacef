"""One message's way through the engine: its command, its attachments, or a reply.

:class:`Router` is the engine's collaborator for what happens inside a lane (and for the
commands and button presses that skip it): the allowlist and limits, then a command, the
attachments' intake or a turn for the model; a message stored before (redelivered by the
platform or a queue) is answered once, and a reply taken over from a dead process is produced
again into its messages on screen. :class:`core.engine.Engine` builds one and delegates to it;
the error hook and the lanes stay the engine's.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from core.admission import Admission
from core.commands import BuiltinCommands, CommandRegistry, parse_command
from core.confirmations import Confirmations
from core.errors import DuplicateMessage
from core.intake import Intake, TurnInput
from core.kb_chat import KbChat
from core.notices import EMPTY_REPLY, UNSUPPORTED_REPLY, notify
from core.ports import LLMBackend, MemoryStore, ReplyChannel
from core.prompt import HistoryCache
from core.recovery import Recovery
from core.rounds import ROUND_STATUSES, calls_of
from core.sessions import Sessions
from core.tooling import Tooling
from core.types import (
    ConversationKey,
    IncomingAction,
    IncomingMessage,
    MessageStatus,
    Preferences,
    ReplyInProgress,
    Role,
    StoredMessage,
)

_log = logging.getLogger(__name__)

_ANSWERED = (MessageStatus.COMPLETE, MessageStatus.CUT, *ROUND_STATUSES)
"""A redelivered message whose reply has one of these statuses is not answered again."""


class Router:
    """Routes one message (or button press) of a conversation; the engine's collaborator.

    Args:
        backend: the LLM backend.
        store: the memory store.
        admission: allowlists, rate, quota and size.
        commands: the command registry.
        builtins: the built-in commands (``/forget``'s confirmed press).
        confirmations: pending yes/no questions.
        sessions: conversation ids, preferences and models per slot.
        history: the engine's history cache.
        intake: photos, voice notes and files sent.
        tools: the engine's tool parts (the loop that answers a turn).
        recovery: the engine's crash recovery (replies taken over).
        kb: the knowledge base's chat side (none without a knowledge base).
        shared: other processes serve the same conversations (see ``Engine(shared=...)``).
        key_of: the conversation slot of a message.
        owner: this process's instance id.
    """

    def __init__(
        self,
        *,
        backend: LLMBackend,
        store: MemoryStore,
        admission: Admission,
        commands: CommandRegistry,
        builtins: BuiltinCommands,
        confirmations: Confirmations,
        sessions: Sessions,
        history: HistoryCache,
        intake: Intake,
        tools: Tooling,
        recovery: Recovery,
        kb: KbChat | None,
        shared: bool,
        key_of: Callable[[IncomingMessage], ConversationKey],
        owner: Callable[[], str],
    ) -> None:
        self._backend = backend
        self._store = store
        self._admission = admission
        self._commands = commands
        self._builtins = builtins
        self._confirmations = confirmations
        self._sessions = sessions
        self._history = history
        self._intake = intake
        self._tools = tools
        self._recovery = recovery
        self._kb = kb
        self._shared = shared
        self._key_of = key_of
        self._owner = owner

    async def bypassing(self, msg: IncomingMessage, out: ReplyChannel, name: str, arg: str) -> None:
        """A command that skips the lane (``/stop``): allowlist, then the command."""
        if not await self._admission.allowed(msg, out):
            return
        admin = self._admission.is_admin(msg)
        await self._commands.dispatch(self._key_of(msg), msg, out, name, arg, admin=admin)

    async def action(self, action: IncomingAction, out: ReplyChannel) -> None:
        """A button press: a tool call's confirmation, or a built-in command's yes/no."""
        if action.action_id.startswith("t:"):
            await self._tools.actions.on_action(action, out)
            return
        pending = await self._confirmations.resolve(action, out)
        if pending is not None:
            await self._builtins.confirmed(pending, out)

    async def process(self, key: ConversationKey, msg: IncomingMessage, out: ReplyChannel) -> None:
        """A message in its lane: allowlist, then a command, the attachments or a turn."""
        admission = self._admission
        if not await admission.allowed(msg, out):
            return
        if msg.unsupported:
            await notify(out, UNSUPPORTED_REPLY.format(kind=msg.unsupported))
            return
        text = msg.text.strip()
        parsed = parse_command(text) if text else None
        if msg.attachments and parsed is None:
            turn = await self._intake.turn(key, msg, text, out)
            if turn is not None:
                await self._converse(key, msg, turn, out)
            return
        if not text:
            await notify(out, EMPTY_REPLY)
            return
        if parsed is not None:
            if await admission.within_limits(msg, out):
                admin = admission.is_admin(msg)
                await self._commands.dispatch(key, msg, out, *parsed, admin=admin)
            return
        too_long = admission.size_refusal(text)
        if too_long is not None:
            await notify(out, too_long)
            return
        if not await admission.within_limits(msg, out):
            return
        await self._converse(key, msg, TurnInput(text), out)

    async def _converse(
        self, key: ConversationKey, msg: IncomingMessage, turn: TurnInput, out: ReplyChannel
    ) -> None:
        sessions = self._sessions
        prefs = await sessions.preferences(key)
        model = sessions.model_for(prefs)
        tokenizer = self._backend.tokenizer_name(model)
        conversation_id = await sessions.conversation_id(key)
        await self._tools.cancel(conversation_id, out, model)  # the conversation moved on
        tokens = await self._backend.count_tokens(turn.text, model)
        new = turn.messages(msg, tokens, tokenizer, self._owner())
        try:
            user_message, placeholder = await self._store.append_messages(conversation_id, new)
        except DuplicateMessage as duplicate:
            assert isinstance(duplicate.existing, StoredMessage)
            await self._redelivered(key, msg, duplicate.existing, out, model, prefs)
            return
        self._history.add(user_message)
        await self._reply(key, msg, out, placeholder, model, prefs)

    async def _redelivered(
        self,
        key: ConversationKey,
        msg: IncomingMessage,
        seen: StoredMessage,
        out: ReplyChannel,
        model: str,
        prefs: Preferences,
    ) -> None:
        """A message we stored before: answered once; re-answered if its reply broke off."""
        self._history.drop(seen.conversation_id)
        reply = await self._store.reply_to(seen) if seen.role is Role.USER else seen
        if reply is not None and reply.status in _ANSWERED:
            _log.info(
                "ignoring redelivered %s message %s: already answered", msg.platform, msg.message_id
            )
            return
        if reply is not None and reply.status is MessageStatus.IN_PROGRESS:
            # Its writer may be alive (still streaming) or dead (its messages are on screen):
            # taken over, and edited in place, only in the second case.
            await self._recovery.redelivered(reply, out, wait=self._shared)
            return
        if reply is not None:
            await self._store.finish_message(
                reply.id, content=reply.content, status=MessageStatus.FAILED
            )
        _log.info("answering redelivered %s message %s again", msg.platform, msg.message_id)
        placeholder = await self._tools.loop.next_placeholder(seen.conversation_id)
        await self._reply(key, msg, out, placeholder, model, prefs)

    async def _reply(
        self,
        key: ConversationKey,
        msg: IncomingMessage,
        out: ReplyChannel,
        placeholder: StoredMessage,
        model: str,
        prefs: Preferences,
        shown: Sequence[str] = (),
        rounds: int = 0,
    ) -> None:
        turn = self._tools.turn(key, msg, out, model, prefs, rounds)
        if self._kb is not None and not await self._kb.ground(turn, placeholder):
            return  # KB_STRICT: nothing relevant in the documents, said without the model
        await self._tools.loop.answer(turn, placeholder, shown)

    async def resume(
        self, key: ConversationKey, msg: IncomingMessage, out: ReplyChannel, reply: ReplyInProgress
    ) -> None:
        """Produce a claimed reply again, from the same prompt, into its messages on screen.

        One begun longer than ``RECOVER_WITHIN_SECONDS`` ago is marked interrupted instead.
        """
        message = reply.message
        prefs = await self._sessions.preferences(key)
        model = self._sessions.model_for(prefs)
        self._history.drop(message.conversation_id)
        if calls_of(message):
            # A tool round: its stored results are replayed, never asked for or run again.
            await self._tools.loop.replay(self._tools.turn(key, msg, out, model, prefs), message)
            return
        if self._recovery.too_old(reply):
            await self._recovery.mark(reply, out)
            return
        _log.info("producing again a reply interrupted in %s chat %s", key.platform, msg.chat_id)
        rounds = await self._tools.loop.rounds_before(message.conversation_id, message.seq)
        await self._reply(key, msg, out, message, model, prefs, reply.platform_message_ids, rounds)


__all__ = ["Router"]
