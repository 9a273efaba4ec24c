#!/usr/bin/env python3
"""Benchmark the worker side: draining the outbox after a mass signing,
backfill's memory, and verifying many receipts.

Inputs, made once and cached in --cache (default bench/.cache/worker):
COUNT small RPMs built as subpackages of one spec (one rpmbuild), signed
with KEYS ed25519 keys (rpmsign, many files per call), and laid out as
the hub's add_rpm_sig leaves them: one topdir with the first key's COUNT
signatures, one with all COUNT x KEYS. The outbox records are written
directly (what postCommit leaves for the worker), a fresh set per run.

1. Batch: COUNT signatures, each run against a fresh local log
   (tests/support/rekor_server.py in its own process on 127.0.0.1):
     worker   drain_outbox(jobs=N) in a child process, timed around the
              drain: rpm check, upload, verification, receipt, for each;
     bare     the same prebuilt request bodies (the bytes the plugin
              sends) POSTed one after another over one kept-alive
              connection (http.client), and over N connections at once.
   Every receipt is then verified. The log's own CPU time (its process and
   the rpmkeys it runs per entry) is reported beside each run, to show
   where the log is the bottleneck.
2. Backfill: `koji-rekor backfill --jobs 4` over COUNT and COUNT x KEYS
   signatures against a fresh log; peak RSS of the process
   (/usr/bin/time).
3. Verify: `koji-rekor verify DIR` over the receipts of the batch run, and
   over KEYS copies of them, in one process: receipts a second, with and
   without interpreter start-up.

    python3 -m bench.worker [--count 1000] [--keys 10] [--jobs 1,4] [--busy RATE]
"""

import argparse
import compileall
import http.client
import json
import os
import pwd
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

from bench.common import (CACHE, MiB, ROOT, LocalRekor, child_command, json_safe, machine_note,
                          prepared, process_cpu)

CHILD_SECONDS = 3600


def measure(cmd, stderr=None):
    """Run a child under /usr/bin/time, so its peak RSS is its own (a child
    forked from this Python process would count the pages it inherits).
    Returns the child's JSON report (its last line), if it prints one,
    with 'rss' added."""
    # As installed (the RPM byte-compiles, pip compiles on install), the
    # modules load from bytecode: compiling them in the child would add
    # several MiB to its peak.
    compiled = compileall.compile_file(os.path.join(ROOT, 'rekor_log.py'), quiet=1)
    if not (compileall.compile_dir(os.path.join(ROOT, 'koji_rekor'), quiet=1) and compiled):
        raise SystemExit('bench: could not byte-compile the plugin and koji_rekor')
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONDONTWRITEBYTECODE'}
    with tempfile.NamedTemporaryFile('r', prefix='bench-time-') as rss_file:
        proc = subprocess.run(['/usr/bin/time', '-f', '%M', '-o', rss_file.name] + cmd,
                              stdout=subprocess.PIPE, stderr=stderr, text=True,
                              timeout=CHILD_SECONDS, env=env, cwd=ROOT)
        if proc.returncode != 0:
            raise SystemExit('bench: %s failed (%d): %s' % (
                ' '.join(cmd[:4]), proc.returncode, proc.stdout[-500:]))
        rss = int(rss_file.read().split()[-1]) * 1024
    lines = proc.stdout.strip().splitlines()
    report = json.loads(lines[-1]) if lines and lines[-1].startswith('{') else {'out': proc.stdout}
    report['rss'] = rss
    return report


# ---------------------------------------------------------------------------
# Inputs, cached between runs
# ---------------------------------------------------------------------------

def run(cmd, **kws):
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   timeout=CHILD_SECONDS, **kws)


