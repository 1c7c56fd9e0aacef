"""Tools the model may call: what one is, how risky it is, and where tools come from.

A tool is an ordinary typed Python function (sync or async) with a docstring, wrapped by
:func:`tool`: its JSON schema comes from the type hints (pydantic), its description from the
docstring, and it declares a :class:`Risk`. Tool packs (Home Assistant, MCP servers) build
:class:`Tool` objects of their own; every tool reaches the engine through a
:class:`ToolSource` and a :class:`Toolbox`.

Nothing here decides whether a call may run: that is the safety gate's job
(:mod:`core.gate`), outside the model and outside the tool.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol, overload, runtime_checkable

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from core.types import ToolSpec

NAME_PATTERN = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
"""What OpenAI accepts as a tool name (and so what every tool's name must match)."""


class Risk(StrEnum):
    """How much harm a call can do, and so who may make it and whether a person confirms it.

    * ``READ``: no side effect; runs at once, for everyone the allowlist lets in.
    * ``ACT``: a side effect a person would want to approve (``TOOL_USERS``, confirmed).
    * ``DANGEROUS``: locks, alarms, garage doors, anything costly or irreversible (admins,
      or ``TOOL_DANGEROUS_USERS``; confirmed).
    """

    READ = "read"
    ACT = "act"
    DANGEROUS = "dangerous"

    @property
    def rank(self) -> int:
        """0, 1, 2 in order of harm (``max(..., key=Risk.rank)``-style comparisons)."""
        return _RANKS[self]

    @property
    def needs_confirmation(self) -> bool:
        """Whether a person confirms a call of this risk before it runs."""
        return self is not Risk.READ

    @staticmethod
    def highest(*risks: Risk) -> Risk:
        """The most harmful of ``risks`` (``READ`` when none)."""
        return max(risks, key=lambda r: r.rank, default=Risk.READ)


_RANKS = {Risk.READ: 0, Risk.ACT: 1, Risk.DANGEROUS: 2}


class ToolError(Exception):
    """A tool failed in a way the model (and maybe the user) should be told, in short words.

    Raise it from a tool with a message a person can read ("Home Assistant refused the
    token"); the model gets it as the call's error result and the chat goes on. Any other
    exception is logged and reported to the model as a generic failure.
    """


class ToolArgumentError(ToolError):
    """The model's arguments do not match the tool's schema (told to the model, not run)."""


@dataclass(frozen=True, slots=True)
class ToolResult:
    """What a tool returns.

    Attributes:
        content: what the model reads (text or JSON).
        summary: the factual line the bot itself shows after an action ran, without the
            leading mark (e.g. ``"light.kitchen → on"``); ``None`` lets the gate build one
            from the call.
        ok: ``False`` for an error result (shown to the model as an error).
    """

    content: str
    summary: str | None = None
    ok: bool = True


@runtime_checkable
class Tool(Protocol):
    """A function the model may call, as the engine sees it (whatever its source).

    ``name`` matches :data:`NAME_PATTERN` and is unique within a bot. ``risk`` is the risk
    the schema is offered at; :meth:`risk_of` may raise it for particular arguments (a
    Home Assistant service call aimed at a lock is dangerous), never lower it.
    """

    @property
    def name(self) -> str:
        """The name the model calls it by."""
        ...

    @property
    def description(self) -> str:
        """What it does, for the model."""
        ...

    @property
    def parameters(self) -> Mapping[str, Any]:
        """The JSON schema of its arguments (an ``object``)."""
        ...

    @property
    def risk(self) -> Risk:
        """The least risk of any call of it."""
        ...

    @property
    def source(self) -> str:
        """Where it comes from, for the audit: ``"python"``, ``"homeassistant"``, ``"mcp:srv"``."""
        ...

    def validate(self, arguments: str) -> dict[str, Any]:
        """Parse and check the model's JSON arguments; raise :class:`ToolArgumentError`."""
        ...

    def risk_of(self, arguments: Mapping[str, Any]) -> Risk:
        """The risk of a call with these (validated) arguments; at least :attr:`risk`."""
        ...

    def describe(self, arguments: Mapping[str, Any]) -> str:
        """The call in plain words, for a confirmation ("turn on light.kitchen")."""
        ...

    def redact(self, arguments: Mapping[str, Any]) -> dict[str, Any]:
        """The arguments with secrets masked, for the audit and for what users are shown."""
        ...

    async def invoke(self, arguments: Mapping[str, Any]) -> ToolResult:
        """Run the call; raise :class:`ToolError` for a failure the model should be told."""
        ...


def spec(t: Tool) -> ToolSpec:
    """The tool as offered to a backend."""
    return ToolSpec(name=t.name, description=t.description, parameters=t.parameters)


_SECRET_WORDS = frozenset(
    [
        "pass",
        "passwd",
        "password",
        "passphrase",
        "secret",
        "token",
        "apikey",
        "auth",
        "authorization",
        "bearer",
        "credential",
        "credentials",
        "pin",
        "code",
        "otp",
        "cookie",
        "session",
    ]
)
_WORD = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")
REDACTED = "[redacted]"


def _is_secret_key(key: str) -> bool:
    words = [w.lower() for w in _WORD.findall(key)]
    joined = "".join(words)
    return any(w in _SECRET_WORDS for w in words) or joined in _SECRET_WORDS or "apikey" in joined


def redact_secrets(arguments: Mapping[str, Any]) -> dict[str, Any]:
    """``arguments`` with the values of secret-looking keys (``password``, ``token``...) masked.

    Nested mappings are redacted too; lists are kept as they are.
    """
    out: dict[str, Any] = {}
    for key, value in arguments.items():
        if _is_secret_key(str(key)):
            out[key] = REDACTED
        elif isinstance(value, Mapping):
            out[key] = redact_secrets(value)
        else:
            out[key] = value
    return out


def plain_call(name: str, arguments: Mapping[str, Any]) -> str:
    """``name(key=value, ...)`` with short values, for confirmations and the audit."""
    parts = []
    for key, value in arguments.items():
        shown = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        if len(shown) > 60:
            shown = shown[:57] + "..."
        parts.append(f"{key}={shown}")
    return f"{name}({', '.join(parts)})"


def parse_arguments(arguments: str) -> dict[str, Any]:
    """The model's JSON arguments as an object; ``""`` counts as ``{}``.

    Raises:
        ToolArgumentError: not JSON, or not an object.
    """
    if not arguments.strip():
        return {}
    try:
        value = json.loads(arguments)
    except ValueError as exc:
        raise ToolArgumentError(f"the arguments are not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ToolArgumentError("the arguments must be a JSON object")
    return value


# --- Python functions as tools ----------------------------------------------------------------


_ARGS_HEADER = re.compile(r"^\s*(Args|Arguments|Parameters):\s*$")
_ARG_LINE = re.compile(r"^\s+(\*{0,2}\w+)\s*(\([^)]*\))?:\s*(.*)$")
_SECTION = re.compile(r"^\s*[A-Z][A-Za-z ]*:\s*$")


def _parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """The description (text before the sections) and each argument's text (Google style)."""
    lines = inspect.cleandoc(doc).splitlines()
    description: list[str] = []
    args: dict[str, str] = {}
    current: str | None = None
    in_args = False
    for line in lines:
        if _ARGS_HEADER.match(line):
            in_args, current = True, None
            continue
        if _SECTION.match(line) and not line.startswith(" "):
            in_args, current = False, None
            if description:
                description.append("\x00")  # sections end the description
            continue
        if in_args:
            match = _ARG_LINE.match(line)
            if match:
                current = match.group(1).lstrip("*")
                args[current] = match.group(3).strip()
            elif current is not None and line.strip():
                args[current] = f"{args[current]} {line.strip()}".strip()
            continue
        description.append(line)
    text = "\n".join(description).split("\x00", 1)[0].strip()
    return text, args


class FunctionTool:
    """A typed Python function offered to the model; built by :func:`tool`."""

    __slots__ = ("_describe", "_fn", "_model", "_params", "description", "name", "risk")

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        risk: Risk,
        name: str | None = None,
        description: str | None = None,
        describe: Callable[[Mapping[str, Any]], str] | None = None,
    ) -> None:
        self._fn = fn
        self.name = name or fn.__name__
        if not NAME_PATTERN.match(self.name):
            raise ValueError(f"{self.name!r} is not a valid tool name (letters, digits, _ and -)")
        self.risk = Risk(risk)
        doc_text, arg_docs = _parse_docstring(fn.__doc__ or "")
        self.description = description or doc_text
        if not self.description:
            raise ValueError(f"the tool {self.name} needs a docstring (its description)")
        self._describe = describe
        self._model = _arguments_model(fn, arg_docs)
        schema = self._model.model_json_schema()
        schema.pop("title", None)
        schema.setdefault("properties", {})
        self._params: dict[str, Any] = schema

    @property
    def parameters(self) -> Mapping[str, Any]:
        """The JSON schema of the function's arguments, from its type hints."""
        return self._params

    @property
    def source(self) -> str:
        """Python functions are audited as ``"python"``."""
        return "python"

    def validate(self, arguments: str) -> dict[str, Any]:
        """Check the model's arguments with the function's types (pydantic)."""
        raw = parse_arguments(arguments)
        try:
            checked = self._model.model_validate(raw)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'arguments'}: {e['msg']}"
                for e in exc.errors()
            )
            raise ToolArgumentError(f"invalid arguments for {self.name}: {problems}") from None
        return {name: getattr(checked, name) for name in type(checked).model_fields}

    def risk_of(self, arguments: Mapping[str, Any]) -> Risk:
        """A function's risk does not depend on its arguments."""
        return self.risk

    def describe(self, arguments: Mapping[str, Any]) -> str:
        """The ``describe`` given to :func:`tool`, else ``name(key=value, ...)``."""
        if self._describe is not None:
            return self._describe(arguments)
        return plain_call(self.name, self.redact(arguments))

    def redact(self, arguments: Mapping[str, Any]) -> dict[str, Any]:
        """Secret-looking arguments masked."""
        return redact_secrets(arguments)

    async def invoke(self, arguments: Mapping[str, Any]) -> ToolResult:
        """Call the function (a sync one in a worker thread); wrap what it returns."""
        fn = self._fn
        if inspect.iscoroutinefunction(fn):
            value = await fn(**arguments)
        else:
            value = await asyncio.to_thread(functools.partial(fn, **arguments))
            if inspect.isawaitable(value):
                value = await value
        return as_result(value)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """The decorated function stays callable as before."""
        return self._fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<tool {self.name} ({self.risk})>"


