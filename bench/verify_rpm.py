#!/usr/bin/env python3
"""Benchmark `koji-rekor verify-rpm` on many RPMs against hashing them.

N signed RPMs of a given size are generated once (cached in --cache) and
logged in a fresh local Rekor-compatible log (tests/support/rekor_server.py, in this
process on 127.0.0.1). Then, side by side in one run, each in its own
process and each --runs times (the median is reported):

  sha256sum   coreutils hashing every file: the floor;
  hashlib     one Python process hashing every file with koji_rekor.rpmsig.sha256_of;
  verify-rpm  `koji-rekor verify-rpm` of every file (index search, fetch,
              full verification, rpm's signature check), as a user runs it;
  startup     `koji-rekor --version`: the interpreter and imports alone.

    python3 -m bench.verify_rpm [--count 8] [--size 64M] [--runs 3] [--cache DIR]
"""

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time

from bench.common import CACHE, MiB, ROOT, child_command, parse_size, prepared

CHILD_SECONDS = 1800


def prepare(cache, count, size):
    """count signed RPMs of about size bytes and their key; made once."""
    return prepared(os.path.join(cache, 'verify-rpm-%dx%d' % (count, size)),
                    lambda base: make_inputs(base, count, size))


def make_inputs(base, count, size):
    from tests.support import rpmfactory
    key = rpmfactory.generate_key(os.path.join(base, 'gnupg'), algo='rsa', name='Bench Key')
    try:
        rpms = []
        for number in range(count):
            unsigned = rpmfactory.build_rpm(os.path.join(base, 'build%d' % number),
                                            name='bench%d' % number, payload_bytes=size)
            rpms.append(rpmfactory.sign_rpm(unsigned, os.path.join(base, 'signed%d.rpm' % number),
                                            key))
            shutil.rmtree(os.path.join(base, 'build%d' % number))
    finally:
        rpmfactory.stop_gpg_agent(key.gnupghome)
    return {'key': key.path, 'rpms': rpms}


def timed(cmd):
    start = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=CHILD_SECONDS, cwd=ROOT)
    elapsed = time.monotonic() - start
    return elapsed, proc


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--count', type=int, default=8)
    parser.add_argument('--size', default='64M')
    parser.add_argument('--runs', type=int, default=3)
    parser.add_argument('--cache', default=CACHE)
    args = parser.parse_args()
    size = parse_size(args.size)
    info = prepare(args.cache, args.count, size)

    import koji_rekor.config
    import koji_rekor.delivery
    import koji_rekor.rpmsig
    from tests.support.rekor_server import RekorServer
    with RekorServer() as rekor:
        log_key = os.path.join(args.cache, 'verify-rpm-log.pub')
        with open(log_key, 'wb') as fo:
            fo.write(rekor.log.public_key_pem)
        settings = koji_rekor.config.Settings(url=rekor.url, allow_insecure_http=True,
                                      log_public_key=log_key, timeout=600)
        hashes = [koji_rekor.delivery.upload_signed_rpm(settings, koji_rekor.rpmsig.signed_rpm_from_file(path),
                                              info['key']).receipt['sha256']
                  for path in info['rpms']]
        # The log writes its index after answering: wait (boundedly) for it.
        deadline = time.monotonic() + 30
        while not all(rekor.log.search_index(['sha256:%s' % h]) for h in hashes):
            if time.monotonic() > deadline:
                sys.exit('the log did not index the RPMs')
            time.sleep(0.01)
        hashlib_code = ('import sys, koji_rekor.rpmsig\n'
                        'for p in sys.argv[1:]:\n'
                        '    koji_rekor.rpmsig.sha256_of(open(p, "rb"))\n')
        commands = {
            'sha256sum': ['sha256sum'] + info['rpms'],
            'hashlib': [sys.executable, '-c', hashlib_code] + info['rpms'],
            'verify-rpm': child_command('koji_rekor', 'verify-rpm', '--url', rekor.url,
                                        '--allow-insecure-http', '--log-key', log_key,
                                        '--key', info['key'], *info['rpms']),
            'startup': child_command('koji_rekor', '--version'),
        }
        times = {name: [] for name in commands}
        for _ in range(args.runs):
            for name, cmd in commands.items():
                elapsed, proc = timed(cmd)
                if proc.returncode != 0:
                    sys.exit('%s failed (%d): %s%s' % (name, proc.returncode, proc.stdout,
                                                       proc.stderr))
                times[name].append(elapsed)
    total = sum(os.path.getsize(p) for p in info['rpms'])
    print('Measured on: %s, %d cores, Python %s, %s' % (
        platform.processor() or platform.machine(), os.cpu_count(), platform.python_version(),
        platform.platform()))
    print('%d RPMs, %.0f MiB in all, median of %d runs' % (args.count, total / MiB, args.runs))
    print('| what | wall time | MiB/s | vs sha256sum |')
    print('|---|---|---|---|')
    floor = statistics.median(times['sha256sum'])
    for name in commands:
        median = statistics.median(times[name])
        rate = '' if name == 'startup' else '%.0f' % (total / MiB / median)
        print('| %s | %.2f s | %s | %.2fx |' % (name, median, rate, median / floor))


if __name__ == '__main__':
    main()
