"""The shared download helper: pieces to a private file, within a limit, nothing left on failure."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from adapters.files import DownloadRefused, check_size, save_stream


async def _pieces(*chunks: bytes, fail: BaseException | None = None) -> AsyncIterator[bytes]:
    for chunk in chunks:
        await asyncio.sleep(0)
        yield chunk
    if fail is not None:
        raise fail


async def test_pieces_are_written_to_a_private_file(tmp_path: Path) -> None:
    target = tmp_path / "doc"
    size = await save_stream(_pieces(b"abc", b"defg"), target, limit=10)
    assert size == 7
    assert target.read_bytes() == b"abcdefg"
    assert target.stat().st_mode & 0o777 == 0o600


async def test_more_bytes_than_the_limit_stop_the_download_and_leave_nothing(
    tmp_path: Path,
) -> None:
    target = tmp_path / "doc"
    with pytest.raises(DownloadRefused) as caught:
        await save_stream(_pieces(b"a" * 600_000, b"b" * 600_000), target, limit=1024 * 1024)
    assert caught.value.user_message == "This file is over the 1 MB limit."
    assert not target.exists()


@pytest.mark.parametrize("error", [OSError("connection reset"), asyncio.CancelledError()])
async def test_a_failed_or_cancelled_download_leaves_nothing(
    tmp_path: Path, error: BaseException
) -> None:
    target = tmp_path / "doc"
    with pytest.raises(type(error)):
        await save_stream(_pieces(b"abc", fail=error), target, limit=100)
    assert not target.exists()


def test_a_known_size_over_the_limit_is_refused_with_both_sizes() -> None:
    with pytest.raises(DownloadRefused) as caught:
        check_size(25 * 1024 * 1024, 20 * 1024 * 1024, "manual.pdf")
    assert caught.value.user_message == "This file is 25 MB; the limit is 20 MB."
    check_size(None, 10, "unknown size passes")
    check_size(10, 10, "exactly the limit passes")
