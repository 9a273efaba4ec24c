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

    python3 bench/bench_v2_worker.py [--count 200] [--interval 1] [--jobs N,...]
                                     [--cache DIR] [--json FILE]
"""

import argparse
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TESTS = os.path.join(ROOT, 'tests')
sys.path[:0] = [ROOT, TESTS, HERE]

from bench import json_safe  # noqa: E402
from bench_worker import build_many, reset_topdir  # noqa: E402


def sign_sha256(rpms, outdir, key):
    """Copies of rpms signed header-only with RSA/SHA-256 (what v2 takes)."""
    os.makedirs(outdir, exist_ok=True)
    signed = []
    for rpm in rpms:
        signed.append(os.path.join(outdir, os.path.basename(rpm)))
        shutil.copyfile(rpm, signed[-1])
    with tempfile.TemporaryDirectory(prefix='rpmdb-') as dbpath:
        for start in range(0, len(signed), 200):
            subprocess.run(['rpmsign', '--dbpath', dbpath, '--define',
                            '__gpg %s' % shutil.which('gpg'),
                            '--define', '_gpg_path %s' % key.gnupghome,
                            '--define', '_gpg_name %s' % key.fingerprint,
                            '--define', '_gpg_digest_algo sha256', '--addsign']
                           + signed[start:start + 200], check=True, timeout=1800,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           env=dict(os.environ, GNUPGHOME=key.gnupghome))
    return signed


def prepare(cache, count):
    from tests.support import rpmfactory
    base = os.path.join(cache, 'v2-%d' % count)
    done = os.path.join(base, 'ready.json')
    if os.path.exists(done):
        with open(done) as fo:
            return json.load(fo)
    shutil.rmtree(base, ignore_errors=True)
    os.makedirs(base)
    print('preparing %d RPMs in %s (once) ...' % (count, base), flush=True)
    rpms = build_many(base, count)
    keydir = os.path.join(base, 'keys')
    os.makedirs(keydir)
    key = rpmfactory.generate_key(os.path.join(base, 'gnupg'), algo='rsa', name='Bench v2')
    shutil.copy(key.path, os.path.join(keydir, key.sigkey + '.asc'))
    try:
        signed = sign_sha256(rpms, os.path.join(base, 'signed'), key)
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
    info = {'count': count, 'topdir': topdir, 'keydir': keydir, 'signatures': signatures}
    with open(done, 'w') as fo:
        json.dump(info, fo)
    return info


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
        cmd = [sys.executable, '-m', 'koji_rekor', 'retry', '--config', conf,
               '--topdir', info['topdir'], '--now', '--json']
        if jobs:
            cmd += ['--jobs', str(jobs)]
        env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
        start = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, timeout=1800, env=env, cwd=ROOT)
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
    parser.add_argument('--cache', default=os.path.join(HERE, '.cache', 'worker'))
    parser.add_argument('--json')
    args = parser.parse_args()
    info = prepare(args.cache, args.count)
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
            json.dump(results, fo, indent=1)


if __name__ == '__main__':
    main()
