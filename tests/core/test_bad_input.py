"""Text a database cannot hold as it is (a NUL byte, a lone surrogate) is kept and answered.

PostgreSQL refuses NUL in text and neither driver can encode a lone UTF-16 surrogate, so
such a message used to fail ("couldn't reach my memory") on one database and not the other.
The engine runs over the real SQL store, on SQLite and on PostgreSQL.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from adapters.memory.store import SqlMemoryStore
from tests._db import UpgradeHead
from tests._require import require_or_skip
from tests.core.conftest import dm
from tests.fakes.channel import RecordingChannel
from tests.fakes.scripted import ScriptedBackend

BAD = ["nul\x00byte", "lone \ud800 surrogate", "low \udfff and \x00 both"]


@pytest.fixture
async def store(db_url: str, upgrade_head: UpgradeHead) -> AsyncIterator[SqlMemoryStore]:
    """The engine's store for these tests: the SQL store on SQLite and on PostgreSQL."""
    await upgrade_head(db_url)
    sql = SqlMemoryStore(db_url)
    await sql.start()
    yield sql
    await sql.aclose()


def _clean(text: str) -> str:
    return "".join("\ufffd" if ch == "\x00" or "\ud800" <= ch <= "\udfff" else ch for ch in text)


@pytest.mark.parametrize("text", BAD)
async def test_bad_characters_are_stored_safely_and_answered(make_engine, text: str) -> None:
    engine = make_engine()
    out = RecordingChannel()
    await engine.handle(dm(text, message_id="1"), out)
    assert out.notices == []
    assert out.replies == [f"echo: {_clean(text)} | remembered: nothing"]
    await engine.handle(dm("and then?", message_id="2"), out)
    assert out.replies[-1] == f"echo: and then? | remembered: {_clean(text)}"


async def test_a_model_reply_with_bad_characters_is_stored(make_engine, store) -> None:
    """What the model says goes through the same store boundary as what the user says."""
    engine = make_engine(backend_override=ScriptedBackend(reply="odd \x00 reply \ud800"))
    out = RecordingChannel()
    await engine.handle(dm("hi", message_id="1"), out)
    assert out.notices == []
    assert len(out.replies) == 1


async def test_a_lone_surrogate_reaches_the_local_model_as_text_it_can_encode(
    make_engine,
) -> None:
    """llama.cpp's tokenizer encodes UTF-8 strictly: the text must be clean before it counts."""
    from adapters.llm.local import LocalBackend, LocalSettings, local_backend_available

    reason = local_backend_available()
    if reason is not None:
        require_or_skip("llama", reason)
    tiny = Path(__file__).resolve().parents[1] / "fixtures" / "tiny-chat.gguf"
    local = LocalBackend(LocalSettings(_env_file=None, model_path=tiny))
    await local.start()
    try:
        engine = make_engine(backend_override=local)
        out = RecordingChannel()
        await engine.handle(dm("lone \ud800 surrogate", message_id="1"), out)
        assert out.notices == []
    finally:
        await local.aclose()
