"""``chinwag db upgrade`` against a database it cannot reach: one line with the cause."""

from __future__ import annotations

from pathlib import Path

from tests.adapters.memory.test_startup_errors import closed_port
from tests.bots.test_cli import chinwag, cli_env


async def test_db_upgrade_on_a_closed_port_says_where_and_why_in_one_line(
    tmp_path: Path,
) -> None:
    port = closed_port()
    env = cli_env(tmp_path, DATABASE_URL=f"postgresql://chinwag:hunter2@127.0.0.1:{port}/db")
    status, out, err = await chinwag(tmp_path, "db", "upgrade", env=env)
    assert status == 1
    assert out == ""
    [line] = err.splitlines()
    assert line.startswith(
        f"chinwag: DATABASE_URL: cannot connect to PostgreSQL at 127.0.0.1:{port} "
        "(connection refused) (cause: ConnectionRefusedError: "
    )
    assert "hunter2" not in err