def build_many(workdir, count):
    """count unsigned noarch RPMs, subpackages bw<i> of one spec."""
    top = os.path.join(workdir, 'rpmbuild')
    os.makedirs(os.path.join(top, 'SPECS'), exist_ok=True)
    lines = ['Name: bw', 'Version: 1.0', 'Release: 1', 'Summary: bench', 'License: MIT',
             'BuildArch: noarch', '%description', 'bench', '%install']
    lines += ['mkdir -p %%{buildroot}/usr/share/bw%d && echo %d > %%{buildroot}/usr/share/bw%d/R'
              % (i, i, i) for i in range(count)]
    for i in range(count):
        lines += ['%%package -n bw%d' % i, 'Summary: bench %d' % i,
                  '%%description -n bw%d' % i, 'bench %d' % i,
                  '%%files -n bw%d' % i, '/usr/share/bw%d' % i]
    spec = os.path.join(top, 'SPECS', 'bw.spec')
    with open(spec, 'w') as fo:
        fo.write('\n'.join(lines) + '\n')
    run(['rpmbuild', '--dbpath', os.path.join(top, 'db'), '--define', '_topdir %s' % top,
         '--define', '_tmppath %s' % top, '--define', 'debug_package %{nil}',
         '--define', '__os_install_post %{nil}', '-bb', spec])
    rpms = os.path.join(top, 'RPMS', 'noarch')
    return sorted((os.path.join(rpms, 'bw%d-1.0-1.noarch.rpm' % i) for i in range(count)))


def sign_many(rpms, outdir, key, digest_algo=None):
    """Copies of rpms signed with key, rpmsign given many files per call;
    digest_algo pins gpg's hash (Rekor v2 takes RSA with sha256 only)."""
    os.makedirs(outdir, exist_ok=True)
    signed = []
    for rpm in rpms:
        signed.append(os.path.join(outdir, os.path.basename(rpm)))
        shutil.copyfile(rpm, signed[-1])
    env = dict(os.environ, GNUPGHOME=key.gnupghome)
    digest = ['--define', '_gpg_digest_algo %s' % digest_algo] if digest_algo else []
    with tempfile.TemporaryDirectory(prefix='rpmdb-') as dbpath:
        for start in range(0, len(signed), 200):
            run(['rpmsign', '--dbpath', dbpath, '--define', '__gpg %s' % shutil.which('gpg'),
                 '--define', '_gpg_path %s' % key.gnupghome,
                 '--define', '_gpg_name %s' % key.fingerprint] + digest + ['--addsign']
                + signed[start:start + 200], env=env)
    return signed


def prepare(cache, count, nkeys):
    """{topdirs, keydir, signatures: [[build, rpm, sigkey, sighash, signed path]]}; made once."""
    return prepared(os.path.join(cache, '%dx%d' % (count, nkeys)),
                    lambda base: make_inputs(base, count, nkeys))


def make_inputs(base, count, nkeys):
    from tests.support import rpmfactory
    print('preparing %d RPMs x %d keys in %s (once) ...' % (count, nkeys, base), flush=True)
    rpms = build_many(base, count)
    keydir = os.path.join(base, 'keys')
    os.makedirs(keydir)
    small = os.path.join(base, 'topdir-%d' % count)
    large = os.path.join(base, 'topdir-%d' % (count * nkeys))
    signatures = []
    for number in range(nkeys):
        key = rpmfactory.generate_key(os.path.join(base, 'gnupg'), algo='ed25519',
                                      name='Bench key %d' % number)
        shutil.copy(key.path, os.path.join(keydir, key.sigkey + '.asc'))
        try:
            signed = sign_many(rpms, os.path.join(base, 'signed', key.sigkey), key)
        finally:
            rpmfactory.stop_gpg_agent(key.gnupghome)
        for index, (unsigned, path) in enumerate(zip(rpms, signed)):
            for topdir in ([small, large] if number == 0 else [large]):
                imported = rpmfactory.koji_import_signature(
                    topdir, unsigned, path, build_id=index + 1, rpm_id=index + 1)
            if number == 0:
                signatures.append([json_safe(imported.build), json_safe(imported.rpm),
                                   imported.sigkey, imported.sighash, path])
        print('  key %d/%d signed and imported' % (number + 1, nkeys), flush=True)
    shutil.rmtree(os.path.join(base, 'rpmbuild'), ignore_errors=True)
    return {'count': count, 'keys': nkeys, 'small': small, 'large': large, 'keydir': keydir,
            'signatures': signatures}


def write_conf(path, rekor, keydir):
    with open(path, 'w') as fo:
        fo.write('[rekor]\nurl = %s\nallow_insecure_http = true\nlog_public_key = %s\n'
                 'timeout = 120\nretries = 0\n[signing]\npublic_key_dir = %s\n'
                 '[upload]\nqueue_only = true\nhub_user = %s\n'
                 % (rekor.url, rekor.key, keydir, pwd.getpwuid(os.getuid()).pw_name))


