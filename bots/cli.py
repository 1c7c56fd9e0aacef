"""The ``chinwag`` command line.

``chinwag run`` starts every configured chat adapter (or the console), ``chinwag chat`` the
console chat; ``chinwag doctor`` checks the setup; ``chinwag db`` manages the schema,
``chinwag export`` writes a user's history,
``chinwag audit`` prints the tool calls bots proposed and ``chinwag discord sync``
re-registers Discord's slash commands. ``chinwag ingress`` and ``chinwag worker`` split a bot
over processes (:mod:`bots.scale`, their options in :mod:`bots.scale_cli`); ``chinwag queue``
shows their turn queue. ``--bot`` (or ``CHINWAG_BOT``) picks the bot.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import logging
import os
import re
import sys
import tomllib
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from adapters.discord.settings import DiscordSettings
from adapters.files import private_dir, write_private
from adapters.memory.settings import MemorySettings
from adapters.telegram.settings import TelegramSettings
from bots import audit
from bots.app import Exit, Settings, has_platform_token, serve, stdin_is_terminal
from bots.config import (
    LOG_FILE_NAME,
    BotSettings,
    check_http_listen,
    configure_logging,
    load,
    secrets_of,
)
from bots.doctor import add_doctor_parser, doctor_command, startup_checks
from bots.kb import BadInput, add_kb_parser
from bots.loading import BUNDLED, BotLoadError, load_bot, with_memory_key
from bots.scale_cli import add_scale_parsers
from core.bot import Bot
from core.errors import ChinwagError, ConfigError
from core.export import FORMATS as EXPORT_FORMATS
from core.settings import (
    AccessSettings,
    ChinwagSettings,
    CoreSettings,
    KbSettings,
    LLMSettings,
    MediaSettings,
    ScaleSettings,
    ToolSettings,
)

_log = logging.getLogger("chinwag")

EPILOG = (
    "Settings come from the environment, then from the .env file (see .env.example). "
    "Run `chinwag COMMAND --help` for a command's options."
)
BOT_HELP = (
    f"the bot: a bundled one ({', '.join(BUNDLED)}), a package.module path or a .py file "
    "(default: CHINWAG_BOT, else assistant)"
)


def package_version() -> str:
    """The version of chinwag: the installed distribution's, else ``pyproject.toml``'s.

    A source tree run without installing (``PYTHONPATH=.``) has no distribution metadata;
    its version is read from the ``pyproject.toml`` beside the packages, marked
    ``(source tree)``, and is ``unknown`` when that cannot be read either.
    """
    try:
        return importlib.metadata.version("chinwag")
    except importlib.metadata.PackageNotFoundError:
        pass
    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    try:
        with pyproject.open("rb") as file:
            return f"{tomllib.load(file)['project']['version']} (source tree)"
    except (OSError, KeyError, TypeError, tomllib.TOMLDecodeError):
        return "unknown"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chinwag",
        description="A self-hosted chat bot with memory, for Telegram, Discord and the terminal.",
        epilog=EPILOG,
    )
    parser.add_argument("--version", action="version", version=f"chinwag {package_version()}")
    parser.add_argument(
        "--env-file",
        type=Path,
        default=Path(".env"),
        help="settings file read after the environment (default: ./.env; missing is fine)",
    )
    parser.add_argument("--log-level", help="override LOG_LEVEL (DEBUG, INFO, WARNING, ERROR)")
    parser.add_argument("--bot", metavar="NAME", help=BOT_HELP)
    # `chinwag chat --bot x` works as well as `chinwag --bot x chat`.
    with_bot = argparse.ArgumentParser(add_help=False)
    with_bot.add_argument("--bot", dest="sub_bot", metavar="NAME", help=BOT_HELP)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser(
        "run",
        parents=[with_bot],
        help="start every configured chat adapter",
        description=(
            "Start the Telegram adapter if TELEGRAM_BOT_TOKEN is set and the Discord adapter if "
            "DISCORD_BOT_TOKEN is set, in one process, until SIGINT/SIGTERM. With neither set, "
            "open the console chat when standard input is a terminal, else exit 2. With "
            "REDIS_URL set, flood control, rate limits, /stop and confirmations are shared "
            "with the bot's other processes through Redis."
        ),
    )
    sub.add_parser(
        "chat",
        parents=[with_bot],
        help="chat in the terminal",
        description=(
            "Chat with the bot in this terminal as the console user (your login name). When "
            "standard input is not a terminal, read one message per line and print only the "
            "replies."
        ),
    )
    add_doctor_parser(sub)
    db = sub.add_parser(
        "db",
        help="migrations and backups of the database",
        description="The database's schema (Alembic migrations) and backups.",
    )
    db_sub = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    up = db_sub.add_parser("upgrade", help="apply migrations (default: to head)")
    up.add_argument("revision", nargs="?", default="head")
    down = db_sub.add_parser(
        "downgrade",
        help="revert migrations (default: one step)",
        description=(
            "Revert migrations to REVISION (default: one step back; base: no schema). Refused "
            "when it would delete stored data (the tables and row counts are named) unless "
            "--yes; a SQLite file is backed up next to it first."
        ),
    )
    down.add_argument("revision", nargs="?", default="-1")
    down.add_argument(
        "--yes", action="store_true", help="go ahead even though stored data will be deleted"
    )
    db_sub.add_parser("current", help="print the database's revision")
    backup = db_sub.add_parser(
        "backup",
        help="copy the database to a file, while the bot runs",
        description=(
            "Write a consistent copy of the database while the bot keeps running: SQLite "
            "through its online backup API (restore: copy the file back while the bot is "
            "stopped), PostgreSQL through pg_dump's custom format (restore: pg_restore). "
            "The file is made 0600."
        ),
    )
    backup.add_argument(
        "path",
        nargs="?",
        type=Path,
        help="file to write (default: chinwag-backup-YYYYmmdd-HHMMSS.db or .pgdump in the "
        "data directory, CHINWAG_DATA_DIR)",
    )
    export = sub.add_parser(
        "export",
        parents=[with_bot],
        help="write a user's history",
        description=(
            "Write everything one user has stored with the bot (its memory key: BOT_NAME, "
            "else the bot's own), as /export does for them."
        ),
    )
    export.add_argument("platform", help="telegram, discord or console")
    export.add_argument("user_id", help="the user's id on that platform")
    export.add_argument("--format", choices=EXPORT_FORMATS, default="md")
    export.add_argument(
        "-o",
        "--output",
        type=Path,
        help="file to write (default: stdout); a name ending in .zip writes a ZIP file of "
        "the document and the stored images it links to, any other the document alone "
        "(without the images)",
    )
    add_scale_parsers(sub, with_bot)
    _audit_parser(sub, with_bot)
    add_kb_parser(sub, with_bot)
    discord = sub.add_parser("discord", help="Discord maintenance")
    discord_sub = discord.add_subparsers(dest="discord_command", required=True, metavar="ACTION")
    discord_sub.add_parser(
        "sync", parents=[with_bot], help="register the slash commands with Discord now"
    )
    return parser


def _audit_parser(sub: Any, with_bot: argparse.ArgumentParser) -> None:
    parser = sub.add_parser(
        "audit",
        parents=[with_bot],
        help="print the tool calls bots proposed",
        description=(
            "Print the audit of tool calls, newest first: time, bot, platform, chat, user (or "
            "their pseudonym after /forget), tool, decision, result and duration. All bots "
            "unless --bot is given (then that bot's memory key: BOT_NAME, else its own)."
        ),
    )
    parser.add_argument(
        "--user", type=audit.parse_user, metavar="PLATFORM:ID", help="only this user's calls"
    )
    parser.add_argument(
        "--since",
        type=audit.parse_since,
        metavar="WHEN",
        help="only calls since then: ISO (2025-05-01T08:00, UTC by default) or 30m, 1h, 2d, 1w",
    )
    parser.add_argument(
        "--limit", type=audit.positive, default=50, metavar="N", help="rows (default: 50)"
    )
    parser.add_argument("--format", choices=audit.FORMATS, default="text")


SERVING = ("run", "chat", "discord", "ingress", "worker")
"""The commands that start the bot, its tools with it."""


def _load(env_file: Path | None, bot: Bot, bot_settings: BotSettings, command: str) -> Settings:
    """Every component's settings, for ``bot`` (``BOT_NAME`` defaults to its memory key).

    The tool packs' settings are read only for a command that starts the bot.
    """
    serving = command in SERVING
    telegram = load(TelegramSettings, env_file)
    check_http_listen(bot_settings, telegram)
    return Settings(
        env_file=env_file,
        core=with_memory_key(load(CoreSettings, env_file), bot),
        llm=load(LLMSettings, env_file),
        access=load(AccessSettings, env_file),
        memory=load(MemorySettings, env_file),
        telegram=telegram,
        discord=load(DiscordSettings, env_file),
        tools=load(ToolSettings, env_file),
        bot=bot,
        mcp_config=bot_settings.mcp_config,
        homeassistant=(
            _homeassistant_settings(env_file) if serving and "homeassistant" in bot.packs else None
        ),
        kb=load(KbSettings, env_file),
        media=load(MediaSettings, env_file),
        http_listen=bot_settings.http_listen(),
        scale=load(ScaleSettings, env_file),
    )


def _model_settings(env_file: Path | None) -> list[ChinwagSettings]:
    """The LLM and speech-to-text servers' settings, for their keys to be masked in logs.

    Loaded only for the commands that talk to them: their modules import openai.
    """
    from adapters.llm.openai_wire import OpenAISettings
    from adapters.llm.stt import STTSettings

    return [load(OpenAISettings, env_file), load(STTSettings, env_file)]


def _homeassistant_settings(env_file: Path | None) -> Any:
    try:
        from adapters.homeassistant.settings import HomeAssistantSettings
    except ImportError:
        raise Exit("the Home Assistant tool pack is not part of this installation") from None
    return load(HomeAssistantSettings, env_file)


def _bot(args: argparse.Namespace, bot_settings: BotSettings) -> Bot | None:
    """The bot this command runs, or ``None`` for ``db`` and an ``audit`` of every bot."""
    chosen = getattr(args, "sub_bot", None) or args.bot
    if args.command in ("db", "doctor") or (args.command == "audit" and not chosen):
        return None
    if chosen:
        return load_bot(chosen, origin="--bot")
    return load_bot(bot_settings.chinwag_bot, origin="CHINWAG_BOT")


async def _db(settings: Settings, args: argparse.Namespace) -> None:
    from adapters.memory import migrate

    url = settings.memory.async_url()
    if args.db_command == "upgrade":
        await migrate.upgrade(url, args.revision)
        print(f"database at {await migrate.current(url)}")
    elif args.db_command == "downgrade":
        try:
            copy = await migrate.downgrade(url, args.revision, allow_loss=args.yes)
        except migrate.DataLossRefused as exc:
            raise Exit(
                f"{exc}; back it up (`chinwag db backup`), then add --yes to go ahead", status=1
            ) from None
        if copy is not None:
            print(f"backed up the database to {copy} first")
        print(f"database at {await migrate.current(url) or 'base (empty)'}")
    elif args.db_command == "backup":
        await _db_backup(settings, url, args.path)
    else:
        print(await migrate.current(url) or "base (empty)")


async def _db_backup(settings: Settings, url: str, path: Path | None) -> None:
    from adapters.memory import backup

    if path is None:
        try:
            private_dir(settings.data_dir)  # not made yet when the database is PostgreSQL
        except OSError as exc:
            raise ConfigError(
                "CHINWAG_DATA_DIR",
                f"cannot create the data directory {settings.data_dir}: {exc.strerror}",
                example="/var/lib/chinwag",
            ) from exc
    target = path or backup.default_target(url, settings.data_dir)
    done = await backup.backup(url, target)
    print(f"backed up the database to {done.path} ({_size(done.size)})")


def _size(size: int) -> str:
    """``"512 bytes"``, ``"3.4 MB"``."""
    if size < 1000:
        return f"{size} bytes"
    value, unit = float(size), "bytes"
    for larger in ("kB", "MB", "GB"):
        if value < 1000:
            break
        value, unit = value / 1000, larger
    return f"{value:.1f} {unit}"


async def _export(settings: Settings, args: argparse.Namespace) -> None:
    from bots.app import open_store
    from core.export import export_of

    store = await open_store(settings.memory)
    try:
        export = await export_of(
            store,
            bot=settings.core.bot_name,
            platform=args.platform,
            user_id=args.user_id,
            fmt=args.format,
            now=datetime.now(UTC),
        )
    finally:
        await store.aclose()
    bundled = args.output is not None and args.output.suffix.lower() == ".zip"
    if bundled:
        write_private(args.output, export.zip())
    elif args.output is None:
        sys.stdout.write(export.document())
    else:
        write_private(args.output, export.document().encode())
    count = len(export.images)
    if count and not bundled:
        print(
            f"chinwag: {count} stored image{'' if count == 1 else 's'} left out; "
            "use -o FILE.zip to write them with the document",
            file=sys.stderr,
        )
    if args.output is not None:
        print(f"wrote {args.output}", file=sys.stderr)


async def _audit(settings: Settings, args: argparse.Namespace, *, every_bot: bool) -> None:
    from bots.app import open_store

    platform, user_id = args.user if args.user is not None else (None, None)
    store = await open_store(settings.memory)
    try:
        entries = await store.audit_entries(
            bot=None if every_bot else settings.core.bot_name,
            platform=platform,
            user_id=user_id,
            since=args.since,
            limit=args.limit,
        )
    finally:
        await store.aclose()
    if args.format == "json":
        print(audit.as_json(entries))
    elif entries:
        print("\n".join(audit.text_lines(entries)))
    else:
        print(
            "no tool calls recorded" + (" that match" if args.user or args.since else ""),
            file=sys.stderr,
        )


async def _discord_sync(settings: Settings) -> None:
    from adapters.discord.adapter import sync_commands
    from bots.app import running_engine

    discord = settings.discord
    if discord.bot_token is None:
        raise ConfigError("DISCORD_BOT_TOKEN", "is not set", example="MTA1...")
    async with running_engine(settings) as engine:
        count = await sync_commands(discord, engine, data_dir=settings.data_dir)
    print(f"registered {count} slash commands with Discord")


async def _kb(settings: Settings, args: argparse.Namespace) -> None:
    from adapters.llm.openai_wire import OpenAISettings
    from bots.kb import run_kb

    await run_kb(
        args,
        bot=settings.core.bot_name,
        memory=settings.memory,
        kb=settings.kb,
        openai=load(OpenAISettings, settings.env_file),
    )


def _mode(command: str, settings: Settings) -> str:
    """``ingress``/``worker`` for those commands and for ``run`` with ``CHINWAG_MODE`` set."""
    if command in ("ingress", "worker"):
        return command
    return settings.scale.mode if command == "run" else command


def with_cause(exc: BaseException) -> str:
    """``exc``'s message, and the error at the bottom of its chain when it does not say it.

    ``"... failed (cause: UndefinedTableError: relation "messages" does not exist)"``: the
    operator sees what went wrong without rerunning at ``--log-level DEBUG``. Only the first
    line of the cause is kept (SQLAlchemy appends the SQL statement and its parameters).
    """
    message = str(exc)
    inner, seen = exc, 0
    while inner.__cause__ is not None and seen < 8:
        inner, seen = inner.__cause__, seen + 1
    if inner is exc:
        return message
    lines = str(inner).strip().splitlines()
    text = re.sub(r"^<class '[\w.]+'>:\s*", "", lines[0]) if lines else ""
    name = type(inner).__name__
    if name in message or (text and text in message):
        return message
    return f"{message} (cause: {name}: {text})" if text else f"{message} (cause: {name})"


def redact(text: str, secrets: Sequence[str]) -> str:
    """``text`` with every known secret (tokens, URL passwords) replaced by ``***``."""
    for secret in secrets:
        if len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``chinwag`` console script; returns the exit status."""
    args = _parser().parse_args(argv)
    # python-telegram-bot 22: durations as timedelta (its future default; avoids a warning).
    os.environ.setdefault("PTB_TIMEDELTA", "true")
    env_file = args.env_file if args.env_file and args.env_file.exists() else None
    if args.command == "doctor":
        # Doctor reports a malformed setting as one of its lines; it loads settings itself.
        configure_logging(args.log_level or "ERROR", [])
        return doctor_command(args, env_file)
    secrets: list[str] = []
    try:
        root = load(BotSettings, env_file)
        level = args.log_level or root.log_level
        # The terminal chat's screen is for the conversation: until its log file is known,
        # only warnings reach standard error.
        configure_logging("WARNING" if args.command == "chat" else level, [], fmt=root.log_format)
        bot = _bot(args, root)
        settings = _load(env_file, bot or load_bot(None), root, args.command)
        components: list[ChinwagSettings] = [
            settings.core,
            settings.llm,
            settings.access,
            settings.memory,
            settings.telegram,
            settings.discord,
            settings.scale,  # REDIS_URL may hold a password
        ]
        if settings.homeassistant is not None:
            components.append(settings.homeassistant)
        if args.command in SERVING or args.command == "kb":
            components.extend(_model_settings(env_file))
        secrets = secrets_of(*components)
        console = args.command == "chat" or (
            args.command == "run"
            and settings.scale.mode == "run"
            and not has_platform_token(settings)
        )
        if args.command == "run" and console and not stdin_is_terminal():
            raise Exit(
                "No chat platform is configured: set TELEGRAM_BOT_TOKEN or "
                "DISCORD_BOT_TOKEN in .env (or use `chinwag chat` for the terminal)."
            )
        log_file = configure_logging(
            level,
            secrets,
            fmt=root.log_format,
            log_file=settings.data_dir / LOG_FILE_NAME if console else None,
        )
        if log_file is not None and stdin_is_terminal():
            print(f"chinwag: logging to {log_file}", file=sys.stderr)
        mode = _mode(args.command, settings)
        if mode == "ingress":
            from bots.scale import serve_ingress

            asyncio.run(serve_ingress(settings))
        elif mode == "worker":
            from bots.scale import serve_worker

            asyncio.run(startup_checks(env_file, settings.llm))
            asyncio.run(serve_worker(settings))
        elif args.command == "queue":
            from bots.scale import queue_command

            asyncio.run(
                queue_command(
                    settings, args.queue_command, getattr(args, "job_id", None), args.json
                )
            )
        elif args.command == "run":
            asyncio.run(startup_checks(env_file, settings.llm))
            asyncio.run(serve(settings, console=console))
        elif args.command == "chat":
            asyncio.run(serve(settings, console=True))
        elif args.command == "db":
            asyncio.run(_db(settings, args))
        elif args.command == "export":
            asyncio.run(_export(settings, args))
        elif args.command == "audit":
            asyncio.run(_audit(settings, args, every_bot=bot is None))
        elif args.command == "discord":
            asyncio.run(_discord_sync(settings))
        elif args.command == "kb":
            asyncio.run(_kb(settings, args))
    except ConfigError as exc:
        print(f"chinwag: configuration error: {exc}", file=sys.stderr)
        return 2
    except (BotLoadError, BadInput) as exc:
        print(f"chinwag: {exc}", file=sys.stderr)
        return 2
    except Exit as exc:
        print(f"chinwag: {exc}", file=sys.stderr)
        return exc.status
    except ChinwagError as exc:
        _log.debug("fatal error", exc_info=True)
        print(f"chinwag: {redact(with_cause(exc), secrets)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
