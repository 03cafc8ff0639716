#!/usr/bin/env bash
# The main job: a kt-directory on embedded RocksDB (keys made on first run), fed sample
# traffic over its HTTP API, with a lookup and a history proof verified against the
# signed head. It keeps serving until Ctrl-C (KT_DEMO_EXIT=1: stop after the traffic).
# Arguments go to `kt-directory sample-traffic` (default: 5 epochs of 2,000 updates).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
bash scripts/setup.sh
data_dir=${KT_DEMO_DIR:-./kt-demo}
listen=${KT_DEMO_LISTEN:-127.0.0.1:8080}
if [ "$#" -eq 0 ]; then
    set -- --epochs 5 --updates-per-epoch 2000
fi
cargo build --release --locked -q -p kt-directory --bin kt-directory
bin=$CARGO_TARGET_DIR/release/kt-directory

if [ ! -f "$data_dir/manifest.json" ]; then
    "$bin" init --data-dir "$data_dir" --namespace demo.kt.invalid
fi
log=$(mktemp)
"$bin" serve --data-dir "$data_dir" --listen "$listen" --epoch-interval 30 >"$log" &
server=$!
trap 'kill -TERM "$server" 2>/dev/null; wait "$server" 2>/dev/null; rm -f "$log"' EXIT
url=
for _ in $(seq 1 600); do
    url=$(sed -n 's/^listening on //p' "$log")
    [ -n "$url" ] && break
    kill -0 "$server" 2>/dev/null || { echo "kt-directory serve exited; see its log above" >&2; exit 1; }
    sleep 0.1
done
[ -n "$url" ] || { echo "kt-directory serve did not start listening" >&2; exit 1; }
echo "directory listening on $url"

"$bin" sample-traffic --url "$url" --token-file "$data_dir/operator.token" "$@"

echo
echo "The directory keeps serving at $url (an epoch every 30 s). Try:"
echo "  curl $url/v1/heads/latest"
echo "  curl $url/v1/audit"
echo "  curl $url/metrics"
if [ "${KT_DEMO_EXIT:-0}" = 1 ]; then
    exit 0
fi
echo "Ctrl-C stops it."
wait "$server"
