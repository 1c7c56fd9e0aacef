"""Commands: how a message is read as one, the registry, and the commands the bot answers.

:func:`parse_command` is the one place a command is recognised: leading whitespace, a
``/cmd@botname`` suffix, any case and a newline right after the name are all handled there.
Every command is registered explicitly in a :class:`CommandRegistry` with its help text, its
argument, whether only admins may use it, and whether it bypasses the conversation's lane
(``/stop`` must reach the reply it stops, not wait behind it). :class:`BuiltinCommands`
holds the commands every chinwag bot answers and registers them.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from core.admission import Admission
from core.confirmations import Confirmations, Pending
from core.export import FORMATS as EXPORT_FORMATS
from core.export import UPLOAD_LIMITS, Export, export_of
from core.knowledge import KnowledgeStore
from core.media import describe
from core.notices import notify
from core.ports import LLMBackend, MemoryStore, ReplyChannel
from core.prompt import HistoryCache, PromptBuilder
from core.queue import StopSignal
from core.reply import Replier
from core.sessions import Sessions
from core.settings import DEFAULT_SYSTEM_PROMPT, AccessSettings, CoreSettings
from core.types import CommandInfo, ConversationKey, IncomingMessage, Preferences

_log = logging.getLogger(__name__)


async def _no_note(key: ConversationKey, msg: IncomingMessage) -> str | None:
    return None


Handler = Callable[[ConversationKey, IncomingMessage, ReplyChannel, str], Awaitable[None]]
"""``handler(key, msg, out, argument)``: answer one command through ``out``."""


def parse_command(text: str) -> tuple[str, str] | None:
    """``" /Model@mybot  gpt-4o "`` -> ``("model", "gpt-4o")``; ``None`` if not a command.

    The name is lower-cased and ends at the first whitespace (a newline too); the argument
    is the rest, stripped, with its inner lines kept.
    """
    text = text.lstrip()
    if len(text) < 2 or text[0] != "/" or text[1].isspace():
        return None
    head, *rest = text[1:].split(None, 1)
    name = head.partition("@")[0].lower()
    if not name or not name.replace("_", "").isalnum():
        return None
    return name, rest[0].strip() if rest else ""


@dataclass(frozen=True, slots=True)
class Command:
    """A registered command: what adapters list (``info``) and what answers it."""

    info: CommandInfo
    handler: Handler
    bypasses_lane: bool = False
    choices: Callable[[], Sequence[str]] | None = None


class CommandRegistry:
    """The commands a bot answers, in the order they are listed in menus and ``/help``."""

    def __init__(self) -> None:
        self._commands: dict[str, Command] = {}

    def register(
        self,
        name: str,
        description: str,
        handler: Handler,
        *,
        argument: str | None = None,
        admin_only: bool = False,
        bypasses_lane: bool = False,
        choices: Callable[[], Sequence[str]] | None = None,
    ) -> None:
        """Add ``/name``.

        Args:
            name: lower-case letters, digits and ``_``, as users type it after ``/``.
            description: one line for menus and ``/help``.
            handler: answers the command.
            argument: the argument's name in menus (``"text"`` for ``/system <text>``).
            admin_only: only ``ADMIN_USERS`` may use it (hidden from others' ``/help``).
            bypasses_lane: run at once instead of after the conversation's queued messages.
            choices: the argument's allowed values, read whenever commands are listed.

        Raises:
            ValueError: if the name is taken or not a valid command name.
        """
        if name in self._commands:
            raise ValueError(f"the command /{name} is already registered")
        if parse_command(f"/{name}") != (name, ""):
            raise ValueError(f"{name!r} is not a valid command name")
        info = CommandInfo(name, description, argument, admin_only)
        self._commands[name] = Command(info, handler, bypasses_lane, choices)

    def get(self, name: str) -> Command | None:
        """The command registered as ``name``, if any."""
        return self._commands.get(name)

    def infos(self) -> tuple[CommandInfo, ...]:
        """Every command, for adapters to register, with its current choices."""
        return tuple(
            replace(c.info, choices=tuple(c.choices())) if c.choices else c.info
            for c in self._commands.values()
        )

    def help_text(self, *, admin: bool) -> str:
        """The ``/help`` listing; admin-only commands only for admins."""
        lines = [
            f"/{c.info.name} - {c.info.description}"
            for c in self._commands.values()
            if admin or not c.info.admin_only
        ]
        return "Commands:\n" + "\n".join(lines)

    async def dispatch(
        self,
        key: ConversationKey,
        msg: IncomingMessage,
        out: ReplyChannel,
        name: str,
        arg: str,
        *,
        admin: bool,
    ) -> None:
        """Run ``/name arg``; an unknown command or a refused admin command is told."""
        command = self._commands.get(name)
        if command is None:
            await notify(out, f"I don't know the command /{name}. Send /help for the list.")
            return
        if command.info.admin_only and not admin:
            await notify(out, f"/{name} is for the bot's admins only.")
            return
        await command.handler(key, msg, out, arg)


class BuiltinCommands:
    """The commands every chinwag bot answers; :meth:`register` adds them to a registry."""

    def __init__(
        self,
        *,
        backend: LLMBackend,
        store: MemoryStore,
        core: CoreSettings,
        access: AccessSettings,
        admission: Admission,
        sessions: Sessions,
        prompts: PromptBuilder,
        history: HistoryCache,
        replier: Replier,
        confirmations: Confirmations,
        clock: Callable[[], datetime],
        default_prompt: str | None = None,
    ) -> None:
        self._backend = backend
        self.default_prompt = default_prompt or core.system_prompt or DEFAULT_SYSTEM_PROMPT
        # Set by the engine: a line /help adds for a slot (the model can't use tools), and
        # what /reset does first (cancel the old conversation's pending tool calls).
        self.help_note: Callable[[ConversationKey, IncomingMessage], Awaitable[str | None]]
        self.help_note = _no_note
        self.on_reset: Callable[[ConversationKey, ReplyChannel], Awaitable[None]] | None = None
        # Set by the engine with a knowledge base: /forget deletes the user's own documents
        # too (returns how many).
        self.on_forget: Callable[[str, str, str], Awaitable[int]] | None = None
        self.knowledge: KnowledgeStore | None = None  # the user's documents, for /export
        # Set by the engine when the bot runs as several processes: /stop reaches the
        # process that writes the reply.
        self.stop_signal: StopSignal | None = None
        self._store = store
        self._core = core
        self._access = access
        self._admission = admission
        self._sessions = sessions
        self._prompts = prompts
        self._history = history
        self._replier = replier
        self._confirmations = confirmations
        self._clock = clock
        self._registry: CommandRegistry | None = None

    @property
    def _bot_name(self) -> str:
        return self._core.bot_name

    def register(self, registry: CommandRegistry) -> None:
        """Add the built-in commands to ``registry``, in the order ``/help`` lists them."""
        self._registry = registry
        add = registry.register
        add("start", "Say hello and show what I can do", self.start)
        add("help", "List the commands", self.help)
        add("reset", "Start a new conversation (persona and model stay)", self.reset)
        add("stop", "Stop the reply being written", self.stop, bypasses_lane=True)
        add(
            "system",
            "Show or set the persona: /system <text> | /system reset",
            self.system,
            argument="text",
        )
        add(
            "model",
            "Show or switch the model: /model <name>",
            self.model,
            argument="name",
            choices=self._backend.models,
        )
        add("history", "How much of this conversation I currently keep in mind", self.history)
        add("usage", "Your token usage today and in total", self.usage)
        add("forget", "Delete everything stored about you", self.forget)
        add("export", "Download your history: /export [md|json]", self.export, argument="format")
        add(
            "stats",
            "Users, conversations, messages and tokens (admins)",
            self.stats,
            admin_only=True,
        )

    def _help_text(self, msg: IncomingMessage) -> str:
        assert self._registry is not None
        return self._registry.help_text(admin=self._admission.is_admin(msg))

    async def start(
        self, key: ConversationKey, msg: IncomingMessage, out: ReplyChannel, arg: str
    ) -> None:
        """``/start``: a greeting and the command list."""
        greeting = (
            f"Hi! I'm {self._bot_name}, an assistant that remembers our conversation. "
            "Just write to me.\n\n"
        )
        await notify(out, greeting + await self._help_with_note(key, msg))

    async def help(
        self, key: ConversationKey, msg: IncomingMessage, out: ReplyChannel, arg: str
    ) -> None:
        """``/help``: the command list (admin-only commands for admins)."""
        await notify(out, await self._help_with_note(key, msg))

    async def _help_with_note(self, key: ConversationKey, msg: IncomingMessage) -> str:
        text = self._help_text(msg)
        note = await self.help_note(key, msg)
        return f"{text}\n\n{note}" if note else text

    async def reset(
        self, key: ConversationKey, msg: IncomingMessage, out: ReplyChannel, arg: str
    ) -> None:
        """``/reset``: a new conversation; persona and model stay."""
        if self.on_reset is not None:
            await self.on_reset(key, out)
        await self._sessions.new_conversation(key)
        await notify(out, "Started a new conversation. Your persona and model settings stay.")

    async def stop(
        self, key: ConversationKey, msg: IncomingMessage, out: ReplyChannel, arg: str
    ) -> None:
        """``/stop``: end the conversation's reply in progress (bypasses the lane).

        A reply this process is not writing may be another process's: the stop is then
        published to all of them, and the user told whether one stopped.
        """
        stopped = self._replier.stop(key)
        if not stopped and self.stop_signal is not None:
            stopped = await self.stop_signal.publish(key)
        if not stopped:
            await notify(out, "There's no reply in progress to stop.")
            return
        await notify(out, "Stopped.")

    async def system(
        self, key: ConversationKey, msg: IncomingMessage, out: ReplyChannel, arg: str
    ) -> None:
        """``/system [text|reset]``: show, set or reset the persona."""
        prefs = await self._sessions.preferences(key)
        if not arg:
            if prefs.persona:
                await notify(
                    out, f"Current persona:\n{prefs.persona}\n\n/system reset restores the default."
                )
            else:
                await notify(out, f"Default persona:\n{self.default_prompt}")
            return
        if arg.lower() == "reset":
            await self._sessions.save_preferences(key, Preferences(persona=None, model=prefs.model))
            await notify(out, "Persona reset to the default.")
            return
        limit = min(self._access.max_input_chars, 4000)
        if len(arg) > limit:
            await notify(
                out, f"That persona is too long ({len(arg):,} characters; at most {limit:,})."
            )
            return
        await self._sessions.save_preferences(key, Preferences(persona=arg, model=prefs.model))
        await notify(out, "Persona set. It applies from your next message.")

    async def model(
        self, key: ConversationKey, msg: IncomingMessage, out: ReplyChannel, arg: str
    ) -> None:
        """``/model [name]``: list the models or switch this conversation's."""
        prefs = await self._sessions.preferences(key)
        current = self._sessions.model_for(prefs)
        models = list(self._backend.models())
        if not arg:
            listing = "\n".join(
                f"{'* ' if m == current else '  '}{m}"
                + (" (sees images)" if self._backend.supports_images(m) else "")
                for m in models
            )
            await notify(out, f"Models (* = in use):\n{listing}\n\nSwitch with /model <name>.")
            return
        if arg not in models:
            await notify(out, f"Unknown model {arg!r}. Available: {', '.join(models)}.")
            return
        await self._backend.check_model(arg)
        await self._sessions.save_preferences(key, Preferences(persona=prefs.persona, model=arg))
        await notify(out, f"Model set to {arg}.")

    async def history(
        self, key: ConversationKey, msg: IncomingMessage, out: ReplyChannel, arg: str
    ) -> None:
        """``/history``: how much of the conversation the next prompt holds."""
        prefs = await self._sessions.preferences(key)
        model = self._sessions.model_for(prefs)
        conversation_id = await self._sessions.conversation_id(key)
        budget = self._sessions.budget(model).prompt
        prompt = await self._prompts.build(
            conversation_id=conversation_id,
            before_seq=None,
            system_prompt=prefs.persona or self.default_prompt,
            model=model,
            budget=budget,
            shared=key.user_id is None,
        )
        note = "" if prompt.complete else " Older messages are stored but no longer fit."
        files = "".join(f"\n- {describe(a)}" for a in prompt.attachments)
        await notify(
            out,
            f"In context: {prompt.turns} message(s), {prompt.tokens:,} of {budget:,} tokens "
            f"(model {model}).{note}" + (f"\nAttachments:{files}" if files else ""),
        )

    async def usage(
        self, key: ConversationKey, msg: IncomingMessage, out: ReplyChannel, arg: str
    ) -> None:
        """``/usage``: the user's tokens today and in total, and the quota left."""
        now = self._clock()
        usage = await self._store.get_usage(self._bot_name, msg.platform, msg.user_id, now.date())
        quota = self._access.daily_token_quota
        lines = [
            f"Tokens today: {usage.tokens_today:,}",
            f"Tokens in total: {usage.tokens_total:,}",
        ]
        if self._admission.is_admin(msg):
            lines.append("Daily quota: none (admin)")
        elif quota:
            left = max(quota - usage.tokens_today, 0)
            lines.append(f"Daily quota: {quota:,} ({left:,} left, resets at 00:00 UTC)")
        else:
            lines.append("Daily quota: none")
        await notify(out, "\n".join(lines))

    async def forget(
        self, key: ConversationKey, msg: IncomingMessage, out: ReplyChannel, arg: str
    ) -> None:
        """``/forget``: ask to confirm; :meth:`confirmed` deletes on a yes."""
        await self._confirmations.ask(
            out,
            "forget",
            msg.platform,
            msg.user_id,
            "Delete everything I have stored about you: your messages, conversations"
            f"{', documents' if self.on_forget else ''} and settings? This cannot be undone. "
            "(Usage counters are kept without your id, so quotas still apply.)",
        )

    async def confirmed(self, pending: Pending, out: ReplyChannel) -> None:
        """Carry out a confirmation the user accepted."""
        if pending.kind == "forget":
            await self._forget(pending.platform, pending.user_id, out)

    async def _forget(self, platform: str, user_id: str, out: ReplyChannel) -> None:
        deleted = await self._store.forget_user(self._bot_name, platform, user_id)
        documents = ""
        if self.on_forget is not None:
            count = await self.on_forget(self._bot_name, platform, user_id)
            if count:  # only worth saying when there were some
                documents = f", {count} document{'' if count == 1 else 's'}"
        # Forgetting is rare; dropping the caches whole also covers shared conversations.
        self._sessions.clear()
        self._history.clear()
        _log.info("forgot a %s user on request (%d messages deleted)", platform, deleted)
        await notify(
            out, f"Done: I deleted everything stored about you ({deleted} messages{documents})."
        )

    async def export(
        self, key: ConversationKey, msg: IncomingMessage, out: ReplyChannel, arg: str
    ) -> None:
        """``/export [md|json]``: send the user's history as a file."""
        fmt = (arg or "md").lower().lstrip(".")
        if fmt == "markdown":
            fmt = "md"
        if fmt not in EXPORT_FORMATS:
            await notify(out, "Choose a format: /export md (the default) or /export json.")
            return
        export = await self.export_of(msg.platform, msg.user_id, fmt)
        name = f"{self._bot_name}-history-{self._clock().strftime('%Y%m%d-%H%M%S')}"
        caption = "Your history with me."
        if export.images:
            count = len(export.images)
            images = f"{count} image{'' if count == 1 else 's'}"
            bundle = export.zip()
            limit = UPLOAD_LIMITS.get(msg.platform)
            if limit is None or len(bundle) <= limit:
                await out.send_file(
                    f"{name}.zip", bundle, f"Your history with me and its {images}."
                )
                return
            # One file or none: a split export's document would link to files in other
            # archives. The operator's `chinwag export -o FILE.zip` has no limit.
            _log.info("export with %d images is %d bytes: sent without them", count, len(bundle))
            caption = (
                f"Your history with me, without its {images}: together they are too large to "
                f"attach here ({len(bundle) / 1e6:.1f} MB, the limit is {limit / 1e6:.0f} MB), "
                "but the operator can export them with `chinwag export ... -o FILE.zip`."
            )
        await out.send_file(f"{name}.{fmt}", export.document().encode("utf-8"), caption)

    async def export_of(self, platform: str, user_id: str, fmt: str) -> Export:
        """Everything stored for the user (``/export``), images included."""
        return await export_of(
            self._store,
            bot=self._bot_name,
            platform=platform,
            user_id=user_id,
            fmt=fmt,
            now=self._clock(),
            knowledge=self.knowledge,
        )

    async def export_document(self, platform: str, user_id: str, fmt: str) -> str:
        """The user's stored history as a Markdown or JSON document (without images)."""
        return (await self.export_of(platform, user_id, fmt)).document()

    async def stats(
        self, key: ConversationKey, msg: IncomingMessage, out: ReplyChannel, arg: str
    ) -> None:
        """``/stats`` (admins): users, conversations, messages and tokens per platform."""
        now = self._clock()
        rows = await self._store.stats(self._bot_name, now.date())
        if not rows:
            await notify(out, "No activity recorded yet.")
            return
        lines = [f"Stats for {self._bot_name} (today = {now.date().isoformat()} UTC):"]
        for r in rows:
            lines.append(
                f"{r.platform}: users {r.users_today:,} today / {r.users_total:,} total; "
                f"conversations {r.conversations_today:,} / {r.conversations_total:,}; "
                f"messages {r.messages_today:,} / {r.messages_total:,}; "
                f"tokens {r.tokens_today:,} / {r.tokens_total:,}"
            )
        await notify(out, "\n".join(lines))


__all__ = ["BuiltinCommands", "Command", "CommandRegistry", "Handler", "parse_command"]
