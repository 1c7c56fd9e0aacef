#!/bin/sh
# First start: initdb with POSTGRES_USER (default postgres) and POSTGRES_PASSWORD, create
# POSTGRES_DB (default the user's name), accept password logins from anywhere. Then run the
# server in the foreground as the postgres user.
set -eu
PGDATA="${PGDATA:-/var/lib/postgresql/data}"
BIN="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"

if [ "$(id -u)" = 0 ]; then
    mkdir -p "$PGDATA" /run/postgresql
    chown -R postgres:postgres "$PGDATA" /run/postgresql
    chmod 700 "$PGDATA"
    exec runuser -u postgres -- sh "$0" "$@"
fi

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    if [ -z "${POSTGRES_PASSWORD:-}" ]; then
        echo "postgres: set POSTGRES_PASSWORD (the superuser's password)" >&2
        exit 1
    fi
    user="${POSTGRES_USER:-postgres}"
    db="${POSTGRES_DB:-$user}"
    pwfile="$(mktemp)"
    printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
    "$BIN/initdb" -D "$PGDATA" -U "$user" --pwfile="$pwfile" -E UTF8 --locale=C.UTF-8 \
        --auth-local=trust --auth-host=scram-sha-256 >/dev/null
    rm -f "$pwfile"
    echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
    echo "listen_addresses = '*'" >>"$PGDATA/postgresql.conf"
    if [ "$db" != postgres ]; then
        echo "CREATE DATABASE \"$db\"" | "$BIN/postgres" --single -D "$PGDATA" postgres >/dev/null
    fi
    echo "postgres: initialised $PGDATA (user $user, database $db)"
fi
exec "$BIN/postgres" -D "$PGDATA" "$@"
