"""Photos, voice notes and text files sent to the engine, as a user sees them answered."""

from __future__ import annotations

import io
import json
import zipfile

import pytest

from adapters.memory.in_memory import InMemoryStore
from core.intake import NO_STT, fenced, is_text_file
from core.media import content_hash
from core.settings import MediaSettings
from core.types import ChatMessage, CompletionRequest, IncomingAction, Role
from tests.core.conftest import EngineFactory, dm
from tests.fakes.media import FakeReader, FakeTranscriber, FileChannel, image_bytes
from tests.fakes.scripted import ScriptedBackend

PLANT = image_bytes(1024, 768, b"leaf")


def users(request: CompletionRequest) -> list[ChatMessage]:
    return [m for m in request.messages if m.role is Role.USER]


def all_images(backend: ScriptedBackend) -> int:
    return sum(len(m.images) for call in backend.calls for m in call.messages)


@pytest.fixture
def reader() -> FakeReader:
    return FakeReader()


@pytest.fixture
def transcriber() -> FakeTranscriber:
    return FakeTranscriber()


async def test_a_photo_with_its_caption_is_one_turn_for_a_vision_model_even_after_a_restart(
    make_engine: EngineFactory, backend: ScriptedBackend, reader: FakeReader
) -> None:
    backend.vision = True
    engine = make_engine(reader=reader)
    out = FileChannel()
    photo = out.attach("photo", "plant.jpg", PLANT, "image/jpeg")
    await engine.handle(dm("what is this plant?", attachments=(photo,)), out)

    turn = users(backend.calls[-1])[-1]
    assert turn.content == "what is this plant?"
    assert [(i.data, i.width, i.height) for i in turn.images] == [(PLANT, 1024, 768)]
    assert out.replies == ["echo: what is this plant? | remembered: nothing"]
    assert not out.paths[0].exists()  # the download's temporary folder is gone

    await engine.aclose()
    restarted = make_engine(reader=reader)  # a new process: no cache of any kind
    await restarted.handle(dm("and is it poisonous?"), FileChannel())
    earlier, newest = users(backend.calls[-1])
    assert earlier.content == "what is this plant?"
    assert [i.data for i in earlier.images] == [PLANT]
    assert newest.images == ()


async def test_a_text_only_model_is_told_once_and_answers_the_caption_without_the_image(
    make_engine: EngineFactory, backend: ScriptedBackend, reader: FakeReader
) -> None:
    engine = make_engine(reader=reader)
    out = FileChannel()
    photo = out.attach("photo", "plant.jpg", PLANT, "image/jpeg")
    await engine.handle(dm("what is this plant?", attachments=(photo,)), out)

    assert len(out.notices) == 1
    assert "scripted can't see images" in out.notices[0]
    assert out.replies == ["echo: what is this plant? | remembered: nothing"]
    assert all_images(backend) == 0

    # Without a caption there is nothing to answer: only the sentence, nothing stored.
    bare = out.attach("photo", "", PLANT, "image/jpeg")
    await engine.handle(dm("", attachments=(bare,)), out)
    assert len(backend.calls) == 1
    assert out.notices[-1] == (
        "scripted can't see images, nor can this bot's other models: please describe it in words."
    )

    # The captioned photo was kept: a vision model sees it after /model.
    backend.vision = True
    await engine.handle(dm("/model scripted-large"), out)
    await engine.handle(dm("so?"), out)
    assert [i.data for m in users(backend.calls[-1]) for i in m.images] == [PLANT]


async def test_a_voice_note_is_transcribed_shown_and_answered(
    make_engine: EngineFactory,
    backend: ScriptedBackend,
    transcriber: FakeTranscriber,
    store: InMemoryStore,
) -> None:
    engine = make_engine(transcriber=transcriber)
    out = FileChannel()
    voice = out.attach("voice", "voice.ogg", b"OggS" + b"\0" * 500, "audio/ogg", duration=3)
    await engine.handle(dm("", attachments=(voice,)), out)

    assert out.notices == ["🎤 “what is the capital of France”"]
    assert users(backend.calls[-1])[-1].content == "what is the capital of France"
    assert out.replies == ["echo: what is the capital of France | remembered: nothing"]
    await engine.handle(dm("/history"), out)
    assert "voice note voice.ogg (0:03, 504 bytes)" in out.notices[-1]


