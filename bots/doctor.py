"""``chinwag doctor``: check a setup end to end, one line per check; and ``run``'s start checks.

Checks, in order: the configuration (every settings group loads; variables that look like
chinwag's but are not, with a "did you mean"), the database (reachable, migrations current),
the LLM (an OpenAI-compatible server answers ``/v1/models`` and lists the model; or the local
GGUF model loads, and its vision projector with it), speech to text (the server answers
``/v1/models``, takes the key and lists ``STT_MODEL`` when it lists models), Telegram
(``getMe``, webhook state) and Discord (the bot user, the Message Content intent), the network
checks side by side. Each line starts with ``ok``, ``warn``,
``FAIL`` or ``skip`` (not configured); anything not ok says what to do. The exit status is 0
only when every line is ``ok`` or ``skip``: a warning fails doctor too, because what it warns
about (a misspelled variable above all) is a setting chinwag silently ignores.

:func:`startup_checks` is the cheap part ``chinwag run`` does first: unknown variables are
logged as warnings, and the model is looked up at the server (a refused key or a model the
server does not have stops the start as a configuration error; a server that does not answer
is only logged, since it may come up after chinwag).
"""

from __future__ import annotations

import argparse
import asyncio
import difflib
import importlib
import logging
import os
import sys
import time
from collections.abc import Awaitable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

from adapters.discord.settings import DiscordSettings
from adapters.llm.local_settings import LocalSettings, default_model_path, local_backend_available
from adapters.memory.settings import MemorySettings, render_url
from adapters.telegram.settings import TelegramSettings
from bots.config import load, secrets_of
from core.errors import ChinwagError, ConfigError
from core.settings import ChinwagSettings, LLMSettings

__all__ = [
    "Check",
    "add_doctor_parser",
    "diagnose",
    "known_variables",
    "run_doctor",
    "startup_checks",
    "unknown_variables",
]

_log = logging.getLogger(__name__)

SETTINGS_MODULES: Final = (
    "core.settings",
    "bots.config",
    "adapters.memory.settings",
    "adapters.llm.openai_wire",
    "adapters.llm.local_settings",
    "adapters.llm.stt",
    "adapters.telegram.settings",
    "adapters.discord.settings",
    "adapters.homeassistant.settings",
)
"""Where settings classes live; every ``ChinwagSettings`` subclass they define is known."""

ALIASES: Final = {
    "TELEGRAM_TOKEN": "TELEGRAM_BOT_TOKEN",
    "TG_TOKEN": "TELEGRAM_BOT_TOKEN",
    "DISCORD_TOKEN": "DISCORD_BOT_TOKEN",
    "OPENAI_KEY": "OPENAI_API_KEY",
    "OPENAI_API_BASE": "OPENAI_BASE_URL",
    "OPENAI_API_BASE_URL": "OPENAI_BASE_URL",
    "OPENAI_API_URL": "OPENAI_BASE_URL",
    "LLM_MODEL": "OPENAI_MODEL",
    "DB_URL": "DATABASE_URL",
    "DATABASE_URI": "DATABASE_URL",
    "HA_URL": "HOMEASSISTANT_URL",
    "HA_TOKEN": "HOMEASSISTANT_TOKEN",
}
"""Names other bots and tools use for a chinwag setting (difflib would not always find them)."""

NOT_SETTINGS: Final = frozenset(
    {
        # compose.yaml's own variables (read by compose from .env, never by chinwag)
        "CHINWAG_PG_IMAGE",
        "CHINWAG_IMAGE",
        "CHINWAG_LOCAL",
        "CHINWAG_HTTP_PORT",
        # the test suite's and scripts/container-test.sh's
        "CHINWAG_TEST_POSTGRES_URL",
        "CHINWAG_TEST_REQUIRE",
        "CHINWAG_TEST_PYTHON",
        "CHINWAG_CONTAINER_CACHE",
        "CHINWAG_LLAMA_CMAKE_ARGS",
    }
)
"""Variables of chinwag's own tooling (compose, the test suite) that the program never reads."""

