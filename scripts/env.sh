# Sourced by the scripts: one warm target directory outside the clone (RocksDB's C++
# is the slow part of a cold build), unless the caller chose another.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kt-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
