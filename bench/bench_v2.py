#!/usr/bin/env python3
"""Benchmark a Rekor v2 hashedrekord upload of a small and a large RPM.

The v2 entry is made from the RPM's headers alone, so logging a 1 GB RPM
should cost what logging a 10 KB one does: within 1.5x the time, at no
more than 64 MiB peak. For each size it builds (once, cached in --cache)
an RPM signed header-only with RSA/SHA-256, then runs --runs uploads per
size, alternating the order, each in a fresh child process against a fresh
local v2 log (tests/support/rekor_v2_server.py, in this process, checkpoints every
--interval s). The child times the upload inside itself (imports done
beforehand, as in a running hub or worker): entry built from the headers,
then the POST that waits for the checkpoint. It reports its peak RSS
(VmHWM) and the bytes it read (rchar in /proc/self/io) during the upload.

    python3 -m bench.bench_v2 [--sizes 10K,1G] [--runs 5] [--interval 0.05]
                              [--cache DIR] [--json FILE]
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TESTS = os.path.join(ROOT, 'tests')


def parse_size(text):
    units = {'K': 1000, 'M': 1000 ** 2, 'G': 1000 ** 3}
    text = text.strip().upper()
    return int(float(text[:-1]) * units[text[-1]]) if text[-1] in units else int(text)


def proc_field(path, name):
    with open(path) as fo:
        for line in fo:
            if line.startswith(name):
                return int(line.split()[1])
    return None


def child(args):
    """One upload, timed inside this process; prints a JSON line."""
    sys.path.insert(0, ROOT)
    from koji_rekor.v2 import upload
    from koji_rekor.v2.client import ClientSettings
    __import__('requests')  # imported beforehand, as in a running worker
    with open(args.key, 'rb') as fo:
        key = fo.read()
    read_before = proc_field('/proc/self/io', 'rchar')
    started = time.perf_counter()
    built = upload.hashedrekord.from_rpm_file(args.rpm, key)
    build_seconds = time.perf_counter() - started
    done = upload.upload_rpm(args.rpm, key, ClientSettings(args.url, retries=0))
    seconds = time.perf_counter() - started
    assert done.created and done.entry == built
    print(json.dumps({'seconds': seconds, 'build_seconds': build_seconds,
                      'read_bytes': proc_field('/proc/self/io', 'rchar') - read_before,
                      'peak_kib': proc_field('/proc/self/status', 'VmHWM')}))


def prepare(cache, size):
    """(rpm, key path) for a payload of size bytes, built and signed once."""
    sys.path.insert(0, TESTS)
    from tests.support import rpmfactory
    where = os.path.join(cache, str(size))
    rpm, key = os.path.join(where, 'signed.rpm'), os.path.join(where, 'key.asc')
    if os.path.exists(rpm) and os.path.exists(key):
        return rpm, key
    shutil.rmtree(where, ignore_errors=True)
    os.makedirs(where)
    home = tempfile.mkdtemp(prefix='gnupg-', dir=where)
    gpg = rpmfactory.generate_key(home, 'rsa')
    unsigned = rpmfactory.build_rpm(where, name='bench', payload_bytes=size)
    with tempfile.TemporaryDirectory(prefix='rpmdb-') as db:
        # v2 takes RSA with SHA-256 only; pin the digest gpg would choose.
        subprocess.run(['rpmsign', '--dbpath', db, '--define', '__gpg %s' % shutil.which('gpg'),
                        '--define', '_gpg_path %s' % home,
                        '--define', '_gpg_name %s' % gpg.fingerprint,
                        '--define', '_gpg_digest_algo sha256', '--addsign', unsigned],
                       env=dict(os.environ, GNUPGHOME=home), check=True, capture_output=True,
                       timeout=3600, stdin=subprocess.DEVNULL)
    rpmfactory.stop_gpg_agent(home)
    os.replace(unsigned, rpm)
    shutil.copyfile(gpg.path, key)
    return rpm, key


def one_run(rpm, key, interval):
    sys.path.insert(0, TESTS)
    from tests.support.rekor_v2_server import RekorV2Server
    with RekorV2Server(interval=interval) as log:
        out = subprocess.run([sys.executable, __file__, '--child', '--rpm', rpm, '--key', key,
                              '--url', log.url], capture_output=True, timeout=600, check=True,
                             env=dict(os.environ, PYTHONPATH=ROOT))
    return json.loads(out.stdout.decode().strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--sizes', default='10K,1G')
    parser.add_argument('--runs', type=int, default=5)
    parser.add_argument('--interval', type=float, default=0.05)
    parser.add_argument('--cache', default=os.path.join(tempfile.gettempdir(), 'bench_v2-cache'))
    parser.add_argument('--json')
    parser.add_argument('--child', action='store_true', help=argparse.SUPPRESS)
    parser.add_argument('--rpm', help=argparse.SUPPRESS)
    parser.add_argument('--key', help=argparse.SUPPRESS)
    parser.add_argument('--url', help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    sizes = [parse_size(s) for s in args.sizes.split(',')]
    inputs = {size: prepare(args.cache, size) for size in sizes}
    runs = {size: [] for size in sizes}
    for n in range(args.runs):
        for size in (sizes if n % 2 == 0 else sizes[::-1]):
            runs[size].append(one_run(*inputs[size], args.interval))
    rows = []
    print('%12s %12s %10s %12s %10s %12s' % ('payload', 'rpm bytes', 'upload s', 'build ms',
                                              'peak MiB', 'read KiB'))
    for size in sizes:
        r = runs[size]
        row = {'payload': size, 'rpm_bytes': os.path.getsize(inputs[size][0]),
               'upload_s': statistics.median(x['seconds'] for x in r),
               'build_ms': 1000 * statistics.median(x['build_seconds'] for x in r),
               'peak_mib': max(x['peak_kib'] for x in r) / 1024,
               'read_kib': max(x['read_bytes'] for x in r) / 1024}
        rows.append(row)
        print('%12d %12d %10.3f %12.2f %10.1f %12.1f' % (
            row['payload'], row['rpm_bytes'], row['upload_s'], row['build_ms'],
            row['peak_mib'], row['read_kib']))
    if len(rows) >= 2:
        print('time ratio largest/smallest (medians): %.2f'
              % (rows[-1]['upload_s'] / rows[0]['upload_s']))
    if args.json:
        with open(args.json, 'w') as fo:
            json.dump({'runs': {str(k): v for k, v in runs.items()}, 'rows': rows}, fo, indent=1)


if __name__ == '__main__':
    main()
