"""The failover mode: every node the same, the primary elected (PEERS set).

Its shell around shared.consensus.raft: the configuration, the log on disk
and the messages it shows, the ``node-io`` thread, appends (proposed here
or forwarded to the primary) and the HTTP API. docs/architecture.md has the
rules; the README says how to run it.
"""
