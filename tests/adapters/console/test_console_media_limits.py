"""The console's ``/attach`` honours a caller's own size limit (``/kb add``'s KB_MAX_FILE_MB)."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

from adapters.console import ConsoleAdapter
from tests.fakes.file_engine import MediaEngine


async def test_attach_copies_within_the_callers_limit_and_refuses_over_it(tmp_path: Path) -> None:
    (tmp_path / "small.txt").write_bytes(b"a" * 100)
    (tmp_path / "big.txt").write_bytes(b"b" * 5000)
    (tmp_path / "files").mkdir()
    engine = MediaEngine(tmp_path / "files", max_bytes=1000)
    out = io.StringIO()
    adapter = ConsoleAdapter(
        engine,
        files_dir=tmp_path / "exports",
        user_id="ada",
        stdin=io.StringIO(f"/attach {tmp_path}/small.txt\n/attach {tmp_path}/big.txt /kb add\n"),
        stdout=out,
    )
    await adapter.start()
    await asyncio.wait_for(adapter.wait_closed(), 20)
    await adapter.aclose()

    lines = out.getvalue().splitlines()
    assert any("saved small.txt: 100 bytes" in line for line in lines)
    assert any("refused: This file is 0.1 MB; the limit is 0 MB." in line for line in lines)
    assert [p.read_bytes() for p in engine.saved] == [b"a" * 100]