DEFAULT_TIMEOUT: Final = 10.0
START_TIMEOUT: Final = 3.0
"""Seconds ``chinwag run`` gives the LLM server to list its models before it starts anyway."""

CONTAINER_HINT: Final = (
    "start the server; if it runs on the host: inside a container, localhost is the "
    "container itself, so reach the host's server "
    "(Ollama) at http://host.containers.internal:11434/v1 (podman) or "
    "http://host.docker.internal:11434/v1 (Docker)"
)
STT_CONTAINER_HINT: Final = (
    "start the speech-to-text server; if it runs on the host: inside a container, localhost "
    "is the container itself, so put host.containers.internal (podman) or "
    "host.docker.internal (Docker) in STT_BASE_URL"
)


@dataclass(frozen=True, slots=True)
class Check:
    """One line of doctor's report.

    Attributes:
        status: ``ok``, ``warn``, ``FAIL`` or ``skip`` (not configured, nothing to check).
        what: what was checked (``configuration``, ``database``, ``LLM``, ``Telegram``...).
        detail: what doctor found.
        fix: what to do, for anything not ok.
    """

    status: str
    what: str
    detail: str
    fix: str | None = None

    @property
    def passed(self) -> bool:
        """Whether this line lets doctor exit 0."""
        return self.status in ("ok", "skip")

    def line(self) -> str:
        """The line as printed: ``FAIL database: ... -> do this``."""
        text = f"{self.status:<4} {self.what}: {self.detail}"
        return f"{text} -> {self.fix}" if self.fix else text


# --- configuration ------------------------------------------------------------------------


def settings_classes() -> list[type[ChinwagSettings]]:
    """Every settings class of chinwag (those :data:`SETTINGS_MODULES` define), once each."""
    found: list[type[ChinwagSettings]] = []
    modules = set()
    for name in SETTINGS_MODULES:
        try:
            importlib.import_module(name)
        except ImportError:  # an optional pack that is not installed: its settings are unknown
            continue
        modules.add(name)
    pending: list[type[ChinwagSettings]] = list(ChinwagSettings.__subclasses__())
    while pending:
        cls = pending.pop(0)
        pending.extend(cls.__subclasses__())
        if cls.__module__ in modules and cls not in found:
            found.append(cls)
    return found


def _variables_of(cls: type[ChinwagSettings]) -> list[str]:
    prefix = str(cls.model_config.get("env_prefix") or "")
    return [f"{prefix}{field}".upper() for field in cls.model_fields]


def known_variables() -> frozenset[str]:
    """The names of every setting chinwag reads."""
    return frozenset(name for cls in settings_classes() for name in _variables_of(cls))


def _prefixes(known: Iterable[str]) -> frozenset[str]:
    """Words that mark a variable as meant for chinwag: ``TELEGRAM_``, ``DB_``, ``HA_``...

    A settings class's ``env_prefix``, the first word that at least two settings share
    (``DB_``, ``TOOL_``, ``CHINWAG_``), and the first word of every alias.
    """
    words: dict[str, int] = {}
    for name in known:
        word = name.split("_", 1)[0] + "_"
        words[word] = words.get(word, 0) + 1
    chosen = {word for word, count in words.items() if count >= 2}
    chosen.update(str(cls.model_config.get("env_prefix") or "") for cls in settings_classes())
    chosen.update(alias.split("_", 1)[0] + "_" for alias in ALIASES)
    chosen.discard("")
    return frozenset(chosen)


