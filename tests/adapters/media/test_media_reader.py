"""The media reader: photos made ready for a vision model, text files read, audio measured."""

from __future__ import annotations

import io
import struct
import wave
import zlib
from pathlib import Path

import numpy as np
import pytest
from mutagen.ogg import OggPage
from PIL import Image

from adapters.media import LocalMediaReader
from core.errors import FileTooLong, MediaError
from core.media import content_hash, image_tokens

_ORIENTATION = 0x0112
_GPS_IFD = 0x8825

reader = LocalMediaReader()


def _photo(width: int = 4032, height: int = 3024) -> Image.Image:
    """A camera-sized picture with texture (JPEG encodes it like a photo) and a red corner."""
    rng = np.random.default_rng(7)
    small = (rng.random((height // 16, width // 16, 3)) * 200).astype("uint8")
    image = Image.fromarray(small).resize((width, height), Image.Resampling.BILINEAR)
    image.paste((255, 0, 0), (0, 0, width // 4, height // 4))  # top-left, as stored
    return image


def _camera_jpeg(path: Path, *, orientation: int | None = None) -> None:
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"
    if orientation is not None:
        exif[_ORIENTATION] = orientation
    exif.get_ifd(_GPS_IFD).update({1: "N", 2: (52.0, 31.0, 12.0), 3: "E", 4: (13.0, 24.0, 0.0)})
    _photo().save(path, format="JPEG", quality=92, exif=exif)


def _pixel(image: Image.Image, x: int, y: int) -> tuple[int, ...]:
    pixel = image.getpixel((x, y))
    assert isinstance(pixel, tuple)
    return pixel


def _is_red(image: Image.Image, x: int, y: int) -> bool:
    red, green, blue = _pixel(image.convert("RGB"), x, y)
    return red > 200 and green < 60 and blue < 60


async def test_a_12_megapixel_photo_becomes_a_1024_jpeg_without_metadata(tmp_path: Path) -> None:
    path = tmp_path / "camera.jpg"
    _camera_jpeg(path)
    assert path.stat().st_size > 1_000_000

    blob = await reader.prepare_image(path, "plant.jpg")

    # At most 1024x768 (fit_size): the JPEG decoder's 1/4 scale, close enough to skip resampling.
    assert (blob.width, blob.height) == (1008, 756)
    assert image_tokens(blob.width, blob.height) == image_tokens(1024, 768)
    assert blob.mime_type == "image/jpeg"
    assert blob.sha256 == content_hash(blob.data)
    assert len(blob.data) < 400_000
    with Image.open(io.BytesIO(blob.data)) as out:
        assert out.format == "JPEG"
        assert out.size == (1008, 756)
        assert not out.getexif(), "EXIF (camera, GPS position) must not leave the machine"
        assert not out.getexif().get_ifd(_GPS_IFD)
        assert _is_red(out, 10, 10)
    assert b"PhoneMaker" not in blob.data


async def test_the_exif_orientation_is_applied(tmp_path: Path) -> None:
    path = tmp_path / "portrait.jpg"
    _camera_jpeg(path, orientation=6)  # stored landscape, shown turned 90 degrees clockwise

    blob = await reader.prepare_image(path, "portrait.jpg")

    assert (blob.width, blob.height) == (756, 1008)
    with Image.open(io.BytesIO(blob.data)) as out:
        assert _is_red(out, blob.width - 10, 10), "the stored top-left is now top-right"
        assert not _is_red(out, 10, 10)
        assert _ORIENTATION not in out.getexif()


async def test_a_photo_the_decoder_cannot_scale_close_enough_is_resampled(tmp_path: Path) -> None:
    path = tmp_path / "telegram.jpg"
    _photo(2560, 1920).save(path, quality=87)

    blob = await reader.prepare_image(path, "telegram.jpg")

    assert (blob.width, blob.height) == (1024, 768)


async def test_a_small_image_is_not_upscaled(tmp_path: Path) -> None:
    path = tmp_path / "small.png"
    Image.new("RGB", (300, 200), (0, 128, 255)).save(path)

    blob = await reader.prepare_image(path, "small.png")

    assert (blob.width, blob.height) == (300, 200)
    assert blob.mime_type == "image/jpeg"


async def test_a_png_with_transparency_stays_png(tmp_path: Path) -> None:
    image = Image.new("RGBA", (2000, 1000), (0, 0, 0, 0))
    image.paste((20, 200, 20, 255), (500, 250, 1500, 750))
    path = tmp_path / "logo.png"
    image.save(path)

    blob = await reader.prepare_image(path, "logo.png")

    assert blob.mime_type == "image/png"
    assert (blob.width, blob.height) == (1536, 768)
    with Image.open(io.BytesIO(blob.data)) as out:
        assert out.format == "PNG"
        assert out.mode == "RGBA"
        assert _pixel(out, 5, 5)[3] == 0  # the corner is still see-through
        assert _pixel(out, 768, 384)[3] == 255


async def test_an_opaque_png_screenshot_becomes_jpeg(tmp_path: Path) -> None:
    path = tmp_path / "screenshot.png"
    Image.new("RGBA", (800, 600), (240, 240, 240, 255)).save(path)

    blob = await reader.prepare_image(path, "screenshot.png")

    assert blob.mime_type == "image/jpeg"


async def test_corrupt_bytes_are_refused_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "upload.bin"
    path.write_bytes(b"\x00\x01garbage" * 100)

    with pytest.raises(MediaError) as caught:
        await reader.prepare_image(path, "holiday.jpg")

    assert "holiday.jpg" in caught.value.user_message
    assert "JPEG, PNG" in caught.value.user_message


async def test_a_truncated_jpeg_is_refused_as_damaged(tmp_path: Path) -> None:
    whole = tmp_path / "whole.jpg"
    _photo(800, 600).save(whole, quality=90)
    path = tmp_path / "cut.jpg"
    path.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])

    with pytest.raises(MediaError) as caught:
        await reader.prepare_image(path, "cut.jpg")

    assert caught.value.user_message == "I couldn't read the image cut.jpg: the file is damaged."


async def test_a_decompression_bomb_is_refused(tmp_path: Path) -> None:
    # A real PNG whose header claims 30000x30000 pixels (900 megapixels) with little data.
    data = io.BytesIO()
    Image.new("1", (8, 8)).save(data, format="PNG")
    png = bytearray(data.getvalue())
    ihdr = png.index(b"IHDR")
    png[ihdr + 4 : ihdr + 12] = struct.pack(">II", 30_000, 30_000)
    crc_at = ihdr + 4 + 13
    png[crc_at : crc_at + 4] = struct.pack(">I", zlib.crc32(bytes(png[ihdr : ihdr + 17])))
    path = tmp_path / "bomb.png"
    path.write_bytes(bytes(png))

    with pytest.raises(MediaError) as caught:
        await reader.prepare_image(path, "bomb.png")

    assert "bomb.png is too large an image" in caught.value.user_message


# --- text files ------------------------------------------------------------------------


async def _read(tmp_path: Path, data: bytes, *, max_chars: int = 1000) -> str:
    path = tmp_path / "upload"
    path.write_bytes(data)
    return await reader.read_text(path, "notes.txt", max_chars)


async def test_utf8_text_is_read_with_newlines_normalised(tmp_path: Path) -> None:
    text = await _read(tmp_path, "Grüße\r\nfrom Zürich\rbye 👋\n".encode())
    assert text == "Grüße\nfrom Zürich\nbye 👋\n"


async def test_a_utf8_bom_is_dropped(tmp_path: Path) -> None:
    assert await _read(tmp_path, b"\xef\xbb\xbfname,age\n") == "name,age\n"


async def test_utf16_with_a_bom_is_read(tmp_path: Path) -> None:
    assert await _read(tmp_path, "naïve café\r\n".encode("utf-16")) == "naïve café\n"


async def test_latin1_text_is_detected(tmp_path: Path) -> None:
    french = (
        "Le café où nous déjeunions était près de la gare. Après le repas, "
        "nous avons goûté une crème brûlée et un thé à la menthe très sucré.\n"
    ) * 3
    text = await _read(tmp_path, french.encode("latin-1"))
    assert text == french


async def test_a_binary_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(MediaError) as caught:
        await _read(tmp_path, b"PK\x03\x04\x14\x00\x00\x00\x08\x00" + bytes(range(256)))
    assert caught.value.user_message == "notes.txt isn't a text file (it holds binary data)."


async def test_a_file_over_the_limit_is_refused_naming_it(tmp_path: Path) -> None:
    with pytest.raises(FileTooLong) as caught:
        await _read(tmp_path, b"a" * 1001, max_chars=1000)
    assert caught.value.limit == 1000
    assert "1,000 characters" in caught.value.user_message
    assert "notes.txt" in caught.value.user_message


async def test_a_file_exactly_at_the_limit_is_read(tmp_path: Path) -> None:
    assert await _read(tmp_path, "é".encode() * 1000, max_chars=1000) == "é" * 1000


async def test_a_huge_file_is_refused_without_reading_it_all(tmp_path: Path) -> None:
    path = tmp_path / "dump.log"
    with path.open("wb") as file:
        file.truncate(200 * 1024 * 1024)  # sparse: 200 MB of NULs that are never read
    with pytest.raises(FileTooLong):
        await reader.read_text(path, "dump.log", 50_000)


# --- audio length ----------------------------------------------------------------------


async def test_the_length_of_a_wav_file(tmp_path: Path) -> None:
    path = tmp_path / "note.wav"
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(b"\x00\x00" * 12_000)  # 1.5 s

    assert await reader.audio_seconds(path, "audio/wav") == pytest.approx(1.5)


async def test_the_length_of_an_ogg_opus_voice_note(tmp_path: Path) -> None:
    # A Telegram-style voice note's container: OpusHead, OpusTags, one audio page whose
    # granule position says 3.5 s at 48 kHz after the pre-skip.
    pre_skip = 312
    head = OggPage()
    head.serial, head.sequence, head.first = 7, 0, True
    head.packets = [b"OpusHead" + struct.pack("<BBHIhB", 1, 1, pre_skip, 48000, 0, 0)]
    tags = OggPage()
    tags.serial, tags.sequence = 7, 1
    tags.packets = [b"OpusTags" + struct.pack("<I", 4) + b"test" + struct.pack("<I", 0)]
    audio = OggPage()
    audio.serial, audio.sequence, audio.last = 7, 2, True
    audio.position = pre_skip + int(3.5 * 48000)
    audio.packets = [b"\xfc\xff\xfe" * 20]
    path = tmp_path / "file_12.oga"
    path.write_bytes(head.write() + tags.write() + audio.write())

    assert await reader.audio_seconds(path, "audio/ogg") == pytest.approx(3.5)


async def test_an_unknown_audio_file_has_no_length(tmp_path: Path) -> None:
    path = tmp_path / "clip.webm"
    path.write_bytes(b"\x1a\x45\xdf\xa3" + b"\x00" * 64)
    assert await reader.audio_seconds(path, "audio/webm") is None