def reset_topdir(topdir, signatures=None):
    """No receipts, no state; with signatures, a committed outbox record for
    each, as postCommit leaves them for the worker."""
    import koji_rekor.outbox
    shutil.rmtree(os.path.join(topdir, 'rekor-logs'), ignore_errors=True)
    if signatures is None:
        return
    outbox = koji_rekor.outbox.outbox_dir(topdir)
    os.makedirs(outbox)
    for build, rpm, sigkey, sighash, _ in signatures:
        record = koji_rekor.outbox.new_record(build, rpm, sigkey, sighash)
        name = koji_rekor.outbox.record_name(rpm, sigkey) + koji_rekor.outbox.COMMITTED
        with open(os.path.join(outbox, name), 'w') as fo:
            json.dump(record, fo)


# ---------------------------------------------------------------------------
# Children
# ---------------------------------------------------------------------------

def child_worker(args):
    import koji
    import koji_rekor.config
    import koji_rekor.worker
    koji.pathinfo.topdir = args.topdir
    settings = koji_rekor.config.load_config(args.conf)
    start = time.perf_counter()
    counts = koji_rekor.worker.drain_outbox(settings, args.topdir, now=True, jobs=args.jobs)
    seconds = time.perf_counter() - start
    print(json.dumps({'seconds': seconds, 'counts': counts}))


def request_bodies(info):
    """The request body the plugin sends for each signature, prebuilt."""
    import koji
    import koji_rekor.entry
    import koji_rekor.rpmsig
    bodies = []
    for build, rpm, sigkey, sighash, _ in info['signatures']:
        koji.pathinfo.topdir = info['small']
        signed = koji_rekor.rpmsig.locate_signed_rpm(build, rpm, sigkey)
        with open(os.path.join(info['keydir'], sigkey + '.asc'), 'rb') as fo:
            body = koji_rekor.entry.EntryBody(signed, fo.read())
        bodies.append(b''.join(body))
    return bodies


def child_bare(args):
    """POST the prebuilt bodies over `connections` kept-alive connections,
    each sending its share one after another."""
    with open(args.info) as fo:
        info = json.load(fo)
    bodies = request_bodies(info)
    url = urllib.parse.urlsplit(args.url)
    statuses = []

    def send(share):
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=120)
        conn.connect()
        # headers and body go in two writes: no Nagle, as urllib3 does
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            for body in share:
                conn.request('POST', '/api/v1/log/entries', body=body, headers={
                    'Content-Type': 'application/json', 'Accept': 'application/json'})
                response = conn.getresponse()
                response.read()
                statuses.append(response.status)
        finally:
            conn.close()

    shares = [bodies[i::args.jobs] for i in range(args.jobs)]
    threads = [threading.Thread(target=send, args=(share,)) for share in shares]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - start
    print(json.dumps({'seconds': seconds, 'created': statuses.count(201),
                      'statuses': sorted(set(statuses))}))


def child_verify(args):
    """koji-rekor verify over a directory, timed inside the process."""
    import contextlib
    import io
    import koji_rekor.cli
    out = io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stdout(out):
        status = koji_rekor.cli.main(['verify', args.topdir, '--log-key', args.url,
                                      '--origin', '127.0.0.1', '--config', empty_conf(args.url)])
    seconds = time.perf_counter() - start
    print(json.dumps({'seconds': seconds, 'status': status,
                      'summary': out.getvalue().splitlines()[-1]}))


# ---------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------

def child(name, *args):
    return child_command('bench.worker', '--child', name, *args)


def batch_run(info, work, what, jobs, busy=0.0):
    """One run on a fresh log: the worker or the bare client."""
    topdir = info['small']
    conf = os.path.join(work, 'rekor_log.conf')
    reset_topdir(topdir, info['signatures'] if what == 'worker' else None)
    rekor = LocalRekor(work, busy=busy)
    try:
        write_conf(conf, rekor, info['keydir'])
        cpu = process_cpu(rekor.proc.pid)
        if what == 'worker':
            report = measure(child('worker', '--topdir', topdir, '--conf', conf,
                                   '--jobs', jobs))
            done = report['counts']['logged']
        else:
            report = measure(child('bare', '--info', os.path.join(
                work, 'info.json'), '--url', rekor.url, '--jobs', jobs))
            done = report['created']
        report['log_cpu'] = process_cpu(rekor.proc.pid) - cpu
        report['done'] = done
        if what == 'worker':
            # every receipt verified, and kept for the verify case
            receipts = os.path.join(work, 'receipts')
            shutil.rmtree(receipts, ignore_errors=True)
            shutil.copytree(os.path.join(topdir, 'rekor-logs'), receipts,
                            ignore=shutil.ignore_patterns('@*'))
            report['verified'] = verify_run(receipts, rekor.key)
            shutil.copy(rekor.key, os.path.join(work, 'receipts.pub'))
    finally:
        rekor.stop()
    return report


