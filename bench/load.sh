#!/usr/bin/env bash
# End-to-end load benchmark of ofc-signer's POST /api/v2/ofc/signPayload against the sandbox
# BitGo API (`ofc-signer sandbox`), next to the Node reference (BitGo's real SDK doing Express's
# handler steps, bench/node-reference) when Node is available. Everything runs on 127.0.0.1.
# See bench/README.md.
#
#   bench/load.sh                      # full run (DURATION=10 s per row)
#   QUICK=1 bench/load.sh              # smoke test (3 s per row)
#   NODE=0 bench/load.sh               # ofc-signer only
#   bench/load.sh --profile            # also: where ofc-signer's CPU time goes (perf), per row
#   bench/load.sh --help               # all options (environment variables and flags)
set -euo pipefail

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$BENCH_DIR/.." && pwd)"
NODE_DIR="$BENCH_DIR/node-reference"

# Sandbox values (public demo values: src/sandbox/mod.rs DOCS_WALLET_ID, DEMO_V2_WALLET_ID,
# DEMO_PASSPHRASE, DEMO_HMAC_TOKEN, DOCS_TOKEN; also printed in `ofc-signer sandbox`'s banner).
V1_WALLET=6407b22ec86799000706e578332735a3
V2_WALLET=6407b22ec86799000706e578332735b2
PASSPHRASE='ofc-signer demo passphrase'
HMAC_TOKEN=v2x0000000000000000000000000000000000000000000000000000000000000000de
LEGACY_TOKEN='v123xyz...'

# The benchmark payload (also in signpayload.lua) and, for the signature cross-check only, a few
# payloads that exercise JSON.stringify's corner cases (number formatting, key order, escapes).
BENCH_PAYLOAD='{"this":{"is":{"a":"payload"}}}'
CHECK_PAYLOADS=(
  "$BENCH_PAYLOAD"
  '"a string payload"'
  '""'
  '{"amount":"1.5","n":1e21,"f":2.50,"neg":-0,"list":[1,{"b":true,"a":null}],"s":"é😀\u2028\u0007","z":1,"1":"numeric key first"}'
  '{"big":12345678901234567890,"small":1e-7}'
)

# --- configuration: environment variables, overridden by flags ----------------------------------
QUICK="${QUICK:-0}"
DURATION="${DURATION:-}"
NODE="${NODE:-auto}"                        # auto: when node and npm are on PATH; 1: required; 0: off
BINARY="${BINARY:-}"
CONCURRENCY="${CONCURRENCY:-1 16 64}"
NODE_V2_CONCURRENCY="${NODE_V2_CONCURRENCY:-1 16}"   # Node + Argon2id is ~2 req/s: c=64 only times out
ENVELOPES="${ENVELOPES:-v1 v2}"
THREADS="${THREADS:-1}"
ROUNDS="${ROUNDS:-1}"
WRK_TIMEOUT="${WRK_TIMEOUT:-10}"
WARMUP_REQUESTS="${WARMUP_REQUESTS:-}"
OUT="${OUT:-}"
KEEP="${KEEP:-0}"
LABEL="${LABEL:-}"
PROFILE="${PROFILE:-0}"
PROFILE_HZ="${PROFILE_HZ:-999}"
TOKEN="$HMAC_TOKEN"
RUN_OFC=1

