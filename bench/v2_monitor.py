#!/usr/bin/env python3
"""Benchmark koji-rekor monitor on a Rekor v2 shard: what a scan of N
entries costs in time, requests and memory, at several log sizes.

For each size N, the local v2 log (tests/support/rekor_v2_server.py, on 127.0.0.1,
in this process's threads) is seeded directly with N entries by nobody we
know (~450-byte bodies) and one checkpoint. The monitor (api = 2) then reads
every entry from the shard's start, in this process: one entry bundle and
its level-0 tile per 256 entries, each tile checked against the signed root.

It reports the wall time, entries a second, the GET requests the log
answered (and how many were entry bundles), and the peak of Python's own
allocations during the run (tracemalloc, which also slows the run): the
point is that the last two grow with N while memory does not. CI does not
run it.

    python3 -m bench.v2_monitor [--sizes 2560,25600] [--json FILE]
"""

import argparse
import json
import os
import sys
import tempfile
import time
import tracemalloc

import koji_rekor.cli
from bench.common import machine_note
from tests.support.rekor_v2_server import RekorV2Server, leaf_hash


def run(size):
    with RekorV2Server(interval=3600) as log:
        with log.cond:
            for n in range(size):
                body = json.dumps({'kind': 'hashedrekord', 'apiVersion': '0.0.2', 'n': n,
                                   'pad': 'x' * 400}).encode()
                log.tree.append(leaf_hash(body))
                log.bodies.append(body)
        log.publish_now()
        with tempfile.TemporaryDirectory() as work:
            topdir = os.path.join(work, 'koji')
            os.mkdir(topdir)
            key = os.path.join(work, 'log.pub')
            with open(key, 'wb') as fo:
                fo.write(log.key.public_pem)
            conf = os.path.join(work, 'monitor.conf')
            with open(conf, 'w') as fo:
                fo.write('[rekor]\napi = 2\nurl = %s\nallow_insecure_http = true\n'
                         'log_public_key = %s\n[upload]\nhub_user = %s\n'
                         '[koji]\nserver = http://127.0.0.1:9/kojihub\n'
                         % (log.url, key, os.environ.get('USER', 'root')))
            tracemalloc.start()
            began = time.monotonic()
            with open(os.devnull, 'w') as null:
                stdout, sys.stdout = sys.stdout, null
                try:
                    status = koji_rekor.cli.main(['monitor', '--config', conf, '--topdir', topdir,
                                                  '--json'])
                finally:
                    sys.stdout = stdout
            seconds = time.monotonic() - began
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
        gets = [path for method, path, _ in list(log.requests) if method == 'GET']
    return status, seconds, len(gets), sum(p.startswith('/tile/entries') for p in gets), peak


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--sizes', default='2560,25600')
    parser.add_argument('--json', help='also write the rows here')
    args = parser.parse_args()
    machine = machine_note()
    print('machine: %s' % machine, flush=True)
    rows = []
    print('%8s %6s %9s %10s %9s %8s %12s' % ('entries', 'exit', 'seconds', 'entries/s',
                                             'requests', 'bundles', 'peak MiB'))
    for size in [int(s) for s in args.sizes.split(',')]:
        status, seconds, gets, bundles, peak = run(size)
        print('%8d %6d %9.2f %10.0f %9d %8d %12.1f' % (size, status, seconds, size / seconds,
                                                        gets, bundles, peak / 2 ** 20),
              flush=True)
        rows.append({'entries': size, 'exit': status, 'seconds': round(seconds, 3),
                     'requests': gets, 'bundles': bundles, 'peak_mib': round(peak / 2 ** 20, 1)})
    if args.json:
        with open(args.json, 'w') as fo:
            json.dump({'machine': machine, 'rows': rows}, fo, indent=1)


if __name__ == '__main__':
    main()
