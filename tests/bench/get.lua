-- wrk script: GET /messages?from=N&limit=LIMIT[&consistency=LEVEL], N drawn
-- at random in [0, SPAN - LIMIT] for each request.
--
-- Arguments after wrk's "--": SPAN LIMIT LEVEL
--   SPAN   messages the log holds from id 0: every page read is full
--   LIMIT  messages per page
--   LEVEL  local (the default: no consistency parameter is sent),
--          committed or linearizable
--
-- setup(), `sent` (GETs here) and done(), the BENCH_RESULT line, are
-- result.lua's, beside this file.

dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "result.lua")

local span, limit, suffix
-- As in post.lua: the first thread's first request() is wrk's check, never sent.
local probe_pending

function init(args)
   span, limit = tonumber(args[1]), tonumber(args[2])
   suffix = args[3] == "local" and "" or ("&consistency=" .. args[3])
   probe_pending = thread_index == 0
   math.randomseed(1000 + thread_index)
end

function request()
   if probe_pending then
      probe_pending = false
      return wrk.format("GET", "/health")
   end
   sent = sent + 1
   local from = math.random(0, span - limit)
   return wrk.format("GET", string.format("/messages?from=%d&limit=%d%s", from, limit, suffix))
end
