"""The benchmark of the replicated log: ``python -m tests.bench [--smoke] [--only NAME,...] [--code DIR] ...``.

Not a test suite: pytest never collects this folder (pytest.ini's
norecursedirs). It starts its own processes on 127.0.0.1, loads them with
wrk, checks that the nodes converge, reports figures against the targets,
and draws charts of them. docs/benchmarks.md has the figures and how to
rerun them.

Modules: __main__ (command line), scenarios (which there are, their order
and sizes, the fixed-role ones), loads (a wrk load on a cluster and the
check after it), wrk with post.lua, get.lua and result.lua (the load),
nodes (the processes, their memory and CPU time, a whole restart),
checkout (which checkout the nodes run from: ``--code``), consistency
(the correctness check), stores (stores written directly, and their size
on disk), durability (a primary's start on a large DATA_DIR, an in-memory
primary's recovery), paging (pages read at offsets of a large log),
tailing (how soon a reader long-polling a secondary sees an append),
catch_up (a secondary restarted empty, against the log's length),
failover (the failover cluster, and its primary killed or stopped),
failover_catch_up (a failover follower restarted with an empty DATA_DIR),
fill (a large fill and a whole restart, fixed roles and failover),
large_failover_log (a failover cluster on a prebuilt log of millions),
retention (RETENTION_MESSAGES and the store's size), linearizable
(linearizable against local reads), metrics_cost (what /metrics costs the
primary), report (targets and checks), table (the text printed), charts
(the PNG files), machine (what it ran on, the load average), baseline_app
(the bare Bottle+Waitress app the primary is compared with).
"""