def median(reports, key='seconds'):
    return statistics.median(r[key] for r in reports)


def median_ratio(top, bottom):
    """The median of the ratios of runs made one after the other."""
    return statistics.median(a['seconds'] / b['seconds'] for a, b in zip(top, bottom))


def verify_cases(work, count, copies):
    """Verify the batch's count receipts, and count x copies of them (each
    copy in a directory of its own), as a whole command and timed inside
    the process: [(receipts, whole, inside)]."""
    receipts = os.path.join(work, 'receipts')
    key = os.path.join(work, 'receipts.pub')
    many = os.path.join(work, 'many-receipts')
    for number in range(copies):
        shutil.copytree(receipts, os.path.join(many, str(number)))
    cases = []
    for directory, n in ((receipts, count), (many, count * copies)):
        whole = verify_run(directory, key)
        inside = measure(child('verify', '--topdir', directory, '--url', key))
        if inside['summary'] != 'verified %d, failed 0, unreadable 0' % n:
            raise SystemExit('bench: verify: %s' % inside['summary'])
        cases.append((n, whole, inside))
        print('  verify %d receipts: %.2f s whole command, %.2f s inside' % (
            n, whole['seconds'], inside['seconds']), flush=True)
    return cases


def empty_conf(near):
    """A configuration with every default: verify takes the key from --log-key."""
    path = os.path.join(os.path.dirname(os.path.abspath(near)), 'verify.conf')
    with open(path, 'w'):
        pass
    return path


def verify_run(receipts, key):
    start = time.perf_counter()
    proc = subprocess.run(child_command('koji_rekor', 'verify', receipts, '--log-key', key,
                                        '--origin', '127.0.0.1', '--config', empty_conf(key)),
                          cwd=ROOT, capture_output=True, text=True, timeout=CHILD_SECONDS)
    seconds = time.perf_counter() - start
    summary = proc.stdout.splitlines()[-1] if proc.stdout else proc.stderr
    if proc.returncode != 0:
        raise SystemExit('bench: verify failed: %s' % summary)
    return {'seconds': seconds, 'summary': summary}


