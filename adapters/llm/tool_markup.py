"""Tool calls written as text by local models, parsed while the reply streams.

Models run in-process have no native tool-call channel: a model trained for tools writes its
calls into the reply as markup, and chinwag reads them back out. Two conventions are
understood:

* Hermes / Qwen 2.5: ``<tool_call>{"name": "light_on", "arguments": {"entity": "kitchen"}}
  </tool_call>``, several per reply allowed (``"parameters"`` is accepted for
  ``"arguments"``, and arguments given as a JSON string are unpacked).
* Qwen3-coder: ``<function=light_on><parameter=entity>kitchen</parameter></function>``,
  inside ``<tool_call>`` or on its own. Parameter values are text; a value whose schema
  type is not ``string`` is read as JSON when it parses.

Text outside the tags streams on unchanged, except that a piece which could still be the
start of a tag is held back until the next piece decides it. Whitespace around calls is
layout, not reply text, and is dropped. A tag that never closes, or whose content does not
parse, is given back as text: a malformed call is never executed. A well-formed call to an
unknown tool is still a call: the tool gate, not the parser, decides what runs.

Imports no vendor library.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, Final

from core.types import TextDelta, ToolCallDelta

TOOL_CALL_OPEN: Final = "<tool_call>"
TOOL_CALL_CLOSE: Final = "</tool_call>"
FUNCTION_OPEN: Final = "<function="
FUNCTION_CLOSE: Final = "</function>"
_OPENERS: Final = (TOOL_CALL_OPEN, FUNCTION_OPEN)
_CLOSERS: Final = {TOOL_CALL_OPEN: TOOL_CALL_CLOSE, FUNCTION_OPEN: FUNCTION_CLOSE}

_FUNCTION: Final = re.compile(r"<function=([^<>\n]+)>(.*)</function>", re.DOTALL)
_PARAMETER: Final = re.compile(r"<parameter=([^<>\n]+)>(.*?)</parameter>", re.DOTALL)

ParsedEvent = TextDelta | ToolCallDelta


class ToolCallParser:
    """Split a streamed reply into text and tool calls (one parser per reply).

    Feed it the reply's text pieces in order with :meth:`feed`, then call :meth:`close` at
    the end of the stream; both return the events decided so far. Calls come out as one
    complete ``ToolCallDelta`` each, numbered from 0, with the id ``call_<index>``.

    Args:
        schemas: the JSON schema of each offered tool's parameters, by tool name; used only
            to type the values of ``<parameter=...>`` tags.
    """

    def __init__(self, schemas: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        """Start a reply (see the class docstring)."""
        self._schemas = dict(schemas or {})
        self._buffer = ""  # undecided: a possible tag start, or an open tag's content
        self._opener: str | None = None  # the tag ``_buffer`` is inside, once it is one
        self._space = ""  # whitespace held back: kept before text, dropped next to a call
        self._calls = 0
        self._after_call = False
        self._gap = ""  # whitespace around calls, kept only if text follows them
        self._said = False  # whether any text was emitted
        self._closed = False

    @property
    def calls(self) -> int:
        """How many tool calls were parsed so far."""
        return self._calls

    def feed(self, text: str) -> list[ParsedEvent]:
        """Take the next piece of the reply; return the text and calls it decides.

        Raises:
            RuntimeError: after :meth:`close`.
        """
        if self._closed:
            raise RuntimeError("ToolCallParser is closed")
        self._buffer += text
        events: list[ParsedEvent] = []
        while self._buffer:
            if self._opener is None:
                if not self._scan_text(events):
                    break
            elif not self._scan_tag(events):
                break
        return _merged(events)

    def close(self) -> list[ParsedEvent]:
        """End of the reply: undecided or unclosed markup is given back as text."""
        if self._closed:
            return []
        self._closed = True
        events: list[ParsedEvent] = []
        rest, self._buffer, self._opener = self._buffer, "", None
        if rest:
            self._text(rest, events)
        if self._space and not self._calls:
            events.append(TextDelta(self._space))
        self._space = ""
        return _merged(events)

    # --- scanning -------------------------------------------------------------------------

    def _scan_text(self, events: list[ParsedEvent]) -> bool:
        """Emit text up to a possible tag; return whether the buffer can be scanned further."""
        buffer = self._buffer
        start = buffer.find("<")
        if start < 0:
            self._buffer = ""
            self._text(buffer, events)
            return False
        if start:
            self._text(buffer[:start], events)
        rest = buffer[start:]
        for opener in _OPENERS:
            if rest.startswith(opener):
                self._opener, self._buffer = opener, rest
                return True
        if any(opener.startswith(rest) for opener in _OPENERS):
            self._buffer = rest  # "<tool_c": wait for the next piece to decide
            return False
        self._buffer = rest[1:]
        self._text("<", events)
        return True

    def _scan_tag(self, events: list[ParsedEvent]) -> bool:
        """Close the open tag if its end has arrived; return whether to scan further."""
        assert self._opener is not None
        closer = _CLOSERS[self._opener]
        end = self._buffer.find(closer, len(self._opener))
        if end < 0:
            return False
        end += len(closer)
        block, self._buffer = self._buffer[:end], self._buffer[end:]
        opener, self._opener = self._opener, None
        if opener == TOOL_CALL_OPEN:
            call = self._parse_body(block[len(TOOL_CALL_OPEN) : -len(TOOL_CALL_CLOSE)])
        else:
            call = self._parse_function(block)
        if call is None:
            self._text(block, events)  # not a call after all: the model's text
        else:
            self._gap += self._space
            self._space, self._after_call = "", True
            name, arguments = call
            events.append(
                ToolCallDelta(
                    index=self._calls,
                    id=f"call_{self._calls}",
                    name=name,
                    arguments=json.dumps(arguments, ensure_ascii=False),
                )
            )
            self._calls += 1
        return True

    def _text(self, text: str, events: list[ParsedEvent]) -> None:
        """Emit ``text``, holding trailing whitespace back until more text follows it."""
        if self._after_call:
            words = text.lstrip()
            self._gap += text[: len(text) - len(words)]
            if not words:
                return
            # Text again after calls: keep the model's spacing, unless nothing came before.
            text = (self._gap if self._said else "") + words
            self._after_call, self._gap = False, ""
        text = self._space + text
        kept = text.rstrip()
        self._space = text[len(kept) :]
        if kept:
            events.append(TextDelta(kept))
            self._said = True

    # --- the two call formats -------------------------------------------------------------

    def _parse_body(self, body: str) -> tuple[str, dict[str, Any]] | None:
        """A ``<tool_call>`` body: a JSON object, or a ``<function=...>`` block."""
        body = body.strip()
        if body.startswith(FUNCTION_OPEN):
            return self._parse_function(body)
        try:
            data = json.loads(body)
        except ValueError:
            return None
        if not isinstance(data, dict):
            return None
        name = data.get("name")
        if not isinstance(name, str) or not name.strip():
            return None
        arguments = data.get("arguments", data.get("parameters", {}))
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments) if arguments.strip() else {}
            except ValueError:
                return None
        if arguments is None:
            arguments = {}
        if not isinstance(arguments, dict):
            return None
        return name.strip(), arguments

    def _parse_function(self, block: str) -> tuple[str, dict[str, Any]] | None:
        """``<function=NAME><parameter=KEY>VALUE</parameter>...</function>``."""
        match = _FUNCTION.fullmatch(block.strip())
        if match is None:
            return None
        name, inner = match.group(1).strip(), match.group(2)
        if not name:
            return None
        if _PARAMETER.sub("", inner).strip():
            return None  # something other than parameters inside: not a call we understand
        properties = self._schemas.get(name, {}).get("properties", {})
        arguments: dict[str, Any] = {}
        for key, raw in _PARAMETER.findall(inner):
            key = key.strip()
            value = raw.removeprefix("\n").removesuffix("\n")
            schema = properties.get(key) if isinstance(properties, Mapping) else None
            arguments[key] = _typed(value, schema)
        return name, arguments


def _merged(events: list[ParsedEvent]) -> list[ParsedEvent]:
    """``events`` with neighbouring text pieces joined (fewer, larger deltas)."""
    out: list[ParsedEvent] = []
    for event in events:
        last = out[-1] if out else None
        if isinstance(event, TextDelta) and isinstance(last, TextDelta):
            out[-1] = TextDelta(last.text + event.text)
        else:
            out.append(event)
    return out


def _typed(value: str, schema: Any) -> Any:
    """A ``<parameter>`` value: text for a string parameter, else JSON when it parses."""
    kind = schema.get("type") if isinstance(schema, Mapping) else None
    if kind == "string" or (isinstance(kind, list) and kind == ["string"]):
        return value
    try:
        parsed = json.loads(value)
    except ValueError:
        return value
    if kind is None and isinstance(parsed, str):
        return value
    return parsed


__all__ = ["ParsedEvent", "ToolCallParser"]
