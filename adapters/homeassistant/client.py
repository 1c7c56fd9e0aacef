"""A small client for Home Assistant's REST API (httpx), with its errors in plain words.

Every failure becomes a :class:`HomeAssistantError` (a :class:`~core.tools.ToolError`, so the
model is told and the chat goes on) whose message a person can read and which never holds
the token: "Home Assistant rejected the token (401)".
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from enum import Enum
from typing import Any
from urllib.parse import quote

import httpx
from pydantic import SecretStr

from core.tools import ToolError

__all__ = ["ClientState", "HomeAssistantClient", "HomeAssistantError"]

_log = logging.getLogger(__name__)


class HomeAssistantError(ToolError):
    """Home Assistant failed or refused a request.

    Attributes:
        status: the HTTP status it answered, or ``None`` when it did not answer.
    """

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ClientState(Enum):
    """Where the client is in its life."""

    OPEN = "open"
    CLOSED = "closed"


def _message_of(response: httpx.Response) -> str:
    """Home Assistant's own short explanation in an error answer, if it gave one."""
    try:
        body = response.json()
    except ValueError:
        return ""
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return str(body["message"]).strip()[:200]
    return ""


class HomeAssistantClient:
    """Requests to one Home Assistant instance, with a bearer token and a timeout.

    Args:
        base_url: the instance, e.g. ``http://homeassistant.local:8123`` (no ``/api``).
        token: a long-lived access token.
        timeout: seconds one request may take.
        shown_url: the URL as messages and logs show it (without credentials).
    """

    def __init__(self, base_url: str, token: SecretStr, timeout: float, shown_url: str) -> None:
        self.shown_url = shown_url
        self.lifecycle = ClientState.OPEN
        self._http = httpx.AsyncClient(
            base_url=base_url,
            headers={
                "Authorization": f"Bearer {token.get_secret_value()}",
                "Content-Type": "application/json",
            },
            timeout=httpx.Timeout(timeout),
            follow_redirects=False,
        )
        self._timeout = timeout

    async def aclose(self) -> None:
        """Close the connections. Idempotent."""
        if self.lifecycle is ClientState.CLOSED:
            return
        self.lifecycle = ClientState.CLOSED
        await self._http.aclose()

    async def ping(self) -> None:
        """``GET /api/``: whether the API answers and accepts the token.

        Raises:
            HomeAssistantError: it did not answer, or refused.
        """
        await self._request("GET", "/api/", what="the API")

    async def states(self) -> list[dict[str, Any]]:
        """``GET /api/states``: every entity's state object.

        Raises:
            HomeAssistantError: it failed, refused, or answered something else than a list.
        """
        body = await self._request("GET", "/api/states", what="the states")
        if not isinstance(body, list):
            raise HomeAssistantError("Home Assistant sent an unexpected answer for the states")
        return [s for s in body if isinstance(s, dict) and isinstance(s.get("entity_id"), str)]

    async def state(self, entity_id: str) -> dict[str, Any]:
        """``GET /api/states/<entity_id>``: one entity's state object.

        Raises:
            HomeAssistantError: unknown entity (404), or a failure.
        """
        body = await self._request(
            "GET", f"/api/states/{quote(entity_id, safe='')}", what=entity_id
        )
        if not isinstance(body, dict):
            raise HomeAssistantError(f"Home Assistant sent an unexpected answer for {entity_id}")
        return body

    async def call_service(
        self, domain: str, service: str, data: Mapping[str, Any]
    ) -> list[dict[str, Any]]:
        """``POST /api/services/<domain>/<service>``: run it; the states that changed.

        Raises:
            HomeAssistantError: the service is unknown or its data invalid (400), or a failure.
        """
        path = f"/api/services/{quote(domain, safe='')}/{quote(service, safe='')}"
        body = await self._request("POST", path, what=f"{domain}.{service}", json=dict(data))
        if isinstance(body, dict):  # ?return_response shape: {"changed_states": [...], ...}
            body = body.get("changed_states", [])
        if not isinstance(body, list):
            return []
        return [s for s in body if isinstance(s, dict) and isinstance(s.get("entity_id"), str)]

    async def _request(self, method: str, path: str, *, what: str, json: Any = None) -> Any:
        """One request; its JSON body. The one place httpx errors are translated."""
        if self.lifecycle is ClientState.CLOSED:
            raise RuntimeError("the Home Assistant client is closed")
        try:
            response = await self._http.request(method, path, json=json)
        except httpx.TimeoutException as exc:
            raise HomeAssistantError(
                f"Home Assistant did not answer within {self._timeout:g}s"
            ) from exc
        except httpx.HTTPError as exc:
            _log.debug("Home Assistant request %s %s failed: %r", method, path, exc)
            raise HomeAssistantError(
                f"Home Assistant can't be reached at {self.shown_url}"
            ) from exc
        status = response.status_code
        if status in (401, 403):
            raise HomeAssistantError(f"Home Assistant rejected the token ({status})", status)
        if status == 404:
            raise HomeAssistantError(f"Home Assistant doesn't know {what} (404)", status)
        if status == 400:
            detail = _message_of(response)
            text = f"Home Assistant refused {what} (400)"
            raise HomeAssistantError(f"{text}: {detail}" if detail else text, status)
        if status >= 300:
            raise HomeAssistantError(f"Home Assistant failed on {what} ({status})", status)
        try:
            return response.json()
        except ValueError as exc:
            raise HomeAssistantError(
                f"Home Assistant sent an unreadable answer for {what}", status
            ) from exc