def backfill_run(info, work, topdir, count, jobs):
    conf = os.path.join(work, 'rekor_log.conf')
    reset_topdir(topdir)
    rekor = LocalRekor(work)
    try:
        write_conf(conf, rekor, info['keydir'])
        start = time.perf_counter()
        report = measure(child_command('koji_rekor', 'backfill', '--topdir', topdir,
                                       '--config', conf, '--jobs', jobs),
                         stderr=subprocess.DEVNULL)
        report['seconds'] = time.perf_counter() - start
    finally:
        rekor.stop()
    summary = report['out'].strip().splitlines()[-1]
    if not summary.startswith('logged %d, ' % count):
        raise SystemExit('bench: backfill of %d: %s' % (count, summary))
    report['summary'] = summary
    return report


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--count', type=int, default=1000)
    parser.add_argument('--keys', type=int, default=10)
    parser.add_argument('--jobs', default='4', help='worker threads to compare (e.g. 1,4)')
    parser.add_argument('--backfill-jobs', type=int, default=4)
    parser.add_argument('--repeat', type=int, default=2, help='runs of each batch case')
    parser.add_argument('--cache', default=os.path.join(CACHE, 'worker'))
    parser.add_argument('--skip-backfill', action='store_true')
    parser.add_argument('--busy', type=float, default=0.0, metavar='RATE',
                        help='the log takes RATE entries a second from other clients during '
                             'the batch runs (a live log; every upload then needs a proof)')
    parser.add_argument('--only-backfill', action='store_true')
    parser.add_argument('--child', choices=('worker', 'bare', 'verify'), help=argparse.SUPPRESS)
    parser.add_argument('--topdir', help=argparse.SUPPRESS)
    parser.add_argument('--conf', help=argparse.SUPPRESS)
    parser.add_argument('--info', help=argparse.SUPPRESS)
    parser.add_argument('--url', help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        import logging
        logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
        if args.child != 'verify':
            args.jobs = int(args.jobs)
        return {'worker': child_worker, 'bare': child_bare,
                'verify': child_verify}[args.child](args)

    print('machine: %s' % machine_note(), flush=True)
    info = prepare(args.cache, args.count, args.keys)
    rows = []
    with tempfile.TemporaryDirectory(prefix='bench-worker-') as work:
        with open(os.path.join(work, 'info.json'), 'w') as fo:
            json.dump(info, fo)
        # Runs alternate, repeated, and the median is kept: the machine is
        # shared, and load that comes and goes then hits every row alike.
        jobs_list = [int(j) for j in args.jobs.split(',')]
        runs = {}
        for repeat in range(0 if args.only_backfill else args.repeat):
            for what, jobs in [('bare', 1)] + [(w, j) for j in jobs_list
                                                for w in ('worker', 'bare') if (w, j) != ('bare', 1)]:
                report = batch_run(info, work, what, jobs, args.busy)
                runs.setdefault((what, jobs), []).append(report)
                print('  %d/%d %s N=%d: %.2f s, log CPU %.1f s%s' % (
                    repeat + 1, args.repeat, what, jobs, report['seconds'], report['log_cpu'],
                    ', ' + report['verified']['summary'] if what == 'worker' else ''),
                    flush=True)
        bare_1, verifies = runs.get(('bare', 1)), []
        if runs:
            for jobs in jobs_list:
                rows.append((jobs, runs[('worker', jobs)], runs[('bare', jobs)]))
            verifies = verify_cases(work, args.count, args.keys)
        backfills = []
        if not args.skip_backfill:
            for topdir, count in ((info['small'], args.count),
                                  (info['large'], args.count * args.keys)):
                report = backfill_run(info, work, topdir, count, args.backfill_jobs)
                backfills.append((count, report))
                print('  backfill %d: %.1f s, peak RSS %.1f MiB' % (
                    count, report['seconds'], report['rss'] / MiB), flush=True)
            reset_topdir(info['large'])
        reset_topdir(info['small'])
    print_tables(args, rows, bare_1, verifies, backfills)


def print_tables(args, rows, bare_1, verifies, backfills):
    count = args.count
    print()
    print('Batch: %d small signatures, each run on a fresh local log%s (median of %d runs)'
          % (count, ', busy: %g entries a second from other clients' % args.busy
             if args.busy else '', args.repeat))
    print()
    print('| N | worker (retry --jobs N) | bare client, 1 connection | bare client, N connections '
          '| worker / bare 1 | worker / bare N | log CPU: worker, bare N | receipts verified |')
    print('|---|---|---|---|---|---|---|---|')
    for jobs, worker, bare in rows:
        print('| %d | %.1f s | %.1f s | %.1f s | %.2f | %.2f | %.1f s, %.1f s | %s |' % (
            jobs, median(worker), median(bare_1), median(bare),
            median_ratio(worker, bare_1), median_ratio(worker, bare),
            median(worker, 'log_cpu'), median(bare, 'log_cpu'),
            worker[-1]['verified']['summary']))
    print()
    print('Times and log CPU are medians; each ratio is the median of the ratios of runs made '
          'one after the other.')
    print()
    print('Verify: `koji-rekor verify DIR`, one process')
    print()
    print('| receipts | whole command (with start-up) | receipts a second | inside the process '
          '| receipts a second |')
    print('|---|---|---|---|---|')
    for n, whole, inside in verifies:
        print('| %d | %.2f s | %.0f | %.2f s | %.0f |' % (
            n, whole['seconds'], n / whole['seconds'], inside['seconds'],
            n / inside['seconds']))
    if backfills:
        print()
        print('Backfill: `koji-rekor backfill --jobs %d`, fresh local log' % args.backfill_jobs)
        print()
        print('| signatures | wall time | peak RSS |')
        print('|---|---|---|')
        for n, report in backfills:
            print('| %d | %.1f s | %.1f MiB |' % (n, report['seconds'], report['rss'] / MiB))


if __name__ == '__main__':
    sys.exit(main())
