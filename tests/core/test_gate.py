"""The safety gate's policy: who may use which tools, and every call checked again."""

from __future__ import annotations

from typing import Any

import pytest

from core.access import AccessPolicy
from core.gate import Call, ToolGate, proposed
from core.settings import AccessSettings, ToolSettings
from core.tools import FunctionTools, Risk, Toolbox, tool
from core.types import IncomingMessage, ToolDecision
from tests.core.tooling import Home


def gate(toolbox: Toolbox | None = None, **settings: Any) -> ToolGate:
    access = {k: settings.pop(k) for k in list(settings) if k in AccessSettings.model_fields}
    return ToolGate(
        toolbox if toolbox is not None else Home().toolbox(),
        ToolSettings(_env_file=None, **settings),
        AccessPolicy(AccessSettings(_env_file=None, **access)),
    )


def msg(user: str = "alice", *, private: bool = True, chat: str | None = None) -> IncomingMessage:
    return IncomingMessage(
        platform="test", chat_id=chat or user, user_id=user, text="hi", is_private=private
    )


POLICY: dict[str, Any] = dict(
    admin_users=["test:root"],
    tool_users=["test:alice"],
    tool_dangerous_users=["test:dana"],
)


@pytest.mark.parametrize(
    ("user", "read", "act", "dangerous"),
    [
        ("root", True, True, True),  # admins may use everything
        ("alice", True, True, False),  # TOOL_USERS: read and act
        ("dana", True, True, True),  # TOOL_DANGEROUS_USERS: dangerous (and act)
        ("bob", True, False, False),  # anyone the bot answers: read only
    ],
)
def test_policy_matrix(user: str, read: bool, act: bool, dangerous: bool) -> None:
    g = gate(**POLICY)
    m = msg(user)
    assert [g.may_use(m, r) for r in (Risk.READ, Risk.ACT, Risk.DANGEROUS)] == [
        read,
        act,
        dangerous,
    ]
    offered = g.offered(m)
    assert ("get_light" in offered) is read
    assert ("set_light" in offered) is act
    assert ("unlock" in offered) is dangerous


def test_read_tools_follow_the_allowlist() -> None:
    g = gate(allowed_users=["test:alice"], admin_users=["test:root"])
    assert g.may_use(msg("alice"), Risk.READ)
    assert not g.may_use(msg("mallory"), Risk.READ)
    assert g.offered(msg("mallory")) == {}


def test_no_tools_in_groups_unless_allowed() -> None:
    group = msg("root", private=False, chat="group-1")
    assert gate(**POLICY).offered(group) == {}
    assert "group chats" in gate(**POLICY).why_none(group)
    assert "unlock" in gate(tools_in_groups=True, **POLICY).offered(group)


def test_a_call_to_a_tool_not_offered_is_denied() -> None:
    g = gate(**POLICY)
    bob = msg("bob")
    call = g.check(
        bob, Call("c1", "set_light", '{"entity": "light.kitchen", "state": "on"}'), g.offered(bob)
    )
    assert call.decision is ToolDecision.DENIED
    assert "not available" in (call.error or "")
    unknown = g.check(bob, Call("c2", "launch_rockets", "{}"), g.offered(bob))
    assert unknown.decision is ToolDecision.DENIED


def test_invalid_arguments_are_reported_not_run() -> None:
    g = gate(**POLICY)
    alice = msg("alice")
    call = g.check(alice, Call("c1", "set_light", '{"entity": 5}'), g.offered(alice))
    assert call.decision is ToolDecision.INVALID
    assert "state" in (call.error or "")
    broken_json = g.check(alice, Call("c2", "set_light", "{not json"), g.offered(alice))
    assert broken_json.decision is ToolDecision.INVALID


def test_risk_of_the_arguments_may_raise_a_call_above_what_was_offered() -> None:
    @tool(risk="act")
    def service(entity_id: str) -> str:
        """Call a service on an entity."""
        return "ok"

    class Escalating:
        """``service`` aimed at a lock is dangerous."""

        def __getattr__(self, name: str) -> Any:
            return getattr(service, name)

        def risk_of(self, arguments: dict[str, Any]) -> Risk:
            return Risk.DANGEROUS if arguments["entity_id"].startswith("lock.") else Risk.ACT

    g = gate(Toolbox([FunctionTools([Escalating()])]), **POLICY)  # type: ignore[list-item]
    alice = msg("alice")
    assert "service" in g.offered(alice)
    light = g.check(alice, Call("c1", "service", '{"entity_id": "light.x"}'), g.offered(alice))
    assert light.decision is ToolDecision.PENDING
    lock = g.check(alice, Call("c2", "service", '{"entity_id": "lock.front"}'), g.offered(alice))
    assert lock.decision is ToolDecision.DENIED
    assert lock.risk is Risk.DANGEROUS
    root = msg("root")
    assert (
        g.check(
            root, Call("c3", "service", '{"entity_id": "lock.front"}'), g.offered(root)
        ).decision
        is ToolDecision.PENDING
    )


def test_read_calls_run_at_once_and_actions_wait() -> None:
    g = gate(**POLICY)
    root = msg("root")
    offered = g.offered(root)
    assert (
        g.check(root, Call("a", "get_light", '{"entity": "x"}'), offered).decision
        is ToolDecision.ALLOWED
    )
    assert (
        g.check(root, Call("b", "set_light", '{"entity": "x", "state": "on"}'), offered).decision
        is ToolDecision.PENDING
    )


def test_secrets_are_redacted_in_the_audited_arguments() -> None:
    g = gate(**POLICY)
    root = msg("root")
    call = g.check(
        root, Call("a", "unlock", '{"door": "front", "pin_code": "1234"}'), g.offered(root)
    )
    audited = call.audited_arguments()
    assert "1234" not in audited and "front" in audited


def test_streamed_calls_get_unique_ids() -> None:
    found = proposed(
        {
            0: {"id": "x", "name": "a", "arguments": ""},
            1: {"id": "x", "name": "b", "arguments": ""},
            2: {"id": "", "name": "c", "arguments": ""},
        }
    )
    ids = [c.id for c in found]
    assert len(set(ids)) == 3 and all(ids)
    assert [c.name for c in found] == ["a", "b", "c"]
