"""The safety gate: who may use which tools, checked outside the model before every call.

Policy (``ToolSettings`` with ``AccessSettings``):

* ``read`` tools follow the normal allowlist (whoever the bot answers may use them);
* ``act`` tools: admins, ``TOOL_USERS`` (and ``TOOL_DANGEROUS_USERS``);
* ``dangerous`` tools: admins and ``TOOL_DANGEROUS_USERS`` only;
* no tools at all in group chats unless ``TOOLS_IN_GROUPS=true``.

Only the tools a user may use are offered to the model (:meth:`ToolGate.offered`), and every
call the model proposes is checked again (:meth:`ToolGate.check`): a tool that was not
offered is denied; the arguments are validated against the tool's schema (invalid ones go
back to the model as an error); the risk of the call (``Tool.risk_of``, which may be higher
than the tool's) must be one the user may use. What is left is run at once (``read``) or
waits for a person's confirmation (``act``, ``dangerous``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from core.access import AccessPolicy
from core.settings import ToolSettings
from core.tools import Risk, Tool, ToolArgumentError, Toolbox, parse_arguments, redact_secrets
from core.types import IncomingMessage, ToolDecision

NOT_OFFERED = "Denied: the tool {name} is not available to this user here; it was not run."
NOT_ALLOWED = "Denied: this user may not make {risk} calls of {name}; it was not run."


@dataclass(slots=True)
class Call:
    """One call the model proposed, as the gate judged it.

    Attributes:
        id: the model's id of the call (made unique within its round).
        name: the tool's name, as the model wrote it.
        arguments: the model's JSON arguments, as written.
        tool: the tool, when the call names one that was offered.
        args: the validated arguments (``None`` unless valid).
        risk: the call's risk (the tool's, raised by its arguments).
        decision: ``allowed`` (a read call: run now), ``pending`` (waits for a person),
            ``denied`` or ``invalid`` (answered at once with :attr:`error`).
        error: what the model reads for a denied or invalid call.
        audit_id: its row in the audit, once written.
    """

    id: str
    name: str
    arguments: str
    tool: Tool | None = None
    args: dict[str, Any] | None = None
    risk: Risk | None = None
    decision: ToolDecision = ToolDecision.DENIED
    error: str | None = None
    audit_id: int | None = field(default=None)

    def record(self) -> dict[str, Any]:
        """The call as the round row stores it (``extra["tool_calls"]``)."""
        return {
            "id": self.id,
            "name": self.name,
            "arguments": self.arguments,
            "risk": (self.risk or (self.tool.risk if self.tool else Risk.READ)).value,
            "source": self.tool.source if self.tool else "",
        }

    def audited_arguments(self) -> str:
        """The arguments as the audit keeps them: JSON with secrets redacted."""
        if self.tool is not None and self.args is not None:
            shown: Mapping[str, Any] = self.tool.redact(self.args)
        else:
            try:
                shown = redact_secrets(parse_arguments(self.arguments))
            except ToolArgumentError:
                return json.dumps({"unparsable": True})
        return json.dumps(shown, ensure_ascii=False, default=str, sort_keys=True)

    def describe(self) -> str:
        """The call in plain words (the tool's own, else ``name(...)``)."""
        if self.tool is not None and self.args is not None:
            try:
                return self.tool.describe(self.args)
            except Exception:  # a tool's wording must never break the gate
                pass
        return self.name


class ToolGate:
    """Applies the tool policy to users and to the calls the model proposes.

    Args:
        toolbox: every tool of the bot.
        settings: ``TOOL_USERS``, ``TOOL_DANGEROUS_USERS``, ``TOOLS_IN_GROUPS``.
        access: the allowlist and the admins.
    """

    def __init__(self, toolbox: Toolbox, settings: ToolSettings, access: AccessPolicy) -> None:
        self.toolbox = toolbox
        self._settings = settings
        self._access = access
        self._act = frozenset(settings.tool_users) | frozenset(settings.tool_dangerous_users)
        self._dangerous = frozenset(settings.tool_dangerous_users)

    @property
    def enabled(self) -> bool:
        """Whether the bot has any tool source at all."""
        return bool(self.toolbox)

    def in_this_chat(self, msg: IncomingMessage) -> bool:
        """Whether tools may be used in ``msg``'s chat (private, or groups allowed)."""
        return msg.is_private or self._settings.tools_in_groups

    def may_use(self, msg: IncomingMessage, risk: Risk) -> bool:
        """Whether ``msg``'s author may make calls of ``risk`` in ``msg``'s chat."""
        if not self.in_this_chat(msg):
            return False
        platform, user = msg.platform, msg.user_id
        if self._access.is_admin(platform, user):
            return True
        if risk is Risk.READ:
            return self._access.is_allowed(platform, user, msg.chat_id)
        subject = f"{platform}:{user}"
        if risk is Risk.ACT:
            return subject in self._act
        return subject in self._dangerous

    def offered(self, msg: IncomingMessage) -> dict[str, Tool]:
        """The tools ``msg``'s author may use here, by name (only these reach the model)."""
        if not self.toolbox or not self.in_this_chat(msg):
            return {}
        return {n: t for n, t in self.toolbox.tools().items() if self.may_use(msg, t.risk)}

    def why_none(self, msg: IncomingMessage) -> str:
        """Why ``msg``'s author has no tools here, in plain words."""
        if not self.toolbox or not self.toolbox.tools():
            return "This bot has no tools."
        if not self.in_this_chat(msg):
            return "Tools are off in group chats here; talk to me in private to use them."
        return "You may not use any of this bot's tools."

    def check(self, msg: IncomingMessage, call: Call, offered: Mapping[str, Tool]) -> Call:
        """Judge one proposed call (in place); return it.

        Denied when the tool was not offered or the call's risk is one the user may not use;
        invalid when the arguments do not match the schema; else allowed (``read``) or
        pending (``act``/``dangerous``).
        """
        found = offered.get(call.name)
        if found is None:
            call.tool = self.toolbox.get(call.name) if self.toolbox else None
            call.decision = ToolDecision.DENIED
            call.error = NOT_OFFERED.format(name=call.name)
            return call
        call.tool = found
        call.risk = found.risk
        try:
            call.args = found.validate(call.arguments)
        except ToolArgumentError as exc:
            call.decision = ToolDecision.INVALID
            call.error = f"Error: {exc}" if str(exc) else "Error: invalid arguments."
            return call
        try:
            call.risk = Risk.highest(found.risk, Risk(found.risk_of(call.args)))
        except Exception:  # a tool that cannot say its risk is treated as the worst
            call.risk = Risk.DANGEROUS
        if not self.may_use(msg, call.risk):
            call.decision = ToolDecision.DENIED
            call.error = NOT_ALLOWED.format(risk=call.risk.value, name=call.name)
            return call
        call.decision = (
            ToolDecision.PENDING if call.risk.needs_confirmation else ToolDecision.ALLOWED
        )
        return call


def proposed(raw: Mapping[int, Mapping[str, str]]) -> list[Call]:
    """The calls a model round streamed (by index), with unique, non-empty ids."""
    calls: list[Call] = []
    seen: set[str] = set()
    for number, index in enumerate(sorted(raw)):
        piece = raw[index]
        call_id = piece.get("id") or f"call_{number}"
        while call_id in seen:
            call_id = f"{call_id}_{number}"
        seen.add(call_id)
        calls.append(Call(call_id, piece.get("name", "") or "", piece.get("arguments", "") or ""))
    return calls


__all__ = ["Call", "ToolGate", "proposed"]
