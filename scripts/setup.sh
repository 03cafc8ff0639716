#!/usr/bin/env bash
# Installs what the build and the tests need when it is missing (Debian packages):
# clang and libclang-dev for the rocksdb crate's bindgen, chromium for the dashboard
# test, curl for the demo, mariadb-server for the MySQL backend's tests, openssl for
# the HTTPS test's throwaway CA. Safe to run
# again; does nothing when all is present (scripts/env.sh picks the target directory).
set -euo pipefail

missing=()
for pkg in clang libclang-dev chromium curl mariadb-server openssl; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    echo "setup: installing ${missing[*]}" >&2
    sudo_cmd=()
    [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
fi
command -v cargo >/dev/null 2>&1 || { echo "setup: cargo not found; install the Rust toolchain (rustup)" >&2; exit 1; }
