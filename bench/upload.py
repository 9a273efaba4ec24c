#!/usr/bin/env python3
"""Benchmark the plugin's upload against curl, side by side, at several RPM
sizes.

For each size, on one Koji topdir prepared beforehand (cached in --cache,
read once into the page cache and synced before any timing, so no
writeback competes with a run), it runs --pairs pairs, each pair one
upload by curl and one by the plugin, in alternating order (curl first in
even pairs, the plugin first in odd ones), each against a fresh local
Rekor-compatible log (tests/support/rekor_server.py, its own process on 127.0.0.1):

  curl    POSTs a prebuilt request body holding the same entry; its time is
          curl's own time_total (start-up not counted), its CPU and peak RSS
          from /usr/bin/time;
  plugin  postRPMSign + postCommit fired as the hub fires them (Koji's
          plugin loader and run_callbacks), through to the verified
          receipt, timed inside an already running process as the hub's
          would be (requests, rpm and cryptography imported beforehand);
          CPU is the process's own (all threads), peak RSS its VmHWM.

For every run it also takes the log process's own CPU (with rpmkeys, its
child) and the whole machine's busy CPU, so the table shows what the log
costs per GB, whether it is the bottleneck, and how busy everything else on
the machine was. And it measures Python's own read + sha256 + base64 of
the RPM per GB (one thread, no network) as the floor for the client's CPU.

It reports per size the median time of each side with the spread, the
median and spread of the per-pair ratio plugin/curl, client CPU per GB,
the log's CPU per GB, peak RSS, then, in the queue_only mode, what
postRPMSign + postCommit add to a signature import (median of many).

    python3 -m bench.upload [--sizes 1M,200M,1G] [--pairs 5] [--cache DIR]
                            [--queue-runs N] [--json FILE]
"""

import argparse
import base64
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from bench.common import (CACHE, TICK, MiB, ROOT, LocalRekor, child_command, human, json_safe,
                          machine_note, parse_size, prepared, process_cpu, ready_file)

CHILD_SECONDS = 1800


# ---------------------------------------------------------------------------
# Inputs, cached between runs
# ---------------------------------------------------------------------------

def prepare(cache, size):
    """A signed RPM of about `size` bytes laid out in a Koji topdir, its key,
    and a request body for curl; made once."""
    return prepared(os.path.join(cache, str(size)), lambda base: make_inputs(base, size))


def make_inputs(base, size):
    from tests.support import rpmfactory
    key = rpmfactory.generate_key(os.path.join(base, 'gnupg'), algo='rsa', name='Bench Key')
    try:
        unsigned = rpmfactory.build_rpm(os.path.join(base, 'build'), name='bench',
                                        version=str(size), payload_bytes=size)
        signed = rpmfactory.sign_rpm(unsigned, os.path.join(base, 'signed.rpm'), key)
    finally:
        rpmfactory.stop_gpg_agent(key.gnupghome)
    topdir = os.path.join(base, 'koji')
    imported = rpmfactory.koji_import_signature(topdir, unsigned, signed)
    os.unlink(unsigned)  # the topdir holds its own copy
    shutil.rmtree(os.path.join(base, 'build'), ignore_errors=True)
    keydir = os.path.join(base, 'keys')
    os.makedirs(keydir)
    shutil.copy(key.path, os.path.join(keydir, key.sigkey + '.asc'))
    body = os.path.join(base, 'body.json')
    write_request_body(body, signed, key.armored)
    return {'size': os.path.getsize(signed), 'signed': signed, 'topdir': topdir, 'keydir': keydir,
            'key': key.path, 'body': body,
            'callback': {'sigkey': imported.sigkey, 'sighash': imported.sighash,
                         'build': json_safe(imported.build), 'rpm': json_safe(imported.rpm)}}


def write_request_body(path, rpm_path, armored_key):
    """The same proposed entry the plugin sends, written once for curl."""
    with open(path, 'wb') as out, open(rpm_path, 'rb') as src:
        out.write(b'{"kind":"rpm","apiVersion":"0.0.1","spec":{"package":{"content":"')
        while True:
            chunk = src.read(3 * MiB)
            if not chunk:
                break
            out.write(base64.b64encode(chunk))
        out.write(b'"},"publicKey":{"content":"' + base64.b64encode(armored_key) + b'"}}}')


# ---------------------------------------------------------------------------
# CPU counters
# ---------------------------------------------------------------------------

