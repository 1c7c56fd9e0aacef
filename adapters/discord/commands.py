"""The engine's commands as Discord slash commands, registered only when they changed.

Discord rate-limits command creation, so the set is registered at start only when its hash
differs from the one stored per application id in ``<data dir>/discord-commands.json``;
:func:`sync_commands` (``chinwag discord sync``) forces it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import discord
from discord import app_commands

from adapters.discord.connection import bounded, configure_endpoints, intents, login, quiet_voice
from adapters.discord.settings import DiscordSettings
from core.ports import ConversationEngine
from core.types import CommandInfo

__all__ = [
    "COMMANDS_FILE",
    "SlashHandler",
    "build_tree",
    "commands_hash",
    "sync_commands",
    "sync_tree",
]

_log = logging.getLogger(__name__)

COMMANDS_FILE = "discord-commands.json"

SlashHandler = Callable[[discord.Interaction[Any], str, str], Awaitable[None]]


def _command(info: CommandInfo, handler: SlashHandler) -> app_commands.Command[Any, Any, None]:
    """A slash command for one engine command; its argument is one optional string."""
    name = info.name
    description = info.description[:100] or name
    if info.argument is None:

        async def plain(interaction: discord.Interaction[Any]) -> None:
            await handler(interaction, name, "")

        return app_commands.Command(name=name, description=description, callback=plain)

    async def with_argument(
        interaction: discord.Interaction[Any], argument: str | None = None
    ) -> None:
        await handler(interaction, name, argument or "")

    callback: Any = with_argument
    argument = re.sub(r"[^a-z0-9_-]", "_", info.argument.lower())[:32] or "argument"
    if info.choices and len(info.choices) <= 25:
        callback = app_commands.choices(
            argument=[app_commands.Choice(name=c[:100], value=c) for c in info.choices]
        )(callback)
    callback = app_commands.describe(argument=f"{info.argument} (optional)")(callback)
    callback = app_commands.rename(argument=argument)(callback)
    return app_commands.Command(name=name, description=description, callback=callback)


def build_tree(
    client: discord.Client, commands: Sequence[CommandInfo], handler: SlashHandler
) -> app_commands.CommandTree[Any]:
    """A command tree holding one slash command per engine command."""
    tree: app_commands.CommandTree[Any] = app_commands.CommandTree(client)
    for info in commands:
        tree.add_command(_command(info, handler))
    return tree


def commands_hash(tree: app_commands.CommandTree[Any]) -> str:
    """A stable hash of the command payload Discord would receive."""
    payload = sorted(
        (command.to_dict(tree) for command in tree.get_commands()), key=lambda c: str(c["name"])
    )
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _read_hashes(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):
        _log.warning("ignoring unreadable %s; slash commands will be registered again", path)
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def _write_hash(path: Path, application_id: str, digest: str) -> None:
    hashes = _read_hashes(path)
    hashes[application_id] = digest
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(hashes, indent=2, sort_keys=True), encoding="utf-8")
    os.replace(temporary, path)


async def sync_tree(
    tree: app_commands.CommandTree[Any],
    application_id: str,
    data_dir: Path,
    *,
    force: bool,
    limit: float,
) -> bool:
    """Register the commands if forced or changed; return whether Discord was called.

    Raises :class:`~core.errors.AdapterError` when Discord refuses.
    """
    path = data_dir / COMMANDS_FILE
    digest = commands_hash(tree)
    if not force and _read_hashes(path).get(application_id) == digest:
        _log.info("Discord slash commands unchanged; not registering them again")
        return False
    synced = await bounded(tree.sync(), limit, "register slash commands")
    _write_hash(path, application_id, digest)
    _log.info("registered %d Discord slash commands", len(synced))
    return True


async def sync_commands(
    settings: DiscordSettings,
    commands: ConversationEngine | Sequence[CommandInfo],
    data_dir: Path,
) -> int:
    """Register the slash commands now, whatever the stored hash says (``chinwag discord sync``).

    ``commands`` is the engine (its ``commands()`` are used) or the command list. Logs in
    over REST only (no gateway), stores the new hash under ``data_dir`` and returns how many
    commands were registered. Raises :class:`ConfigError` for a missing or rejected token and
    :class:`AdapterError` when Discord refuses.
    """
    infos = commands.commands() if hasattr(commands, "commands") else commands
    configure_endpoints(settings)
    quiet_voice()
    client = discord.Client(intents=intents())

    async def unused(interaction: discord.Interaction[Any], name: str, argument: str) -> None:
        return None

    try:
        await login(client, settings)
        tree = build_tree(client, infos, unused)
        await sync_tree(
            tree,
            str(client.application_id),
            data_dir,
            force=True,
            limit=settings.request_timeout,
        )
        return len(tree.get_commands())
    finally:
        await client.close()
