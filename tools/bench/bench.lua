-- tools/bench/bench.lua: the wrk script of tools/bench/run.
--
-- run prepends `mode` ("me": GET /v1/me, "bet": POST /v1/bets), `match_id`
-- and `tokens` (one bearer token per bench user). Each request takes the next
-- token (each wrk thread starts at its own offset); bets stake 1 Betcoin and
-- the pick turns over home/draw/away once per round of the tokens. done()
-- prints one line the runner parses:
--   BENCH_RESULT requests=N seconds=S rps=R p50_ms=A p99_ms=B non2xx=C socket_errors=D

local picks = { "home", "draw", "away" }
local nthreads = 0
local counter = 0

function setup(thread)
   thread:set("tid", nthreads)
   nthreads = nthreads + 1
end

function init(args)
   -- Spread the threads' starting points over the tokens.
   counter = (tid or 0) * 17
end

function request()
   counter = counter + 1
   local n = #tokens
   local headers = { ["Authorization"] = "Bearer " .. tokens[(counter % n) + 1] }
   if mode == "me" then
      return wrk.format("GET", "/v1/me", headers)
   end
   headers["Content-Type"] = "application/json"
   local pick = picks[(math.floor(counter / n) % 3) + 1]
   return wrk.format("POST", "/v1/bets", headers,
      '{"match_id":"' .. match_id .. '","pick":"' .. pick .. '","stake":1}')
end

function done(summary, latency, requests)
   local e = summary.errors
   local seconds = summary.duration / 1e6
   io.write(string.format(
      "BENCH_RESULT requests=%d seconds=%.3f rps=%.1f p50_ms=%.3f p99_ms=%.3f " ..
      "non2xx=%d socket_errors=%d\n",
      summary.requests, seconds, summary.requests / seconds,
      latency:percentile(50) / 1000, latency:percentile(99) / 1000,
      e.status, e.connect + e.read + e.write + e.timeout))
end
