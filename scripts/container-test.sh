#!/usr/bin/env bash
# The container test: build the Dockerfile, start compose.yaml with PostgreSQL, chat one
# message through the loopback fakes from inside the container, check the reply and the
# stored rows, tear everything down. Run by .ci/run; alone: `bash scripts/container-test.sh`.
#
# It needs root (rootful podman) and Debian's package servers and PyPI, not a registry:
#   - installs what is missing: podman, runc, debootstrap and podman's helpers (apt), and
#     podman-compose (PyPI, into its own venv under the cache directory);
#   - configures podman for this script only (CONTAINERS_CONF): runc instead of crun
#     (cgroups here are v1/hybrid) and default nofile/nproc ulimits it is allowed to set;
#   - makes a bookworm base image with debootstrap from the mirror apt uses, with Debian's
#     python3, venv, pip and ca-certificates (kept between runs, keyed on BASE_VERSION);
#   - builds a PostgreSQL image from Debian's package (scripts/container/postgres) for
#     CHINWAG_PG_IMAGE, and the Dockerfile on the base (--format docker keeps HEALTHCHECK),
#     trusting the machine's extra CAs (/usr/local/share/ca-certificates) through
#     EXTRA_CA_CERTS and reusing the llama wheel cache of `make install`;
#   - starts the fakes on the host (tests/fakes/serve_container_peers.py, in the test venv)
#     and the compose project on alternate ports, chats, checks PostgreSQL and the health
#     status, then `compose down -v` (a trap cleans up on every exit path).
#
# Environment: CHINWAG_LOCAL=0 builds and tests the API-only image; CHINWAG_TEST_PYTHON is
# the Python with the dev extra (default .venv/bin/python); CHINWAG_CONTAINER_CACHE the cache
# directory (default ~/.cache/chinwag/container). The images stay for the next run.
# Exit status 0 when everything passed; 1 with a line saying what failed (and the logs).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"

BASE_VERSION=1 # bump to rebuild the base image (new packages, new suite)
SUITE=bookworm
PODMAN_COMPOSE_VERSION=1.6.0
CACHE_ROOT="${XDG_CACHE_HOME:-$HOME/.cache}/chinwag"
CACHE="${CHINWAG_CONTAINER_CACHE:-$CACHE_ROOT/container}"
WHEELS="$CACHE_ROOT/wheels" # scripts/install-llama.sh's cache, shared with `make install`
TEST_PY="${CHINWAG_TEST_PYTHON:-$ROOT/.venv/bin/python}"
LOCAL="${CHINWAG_LOCAL:-1}"
BASE_IMAGE="localhost/chinwag-ci-base:$SUITE-$BASE_VERSION"
PG_IMAGE="localhost/chinwag-ci-postgres:$SUITE-$BASE_VERSION"
APP_IMAGE="localhost/chinwag-ci:local$LOCAL"
PROJECT="chinwagct$$"

T0=$SECONDS
PHASE_T=$SECONDS
say() { echo "container-test: $*"; }
fail() {
    echo "container-test: FAILED: $*" >&2
    exit 1
}
phase() { # phase NAME: print how long the previous phase took, start timing NAME
    if [[ -n "${PHASE:-}" ]]; then say "$PHASE took $((SECONDS - PHASE_T)) s"; fi
    PHASE="$1"
    PHASE_T=$SECONDS
    say "== $PHASE"
}

[[ "$(id -u)" == 0 ]] || fail "run as root: the test uses rootful podman"
[[ -x "$TEST_PY" ]] || fail "$TEST_PY not found: run make install-dev (or set CHINWAG_TEST_PYTHON)"
mkdir -p "$CACHE" "$WHEELS"
WORK="$(mktemp -d)"
FAKES_PID=""
COMPOSE=()

