#!/usr/bin/env bash
# The whole test suite, as CI runs it: install build deps, format check, clippy,
# every test (unit and HTTP API, head vectors, conformance, differential, recovery,
# end-to-end with real processes and SIGKILL), all in the
# release profile (one RocksDB build serves them all). Prints each stage's duration.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

results=$(mktemp)
trap 'rm -f "$results"' EXIT

# Runs a test stage, keeping its "test result:" lines for the closing summary.
tests() {
    "$@" 2>&1 | tee -a "$results"
}

stage() {
    local name=$1
    shift
    local t0=$SECONDS
    echo "=== $name"
    "$@"
    echo "=== $name: $((SECONDS - t0)) s"
}

stage install bash scripts/setup.sh
stage fmt bash -c "cargo fmt --all --check && cargo fmt --manifest-path fuzz/Cargo.toml --check"
stage "dependency rules" bash scripts/check-deps.sh
stage "client library without cli feature" cargo build --release --locked -p kt-client --no-default-features --lib
stage build cargo build --release --workspace --all-targets --locked
stage clippy cargo clippy --release --workspace --all-targets --locked -- -D warnings
stage "unit tests" tests cargo test --release --workspace --locked --lib --bins
stage "client: head and co-signature vectors, tampered responses" tests cargo test --release --locked -p kt-client --test head_vectors --test cosign_vectors --test tampering
stage "fuzz corpus replay (no fuzzer)" tests cargo test --release --locked --manifest-path fuzz/Cargo.toml --no-default-features
stage "storage conformance" tests cargo test --release --locked -p kt-directory --test storage_conformance
stage "directory differential and recovery" tests cargo test --release --locked -p kt-directory --test directory_differential
stage "load harness at a tiny size (kt-load against a real kt-directory)" tests cargo test --release --locked -p kt-benches --test kt_load
stage "end-to-end (publisher over HTTP, SIGKILL recovery, audit blobs, auditor + dashboard in chromium)" tests cargo test --release --locked -p kt-e2e
echo "=== all stages passed in $SECONDS s"
awk '/^test result:/ { for (i = 2; i <= NF; i++) { if ($i == "passed;") p += $(i - 1); if ($i == "failed;") f += $(i - 1) } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$results"
