#!/usr/bin/env bash
# Install what a fresh Debian/Ubuntu machine lacks to build and run Tandem:
# cmake and a C++ compiler (llama.cpp), libclang (bindgen), python3 + pip (model fetch).
# Each check asks for the thing the build actually uses (scripts/lib/detect.sh).
set -euo pipefail
. "$(dirname "$0")/lib/detect.sh"

mapfile -t need < <(missing_packages /)

if [ ${#need[@]} -gt 0 ]; then
    echo "setup: installing ${need[*]}" >&2
    sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
    if ! has_libclang /; then
        echo "setup: libclang-dev installed but no libclang.so found; set LIBCLANG_PATH" >&2
        exit 1
    fi
fi

if ! command -v cargo >/dev/null 2>&1; then
    echo "setup: cargo not found; install Rust (https://rustup.rs) and re-run" >&2
    exit 1
fi
