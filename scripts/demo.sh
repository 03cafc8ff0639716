#!/usr/bin/env bash
# The main job, for now: the directory publishing epochs of sample traffic into an
# embedded RocksDB, then verifying a lookup and a history proof from it.
# Arguments are passed to `kt-directory demo` (default: 5 epochs of 2,000 updates).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
bash scripts/setup.sh
data_dir=${KT_DATA_DIR:-./kt-data}
if [ "$#" -eq 0 ]; then
    set -- --epochs 5 --updates-per-epoch 2000
fi
cargo run --release --locked -q -p kt-directory --bin kt-directory -- demo --data-dir "$data_dir" "$@"
