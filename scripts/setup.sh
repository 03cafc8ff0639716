#!/usr/bin/env bash
# Installs what the build needs when it is missing: clang and libclang-dev for the
# rocksdb crate's bindgen (Debian packages). Safe to run again; does nothing when all
# is present. Source it to also get CARGO_TARGET_DIR set.
set -euo pipefail

missing=()
command -v clang >/dev/null 2>&1 || missing+=(clang)
# bindgen loads libclang.so at run time.
if ! ls /usr/lib/llvm-*/lib/libclang.so* /usr/lib/x86_64-linux-gnu/libclang*.so* >/dev/null 2>&1; then
    missing+=(libclang-dev)
fi
if ((${#missing[@]})); then
    echo "setup: installing ${missing[*]}" >&2
    sudo_cmd=()
    [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
fi
command -v cargo >/dev/null 2>&1 || { echo "setup: cargo not found; install the Rust toolchain (rustup)" >&2; exit 1; }