def unknown_variables(
    sources: Mapping[str, Mapping[str, Any]],
) -> list[tuple[str, str, str | None]]:
    """Variables that look like chinwag's but are none of its settings.

    Args:
        sources: where each set of variables came from (``"environment"``, ``".env"``) and
            the variables.

    Returns:
        ``(name, source, suggestion)`` for each, the suggestion being the setting meant
        (a known alias, else the closest name) or ``None``.
    """
    known = known_variables()
    prefixes = _prefixes(known)
    found: list[tuple[str, str, str | None]] = []
    seen: set[str] = set()
    for source, variables in sources.items():
        for raw in variables:
            name = raw.upper()
            if name in known or name in NOT_SETTINGS or name in seen:
                continue
            close = difflib.get_close_matches(name, known, n=1, cutoff=0.8)
            alias = ALIASES.get(name)
            if alias not in known:
                alias = None
            if not (close or alias or name.startswith(tuple(prefixes))):
                continue
            seen.add(name)
            found.append((raw, source, alias or (close[0] if close else None)))
    return found


def _variable_sources(env_file: Path | None) -> dict[str, Mapping[str, Any]]:
    sources: dict[str, Mapping[str, Any]] = {"environment": os.environ}
    if env_file is not None:
        from dotenv import dotenv_values

        sources[str(env_file)] = dotenv_values(env_file)
    return sources


def _unknown_checks(env_file: Path | None) -> list[Check]:
    checks = []
    for name, source, suggestion in unknown_variables(_variable_sources(env_file)):
        hint = f"did you mean {suggestion}?" if suggestion else "remove it or check the README"
        checks.append(
            Check("warn", "configuration", f"{name} (in {source}) is not a chinwag setting", hint)
        )
    return checks


@dataclass(slots=True)
class _Loaded:
    """The settings doctor needs, and the checks loading them produced."""

    checks: list[Check]
    groups: dict[type[ChinwagSettings], ChinwagSettings]

    def get(self, cls: type[Any]) -> Any:
        return self.groups.get(cls)


def _load_all(env_file: Path | None) -> _Loaded:
    loaded = _Loaded([], {})
    classes = settings_classes()
    for cls in classes:
        try:
            loaded.groups[cls] = load(cls, env_file)
        except ConfigError as exc:
            loaded.checks.append(
                Check("FAIL", "configuration", str(exc), f"correct {exc.variable}")
            )
    if not loaded.checks:
        where = f"environment and {env_file}" if env_file else "environment (no .env file)"
        loaded.checks.append(
            Check("ok", "configuration", f"{len(classes)} settings groups load from the {where}")
        )
    loaded.checks.extend(_unknown_checks(env_file))
    return loaded


# --- database -----------------------------------------------------------------------------


async def _check_database(memory: MemorySettings, limit: float) -> Check:
    from adapters.memory import migrate

    try:
        url = memory.async_url()
        path = migrate.sqlite_file(url)
    except ConfigError as exc:
        return Check("FAIL", "database", str(exc), f"correct {exc.variable}")
    shown = render_url(url)
    if path is not None and not path.exists():
        if os.access(path.parent, os.W_OK):
            return Check("ok", "database", f"{path} does not exist yet; `chinwag run` creates it")
        return Check(
            "FAIL",
            "database",
            f"cannot create {path}: its directory is not writable",
            "set CHINWAG_DATA_DIR (or DATABASE_URL) to a writable place",
        )
    try:
        async with asyncio.timeout(limit):
            current = await migrate.current(url)
    except TimeoutError:
        return Check(
            "FAIL",
            "database",
            f"{shown} did not answer within {limit:g}s",
            "check the host and port in DATABASE_URL and that the server is up",
        )
    except ChinwagError as exc:
        _log.debug("database check failed", exc_info=True)
        return Check("FAIL", "database", str(exc), "start the database or correct DATABASE_URL")
    head = migrate.head_revision()
    if current == head:
        return Check("ok", "database", f"{shown} reachable, schema current ({head})")
    if current is not None and not migrate.is_known_revision(current):
        return Check(
            "FAIL",
            "database",
            f"{shown} is at revision {current}, which this chinwag does not know (a newer "
            "version wrote it)",
            "run the newer chinwag, or downgrade with it (`chinwag db downgrade`) first",
        )
    state = "has no schema yet" if current is None else f"is at {current}, behind {head}"
    if memory.db_auto_migrate:
        return Check(
            "ok",
            "database",
            f"{shown} reachable; it {state}: `chinwag run` migrates it at start "
            "(DB_AUTO_MIGRATE is on)",
        )
    return Check(
        "FAIL",
        "database",
        f"{shown} {state} and DB_AUTO_MIGRATE is off",
        "run `chinwag db upgrade`",
    )


