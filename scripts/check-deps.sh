#!/usr/bin/env bash
# Dependency direction: directory -> client <- auditor. The client library (embedded by
# messengers) links no RocksDB, axum or server crate; the auditor never links the
# directory it audits.
set -euo pipefail
fail=0
client=$(cargo tree --locked -p kt-client --no-default-features -e normal --prefix none)
for forbidden in rocksdb librocksdb-sys axum kt-directory kt-auditor; do
    if grep -q "^$forbidden v" <<<"$client"; then
        echo "check-deps: kt-client depends on $forbidden" >&2
        fail=1
    fi
done
if cargo tree --locked -p kt-auditor -e normal --prefix none | grep -q "^kt-directory v"; then
    echo "check-deps: kt-auditor links kt-directory" >&2
    fail=1
fi
# The checks of untrusted input (what the fuzz workspace links) build without RocksDB.
checks=$(cargo tree --locked -p kt-auditor --no-default-features -e normal --prefix none)
for forbidden in rocksdb librocksdb-sys axum; do
    if grep -q "^$forbidden v" <<<"$checks"; then
        echo "check-deps: kt-auditor without its server feature depends on $forbidden" >&2
        fail=1
    fi
done
[ "$fail" -eq 0 ] && echo "check-deps: ok"
exit "$fail"