def as_result(value: Any) -> ToolResult:
    """What a tool function returned, as a :class:`ToolResult` (JSON for non-strings)."""
    if isinstance(value, ToolResult):
        return value
    if value is None:
        return ToolResult("done")
    if isinstance(value, str):
        return ToolResult(value)
    if isinstance(value, BaseModel):
        return ToolResult(value.model_dump_json())
    return ToolResult(json.dumps(value, ensure_ascii=False, default=str))


def _arguments_model(fn: Callable[..., Any], docs: Mapping[str, str]) -> type[BaseModel]:
    from pydantic import Field

    signature = inspect.signature(fn)
    try:
        hints = inspect.get_annotations(fn, eval_str=True)
    except NameError as exc:
        raise ValueError(f"the tool {fn.__name__}'s type hints can't be resolved: {exc}") from None
    fields: dict[str, Any] = {}
    for name, param in signature.parameters.items():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise ValueError(f"the tool {fn.__name__} may not take *args or **kwargs")
        if name not in hints:
            raise ValueError(f"the tool {fn.__name__}'s argument {name!r} needs a type hint")
        default = ... if param.default is param.empty else param.default
        fields[name] = (hints[name], Field(default, description=docs.get(name)))
    config = ConfigDict(extra="forbid", strict=False)
    return create_model(f"{fn.__name__}_arguments", __config__=config, **fields)


