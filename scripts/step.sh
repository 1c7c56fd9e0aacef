#!/usr/bin/env bash
# Run one long install step quietly: say what it does, show progress and the time it took.
#
# Usage: scripts/step.sh LABEL LOG -- COMMAND [ARG...]
#
# COMMAND's output goes to LOG (kept). While it runs, a line "... still LABEL (1m30s)" comes
# every STEP_PROGRESS_SECONDS (default 15); at the end "LABEL: done in 4m12s". On success,
# the warnings and errors pip and the compilers print are shown, minus known noise (pip's
# "Location ... is ignored" from a machine-wide pip config, deprecation notices). On failure,
# the last 25 lines of LOG and its path, and COMMAND's exit status is returned.
set -uo pipefail

if [[ $# -lt 4 || "$3" != "--" ]]; then
    echo "usage: $0 LABEL LOG -- COMMAND [ARG...]" >&2
    exit 2
fi
LABEL="$1"
LOG="$2"
shift 3
EVERY="${STEP_PROGRESS_SECONDS:-15}"

elapsed() {
    local s="$1"
    if ((s >= 60)); then printf '%dm%02ds' $((s / 60)) $((s % 60)); else printf '%ds' "$s"; fi
}

# Lines worth a look after a successful step; known noise stays in the log only.
NOISE='WARNING: Location .* is ignored|^DEPRECATION:|WARNING: Ignoring invalid distribution|pip version|A new release of pip'
notable() {
    grep -E '^(WARNING|ERROR|error)[: ]|[[:space:]]error:' "$1" | grep -Ev "$NOISE" | head -n 20
}

mkdir -p "$(dirname "$LOG")"
echo "$LABEL ..."
start=$SECONDS
"$@" >"$LOG" 2>&1 &
pid=$!
# A non-interactive shell starts background jobs with SIGINT ignored: pass Ctrl-C on.
trap 'kill -TERM "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; echo "$LABEL: interrupted"; exit 130' INT TERM
next=$EVERY
while kill -0 "$pid" 2>/dev/null; do
    sleep 1
    took=$((SECONDS - start))
    if ((took >= next)) && kill -0 "$pid" 2>/dev/null; then
        echo "    ... still $LABEL ($(elapsed "$took"))"
        next=$((next + EVERY))
    fi
done
wait "$pid"
status=$?
trap - INT TERM
took="$(elapsed $((SECONDS - start)))"
if ((status != 0)); then
    echo "$LABEL: FAILED after $took (exit status $status). Last lines of $LOG:"
    tail -n 25 "$LOG" | sed 's/^/    /'
    exit "$status"
fi
shown="$(notable "$LOG")"
if [[ -n "$shown" ]]; then
    printf '%s\n' "$shown" | sed 's/^/    /'
    echo "    (full output: $LOG)"
fi
echo "$LABEL: done in $took"