# --- LLM ----------------------------------------------------------------------------------


def in_container() -> bool:
    """Whether chinwag runs inside a container (Docker's or podman's marker file exists)."""
    return Path("/.dockerenv").exists() or Path("/run/.containerenv").exists()


def _openai_configured(openai: Any) -> bool:
    return openai.api_key is not None or openai.base_url is not None


def _listed(models: list[str], limit: int = 5) -> str:
    shown = ", ".join(models[:limit])
    more = len(models) - limit
    return f"{shown} (and {more} more)" if more > 0 else shown or "none"


async def _check_llm(
    llm: LLMSettings, openai: Any, local: LocalSettings, limit: float
) -> list[Check]:
    choice = llm.backend
    unused = []
    if local.mmproj_path is not None:
        unused.append(
            Check(
                "skip",
                PROJECTOR,
                "LOCAL_MMPROJ_PATH is set, but the LLM is the OpenAI-compatible server: "
                "the local backend and its projector are not used",
            )
        )
    if choice == "openai" and not _openai_configured(openai):
        fail = Check(
            "FAIL",
            "LLM",
            "LLM_BACKEND=openai but neither OPENAI_API_KEY nor OPENAI_BASE_URL is set",
            "set OPENAI_API_KEY=sk-... or OPENAI_BASE_URL=http://localhost:11434/v1",
        )
        return [fail, *unused]
    if choice == "openai" or (choice is None and _openai_configured(openai)):
        return [await _check_openai(openai, limit), *unused]
    return await _check_local(local)


async def _check_openai(openai: Any, limit: float) -> Check:
    from adapters.llm.probe import has_model, is_loopback_url, list_models, wanted_model
    from core.errors import BackendUnavailable

    started = time.perf_counter()
    try:
        listing = await list_models(openai, limit=limit)
    except ConfigError as exc:
        return Check("FAIL", "LLM", str(exc), f"set {exc.variable} to a key the server accepts")
    except BackendUnavailable as exc:
        fix = "start the server, or correct OPENAI_BASE_URL"
        if openai.base_url and is_loopback_url(openai.base_url) and in_container():
            fix = CONTAINER_HINT
        return Check("FAIL", "LLM", str(exc), fix)
    except ChinwagError as exc:
        return Check("FAIL", "LLM", str(exc), "check OPENAI_BASE_URL and the server's log")
    took = time.perf_counter() - started
    model = wanted_model(openai)
    if listing.models is None:
        return Check(
            "warn",
            "LLM",
            f"{listing.url} answers but lists no models (HTTP 404 for /models), so "
            f"{model or 'the model'} cannot be checked",
            "send one message with `chinwag chat` to try it",
        )
    if model is None:
        if not listing.models:
            return Check(
                "FAIL",
                "LLM",
                f"OPENAI_MODEL is unset and {listing.url} lists no models",
                "load or pull a model on the server, or set OPENAI_MODEL",
            )
        return Check(
            "ok",
            "LLM",
            f"{listing.url} answers in {took:.2f}s; OPENAI_MODEL is unset: using "
            f"{listing.models[0]}, the server's first",
        )
    if not has_model(listing.models, model):
        return Check(
            "FAIL",
            "LLM",
            f"{listing.url} has no model {model!r}; it has {_listed(listing.models)}",
            "set OPENAI_MODEL to one of those (or load the model on the server: "
            f"`ollama pull {model}`)",
        )
    missing = [m for m in openai.allowed_models if not has_model(listing.models, m)]
    if missing:
        return Check(
            "warn",
            "LLM",
            f"{listing.url} has {model} but not {', '.join(missing)} (OPENAI_ALLOWED_MODELS)",
            "remove them from OPENAI_ALLOWED_MODELS or load them on the server; it has "
            f"{_listed(listing.models)}",
        )
    return Check("ok", "LLM", f"{listing.url} answers in {took:.2f}s and has {model}")


