# Detection of what the build actually uses, as functions of a root directory so that
# tests can run them against temporary trees laid out like a fresh or a provisioned
# machine (tests/setup_detect.rs). Sourced by scripts/setup.sh.
#
# has_libclang ROOT: does bindgen (through clang-sys) find a loadable libclang?
# clang-sys loads `libclang.so`, `libclang-N.so`, `libclang.so.N` or `libclang-N.so.M`
# from LIBCLANG_PATH, from `llvm-config --libdir`, or from the usual library folders.
# `libclang-cpp.so.N` (the C++ interface, package libclang-cppN, present on fresh
# Debian machines) is a different library that bindgen cannot use, so it does not count.
has_libclang() {
    local root="${1:-}" dir f base
    if [ -n "${LIBCLANG_PATH:-}" ]; then
        for f in "$LIBCLANG_PATH"/libclang*.so* "$LIBCLANG_PATH"; do
            [ -e "$f" ] || continue
            base="$(basename "$f")"
            is_bindgen_libclang "$base" && return 0
        done
    fi
    # The folders clang-sys searches on Linux (build/common.rs: DIRECTORIES_LINUX).
    for dir in "$root"/usr/local/llvm*/lib* "$root"/usr/local/lib* "$root"/usr/local/lib*/* \
               "$root"/usr/local/lib*/*/* "$root"/usr/lib* "$root"/usr/lib*/* "$root"/usr/lib*/*/*; do
        [ -d "$dir" ] || continue
        for f in "$dir"/libclang*.so*; do
            [ -e "$f" ] || continue
            is_bindgen_libclang "$(basename "$f")" && return 0
        done
    done
    return 1
}

# is_bindgen_libclang NAME: NAME is libclang.so, libclang.so.N, libclang-N.so or libclang-N.so.M
# with N a version (digits and dots), not libclang-cpp.so.N.
is_bindgen_libclang() {
    case "$1" in
        libclang.so | libclang.so.[0-9]*) return 0 ;;
        libclang-[0-9]*.so | libclang-[0-9]*.so.[0-9]*) return 0 ;;
        *) return 1 ;;
    esac
}

# missing_packages ROOT: the Debian packages to install so that the build and the model
# fetch find what they use: cmake (llama.cpp's build), a C++ compiler (llama.cpp and the
# C++ shims; cmake asks for $CXX or c++), libclang (bindgen), python3 with pip (the
# model fetch downloads wheels with `python3 -m pip`). Prints one name per line.
missing_packages() {
    local root="${1:-}"
    command -v cmake >/dev/null 2>&1 || echo cmake
    command -v "${CXX:-c++}" >/dev/null 2>&1 || echo g++
    command -v python3 >/dev/null 2>&1 || echo python3
    python3 -m pip --version >/dev/null 2>&1 || echo python3-pip
    has_libclang "$root" || echo libclang-dev
}
