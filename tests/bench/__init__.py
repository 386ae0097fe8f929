"""The benchmark of the replicated log: ``python -m tests.bench [--smoke] [--out PATH] [--docs-img]``.

Not a test suite: pytest never collects this folder (pytest.ini's
norecursedirs). It starts its own processes on 127.0.0.1, loads them with
wrk, checks that the secondaries converge, reports figures against the
targets, and draws charts of them. docs/benchmarks.md has the figures and
how to rerun them.

Modules: __main__ (command line), scenarios (what is run), wrk and post.lua
(the load), nodes (the processes, their memory and CPU time), consistency
(the correctness check), durability (a primary's start on a large
DATA_DIR, an in-memory primary's recovery, and the stores they start
from), paging (pages read at offsets of that primary's log), tailing (how
soon a reader long-polling a secondary sees an append), catch_up (a
secondary restarted empty, against the log's length), metrics_cost (what
/metrics costs the primary), report (targets, checks, table), charts (the
PNG files), machine (what it ran on), baseline_app (the bare
Bottle+Waitress app the primary is compared with).
"""
