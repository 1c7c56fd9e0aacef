"""The engine's tool parts in one place: the gate, the loop, the confirmations, the commands.

:class:`Tooling` builds them from the bot definition's toolbox and the settings, and holds
the few helpers the engine calls at its seams: cancelling a conversation's waiting actions
(a new message, ``/reset``), sweeping expired confirmations at the heartbeat, and opening a
channel into a stored chat to tell an expiry after a restart.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

from core.access import AccessPolicy
from core.admission import Admission
from core.bot import BotCommand
from core.commands import BuiltinCommands, CommandRegistry
from core.gate import ToolGate
from core.ports import LLMBackend, MemoryStore, ReplyChannel
from core.prompt import HistoryCache
from core.recovery import Recovery
from core.reply import Replier
from core.sessions import Sessions
from core.settings import AccessSettings, ToolSettings
from core.tool_actions import Submit, ToolActions
from core.tool_commands import ToolCommands
from core.tools import Toolbox
from core.turns import Continuation, ToolLoop, TurnContext
from core.types import (
    ConversationKey,
    IncomingMessage,
    PendingToolCall,
    Preferences,
)


class Tooling:
    """The tool gate, loop, confirmations and commands of one engine.

    Args:
        toolbox: the bot's tools (an empty one: a bot without tools).
        settings: the tool policy and the loop's limits.
        access: allowlists and admins.
        store: the memory store.
        backend: the LLM backend.
        replier: starts reply runs.
        history: the engine's history cache.
        sessions: conversation ids, preferences and models per slot.
        admission: who is an admin (for commands).
        recovery: the engine's crash recovery (its adapters reopen stored chats).
        clock: the current UTC time.
        bot_name: ``BOT_NAME``.
        owner: this process's instance id.
        submit: queues a continuation in a conversation's lane.
        default_prompt: the persona of a slot that set none with ``/system``.
    """

    def __init__(
        self,
        *,
        toolbox: Toolbox,
        settings: ToolSettings,
        access: AccessSettings,
        store: MemoryStore,
        backend: LLMBackend,
        replier: Replier,
        history: HistoryCache,
        sessions: Sessions,
        admission: Admission,
        recovery: Recovery,
        clock: Callable[[], datetime],
        bot_name: str,
        owner: Callable[[], str],
        submit: Submit,
        default_prompt: str,
    ) -> None:
        policy = AccessPolicy(access)
        self._default_prompt = default_prompt
        self._backend = backend
        self._sessions = sessions
        self._recovery = recovery
        self.gate = ToolGate(toolbox, settings, policy)
        self.loop = ToolLoop(
            store=store,
            backend=backend,
            replier=replier,
            gate=self.gate,
            settings=settings,
            history=history,
            clock=clock,
            bot_name=bot_name,
            owner=owner,
        )

        self.actions = ToolActions(
            loop=self.loop,
            access=policy,
            submit=submit,
            channel_for=self.channel_for,
            owner=owner,
        )
        self.loop.confirming = self.actions
        self.commands = ToolCommands(
            gate=self.gate,
            store=store,
            backend=backend,
            model_of=self.model_of,
            is_admin=admission.is_admin,
            bot_name=bot_name,
            clock=clock,
        )

    @property
    def enabled(self) -> bool:
        """Whether the bot has tools at all."""
        return self.gate.enabled

    def register(
        self, registry: CommandRegistry, builtins: BuiltinCommands, extra: Sequence[BotCommand]
    ) -> None:
        """Add ``/tools``, ``/audit`` and the bot's commands; hook ``/help`` and ``/reset``."""
        self.commands.register(registry, extra)
        builtins.help_note = self.commands.help_note
        if self.enabled:
            builtins.on_reset = self.cancel_on_reset

    def turn(
        self,
        key: ConversationKey,
        msg: IncomingMessage,
        out: ReplyChannel,
        model: str,
        prefs: Preferences,
        rounds: int = 0,
    ) -> TurnContext:
        """What every round of a turn shares: the slot's persona, model and budget."""
        system_prompt = prefs.persona or self._default_prompt
        budget = self._sessions.budget(model)
        return TurnContext(key, msg, out, model, system_prompt, budget, rounds)

    async def continue_round(
        self, key: ConversationKey, msg: IncomingMessage, out: ReplyChannel, job: Continuation
    ) -> None:
        """In the lane: a tool round whose confirmations were all answered goes on."""
        prefs = await self._sessions.preferences(key)
        model = self._sessions.model_for(prefs)
        await self.loop.resume_round(self.turn(key, msg, out, model, prefs), job)

    async def model_of(self, key: ConversationKey) -> str:
        """The model ``key``'s conversation is answered by."""
        return self._sessions.model_for(await self._sessions.preferences(key))

    async def cancel(self, conversation_id: int, out: ReplyChannel, model: str) -> None:
        """The conversation moves on: its waiting actions are cancelled (told once)."""
        if self.enabled:
            await self.actions.cancel(conversation_id, out, model)

    async def cancel_on_reset(self, key: ConversationKey, out: ReplyChannel) -> None:
        """``/reset``: cancel the old conversation's waiting actions first."""
        conversation_id = await self._sessions.conversation_id(key)
        await self.actions.cancel(conversation_id, out, await self.model_of(key))

    async def expire(self) -> None:
        """At the heartbeat: confirmations past their expiry are refused and told."""
        if self.enabled:
            await self.actions.expire(self._backend.default_model)

    def channel_for(self, call: PendingToolCall) -> ReplyChannel | None:
        """A channel into a pending call's chat (to tell it expired after a restart)."""
        resumer = self._recovery.resumers.get(call.key.platform)
        if resumer is None or not self._recovery.ready.is_set():
            return None
        try:
            return resumer.resume(call.chat_id, call.key.thread_id, ())
        except (RuntimeError, ValueError):
            return None


__all__ = ["Tooling"]
