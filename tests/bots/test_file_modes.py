"""What chinwag keeps at rest is its owner's alone: 0600 files in a 0700 directory.

Real processes under umask 022 (the common default, which leaves new files world-readable):
the data directory, the SQLite database with its WAL and SHM files, the backup made before a
migration, a console ``/export`` and ``chinwag export -o``; and a database an older version
left ``0644`` is tightened when chinwag starts.
"""

from __future__ import annotations

import asyncio
import os
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters.memory import migrate
from tests.bots.test_cli import chinwag, llm, llm_env
from tests.fakes.openai_server import FakeOpenAIServer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

__all__ = ["llm"]  # the fixture, imported for these tests


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.usefixtures("umask_022")
async def test_data_at_rest_is_private_under_umask_022(
    tmp_path: Path, llm: FakeOpenAIServer
) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    database = data / "chinwag.db"
    # A database an older version made: an earlier schema, readable by everyone.
    await migrate.upgrade(f"sqlite+aiosqlite:///{database}", "0001")
    database.chmod(0o644)
    data.chmod(0o755)
    env = llm_env(tmp_path, llm)

    code, out, err = await chinwag(tmp_path, "chat", stdin="hello\n/export\n", env=env)
    assert code == 0, err
    assert "I have: hello" in out
    assert _mode(data) == 0o700
    assert _mode(database) == 0o600
    [backup] = data.glob("chinwag.db.bak-*")  # made before migrating from 0001
    assert _mode(backup) == 0o600
    exports = [p for p in (data / "exports").iterdir()]
    assert exports, out
    assert _mode(data / "exports") == 0o700
    assert {_mode(p) for p in exports} == {0o600}

    target = tmp_path / "history.md"
    code, _, err = await chinwag(
        tmp_path, "export", "console", "tester", "-o", str(target), env=env
    )
    assert code == 0, err
    assert "hello" in target.read_text()
    assert _mode(target) == 0o600


@pytest.mark.usefixtures("umask_022")
async def test_new_data_dir_and_wal_files_are_private(
    tmp_path: Path, llm: FakeOpenAIServer
) -> None:
    """While chinwag runs, the new directory is 0700 and the database, WAL and SHM 0600."""
    data = tmp_path / "fresh" / "data"
    env = {**llm_env(tmp_path, llm), "CHINWAG_DATA_DIR": str(data)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bots.cli",
        "chat",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        cwd=tmp_path,
        env=env,
    )
    assert proc.stdin is not None
    assert proc.stdout is not None
    try:
        proc.stdin.write(b"hi\n")
        await proc.stdin.drain()
        assert await asyncio.wait_for(proc.stdout.readline(), 60) == b"I have: hi\n"
        files = {p.name: _mode(p) for p in data.iterdir() if p.name.startswith("chinwag.db")}
    finally:
        proc.stdin.close()
        await asyncio.wait_for(proc.wait(), 60)
    assert _mode(data) == 0o700
    # the migration lock stays: deleting a flock file lets two processes lock different inodes
    names = ["chinwag.db", "chinwag.db-wal", "chinwag.db-shm", "chinwag.db.migrate.lock"]
    assert files == dict.fromkeys(names, 0o600)
