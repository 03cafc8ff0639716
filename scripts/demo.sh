#!/usr/bin/env bash
# The main job: a kt-directory on embedded RocksDB (keys made on first run) and a
# kt-auditor following it with its public dashboard, the directory fed sample traffic
# over its HTTP API (a lookup and a history proof verified against the signed head),
# then every epoch verified and co-signed by the auditor. Both keep serving until
# Ctrl-C (KT_DEMO_EXIT=1: stop once the auditor has caught up).
# Arguments go to `kt-directory sample-traffic` (default: 5 epochs of 2,000 updates).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
bash scripts/setup.sh
data_dir=${KT_DEMO_DIR:-./kt-demo}
listen=${KT_DEMO_LISTEN:-127.0.0.1:8080}
auditor_listen=${KT_DEMO_AUDITOR_LISTEN:-127.0.0.1:8081}
if [ "$#" -eq 0 ]; then
    set -- --epochs 5 --updates-per-epoch 2000
fi
cargo build --release --locked -q -p kt-directory -p kt-auditor --bin kt-directory --bin kt-auditor
bin=$CARGO_TARGET_DIR/release/kt-directory
auditor_bin=$CARGO_TARGET_DIR/release/kt-auditor

if [ -f "$data_dir/manifest.json" ]; then
    echo "$data_dir holds a directory of an older demo layout; remove it or set KT_DEMO_DIR" >&2
    exit 1
fi
mkdir -p "$data_dir"
if [ ! -f "$data_dir/directory/manifest.json" ]; then
    "$bin" init --data-dir "$data_dir/directory" --namespace demo.kt.invalid >"$data_dir/directory.init"
fi
if [ ! -f "$data_dir/auditor/auditor.key" ]; then
    "$auditor_bin" init --data-dir "$data_dir/auditor" >"$data_dir/auditor.init"
fi
directory_key=$(sed -n 's/^signing_key=//p' "$data_dir/directory.init")
cat "$data_dir/directory.init" "$data_dir/auditor.init"

logs=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$logs"
}
trap cleanup EXIT

# Waits for `listening on URL` in a log; prints the URL.
wait_url() {
    local log=$1 pid=$2 what=$3 url=
    for _ in $(seq 1 600); do
        url=$(sed -n 's/^listening on //p' "$log")
        [ -n "$url" ] && { echo "$url"; return 0; }
        kill -0 "$pid" 2>/dev/null || { echo "$what exited; see its log above" >&2; return 1; }
        sleep 0.1
    done
    echo "$what did not start listening" >&2
    return 1
}

"$bin" serve --data-dir "$data_dir/directory" --listen "$listen" --epoch-interval 30 >"$logs/directory" &
pids+=($!)
url=$(wait_url "$logs/directory" "${pids[-1]}" "kt-directory serve")
echo "directory listening on $url"

"$auditor_bin" serve --data-dir "$data_dir/auditor" --directory "$url" --directory-key "$directory_key" \
    --listen "$auditor_listen" --poll-interval 2 >"$logs/auditor" &
pids+=($!)
auditor_url=$(wait_url "$logs/auditor" "${pids[-1]}" "kt-auditor serve")
echo "auditor listening on $auditor_url (dashboard: $auditor_url/)"

"$bin" sample-traffic --url "$url" --token-file "$data_dir/directory/operator.token" \
    --directory-key "$directory_key" "$@"

# The auditor verifies and co-signs every epoch the directory signed.
latest=$(curl -sf "$url/v1/heads/latest" | sed -n 's/.*"epoch":\([0-9]*\).*/\1/p')
for _ in $(seq 1 300); do
    status=$(curl -sf "$auditor_url/v1/status" || true)
    verified=$(sed -n 's/.*"last_verified_epoch":\([0-9]*\).*/\1/p' <<<"$status")
    [ "${verified:-}" = "$latest" ] && break
    sleep 1
done
echo "auditor: $status"
[ "${verified:-}" = "$latest" ] || { echo "the auditor did not verify epoch $latest" >&2; exit 1; }
grep -q '"state":"ok"' <<<"$status" || { echo "the auditor is not ok" >&2; exit 1; }
echo "auditor verified and co-signed epochs 0..$latest"

echo
echo "The directory keeps serving at $url (an epoch every 30 s), the auditor at $auditor_url."
echo "  dashboard:  $auditor_url/"
echo "  curl $url/v1/heads/latest"
echo "  curl $auditor_url/v1/heads/latest     (co-signed)"
echo "  curl $auditor_url/namespaces          (Plexi API)"
echo "  curl $url/metrics ; curl $auditor_url/metrics"
if [ "${KT_DEMO_EXIT:-0}" = 1 ]; then
    exit 0
fi
echo "Ctrl-C stops both."
wait
