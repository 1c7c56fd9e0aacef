"""Tool names: server__tool, within OpenAI's ^[a-zA-Z0-9_-]+$ and 64 characters, deterministic."""

from __future__ import annotations

import re

from adapters.mcp.names import server_prefix, tool_names

OPENAI = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


def test_plain_names_are_server__tool() -> None:
    assert tool_names("home", ["set_light", "get-state"]) == {
        "set_light": "home__set_light",
        "get-state": "home__get-state",
    }


def test_odd_characters_become_underscores() -> None:
    assert tool_names("fs", ["files.read", "a b/c"]) == {
        "files.read": "fs__files_read",
        "a b/c": "fs__a_b_c",
    }


def test_long_names_are_cut_with_a_hash_and_stay_distinct() -> None:
    long_a = "x" * 100 + "a"
    long_b = "x" * 100 + "b"
    names = tool_names("server", [long_a, long_b])
    assert all(OPENAI.match(n) for n in names.values())
    assert len(names[long_a]) == 64
    assert names[long_a] != names[long_b]
    assert names[long_a].startswith("server__xxx")


def test_a_clash_keeps_the_unchanged_name_and_hashes_the_other() -> None:
    names = tool_names("s", ["odd.name", "odd_name"])
    assert names["odd_name"] == "s__odd_name"  # the name the server really uses wins
    assert names["odd.name"] != "s__odd_name"
    assert OPENAI.match(names["odd.name"])


def test_names_do_not_depend_on_the_order_the_server_lists_them() -> None:
    tools = ["odd.name", "odd_name", "odd name", "y" * 90, "z" * 90]
    first = tool_names("s", tools)
    assert tool_names("s", list(reversed(tools))) == first
    assert len(set(first.values())) == len(tools)


def test_a_long_server_name_leaves_room_for_its_tools() -> None:
    prefix = server_prefix("my.very-long-server-name-" * 4)
    assert len(prefix) <= 40
    assert OPENAI.match(prefix)
    name = tool_names(prefix, ["toggle"])["toggle"]
    assert name.endswith("__toggle")
    assert OPENAI.match(name)
