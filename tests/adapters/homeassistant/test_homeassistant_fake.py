"""The fake Home Assistant speaks the REST API the way a real instance does."""

from __future__ import annotations

import httpx

from tests.fakes.homeassistant_server import FakeHomeAssistant


def _client(fake: FakeHomeAssistant, token: str | None = None) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=fake.base_url,
        headers={"Authorization": f"Bearer {token or fake.token}"},
    )


async def test_api_status_and_states(fake: FakeHomeAssistant) -> None:
    async with _client(fake) as http:
        assert (await http.get("/api/")).json() == {"message": "API running."}
        states = (await http.get("/api/states")).json()
        kitchen = (await http.get("/api/states/light.kitchen")).json()
        missing = await http.get("/api/states/light.nowhere")
    assert {s["entity_id"] for s in states} >= {"light.kitchen", "lock.front_door"}
    assert kitchen["state"] == "off"
    assert kitchen["attributes"]["friendly_name"] == "Kitchen light"
    assert {"last_changed", "last_updated", "context"} <= set(kitchen)
    assert missing.status_code == 404
    assert missing.json() == {"message": "Entity not found."}


async def test_a_wrong_token_is_refused(fake: FakeHomeAssistant) -> None:
    async with _client(fake, token="wrong") as http:
        answer = await http.get("/api/states")
        called = await http.post("/api/services/light/turn_on", json={"entity_id": "light.kitchen"})
    assert (answer.status_code, answer.text) == (401, "401: Unauthorized")
    assert called.status_code == 401
    assert fake.service_calls == []
    assert fake.state_of("light.kitchen") == "off"


async def test_a_service_call_changes_state_and_returns_the_changed_states(
    fake: FakeHomeAssistant,
) -> None:
    async with _client(fake) as http:
        answer = await http.post(
            "/api/services/light/turn_on",
            json={"entity_id": "light.kitchen", "brightness_pct": 40},
        )
        again = await http.post("/api/services/light/turn_on", json={"entity_id": "light.kitchen"})
        garage = await http.post(
            "/api/services/homeassistant/turn_on", json={"entity_id": "cover.garage"}
        )
    assert answer.status_code == 200
    [changed] = answer.json()
    assert (changed["entity_id"], changed["state"]) == ("light.kitchen", "on")
    assert changed["attributes"]["brightness_pct"] == 40
    assert again.json() == []  # nothing changed the second time
    assert garage.json()[0]["state"] == "open"
    assert [(c.domain, c.service) for c in fake.service_calls] == [
        ("light", "turn_on"),
        ("light", "turn_on"),
        ("homeassistant", "turn_on"),
    ]
    assert fake.service_calls[0].data == {"entity_id": "light.kitchen", "brightness_pct": 40}


async def test_bad_json_and_unknown_services_are_400(fake: FakeHomeAssistant) -> None:
    async with _client(fake) as http:
        bad = await http.post("/api/services/light/turn_on", content=b"{nope")
        unknown = await http.post("/api/services/light/fly", json={"entity_id": "light.kitchen"})
    assert bad.status_code == 400
    assert bad.json() == {"message": "Data should be valid JSON."}
    assert (unknown.status_code, unknown.text) == (400, "400: Bad Request")
    assert fake.state_of("light.kitchen") == "off"
