-- wrk script for bench/run.sh: POST the file named by BENCH_BODY on every request, and at the
-- end print one line "BENCH_JSON {...}" with the counts and latency percentiles.
--
-- There is deliberately no response() callback: it would make wrk parse every answer in Lua and
-- cost it throughput. wrk counts non-2xx answers itself (summary.errors.status), and the only
-- 2xx either server sends is 200, so accepted = requests - non_2xx.

local path = os.getenv("BENCH_BODY")
local file = assert(io.open(path, "rb"), "BENCH_BODY must name a readable file")
wrk.method = "POST"
wrk.body = file:read("*a")
file:close()
wrk.headers["Content-Type"] = "application/json"

-- The signed-senders phase: GitHub's headers on every request, a delivery id of its own on each
-- (the writer drops redeliveries), and, when BENCH_SIGNATURE is set, the body's signature. Both
-- sides of that phase run this same code, so only the signature check differs between them.
if os.getenv("BENCH_GITHUB") == "1" then
  wrk.headers["X-GitHub-Event"] = "push"
  local signature = os.getenv("BENCH_SIGNATURE")
  if signature and signature ~= "" then
    wrk.headers["X-Hub-Signature-256"] = signature
  end
  -- Unique across runs (BENCH_RUN_TAG), threads (numbered by setup, in the main Lua state)
  -- and requests: a repeated id would be a redelivery, and land in `rejected`.
  local run_tag = os.getenv("BENCH_RUN_TAG") or "run"
  local threads = 0
  function setup(thread)
    threads = threads + 1
    thread:set("thread_id", threads)
  end
  local counter = 0
  request = function()
    counter = counter + 1
    wrk.headers["X-GitHub-Delivery"] = run_tag .. "-" .. tostring(thread_id) .. "-" .. counter
    return wrk.format(nil, nil, nil, nil)
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,"non_2xx":%d,'
      .. '"connect_errors":%d,"read_errors":%d,"write_errors":%d,"timeouts":%d,'
      .. '"p50_us":%d,"p99_us":%d,"p999_us":%d,"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, summary.bytes, e.status,
    e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9),
    latency.max, latency.mean))
end
