"""The Home Assistant tool pack against the fake: allowlist, risk, errors, secrets."""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Callable
from typing import Any

import pytest

from adapters.homeassistant import HomeAssistantSettings
from adapters.homeassistant.tools import EntityNotAllowed, HomeAssistantTools
from core.errors import ConfigError
from core.tools import Risk, Tool, ToolArgumentError, Toolbox, ToolError, ToolResult, spec
from tests.adapters.homeassistant.helpers import make_settings
from tests.fakes.homeassistant_server import FakeHomeAssistant


def get(pack: HomeAssistantTools, name: str) -> Tool:
    return next(t for t in pack.tools() if t.name == name)


async def call(pack: HomeAssistantTools, name: str, **arguments: Any) -> ToolResult:
    t = get(pack, name)
    return await t.invoke(t.validate(json.dumps(arguments)))


def test_the_three_tools_and_their_arguments_are_the_public_contract(
    fake: FakeHomeAssistant,
) -> None:
    pack = HomeAssistantTools(make_settings(fake))
    specs = {t.name: spec(t) for t in pack.tools()}
    assert sorted(specs) == ["ha_call_service", "ha_get_state", "ha_list_entities"]
    assert set(specs["ha_list_entities"].parameters["properties"]) == {"domain"}
    assert specs["ha_get_state"].parameters["required"] == ["entity_id"]
    call_params = specs["ha_call_service"].parameters
    assert set(call_params["properties"]) == {"domain", "service", "entity_id", "data"}
    assert call_params["required"] == ["domain", "service", "entity_id"]
    assert {t.name: t.risk for t in pack.tools()} == {
        "ha_list_entities": Risk.READ,
        "ha_get_state": Risk.READ,
        "ha_call_service": Risk.ACT,
    }
    assert {t.source for t in pack.tools()} == {"homeassistant"}
    assert Toolbox([pack]).get("ha_call_service") is get(pack, "ha_call_service")


async def test_list_entities_shows_only_the_allowlisted_ones(
    make_pack: Callable[..., Any],
) -> None:
    pack = await make_pack(entities="light.*,sensor.outside")
    listed = json.loads((await call(pack, "ha_list_entities")).content)["entities"]
    lights = json.loads((await call(pack, "ha_list_entities", domain="light")).content)
    assert listed == [
        {"entity_id": "light.hall", "name": "Hall light", "state": "on"},
        {"entity_id": "light.kitchen", "name": "Kitchen light", "state": "off"},
        {"entity_id": "sensor.outside", "name": "Outside", "state": "11.5 °C"},
    ]
    assert [e["entity_id"] for e in lights["entities"]] == ["light.hall", "light.kitchen"]
    none = await call(pack, "ha_list_entities", domain="lock")
    assert "No entity in the lock domain" in none.content


async def test_nothing_is_visible_by_default(make_pack: Callable[..., Any], fake) -> None:
    pack = await make_pack(entities="")
    assert "No entity" in (await call(pack, "ha_list_entities")).content
    with pytest.raises(EntityNotAllowed):
        get(pack, "ha_get_state").validate('{"entity_id": "light.kitchen"}')


async def test_get_state_reads_one_entity(pack: HomeAssistantTools) -> None:
    body = json.loads((await call(pack, "ha_get_state", entity_id="light.hall")).content)
    assert (body["entity_id"], body["name"], body["state"]) == ("light.hall", "Hall light", "on")
    assert body["attributes"]["brightness"] == 180


async def test_secret_attributes_are_not_shown(make_pack: Callable[..., Any]) -> None:
    pack = await make_pack(entities="media_player.tv")
    result = await call(pack, "ha_get_state", entity_id="media_player.tv")
    assert json.loads(result.content)["state"] == "playing"
    assert "picture-secret" not in result.content