cleanup() {
    local status=$?
    set +e
    if [[ $status -ne 0 && ${#COMPOSE[@]} -gt 0 ]]; then
        say "logs of the compose project ($PROJECT):"
        "${COMPOSE[@]}" logs 2>&1 | tail -n 150 | sed 's/^/    /'
    fi
    if [[ $status -ne 0 && -s "$WORK/fakes.log" ]]; then
        say "log of the fakes:"
        sed 's/^/    /' "$WORK/fakes.log"
    fi
    if [[ ${#COMPOSE[@]} -gt 0 ]]; then
        "${COMPOSE[@]}" down -v -t 20 >"$WORK/down.log" 2>&1 \
            || { say "compose down failed:"; tail -n 20 "$WORK/down.log"; }
    fi
    if [[ -n "$FAKES_PID" ]] && kill -0 "$FAKES_PID" 2>/dev/null; then
        kill "$FAKES_PID"
        wait "$FAKES_PID" 2>/dev/null
    fi
    # Dangling layers of older builds; recent ones are the next build's cache (the builder
    # stage is not an ancestor of the image, so a plain prune would drop its layers).
    podman image prune -f --filter until=72h >/dev/null 2>&1
    rm -rf "$WORK"
    say "total $((SECONDS - T0)) s, exit status $status"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- tools --------------------------------------------------------------------------------
phase "tools"
APT_PACKAGES=(podman runc debootstrap uidmap slirp4netns fuse-overlayfs
    containernetworking-plugins golang-github-containernetworking-plugin-dnsname iptables conmon
    catatonit)
missing=()
for package in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
        || missing+=("$package")
done
if [[ ${#missing[@]} -gt 0 ]]; then
    say "installing ${missing[*]} (apt)"
    apt-get update -qq >"$WORK/apt.log" 2>&1 || { tail -n 20 "$WORK/apt.log"; fail "apt-get update"; }
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >>"$WORK/apt.log" 2>&1 \
        || { tail -n 20 "$WORK/apt.log"; fail "could not install ${missing[*]}"; }
fi
COMPOSE_VENV="$CACHE/podman-compose-$PODMAN_COMPOSE_VERSION"
if [[ ! -x "$COMPOSE_VENV/bin/podman-compose" ]]; then
    say "installing podman-compose $PODMAN_COMPOSE_VERSION (PyPI) into $COMPOSE_VENV"
    rm -rf "$COMPOSE_VENV"
    python3 -m venv "$COMPOSE_VENV"
    "$COMPOSE_VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
        "podman-compose==$PODMAN_COMPOSE_VERSION" >"$WORK/pip.log" 2>&1 \
        || { tail -n 20 "$WORK/pip.log"; fail "could not install podman-compose"; }
fi

# podman for this script only. runc: crun fails on these hybrid cgroups. The ulimits podman
# would copy from its own (raised) limits cannot be set here: ask for what we may set
# (runc is refused nproc above 32768 on this machine even under a higher hard limit).
nofile="$(ulimit -Hn)"
nproc="$(ulimit -Hu)"
[[ "$nofile" == unlimited || "$nofile" -gt 65536 ]] && nofile=65536
[[ "$nproc" == unlimited || "$nproc" -gt 32768 ]] && nproc=32768
cat >"$CACHE/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=$nproc:$nproc"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
export CONTAINERS_CONF="$CACHE/containers.conf"
podman info >"$WORK/podman-info.log" 2>&1 || { tail -n 20 "$WORK/podman-info.log"; fail "podman does not work here"; }

# The extra CAs of a TLS-intercepting proxy, for apt and pip inside the builds.
EXTRA_CA_CERTS=""
for cert in /usr/local/share/ca-certificates/*.crt; do
    [[ -f "$cert" ]] && EXTRA_CA_CERTS+="$(cat "$cert")"$'\n'
done

# --- base image ----------------------------------------------------------------------------
phase "base image"
mirror_of_apt() {
    # The Debian mirror apt uses (deb822 .sources first, then one-line sources.list).
    local uri
    uri="$(awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)"
    if [[ -z "$uri" ]]; then
        uri="$(awk '$1 == "deb" && $0 !~ /security/ {for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) {print $i; exit}}' \
            /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null || true)"
    fi
    echo "${uri:-http://deb.debian.org/debian}"
}
if podman image exists "$BASE_IMAGE"; then
    say "reusing $BASE_IMAGE"
else
    MIRROR="$(mirror_of_apt)"
    say "debootstrap $SUITE from $MIRROR (about a minute)"
    debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
        "$SUITE" "$WORK/rootfs" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 \
        || { tail -n 30 "$WORK/debootstrap.log"; fail "debootstrap $SUITE from $MIRROR"; }
    rm -rf "$WORK"/rootfs/var/cache/apt/archives/*.deb "$WORK"/rootfs/var/lib/apt/lists/*
    tar -C "$WORK/rootfs" --numeric-owner -c . \
        | podman import --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' - "$BASE_IMAGE" >/dev/null 2>&1 \
        || fail "podman import of the $SUITE base"
    rm -rf "$WORK/rootfs"
    say "made $BASE_IMAGE"
fi

# --- images --------------------------------------------------------------------------------
phase "PostgreSQL image"
podman build --quiet --format docker --build-arg BASE_IMAGE="$BASE_IMAGE" \
    --build-arg EXTRA_CA_CERTS="$EXTRA_CA_CERTS" -t "$PG_IMAGE" scripts/container/postgres \
    >"$WORK/build-pg.log" 2>&1 || { tail -n 30 "$WORK/build-pg.log"; fail "building $PG_IMAGE"; }

phase "chinwag image (CHINWAG_LOCAL=$LOCAL)"
podman build --format docker --build-arg BASE_IMAGE="$BASE_IMAGE" \
    --build-arg CHINWAG_LOCAL="$LOCAL" --build-arg EXTRA_CA_CERTS="$EXTRA_CA_CERTS" \
    -v "$WHEELS:/root/.cache/chinwag/wheels" -t "$APP_IMAGE" . >"$WORK/build.log" 2>&1 \
    || { tail -n 40 "$WORK/build.log"; fail "building the Dockerfile"; }
grep -E '^install-llama:' "$WORK/build.log" | sed 's/^/    /' || true
[[ "$(podman image inspect --format '{{.Config.Healthcheck}}' "$APP_IMAGE")" == *healthz* ]] \
    || fail "the image has no HEALTHCHECK (was it built with --format docker?)"
say "$APP_IMAGE: $(podman image inspect --format '{{.Size}}' "$APP_IMAGE" | awk '{printf "%.0f MB", $1 / 1e6}')"

# --- run -----------------------------------------------------------------------------------
phase "compose up and chat"
"$TEST_PY" -m tests.fakes.serve_container_peers --ready "$WORK/fakes.env" --timeout 180 \
    >"$WORK/fakes.log" 2>&1 &
FAKES_PID=$!
for _ in $(seq 1 100); do
    [[ -s "$WORK/fakes.env" ]] && break
    kill -0 "$FAKES_PID" 2>/dev/null || fail "the fakes did not start"
    sleep 0.1
done
[[ -s "$WORK/fakes.env" ]] || fail "the fakes did not start within 10 s"
# shellcheck source=/dev/null
source "$WORK/fakes.env"
HTTP_PORT="$("$TEST_PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
PG_PASSWORD="ct-$RANDOM$RANDOM"

# The project runs from a copy of compose.yaml next to a test .env (never the user's .env).
mkdir -p "$WORK/project"
cp compose.yaml "$WORK/project/compose.yaml"
HOST=host.containers.internal
cat >"$WORK/project/.env" <<EOF
TELEGRAM_BOT_TOKEN=$TELEGRAM_BOT_TOKEN
TELEGRAM_API_BASE_URL=http://$HOST:$TELEGRAM_PORT
TELEGRAM_POLL_TIMEOUT=1
TELEGRAM_EDIT_INTERVAL=0.2
LLM_BACKEND=openai
OPENAI_BASE_URL=http://$HOST:$OPENAI_PORT/v1
OPENAI_API_KEY=$OPENAI_API_KEY
OPENAI_MODEL=gpt-4o-mini
LOG_LEVEL=INFO
POSTGRES_PASSWORD=$PG_PASSWORD
EOF
export CHINWAG_IMAGE="$APP_IMAGE" CHINWAG_PG_IMAGE="$PG_IMAGE" CHINWAG_HTTP_PORT="$HTTP_PORT"
COMPOSE=("$COMPOSE_VENV/bin/podman-compose" -p "$PROJECT" -f "$WORK/project/compose.yaml")
"${COMPOSE[@]}" up -d --no-build >"$WORK/up.log" 2>&1 \
    || { tail -n 30 "$WORK/up.log"; fail "compose up"; }
say "compose project $PROJECT is up; waiting for the chat (at most 180 s)"
wait "$FAKES_PID" || {
    FAKES_PID=""
    fail "the chat through the container did not work (see the fakes' log below)"
}
FAKES_PID=""
grep '^fakes:' "$WORK/fakes.log" | sed 's/^/    /'

phase "checks"
DB_CONTAINER="$(podman ps --filter "label=com.docker.compose.project=$PROJECT" \
    --filter "label=com.docker.compose.service=db" --format '{{.Names}}' | head -n 1)"
APP_CONTAINER="$(podman ps --filter "label=com.docker.compose.project=$PROJECT" \
    --filter "label=com.docker.compose.service=chinwag" --format '{{.Names}}' | head -n 1)"
[[ -n "$DB_CONTAINER" && -n "$APP_CONTAINER" ]] || fail "the db or chinwag container is not running"
psql_in_db() {
    podman exec "$DB_CONTAINER" psql -U chinwag -d chinwag -At -v ON_ERROR_STOP=1 -c "$1"
}
rows="$(psql_in_db "SELECT m.role || '|' || m.status || '|' || m.content FROM messages m
    JOIN conversations c ON c.id = m.conversation_id
    WHERE c.platform = 'telegram' AND c.chat_id = '$CHAT_ID' ORDER BY m.seq")" \
    || fail "could not read the stored messages from PostgreSQL"
printf '%s\n' "$rows" | sed 's/^/    stored: /'
has_row() { # has_row ROLE STATUS CONTENT (STATUS * for any)
    awk -F'|' -v role="$1" -v status="$2" -v content="$3" \
        '$1 == role && (status == "*" || $2 == status) && substr($0, length($1 $2) + 3) == content {found = 1}
         END {exit !found}' <<<"$rows"
}
has_row user "*" "$MESSAGE" || fail "the user's message is not stored in PostgreSQL"
has_row assistant complete "$EXPECTED_REPLY" || fail "the bot's reply is not stored (complete) in PostgreSQL"

# The HEALTHCHECK asks /healthz on CHINWAG_HTTP_LISTEN: healthy once chinwag serves it
# (skipped while this tree has no such listener).
health=""
if ! grep -rqs --include='*.py' CHINWAG_HTTP_LISTEN core adapters bots \
    && ! grep -rqs --include='*.py' 'http_listen' core adapters bots; then
    health=skipped
    say "health check: skipped, this tree has no CHINWAG_HTTP_LISTEN listener yet"
fi
for _ in $(seq 1 30); do
    [[ -z "$health" ]] || break
    podman healthcheck run "$APP_CONTAINER" >/dev/null 2>&1 && health=healthy && break
    sleep 1
done
if [[ "$health" == skipped ]]; then
    :
elif [[ "$health" == healthy ]]; then
    say "health check: healthy"
    [[ "$(podman inspect --format '{{.State.Health.Status}}' "$APP_CONTAINER")" == healthy ]] \
        || fail "podman does not report the chinwag container healthy"
else
    fail "the chinwag container's health check (GET /healthz on CHINWAG_HTTP_LISTEN) never passed"
fi

phase "compose down"
"${COMPOSE[@]}" down -v >"$WORK/down.log" 2>&1 || { tail -n 20 "$WORK/down.log"; fail "compose down"; }
COMPOSE=()
say "$PHASE took $((SECONDS - PHASE_T)) s"
say "PASSED: one message through the container, reply and rows in PostgreSQL checked"
