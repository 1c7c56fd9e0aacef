"""Which file a user sent is a photo, a voice note, a text file to read, or another document."""

from __future__ import annotations

import pytest

from core.media import classify, is_text_file
from core.types import AttachmentKind


@pytest.mark.parametrize(
    ("name", "mime_type", "kind"),
    [
        ("plant.jpg", "image/jpeg", AttachmentKind.PHOTO),
        ("IMG_0001.HEIC", "image/heic", AttachmentKind.PHOTO),  # the reader refuses it clearly
        ("scan.png", None, AttachmentKind.PHOTO),
        ("photo.webp", "application/octet-stream", AttachmentKind.PHOTO),
        ("file_3.oga", "audio/ogg", AttachmentKind.VOICE),
        ("voice-message.ogg", None, AttachmentKind.VOICE),
        ("song.mp3", "audio/mpeg", AttachmentKind.VOICE),
        ("memo.m4a", "audio/x-m4a", AttachmentKind.VOICE),
        ("diagram.svg", "image/svg+xml", AttachmentKind.DOCUMENT),
        ("notes.md", "text/markdown", AttachmentKind.DOCUMENT),
        ("report.pdf", "application/pdf", AttachmentKind.DOCUMENT),
        ("movie.webm", "video/webm", AttachmentKind.DOCUMENT),
    ],
)
def test_what_a_file_is(name: str, mime_type: str | None, kind: AttachmentKind) -> None:
    assert classify(name, mime_type) is kind


@pytest.mark.parametrize(
    ("name", "mime_type"),
    [
        ("notes.txt", None),
        ("README.MD", "application/octet-stream"),
        ("main.py", "text/x-python"),
        ("data.csv", None),
        ("config.json", None),
        ("Makefile", None),
        ("export", "application/json"),
        ("page", "text/html; charset=utf-8"),
        ("feed", "application/atom+xml"),
    ],
)
def test_text_files_are_read_into_the_turn(name: str, mime_type: str | None) -> None:
    assert is_text_file(name, mime_type)


@pytest.mark.parametrize(
    ("name", "mime_type"),
    [("report.pdf", "application/pdf"), ("archive.zip", None), ("book.docx", None), ("", None)],
)
def test_other_documents_are_not_text(name: str, mime_type: str | None) -> None:
    assert not is_text_file(name, mime_type)
