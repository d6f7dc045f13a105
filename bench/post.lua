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
