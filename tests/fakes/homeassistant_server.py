"""A loopback fake of Home Assistant's REST API, for driving the Home Assistant tool pack.

Point the pack at it with ``HOMEASSISTANT_URL=<fake.base_url>``. It answers like a real
instance (https://developers.home-assistant.io/docs/api/rest):

* ``GET /api/`` -> ``{"message": "API running."}``;
* ``GET /api/states`` -> every state object (``entity_id``, ``state``, ``attributes``,
  ``last_changed``, ``last_updated``, ``context``);
* ``GET /api/states/<entity_id>`` -> one state, or 404 ``{"message": "Entity not found."}``;
* ``POST /api/services/<domain>/<service>`` with the service data as a JSON object (the
  target in its ``entity_id``) -> the list of states that changed while the service ran.
  Body that is not a JSON object: 400 ``{"message": "Data should be valid JSON."}``; a
  service the fake does not know: 400 ``400: Bad Request`` (what Home Assistant's
  ``ServiceNotFound`` becomes). Lights, switches, locks, covers, climate, scripts and the
  generic ``homeassistant.turn_on/turn_off/toggle`` change states the way Home Assistant does.
* every request needs ``Authorization: Bearer <token>``; otherwise ``401: Unauthorized``.

Tests read :attr:`FakeHomeAssistant.service_calls` (every service call that reached the
fake, accepted or not) and :attr:`FakeHomeAssistant.requests`, and can make the fake hang
(:meth:`FakeHomeAssistant.hang`) to exercise timeouts.
"""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

__all__ = ["DEFAULT_STATES", "FakeHomeAssistant", "Request", "ServiceCall"]


@dataclass(frozen=True, slots=True)
class Request:
    """One request the fake received (``authorization`` is the raw header, if any)."""

    method: str
    path: str
    authorization: str | None


@dataclass(frozen=True, slots=True)
class ServiceCall:
    """One ``POST /api/services/<domain>/<service>`` that passed authentication."""

    domain: str
    service: str
    data: Any
    status: int


def _state(entity_id: str, state: str, **attributes: Any) -> dict[str, Any]:
    return {"entity_id": entity_id, "state": state, "attributes": attributes}


DEFAULT_STATES: tuple[dict[str, Any], ...] = (
    _state(
        "light.kitchen", "off", friendly_name="Kitchen light", supported_color_modes=["brightness"]
    ),
    _state("light.hall", "on", friendly_name="Hall light", brightness=180),
    _state("switch.coffee", "off", friendly_name="Coffee machine"),
    _state("lock.front_door", "locked", friendly_name="Front door"),
    _state("cover.garage", "closed", friendly_name="Garage door", current_position=0),
    _state("climate.living_room", "heat", friendly_name="Living room", temperature=20),
    _state("script.good_night", "off", friendly_name="Good night"),
    _state("sensor.outside", "11.5", friendly_name="Outside", unit_of_measurement="°C"),
    _state(
        "media_player.tv",
        "playing",
        friendly_name="TV",
        entity_picture="/api/media_player_proxy/media_player.tv?token=picture-secret",
        access_token="picture-secret",
    ),
)

_TOGGLES = {"on": "off", "off": "on"}
# (domain, service) -> the new state, given the old one.
_TRANSITIONS: dict[tuple[str, str], Any] = {
    ("light", "turn_on"): lambda old: "on",
    ("light", "turn_off"): lambda old: "off",
    ("light", "toggle"): lambda old: _TOGGLES.get(old, "on"),
    ("switch", "turn_on"): lambda old: "on",
    ("switch", "turn_off"): lambda old: "off",
    ("switch", "toggle"): lambda old: _TOGGLES.get(old, "on"),
    ("lock", "lock"): lambda old: "locked",
    ("lock", "unlock"): lambda old: "unlocked",
    ("lock", "open"): lambda old: "open",
    ("cover", "open_cover"): lambda old: "open",
    ("cover", "close_cover"): lambda old: "closed",
    ("cover", "toggle"): lambda old: "closed" if old == "open" else "open",
    ("cover", "stop_cover"): lambda old: old,
    ("climate", "set_temperature"): lambda old: old,
    ("climate", "set_hvac_mode"): lambda old: old,
    ("climate", "turn_on"): lambda old: "heat",
    ("climate", "turn_off"): lambda old: "off",
    ("script", "turn_on"): lambda old: "off",  # a script runs and is off again
    ("script", "turn_off"): lambda old: "off",
}
# homeassistant.<service> -> the service of the entity's own domain it stands for.
_GENERIC = {
    "light": {"turn_on": "turn_on", "turn_off": "turn_off", "toggle": "toggle"},
    "switch": {"turn_on": "turn_on", "turn_off": "turn_off", "toggle": "toggle"},
    "cover": {"turn_on": "open_cover", "turn_off": "close_cover", "toggle": "toggle"},
    "climate": {"turn_on": "turn_on", "turn_off": "turn_off"},
    "script": {"turn_on": "turn_on", "turn_off": "turn_off"},
}
_KNOWN_SERVICES = {key for key in _TRANSITIONS} | {
    ("homeassistant", "turn_on"),
    ("homeassistant", "turn_off"),
    ("homeassistant", "toggle"),
    ("homeassistant", "update_entity"),
}


def _now() -> str:
    return datetime.now(UTC).isoformat()


