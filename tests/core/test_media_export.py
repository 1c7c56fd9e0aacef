"""``/export`` bundles the stored images with the document, within the upload limit."""

from __future__ import annotations

import io
import json
import zipfile

import pytest

from adapters.memory.in_memory import InMemoryStore
from core.export import UPLOAD_LIMITS
from core.media import content_hash
from tests.core.conftest import EngineFactory, dm
from tests.fakes.media import FakeReader, FileChannel, image_bytes
from tests.fakes.scripted import ScriptedBackend

PLANT = image_bytes(1024, 768, b"leaf")
CAT = image_bytes(640, 480, b"meow")


async def two_photos(make_engine: EngineFactory, backend: ScriptedBackend) -> FileChannel:
    """Alice sends a plant (twice), a nameless cat photo and a text file; then chats."""
    backend.vision = True
    engine = make_engine(reader=FakeReader())
    out = FileChannel()
    plant = out.attach("photo", "my plant!.jpg", PLANT, "image/jpeg")
    notes = out.attach("document", "notes.txt", b"milk\n", "text/plain")
    await engine.handle(dm("what is this?", attachments=(plant, notes)), out)
    await engine.handle(dm("", attachments=(out.attach("photo", "", CAT, "image/jpeg"),)), out)
    again = out.attach("photo", "plant.jpg", PLANT, "image/jpeg")
    await engine.handle(dm("and this one?", attachments=(again,)), out)
    return out


def unzip(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as bundle:
        return {name: bundle.read(name) for name in bundle.namelist()}


async def test_export_is_a_zip_whose_markdown_links_each_stored_image(
    make_engine: EngineFactory, backend: ScriptedBackend, store: InMemoryStore
) -> None:
    out = await two_photos(make_engine, backend)
    engine = make_engine()
    await engine.handle(dm("/export"), out)

    name, data, caption = out.files[-1]
    assert name.startswith("testbot-history-") and name.endswith(".zip")
    assert caption == "Your history with me and its 2 images."
    files = unzip(data)
    cat = f"images/2-{content_hash(CAT)[:12]}.jpg"
    assert list(files) == ["chinwag-export.md", "images/1-my_plant.jpg", cat]
    stored = await store.load_media([content_hash(PLANT), content_hash(CAT)])
    assert files["images/1-my_plant.jpg"] == stored[content_hash(PLANT)].data == PLANT
    assert files[cat] == stored[content_hash(CAT)].data == CAT

    lines = files["chinwag-export.md"].decode().splitlines()
    attached = lines.index(
        "Attached: file notes.txt (5 bytes); photo my plant!.jpg (1024x768, 269 bytes)"
    )
    assert lines[attached + 2] == "![my plant!.jpg](images/1-my_plant.jpg)"
    assert f"![photo]({cat})" in lines
    # the same photo sent again is one file, linked from both messages
    assert "![plant.jpg](images/1-my_plant.jpg)" in lines

    # The same history exported again is the same archive, byte for byte.
    await engine.handle(dm("/export"), out)
    assert out.files[-1][1] == data


async def test_json_export_names_each_image_file(
    make_engine: EngineFactory, backend: ScriptedBackend
) -> None:
    out = await two_photos(make_engine, backend)
    await make_engine().handle(dm("/export json"), out)

    files = unzip(out.files[-1][1])
    document = json.loads(files["chinwag-export.json"])
    first, *_ = document["conversations"][0]["messages"]
    notes, plant = first["attachments"]
    assert plant["file"] == "images/1-my_plant.jpg" and plant["sha256"] == content_hash(PLANT)
    assert "file" not in notes
    assert files[plant["file"]] == PLANT


async def test_without_images_the_export_is_the_document_alone(
    make_engine: EngineFactory, backend: ScriptedBackend
) -> None:
    engine = make_engine(reader=FakeReader())
    out = FileChannel()
    notes = out.attach("document", "notes.txt", b"milk\n", "text/plain")
    await engine.handle(dm("remember this", attachments=(notes,)), out)
    await engine.handle(dm("/export"), out)

    name, data, caption = out.files[-1]
    assert name.endswith(".md") and caption == "Your history with me."
    text = data.decode()
    assert text.startswith("# Conversations with testbot")
    assert "Attached: file notes.txt (5 bytes)" in text and "](images/" not in text


async def test_a_zip_over_the_upload_limit_sends_the_document_and_says_why(
    make_engine: EngineFactory, backend: ScriptedBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = await two_photos(make_engine, backend)
    monkeypatch.setitem(UPLOAD_LIMITS, "test", 600)  # the test platform: 600 bytes
    await make_engine().handle(dm("/export"), out)

    name, data, caption = out.files[-1]
    assert name.endswith(".md")
    text = data.decode()
    assert "photo my plant!.jpg (1024x768, 269 bytes)" in text
    assert "](images/" not in text  # nothing links to files that did not come
    assert caption.startswith("Your history with me, without its 2 images: together they")
    assert "chinwag export ... -o FILE.zip" in caption
