-- wrk script: POST /messages, BATCH unique messages of SIZE bytes per request.
--
-- Arguments after wrk's "--": TAG W SIZE BATCH [LIMIT THREADS]
--   TAG      prefix that keeps messages unique across runs on one cluster
--   W        the write concern, an integer
--   SIZE     message length in bytes (ASCII), the counter padded with "x"
--   BATCH    messages per POST: 1 sends {"message": ...}, more a batch
--            append, {"messages": [...]}
--   LIMIT    POSTs to send in all; each thread stops after its exact share
--   THREADS  wrk's -t, needed to split LIMIT into those shares
--
-- done() prints one line, "BENCH_RESULT {...json...}", which
-- tests/bench/wrk.py parses. wrk counts a response with a status above 399
-- in summary.errors.status, and such a response in summary.requests too.

wrk.method = "POST"
wrk.path = "/messages"
wrk.headers["Content-Type"] = "application/json"

-- Setup phase: one environment for all threads, also used by done().
local threads = {}

function setup(thread)
   thread:set("thread_index", #threads)
   table.insert(threads, thread)
end

-- Running phase: every thread runs this file in its own environment.
-- `sent` (POSTs) is global so that done() can read it with thread:get().
sent = 0
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

function request()
   if probe_pending then
      probe_pending = false
      return wrk.format("GET", "/health")
   end
   if quota and sent >= quota then
      -- request() must return a request: the last one is a harmless read.
      wrk.thread:stop()
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

function done(summary, latency, requests)
   local sent_total = 0
   for _, thread in ipairs(threads) do
      sent_total = sent_total + thread:get("sent")
   end
   local errors = summary.errors
   io.write(string.format(
      'BENCH_RESULT {"duration_us":%d,"requests":%d,"sent":%d,'
      .. '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},'
      .. '"latency_us":{"p50":%d,"p90":%d,"p99":%d,"max":%d,"mean":%.1f}}\n',
      summary.duration, summary.requests, sent_total,
      errors.connect, errors.read, errors.write, errors.status, errors.timeout,
      latency:percentile(50), latency:percentile(90), latency:percentile(99),
      latency.max, latency.mean))
end
