#!/usr/bin/env bash
# Print the CMake flags that choose llama.cpp's CPU code for this machine: the same for the
# Python bindings (scripts/install-llama.sh) and for llama-server (scripts/build-llama-server.sh),
# so that a benchmark comparing the two compares the same machine code.
#
# Usage: scripts/llama-cpu-flags.sh
#
# Why: llama.cpp's default build compiles with -march=native; on CPUs that report AMX that
# build crashes (SIGSEGV in the AMX matrix code) on the first generation step with a quantized
# model. We build a portable-but-fast variant chosen from `uname -m` and /proc/cpuinfo.
set -euo pipefail

cpu_flags() {
    # Flags of the first CPU (all cores of a machine report the same set).
    grep -m1 -E '^(flags|Features)[[:space:]]*:' /proc/cpuinfo 2>/dev/null | cut -d: -f2 || true
}

flags=" $(cpu_flags) "
has() { [[ "$flags" == *" $1 "* ]]; }
case "$(uname -m)" in
    x86_64 | amd64 | i686)
        # Never -march=native (AMX crash); turn on what the CPU really has.
        args="-DGGML_NATIVE=OFF"
        if has avx2; then
            args+=" -DGGML_AVX=ON -DGGML_AVX2=ON"
            if has fma; then args+=" -DGGML_FMA=ON"; fi
            if has f16c; then args+=" -DGGML_F16C=ON"; fi
            if has bmi2; then args+=" -DGGML_BMI2=ON"; fi
        elif has avx; then
            args+=" -DGGML_AVX=ON -DGGML_AVX2=OFF -DGGML_FMA=OFF"
            if has f16c; then args+=" -DGGML_F16C=ON"; fi
        else
            args+=" -DGGML_AVX=OFF -DGGML_AVX2=OFF -DGGML_FMA=OFF -DGGML_F16C=OFF"
        fi
        ;;
    aarch64 | arm64)
        # ARM has no AMX problem; the native build picks NEON/dotprod/SVE correctly.
        args="-DGGML_NATIVE=ON"
        ;;
    *)
        args="-DGGML_NATIVE=OFF"
        ;;
esac
echo "$args"