async def test_voice_without_speech_to_text_or_too_long_is_refused_before_any_download(
    make_engine: EngineFactory, backend: ScriptedBackend
) -> None:
    out = FileChannel()
    voice = out.attach("voice", "voice.ogg", b"OggS", "audio/ogg", duration=3)
    await make_engine().handle(dm("", attachments=(voice,)), out)
    assert out.notices == [NO_STT]

    engine = make_engine(
        transcriber=FakeTranscriber(),
        media=MediaSettings(_env_file=None, stt_max_seconds=60),
    )
    long = out.attach("voice", "talk.ogg", b"OggS", "audio/ogg", duration=125)
    await engine.handle(dm("", attachments=(long,)), out)
    assert out.notices[-1] == "That voice note is too long (2:05; I transcribe at most 1:00)."
    assert out.downloads == []
    assert backend.calls == []


async def test_a_file_over_max_file_mb_is_refused_by_name_and_size_before_any_download(
    make_engine: EngineFactory, backend: ScriptedBackend, reader: FakeReader
) -> None:
    engine = make_engine(reader=reader, media=MediaSettings(_env_file=None, max_file_mb=1))
    out = FileChannel()
    huge = out.attach("photo", "huge.jpg", PLANT, "image/jpeg", size=3 * 1024 * 1024)
    await engine.handle(dm("look", attachments=(huge,)), out)
    assert out.notices == ['"huge.jpg" is too big (3.0 MB; I take files of at most 1 MB).']
    assert out.downloads == []
    assert backend.calls == []


async def test_a_text_file_reaches_the_model_and_a_too_long_one_is_refused_with_the_limit(
    make_engine: EngineFactory, backend: ScriptedBackend, reader: FakeReader
) -> None:
    engine = make_engine(
        reader=reader,
        media=MediaSettings(_env_file=None, max_file_chars=200),
        max_input_chars=20,  # the typed text's limit; the file is longer and still read
    )
    out = FileChannel()
    notes = "# Shopping\n- ```eggs```\n- milk\n"
    doc = out.attach("document", "notes.md", notes.encode(), "text/markdown")
    await engine.handle(dm("summarise this", attachments=(doc,)), out)
    turn = users(backend.calls[-1])[-1].content
    assert turn == f"summarise this\n\nnotes.md:\n````\n{notes.rstrip()}\n````"

    big = out.attach("document", "big.txt", b"a" * 500, "text/plain")
    await engine.handle(dm("and this", attachments=(big,)), out)
    assert out.notices[-1] == "big.txt is too long: I read at most 200 characters of a file."
    assert len(backend.calls) == 1

    pdf = out.attach("document", "report.pdf", b"%PDF", "application/pdf")
    await engine.handle(dm("", attachments=(pdf,)), out)
    assert 'I can\'t read "report.pdf"' in out.notices[-1]
    assert len(backend.calls) == 1
    assert out.downloads == ["ref-1", "ref-2"]  # the PDF was never fetched


async def test_a_corrupt_image_or_a_failed_download_is_a_clear_message_and_the_bot_goes_on(
    make_engine: EngineFactory,
    backend: ScriptedBackend,
    reader: FakeReader,
    transcriber: FakeTranscriber,
    store: InMemoryStore,
) -> None:
    backend.vision = True
    engine = make_engine(reader=reader, transcriber=transcriber)
    out = FileChannel()
    broken = out.attach("photo", "broken.jpg", b"\xff\xd8 garbage", "image/jpeg")
    await engine.handle(dm("what is this?", attachments=(broken,)), out)
    assert out.notices == ['"broken.jpg" is not an image I can read.']

    transcriber.fail = True
    voice = out.attach("voice", "v.ogg", b"OggS", "audio/ogg")
    await engine.handle(dm("", attachments=(voice,)), out)
    assert "couldn't transcribe" in out.notices[-1]

    gone = out.attach("photo", "gone.jpg", PLANT, "image/jpeg")
    del out.served[gone.ref]
    await engine.handle(dm("and this?", attachments=(gone,)), out)
    assert out.notices[-1].startswith('I could not fetch "gone.jpg"')

    assert backend.calls == []
    await engine.handle(dm("hello"), out)
    assert out.replies == ["echo: hello | remembered: nothing"]  # nothing else was stored