async def _check_local(local: LocalSettings) -> list[Check]:
    from adapters.llm.probe import load_local_model
    from core.errors import BackendUnavailable

    reason = local_backend_available()
    try:
        table = local.model_table()
    except ConfigError as exc:
        return [Check("FAIL", "LLM", str(exc), f"correct {exc.variable}")]
    models: list[tuple[str, Path]] = []
    if local.model_path is not None:
        models.append(("LOCAL_MODEL_PATH", local.model_path.expanduser()))
    models.extend(("LOCAL_MODELS", path) for path in table.values())
    if not models:
        bundled = default_model_path()
        if bundled is None:
            fail = Check(
                "FAIL",
                "LLM",
                "no language model is configured (no OpenAI-compatible server, no local model)",
                "set OPENAI_BASE_URL (or OPENAI_API_KEY), or LOCAL_MODEL_PATH to a .gguf file",
            )
            return [fail, *_projector_unloaded(local)]
        models.append(("the bundled model", bundled))
    variable, path = models[0]  # the default model: the projector is made for it
    projector = _check_projector_file(local, path)
    if reason is not None:
        fail = Check(
            "FAIL",
            "LLM",
            f"the local backend cannot run: {reason}",
            "install it, or configure an OpenAI-compatible server (OPENAI_BASE_URL)",
        )
        return [fail, *_projector_unloaded(local, projector)]
    for other, other_path in models:
        if not other_path.is_file():
            fail = Check("FAIL", "LLM", f"{other}: no file at {other_path}", f"correct {other}")
            return [fail, *_projector_unloaded(local, projector)]
    mmproj = local.mmproj_path.expanduser() if local.mmproj_path and not projector else None
    try:
        loaded = await load_local_model(path, gpu_layers=local.gpu_layers, mmproj=mmproj)
    except BackendUnavailable as exc:
        fail = Check("FAIL", "LLM", str(exc), f"point {variable} at a GGUF model file")
        return [fail, *_projector_unloaded(local, projector)]
    checks = [Check("ok", "LLM", f"local model {path.name} loads ({loaded.seconds:.1f}s)")]
    if projector is not None:
        return [*checks, projector]
    if mmproj is None:
        return [*checks, *_projector_unloaded(local)]
    if loaded.projector_problem is not None:
        fix = (
            f"point LOCAL_MMPROJ_PATH at the mmproj file made for {path.name}, or {variable} "
            "at the model this projector was made for"
        )
        return [*checks, Check("FAIL", PROJECTOR, loaded.projector_problem, fix)]
    took = loaded.projector_seconds or 0.0
    return [
        *checks,
        Check(
            "ok",
            PROJECTOR,
            f"LOCAL_MMPROJ_PATH {mmproj.name} loads with {path.name} ({took:.1f}s): the local "
            "model sees photos",
        ),
    ]


PROJECTOR: Final = "projector"
"""The name of the local backend's vision projector check (``LOCAL_MMPROJ_PATH``)."""


def _check_projector_file(local: LocalSettings, model: Path) -> Check | None:
    """The FAIL line of a ``LOCAL_MMPROJ_PATH`` that cannot serve, else ``None``.

    It cannot when this build lacks mtmd or the file is not a vision projector; ``None`` when
    it is unset or passes (loading it with the model comes next).
    """
    if local.mmproj_path is None:
        return None
    from adapters.llm.local_gguf import GGUFError, check_projector
    from adapters.llm.local_vision import mtmd_available

    reason = mtmd_available()
    if reason is not None:
        cause = reason.split(";", 1)[0]
        return Check(
            "FAIL",
            PROJECTOR,
            f"LOCAL_MMPROJ_PATH is set, but photos cannot be shown to the model: {cause}",
            "rebuild llama-cpp-python with its multimodal library (`make install-local`), "
            "or unset LOCAL_MMPROJ_PATH",
        )
    try:
        check_projector(local.mmproj_path.expanduser())
    except GGUFError as exc:
        _log.debug("projector check failed", exc_info=True)
        return Check(
            "FAIL",
            PROJECTOR,
            f"LOCAL_MMPROJ_PATH: {exc}",
            f"point LOCAL_MMPROJ_PATH at the mmproj GGUF made for {model.name}",
        )
    return None