@pytest.mark.parametrize(
    ("name", "arguments"),
    [
        ("ha_get_state", {"entity_id": "light.kitchen_2"}),
        ("ha_get_state", {"entity_id": "sensor.outside"}),
        ("ha_call_service", {"domain": "lock", "service": "unlock", "entity_id": "lock.back"}),
        (
            "ha_call_service",
            {"domain": "light", "service": "turn_on", "entity_id": "media_player.tv"},
        ),
    ],
)
async def test_an_entity_outside_the_allowlist_never_reaches_home_assistant(
    pack: HomeAssistantTools, fake: FakeHomeAssistant, name: str, arguments: dict[str, Any]
) -> None:
    before = len(fake.requests)
    t = get(pack, name)
    with pytest.raises(EntityNotAllowed, match="not one of the entities this bot may use"):
        t.validate(json.dumps(arguments))
    # invoke checks again (a pending call may outlive a change of HOMEASSISTANT_ENTITIES)
    with pytest.raises(EntityNotAllowed):
        await t.invoke(arguments | {"data": {}} if name == "ha_call_service" else arguments)
    assert len(fake.requests) == before
    assert fake.service_calls == []


async def test_a_call_outside_a_shrunk_allowlist_is_refused_at_run_time(
    make_pack: Callable[..., Any], fake: FakeHomeAssistant
) -> None:
    wide = await make_pack(entities="light.*")
    args = get(wide, "ha_call_service").validate(
        '{"domain": "light", "service": "turn_on", "entity_id": "light.kitchen"}'
    )
    narrow = await make_pack(entities="light.hall")  # e.g. after a restart with new settings
    with pytest.raises(EntityNotAllowed):
        await get(narrow, "ha_call_service").invoke(args)
    assert fake.service_calls == []
    assert fake.state_of("light.kitchen") == "off"


@pytest.mark.parametrize(
    ("domain", "service", "entity_id", "risk"),
    [
        ("light", "turn_on", "light.kitchen", Risk.ACT),
        ("switch", "toggle", "switch.coffee", Risk.ACT),
        ("homeassistant", "turn_on", "light.kitchen", Risk.ACT),
        ("lock", "unlock", "lock.front_door", Risk.DANGEROUS),
        ("alarm_control_panel", "alarm_disarm", "alarm_control_panel.home", Risk.DANGEROUS),
        ("cover", "open_cover", "cover.garage", Risk.DANGEROUS),
        ("climate", "set_temperature", "climate.living_room", Risk.DANGEROUS),
        ("script", "turn_on", "script.good_night", Risk.DANGEROUS),
        ("homeassistant", "turn_on", "cover.garage", Risk.DANGEROUS),
        ("homeassistant", "toggle", "lock.front_door", Risk.DANGEROUS),
        ("homeassistant", "turn_on", "script.good_night", Risk.DANGEROUS),
        ("light", "turn_on", "script.good_night", Risk.DANGEROUS),
        ("homeassistant", "restart", "light.kitchen", Risk.DANGEROUS),
    ],
)
def test_the_risk_of_a_call_is_the_higher_of_both_domains(
    fake: FakeHomeAssistant, domain: str, service: str, entity_id: str, risk: Risk
) -> None:
    pack = HomeAssistantTools(make_settings(fake, entities="*"))
    t = get(pack, "ha_call_service")
    args = t.validate(json.dumps({"domain": domain, "service": service, "entity_id": entity_id}))
    assert t.risk_of(args) is risk
    assert get(pack, "ha_get_state").risk_of({"entity_id": entity_id}) is Risk.READ


@pytest.mark.parametrize("key", ["entity_id", "target", "area_id", "device_id"])
async def test_data_may_not_pick_other_targets(
    pack: HomeAssistantTools, fake: FakeHomeAssistant, key: str
) -> None:
    arguments = {
        "domain": "light",
        "service": "turn_on",
        "entity_id": "light.kitchen",
        "data": {key: "light.garden", "brightness_pct": 10},
    }
    t = get(pack, "ha_call_service")
    with pytest.raises(ToolArgumentError, match=f"may not carry {key}"):
        t.validate(json.dumps(arguments))
    with pytest.raises(ToolArgumentError):
        await t.invoke(arguments)
    assert fake.service_calls == []


