"""The parser of tool calls local models write as text (``adapters.llm.tool_markup``)."""

from __future__ import annotations

import itertools
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.llm.tool_markup import ParsedEvent, ToolCallParser
from core.types import TextDelta, ToolCallDelta

LIGHT = '<tool_call>{"name": "light_on", "arguments": {"entity": "kitchen"}}</tool_call>'


def parse(*pieces: str, schemas=None) -> list[ParsedEvent]:
    parser = ToolCallParser(schemas)
    events: list[ParsedEvent] = []
    for piece in pieces:
        events += parser.feed(piece)
    return events + parser.close()


def text(events: list[ParsedEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


def calls(events: list[ParsedEvent]) -> list[tuple[int, str | None, str | None, object]]:
    return [
        (e.index, e.id, e.name, json.loads(e.arguments))
        for e in events
        if isinstance(e, ToolCallDelta)
    ]


def test_one_call_becomes_one_complete_tool_call_delta() -> None:
    events = parse(LIGHT)
    assert events == [
        ToolCallDelta(index=0, id="call_0", name="light_on", arguments='{"entity": "kitchen"}')
    ]


def test_plain_text_streams_as_it_comes() -> None:
    parser = ToolCallParser()
    assert parser.feed("Hello") == [TextDelta("Hello")]
    assert parser.feed(", world") == [TextDelta(", world")]
    assert parser.feed(" <b>bold</b> 3 < 4") == [TextDelta(" <b>bold</b> 3 < 4")]
    assert parser.close() == []
    assert parser.calls == 0


def test_text_without_calls_comes_back_exactly_including_trailing_whitespace() -> None:
    source = "Line one\n\n<tool_calls are what I make>\n  <function call>  \n"
    events = parse(*source)
    assert text(events) == source
    assert calls(events) == []


@given(st.lists(st.integers(min_value=0, max_value=len(LIGHT) + 20), max_size=8))
def test_a_call_split_anywhere_across_pieces_is_the_same_call(cuts: list[int]) -> None:
    source = f"Turning it on. {LIGHT}\nDone."
    bounds = sorted({0, len(source), *(c for c in cuts if c < len(source))})
    pieces = [source[a:b] for a, b in itertools.pairwise(bounds)]
    events = parse(*pieces)
    assert text(events) == "Turning it on. \nDone."
    assert calls(events) == [(0, "call_0", "light_on", {"entity": "kitchen"})]


def test_text_before_a_tag_is_not_held_back_and_a_tag_start_is() -> None:
    parser = ToolCallParser()
    assert parser.feed("Sure, ") == [TextDelta("Sure,")]
    assert parser.feed("<tool") == []  # could be a call: held until decided
    assert parser.feed('_call>{"name": "light_on",') == []
    assert parser.feed(' "arguments": {}}</tool_call>') == [
        ToolCallDelta(index=0, id="call_0", name="light_on", arguments="{}")
    ]
    assert parser.close() == []


def test_a_held_tag_start_that_turns_out_to_be_text_is_given_back_at_once() -> None:
    parser = ToolCallParser()
    assert parser.feed("a <tool_c") == [TextDelta("a")]
    assert parser.feed("hain") == [TextDelta(" <tool_chain")]


def test_two_calls_in_one_reply_are_numbered_and_layout_whitespace_dropped() -> None:
    second = '<tool_call>\n{"name": "light_off", "arguments": {"entity": "hall"}}\n</tool_call>'
    events = parse(f"\n{LIGHT}\n{second}\n")
    assert text(events) == ""
    assert calls(events) == [
        (0, "call_0", "light_on", {"entity": "kitchen"}),
        (1, "call_1", "light_off", {"entity": "hall"}),
    ]


def test_braces_and_quotes_inside_json_strings() -> None:
    body = {"name": "note", "arguments": {"text": 'a {b} "c" }} ]] <x>', "n": {"deep": [1, {}]}}}
    events = parse("<tool_call>", json.dumps(body)[:9], json.dumps(body)[9:], "</tool_call>")
    assert calls(events) == [(0, "call_0", "note", body["arguments"])]


@pytest.mark.parametrize(
    "source",
    [
        '<tool_call>{"name": "light_on", "arguments": {"entity": "kitchen"}</tool_call>',
        "<tool_call>turn on the light</tool_call>",
        '<tool_call>["light_on"]</tool_call>',
        '<tool_call>{"arguments": {}}</tool_call>',
        '<tool_call>{"name": "  ", "arguments": {}}</tool_call>',
        '<tool_call>{"name": "x", "arguments": [1, 2]}</tool_call>',
        '<tool_call>{"name": "x", "arguments": "not json"}</tool_call>',
        "<tool_call></tool_call>",
        "<function=x>hello</function>",
        "<function=>\n</function>",
    ],
)
def test_garbage_inside_a_tag_is_text_never_a_call(source: str) -> None:
    events = parse("Hm. ", source, " ok")
    assert calls(events) == []
    assert text(events) == f"Hm. {source} ok"


def test_a_tag_that_never_closes_is_given_back_as_text_at_the_end() -> None:
    parser = ToolCallParser()
    assert parser.feed('I will <tool_call>{"name": "light_on", "argu') == [TextDelta("I will")]
    assert parser.close() == [TextDelta(' <tool_call>{"name": "light_on", "argu')]
    assert parser.calls == 0


def test_an_unknown_tool_name_is_still_a_call() -> None:
    events = parse('<tool_call>{"name": "rm_rf_everything", "arguments": {}}</tool_call>')
    assert calls(events) == [(0, "call_0", "rm_rf_everything", {})]


@pytest.mark.parametrize(
    ("body", "arguments"),
    [
        ('{"name": "f", "arguments": "{\\"a\\": 1}"}', {"a": 1}),
        ('{"name": "f", "parameters": {"a": 1}}', {"a": 1}),
        ('{"name": "f"}', {}),
        ('{"name": "f", "arguments": null}', {}),
        ('{"name": "f", "arguments": ""}', {}),
    ],
)
def test_argument_spellings_models_use(body: str, arguments: dict[str, object]) -> None:
    assert calls(parse(f"<tool_call>{body}</tool_call>")) == [(0, "call_0", "f", arguments)]


def test_function_variant_inside_and_outside_tool_call_typed_by_the_schema() -> None:
    schemas = {
        "set_temp": {
            "type": "object",
            "properties": {
                "entity": {"type": "string"},
                "degrees": {"type": "number"},
                "room": {"type": "string"},
                "extra": {"type": "object"},
            },
        }
    }
    block = (
        "<function=set_temp>\n<parameter=entity>\nclimate.hall\n</parameter>\n"
        "<parameter=degrees>\n21.5\n</parameter>\n<parameter=room>\n12\n</parameter>\n"
        '<parameter=extra>\n{"fan": "low"}\n</parameter>\n</function>'
    )
    wanted = {"entity": "climate.hall", "degrees": 21.5, "room": "12", "extra": {"fan": "low"}}
    inside = parse("Setting it.\n", "<tool_call>\n", block, "\n</tool_call>", schemas=schemas)
    assert text(inside) == "Setting it."
    assert calls(inside) == [(0, "call_0", "set_temp", wanted)]
    outside = parse(block[:5], block[5:30], block[30:], schemas=schemas)
    assert calls(outside) == [(0, "call_0", "set_temp", wanted)]


def test_function_variant_without_a_schema_keeps_words_and_reads_numbers() -> None:
    events = parse(
        "<function=f><parameter=a>kitchen light</parameter><parameter=b>3</parameter></function>"
    )
    assert calls(events) == [(0, "call_0", "f", {"a": "kitchen light", "b": 3})]


def test_feeding_after_close_is_refused() -> None:
    parser = ToolCallParser()
    parser.close()
    with pytest.raises(RuntimeError):
        parser.feed("x")
