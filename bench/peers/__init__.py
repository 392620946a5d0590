"""poststack beside the tools users would pick instead, on the same workloads, in one run.

    python -m bench.peers [--runs 5] [--count 500] [--quick]

Every tool gets the same migrations (a table and an index each; down: drop the table), in
its own layout, and runs as a whole process, as its users run it, against a fresh database
per timed run (made from a template where a workload starts from applied migrations):

W1 apply all COUNT to an empty database
W2 status with all COUNT applied
W3 apply the one migration added after COUNT applied ones
W4 roll back the last 50 of COUNT (dbmate rolls back one per command: 50 commands)
Start-up: ``poststack version`` and ``poststack --help`` against ``python -c pass``

W1 also has its floor: psql writing what poststack writes (its tracking tables, the lock,
a tracking row and an audit row in each migration's transaction) and reading nothing.
Each figure is the median of --runs; CPU is the client's (user + system, the process and
its children), RSS the client's peak. The peers (dbmate and node-pg-migrate from npm,
alembic and yoyo from PyPI) are installed into ~/.cache/poststack-bench-peers on first use.
The table goes into docs/performance.md, between its bench.peers markers.
"""