def machine_busy():
    """CPU seconds the whole machine spent busy, all cores."""
    with open('/proc/stat') as fo:
        values = [int(v) for v in fo.readline().split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = values[:8]
    return (user + nice + system + irq + softirq + steal) / TICK


def proc_write_bytes():
    with open('/proc/self/io') as fo:
        return next(int(l.split()[1]) for l in fo if l.startswith('write_bytes:'))


def vm_hwm():
    with open('/proc/self/status') as fo:
        return next(int(l.split()[1]) * 1024 for l in fo if l.startswith('VmHWM:'))


# ---------------------------------------------------------------------------
# The two sides of a pair, and the floor
# ---------------------------------------------------------------------------

def run_child(cmd):
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, timeout=CHILD_SECONDS,
                          cwd=ROOT)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines or not lines[-1].startswith('{'):
        raise SystemExit('bench: %s failed (%d): %s' % (
            ' '.join(cmd[:4]), proc.returncode, proc.stdout[-500:]))
    return json.loads(lines[-1])


def run_plugin(info_path, conf, log_pid):
    return run_child(child_command('bench.upload', '--child', 'plugin', '--info', info_path,
                                   '--conf', conf, '--log-pid', log_pid))


def child_plugin(args):
    """postRPMSign + postCommit as the hub fires them, in a process that is
    already running: what the hub imports on first use is imported first."""
    import importlib
    import koji
    from tests.support import hubsim
    for name in ('requests', 'rpm', 'cryptography.hazmat.primitives.serialization'):
        importlib.import_module(name)
    info, conf = load_child_inputs(args)
    koji.pathinfo.topdir = info['topdir']
    plugin, _ = hubsim.load_plugin(conf)
    receipt_dir = os.path.join(info['topdir'], 'rekor-logs')
    shutil.rmtree(receipt_dir, ignore_errors=True)
    written = proc_write_bytes()
    log_cpu, busy = process_cpu(args.log_pid), machine_busy()
    cpu = time.process_time()
    start = time.perf_counter()
    hubsim.hub_request([info['callback']])
    seconds = time.perf_counter() - start
    cpu = time.process_time() - cpu
    log_cpu, busy = process_cpu(args.log_pid) - log_cpu, machine_busy() - busy
    written = proc_write_bytes() - written
    receipts = [f for where, _, files in os.walk(receipt_dir) for f in files
                if '@' not in where and f.endswith('.%s.json' % info['callback']['sigkey'])]
    if not receipts:  # not an outbox record left for the worker: a receipt
        raise SystemExit('no receipt written: see the log above')
    del plugin
    print(json.dumps({'seconds': seconds, 'cpu': cpu, 'rss': vm_hwm(), 'log_cpu': log_cpu,
                      'busy': busy, 'outer': seconds, 'written': written}))


def run_curl(url, body):
    """curl POSTing the prebuilt body, under /usr/bin/time (a small parent,
    so the peak RSS is curl's own)."""
    with tempfile.NamedTemporaryFile('r', prefix='bench-time-') as usage:
        proc = subprocess.run(
            ['/usr/bin/time', '-f', '%M %U %S', '-o', usage.name,
             'curl', '-sS', '-o', '/dev/null', '-w', '%{http_code} %{time_total}',
             '-X', 'POST', '-H', 'Content-Type: application/json', '-H', 'Expect:',
             '--upload-file', body, url + '/api/v1/log/entries'],
            stdout=subprocess.PIPE, text=True, timeout=CHILD_SECONDS)
        rss, user, system = usage.read().split()[-3:]
    code, seconds = (proc.stdout.split() + ['', ''])[:2]
    if proc.returncode != 0 or code not in ('201', '409'):
        raise SystemExit('bench: curl failed (%d, HTTP %s)' % (proc.returncode, code))
    return {'seconds': float(seconds), 'cpu': float(user) + float(system),
            'rss': int(rss) * 1024}


def child_floor(args):
    """Python's own read + sha256 + base64 of the RPM, one thread, chunks
    of the plugin's size, no network: the floor of the client's CPU."""
    import binascii
    import hashlib
    from koji_rekor.rpmsig import CHUNK_SIZE
    info, _ = load_child_inputs(args)
    buffer = bytearray(CHUNK_SIZE)
    view = memoryview(buffer)
    results = []
    for _ in range(args.runs):
        cpu = time.process_time()
        start = time.perf_counter()
        digest = hashlib.sha256()
        with open(info['signed'], 'rb', buffering=0) as fo:
            while True:
                count = fo.readinto(buffer)
                if not count:
                    break
                digest.update(view[:count])
                binascii.b2a_base64(view[:count], newline=False)
        results.append((time.process_time() - cpu, time.perf_counter() - start))
    print(json.dumps({'cpu': statistics.median(r[0] for r in results),
                      'seconds': statistics.median(r[1] for r in results)}))


