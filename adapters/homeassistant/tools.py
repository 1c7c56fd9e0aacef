"""The Home Assistant tool pack: three tools over the REST API, behind an entity allowlist.

The tools and their argument names are a public contract:

* ``ha_list_entities(domain?)`` (``read``): the allowlisted entities, friendly name and state;
* ``ha_get_state(entity_id)`` (``read``): one entity's state and attributes;
* ``ha_call_service(domain, service, entity_id, data?)`` (``act``; ``dangerous`` for locks,
  alarms, covers, climate, scripts and the like): run a service on one entity.

An entity outside ``HOMEASSISTANT_ENTITIES`` is refused before any request is made; so is
``data`` that would pick other targets (``entity_id``, ``target``, ``area_id``...). The risk
of a service call is the higher of its service's domain and its entity's domain, so
``homeassistant.turn_on`` aimed at a cover is dangerous. Home Assistant's errors come back
as short :class:`~core.tools.ToolError` messages; the token is never in any of them.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping, Sequence
from enum import Enum
from typing import Any

from adapters.homeassistant.client import HomeAssistantClient, HomeAssistantError
from adapters.homeassistant.settings import HomeAssistantSettings
from core.errors import ConfigError
from core.tools import (
    Risk,
    Tool,
    ToolArgumentError,
    ToolResult,
    parse_arguments,
    redact_secrets,
)

__all__ = [
    "DANGEROUS_DOMAINS",
    "TARGETING_KEYS",
    "EntityNotAllowed",
    "HomeAssistantTools",
    "call_risk",
]

_log = logging.getLogger(__name__)

DANGEROUS_DOMAINS = frozenset(
    {
        "lock",
        "alarm_control_panel",
        "cover",
        "climate",
        "script",
        # services that run arbitrary commands or manage the instance itself
        "shell_command",
        "python_script",
        "rest_command",
        "hassio",
    }
)
"""Domains whose service calls are ``dangerous`` (the entity's domain counts as well)."""

TARGETING_KEYS = ("entity_id", "target", "area_id", "device_id", "floor_id", "label_id")
"""Keys ``data`` may not carry: the call's target is its ``entity_id`` argument alone."""

# homeassistant.<service> that act only on their target; the rest (restart, stop,
# reload_all...) act on the whole instance whatever the target.
_GENERIC_SERVICES = frozenset({"turn_on", "turn_off", "toggle", "update_entity"})
_WORD = re.compile(r"^[a-z0-9_]{1,64}$")
_ENTITY = re.compile(r"^[a-z0-9_]{1,64}\.[a-z0-9_]{1,255}$")
_HIDDEN_ATTRIBUTES = frozenset({"entity_picture", "access_token", "friendly_name"})
_MAX_LISTED = 200


def call_risk(domain: str, service: str, entity_id: str) -> Risk:
    """The risk of ``domain.service`` aimed at ``entity_id``: the higher of both domains."""
    entity_domain = entity_id.partition(".")[0]
    risks = [Risk.ACT]
    if domain in DANGEROUS_DOMAINS or entity_domain in DANGEROUS_DOMAINS:
        risks.append(Risk.DANGEROUS)
    if domain == "homeassistant" and service not in _GENERIC_SERVICES:
        risks.append(Risk.DANGEROUS)
    return Risk.highest(*risks)


class EntityNotAllowed(ToolArgumentError):
    """The entity is not in ``HOMEASSISTANT_ENTITIES`` (refused before any request)."""

    def __init__(self, entity_id: str) -> None:
        super().__init__(f"{entity_id} is not one of the entities this bot may use")
        self.entity_id = entity_id


class PackState(Enum):
    """Where the pack is in its life."""

    NEW = "new"
    STARTED = "started"
    CLOSED = "closed"


# --- argument checks -----------------------------------------------------------------------


def _object(tool: str, arguments: str, required: set[str], optional: set[str]) -> dict[str, Any]:
    raw = parse_arguments(arguments)
    unknown = sorted(set(raw) - required - optional)
    if unknown:
        raise ToolArgumentError(f"{tool} takes no argument {', '.join(unknown)}")
    missing = sorted(k for k in required if raw.get(k) in (None, ""))
    if missing:
        raise ToolArgumentError(f"{tool} needs {', '.join(missing)}")
    return raw


def _word(value: Any, what: str, example: str) -> str:
    if not isinstance(value, str) or not _WORD.match(value.strip().lower()):
        raise ToolArgumentError(f"{what} must be a word like {example}")
    return value.strip().lower()


def _entity_id(value: Any) -> str:
    if not isinstance(value, str) or not _ENTITY.match(value.strip().lower()):
        raise ToolArgumentError("entity_id must look like light.kitchen (domain.object_id)")
    return value.strip().lower()


def _data(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ToolArgumentError('data must be a JSON object, e.g. {"brightness_pct": 50}')
    targeting = [k for k in TARGETING_KEYS if k in value]
    if targeting:
        raise ToolArgumentError(
            f"data may not carry {', '.join(targeting)}: the target is entity_id alone"
        )
    return dict(value)


def _short(value: Any, limit: int = 60) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --- the pack --------------------------------------------------------------------------------


class HomeAssistantTools:
    """The Home Assistant tool pack, a :class:`~core.tools.ToolSource`.

    Args:
        settings: ``HOMEASSISTANT_*``; the URL and token must be set.

    Raises:
        ConfigError: ``HOMEASSISTANT_URL`` or ``HOMEASSISTANT_TOKEN`` is not set.
    """

    name = "homeassistant"

    def __init__(self, settings: HomeAssistantSettings) -> None:
        examples = HomeAssistantSettings.EXAMPLES
        if not settings.url:
            raise ConfigError("HOMEASSISTANT_URL", "is not set", examples["url"])
        if settings.token is None:
            raise ConfigError("HOMEASSISTANT_TOKEN", "is not set", examples["token"])
        self.settings = settings
        self.lifecycle = PackState.NEW
        self._client: HomeAssistantClient | None = None
        self._names: dict[str, str] = {}
        self._tools: tuple[Tool, ...] = (
            _ListEntities(self),
            _GetState(self),
            _CallService(self),
        )

    def tools(self) -> Sequence[Tool]:
        """The three tools, always (calls fail with a clear error while it is down)."""
        return self._tools

    async def start(self) -> None:
        """Connect and check ``/api/`` once; a failure is logged (no token), never raised.

        Raises:
            RuntimeError: the pack was closed.
        """
        if self.lifecycle is PackState.STARTED:
            return
        if self.lifecycle is PackState.CLOSED:
            raise RuntimeError("the Home Assistant tools were closed; build new ones")
        settings = self.settings
        assert settings.url is not None and settings.token is not None  # checked in __init__
        self._client = HomeAssistantClient(
            settings.url, settings.token, settings.timeout_seconds, settings.shown_url()
        )
        self.lifecycle = PackState.STARTED
        if not settings.entities:
            _log.warning(
                "HOMEASSISTANT_ENTITIES is empty: the bot may see and control no entity "
                "(example: HOMEASSISTANT_ENTITIES=%s)",
                HomeAssistantSettings.EXAMPLES["entities"],
            )
        try:
            await self._client.ping()
            visible = await self.visible_states()
        except HomeAssistantError as exc:
            _log.warning("%s; its tools are offered and fail until it answers", exc)
            return
        _log.info("Home Assistant at %s: %d entities visible", settings.shown_url(), len(visible))

    async def aclose(self) -> None:
        """Close the connection. Idempotent."""
        self.lifecycle = PackState.CLOSED
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    # --- shared by the tools --------------------------------------------------------------

    @property
    def client(self) -> HomeAssistantClient:
        """The client, once started.

        Raises:
            RuntimeError: before :meth:`start` or after :meth:`aclose`.
        """
        if self._client is None:
            raise RuntimeError("the Home Assistant tools are not started")
        return self._client

    def check_entity(self, entity_id: str) -> str:
        """``entity_id`` if the allowlist has it; else :class:`EntityNotAllowed`."""
        if not self.settings.allows(entity_id):
            raise EntityNotAllowed(entity_id)
        return entity_id

    def remember(self, state: Mapping[str, Any]) -> None:
        """Keep an entity's friendly name for confirmations."""
        name = state.get("attributes", {}).get("friendly_name")
        if isinstance(name, str) and name.strip():
            self._names[str(state["entity_id"])] = _short(name, 60)

    def label(self, entity_id: str) -> str:
        """``Kitchen light (light.kitchen)``, or the id alone when no name is known."""
        name = self._names.get(entity_id)
        return f"{name} ({entity_id})" if name else entity_id

    async def visible_states(self) -> list[dict[str, Any]]:
        """The allowlisted entities' states (names remembered), sorted by id."""
        states = [s for s in await self.client.states() if self.settings.allows(s["entity_id"])]
        for s in states:
            self.remember(s)
        return sorted(states, key=lambda s: str(s["entity_id"]))

    async def read_state(self, entity_id: str) -> dict[str, Any]:
        """One allowlisted entity's state (its name remembered)."""
        state = await self.client.state(self.check_entity(entity_id))
        self.remember(state)
        return state


def _shown_state(state: Mapping[str, Any]) -> str:
    value = str(state.get("state", "unknown"))
    unit = state.get("attributes", {}).get("unit_of_measurement")
    return f"{value} {unit}" if isinstance(unit, str) and unit else value


class _HomeAssistantTool:
    """What the three tools share: the pack, the source, redaction."""

    name: str
    description: str
    parameters: Mapping[str, Any]
    risk: Risk

    def __init__(self, pack: HomeAssistantTools) -> None:
        self._pack = pack

    @property
    def source(self) -> str:
        """Audited as ``"homeassistant"``."""
        return "homeassistant"

    def risk_of(self, arguments: Mapping[str, Any]) -> Risk:
        """Reads are always ``read``."""
        return self.risk

    def redact(self, arguments: Mapping[str, Any]) -> dict[str, Any]:
        """Secret-looking keys (a lock's ``code``) masked, in ``data`` too."""
        return redact_secrets(arguments)

    def __repr__(self) -> str:
        return f"<tool {self.name} ({self.risk})>"


class _ListEntities(_HomeAssistantTool):
    name = "ha_list_entities"
    description = (
        "List the Home Assistant entities this bot may see and control, with their "
        "friendly name and current state. Use it to find an entity_id."
    )
    parameters: Mapping[str, Any] = {
        "type": "object",
        "properties": {
            "domain": {
                "type": "string",
                "description": "Only entities of this domain, e.g. light, switch, sensor.",
            }
        },
        "additionalProperties": False,
    }
    risk = Risk.READ

    def validate(self, arguments: str) -> dict[str, Any]:
        """``{"domain": str | None}``."""
        raw = _object(self.name, arguments, set(), {"domain"})
        domain = raw.get("domain")
        if domain in (None, ""):
            return {"domain": None}
        return {"domain": _word(domain, "domain", "light")}

    def describe(self, arguments: Mapping[str, Any]) -> str:
        """``list the light entities`` / ``list the entities``."""
        domain = arguments.get("domain")
        return f"list the {domain} entities" if domain else "list the entities"

    async def invoke(self, arguments: Mapping[str, Any]) -> ToolResult:
        """The allowlisted entities (of the domain), at most 200."""
        domain = arguments.get("domain")
        states = await self._pack.visible_states()
        if domain:
            states = [s for s in states if str(s["entity_id"]).startswith(f"{domain}.")]
        if not states:
            where = f" in the {domain} domain" if domain else ""
            return ToolResult(f"No entity{where} is visible to this bot.")
        rows = [
            {
                "entity_id": s["entity_id"],
                "name": s.get("attributes", {}).get("friendly_name") or s["entity_id"],
                "state": _shown_state(s),
            }
            for s in states[:_MAX_LISTED]
        ]
        body: dict[str, Any] = {"entities": rows}
        if len(states) > _MAX_LISTED:
            body["not_shown"] = len(states) - _MAX_LISTED
        return ToolResult(json.dumps(body, ensure_ascii=False))


class _GetState(_HomeAssistantTool):
    name = "ha_get_state"
    description = "Read the current state and attributes of one Home Assistant entity."
    parameters: Mapping[str, Any] = {
        "type": "object",
        "properties": {
            "entity_id": {"type": "string", "description": "The entity, e.g. light.kitchen."}
        },
        "required": ["entity_id"],
        "additionalProperties": False,
    }
    risk = Risk.READ

    def validate(self, arguments: str) -> dict[str, Any]:
        """``{"entity_id": str}``, an allowlisted one (else :class:`EntityNotAllowed`)."""
        raw = _object(self.name, arguments, {"entity_id"}, set())
        return {"entity_id": self._pack.check_entity(_entity_id(raw["entity_id"]))}

    def describe(self, arguments: Mapping[str, Any]) -> str:
        """``read Kitchen light (light.kitchen)``."""
        return f"read {self._pack.label(str(arguments.get('entity_id')))}"

    async def invoke(self, arguments: Mapping[str, Any]) -> ToolResult:
        """The entity's state, its attributes (secrets and pictures left out)."""
        state = await self._pack.read_state(_entity_id(arguments.get("entity_id")))
        attributes = {
            k: v for k, v in state.get("attributes", {}).items() if k not in _HIDDEN_ATTRIBUTES
        }
        body = {
            "entity_id": state.get("entity_id"),
            "name": state.get("attributes", {}).get("friendly_name"),
            "state": state.get("state"),
            "attributes": redact_secrets(attributes),
            "last_changed": state.get("last_changed"),
        }
        return ToolResult(json.dumps(body, ensure_ascii=False, default=str))


class _CallService(_HomeAssistantTool):
    name = "ha_call_service"
    description = (
        "Call a Home Assistant service on one entity, e.g. domain light, service turn_on, "
        "entity_id light.kitchen. Service options (brightness_pct, temperature...) go in "
        "data; the target is entity_id alone. Call this rather than saying a device changed."
    )
    parameters: Mapping[str, Any] = {
        "type": "object",
        "properties": {
            "domain": {"type": "string", "description": "The service's domain, e.g. light."},
            "service": {"type": "string", "description": "The service, e.g. turn_on."},
            "entity_id": {"type": "string", "description": "The target, e.g. light.kitchen."},
            "data": {
                "type": "object",
                "description": 'Service options, e.g. {"brightness_pct": 50}; no targets.',
            },
        },
        "required": ["domain", "service", "entity_id"],
        "additionalProperties": False,
    }
    risk = Risk.ACT

    def validate(self, arguments: str) -> dict[str, Any]:
        """``{"domain", "service", "entity_id", "data"}``; refuses other targets."""
        raw = _object(self.name, arguments, {"domain", "service", "entity_id"}, {"data"})
        return self._checked(raw)

    def _checked(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "domain": _word(raw.get("domain"), "domain", "light"),
            "service": _word(raw.get("service"), "service", "turn_on"),
            "entity_id": self._pack.check_entity(_entity_id(raw.get("entity_id"))),
            "data": _data(raw.get("data")),
        }

    def risk_of(self, arguments: Mapping[str, Any]) -> Risk:
        """``act``, or ``dangerous`` when either domain is (see :func:`call_risk`)."""
        return call_risk(
            str(arguments.get("domain")),
            str(arguments.get("service")),
            str(arguments.get("entity_id")),
        )

    def describe(self, arguments: Mapping[str, Any]) -> str:
        """``turn on Kitchen light (light.kitchen)``, with the options (secrets masked)."""
        domain, service = str(arguments.get("domain")), str(arguments.get("service"))
        entity_id = str(arguments.get("entity_id"))
        entity_domain = entity_id.partition(".")[0]
        target = self._pack.label(entity_id)
        if domain in (entity_domain, "homeassistant"):
            verb = service.removesuffix(f"_{entity_domain}").replace("_", " ")
            text = f"{verb} {target}"
        else:
            text = f"{domain}.{service} on {target}"
        data = redact_secrets(arguments.get("data") or {})
        if data:
            text += " with " + ", ".join(f"{k}={_short(v)}" for k, v in data.items())
        return text

    async def invoke(self, arguments: Mapping[str, Any]) -> ToolResult:
        """Run the service (checked again: the allowlist may have changed since).

        The summary is the entity's state after the call, from Home Assistant's answer
        (or read back when the answer does not include it).
        """
        args = self._checked(arguments)
        domain, service, entity_id = args["domain"], args["service"], args["entity_id"]
        changed = await self._pack.client.call_service(
            domain, service, {"entity_id": entity_id, **args["data"]}
        )
        after = next((s for s in changed if s["entity_id"] == entity_id), None)
        if after is None:
            try:
                after = await self._pack.client.state(entity_id)
            except HomeAssistantError as exc:
                _log.info("could not read %s back after %s.%s: %s", entity_id, domain, service, exc)
        body: dict[str, Any] = {"called": f"{domain}.{service}", "entity_id": entity_id}
        if after is None:
            body["state"] = "unknown (Home Assistant did not say)"
            return ToolResult(json.dumps(body), summary=f"{domain}.{service} → {entity_id}")
        self._pack.remember(after)
        body["state"] = after.get("state")
        others = [
            {"entity_id": s["entity_id"], "state": s.get("state")}
            for s in changed
            if s["entity_id"] != entity_id and self._pack.settings.allows(s["entity_id"])
        ]
        if others:
            body["also_changed"] = others
        return ToolResult(
            json.dumps(body, ensure_ascii=False), summary=_summary(entity_id, after, args["data"])
        )


def _summary(entity_id: str, state: Mapping[str, Any], data: Mapping[str, Any]) -> str:
    """``light.kitchen → on``, with the options Home Assistant now reports (not secrets)."""
    text = f"{entity_id} → {_shown_state(state)}"
    attributes = state.get("attributes", {})
    shown = redact_secrets({k: attributes[k] for k in data if k in attributes})
    if shown:
        text += " (" + ", ".join(f"{k} {_short(v, 30)}" for k, v in shown.items()) + ")"
    return text
