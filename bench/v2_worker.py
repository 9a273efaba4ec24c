#!/usr/bin/env python3
"""Benchmark the worker draining signatures into a Rekor v2 shard.

A v2 write blocks until the shard publishes its next checkpoint, so a
worker uploading one at a time logs one signature per checkpoint interval;
its throughput is how many uploads it has in flight. This builds (once,
cached in --cache) --count RPMs signed with RSA/SHA-256, queues a committed
outbox record for each, starts a local v2 log (tests/support/rekor_v2_server.py)
that publishes a checkpoint every --interval seconds, and times
`koji-rekor retry --now` (its own process, the default --jobs unless
--jobs is given) until every record has its verified receipt.

Target (issue 22): 200 signatures, a checkpoint every second, default jobs:
at most 25 s (one at a time: about 200 s).

    python3 -m bench.v2_worker [--count 200] [--interval 1] [--jobs N,...]
                               [--cache DIR] [--json FILE]
"""

import argparse
import json
import os
import pwd
import shutil
import subprocess
import tempfile
import time

from bench.common import CACHE, ROOT, child_command, json_safe, machine_note, prepared
from bench.worker import build_many, reset_topdir, sign_many


def prepare(cache, count):
    return prepared(os.path.join(cache, 'v2-%d' % count), lambda base: make_inputs(base, count))


def make_inputs(base, count):
    from tests.support import rpmfactory
    print('preparing %d RPMs in %s (once) ...' % (count, base), flush=True)
    rpms = build_many(base, count)
    keydir = os.path.join(base, 'keys')
    os.makedirs(keydir)
    key = rpmfactory.generate_key(os.path.join(base, 'gnupg'), algo='rsa', name='Bench v2')
    shutil.copy(key.path, os.path.join(keydir, key.sigkey + '.asc'))
    try:
        signed = sign_many(rpms, os.path.join(base, 'signed'), key, digest_algo='sha256')
    finally:
        rpmfactory.stop_gpg_agent(key.gnupghome)
    topdir = os.path.join(base, 'topdir')
    signatures = []
    for index, (unsigned, path) in enumerate(zip(rpms, signed)):
        imported = rpmfactory.koji_import_signature(topdir, unsigned, path,
                                                    build_id=index + 1, rpm_id=index + 1)
        signatures.append([json_safe(imported.build), json_safe(imported.rpm),
                           imported.sigkey, imported.sighash, path])
    shutil.rmtree(os.path.join(base, 'rpmbuild'), ignore_errors=True)
    return {'count': count, 'topdir': topdir, 'keydir': keydir, 'signatures': signatures}


def one_run(info, interval, jobs, workdir):
    from tests.support.rekor_v2_server import RekorV2Server
    reset_topdir(info['topdir'], info['signatures'])
    with RekorV2Server(interval=interval) as log:
        pem = os.path.join(workdir, 'log.pub')
        with open(pem, 'wb') as fo:
            fo.write(log.key.public_pem)
        conf = os.path.join(workdir, 'rekor_log.conf')
        with open(conf, 'w') as fo:
            fo.write('[rekor]\napi = 2\nurl = %s\nallow_insecure_http = true\n'
                     'log_public_key = %s\ntimeout = 30\n[signing]\npublic_key_dir = %s\n'
                     '[upload]\nhub_user = %s\n' % (log.url, pem, info['keydir'],
                                                    pwd.getpwuid(os.getuid()).pw_name))
        cmd = child_command('koji_rekor', 'retry', '--config', conf, '--topdir', info['topdir'],
                            '--now', '--json')
        if jobs:
            cmd += ['--jobs', str(jobs)]
        start = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, timeout=1800, cwd=ROOT)
        seconds = time.perf_counter() - start
        logged = len(log.bodies)
        checkpoints = log.checkpoints
    try:
        counts = json.loads(done.stdout)['counts']
    except (ValueError, KeyError):
        counts = {'error': (done.stdout + done.stderr).decode(errors='replace')[-500:]}
    return {'jobs': jobs or 'default', 'seconds': round(seconds, 2), 'logged': logged,
            'checkpoints': checkpoints, 'counts': counts}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--count', type=int, default=200)
    parser.add_argument('--interval', type=float, default=1.0)
    parser.add_argument('--jobs', default='default',
                        help='comma-separated --jobs values to run ("default": none given)')
    parser.add_argument('--cache', default=os.path.join(CACHE, 'worker'))
    parser.add_argument('--json')
    args = parser.parse_args()
    info = prepare(args.cache, args.count)
    machine = machine_note()
    print('machine: %s' % machine, flush=True)
    results = []
    with tempfile.TemporaryDirectory(prefix='bench-v2w-') as workdir:
        for jobs in args.jobs.split(','):
            result = one_run(info, args.interval, None if jobs == 'default' else int(jobs),
                             workdir)
            results.append(result)
            print('%d signatures, a checkpoint every %g s, --jobs %s: %.1f s (%d logged, '
                  '%s)' % (args.count, args.interval, result['jobs'], result['seconds'],
                           result['logged'], result['counts']), flush=True)
    if args.json:
        with open(args.json, 'w') as fo:
            json.dump({'machine': machine, 'runs': results}, fo, indent=1)


if __name__ == '__main__':
    main()
