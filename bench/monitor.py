#!/usr/bin/env python3
"""Benchmark koji-rekor monitor: how fast it reads the log, and what a run
with nothing new costs, at several log sizes.

For each size N, a local Rekor-compatible log (tests/support/rekor_server.py, in its
own process on 127.0.0.1) is seeded directly with N rpm entries made with
a key that is not ours (as most of a public log), cached in --cache. Then,
each in its own process, the monitor:

  scan   reads all N entries (--start-index 0): each one fetched (10 a
         request, several in flight), verified (UUID, inclusion proof,
         checkpoint, SET) and its key's fingerprints compared with ours;
  quiet  runs again with nothing new.

It reports each run's wall time (a whole process, start-up included, which
is printed too), entries a second, and the requests each run made (counted
by the log). CI does not run it.

    python3 -m bench.monitor [--sizes 100,1000,10000] [--cache DIR]
"""

import argparse
import base64
import hashlib
import json
import os
import platform
import subprocess
import tempfile
import time
import urllib.request

from bench.common import CACHE, ROOT, LocalRekor, child_command
from tests.support.common import HUB_USER

RUN_SECONDS = 3600


def seeded_log(cache, size):
    """A log state directory with `size` rpm entries, made once."""
    from tests.support.rekor_server import RekorLog, canonical_json
    state = os.path.join(cache, 'monitor-log-%d' % size)
    if os.path.isfile(os.path.join(state, 'log.jsonl')):
        return state
    log = RekorLog(state_dir=state + '.tmp')
    key = base64.b64encode(log.impostor_pgp_armor).decode()
    for n in range(size):
        digest = hashlib.sha256(b'package %d' % n).hexdigest()
        log.add_entry(canonical_json({
            'apiVersion': '0.0.1', 'kind': 'rpm',
            'spec': {'package': {'hash': {'algorithm': 'sha256', 'value': digest},
                                 'headers': {'Name': 'pkg%d' % n, 'Epoch': '0',
                                             'Version': '1', 'Release': '1',
                                             'Architecture': 'noarch'}},
                     'publicKey': {'content': key}}}))
    os.rename(state + '.tmp', state)
    return state


def request_count(url):
    with urllib.request.urlopen(url + '/_test/state', timeout=30) as answer:
        return json.load(answer)['requests']


def run_monitor(conf, topdir, *args):
    started = time.monotonic()
    done = subprocess.run(child_command('koji_rekor', 'monitor', '--json', '--config', conf,
                                        '--topdir', topdir, *args),
                          capture_output=True, text=True, timeout=RUN_SECONDS, cwd=ROOT)
    seconds = time.monotonic() - started
    if done.returncode != 0:
        raise RuntimeError('monitor exited %d: %s' % (done.returncode, done.stderr[-2000:]))
    return seconds, json.loads(done.stdout)


def measure(cache, size, our_key):
    state = seeded_log(cache, size)
    with tempfile.TemporaryDirectory(prefix='bench-monitor-') as workdir:
        rekor = LocalRekor(workdir, state_dir=state)
        url, log_key = rekor.url, rekor.key
        try:
            topdir = os.path.join(workdir, 'topdir')
            os.makedirs(topdir)
            conf = os.path.join(workdir, 'monitor.conf')
            with open(conf, 'w') as fo:
                # the hub's user owns rekor-logs/: here, whoever runs the benchmark
                fo.write('[rekor]\nurl = %s\nallow_insecure_http = true\nlog_public_key = %s\n'
                         '[signing]\npublic_key_path = %s\n[upload]\nhub_user = %s\n'
                         % (url, log_key, our_key, HUB_USER))
            before = request_count(url)
            scan_seconds, scan = run_monitor(conf, topdir, '--start-index', '0')
            after_scan = request_count(url)
            quiet_seconds, quiet = run_monitor(conf, topdir)
            after_quiet = request_count(url)
        finally:
            rekor.stop()
    assert scan['scan']['counts']['read'] == size, scan['scan']
    assert quiet['scan']['counts']['read'] == 0
    return {'size': size, 'scan_seconds': scan_seconds, 'scan_requests': after_scan - before,
            'reading_seconds': scan['scan']['seconds'],
            'quiet_seconds': quiet_seconds, 'quiet_requests': after_quiet - after_scan}


def our_key_file(cache):
    """Any OpenPGP public key of ours: none of the seeded entries is made with it."""
    from tests.support.rekor_server import OpenPgpKey, _new_openpgp_ed25519_key
    path = os.path.join(cache, 'monitor-our-key.asc')
    if not os.path.isfile(path):
        with open(path, 'wb') as fo:
            fo.write(OpenPgpKey.parse(_new_openpgp_ed25519_key('Ours <ours@example.test>'))
                     .canonical_armor)
    return path


def startup_seconds():
    """What any koji-rekor run costs before it does anything: the interpreter
    and the imports (the --version of the same command)."""
    started = time.monotonic()
    subprocess.run(child_command('koji_rekor', '--version'),
                   capture_output=True, timeout=RUN_SECONDS, cwd=ROOT, check=True)
    return time.monotonic() - started


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--sizes', default='100,1000,10000')
    parser.add_argument('--cache', default=CACHE)
    args = parser.parse_args()
    os.makedirs(args.cache, exist_ok=True)
    our_key = our_key_file(args.cache)
    rows = [measure(args.cache, int(size), our_key) for size in args.sizes.split(',')]
    print('Measured on: %s, %d cores, Python %s, %s' % (
        platform.processor() or platform.machine(), os.cpu_count(), platform.python_version(),
        platform.platform()))
    print('Start-up of the command (koji-rekor --version): %.2f s' % startup_seconds())
    print()
    print('| entries in the log | scan: wall time | scan: entries/s (reading only) '
          '| scan: requests | quiet run: wall time | quiet run: requests |')
    print('|---|---|---|---|---|---|')
    for row in rows:
        print('| %d | %.2f s | %.0f | %d | %.2f s | %d |' % (
            row['size'], row['scan_seconds'], row['size'] / row['reading_seconds'],
            row['scan_requests'], row['quiet_seconds'], row['quiet_requests']))


if __name__ == '__main__':
    main()