@pytest.mark.parametrize(
    "arguments",
    [
        "not json",
        '{"domain": "light", "service": "turn_on"}',
        '{"domain": "light", "service": "turn_on", "entity_id": "kitchen"}',
        '{"domain": "light", "service": "turn on!", "entity_id": "light.kitchen"}',
        '{"domain": "light", "service": "turn_on", "entity_id": "light.kitchen", "data": [1]}',
        '{"domain": "light", "service": "turn_on", "entity_id": "light.kitchen", "area": "x"}',
    ],
)
def test_malformed_arguments_are_refused(pack: HomeAssistantTools, arguments: str) -> None:
    with pytest.raises(ToolArgumentError):
        get(pack, "ha_call_service").validate(arguments)


async def test_a_service_call_turns_the_light_on_and_says_so(
    pack: HomeAssistantTools, fake: FakeHomeAssistant
) -> None:
    result = await call(
        pack,
        "ha_call_service",
        domain="light",
        service="turn_on",
        entity_id="light.kitchen",
        data={"brightness_pct": 60},
    )
    assert fake.state_of("light.kitchen") == "on"
    [sent] = fake.service_calls
    assert (sent.domain, sent.service) == ("light", "turn_on")
    assert sent.data == {"entity_id": "light.kitchen", "brightness_pct": 60}
    assert result.ok
    assert result.summary == "light.kitchen → on (brightness_pct 60)"
    assert json.loads(result.content)["state"] == "on"


async def test_the_summary_reads_the_state_back_when_nothing_changed(
    pack: HomeAssistantTools, fake: FakeHomeAssistant
) -> None:
    result = await call(
        pack, "ha_call_service", domain="light", service="turn_on", entity_id="light.hall"
    )
    assert result.summary == "light.hall → on"
    assert [r.path for r in fake.requests[-2:]] == [
        "/api/services/light/turn_on",
        "/api/states/light.hall",
    ]


async def test_homeassistant_turn_on_opens_the_garage(
    pack: HomeAssistantTools, fake: FakeHomeAssistant
) -> None:
    result = await call(
        pack, "ha_call_service", domain="homeassistant", service="turn_on", entity_id="cover.garage"
    )
    assert result.summary == "cover.garage → open"
    assert fake.state_of("cover.garage") == "open"


async def test_describe_uses_plain_words_and_the_friendly_name(pack: HomeAssistantTools) -> None:
    t = get(pack, "ha_call_service")

    def words(**arguments: Any) -> str:
        return t.describe(t.validate(json.dumps(arguments)))

    assert words(domain="light", service="turn_on", entity_id="light.kitchen") == (
        "turn on Kitchen light (light.kitchen)"
    )
    assert words(domain="cover", service="open_cover", entity_id="cover.garage") == (
        "open Garage door (cover.garage)"
    )
    assert words(
        domain="climate",
        service="set_temperature",
        entity_id="climate.living_room",
        data={"temperature": 21},
    ) == ("set temperature Living room (climate.living_room) with temperature=21")
    unlock = words(
        domain="lock", service="unlock", entity_id="lock.front_door", data={"code": "4711"}
    )
    assert unlock == "unlock Front door (lock.front_door) with code=[redacted]"
    args = t.validate(
        '{"domain": "lock", "service": "unlock", "entity_id": "lock.front_door",'
        ' "data": {"code": "4711"}}'
    )
    assert "4711" not in json.dumps(t.redact(args))
    assert get(pack, "ha_get_state").describe({"entity_id": "light.hall"}) == (
        "read Hall light (light.hall)"
    )