def _projector_unloaded(local: LocalSettings, failed: Check | None = None) -> list[Check]:
    """The projector's line when the model was not loaded (or has no projector)."""
    if failed is not None:
        return [failed]
    if local.mmproj_path is None:
        return [
            Check(
                "skip",
                PROJECTOR,
                "not configured (LOCAL_MMPROJ_PATH is unset): the local model does not see photos",
            )
        ]
    return [
        Check(
            "skip",
            PROJECTOR,
            f"LOCAL_MMPROJ_PATH {local.mmproj_path.name} is a vision projector; not loaded: fix "
            "the LLM line first",
        )
    ]


# --- speech to text -----------------------------------------------------------------------


async def _check_stt(stt: Any, openai: Any, limit: float) -> Check:
    from adapters.llm.probe import has_model, is_loopback_url, list_stt_models
    from adapters.llm.stt import stt_configured
    from core.errors import BackendUnavailable

    what = "speech to text"
    if not stt_configured(stt, openai):
        return Check(
            "skip",
            what,
            "not configured: voice notes get a sentence saying so; set STT_BASE_URL to a "
            "whisper server (or OPENAI_API_KEY, for OpenAI's) to transcribe them",
        )
    started = time.perf_counter()
    try:
        listing = await list_stt_models(stt, openai, limit=limit)
    except ConfigError as exc:
        fix = "set STT_API_KEY to a key the speech-to-text server accepts"
        if stt.api_key is None and openai.api_key is not None:
            fix += " (STT_API_KEY is unset, so OPENAI_API_KEY was sent)"
        return Check("FAIL", what, str(exc), fix)
    except BackendUnavailable as exc:
        fix = "start the speech-to-text server, or correct STT_BASE_URL"
        if stt.base_url and is_loopback_url(stt.base_url) and in_container():
            fix = STT_CONTAINER_HINT
        return Check("FAIL", what, str(exc), fix)
    except ChinwagError as exc:
        return Check("FAIL", what, str(exc), "check STT_BASE_URL and the server's log")
    took = time.perf_counter() - started
    if not listing.models:
        return Check(
            "ok",
            what,
            f"{listing.url} reachable in {took:.2f}s; model list not offered, so STT_MODEL "
            f"{stt.model} is tried with the first voice note",
        )
    if not has_model(listing.models, stt.model):
        return Check(
            "FAIL",
            what,
            f"{listing.url} has no model {stt.model!r} (STT_MODEL); it has "
            f"{_listed(listing.models)}",
            "set STT_MODEL to its speech-to-text model (or install that model on the server)",
        )
    return Check("ok", what, f"{listing.url} answers in {took:.2f}s and has {stt.model}")


# --- chat platforms -----------------------------------------------------------------------


