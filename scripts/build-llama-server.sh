#!/usr/bin/env bash
# Build llama.cpp's own llama-server from the llama.cpp that the pinned llama-cpp-python
# vendors, with the same CPU flags as the Python bindings (scripts/llama-cpu-flags.sh), and
# print the binary's path. `python -m bench.local` compares chinwag's batching against it.
#
# Usage: scripts/build-llama-server.sh VENV   (the virtualenv whose pip downloads the sdist)
#
# Built once (about 10 minutes on 2 cores) and kept under
# ${XDG_CACHE_HOME:-~/.cache}/chinwag/llama-server-VERSION-KEY/; later calls print the cached
# path at once. Without the web UI (nothing is fetched at build time) and without OpenSSL.
# Progress goes to stderr, the build's output to build.log beside the binary; only the path
# goes to stdout. Exit status: 0 built or cached, 1 the build failed, 2 misuse.
#
# Environment: LLAMA_CPP_VERSION as for scripts/install-llama.sh (keep the two equal).
set -euo pipefail

LLAMA_CPP_VERSION="${LLAMA_CPP_VERSION:-0.3.36}"

[[ $# -eq 1 ]] || { echo "usage: $0 VENV   (the virtualenv directory, e.g. .venv)" >&2; exit 2; }
PY="$1/bin/python"
[[ -x "$PY" ]] || { echo "build-llama-server: $PY not found; run make install-dev first" >&2; exit 2; }

say() { echo "build-llama-server: $*" >&2; }

FLAGS="$(bash "$(dirname "$0")/llama-cpu-flags.sh")"
KEY="$(printf '%s|%s' "$LLAMA_CPP_VERSION" "$FLAGS" | sha256sum | cut -c1-16)"
DIR="${XDG_CACHE_HOME:-$HOME/.cache}/chinwag/llama-server-$LLAMA_CPP_VERSION-$KEY"
BIN="$DIR/llama-server"
if [[ -x "$BIN" ]]; then
    echo "$BIN"
    exit 0
fi

command -v cmake >/dev/null || { say "cmake is needed (Debian/Ubuntu: apt install cmake)"; exit 1; }
mkdir -p "$DIR"
LOG="$DIR/build.log"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

say "building llama-server from llama-cpp-python $LLAMA_CPP_VERSION's llama.cpp (once; about 10 minutes on 2 cores)"
say "CPU flags: $FLAGS; log: $LOG"
if ! "$PY" -m pip download --disable-pip-version-check --no-deps --no-binary :all: \
    -d "$WORK" "llama-cpp-python==$LLAMA_CPP_VERSION" >"$LOG" 2>&1; then
    say "could not download the llama-cpp-python $LLAMA_CPP_VERSION source (log: $LOG)"
    exit 1
fi
tar -xzf "$WORK"/llama_cpp_python-*.tar.gz -C "$WORK"
SRC="$(echo "$WORK"/llama_cpp_python-*/vendor/llama.cpp)"
# shellcheck disable=SC2086  # FLAGS is a list of words
if ! { cmake -S "$SRC" -B "$WORK/build" -DCMAKE_BUILD_TYPE=Release $FLAGS \
        -DBUILD_SHARED_LIBS=OFF -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=ON \
        -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_UI=OFF \
        -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_OPENSSL=OFF \
    && cmake --build "$WORK/build" --target llama-server -j "$(nproc)"; } >>"$LOG" 2>&1; then
    say "BUILD FAILED (log: $LOG)"
    tail -n 20 "$LOG" >&2
    exit 1
fi
cp "$WORK/build/bin/llama-server" "$BIN.tmp"
mv "$BIN.tmp" "$BIN"
say "built $BIN"
echo "$BIN"
