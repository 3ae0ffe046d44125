#!/usr/bin/env bash
# Load soak (issue 6): signPayload at high concurrency for a bounded time against the sandbox,
# with ofc-signer's RSS sampled throughout. Fails (exit 1) on any non-2xx answer or socket error,
# or when RSS grows by more than RSS_GROWTH_MIB after the warm-up.
#
#   bench/soak.sh                          # 60 s at c=64, v1 wallet, both caches
#   DURATION=300 CONNECTIONS=64 bench/soak.sh
#   BINARY=target/release/ofc-signer bench/soak.sh
set -euo pipefail

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$BENCH_DIR/.." && pwd)"
DURATION="${DURATION:-60}"
WARMUP="${WARMUP:-10}"
CONNECTIONS="${CONNECTIONS:-64}"
RSS_GROWTH_MIB="${RSS_GROWTH_MIB:-8}"
WALLET="${WALLET:-6407b22ec86799000706e578332735a3}"
PASSPHRASE='ofc-signer demo passphrase'
CACHE_ARGS=(${CACHE_ARGS:---metadata-cache-ttl 10})
BINARY="${BINARY:-}"

command -v wrk >/dev/null 2>&1 || {
  if [[ $(id -u) -eq 0 ]]; then apt-get install -y wrk >/dev/null || (apt-get update >/dev/null && apt-get install -y wrk >/dev/null)
  else sudo apt-get install -y wrk >/dev/null; fi
}
if [[ -z "$BINARY" ]]; then
  (cd "$REPO_DIR" && cargo build --release --quiet)
  BINARY="$REPO_DIR/target/release/ofc-signer"
fi

WORK="$(mktemp -d)"
PIDS=()
cleanup() { for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { for _ in $(seq 1 500); do curl -fsS -o /dev/null "$1" 2>/dev/null && return 0; sleep 0.02; done; echo "not up: $1" >&2; exit 1; }
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

SANDBOX_PORT="$(free_port)"; PORT="$(free_port)"
"$BINARY" sandbox --port "$SANDBOX_PORT" --bind 127.0.0.1 >"$WORK/sandbox.log" 2>&1 & PIDS+=($!)
sleep 0.5
env "WALLET_${WALLET}_PASSPHRASE=$PASSPHRASE" "$BINARY" --env custom --customrooturi "http://127.0.0.1:$SANDBOX_PORT" \
  --disablessl --port "$PORT" --bind 127.0.0.1 --state-dir "$WORK/state" --logfile "$WORK/ofc-signer.log" \
  "${CACHE_ARGS[@]}" >"$WORK/stdout" 2>"$WORK/stderr" & SERVER=$!; PIDS+=($SERVER)
wait_http "http://127.0.0.1:$PORT/api/v2/pingexpress"

cat >"$WORK/soak.lua" <<LUA
wrk.method = "POST"
wrk.body = '{"walletId":"$WALLET","payload":{"soak":{"n":1}}}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer v123xyz..."
LUA
URL="http://127.0.0.1:$PORT/api/v2/ofc/signPayload"

echo "warm-up: ${WARMUP} s at c=$CONNECTIONS"
wrk -t1 -c"$CONNECTIONS" -d"${WARMUP}s" -s "$WORK/soak.lua" "$URL" >"$WORK/warmup.txt"
BASE=$(rss_kib "$SERVER")
echo "soak: ${DURATION} s at c=$CONNECTIONS; RSS after warm-up $((BASE / 1024)) MiB"
wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency -s "$WORK/soak.lua" "$URL" >"$WORK/soak.txt" &
WRK=$!; PIDS+=($WRK)
PEAK=$BASE; SAMPLES=()
while kill -0 "$WRK" 2>/dev/null; do
  sleep 5
  kill -0 "$SERVER" 2>/dev/null || { echo "FAIL: ofc-signer exited during the soak"; exit 1; }
  now=$(rss_kib "$SERVER"); SAMPLES+=("$((now / 1024))"); (( now > PEAK )) && PEAK=$now
done
wait "$WRK" || true
END=$(rss_kib "$SERVER")

requests=$(awk '/requests in/ {print $1}' "$WORK/soak.txt")
rate=$(awk '/Requests\/sec/ {print $2}' "$WORK/soak.txt")
p99=$(awk '$1=="99%" {print $2}' "$WORK/soak.txt")
non2xx=$(awk '/Non-2xx/ {print $NF}' "$WORK/soak.txt"); non2xx=${non2xx:-0}
sockerr=$(awk -F'[ ,]+' '/Socket errors/ {print $4+$6+$8+$10}' "$WORK/soak.txt"); sockerr=${sockerr:-0}
growth=$(( (END - BASE) / 1024 ))
echo "requests $requests, $rate req/s, p99 $p99, non-2xx $non2xx, socket errors $sockerr"
echo "RSS MiB: after warm-up $((BASE / 1024)), peak $((PEAK / 1024)), end $((END / 1024)) (growth $growth); samples every 5 s: ${SAMPLES[*]}"
status=0
(( non2xx == 0 )) || { echo "FAIL: non-2xx answers"; status=1; }
(( sockerr == 0 )) || { echo "FAIL: socket errors"; status=1; }
(( (PEAK - BASE) / 1024 <= RSS_GROWTH_MIB )) || { echo "FAIL: RSS grew by more than $RSS_GROWTH_MIB MiB"; status=1; }
"$BINARY" audit verify "$WORK/state/audit.log" || { echo "FAIL: the audit chain does not verify"; status=1; }
exit $status