async def test_images_count_in_the_budget_so_old_photo_turns_drop_out(
    make_engine: EngineFactory, backend: ScriptedBackend, reader: FakeReader
) -> None:
    backend.vision = True
    engine = make_engine(reader=reader, context_window=3000, max_reply_tokens=200)
    out = FileChannel()
    for n in range(6):  # 765 tokens each (a 768x768 image: four tiles)
        photo = out.attach("photo", f"p{n}.jpg", image_bytes(1024, 1024, bytes([65 + n])))
        await engine.handle(dm(f"photo {n}", attachments=(photo,)), out)
    request = backend.calls[-1]
    seen = [m.content for m in users(request)]
    assert seen[-1] == "photo 5"
    assert "photo 0" not in seen
    assert 1 < sum(len(m.images) for m in request.messages) < 6

    backend.vision = False  # a text-only model pays nothing for them: every turn fits
    await engine.handle(dm("recap"), out)
    assert len(users(backend.calls[-1])) == 7
    assert all(not m.images for m in backend.calls[-1].messages)


async def test_history_and_export_list_attachments(
    make_engine: EngineFactory, backend: ScriptedBackend, reader: FakeReader
) -> None:
    backend.vision = True
    engine = make_engine(reader=reader)
    out = FileChannel()
    photo = out.attach("photo", "plant.jpg", PLANT, "image/jpeg")
    doc = out.attach("document", "notes.txt", b"milk\n", "text/plain")
    await engine.handle(dm("look", attachments=(photo, doc)), out)

    await engine.handle(dm("/history"), out)
    assert out.notices[-1].endswith(
        "Attachments:\n- file notes.txt (5 bytes)\n- photo plant.jpg (1024x768, 269 bytes)"
    )
    await engine.handle(dm("/export"), out)  # with a stored photo: a ZIP file
    with zipfile.ZipFile(io.BytesIO(out.files[-1][1])) as bundle:
        markdown = bundle.read("chinwag-export.md").decode()
    assert "Attached: file notes.txt (5 bytes); photo plant.jpg (1024x768, 269 bytes)" in markdown
    await engine.handle(dm("/export json"), out)
    with zipfile.ZipFile(io.BytesIO(out.files[-1][1])) as bundle:
        exported = json.loads(bundle.read("chinwag-export.json"))
    first = exported["conversations"][0]["messages"][0]
    assert [a["name"] for a in first["attachments"]] == ["notes.txt", "plant.jpg"]


async def test_forget_leaves_no_media_behind(
    make_engine: EngineFactory,
    backend: ScriptedBackend,
    reader: FakeReader,
    store: InMemoryStore,
) -> None:
    backend.vision = True
    engine = make_engine(reader=reader)
    out = FileChannel()
    photo = out.attach("photo", "plant.jpg", PLANT, "image/jpeg")
    await engine.handle(dm("look", attachments=(photo,)), out)
    assert await store.load_media([content_hash(PLANT)])
    await engine.handle(dm("/forget"), out)
    _, action_id = out.confirmations[-1]
    await engine.handle_action(IncomingAction("test", "alice", "alice", action_id, True), out)
    assert await store.load_media([content_hash(PLANT)]) == {}


def test_text_files_are_known_by_type_or_name_and_fenced_safely() -> None:
    assert is_text_file("data.csv", None)
    assert is_text_file("x", "application/json")
    assert is_text_file("main.py", "application/octet-stream")
    assert not is_text_file("report.pdf", "application/pdf")
    assert fenced("a.md", "x\n```\ny") == "a.md:\n````\nx\n```\ny\n````"
