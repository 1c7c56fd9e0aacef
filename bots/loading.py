"""Finding the bot to run: ``--bot NAME`` / ``CHINWAG_BOT``.

``NAME`` is a bundled bot (``assistant``, the default, ``home``, ``example``), a module path
(``mypackage.mybot``, importable from the current directory) or a ``.py`` file. The module
must have a ``bot`` attribute: a :class:`~core.bot.Bot`, or a function without arguments that
returns one. Anything else is a :class:`BotLoadError` with one line saying what is wrong.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import logging
import os
import re
import sys
from pathlib import Path
from types import ModuleType

from core.bot import Bot
from core.settings import CoreSettings

_log = logging.getLogger(__name__)

BUNDLED = ("assistant", "home", "example")
"""The bots that ship with chinwag (modules of this package)."""

DEFAULT_BOT = "assistant"

_MODULE_PATH = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


class BotLoadError(Exception):
    """``--bot`` names no usable bot; the message is one line for the user."""


def load_bot(name: str | None, *, origin: str = "--bot") -> Bot:
    """The bot ``name`` names (the bundled ``assistant`` when ``None`` or empty).

    Args:
        name: a bundled bot's name, a ``package.module`` path or a ``.py`` file's path.
        origin: where ``name`` came from (``--bot`` or ``CHINWAG_BOT``), for the message.

    Raises:
        BotLoadError: no such bot, file or module; importing it failed; it has no ``bot`` or
            its ``bot`` is not a :class:`Bot`.
    """
    name = (name or "").strip() or DEFAULT_BOT
    where = f"{origin} {name}" if origin.startswith("-") else f"{origin}={name}"
    if name.endswith(".py") or "/" in name or os.sep in name:
        module = _import_file(Path(name).expanduser(), where)
    elif name in BUNDLED:
        module = _import(f"bots.{name}", where)
    elif _MODULE_PATH.match(name):
        if os.getcwd() not in sys.path and "" not in sys.path:
            sys.path.append(os.getcwd())
        module = _import(name, where)
    else:
        raise BotLoadError(
            f"{where}: not a bundled bot ({', '.join(BUNDLED)}), a module path "
            "(package.module) or a .py file"
        )
    return _bot_of(module, where)


def _import(module_name: str, where: str) -> ModuleType:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if module_name == missing or module_name.startswith(f"{missing}."):
            raise BotLoadError(
                f"{where}: no module named {module_name!r} (bundled bots: {', '.join(BUNDLED)})"
            ) from None
        raise BotLoadError(_failed(where, exc)) from None
    except Exception as exc:
        raise BotLoadError(_failed(where, exc)) from None


def _import_file(path: Path, where: str) -> ModuleType:
    if not path.is_file():
        raise BotLoadError(f"{where}: no such file")
    resolved = path.resolve()
    digest = hashlib.sha256(str(resolved).encode()).hexdigest()[:8]
    stem = re.sub(r"\W", "_", resolved.stem)
    module_name = f"chinwag_bot_{stem}_{digest}"
    spec = importlib.util.spec_from_file_location(module_name, resolved)
    if spec is None or spec.loader is None:
        raise BotLoadError(f"{where}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    # The bot's own helper modules next to it can be imported; registered before it runs so
    # that dataclasses and pydantic find the module by name.
    if str(resolved.parent) not in sys.path:
        sys.path.append(str(resolved.parent))
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[module_name]
        raise BotLoadError(_failed(where, exc)) from None
    return module


def _failed(where: str, exc: BaseException) -> str:
    _log.debug("loading %s failed", where, exc_info=exc)
    lines = str(exc).strip().splitlines()
    detail = f": {lines[0]}" if lines else ""
    return f"{where}: importing it failed: {type(exc).__name__}{detail}"


def _bot_of(module: ModuleType, where: str) -> Bot:
    found = getattr(module, "bot", None)
    if found is None:
        raise BotLoadError(f"{where}: the module has no `bot` (a chinwag Bot)")
    if isinstance(found, Bot):
        return found
    if callable(found) and not isinstance(found, type):
        try:
            found = found()
        except Exception as exc:
            _log.debug("%s: bot() failed", where, exc_info=exc)
            first = (str(exc).strip().splitlines() or [""])[0]
            raise BotLoadError(f"{where}: bot() failed: {type(exc).__name__}: {first}") from None
        if isinstance(found, Bot):
            return found
        raise BotLoadError(f"{where}: bot() must return a Bot, not {type(found).__name__}")
    raise BotLoadError(f"{where}: `bot` must be a Bot, not {type(found).__name__}")


def with_memory_key(core: CoreSettings, bot: Bot) -> CoreSettings:
    """``core`` with the bot's memory key as ``BOT_NAME`` unless ``BOT_NAME`` was set.

    ``BOT_NAME`` (environment or ``.env``) always wins; else the bundled ``assistant`` keeps
    ``chinwag`` and every other bot uses its :attr:`~core.bot.Bot.store_key`.
    """
    if "bot_name" in core.model_fields_set:
        return core
    return core.model_copy(update={"bot_name": bot.store_key})


def persona_of(core: CoreSettings, bot: Bot) -> str | None:
    """The default system prompt: ``SYSTEM_PROMPT`` when it was set, else the bot's persona.

    ``None`` leaves the built-in default (``SYSTEM_PROMPT``'s default value).
    """
    if "system_prompt" in core.model_fields_set:
        return core.system_prompt
    return bot.persona