usage() {
  cat <<EOF
Usage: bench/load.sh [options]        (each option also has an environment variable)
  --quick             QUICK=1: 3 s per wrk row, 2 warm-up requests (a smoke test)
  --duration S        DURATION: seconds per wrk row (default 10, 3 with QUICK=1)
  --node              NODE=1: also benchmark the Node reference, fail if node/npm are missing
  --no-node           NODE=0: ofc-signer only (default NODE=auto: Node rows when node and npm exist)
  --node-only         the Node reference only (still needs the ofc-signer binary for the sandbox)
  --binary PATH       BINARY: ofc-signer binary (default: cargo build --release, target/release/ofc-signer)
  --concurrency LIST  CONCURRENCY: wrk connection counts (default "1 16 64")
  --node-v2-concurrency LIST  NODE_V2_CONCURRENCY: the same for Node with the v2 wallet (default "1 16")
  --envelopes LIST    ENVELOPES: key envelopes, v1 and/or v2 (default "v1 v2")
  --threads N         THREADS: wrk threads, 1 or 2 (default 1; the machine has $(nproc) cores)
  --rounds N          ROUNDS: run every row N times, rounds interleaved (ofc-signer, then Node, per
                      round), and add a table of medians (default 1; shared machines are noisy)
  --timeout S         WRK_TIMEOUT: wrk request timeout in seconds (default 10)
  --warmup N          WARMUP_REQUESTS: requests before each wrk row, the check request included (default 5, 2 with QUICK=1)
  --legacy-token      send the sandbox's legacy bearer token instead of the HMAC token
  --out FILE          OUT: results file (default bench/results/<UTC date>-<host>.md, -quick.md with QUICK=1)
  --label TEXT        LABEL: a note for the results file (e.g. what the binary was built from)
  --keep              KEEP=1: keep the work directory (server logs, wrk output)
  --profile           PROFILE=1: sample the whole machine with \`perf record -a\` (PROFILE_HZ, default
                      999 Hz) during each ofc-signer row and add to the results how the cores'
                      time was shared and where ofc-signer's CPU time went (needs root or
                      perf_event_paranoid <= 0; installs perf with apt-get if missing)
EOF
}

while [[ $# -gt 0 ]]; do
  case "$1" in
    --quick) QUICK=1; shift ;;
    --duration) DURATION="$2"; shift 2 ;;
    --node) NODE=1; shift ;;
    --no-node) NODE=0; shift ;;
    --node-only) NODE=1; RUN_OFC=0; shift ;;
    --binary) BINARY="$2"; shift 2 ;;
    --concurrency) CONCURRENCY="$2"; shift 2 ;;
    --node-v2-concurrency) NODE_V2_CONCURRENCY="$2"; shift 2 ;;
    --envelopes) ENVELOPES="$2"; shift 2 ;;
    --threads) THREADS="$2"; shift 2 ;;
    --rounds) ROUNDS="$2"; shift 2 ;;
    --timeout) WRK_TIMEOUT="$2"; shift 2 ;;
    --warmup) WARMUP_REQUESTS="$2"; shift 2 ;;
    --legacy-token) TOKEN="$LEGACY_TOKEN"; shift ;;
    --out) OUT="$2"; shift 2 ;;
    --label) LABEL="$2"; shift 2 ;;
    --keep) KEEP=1; shift ;;
    --profile) PROFILE=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown option: $1" >&2; usage >&2; exit 2 ;;
  esac
done

log() { printf '[load.sh %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf '\n[load.sh] ERROR: %s\n\n' "$*" >&2; exit 1; }

[[ "$QUICK" == 1 ]] && QUICK=1 || QUICK=0
if [[ -z "$DURATION" ]]; then (( QUICK )) && DURATION=3 || DURATION=10; fi
if [[ -z "$WARMUP_REQUESTS" ]]; then (( QUICK )) && WARMUP_REQUESTS=2 || WARMUP_REQUESTS=5; fi
[[ "$DURATION" =~ ^[1-9][0-9]*$ ]] || die "DURATION must be a whole number of seconds: $DURATION"
[[ "$THREADS" =~ ^[12]$ ]] || die "THREADS must be 1 or 2 (the machine has $(nproc) cores): $THREADS"
(( WARMUP_REQUESTS >= 1 )) || WARMUP_REQUESTS=1
for e in $ENVELOPES; do [[ "$e" == v1 || "$e" == v2 ]] || die "unknown envelope: $e"; done

# --- processes and cleanup ------------------------------------------------------------------------
WORK="$(mktemp -d "${TMPDIR:-/tmp}/ofc-bench.XXXXXX")"
PIDS=()   # every background process this script started and has not stopped yet

stop_pid() {  # stop_pid PID (a child of this script): TERM, KILL after 5 s, reap it
  local pid="$1" killer
  kill -TERM "$pid" 2>/dev/null || true
  ( sleep 5; kill -KILL "$pid" 2>/dev/null ) >/dev/null 2>&1 &
  killer=$!
  wait "$pid" 2>/dev/null || true
  kill "$killer" 2>/dev/null || true
  wait "$killer" 2>/dev/null || true
}

forget_pid() {  # drop PID from PIDS (so a recycled pid is never signalled later)
  local p kept=()
  for p in "${PIDS[@]}"; do [[ "$p" == "$1" ]] || kept+=("$p"); done
  PIDS=("${kept[@]}")
}

stop_server() { stop_pid "$1"; forget_pid "$1"; }

cleanup() {
  local pid
  trap - INT TERM
  for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
  PIDS=()
  if (( KEEP )); then log "work directory (logs, wrk output) kept in $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

now_ns() { date +%s%N; }

free_port() {  # a port nobody listens on (checked by connecting)
  local port i
  for i in $(seq 100); do
    port=$(( 20000 + RANDOM % 40000 ))
    # (not `if ! { :; } 3<>...`: bash does not negate a command whose redirection failed)
    if { : ; } 2>/dev/null 3<>"/dev/tcp/127.0.0.1/$port"; then continue; fi
    echo "$port"
    return 0
  done
  die "no free port found"
}

# ping_once PORT: GET /api/v2/pingexpress over bash's /dev/tcp (no fork); 0 when it answers 200.
ping_once() {
  local line=""
  { printf 'GET /api/v2/pingexpress HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' >&3
    IFS= read -r -t 5 line <&3 || true
  } 2>/dev/null 3<>"/dev/tcp/127.0.0.1/$1" || return 1
  [[ "$line" == "HTTP/1."[01]" 200"* ]]
}

# wait_ping PID PORT TIMEOUT_S: polls every ~2 ms until the server answers; fails if PID dies.
wait_ping() {
  local pid="$1" port="$2" end=$(( SECONDS + $3 ))
  until ping_once "$port"; do
    kill -0 "$pid" 2>/dev/null || return 1
    (( SECONDS < end )) || return 1
    sleep 0.002
  done
}

# wait_200 PID TIMEOUT_S CURL_ARGS...: polls with curl until it answers 200; fails if PID dies.
wait_200() {
  local pid="$1" end=$(( SECONDS + $2 )) code; shift 2
  while (( SECONDS < end )); do
    kill -0 "$pid" 2>/dev/null || return 1
    code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$@" || true)"
    [[ "$code" == 200 ]] && return 0
    sleep 0.05
  done
  return 1
}

# sign URL WALLET PAYLOAD: prints the response body, then a line with the status code.
sign() {
  curl -s --max-time 120 -w '\n%{http_code}' -X POST "$1/api/v2/ofc/signPayload" \
    -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
    --data-binary "{\"walletId\":\"$2\",\"payload\":$3}" || echo $'\n000'
}
signature_of() { sed -n 's/.*"signature":"\([0-9a-f]*\)".*/\1/p' <<<"$1"; }
wallet_of() { if [[ "$1" == v2 ]]; then echo "$V2_WALLET"; else echo "$V1_WALLET"; fi; }

# --- prerequisites --------------------------------------------------------------------------------
apt_install() {  # apt_install PACKAGE COMMAND: installs PACKAGE with apt-get unless COMMAND exists
  local package="$1" command="$2" sudo=()
  command -v "$command" >/dev/null && return 0
  if (( EUID != 0 )); then
    command -v sudo >/dev/null || die "$command is missing and this is not root and there is no sudo: install $package"
    sudo=(sudo)
  fi
  log "installing $package (${sudo[*]:-} apt-get install -y $package)"
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y "$package" >/dev/null \
    || { "${sudo[@]}" apt-get update >/dev/null \
         && "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y "$package" >/dev/null; } \
    || die "could not install $package with apt-get"
  command -v "$command" >/dev/null || die "$command is still missing after apt-get install $package"
}
apt_install wrk wrk
command -v curl >/dev/null || die "curl is required"
[[ "$PROFILE" == 1 ]] && PROFILE=1 || PROFILE=0
[[ "$PROFILE_HZ" =~ ^[1-9][0-9]*$ ]] || die "PROFILE_HZ must be a whole number: $PROFILE_HZ"
(( PROFILE )) && apt_install linux-perf perf

if [[ -z "$BINARY" ]]; then
  log "cargo build --release (in $REPO_DIR)"
  (cd "$REPO_DIR" && cargo build --release) >"$WORK/cargo-build.log" 2>&1 \
    || { tail -n 30 "$WORK/cargo-build.log" >&2; die "cargo build --release failed"; }
  BINARY="$REPO_DIR/target/release/ofc-signer"
fi
BINARY="$(realpath "$BINARY")"
[[ -x "$BINARY" ]] || die "not executable: $BINARY"
"$BINARY" sandbox --help >/dev/null 2>&1 || die "$BINARY has no 'sandbox' subcommand (too old?)"
HAS_CACHE_FLAGS=0
if "$BINARY" --help 2>/dev/null | grep -q -- '--metadata-cache-ttl'; then HAS_CACHE_FLAGS=1; fi

RUN_NODE=0
case "$NODE" in
  0|no|false) ;;
  1|yes|true)
    command -v node >/dev/null && command -v npm >/dev/null || die "NODE=1 but node/npm are not on PATH"
    RUN_NODE=1 ;;
  auto)
    if command -v node >/dev/null && command -v npm >/dev/null; then RUN_NODE=2
    else log "node/npm not found: the Node reference rows are skipped (NODE=1 to require them)"; fi ;;
  *) die "NODE must be 0, 1 or auto: $NODE" ;;
esac
if (( RUN_NODE )) && [[ ! -d "$NODE_DIR/node_modules/@bitgo/sdk-api" || ! -d "$NODE_DIR/node_modules/@bitgo/sdk-core" ]]; then
  log "npm ci in bench/node-reference (from package-lock.json)"
  if ! (cd "$NODE_DIR" && npm ci --no-audit --no-fund) >"$WORK/npm-ci.log" 2>&1; then
    tail -n 20 "$WORK/npm-ci.log" >&2
    (( RUN_NODE == 1 )) && die "npm ci failed in $NODE_DIR"
    log "npm ci failed: the Node reference rows are skipped"
    RUN_NODE=0
  fi
fi
(( RUN_NODE )) && RUN_NODE=1
(( RUN_OFC || RUN_NODE )) || die "nothing to run (--node-only without node)"

# The wallets' passphrases, as WALLET_<id>_PASSPHRASE (read by ofc-signer and the Node reference).
export "WALLET_${V1_WALLET}_PASSPHRASE=$PASSPHRASE" "WALLET_${V2_WALLET}_PASSPHRASE=$PASSPHRASE"

# --- the sandbox BitGo API (one for the whole run) ------------------------------------------------
SANDBOX_PORT="$(free_port)"
SANDBOX_URL="http://127.0.0.1:$SANDBOX_PORT"
(cd "$WORK" && exec "$BINARY" sandbox --port "$SANDBOX_PORT" --bind 127.0.0.1) >"$WORK/sandbox.log" 2>&1 &
SANDBOX_PID=$!
PIDS+=("$SANDBOX_PID")
wait_200 "$SANDBOX_PID" 15 "$SANDBOX_URL/api/v1/ping" \
  || { cat "$WORK/sandbox.log" >&2; die "the sandbox did not answer /api/v1/ping within 15 s"; }
# The v2 wallet joins ~0.3 s after start (its Argon2id envelope is made in the background).
wait_200 "$SANDBOX_PID" 15 -H "Authorization: Bearer $LEGACY_TOKEN" "$SANDBOX_URL/api/v2/ofc/wallet/$V2_WALLET" \
  || die "the sandbox did not serve the v2 wallet within 15 s"
log "sandbox on $SANDBOX_URL (pid $SANDBOX_PID)"

# --- servers -----------------------------------------------------------------------------------------
# start_server SERVER(ofc-signer|node) CACHES(warm|keys|off|n/a) NAME: starts it on a free port with a
# fresh state dir, waits for GET /api/v2/pingexpress; sets SRV_PID, SRV_URL, SRV_LOG, SRV_STARTUP_MS.
start_server() {
  local server="$1" caches="$2" name="$3" port start_ns end_ns us
  port="$(free_port)"
  SRV_URL="http://127.0.0.1:$port"
  SRV_LOG="$WORK/$name.log"
  local state="$WORK/state-$name"
  mkdir -p "$state"
  local cmd
  if [[ "$server" == ofc-signer ]]; then
    cmd=("$BINARY" --env custom --customrooturi "$SANDBOX_URL" --disablessl
         --port "$port" --bind 127.0.0.1 --state-dir "$state")
    # warm: both caches (the metadata cache is opt-in); keys: the default configuration (unlocked
    # keys cached, wallet and keychain fetched per request as Express does); off: neither.
    [[ "$caches" == warm ]] && (( HAS_CACHE_FLAGS )) && cmd+=(--metadata-cache-ttl 10)
    [[ "$caches" == off ]] && cmd+=(--key-cache-ttl 0 --metadata-cache-ttl 0)
  else
    cmd=(node "$NODE_DIR/server.js" --port "$port" --bind 127.0.0.1 --customrooturi "$SANDBOX_URL")
  fi
  start_ns="$(now_ns)"
  (cd "$WORK" && exec "${cmd[@]}") >"$SRV_LOG" 2>&1 &
  SRV_PID=$!
  PIDS+=("$SRV_PID")
  if ! wait_ping "$SRV_PID" "$port" 60; then
    tail -n 20 "$SRV_LOG" >&2 || true
    stop_server "$SRV_PID"
    die "$server ($name) did not answer GET /api/v2/pingexpress within 60 s (log above)"
  fi
  end_ns="$(now_ns)"
  us=$(( (end_ns - start_ns) / 1000 ))
  SRV_STARTUP_MS="$(( us / 1000 )).$(( us % 1000 / 100 ))"
}

# --- the signature cross-check, before any measurement ---------------------------------------------
# RFC 6979 signatures are deterministic: ofc-signer and the Node reference (BitGo's SDK) must answer
# the same payload with the same signature. Any difference stops the run.
declare -A REF_SIG=()
SIGCHECK="$WORK/sigcheck.md"
: >"$SIGCHECK"

signature_crosscheck() {
  local ofc_url node_url ofc_pid node_pid envelope wallet payload a b sa sb i mismatch=0
  start_server ofc-signer warm check-ofc-signer; ofc_url="$SRV_URL"; ofc_pid="$SRV_PID"
  if (( RUN_NODE )); then
    start_server node n/a check-node; node_url="$SRV_URL"; node_pid="$SRV_PID"
  fi
  for envelope in $ENVELOPES; do
    wallet="$(wallet_of "$envelope")"
    for i in "${!CHECK_PAYLOADS[@]}"; do
      payload="${CHECK_PAYLOADS[$i]}"
      a="$(sign "$ofc_url" "$wallet" "$payload")"
      [[ "${a##*$'\n'}" == 200 ]] || die "ofc-signer answered ${a##*$'\n'} to the $envelope check request with payload $payload: ${a%$'\n'*}"
      sa="$(signature_of "${a%$'\n'*}")"
      [[ -n "$sa" ]] || die "ofc-signer's answer has no signature: ${a%$'\n'*}"
      (( i == 0 )) && REF_SIG[$envelope]="$sa"
      if (( RUN_NODE )); then
        b="$(sign "$node_url" "$wallet" "$payload")"
        [[ "${b##*$'\n'}" == 200 ]] || die "the Node reference answered ${b##*$'\n'} to the $envelope check request with payload $payload: ${b%$'\n'*}"
        sb="$(signature_of "${b%$'\n'*}")"
        if [[ "$sa" != "$sb" ]]; then
          log "SIGNATURE MISMATCH ($envelope, payload $payload)"
          log "  ofc-signer: ${a%$'\n'*}"
          log "  node:       ${b%$'\n'*}"
          mismatch=1
          echo "- $envelope, payload \`$payload\`: **DIFFERENT** (ofc-signer \`$sa\`, node \`$sb\`)" >>"$SIGCHECK"
        elif [[ "${a%$'\n'*}" != "${b%$'\n'*}" ]]; then
          log "warning: same signature but different response bodies ($envelope, payload $payload):"
          log "  ofc-signer: ${a%$'\n'*}"
          log "  node:       ${b%$'\n'*}"
          echo "- $envelope, payload \`$payload\`: identical signature \`${sa:0:16}…\`, response bodies differ" >>"$SIGCHECK"
        else
          echo "- $envelope, payload \`$payload\`: identical response body, signature \`${sa:0:16}…\`" >>"$SIGCHECK"
        fi
      else
        echo "- $envelope, payload \`$payload\`: ofc-signer signature \`${sa:0:16}…\` (no Node reference to compare with)" >>"$SIGCHECK"
      fi
    done
  done
  stop_server "$ofc_pid"
  (( RUN_NODE )) && stop_server "$node_pid"
  (( mismatch == 0 )) || die "ofc-signer and the Node reference (BitGo SDK) produced DIFFERENT signatures for the same payload (details above); not benchmarking"
  if (( RUN_NODE )); then
    log "signature cross-check passed: ofc-signer and the Node reference agree on ${#CHECK_PAYLOADS[@]} payloads × envelopes ($ENVELOPES)"
  fi
}

# --- one row: start a server, check it, warm it, wrk it, measure, stop it ------------------------
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }  # utime+stime
CLK_TCK="$(getconf CLK_TCK)"
per_request_ms() {  # per_request_ms TICKS REQUESTS
  awk -v t="$1" -v n="$2" -v hz="$CLK_TCK" 'BEGIN { if (n > 0) printf "%.2f", t * 1000 / hz / n; else printf "–" }'
}

# profile_summary PERF_DATA LABEL SERVER_PID: from a machine-wide `perf record -a`, how the
# cores' time was shared (ofc-signer, the sandbox, wrk, idle) and where ofc-signer's own CPU time
# went (self time per symbol, grouped), as markdown appended to $PROFILES. Self time only: the
# release build has no frame pointers, so call stacks are not recorded.
PROFILES="$WORK/profiles.md"
: >"$PROFILES"
profile_summary() {
  local data="$1" label="$2" pid="$3" samples
  samples="$(perf script -i "$data" -F comm,pid,ip,sym,dso 2>/dev/null)" \
    || { log "$label: perf script failed"; return 0; }
  {
    echo "### $label"
    echo
    awk -v server="$pid" -v sandbox="$SANDBOX_PID" '
      NF < 4 { next }
      {
        all++
        if ($2 == 0) { idle++; next }
        if ($2 == sandbox) { sb++; next }
        if ($1 == "wrk") { wrk++; next }
        if ($2 != server) next
        mine++
        dso = $NF; gsub(/^\(|\)$/, "", dso); sub(/.*\//, "", dso)
        sym = $4; for (i = 5; i < NF; i++) sym = sym " " $i
        if (sym ~ /^rustsecp256k1_/) group = "libsecp256k1 (ECDSA signing)"
        else if (sym ~ /sha2::|pbkdf2|argon2|blake2|aes|ccm|gcm|ghash|polyval/) group = "KDF and ciphers (SHA-256, PBKDF2, Argon2id, AES)"
        else if (dso ~ /kernel/) group = "kernel (loopback TCP, epoll, futex, fdatasync, scheduling)"
        else if (sym ~ /^_?mi_/) group = "allocator (mimalloc)"
        else if (sym ~ /hyper|tokio|axum|tower|httparse|http::|h2::|bytes::/) group = "HTTP and async runtime (hyper, axum, tokio)"
        else if (sym ~ /ofc_signer::/) group = "ofc-signer code"
        else if (dso ~ /^libc/) group = "libc (memcpy, syscall stubs)"
        else group = "other"
        share[group]++; count[dso "\t" sym]++
      }
      function pct(n) { return sprintf("%.1f%%", 100 * n / (all ? all : 1)) }
      END {
        printf "%d samples on all cores: ofc-signer %s, sandbox %s, wrk %s, idle %s, the rest %s.\n\n",
          all, pct(mine), pct(sb), pct(wrk), pct(idle), pct(all - mine - sb - wrk - idle)
        if (!mine) exit
        printf "ofc-signer'"'"'s own CPU time (%d samples):\n\n| share | where |\n|---:|---|\n", mine
        k = 0
        for (g in share) order[++k] = g
        for (i = 1; i <= k; i++) for (j = i + 1; j <= k; j++)
          if (share[order[j]] > share[order[i]]) { t = order[i]; order[i] = order[j]; order[j] = t }
        for (i = 1; i <= k; i++) printf "| %.1f%% | %s |\n", 100 * share[order[i]] / mine, order[i]
        printf "\nTop symbols (self time, share of ofc-signer'"'"'s samples):\n\n| self | object | symbol |\n|---:|---|---|\n"
        for (i = 1; i <= 12; i++) {
          best = ""
          for (key in count) if (best == "" || count[key] > count[best]) best = key
          if (best == "") break
          split(best, f, "\t")
          printf "| %.1f%% | %s | `%s` |\n", 100 * count[best] / mine, f[1], substr(f[2], 1, 90)
          delete count[best]
        }
        print ""
      }' <<<"$samples"
  } >>"$PROFILES"
}

RESULTS="$WORK/results.tsv"  # server envelope caches c rps p50 p99 non2xx sockerr rss startup cpu_srv cpu_sb statuses duration
: >"$RESULTS"
DETAILS="$WORK/details.tsv"  # server envelope caches c busy% idle% iowait% steal% records/sync sync-ms
: >"$DETAILS"

# The machine's CPU time so far (all cores, /proc/stat): "busy idle iowait steal" in ticks
# (busy = user + nice + system + irq + softirq).
machine_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8, $5, $6, $9; exit }' /proc/stat; }
# machine_shares BEFORE AFTER: "busy% idle% iowait% steal%" between two machine_ticks.
machine_shares() {
  awk -v a="$1" -v b="$2" 'BEGIN {
    split(a, x, " "); split(b, y, " "); t = 0
    for (i = 1; i <= 4; i++) { d[i] = y[i] - x[i]; t += d[i] }
    if (t <= 0) { print "–\t–\t–\t–"; exit }
    printf "%.0f\t%.0f\t%.0f\t%.0f\n", 100 * d[1] / t, 100 * d[2] / t, 100 * d[3] / t, 100 * d[4] / t
  }'
}
# The audit log's counters from ofc-signer's /metrics: "records syncs sync_seconds_sum timed_syncs"
# (the last two are empty for a binary without ofc_signer_audit_sync_duration_seconds).
audit_counters() {
  { curl -s --max-time 5 "$1/metrics" || true; } | awk '
    $1 == "ofc_signer_audit_records_total" { r = $2 }
    $1 == "ofc_signer_audit_syncs_total" { s = $2 }
    $1 == "ofc_signer_audit_sync_duration_seconds_sum" { sum = $2 }
    $1 == "ofc_signer_audit_sync_duration_seconds_count" { n = $2 }
    END { print r + 0, s + 0, sum, n }'
}
# audit_shares BEFORE AFTER: "records-per-sync<TAB>mean-sync-ms" between two audit_counters.
audit_shares() {
  awk -v a="$1" -v b="$2" 'BEGIN {
    na = split(a, x, " "); nb = split(b, y, " ")
    syncs = y[2] - x[2]
    rps = (syncs > 0 ? sprintf("%.1f", (y[1] - x[1]) / syncs) : "–")
    ms = "–"
    if (na >= 4 && nb >= 4 && y[4] - x[4] > 0) ms = sprintf("%.2f", 1000 * (y[3] - x[3]) / (y[4] - x[4]))
    printf "%s\t%s\n", rps, ms
  }'
}

run_row() {  # run_row SERVER ENVELOPE CACHES CONCURRENCY
  local server="$1" envelope="$2" caches="$3" conns="$4" duration="$DURATION"
  local wallet name label pid url
  wallet="$(wallet_of "$envelope")"
  name="$server-$envelope-${caches//\//}-c$conns"
  label="$server $envelope caches=$caches c=$conns"
  start_server "$server" "$caches" "$name"
  pid="$SRV_PID"; url="$SRV_URL"

  # The check request (the first warm-up request): 200 with the cross-checked signature.
  local answer code sig i
  answer="$(sign "$url" "$wallet" "$BENCH_PAYLOAD")"
  code="${answer##*$'\n'}"
  [[ "$code" == 200 ]] || die "$label: the check request answered $code: ${answer%$'\n'*}"
  sig="$(signature_of "${answer%$'\n'*}")"
  [[ "$sig" == "${REF_SIG[$envelope]}" ]] \
    || die "$label: signature $sig differs from the cross-checked ${REF_SIG[$envelope]}"
  for (( i = 1; i < WARMUP_REQUESTS; i++ )); do sign "$url" "$wallet" "$BENCH_PAYLOAD" >/dev/null; done

  local threads=$(( THREADS < conns ? THREADS : conns ))
  local cpu_srv0 cpu_sb0 cpu_srv1 cpu_sb1 wrk_pid perf_pid=""
  if (( PROFILE )) && [[ "$server" == ofc-signer ]]; then
    perf record -q -a -F "$PROFILE_HZ" -o "$WORK/$name.perf" -- sleep "$duration" \
      >"$WORK/$name.perf.log" 2>&1 &
    perf_pid=$!
    PIDS+=("$perf_pid")
  fi
  local machine0 machine1 audit0="" audit1=""
  [[ "$server" == ofc-signer ]] && audit0="$(audit_counters "$url")"
  machine0="$(machine_ticks)"
  cpu_srv0="$(cpu_ticks "$pid")"; cpu_sb0="$(cpu_ticks "$SANDBOX_PID")"
  log "$label: wrk -t$threads -c$conns -d${duration}s (startup ${SRV_STARTUP_MS} ms)"
  # In the background and waited for, so that Ctrl-C / TERM reach the trap at once.
  BENCH_WALLET_ID="$wallet" BENCH_TOKEN="$TOKEN" timeout --kill-after=5 $(( duration + WRK_TIMEOUT + 60 )) \
    wrk -t"$threads" -c"$conns" -d"${duration}s" --timeout "${WRK_TIMEOUT}s" --latency \
    -s "$BENCH_DIR/signpayload.lua" "$url" >"$WORK/$name.wrk" 2>&1 &
  wrk_pid=$!
  PIDS+=("$wrk_pid")
  wait "$wrk_pid" || log "$label: wrk exited with status $?"
  forget_pid "$wrk_pid"
  if [[ -n "$perf_pid" ]]; then
    wait "$perf_pid" || { log "$label: perf record failed:"; cat "$WORK/$name.perf.log" >&2; }
    forget_pid "$perf_pid"
  fi
  cpu_srv1="$(cpu_ticks "$pid")"; cpu_sb1="$(cpu_ticks "$SANDBOX_PID")"
  machine1="$(machine_ticks)"
  [[ "$server" == ofc-signer ]] && audit1="$(audit_counters "$url")"
  local rss_kib
  rss_kib="$(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)"
  kill -0 "$pid" 2>/dev/null || log "$label: THE SERVER DIED during the run (log: $SRV_LOG)"
  stop_server "$pid"

  local line
  line="$(grep '^BENCH_RESULT ' "$WORK/$name.wrk" || true)"
  if [[ -z "$line" ]]; then
    log "$label: no result from wrk:"; cat "$WORK/$name.wrk" >&2
    printf '%s\t%s\t%s\t%s\twrk failed\t\t\t\t\t\t%s\t\t\t\t%s\n' \
      "$server" "$envelope" "$caches" "$conns" "$SRV_STARTUP_MS" "$duration" >>"$RESULTS"
    return 0
  fi
  field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<" ${line#BENCH_RESULT }"; }
  local ok dur p50 p99 non2xx bad statuses sockerr rps cpu_srv cpu_sb wrk_non2xx
  ok="$(field ok)"; dur="$(field duration_us)"; p50="$(field p50_us)"; p99="$(field p99_us)"
  non2xx="$(field non2xx)"; bad="$(field bad_2xx)"; statuses="$(field statuses)"
  sockerr=$(( $(field connect) + $(field read) + $(field write) + $(field timeout) ))
  # wrk's own count, as a cross-check of the lua one.
  wrk_non2xx="$(sed -n 's/^ *Non-2xx or 3xx responses: *\([0-9]*\).*/\1/p' "$WORK/$name.wrk")"
  if [[ -n "$wrk_non2xx" && "$wrk_non2xx" != "$non2xx" ]]; then
    log "$label: note: wrk counted $wrk_non2xx non-2xx/3xx answers, the lua script $non2xx"
  fi
  rps="$(awk -v n="$ok" -v d="$dur" 'BEGIN { printf "%.1f", (d > 0 ? n / (d / 1e6) : 0) }')"
  cpu_srv="$(per_request_ms $(( cpu_srv1 - cpu_srv0 )) "$ok")"
  cpu_sb="$(per_request_ms $(( cpu_sb1 - cpu_sb0 )) "$ok")"
  (( bad > 0 )) && statuses="$statuses; $bad 2xx without a signature"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' \
    "$server" "$envelope" "$caches" "$conns" "$rps" \
    "$(awk -v u="$p50" 'BEGIN { printf "%.2f", u / 1000 }')" \
    "$(awk -v u="$p99" 'BEGIN { printf "%.2f", u / 1000 }')" \
    "$(( non2xx + bad ))" "$sockerr" \
    "$(awk -v k="$rss_kib" 'BEGIN { printf "%.1f", k / 1024 }')" \
    "$SRV_STARTUP_MS" "$cpu_srv" "$cpu_sb" "$statuses" "$duration" >>"$RESULTS"
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$server" "$envelope" "$caches" "$conns" \
    "$(machine_shares "$machine0" "$machine1")" \
    "$( [[ -n "$audit0" ]] && audit_shares "$audit0" "$audit1" || printf '–\t–' )" >>"$DETAILS"
  log "$label: $rps req/s, p50 $(( p50 / 1000 )) ms, p99 $(( p99 / 1000 )) ms, non-2xx $(( non2xx + bad )), socket errors $sockerr, peak RSS $(( rss_kib / 1024 )) MiB"
  if [[ -s "$WORK/$name.perf" ]]; then profile_summary "$WORK/$name.perf" "$label, $rps req/s" "$pid"; fi
  if (( non2xx + bad > 0 )); then log "$label: NON-2xx ANSWERS: $statuses (server log: $SRV_LOG)"; KEEP=1; fi
  rm -rf "$WORK/state-$name"
}

# --- the runs ---------------------------------------------------------------------------------------
START_LOAD="$(cut -d' ' -f1-3 /proc/loadavg)"
START_TIME="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
signature_crosscheck
cache_modes="warm"
if (( HAS_CACHE_FLAGS )); then cache_modes="${CACHE_MODES:-warm keys off}"; else
  (( RUN_OFC )) && log "this binary has no --metadata-cache-ttl: only its default configuration is measured"; fi
for (( round = 1; round <= ROUNDS; round++ )); do
  (( ROUNDS == 1 )) || log "round $round of $ROUNDS"
  if (( RUN_OFC )); then
    for envelope in $ENVELOPES; do
      for caches in $cache_modes; do
        for c in $CONCURRENCY; do run_row ofc-signer "$envelope" "$caches" "$c"; done
      done
    done
  fi
  if (( RUN_NODE )); then
    for envelope in $ENVELOPES; do
      list="$CONCURRENCY"; [[ "$envelope" == v2 ]] && list="$NODE_V2_CONCURRENCY"
      for c in $list; do run_row node "$envelope" n/a "$c"; done
    done
  fi
done
END_LOAD="$(cut -d' ' -f1-3 /proc/loadavg)"

# --- report -------------------------------------------------------------------------------------------
HOST="$(uname -n)"; HOST="${HOST%%.*}"
if [[ -z "$OUT" ]]; then
  mkdir -p "$BENCH_DIR/results"
  base="$BENCH_DIR/results/$(date -u +%Y-%m-%d)-$HOST"
  (( QUICK )) && base="$base-quick"
  OUT="$base.md"
  [[ -e "$OUT" ]] && OUT="$base-$(date -u +%H%M%S).md"
fi
CPU_MODEL="$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)"
MEM="$(awk '/^MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
BIN_VERSION="$("$BINARY" --version 2>/dev/null | head -n1 || true)"
BIN_BUILT="$(date -u -r "$BINARY" +%Y-%m-%dT%H:%MZ)"
if [[ "$BINARY" == "$REPO_DIR"/* ]]; then  # the repository's own build: say which commit
  REV="$(git -C "$REPO_DIR" rev-parse --short HEAD 2>/dev/null || echo unknown)"
  git -C "$REPO_DIR" diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null || REV="$REV + uncommitted changes"
  BIN_VERSION="$BIN_VERSION, repository at $REV"
fi

{
  echo "# signPayload load test, $START_TIME$( (( QUICK )) && echo ' (QUICK smoke test — not for quoting)')"
  echo
  echo "- machine: \`$HOST\`, nproc $(nproc), CPU \`$CPU_MODEL\`, $MEM RAM, kernel $(uname -r); load average $START_LOAD at start, $END_LOAD at end"
  echo "- ofc-signer: \`$BINARY\` ($BIN_VERSION, built $BIN_BUILT)"
  if (( RUN_NODE )); then
    echo "- Node reference: Node $(node --version), @bitgo/sdk-api $(node -p "require('$NODE_DIR/node_modules/@bitgo/sdk-api/package.json').version"), @bitgo/sdk-core $(node -p "require('$NODE_DIR/node_modules/@bitgo/sdk-core/package.json').version")"
  else
    echo "- Node reference: not run"
  fi
  [[ -z "$LABEL" ]] || echo "- note: $LABEL"
  echo "- wrk $(wrk --version 2>&1 | head -n1 | awk '{print $2}'), $THREADS thread(s), ${DURATION} s per row, timeout ${WRK_TIMEOUT} s, $WARMUP_REQUESTS warm-up request(s) per row; token: $([[ "$TOKEN" == "$HMAC_TOKEN" ]] && echo "HMAC (v2x…)" || echo "legacy bearer"); payload \`$BENCH_PAYLOAD\`"
  echo "- every server, the sandbox and wrk share the same $(nproc) cores; each row starts a fresh server (peak RSS and startup are per row)"
  (( ROUNDS == 1 )) || echo "- $ROUNDS rounds: every row below was run $ROUNDS times, in rounds (ofc-signer rows, then Node rows, per round); the ratio column of the full table compares with the last Node row; medians after it"
  (( HAS_CACHE_FLAGS )) || echo "- this ofc-signer binary has no cache flags: \"warm\" is its only configuration"
  echo
  echo "| server | envelope | caches | c | req/s | p50 ms | p99 ms | non-2xx | socket err | peak RSS MiB | startup ms | CPU ms/req server | CPU ms/req sandbox | ofc-signer / node |"
  echo "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
  awk -F'\t' '
    { rows[NR] = $0; if ($1 == "node") node[$2 "/" $4] = $5 }
    END {
      for (i = 1; i <= NR; i++) {
        split(rows[i], f, "\t")
        ratio = "–"
        if (f[1] == "ofc-signer" && ((f[2] "/" f[4]) in node) && node[f[2] "/" f[4]] + 0 > 0 && f[5] + 0 > 0)
          ratio = sprintf("%.1f×", f[5] / node[f[2] "/" f[4]])
        printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n",
          f[1], f[2], f[3], f[4], f[5], f[6], f[7], f[8], f[9], f[10], f[11], f[12], f[13], ratio
      }
    }' "$RESULTS"
  echo
  if (( ROUNDS > 1 )); then
    echo "Medians over the $ROUNDS rounds (the ratio: median over median):"
    echo
    echo "| server | envelope | caches | c | runs | median req/s | min–max req/s | median p99 ms | ofc-signer / node |"
    echo "|---|---|---|---:|---:|---:|---:|---:|---:|"
    awk -F'\t' '
      function median(list,    v, m, i, j, t) {
        m = split(list, v, " ")
        for (i = 1; i <= m; i++) for (j = i + 1; j <= m; j++)
          if (v[j] + 0 < v[i] + 0) { t = v[i]; v[i] = v[j]; v[j] = t }
        lo = v[1]; hi = v[m]
        return (m % 2 ? v[(m + 1) / 2] : sprintf("%.2f", (v[m / 2] + v[m / 2 + 1]) / 2))
      }
      $5 ~ /^[0-9.]+$/ {
        key = $1 "\t" $2 "\t" $3 "\t" $4
        if (!(key in runs)) order[++keys] = key
        runs[key]++; rps[key] = rps[key] " " $5; p99[key] = p99[key] " " $7
      }
      END {
        for (k = 1; k <= keys; k++) {
          key = order[k]; split(key, f, "\t")
          med[key] = median(rps[key]); low[key] = lo; high[key] = hi
          if (f[1] == "node") nodemed[f[2] "/" f[4]] = med[key]
        }
        for (k = 1; k <= keys; k++) {
          key = order[k]; split(key, f, "\t")
          ratio = "–"
          if (f[1] == "ofc-signer" && nodemed[f[2] "/" f[4]] + 0 > 0)
            ratio = sprintf("%.1f×", med[key] / nodemed[f[2] "/" f[4]])
          printf "| %s | %s | %s | %s | %d | %s | %s–%s | %s | %s |\n",
            f[1], f[2], f[3], f[4], runs[key], med[key], low[key], high[key], median(p99[key]), ratio
        }
      }' "$RESULTS"
    echo
  fi
  if [[ -s "$DETAILS" ]]; then
    echo "During each row's wrk run: how the machine's CPU time (all $(nproc) cores, \`/proc/stat\`) was spent, and for ofc-signer the audit log's group commit (\`/metrics\`: records per \`fdatasync\`, and the mean write + \`fdatasync\` time of a batch, which every answer waited for):"
    echo
    echo "| server | envelope | caches | c | busy % | idle % | iowait % | steal % | records per sync | mean sync ms |"
    echo "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"
    awk -F'\t' '{ printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, $6, $7, $8, $9, $10 }' "$DETAILS"
    echo
  fi
  awk -F'\t' '$11 ~ /^[0-9.]+$/ { n[$1]++; v[$1, n[$1]] = $11 }
    END {
      for (s in n) {
        m = n[s]
        for (i = 1; i <= m; i++) for (j = i + 1; j <= m; j++)
          if (v[s, j] + 0 < v[s, i] + 0) { t = v[s, i]; v[s, i] = v[s, j]; v[s, j] = t }
        printf "Startup (exec → first 200 from GET /api/v2/pingexpress), %s: median %s ms, min %s ms, max %s ms over %d starts.\n\n",
          s, v[s, int((m + 1) / 2)], v[s, 1], v[s, m], m
      }
    }' "$RESULTS"
  echo "Status codes per row (counted by bench/signpayload.lua):"
  echo
  awk -F'\t' '{ printf "- %s %s caches=%s c=%s: %s\n", $1, $2, $3, $4, ($14 == "" ? "–" : $14) }' "$RESULTS"
  echo
  if [[ -s "$PROFILES" ]]; then
    echo "## Where the time goes (\`perf record -a -F $PROFILE_HZ\` during each ofc-signer row; self time)"
    echo
    cat "$PROFILES"
  fi
  echo "Signature cross-check before the runs (RFC 6979: deterministic, must be identical):"
  echo
  cat "$SIGCHECK"
} >"$OUT"

echo
cat "$OUT"
log "written to $OUT"