async def test_a_wrong_token_is_a_short_readable_error(
    make_pack: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    pack = await make_pack(token="wrong-token-1234")
    with pytest.raises(ToolError, match=r"^Home Assistant rejected the token \(401\)$"):
        await call(pack, "ha_list_entities")
    assert any("rejected the token" in r.getMessage() for r in caplog.records)


async def test_an_unknown_entity_is_404(
    make_pack: Callable[..., Any], fake: FakeHomeAssistant
) -> None:
    pack = await make_pack(entities="light.*")
    with pytest.raises(ToolError, match=r"doesn't know light.cellar \(404\)"):
        await call(pack, "ha_get_state", entity_id="light.cellar")


async def test_an_unknown_service_is_400(pack: HomeAssistantTools, fake: FakeHomeAssistant) -> None:
    with pytest.raises(ToolError, match=r"^Home Assistant refused light.fly \(400\)$"):
        await call(
            pack, "ha_call_service", domain="light", service="fly", entity_id="light.kitchen"
        )
    assert fake.state_of("light.kitchen") == "off"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_unreachable_is_logged_once_and_calls_fail_clearly(
    fake: FakeHomeAssistant, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(fake, url=f"http://127.0.0.1:{_free_port()}")
    pack = HomeAssistantTools(settings)
    caplog.set_level(logging.INFO)
    try:
        await pack.start()
        await pack.start()  # idempotent: no second report
        assert len(pack.tools()) == 3  # still offered
        with pytest.raises(ToolError, match=r"^Home Assistant can't be reached at http://127"):
            await call(pack, "ha_list_entities")
    finally:
        await pack.aclose()
    reports = [r for r in caplog.records if "can't be reached" in r.getMessage()]
    assert len(reports) == 1
    assert reports[0].levelno == logging.WARNING


async def test_a_hanging_home_assistant_times_out(
    make_pack: Callable[..., Any], fake: FakeHomeAssistant
) -> None:
    pack = await make_pack(timeout_seconds=0.2)
    fake.hang()
    with pytest.raises(ToolError, match=r"did not answer within 0.2s"):
        await call(pack, "ha_get_state", entity_id="light.kitchen")
    fake.release()


async def test_the_token_never_shows(
    fake: FakeHomeAssistant, caplog: pytest.LogCaptureFixture
) -> None:
    """Not in results, descriptions, errors, schemas, reprs or any log record."""
    caplog.set_level(logging.DEBUG)
    token = fake.token
    seen: list[str] = []
    good = HomeAssistantTools(make_settings(fake, entities="*"))
    bad = HomeAssistantTools(make_settings(fake, entities="*", token=token + "x"))
    down = HomeAssistantTools(make_settings(fake, url=f"http://127.0.0.1:{_free_port()}"))
    for pack in (good, bad, down):
        await pack.start()
        seen.append(repr(pack.settings))
        for t in pack.tools():
            seen += [repr(t), t.description, json.dumps(dict(t.parameters))]
        for name, args in [
            ("ha_list_entities", {}),
            ("ha_get_state", {"entity_id": "media_player.tv"}),
            (
                "ha_call_service",
                {"domain": "light", "service": "turn_on", "entity_id": "light.hall"},
            ),
            ("ha_call_service", {"domain": "light", "service": "fly", "entity_id": "light.hall"}),
        ]:
            t = get(pack, name)
            try:
                checked = t.validate(json.dumps(args))
                seen.append(t.describe(checked))
                result = await t.invoke(checked)
                seen += [result.content, result.summary or ""]
            except ToolError as exc:
                seen += [str(exc), repr(exc), repr(exc.__cause__)]
        await pack.aclose()
    seen += [r.getMessage() for r in caplog.records]
    seen += [r.exc_text or "" for r in caplog.records]
    assert any("Hall light" in s for s in seen)  # the good pack did work
    assert [s for s in seen if token in s] == []


def test_url_and_token_are_required(fake: FakeHomeAssistant) -> None:
    with pytest.raises(ConfigError, match="HOMEASSISTANT_URL") as no_url:
        HomeAssistantTools(HomeAssistantSettings(_env_file=None, token="t"))
    assert no_url.value.example
    with pytest.raises(ConfigError, match="HOMEASSISTANT_TOKEN"):
        HomeAssistantTools(HomeAssistantSettings(_env_file=None, url=fake.base_url))


async def test_lifecycle(fake: FakeHomeAssistant) -> None:
    pack = HomeAssistantTools(make_settings(fake))
    with pytest.raises(RuntimeError, match="not started"):
        await call(pack, "ha_list_entities")
    await pack.start()
    await pack.aclose()
    await pack.aclose()
    with pytest.raises(RuntimeError, match="closed"):
        await pack.start()
