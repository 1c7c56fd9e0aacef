"""The commands about tools (``/tools``, ``/audit``) and a bot definition's own commands."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime

from core.bot import BotCommand, CommandRequest
from core.commands import CommandRegistry, Handler
from core.gate import ToolGate
from core.notices import notify
from core.ports import LLMBackend, MemoryStore, ReplyChannel
from core.types import AuditEntry, ConversationKey, IncomingMessage

AUDIT_ROWS = 10
"""How many audit rows ``/audit`` shows."""


def audit_line(entry: AuditEntry) -> str:
    """One audit row in plain words."""
    when = entry.at.strftime("%Y-%m-%d %H:%M:%S")
    who = f"{entry.platform} user {entry.user_id}" if entry.user_id else f"{entry.platform} user ?"
    outcome = entry.decision.value
    if entry.result_status:
        outcome += f", {entry.result_status}"
    if entry.duration_ms is not None:
        outcome += f", {entry.duration_ms:.0f} ms"
    return f"{when} {who}: {entry.tool} {entry.arguments} [{entry.risk}] → {outcome}"


class ToolCommands:
    """``/tools``, ``/audit`` and the bot's extra commands; :meth:`register` adds them.

    Args:
        gate: the tool policy.
        store: where the audit is read.
        backend: whether the model in use can use tools.
        model_of: the model a conversation slot is answered by.
        is_admin: whether a message's author is an admin.
        bot_name: ``BOT_NAME``.
        clock: the current UTC time.
    """

    def __init__(
        self,
        *,
        gate: ToolGate,
        store: MemoryStore,
        backend: LLMBackend,
        model_of: Callable[[ConversationKey], Awaitable[str]],
        is_admin: Callable[[IncomingMessage], bool],
        bot_name: str,
        clock: Callable[[], datetime],
    ) -> None:
        self._gate = gate
        self._store = store
        self._backend = backend
        self._model_of = model_of
        self._is_admin = is_admin
        self._bot_name = bot_name
        self._clock = clock

    def register(self, registry: CommandRegistry, extra: Sequence[BotCommand] = ()) -> None:
        """Add ``/tools`` and ``/audit`` (for a bot with tools), then the extra commands."""
        if self._gate.enabled:
            registry.register("tools", "Which tools you may use here", self.tools)
            registry.register(
                "audit", "The latest tool calls (admins)", self.audit, admin_only=True
            )
        for command in extra:
            registry.register(
                command.name,
                command.description,
                self._extra(command),
                argument=command.argument,
                admin_only=command.admin_only,
            )

    async def tools(
        self, key: ConversationKey, msg: IncomingMessage, out: ReplyChannel, arg: str
    ) -> None:
        """``/tools``: the tools this user may use here (name and risk), or why none."""
        offered = self._gate.offered(msg)
        if not offered:
            await notify(out, self._gate.why_none(msg))
            return
        lines = [f"- {name} ({t.risk.value})" for name, t in sorted(offered.items())]
        text = "Tools you may use here:\n" + "\n".join(lines)
        text += "\n\nActions (act, dangerous) run only after you confirm them."
        note = await self.help_note(key, msg)
        if note:
            text += f"\n\n{note}"
        await notify(out, text)

    async def audit(
        self, key: ConversationKey, msg: IncomingMessage, out: ReplyChannel, arg: str
    ) -> None:
        """``/audit``: the latest tool calls of this bot, newest first (admins)."""
        entries = await self._store.audit_entries(bot=self._bot_name, limit=AUDIT_ROWS)
        if not entries:
            await notify(out, "No tool calls yet.")
            return
        lines = [audit_line(e) for e in entries]
        await notify(out, f"Latest {len(lines)} tool call(s), newest first:\n" + "\n".join(lines))

    async def help_note(self, key: ConversationKey, msg: IncomingMessage) -> str | None:
        """A line for ``/help`` when the bot has tools the model in use cannot call."""
        if not self._gate.enabled or not self._gate.offered(msg):
            return None
        model = await self._model_of(key)
        if self._backend.supports_tools(model):
            return None
        return f"Note: the model in use ({model}) can't use tools, so I can't act with it."

    def _extra(self, command: BotCommand) -> Handler:
        is_admin = self._is_admin

        async def handle(
            key: ConversationKey, msg: IncomingMessage, out: ReplyChannel, arg: str
        ) -> None:
            request = CommandRequest(
                arg=arg,
                platform=msg.platform,
                chat_id=msg.chat_id,
                user_id=msg.user_id,
                user_name=msg.user_name,
                is_admin=is_admin(msg),
            )
            answer = command.handler(request)
            if inspect.isawaitable(answer):
                answer = await answer
            if answer:
                await notify(out, str(answer))

        return handle


__all__ = ["AUDIT_ROWS", "ToolCommands", "audit_line"]