async def _check_telegram(telegram: TelegramSettings, limit: float) -> list[Check]:
    if telegram.bot_token is None:
        return [Check("skip", "Telegram", "not configured (TELEGRAM_BOT_TOKEN is unset)")]
    from adapters.telegram.probe import probe_telegram

    try:
        status = await probe_telegram(telegram, limit=limit)
    except ConfigError as exc:
        return [Check("FAIL", "Telegram", str(exc), "set TELEGRAM_BOT_TOKEN to the bot's token")]
    except ChinwagError as exc:
        return [
            Check(
                "FAIL",
                "Telegram",
                str(exc),
                "check the network (or TELEGRAM_API_BASE_URL) and try again",
            )
        ]
    checks = [Check("ok", "Telegram", f"token valid: @{status.username}")]
    if not telegram.webhook_mode:
        if status.webhook_url:
            checks.append(
                Check(
                    "warn",
                    "Telegram",
                    f"a webhook is set ({status.webhook_url}) while chinwag is configured for "
                    "polling: it blocks polling (getUpdates answers 409 Conflict)",
                    "`chinwag run` deletes it when it starts polling; if another deployment "
                    "uses it, stop that one first, or set TELEGRAM_WEBHOOK_URL to serve by "
                    "webhook",
                )
            )
        else:
            checks.append(Check("ok", "Telegram", "no webhook set; chinwag polls"))
        return checks
    recent = status.last_error_at is not None and status.last_error_at > datetime.now(
        UTC
    ) - timedelta(hours=1)
    if status.last_error and recent:
        assert status.last_error_at is not None
        checks.append(
            Check(
                "warn",
                "Telegram",
                f"the last webhook delivery failed at {status.last_error_at:%Y-%m-%d %H:%M} "
                f"UTC: {status.last_error} ({status.pending_updates} updates waiting)",
                "make TELEGRAM_WEBHOOK_URL reach TELEGRAM_WEBHOOK_LISTEN (proxy, TLS, "
                "firewall) and keep `chinwag run` running",
            )
        )
    elif status.webhook_url != telegram.webhook_url:
        shown = status.webhook_url or "none"
        checks.append(
            Check("ok", "Telegram", f"webhook now {shown}; `chinwag run` sets it at start")
        )
    else:
        checks.append(Check("ok", "Telegram", "webhook set to TELEGRAM_WEBHOOK_URL"))
    return checks


async def _check_discord(discord: DiscordSettings, limit: float) -> list[Check]:
    if discord.bot_token is None:
        return [Check("skip", "Discord", "not configured (DISCORD_BOT_TOKEN is unset)")]
    from adapters.discord.probe import probe_discord

    try:
        status = await probe_discord(discord, limit=limit)
    except ConfigError as exc:
        return [Check("FAIL", "Discord", str(exc), "set DISCORD_BOT_TOKEN to the bot's token")]
    except ChinwagError as exc:
        return [
            Check(
                "FAIL",
                "Discord",
                str(exc),
                "check the network (or DISCORD_API_BASE_URL) and try again",
            )
        ]
    checks = [Check("ok", "Discord", f"token valid: bot {status.user} ({status.application})")]
    if status.message_content:
        checks.append(Check("ok", "Discord", "the Message Content intent is enabled"))
    else:
        checks.append(
            Check(
                "FAIL",
                "Discord",
                "the Message Content intent is off: Discord would refuse the connection "
                "(close code 4014)",
                "Developer Portal > your application > Bot > Privileged Gateway Intents > "
                "MESSAGE CONTENT INTENT",
            )
        )
    return checks


# --- the report ---------------------------------------------------------------------------


def _single(check: Awaitable[Check]) -> Awaitable[list[Check]]:
    async def wrap() -> list[Check]:
        return [await check]

    return wrap()


async def diagnose(env_file: Path | None, *, limit: float = DEFAULT_TIMEOUT) -> list[Check]:
    """Every check, in report order; the network checks run side by side."""
    from adapters.llm.openai_wire import OpenAISettings
    from adapters.llm.stt import STTSettings

    loaded = _load_all(env_file)
    checks = list(loaded.checks)
    memory = loaded.get(MemorySettings)
    llm, openai, local = (
        loaded.get(LLMSettings),
        loaded.get(OpenAISettings),
        loaded.get(LocalSettings),
    )
    telegram, discord = loaded.get(TelegramSettings), loaded.get(DiscordSettings)
    stt = loaded.get(STTSettings)
    jobs: list[Awaitable[list[Check]]] = [
        _single(_check_database(memory, limit)) if memory else _blocked("database"),
        _check_llm(llm, openai, local, limit) if llm and openai and local else _blocked("LLM"),
        (_single(_check_stt(stt, openai, limit)) if stt and openai else _blocked("speech to text")),
        _check_telegram(telegram, limit) if telegram else _blocked("Telegram"),
        _check_discord(discord, limit) if discord else _blocked("Discord"),
    ]
    for result in await asyncio.gather(*jobs):
        checks.extend(result)
    return checks


