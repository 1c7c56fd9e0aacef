"""Doctor's report and ``chinwag doctor``'s command line.

Every check in order (the network checks side by side), the printed lines with secrets
masked, the exit status, and the ``doctor`` subcommand's registration.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, Final

from adapters.discord.settings import DiscordSettings
from adapters.llm.local_settings import LocalSettings
from adapters.memory.settings import MemorySettings
from adapters.telegram.settings import TelegramSettings
from bots.config import load, secrets_of
from bots.doctor.check import Check
from bots.doctor.configuration import load_all, settings_classes
from bots.doctor.database import check_database
from bots.doctor.llm import check_llm, check_stt
from bots.doctor.platforms import check_discord, check_telegram
from bots.doctor.shared_state import check_redis
from core.errors import ConfigError
from core.settings import LLMSettings, ScaleSettings

DEFAULT_TIMEOUT: Final = 10.0


def _single(check: Awaitable[Check]) -> Awaitable[list[Check]]:
    async def wrap() -> list[Check]:
        return [await check]

    return wrap()


async def diagnose(env_file: Path | None, *, limit: float = DEFAULT_TIMEOUT) -> list[Check]:
    """Every check, in report order; the network checks run side by side."""
    from adapters.llm.openai_wire import OpenAISettings
    from adapters.llm.stt import STTSettings

    loaded = load_all(env_file)
    checks = list(loaded.checks)
    memory = loaded.get(MemorySettings)
    llm, openai, local = (
        loaded.get(LLMSettings),
        loaded.get(OpenAISettings),
        loaded.get(LocalSettings),
    )
    telegram, discord = loaded.get(TelegramSettings), loaded.get(DiscordSettings)
    stt = loaded.get(STTSettings)
    scale = loaded.get(ScaleSettings)
    jobs: list[Awaitable[list[Check]]] = [
        _single(check_database(memory, limit)) if memory else _blocked("database"),
        check_llm(llm, openai, local, limit) if llm and openai and local else _blocked("LLM"),
        (_single(check_stt(stt, openai, limit)) if stt and openai else _blocked("speech to text")),
        check_telegram(telegram, limit) if telegram else _blocked("Telegram"),
        check_discord(discord, limit) if discord else _blocked("Discord"),
        check_redis(scale, limit) if scale else _blocked("Redis"),
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
