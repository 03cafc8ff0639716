#!/usr/bin/env bash
# The load harness: builds kt-directory and kt-load (release), then runs
# `kt-load run` with the arguments given, e.g.
#   bash scripts/load.sh --data-dir ~/kt-load/data-1m --out ~/kt-load/out-1m --entries 1000000
# A build of N entries is resumable: run the same command again after an interruption.
# `kt-load summary REPORT.json... --svg chart.svg` tabulates several runs.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
bash scripts/setup.sh
cargo build --release --locked -q -p kt-directory -p kt-benches --bin kt-directory --bin kt-load
exec "$CARGO_TARGET_DIR/release/kt-load" run "$@"
