-- wrk script for bench/load.sh: POST /api/v2/ofc/signPayload, count EVERY status code (wrk
-- itself only reports "Non-2xx or 3xx responses"), check that 2xx answers carry a signature, and
-- print one machine-readable line (BENCH_RESULT ...) from done().
--
-- Environment: BENCH_WALLET_ID (default: the sandbox's v1 wallet), BENCH_TOKEN (default: the
-- sandbox's HMAC token). The payload is the one of load.sh's BENCH_PAYLOAD.
--
-- Standalone: BENCH_WALLET_ID=... wrk -t1 -c16 -d10s -s bench/signpayload.lua http://127.0.0.1:3080

local wallet = os.getenv("BENCH_WALLET_ID") or "6407b22ec86799000706e578332735a3"
local token = os.getenv("BENCH_TOKEN")
  or "v2x0000000000000000000000000000000000000000000000000000000000000000de"

wrk.method = "POST"
wrk.path = "/api/v2/ofc/signPayload"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. token
wrk.body = '{"walletId":"' .. wallet .. '","payload":{"this":{"is":{"a":"payload"}}}}'

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

-- Per-thread globals, collected in done() with thread:get().
statuses = {}
bad_bodies = 0   -- 2xx answers without a signature (not counted as successes)

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
  if status >= 200 and status < 300 and not string.find(body, '"signature":"', 1, true) then
    bad_bodies = bad_bodies + 1
  end
end

function done(summary, latency, requests)
  local counts, bad = {}, 0
  for _, thread in ipairs(threads) do
    for status, n in pairs(thread:get("statuses") or {}) do
      counts[status] = (counts[status] or 0) + n
    end
    bad = bad + (thread:get("bad_bodies") or 0)
  end
  local codes, parts, ok2xx, non2xx = {}, {}, 0, 0
  for status in pairs(counts) do table.insert(codes, status) end
  table.sort(codes)
  for _, status in ipairs(codes) do
    table.insert(parts, status .. ":" .. counts[status])
    if status >= 200 and status < 300 then
      ok2xx = ok2xx + counts[status]
    else
      non2xx = non2xx + counts[status]
    end
  end
  local e = summary.errors
  io.write(string.format(
    "BENCH_RESULT requests=%d duration_us=%d ok=%d non2xx=%d bad_2xx=%d statuses=%s " ..
    "connect=%d read=%d write=%d timeout=%d p50_us=%d p99_us=%d max_us=%d\n",
    summary.requests, summary.duration, ok2xx - bad, non2xx, bad,
    (#parts > 0) and table.concat(parts, ",") or "none",
    e.connect, e.read, e.write, e.timeout,
    math.floor(latency:percentile(50)), math.floor(latency:percentile(99)),
    math.floor(latency.max)))
end
