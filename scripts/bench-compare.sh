#!/usr/bin/env bash
# Compare a benchmark between two commits, alternating old and new runs on this machine.
#
# Usage: scripts/bench-compare.sh OLD_REV NEW_REV MODULE [ROUNDS] [-- BENCH_ARGS...]
#   e.g. scripts/bench-compare.sh 4e4c759 HEAD bench.discord 3
# Each revision is checked out into a temporary worktree and run with this checkout's .venv;
# the outputs land in bench-compare-OUT/<module>-<old|new>-<round>.txt for reading side by
# side (medians are what the issues ask for). PostgreSQL rows need CHINWAG_TEST_POSTGRES_URL.
set -euo pipefail
[[ $# -ge 3 ]] || { echo "usage: $0 OLD_REV NEW_REV MODULE [ROUNDS] [-- ARGS...]" >&2; exit 2; }
old_rev=$1 new_rev=$2 module=$3
shift 3
rounds=3
if [[ $# -gt 0 && $1 != "--" ]]; then rounds=$1; shift; fi
if [[ ${1:-} == "--" ]]; then shift; fi
root=$(git rev-parse --show-toplevel)
python="$root/.venv/bin/python"
[[ -x $python ]] || { echo "run make install-dev first (no $python)" >&2; exit 2; }
work=$(mktemp -d)
out="$root/bench-compare-out"
mkdir -p "$out"
cleanup() {
    git -C "$root" worktree remove --force "$work/old" 2>/dev/null || true
    git -C "$root" worktree remove --force "$work/new" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
git -C "$root" worktree add -q --detach "$work/old" "$old_rev"
git -C "$root" worktree add -q --detach "$work/new" "$new_rev"
for round in $(seq 1 "$rounds"); do
    for side in old new; do
        file="$out/$module-$side-$round.txt"
        (cd "$work/$side" && PYTHONPATH="$work/$side" "$python" -m "$module" "$@") >"$file" 2>&1
        echo "$(date +%T) $module $side round $round -> $file"
    done
done
