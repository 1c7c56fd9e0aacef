"""``chinwag export`` with stored photos: ``-o FILE.zip`` bundles them, any other name not."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from adapters.memory import migrate
from adapters.memory.store import SqlMemoryStore
from core.media import MediaBlob, StoredAttachment, content_hash
from core.types import ConversationKey, NewMessage, Role
from tests.bots.test_cli import chinwag

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4  # stored as is; never decoded here


async def store_a_photo(tmp_path: Path) -> MediaBlob:
    """The console user ``tester`` of ``clibot`` sent ``leaf.png`` with a question."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'data' / 'chinwag.db'}"
    (tmp_path / "data").mkdir()
    await migrate.upgrade(url)
    blob = MediaBlob(content_hash(PNG), "image/png", PNG, 32, 32)
    photo = StoredAttachment("photo", "leaf.png", len(PNG), "image/png", blob.sha256, 32, 32)
    async with SqlMemoryStore(url) as store:
        await store.save_media(blob)
        key = ConversationKey("clibot", "console", "tester", None, "tester")
        conversation = await store.current_conversation(key)
        message = NewMessage(
            role=Role.USER,
            content="what leaf is this?",
            author_id="tester",
            extra={"attachments": [photo.as_json()]},
            media=[blob.sha256],
        )
        await store.append_messages(conversation.id, [message])
    return blob


async def test_export_to_a_zip_bundles_the_images_and_links_them(tmp_path: Path) -> None:
    blob = await store_a_photo(tmp_path)
    target = tmp_path / "out.zip"
    code, out, err = await chinwag(tmp_path, "export", "console", "tester", "-o", str(target))
    assert (code, out) == (0, ""), err
    assert err.splitlines()[-1] == f"wrote {target}"
    assert "left out" not in err
    with zipfile.ZipFile(io.BytesIO(target.read_bytes())) as bundle:
        assert bundle.namelist() == ["chinwag-export.md", "images/1-leaf.png"]
        assert bundle.read("images/1-leaf.png") == blob.data
        document = bundle.read("chinwag-export.md").decode()
    assert "what leaf is this?" in document
    assert "![leaf.png](images/1-leaf.png)" in document.splitlines()


async def test_export_of_the_document_alone_says_the_images_are_left_out(tmp_path: Path) -> None:
    await store_a_photo(tmp_path)
    code, out, err = await chinwag(tmp_path, "export", "console", "tester", "--format", "json")
    assert code == 0, err
    assert '"name": "leaf.png"' in out
    assert '"file"' not in out
    assert err.splitlines()[-1] == (
        "chinwag: 1 stored image left out; use -o FILE.zip to write them with the document"
    )

    code, help_text, _ = await chinwag(tmp_path, "export", "--help")
    assert code == 0
    assert ".zip" in help_text
