"""``chinwag kb`` as a user runs it: real processes on a SQLite database, embeddings from the
loopback OpenAI-compatible server (word-hashing vectors), and the pure helpers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bots.kb import BadInput, files_to_add, parse_scope
from core.knowledge import KbScope, ScopeKind
from tests.bots.test_cli import chinwag, cli_env
from tests.fakes.openai_server import FakeOpenAIServer


def test_scopes_are_parsed_and_bad_ones_refused() -> None:
    assert parse_scope("b", "bot") == KbScope.of_bot("b")
    assert parse_scope("b", "user:telegram:42") == KbScope("b", ScopeKind.USER, "telegram:42")
    assert parse_scope("b", "chat:discord:7") == KbScope.of_chat("b", "discord", "7")
    for bad in ("users:telegram:1", "user:telegram", "chat", ""):
        with pytest.raises(BadInput):
            parse_scope("b", bad)


def test_folders_are_searched_recursively_for_supported_files(tmp_path: Path) -> None:
    (tmp_path / "docs" / "deep").mkdir(parents=True)
    (tmp_path / "docs" / "a.md").write_text("# A\n")
    (tmp_path / "docs" / "deep" / "b.txt").write_text("b")
    (tmp_path / "docs" / "deep" / "c.png").write_bytes(b"png")
    (tmp_path / "docs" / ".git").mkdir()
    (tmp_path / "docs" / ".git" / "d.txt").write_text("hidden")
    found = files_to_add([tmp_path / "docs"])
    assert [p.name for p in found] == ["a.md", "b.txt"]
    with pytest.raises(BadInput, match="unsupported file type"):
        files_to_add([tmp_path / "docs" / "deep" / "c.png"])
    with pytest.raises(BadInput, match="no such file"):
        files_to_add([tmp_path / "missing.txt"])


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_kb_add_list_remove_in_real_processes(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "pump.md").write_text("# Pump\n\nThe pump restarts after error E-4711.\n")
    (docs / "notes.txt").write_text("Office hours are nine to five.\n")
    async with FakeOpenAIServer(reply=lambda body: "unused") as llm:
        env = cli_env(
            tmp_path, KB_EMBEDDINGS="openai", OPENAI_BASE_URL=llm.base_url, OPENAI_API_KEY="k"
        )
        code, out, err = await chinwag(tmp_path, "kb", "add", str(docs), env=env)
        assert code == 0, err
        assert out.count("Added") == 2

        code, out, err = await chinwag(tmp_path, "kb", "add", str(docs / "pump.md"), env=env)
        assert code == 0, err
        assert "already in the knowledge base" in out

        code, out, _ = await chinwag(tmp_path, "kb", "list", "--json", env=env)
        listed = json.loads(out)
        assert len(listed) == 2
        assert all(d["scope"] == "bot" for d in listed)
        pump = next(d for d in listed if d["source"].endswith("pump.md"))

        code, out, err = await chinwag(tmp_path, "kb", "remove", str(pump["id"]), env=env)
        assert code == 0, err
        code, out, _ = await chinwag(tmp_path, "kb", "list", env=env)
        assert "pump.md" not in out
        assert "notes.txt" in out

        code, _, err = await chinwag(tmp_path, "kb", "remove", str(pump["id"]), env=env)
        assert code == 2
        assert "no document" in err
        code, _, err = await chinwag(tmp_path, "kb", "add", "nowhere.txt", env=env)
        assert code == 2
        assert err.count("\n") == 1
        assert "no such file" in err
        code, _, err = await chinwag(tmp_path, "kb", "list", "--scope", "users:x", env=env)
        assert code == 2
        assert "--scope" in err
