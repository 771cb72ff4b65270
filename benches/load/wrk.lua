-- wrk script for benches/load/run. Everything comes from the environment:
--   WRK_AUTH           API key, sent as "Authorization: Bearer <key>"
--   WRK_AUTH_ROTATE    if N > 0: the keys are "<WRK_AUTH>-1" … "<WRK_AUTH>-N",
--                      one after the other, request by request (N callers
--                      with their own budgets); the requests are formatted once
--   WRK_UNMASK_REASON  if set: "X-Unmask: ssn" and this X-Unmask-Reason
--   WRK_DELAY_MS       if > 0: each connection waits on average this long
--                      (uniformly 0..2x) before each request, so the offered
--                      rate is about connections / (delay + latency): how the
--                      "half of peak load" pass paces itself without wrk2
--   WRK_RESULT         file to write the result to, as one JSON object

local auth = os.getenv("WRK_AUTH")
if auth and auth ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. auth
end

local reason = os.getenv("WRK_UNMASK_REASON")
if reason and reason ~= "" then
  wrk.headers["X-Unmask"] = "ssn"
  wrk.headers["X-Unmask-Reason"] = reason
end

local delay_ms = tonumber(os.getenv("WRK_DELAY_MS") or "0") or 0
if delay_ms > 0 then
  function delay()
    return math.floor(math.random() * 2 * delay_ms + 0.5)
  end
end

local rotate = tonumber(os.getenv("WRK_AUTH_ROTATE") or "0") or 0
if rotate > 0 then
  local requests, n = {}, 0
  function init(args)
    for i = 1, rotate do
      local h = {}
      for k, v in pairs(wrk.headers) do
        h[k] = v
      end
      h["Authorization"] = "Bearer " .. auth .. "-" .. i
      requests[i] = wrk.format(nil, nil, h)
    end
  end
  function request()
    n = n % rotate + 1
    return requests[n]
  end
end

function done(summary, latency, requests)
  local out = os.getenv("WRK_RESULT")
  if not out or out == "" then
    return
  end
  local e = summary.errors
  local f = assert(io.open(out, "w"))
  f:write(string.format(
    '{"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f,' ..
    '"err_connect":%d,"err_read":%d,"err_write":%d,"err_status":%d,"err_timeout":%d}\n',
    summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean,
    e.connect, e.read, e.write, e.status, e.timeout))
  f:close()
end