@overload
def tool(fn: Callable[..., Any], /) -> FunctionTool: ...


@overload
def tool(
    fn: None = None,
    /,
    *,
    risk: Risk | str = Risk.READ,
    name: str | None = None,
    description: str | None = None,
    describe: Callable[[Mapping[str, Any]], str] | None = None,
) -> Callable[[Callable[..., Any]], FunctionTool]: ...


def tool(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    risk: Risk | str = Risk.READ,
    name: str | None = None,
    description: str | None = None,
    describe: Callable[[Mapping[str, Any]], str] | None = None,
) -> FunctionTool | Callable[[Callable[..., Any]], FunctionTool]:
    """Make a typed function a tool: ``@tool`` (a ``read`` tool) or ``@tool(risk="act")``.

    Args:
        fn: the function (when used as a bare decorator).
        risk: ``"read"`` (no side effect), ``"act"`` (asks for a confirmation) or
            ``"dangerous"`` (admins, and a confirmation).
        name: the name the model sees (default: the function's name).
        description: overrides the docstring's description.
        describe: builds the plain words a confirmation shows from the arguments.

    Raises:
        ValueError: a missing docstring or type hint, ``*args``, or a bad name.
    """

    def wrap(f: Callable[..., Any]) -> FunctionTool:
        return FunctionTool(
            f, risk=Risk(risk), name=name, description=description, describe=describe
        )

    return wrap(fn) if fn is not None else wrap


