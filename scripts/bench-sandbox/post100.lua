-- wrk script: POST /orders with 100 distinct orders per request, so requests do not collide on
-- the sandbox's order locks. Usage (see README "Benchmarks"):
--   wrk -t2 -c16 -d20s -s scripts/bench-sandbox/post100.lua http://127.0.0.1:8080/api/v2/orders
local counter = 0
-- Each wrk thread has its own Lua state; setup() runs in the main one and hands every thread a
-- distinct id through a *global* (a local of the same name would shadow it in the thread).
local threads_started = 0

function setup(thread)
  thread:set("thread_id", threads_started)
  threads_started = threads_started + 1
end

local function order(n)
  return string.format(
    '{"number":"W%d-%d","date":"01-11-2026","type":"PREPAYMENT","amount":49.90,"currency":"EUR",' ..
    '"customerEmail":"erika.beispiel@example.net","billing":{"firstName":"Erika","lastName":"Beispiel",' ..
    '"street":"Lindenallee 7","postCode":"50667","city":"Köln","countryCode":"DE"}}', thread_id, n)
end

function request()
  local parts = {}
  for i = 1, 100 do
    counter = counter + 1
    parts[i] = order(counter)
  end
  local body = "[" .. table.concat(parts, ",") .. "]"
  return wrk.format("POST", nil, {
    ["Content-Type"] = "application/json",
    ["X-Komfortkasse-API-Key"] = "bench-key",
  }, body)
end

function done(summary, latency, requests)
  io.write(string.format("orders/s: %.0f\n", summary.requests / (summary.duration / 1e6) * 100))
  io.write(string.format("non-2xx or errors: %d\n", summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
