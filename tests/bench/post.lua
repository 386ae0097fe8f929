-- wrk script: POST /messages, BATCH unique messages of SIZE bytes per request.
--
-- Arguments after wrk's "--": TAG W SIZE BATCH [LIMIT THREADS]
--   TAG      prefix that keeps messages unique across runs on one cluster
--   W        the write concern, an integer
--   SIZE     message length in bytes (ASCII), the counter padded with "x"
--   BATCH    messages per POST: 1 sends {"message": ...}, more a batch
--            append, {"messages": [...]}
--   LIMIT    POSTs to send in all; each thread sends its exact share, then
--            its connections stay idle (no request is ever cut off) until
--            wrk is interrupted; needs BENCH_LIMITED=1 in the environment
--   THREADS  wrk's -t, needed to split LIMIT into those shares
--
-- With BENCH_LIMITED=1, delay() is defined: wrk asks it before every
-- request, and it hands out the thread's share one request at a time (a
-- request() that wrk then calls never overshoots). Without it, wrk sends
-- as fast as answers come, with no timer per request.
--
-- setup(), `sent` (POSTs here) and done(), the BENCH_RESULT line, are
-- result.lua's, beside this file.

dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "result.lua")

wrk.method = "POST"
wrk.path = "/messages"
wrk.headers["Content-Type"] = "application/json"

local tag, w, size, batch, quota
-- Before the run, wrk calls the first thread's request() once to check that
-- it returns a well-formed request; that one is never sent, so not counted.
local probe_pending

function init(args)
   tag, w, size, batch = args[1], tonumber(args[2]), tonumber(args[3]), tonumber(args[4])
   local limit, thread_count = tonumber(args[5]), tonumber(args[6])
   if limit then
      quota = math.floor(limit / thread_count)
      if thread_index < limit % thread_count then
         quota = quota + 1
      end
   end
   probe_pending = thread_index == 0
end

-- The thread's message number `number` (from 1): unique across threads and runs.
local function message(number)
   local head = string.format("%s t%d n%d ", tag, thread_index, number)
   return head .. string.rep("x", size - #head)
end

-- Requests delay() let through: at most the thread's quota.
local granted = 0
-- Long enough never to come before wrk is interrupted.
local IDLE_MS = 24 * 3600 * 1000

if os.getenv("BENCH_LIMITED") == "1" then
   function delay()
      if quota and granted >= quota then
         return IDLE_MS
      end
      granted = granted + 1
      return 0
   end
end

function request()
   if probe_pending then
      probe_pending = false
      return wrk.format("GET", "/health")
   end
   sent = sent + 1
   if batch == 1 then
      return wrk.format(nil, nil, nil, string.format('{"message":"%s","w":%d}', message(sent), w))
   end
   local quoted = {}
   for i = 1, batch do
      quoted[i] = '"' .. message((sent - 1) * batch + i) .. '"'
   end
   return wrk.format(nil, nil, nil,
                     string.format('{"messages":[%s],"w":%d}', table.concat(quoted, ","), w))
end
