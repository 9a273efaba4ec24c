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

    python3 -m bench.v2_upload [--sizes 10K,1G] [--runs 5] [--interval 0.05]
                               [--cache DIR] [--json FILE]

(sizes in binary units: 1G is 1 GiB of random payload)
"""

import argparse
import json
import os
import statistics
import subprocess
import time

from bench.common import CACHE, ROOT, child_command, machine_note, parse_size, prepared

def proc_field(path, name):
    with open(path) as fo:
        for line in fo:
            if line.startswith(name):
                return int(line.split()[1])
    return None


def child(args):
    """One upload, timed inside this process; prints a JSON line."""
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
    return prepared(os.path.join(cache, str(size)), lambda base: make_input(base, size))


def make_input(base, size):
    from tests.support import rpmfactory
    print('preparing a %d-byte RPM in %s (once) ...' % (size, base), flush=True)
    gpg = rpmfactory.generate_key(os.path.join(base, 'gnupg'), 'rsa')
    try:
        unsigned = rpmfactory.build_rpm(os.path.join(base, 'unsigned'), name='bench',
                                        payload_bytes=size)
        # v2 takes RSA with SHA-256 only; pin the digest gpg would choose.
        rpm = rpmfactory.sign_rpm(unsigned, os.path.join(base, 'signed.rpm'), gpg,
                                  digest_algo='sha256')
    finally:
        rpmfactory.stop_gpg_agent(gpg.gnupghome)
    os.remove(unsigned)
    return {'rpm': rpm, 'key': gpg.path}


def one_run(info, interval):
    from tests.support.rekor_v2_server import RekorV2Server
    with RekorV2Server(interval=interval) as log:
        out = subprocess.run(child_command('bench.v2_upload', '--child', '--rpm', info['rpm'],
                                           '--key', info['key'], '--url', log.url),
                             capture_output=True, timeout=600, check=True, cwd=ROOT)
    return json.loads(out.stdout.decode().strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--sizes', default='10K,1G')
    parser.add_argument('--runs', type=int, default=5)
    parser.add_argument('--interval', type=float, default=0.05)
    parser.add_argument('--cache', default=os.path.join(CACHE, 'v2-upload'))
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
    machine = machine_note()
    print('machine: %s' % machine, flush=True)
    for n in range(args.runs):
        for size in (sizes if n % 2 == 0 else sizes[::-1]):
            runs[size].append(one_run(inputs[size], args.interval))
    rows = []
    print('%12s %12s %10s %12s %10s %12s' % ('payload', 'rpm bytes', 'upload s', 'build ms',
                                              'peak MiB', 'read KiB'))
    for size in sizes:
        r = runs[size]
        row = {'payload': size, 'rpm_bytes': os.path.getsize(inputs[size]['rpm']),
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
            json.dump({'machine': machine, 'runs': {str(k): v for k, v in runs.items()}, 'rows': rows}, fo, indent=1)


if __name__ == '__main__':
    main()
