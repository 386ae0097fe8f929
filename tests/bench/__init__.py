"""The benchmark of the replicated log: ``python -m tests.bench [--smoke] [--out PATH]``.

Not a test suite: pytest never collects this folder (pytest.ini's
norecursedirs). It starts its own processes on 127.0.0.1, loads them with
wrk, checks that the secondaries converge, and reports figures against the
targets. docs/benchmarks.md has the figures and how to rerun them.

Modules: __main__ (command line), scenarios (what is run), wrk and post.lua
(the load), nodes (the processes), consistency (the correctness check),
durability (a primary's start on a large DATA_DIR, an in-memory primary's
recovery, and the stores they start from), report (targets, checks,
table), machine (what it ran on), baseline_app (the bare Bottle+Waitress
app the primary is compared with).
"""