class FakeHomeAssistant:
    """A Home Assistant instance on 127.0.0.1 that tests start, poke and read.

    Args:
        token: the long-lived access token it accepts.
        states: its entities (default :data:`DEFAULT_STATES`).
    """

    def __init__(
        self, token: str = "fake-ha-token", states: Iterable[Mapping[str, Any]] | None = None
    ) -> None:
        self.token = token
        self.states: dict[str, dict[str, Any]] = {}
        for s in DEFAULT_STATES if states is None else states:
            self.set_state(s["entity_id"], s["state"], **s.get("attributes", {}))
        self.service_calls: list[ServiceCall] = []
        self.requests: list[Request] = []
        self._hang: asyncio.Event | None = None
        self._runner: web.AppRunner | None = None
        self._port = 0

    # --- lifecycle -----------------------------------------------------------------------

    async def __aenter__(self) -> FakeHomeAssistant:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def start(self) -> None:
        """Listen on a free loopback port."""
        app = web.Application()
        app.router.add_get("/api/", self._api)
        app.router.add_get("/api/states", self._all_states)
        app.router.add_get("/api/states/{entity_id}", self._one_state)
        app.router.add_post("/api/services/{domain}/{service}", self._service)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._port = int(self._runner.addresses[0][1])

    async def aclose(self) -> None:
        """Stop listening (a hanging request is released first)."""
        if self._hang is not None:
            self._hang.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``, what ``HOMEASSISTANT_URL`` is set to."""
        return f"http://127.0.0.1:{self._port}"

    # --- what tests change and read -------------------------------------------------------

    def set_state(self, entity_id: str, state: str, **attributes: Any) -> None:
        """Create or change an entity (as a device reporting a new state would)."""
        stamp = _now()
        self.states[entity_id] = {
            "entity_id": entity_id,
            "state": state,
            "attributes": dict(attributes),
            "last_changed": stamp,
            "last_updated": stamp,
            "context": {"id": "01FAKE", "parent_id": None, "user_id": None},
        }

    def state_of(self, entity_id: str) -> str:
        """The entity's state now."""
        return str(self.states[entity_id]["state"])

    def hang(self) -> None:
        """Make every later request wait until :meth:`release` (or :meth:`aclose`)."""
        self._hang = asyncio.Event()

    def release(self) -> None:
        """Answer the requests :meth:`hang` held back, and the next ones at once."""
        if self._hang is not None:
            self._hang.set()
            self._hang = None

    # --- handlers ------------------------------------------------------------------------

    async def _gate(self, request: web.Request) -> web.Response | None:
        auth = request.headers.get("Authorization")
        self.requests.append(Request(request.method, request.path, auth))
        if self._hang is not None:
            await self._hang.wait()
        if auth != f"Bearer {self.token}":
            return web.Response(status=401, text="401: Unauthorized")
        return None

    async def _api(self, request: web.Request) -> web.Response:
        return await self._gate(request) or web.json_response({"message": "API running."})

    async def _all_states(self, request: web.Request) -> web.Response:
        return await self._gate(request) or web.json_response(list(self.states.values()))

    async def _one_state(self, request: web.Request) -> web.Response:
        refused = await self._gate(request)
        if refused is not None:
            return refused
        state = self.states.get(request.match_info["entity_id"])
        if state is None:
            return web.json_response({"message": "Entity not found."}, status=404)
        return web.json_response(state)

    async def _service(self, request: web.Request) -> web.Response:
        refused = await self._gate(request)
        if refused is not None:
            return refused
        domain, service = request.match_info["domain"], request.match_info["service"]
        raw = await request.text()
        try:
            data = json.loads(raw) if raw else {}
        except ValueError:
            data = None
        if not isinstance(data, dict):
            self.service_calls.append(ServiceCall(domain, service, raw, 400))
            return web.json_response({"message": "Data should be valid JSON."}, status=400)
        if (domain, service) not in _KNOWN_SERVICES:
            self.service_calls.append(ServiceCall(domain, service, data, 400))
            return web.Response(status=400, text="400: Bad Request")
        self.service_calls.append(ServiceCall(domain, service, copy.deepcopy(data), 200))
        targets = data.get("entity_id", [])
        targets = [targets] if isinstance(targets, str) else list(targets)
        changed = [
            s
            for entity_id in targets
            if (s := self._apply(domain, service, entity_id, data)) is not None
        ]
        return web.json_response(changed)

    def _apply(
        self, domain: str, service: str, entity_id: str, data: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        """Run ``domain.service`` on one entity; its new state if it changed."""
        old = self.states.get(entity_id)
        entity_domain = entity_id.partition(".")[0]
        if old is None:
            return None  # Home Assistant ignores targets it does not know
        if domain == "homeassistant":
            own = _GENERIC.get(entity_domain, {}).get(service)
            if own is None:
                return None
            domain, service = entity_domain, own
        if domain != entity_domain:
            return None  # a light service aimed at a lock does nothing to the lock
        attributes = dict(old["attributes"])
        for key, value in data.items():
            if key != "entity_id":
                attributes[key] = value
        new_state = _TRANSITIONS[(domain, service)](old["state"])
        if new_state == old["state"] and attributes == old["attributes"]:
            return None
        self.set_state(entity_id, new_state, **attributes)
        return self.states[entity_id]
