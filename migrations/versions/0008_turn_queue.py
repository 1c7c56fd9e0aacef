"""The turn queue (PostgreSQL only): procrastinate's schema, and ingress's record of events.

``chinwag ingress`` and ``chinwag worker`` share turns through a procrastinate job queue in
the bot's own PostgreSQL database. This revision installs the schema procrastinate ships
with the installed version (its ``procrastinate_*`` tables, types, functions and triggers)
and ``queue_inbound``: one row per platform event ingress queued (bot, platform, chat and
platform message id, unique), written in the same transaction as its job, so that a
platform delivering an event again never queues a second turn; and ``queue_failures``, why
a turn's job failed (its error's class and message, never the user's text), for ``chinwag
queue``; and a trigger that wakes the workers when a job holding a conversation's lock ends
(procrastinate itself only wakes them for new jobs).

On SQLite it does nothing: the queue needs PostgreSQL (a one-process ``chinwag run`` does
not use it). The downgrade drops every ``procrastinate_*`` and ``queue_*`` object.

The migration-vs-models comparison leaves these objects out by name: they are the queue's,
not the memory store's.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 21:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op
from sqlalchemy.util import await_only

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_INBOUND = """
CREATE TABLE queue_inbound (
    bot varchar(64) NOT NULL,
    platform varchar(32) NOT NULL,
    chat_id varchar(128) NOT NULL,
    message_id varchar(128) NOT NULL,
    job_id bigint NOT NULL,
    received_at timestamp with time zone NOT NULL DEFAULT now(),
    CONSTRAINT pk_queue_inbound PRIMARY KEY (bot, platform, chat_id, message_id)
);
CREATE INDEX ix_queue_inbound_received_at ON queue_inbound (received_at);
CREATE TABLE queue_failures (
    job_id bigint NOT NULL,
    error text NOT NULL,
    failed_at timestamp with time zone NOT NULL DEFAULT now(),
    CONSTRAINT pk_queue_failures PRIMARY KEY (job_id)
);
"""

# procrastinate wakes its workers when a job is inserted, not when a job holding a lock
# ends: the next turn of that conversation would wait for the next poll (a second). This
# trigger says "a job is ready" as the holder ends (done, failed or deleted when done).
_LOCK_RELEASED = """
CREATE FUNCTION queue_notify_lock_released() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    waiting bigint;
BEGIN
    SELECT id INTO waiting FROM procrastinate_jobs
        WHERE lock = OLD.lock AND status = 'todo' ORDER BY priority DESC, id LIMIT 1;
    IF waiting IS NOT NULL THEN
        PERFORM pg_notify(
            'procrastinate_queue_v1#' || OLD.queue_name,
            json_build_object('type', 'job_inserted', 'job_id', waiting)::text
        );
    END IF;
    RETURN NULL;
END;
$$;
CREATE TRIGGER queue_lock_released_on_delete
    AFTER DELETE ON procrastinate_jobs FOR EACH ROW
    WHEN (OLD.status = 'doing' AND OLD.lock IS NOT NULL)
    EXECUTE FUNCTION queue_notify_lock_released();
CREATE TRIGGER queue_lock_released_on_update
    AFTER UPDATE OF status ON procrastinate_jobs FOR EACH ROW
    WHEN (OLD.status = 'doing' AND NEW.status <> 'doing' AND OLD.lock IS NOT NULL)
    EXECUTE FUNCTION queue_notify_lock_released();
"""

_DROP_ALL = """
DROP FUNCTION IF EXISTS queue_notify_lock_released() CASCADE;
DROP TABLE IF EXISTS queue_inbound;
DROP TABLE IF EXISTS queue_failures;
DO $$
DECLARE
    item record;
BEGIN
    FOR item IN
        SELECT c.relname FROM pg_class c
        WHERE c.relname LIKE 'procrastinate\\_%' AND c.relkind IN ('r', 'v', 'm')
          AND c.relnamespace = current_schema()::regnamespace
    LOOP
        EXECUTE format('DROP TABLE IF EXISTS %I CASCADE', item.relname);
    END LOOP;
    FOR item IN
        SELECT p.oid::regprocedure AS signature FROM pg_proc p
        WHERE p.proname LIKE 'procrastinate\\_%'
          AND p.pronamespace = current_schema()::regnamespace
    LOOP
        EXECUTE format('DROP FUNCTION IF EXISTS %s CASCADE', item.signature);
    END LOOP;
    FOR item IN
        SELECT t.typname FROM pg_type t
        WHERE t.typname LIKE 'procrastinate\\_%' AND t.typtype IN ('e', 'c', 'd')
          AND t.typnamespace = current_schema()::regnamespace
    LOOP
        EXECUTE format('DROP TYPE IF EXISTS %I CASCADE', item.typname);
    END LOOP;
END
$$;
"""


def _script(sql: str) -> None:
    """Run a multi-statement SQL script on the migration's own connection (asyncpg).

    asyncpg's ``execute`` without arguments takes a whole script (simple query protocol);
    SQLAlchemy would prepare it as one statement and parse its colons as parameters.
    """
    driver = op.get_bind().connection.driver_connection
    assert driver is not None
    await_only(driver.execute(sql))


def _schema() -> str:
    try:
        from procrastinate.schema import SchemaManager  # the scale extra; PostgreSQL only
    except ImportError as exc:
        raise RuntimeError(
            "PostgreSQL needs chinwag's scale extra for the turn queue's schema: "
            "pip install 'chinwag[scale]' (make install has it), then upgrade again"
        ) from exc

    return SchemaManager.get_schema()


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    _script(_schema())
    _script(_INBOUND)
    _script(_LOCK_RELEASED)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    _script(_DROP_ALL)
