"""The webhook server of ``chinwag ingress`` on Telegram: HTTP 200 only once a turn is queued.

python-telegram-bot's own webhook server answers Telegram 200 as soon as an update is in its
in-memory queue, before any handler ran: right for one process, whose answer comes from that
same process, but in ingress a replica killed between that 200 and the turn being stored in
the job queue would lose the message for good (Telegram never sends an acknowledged update
again). So ingress serves the webhook itself: each POST is turned into an ``Update``, handed
to the application's handlers (``Application.process_update``, awaited: the adapter's
handlers await the engine's ``submit``, which resolves once the turn is durably queued), and
only then answered 200. A turn that could not be queued (the database is down) is answered
503, so Telegram delivers the update again, later or to another replica behind the load
balancer. A redelivered update carries the same message id, which the queue stores once.

Every replica listens on its own ``TELEGRAM_WEBHOOK_LISTEN`` and registers the same public
``TELEGRAM_WEBHOOK_URL`` (the load balancer's) with the same secret; none deletes the
webhook when it stops, as the others still serve it.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
from collections.abc import Awaitable, Iterator
from contextvars import ContextVar
from typing import Any, Final

from aiohttp import web
from telegram import Update

from adapters.telegram.settings import TelegramSettings
from adapters.telegram.transport import AnyApplication
from core.errors import AdapterError, ConfigError
from core.ports import ReplyChannel

__all__ = ["QueuedWebhook", "queued", "refusals", "refused"]

_log = logging.getLogger(__name__)

_SECRET_HEADER: Final = "X-Telegram-Bot-Api-Secret-Token"
_MAX_BODY: Final = 1024 * 1024  # an update is a few kilobytes; Telegram sends no files here
_DRAIN_SECONDS: Final = 1.0  # deliveries in flight at stop; later ones Telegram sends again

_refusals: ContextVar[list[BaseException] | None] = ContextVar("chinwag_tg_refusals", default=None)


def refused(exc: BaseException) -> bool:
    """Record that the update being delivered could not be queued; ``False`` outside one.

    The adapter's handlers call this when the engine's ``submit`` (or ``handle_action``)
    failed, so the delivery is answered non-2xx and Telegram sends the update again.
    """
    found = _refusals.get()
    if found is None:
        return False
    found.append(exc)
    return True


@contextlib.contextmanager
def refusals() -> Iterator[list[BaseException]]:
    """Collect what :func:`refused` records while one update is handed to the handlers.

    The webhook answers non-2xx when the list is not empty; the ingress poller does not
    confirm the update (:mod:`adapters.telegram.polling`).
    """
    found: list[BaseException] = []
    token = _refusals.set(found)
    try:
        yield found
    finally:
        _refusals.reset(token)


async def queued(taken: Awaitable[None], out: ReplyChannel, what: str) -> None:
    """Await the ingress engine queueing a turn; a failure does not lose it.

    A webhook delivery is answered 503 and a polled update is not confirmed (Telegram sends
    either again); outside those (an album handed over later) the user is asked to send it
    again.
    """
    try:
        await taken
    except Exception as exc:
        if refused(exc):
            return
        _log.warning("Telegram: a %s could not be queued: %s", what, type(exc).__name__)
        with contextlib.suppress(AdapterError):
            await out.send_text(
                f"I couldn't take that {what} just now. Please send it again in a moment."
            )


class QueuedWebhook:
    """Telegram's webhook for one ingress replica (started after the application).

    Raises :class:`ConfigError` naming ``TELEGRAM_WEBHOOK_LISTEN`` when the address cannot
    be listened on.
    """

    def __init__(
        self, app: AnyApplication, settings: TelegramSettings, allowed_updates: list[str]
    ) -> None:
        self._app = app
        self._settings = settings
        self._allowed = allowed_updates
        secret = settings.webhook_secret
        self._secret = secret.get_secret_value() if secret else ""
        self._runner: web.AppRunner | None = None
        self.running = False

    async def start(self) -> None:
        """Listen, then register the webhook URL with Telegram."""
        server = web.Application(client_max_size=_MAX_BODY)
        server.router.add_post("/" + self._settings.webhook_path(), self._post)
        runner = web.AppRunner(
            server, access_log=None, handle_signals=False, shutdown_timeout=_DRAIN_SECONDS
        )
        await runner.setup()
        host, port = self._settings.listen_address()
        try:
            await web.TCPSite(runner, host or None, port).start()
        except OSError as exc:
            await runner.cleanup()
            raise ConfigError(
                "TELEGRAM_WEBHOOK_LISTEN",
                f"cannot listen on {host}:{port} ({exc.strerror or exc})",
                TelegramSettings.EXAMPLES["webhook_listen"],
            ) from exc
        self._runner = runner
        self.running = True
        try:
            await self._app.bot.set_webhook(
                url=self._settings.webhook_url or "",
                secret_token=self._secret or None,
                allowed_updates=self._allowed,
            )
        except BaseException:
            await self.stop()
            raise
        _log.info("Telegram webhook: listening on %s:%d (ingress)", host, port)

    async def stop(self) -> None:
        """Stop taking deliveries; an update being handled is finished. Idempotent."""
        runner, self._runner = self._runner, None
        self.running = False
        if runner is not None:
            await runner.cleanup()

    async def _post(self, request: web.Request) -> web.Response:
        if self._secret and not hmac.compare_digest(
            request.headers.get(_SECRET_HEADER, ""), self._secret
        ):
            return web.Response(status=403)
        if not self.running:
            return web.Response(status=503)  # stopping: Telegram retries elsewhere
        try:
            data: Any = json.loads(await request.read())
            update = Update.de_json(data, self._app.bot)
        except (ValueError, TypeError, KeyError):
            _log.warning("Telegram webhook: a delivery that is not an update; refused (400)")
            return web.Response(status=400)
        if update is None:
            return web.Response(status=400)
        with refusals() as found:
            await self._app.process_update(update)
        if found:
            _log.warning(
                "Telegram update %s could not be queued (%s); answered 503 so Telegram sends "
                "it again",
                update.update_id,
                type(found[0]).__name__,
            )
            return web.Response(status=503)
        return web.Response(status=200)
