"""``chinwag db backup`` and ``chinwag db downgrade`` as an operator runs them."""

from __future__ import annotations

import re
import shutil
import stat
from pathlib import Path

from adapters.memory import migrate
from tests.adapters.memory.test_db_safety import sqlite_url_of, store_messages, stored_texts
from tests.bots.test_cli import chinwag, cli_env


async def test_db_backup_writes_a_private_file_in_the_data_dir_that_restores(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    texts = await store_messages(sqlite_url_of(data / "chinwag.db"), 12)
    status, out, err = await chinwag(tmp_path, "db", "backup")
    assert (status, err) == (0, "")
    found = re.fullmatch(r"backed up the database to (\S+) \((\d+\.\d kB)\)\n", out)
    assert found, out
    target = Path(found.group(1))
    assert target.parent == data
    assert re.fullmatch(r"chinwag-backup-\d{8}-\d{6}\.db", target.name)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    restored = tmp_path / "restored.db"  # the README's restore: copy the file back
    shutil.copyfile(target, restored)
    assert await stored_texts(sqlite_url_of(restored)) == texts


async def test_db_downgrade_refuses_to_delete_messages_then_backs_up_with_yes(
    tmp_path: Path,
) -> None:
    url = sqlite_url_of(tmp_path / "data" / "chinwag.db")
    texts = await store_messages(url, 3)
    status, out, err = await chinwag(tmp_path, "db", "downgrade", "base")
    assert status == 1
    assert out == ""
    [line] = err.splitlines()
    assert "would delete stored data:" in line
    assert "messages (3 rows)" in line
    assert "--yes" in line
    assert await migrate.current(url) == migrate.head_revision()
    assert await stored_texts(url) == texts

    status, out, err = await chinwag(tmp_path, "db", "downgrade", "base", "--yes")
    assert status == 0, err
    found = re.match(r"backed up the database to (\S+) first\ndatabase at base \(empty\)\n", out)
    assert found, out
    assert await migrate.current(url) is None
    assert await stored_texts(sqlite_url_of(Path(found.group(1)))) == texts


async def test_db_backup_without_pg_dump_names_the_package_to_install(tmp_path: Path) -> None:
    env = cli_env(
        tmp_path, DATABASE_URL="postgresql://chinwag:hunter2@127.0.0.1:1/chinwag", PATH=""
    )
    status, out, err = await chinwag(tmp_path, "db", "backup", env=env)
    assert status == 1
    assert out == ""
    [line] = err.splitlines()
    assert line.startswith("chinwag: pg_dump is not installed")
    assert "apt install postgresql-client" in line
    assert "hunter2" not in err


async def test_a_failed_migration_names_the_database_error_in_its_one_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "chinwag.db").write_bytes(b"not a database, but the operator's mistake" * 200)
    status, out, err = await chinwag(tmp_path, "db", "upgrade")
    assert (status, out) == (1, "")
    [line] = err.splitlines()
    assert line.startswith("chinwag: migrating sqlite+aiosqlite:///")
    assert line.endswith("failed: DatabaseError: file is not a database")