def one_run(side, work, info, info_path):
    """One upload against a fresh log, with the log's CPU and the whole
    machine's around it (the plugin's child takes them around the callbacks
    alone)."""
    conf = os.path.join(work, 'rekor_log.conf')
    rekor = LocalRekor(work)
    try:
        write_conf(conf, rekor, info)
        if side == 'plugin':
            return run_plugin(info_path, conf, rekor.proc.pid)
        log_cpu, busy = process_cpu(rekor.proc.pid), machine_busy()
        outer = time.perf_counter()
        result = run_curl(rekor.url, info['body'])
        result['outer'] = time.perf_counter() - outer  # with curl's start-up, a few ms
        result['log_cpu'] = process_cpu(rekor.proc.pid) - log_cpu
        result['busy'] = machine_busy() - busy
        return result
    finally:
        rekor.stop()


def warm(paths):
    """Read the inputs into the page cache and write back what is dirty, so
    that no run pays for the preparation."""
    for path in paths:
        with open(path, 'rb', buffering=0) as fo:
            buffer = bytearray(1 << 20)
            while fo.readinto(buffer):
                pass
    os.sync()


def load_child_inputs(args):
    with open(args.info) as fo:
        info = json.load(fo)
    return info, args.conf


def write_conf(path, rekor, info, queue_only=False):
    with open(path, 'w') as fo:
        fo.write('[rekor]\nurl = %s\nallow_insecure_http = true\nlog_public_key = %s\n'
                 'timeout = 600\nretries = 0\n[signing]\npublic_key_dir = %s\n'
                 # the hub itself sends even a 1 GB RPM, rather than leave it to the worker
                 '[upload]\nqueue_only = %s\nhub_budget = 3600\n'
                 % (rekor.url, rekor.key, info['keydir'], 'true' if queue_only else 'false'))


# ---------------------------------------------------------------------------
# Callback overhead in queue_only mode
# ---------------------------------------------------------------------------

def child_queue(args):
    """Median time postRPMSign + postCommit add when the hub only queues."""
    import koji
    from tests.support import hubsim
    info, conf = load_child_inputs(args)
    koji.pathinfo.topdir = info['topdir']
    hubsim.load_plugin(conf)
    times = []
    for _ in range(args.runs):
        start = time.perf_counter()
        hubsim.hub_request([info['callback']])
        times.append(time.perf_counter() - start)
    shutil.rmtree(os.path.join(info['topdir'], 'rekor-logs', '@outbox'), ignore_errors=True)
    print(json.dumps({'median': statistics.median(times), 'max': max(times)}))


# ---------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------

