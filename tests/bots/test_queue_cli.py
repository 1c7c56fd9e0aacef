"""``chinwag ingress``/``worker`` refuse to start without PostgreSQL or Redis, in one line;
``chinwag queue`` shows the queue and retries a failed turn."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from adapters.queue.app import queue_app
from adapters.queue.turns import ProcrastinateTurnQueue
from core.queue import JobKind, message_payload
from core.types import ConversationKey, IncomingMessage
from tests.bots.test_cli import chinwag, cli_env

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


@pytest.mark.parametrize("command", ["worker", "ingress"])
async def test_without_postgres_it_says_so_in_one_line(tmp_path: Path, command: str) -> None:
    env = cli_env(tmp_path, TELEGRAM_BOT_TOKEN="1:x", REDIS_URL="redis://127.0.0.1:6379/0")
    code, _, err = await chinwag(tmp_path, command, env=env)
    assert code == 2
    assert err.strip().splitlines() == [
        f"chinwag: chinwag {command} needs PostgreSQL in DATABASE_URL "
        "(postgresql://chinwag:secret@db:5432/chinwag): the turn queue lives in the bot's "
        "database"
    ]


@pytest.mark.postgres
async def test_without_redis_it_says_so_in_one_line(tmp_path: Path, direct_url: str) -> None:
    env = cli_env(tmp_path, TELEGRAM_BOT_TOKEN="1:x", DATABASE_URL=direct_url)
    env.pop("REDIS_URL", None)
    env["CHINWAG_MODE"] = "worker"  # `chinwag run` in a container
    code, _, err = await chinwag(tmp_path, "run", env=env)
    assert code == 2
    [line] = err.strip().splitlines()
    assert line.startswith("chinwag: chinwag worker needs REDIS_URL (redis://127.0.0.1:6379/0)")


@pytest.mark.postgres
async def test_queue_lists_a_failed_turn_and_retries_it(tmp_path: Path, direct_url: str) -> None:
    app = queue_app(direct_url)
    await app.open_async()
    try:
        msg = IncomingMessage("telegram", "42", "7", "hello", message_id="9")
        key = ConversationKey("clibot", "telegram", "42", None, "7")
        await ProcrastinateTurnQueue(app).enqueue(JobKind.MESSAGE, key, message_payload(msg))
        connector = app.connector
        await connector.execute_query_async(  # a worker took it and its handler raised
            "UPDATE procrastinate_jobs SET status = 'failed'"
        )
        await connector.execute_query_async(
            "INSERT INTO queue_failures (job_id, error) SELECT id, 'StoreError: down' "
            "FROM procrastinate_jobs"
        )
        [row] = await connector.execute_query_all_async("SELECT id FROM procrastinate_jobs")
        job_id = row["id"]
    finally:
        await app.close_async()
    password_url = make_url(direct_url).set(password="s3cret-pw", port=1).render_as_string(False)
    env = cli_env(tmp_path, DATABASE_URL=direct_url)
    code, out, err = await chinwag(tmp_path, "queue", "--json", env=env)
    assert (code, err) == (0, "")
    figures = json.loads(out)
    assert (figures["depth"], figures["failed"]) == (0, 1)
    [failed] = figures["failed_turns"]
    assert (failed["id"], failed["platform"], failed["error"]) == (
        job_id,
        "telegram",
        "StoreError: down",
    )
    code, out, err = await chinwag(tmp_path, "queue", env=env)
    assert code == 0
    assert f"  {job_id}  telegram message" in out
    assert "StoreError: down" in out
    code, out, err = await chinwag(tmp_path, "queue", "retry", str(job_id), env=env)
    assert (code, out.strip()) == (0, f"turn {job_id} queued again")
    code, out, err = await chinwag(tmp_path, "queue", "retry", str(job_id), env=env)
    assert code == 1
    assert err.strip() == f"chinwag: turn {job_id} is todo, not failed"
    code, out, _ = await chinwag(tmp_path, "queue", "--json", env=env)
    assert (json.loads(out)["depth"], json.loads(out)["failed"]) == (1, 0)
    # The database away: one line, and the password is not in it.
    code, out, err = await chinwag(
        tmp_path, "queue", env=cli_env(tmp_path, DATABASE_URL=password_url)
    )
    [line] = err.strip().splitlines()
    assert code == 1
    assert "s3cret-pw" not in err
    assert line.startswith("chinwag: cannot reach the turn queue's database postgresql")
