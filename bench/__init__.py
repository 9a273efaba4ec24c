"""The benchmarks: speed and memory measured against the local log on
127.0.0.1, with numbers for docs/performance.md; not part of the test suite.

Each runs from the checkout's root as a module, e.g.
`python3 -m bench.upload --sizes 1M --pairs 1`: upload (the plugin's
upload against curl), worker (outbox drain, backfill, verify), monitor,
budget (how long the log holds an import), verify_rpm, and on a Rekor
v2 log v2_upload, v2_worker and v2_monitor. What they share is in
bench/common.py.
"""
