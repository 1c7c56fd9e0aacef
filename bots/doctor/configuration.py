"""Doctor's configuration checks.

Every settings group loads; variables that look like chinwag's but are none of its settings
get a warning, with a "did you mean".
"""

from __future__ import annotations

import difflib
import importlib
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from bots.config import load
from bots.doctor.check import Check
from core.errors import ConfigError
from core.settings import ChinwagSettings

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
        "CHINWAG_TEST_REDIS_URL",
        "CHINWAG_TEST_REQUIRE",
        "CHINWAG_TEST_PYTHON",
        "CHINWAG_CONTAINER_CACHE",
        "CHINWAG_LLAMA_CMAKE_ARGS",
    }
)
"""Variables of chinwag's own tooling (compose, the test suite) that the program never reads."""


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


def variable_sources(env_file: Path | None) -> dict[str, Mapping[str, Any]]:
    """The environment's variables, and the ``.env`` file's when there is one."""
    sources: dict[str, Mapping[str, Any]] = {"environment": os.environ}
    if env_file is not None:
        from dotenv import dotenv_values

        sources[str(env_file)] = dotenv_values(env_file)
    return sources


def _unknown_checks(env_file: Path | None) -> list[Check]:
    checks = []
    for name, source, suggestion in unknown_variables(variable_sources(env_file)):
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


def load_all(env_file: Path | None) -> _Loaded:
    """Every settings group, and the configuration lines loading them produced."""
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