# --- where tools come from ----------------------------------------------------------------------


@runtime_checkable
class ToolSource(Protocol):
    """A set of tools with a lifecycle: Python functions, Home Assistant, an MCP server.

    ``tools()`` may change while running (an MCP server announced new tools); a source that
    is down offers none and reports it once in the log.
    """

    @property
    def name(self) -> str:
        """For logs: ``"python"``, ``"homeassistant"``, ``"mcp"``."""
        ...

    def tools(self) -> Sequence[Tool]:
        """The tools offered now."""
        ...

    async def start(self) -> None:
        """Connect (never raise for a server that is down: report it and retry). Idempotent."""
        ...

    async def aclose(self) -> None:
        """Disconnect. Idempotent."""
        ...


class FunctionTools:
    """Python functions as a :class:`ToolSource` (plain callables become ``read`` tools)."""

    def __init__(self, functions: Iterable[Tool | Callable[..., Any]], name: str = "python"):
        self.name = name
        self._tools: tuple[Tool, ...] = tuple(
            f if isinstance(f, Tool) else FunctionTool(f, risk=Risk.READ) for f in functions
        )

    def tools(self) -> Sequence[Tool]:
        """The functions, always."""
        return self._tools

    async def start(self) -> None:
        """Nothing to connect."""

    async def aclose(self) -> None:
        """Nothing to release."""


class Toolbox:
    """Every tool of a bot, from all its sources, by name.

    A name two sources both offer is kept from the first source and logged once by the
    caller (:meth:`clashes`).
    """

    def __init__(self, sources: Sequence[ToolSource] = ()) -> None:
        self.sources = tuple(sources)

    def __bool__(self) -> bool:
        return bool(self.sources)

    def tools(self) -> dict[str, Tool]:
        """The tools offered now, by name (the first source wins a clash)."""
        found: dict[str, Tool] = {}
        for source in self.sources:
            for t in source.tools():
                found.setdefault(t.name, t)
        return found

    def get(self, name: str) -> Tool | None:
        """The tool called ``name`` now, if any source offers it."""
        return self.tools().get(name)

    def clashes(self) -> list[str]:
        """Names offered by more than one source (only the first source's is used)."""
        seen: set[str] = set()
        twice: list[str] = []
        for source in self.sources:
            for t in source.tools():
                if t.name in seen and t.name not in twice:
                    twice.append(t.name)
                seen.add(t.name)
        return twice

    async def start(self) -> None:
        """Start every source (a failing one is reported by the source, the rest go on)."""
        await asyncio.gather(*(s.start() for s in self.sources))

    async def aclose(self) -> None:
        """Close every source."""
        await asyncio.gather(*(s.aclose() for s in self.sources), return_exceptions=True)


__all__ = [
    "NAME_PATTERN",
    "REDACTED",
    "FunctionTool",
    "FunctionTools",
    "Risk",
    "Tool",
    "ToolArgumentError",
    "ToolError",
    "ToolResult",
    "ToolSource",
    "Toolbox",
    "as_result",
    "parse_arguments",
    "plain_call",
    "redact_secrets",
    "spec",
    "tool",
]