def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--sizes', default='1M,200M,1G')
    parser.add_argument('--pairs', type=int, default=5)
    parser.add_argument('--cache', default=CACHE)
    parser.add_argument('--queue-runs', type=int, default=50)
    parser.add_argument('--json', help='also write every run\'s numbers here')
    parser.add_argument('--child', choices=('plugin', 'floor', 'queue'), help=argparse.SUPPRESS)
    parser.add_argument('--info', help=argparse.SUPPRESS)
    parser.add_argument('--conf', help=argparse.SUPPRESS)
    parser.add_argument('--runs', type=int, help=argparse.SUPPRESS)
    parser.add_argument('--log-pid', type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        import logging
        logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
        return {'plugin': child_plugin, 'floor': child_floor, 'queue': child_queue}[args.child](args)

    os.makedirs(args.cache, exist_ok=True)
    machine = machine_note()
    print('machine: %s' % machine, flush=True)
    rows, queue_rows = [], []
    for size in [parse_size(s) for s in args.sizes.split(',')]:
        print('preparing %s ...' % human(size), flush=True)
        info = prepare(args.cache, size)
        info_path = ready_file(os.path.join(args.cache, str(size)))
        warm([info['signed'], info['body'], os.path.join(
            koji_pathinfo(info).build(info['callback']['build']),
            koji_pathinfo(info).rpm(info['callback']['rpm']))])
        floor = run_child(child_command('bench.upload', '--child', 'floor', '--info', info_path,
                                        '--runs', 3))
        print('  Python read+sha256+base64: %.2f s CPU, %.2f s' % (floor['cpu'], floor['seconds']),
              flush=True)
        runs = {'curl': [], 'plugin': []}
        with tempfile.TemporaryDirectory(prefix='bench-') as work:
            for pair in range(args.pairs):
                for side in ('curl', 'plugin') if pair % 2 == 0 else ('plugin', 'curl'):
                    r = one_run(side, work, info, info_path)
                    runs[side].append(r)
                    print('  pair %d %-6s %7.2f s  %6.2f s CPU  log %6.2f s CPU  machine busy '
                          '%6.2f s  %6.1f MiB' % (pair + 1, side, r['seconds'], r['cpu'],
                                                  r['log_cpu'], r['busy'], r['rss'] / MiB),
                          flush=True)
            rekor = LocalRekor(work)
            try:
                conf = os.path.join(work, 'rekor_log.conf')
                write_conf(conf, rekor, info, queue_only=True)
                queue = run_child(child_command('bench.upload', '--child', 'queue', '--info',
                                                info_path, '--conf', conf, '--runs',
                                                args.queue_runs))
            finally:
                rekor.stop()
        rows.append((info['size'], runs, floor))
        queue_rows.append((info['size'], queue))
    if args.json:
        with open(args.json, 'w') as fo:
            json.dump({'machine': machine, 'sizes': [
                {'size': size, 'runs': runs, 'floor': floor} for size, runs, floor in rows],
                'queue_only': dict((str(size), q) for size, q in queue_rows)}, fo, indent=1)
    print_table(rows, queue_rows, args.queue_runs, machine)


def koji_pathinfo(info):
    import koji
    return koji.PathInfo(topdir=info['topdir'])


def spread(values, fmt):
    """median (min-max)"""
    return (fmt + ' (' + fmt + '-' + fmt + ')') % (
        statistics.median(values), min(values), max(values))


def print_table(rows, queue_rows, runs, machine):
    print()
    print('Measured on: %s.' % machine)
    print()
    print('| RPM | pairs | curl | plugin | plugin/curl | peak RSS plugin | peak RSS curl '
          '| plugin wrote |')
    print('|---|---|---|---|---|---|---|---|')
    for size, r, _ in rows:
        ratios = [p['seconds'] / c['seconds'] for p, c in zip(r['plugin'], r['curl'])]
        print('| %s | %d | %s s | %s s | %sx | %.1f MiB | %.1f MiB | %s |' % (
            human(size), len(ratios), spread([c['seconds'] for c in r['curl']], '%.2f'),
            spread([p['seconds'] for p in r['plugin']], '%.2f'), spread(ratios, '%.2f'),
            max(p['rss'] for p in r['plugin']) / MiB, max(c['rss'] for c in r['curl']) / MiB,
            human(max(p['written'] for p in r['plugin']))))
    print()
    print('CPU seconds per GB of RPM, medians over the runs. "(plugin-curl)/Python": the '
          'plugin\'s CPU beyond what curl spends to send the same body, over Python\'s '
          'own read+sha256+base64. "log busy": the log\'s CPU over '
          'the run\'s time (1.00 = one core all the time). "others": the busy CPU of the rest '
          'of the machine meanwhile (other processes, and kernel work charged to none), '
          'in cores.')
    print()
    print('| RPM | plugin | curl | Python read+sha256+base64 | plugin/Python '
          '| (plugin-curl)/Python | log, curl runs | log, plugin runs | log busy, curl runs '
          '| log busy, plugin runs | others, curl runs | others, plugin runs |')
    print('|---|---|---|---|---|---|---|---|---|---|---|---|')
    for size, r, floor in rows:
        gb = size / (1024 * MiB)

        def per_gb(side, key):
            return statistics.median(x[key] for x in r[side]) / gb

        def busy(side):
            return statistics.median(x['log_cpu'] / x['outer'] for x in r[side])

        def others(side):
            return statistics.median(max(0.0, x['busy'] - x['log_cpu'] - x['cpu']) / x['outer']
                                     for x in r[side])
        floor_gb = floor['cpu'] / gb
        print('| %s | %.2f | %.2f | %.2f | %.2fx | %.2fx | %.2f | %.2f | %.2f | %.2f | %.2f '
              '| %.2f |' % (
            human(size), per_gb('plugin', 'cpu'), per_gb('curl', 'cpu'), floor_gb,
            per_gb('plugin', 'cpu') / floor_gb,
            (per_gb('plugin', 'cpu') - per_gb('curl', 'cpu')) / floor_gb,
            per_gb('curl', 'log_cpu'), per_gb('plugin', 'log_cpu'), busy('curl'), busy('plugin'),
            others('curl'), others('plugin')))
    print()
    print('queue_only: postRPMSign + postCommit per signature import (%d runs)' % runs)
    print('| RPM | median | max |')
    print('|---|---|---|')
    for size, q in queue_rows:
        print('| %s | %.1f ms | %.1f ms |' % (human(size), q['median'] * 1000, q['max'] * 1000))


if __name__ == '__main__':
    sys.exit(main())
