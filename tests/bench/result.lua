-- Shared by post.lua and get.lua (each loads it with dofile): the threads'
-- setup, the `sent` count, and done(), which prints one line,
-- "BENCH_RESULT {...json...}", that tests/bench/wrk.py parses. wrk counts a
-- response with a status above 399 in summary.errors.status, and such a
-- response in summary.requests too.

-- Setup phase: one environment for all threads, also used by done().
local threads = {}

function setup(thread)
   thread:set("thread_index", #threads)
   table.insert(threads, thread)
end

-- Running phase: every thread runs the script in its own environment.
-- `sent` (requests) is global so that done() can read it with thread:get();
-- each script's request() counts what it sends.
sent = 0

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