async def _blocked(what: str) -> list[Check]:
    return [Check("skip", what, "not checked: fix the configuration above first")]


def _redact(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        if len(secret) >= 6:
            text = text.replace(secret, "***")
    return text


def run_doctor(env_file: Path | None, *, limit: float = DEFAULT_TIMEOUT) -> int:
    """Print doctor's report on stdout; 0 when every check passed, else 1."""
    checks = asyncio.run(diagnose(env_file, limit=limit))
    secrets: list[str] = []
    for cls in settings_classes():
        try:
            secrets.extend(secrets_of(load(cls, env_file)))
        except ConfigError:
            continue
    for check in checks:
        print(_redact(check.line(), secrets))
    failed = [c for c in checks if not c.passed]
    if failed:
        print(f"{len(failed)} of {len(checks)} checks need attention", file=sys.stderr)
        return 1
    return 0


DOCTOR_HELP: Final = (
    "Check the configuration (and variables that look like chinwag's but are not, e.g. "
    "TELEGRAM_TOKEN), the database (reachable, migrations current), the LLM (server reachable "
    "and the model listed at /v1/models, or the local model loads, with its vision projector "
    "LOCAL_MMPROJ_PATH), speech to text (the STT server answers, takes the key and lists "
    "STT_MODEL), Telegram (token, webhook state) and Discord (token, Message Content "
    "intent). One line per check: ok, warn, FAIL or skip (not configured), with what to "
    "do. Exit status 0 only when every check is ok or skipped; a warning counts as a failure."
)


def add_doctor_parser(sub: Any) -> None:
    """Register ``chinwag doctor`` on the CLI's subparsers."""
    parser = sub.add_parser(
        "doctor", help="check the setup, one line per check", description=DOCTOR_HELP
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=f"the longest wait for each server (default: {DEFAULT_TIMEOUT:g})",
    )


def doctor_command(args: argparse.Namespace, env_file: Path | None) -> int:
    """``chinwag doctor``: run the checks and print the report; the exit status."""
    return run_doctor(env_file, limit=args.timeout)


# --- chinwag run --------------------------------------------------------------------------


async def startup_checks(env_file: Path | None, llm: LLMSettings) -> None:
    """The cheap checks ``chinwag run`` makes before it starts anything.

    Unknown variables are logged as warnings. For an OpenAI-compatible backend the model is
    looked up at ``/v1/models`` (:data:`START_TIMEOUT` seconds at most).

    Raises:
        ConfigError: the server refused ``OPENAI_API_KEY``, or does not have ``OPENAI_MODEL``.
            A server that does not answer is logged, not raised: it may start after chinwag
            (compose, systemd), and the backend retries each request.
    """
    for name, source, suggestion in unknown_variables(_variable_sources(env_file)):
        hint = f"; did you mean {suggestion}?" if suggestion else ""
        _log.warning("%s (in %s) is not a chinwag setting%s", name, source, hint)
    from adapters.llm.openai_wire import OpenAISettings

    openai = load(OpenAISettings, env_file)
    if llm.backend == "local" or not _openai_configured(openai):
        return
    from adapters.llm.probe import has_model, list_models, wanted_model

    try:
        listing = await list_models(openai, limit=START_TIMEOUT)
    except ConfigError:
        raise
    except ChinwagError as exc:
        _log.warning("LLM server check: %s; starting anyway", exc)
        return
    model = wanted_model(openai)
    if model is not None and listing.models and not has_model(listing.models, model):
        raise ConfigError(
            "OPENAI_MODEL",
            f"{listing.url} has no model {model!r}; it has {_listed(listing.models)}",
            listing.models[0],
        )
