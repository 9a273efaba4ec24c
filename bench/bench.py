#!/usr/bin/env python3
"""Benchmark the plugin's upload against the original plugin's naive upload
and against the transfer limit, at several RPM sizes.

For each size, against a fresh local Rekor-compatible log (tests/rekor_server.py,
in its own process on 127.0.0.1), one child process each runs:

  plugin  postRPMSign + postCommit fired as the hub does, through to the
          verified receipt (koji's plugin loader, a Koji topdir as the hub
          leaves it);
  naive   what the original plugin did: splice the signed RPM into a
          temporary copy, read it whole, base64, json.dumps, requests.post;
  curl    a prebuilt request body of the same size POSTed by curl.

It reports the upload's wall time (measured around the work itself, so
interpreter start-up is not counted), the child's peak RSS (getrusage) and
the bytes it wrote to disk (/proc/<pid>/io write_bytes), with the ratios
plugin/naive and plugin/curl. It then measures, in the queue_only mode, what
postRPMSign + postCommit add to a signature import (median of many).

RPMs, keys and request bodies are generated once and cached in --cache.

    python3 bench/bench.py [--sizes 1M,200M,1G] [--cache DIR] [--queue-runs N]
"""

import argparse
import base64
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TESTS = os.path.join(ROOT, 'tests')
sys.path.insert(0, TESTS)

SERVER_START_SECONDS = 30
CHILD_SECONDS = 1800
MiB = 1024 * 1024


# ---------------------------------------------------------------------------
# Inputs, cached between runs
# ---------------------------------------------------------------------------

def parse_size(text):
    units = {'K': 1024, 'M': MiB, 'G': 1024 * MiB}
    text = text.strip().upper()
    return int(float(text[:-1]) * units[text[-1]]) if text[-1] in units else int(text)


def human(nbytes):
    for unit, size in (('GB', 1024 * MiB), ('MB', MiB), ('KB', 1024)):
        if nbytes >= size:
            return '%g %s' % (round(nbytes / size, 1), unit)
    return '%d B' % nbytes


def prepare(cache, size):
    """A signed RPM of about `size` bytes laid out in a Koji topdir, its key,
    and a request body for curl; made once."""
    import rpmfactory
    base = os.path.join(cache, str(size))
    done = os.path.join(base, 'ready.json')
    if os.path.exists(done):
        with open(done) as fo:
            return json.load(fo)
    shutil.rmtree(base, ignore_errors=True)
    os.makedirs(base)
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
    info = {'size': os.path.getsize(signed), 'signed': signed, 'topdir': topdir, 'keydir': keydir,
            'key': key.path, 'body': body,
            'callback': {'sigkey': imported.sigkey, 'sighash': imported.sighash,
                         'build': json_safe(imported.build), 'rpm': json_safe(imported.rpm)}}
    with open(done, 'w') as fo:
        json.dump(info, fo)
    return info


def json_safe(value):
    from koji.util import encode_datetime_recurse
    return encode_datetime_recurse(value)


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
# The local log, in its own process
# ---------------------------------------------------------------------------

class LocalRekor:
    def __init__(self, workdir):
        self.key = os.path.join(workdir, 'rekor.pub')
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(TESTS, 'rekor_server.py'), '--port', '0',
             '--key-out', self.key],
            stdout=subprocess.PIPE, text=True)
        deadline = time.monotonic() + SERVER_START_SECONDS
        line = ''
        while time.monotonic() < deadline and 'listening on' not in line:
            line = self.proc.stdout.readline()
            if not line and self.proc.poll() is not None:
                break
        if 'listening on' not in line:
            self.stop()
            raise SystemExit('bench: the local Rekor did not start')
        self.url = line.rsplit(' ', 1)[1].strip()

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=30)


# ---------------------------------------------------------------------------
# Measuring one child
# ---------------------------------------------------------------------------

def measure(cmd):
    """Run a child under /usr/bin/time, a small parent, so its peak RSS is
    its own (a child forked from this Python process would also count the
    pages it inherits before exec). Returns the child's own JSON report, if
    it prints one, with 'rss' added."""
    with tempfile.NamedTemporaryFile('r', prefix='bench-time-') as rss_file:
        proc = subprocess.run(['/usr/bin/time', '-f', '%M', '-o', rss_file.name] + cmd,
                              stdout=subprocess.PIPE, text=True, timeout=CHILD_SECONDS)
        if proc.returncode != 0:
            raise SystemExit('bench: %s failed (%d): %s' % (
                ' '.join(cmd[:4]), proc.returncode, proc.stdout[-500:]))
        rss = int(rss_file.read().split()[-1]) * 1024
    lines = proc.stdout.strip().splitlines()
    report = json.loads(lines[-1]) if lines and lines[-1].startswith('{') else {'out': proc.stdout}
    report['rss'] = rss
    return report


def proc_write_bytes():
    with open('/proc/self/io') as fo:
        fields = dict(line.split(': ') for line in fo.read().splitlines())
    return int(fields['write_bytes'])


def child_plugin(args):
    """postRPMSign + postCommit as the hub fires them."""
    import koji
    import hubsim
    info, conf = load_child_inputs(args)
    koji.pathinfo.topdir = info['topdir']
    plugin, _ = hubsim.load_plugin(conf)
    receipt_dir = os.path.join(info['topdir'], 'rekor-logs')
    shutil.rmtree(receipt_dir, ignore_errors=True)
    written = proc_write_bytes()
    start = time.perf_counter()
    hubsim.hub_request([info['callback']])
    seconds = time.perf_counter() - start
    receipts = [f for _, _, files in os.walk(receipt_dir) for f in files
                if f.endswith('.%s.json' % info['callback']['sigkey'])]
    if not receipts:
        raise SystemExit('no receipt written: see the log above')
    del plugin
    print(json.dumps({'seconds': seconds, 'written': proc_write_bytes() - written}))


def child_naive(args):
    """The original plugin's way: temporary signed copy, everything in memory."""
    import koji
    import requests
    info, _ = load_child_inputs(args)
    cb = info['callback']
    builddir = koji.PathInfo(topdir=info['topdir']).build(cb['build'])
    unsigned = os.path.join(builddir, koji.pathinfo.rpm(cb['rpm']))
    with open(os.path.join(builddir, koji.pathinfo.sighdr(cb['rpm'], cb['sigkey'])), 'rb') as fo:
        sighdr = fo.read()
    with open(info['key'], 'rb') as fo:
        key = fo.read()
    written = proc_write_bytes()
    start = time.perf_counter()
    tmp = koji.splice_rpm_sighdr(sighdr, unsigned)
    try:
        with open(tmp, 'rb') as fo:
            content = fo.read()
    finally:
        os.unlink(tmp)
    entry = {'kind': 'rpm', 'apiVersion': '0.0.1', 'spec': {
        'package': {'content': base64.b64encode(content).decode()},
        'publicKey': {'content': base64.b64encode(key).decode()}}}
    response = requests.post(args.url + '/api/v1/log/entries', data=json.dumps(entry),
                             headers={'Content-Type': 'application/json'}, timeout=CHILD_SECONDS)
    seconds = time.perf_counter() - start
    if response.status_code not in (201, 409):
        raise SystemExit('naive upload: HTTP %d %s' % (response.status_code, response.text[:200]))
    print(json.dumps({'seconds': seconds, 'written': proc_write_bytes() - written}))


def load_child_inputs(args):
    with open(args.info) as fo:
        info = json.load(fo)
    return info, args.conf


def write_conf(path, rekor, info, queue_only=False):
    with open(path, 'w') as fo:
        fo.write('[rekor]\nurl = %s\nallow_insecure_http = true\nlog_public_key = %s\n'
                 'timeout = 600\nretries = 0\n[signing]\npublic_key_dir = %s\n'
                 '[upload]\nqueue_only = %s\n'
                 % (rekor.url, rekor.key, info['keydir'], 'true' if queue_only else 'false'))


def run_curl(url, body):
    report = measure(['curl', '-sS', '-o', '/dev/null', '-w', '%{http_code} %{time_total}',
                      '-X', 'POST', '-H', 'Content-Type: application/json', '-H', 'Expect:',
                      '--upload-file', body, url + '/api/v1/log/entries'])
    code, seconds = report['out'].split()
    if code not in ('201', '409'):
        raise SystemExit('bench: curl got HTTP %s' % code)
    return {'seconds': float(seconds), 'rss': report['rss'], 'written': 0}


# ---------------------------------------------------------------------------
# Callback overhead in queue_only mode
# ---------------------------------------------------------------------------

def child_queue(args):
    """Median time postRPMSign + postCommit add when the hub only queues."""
    import koji
    import hubsim
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

def machine_note():
    cpu = platform.processor() or platform.machine()
    try:
        with open('/proc/cpuinfo') as fo:
            cpu = next(l.split(':', 1)[1].strip() for l in fo if l.startswith('model name'))
    except (OSError, StopIteration):
        pass
    mem = os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / (1024 ** 3)
    return '%s, %d cores, %.0f GiB RAM, Python %s, %s' % (
        cpu, os.cpu_count(), mem, platform.python_version(), platform.platform())


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--sizes', default='1M,200M,1G')
    parser.add_argument('--cache', default=os.path.join(HERE, '.cache'))
    parser.add_argument('--queue-runs', type=int, default=50)
    parser.add_argument('--child', choices=('plugin', 'naive', 'queue'), help=argparse.SUPPRESS)
    parser.add_argument('--info', help=argparse.SUPPRESS)
    parser.add_argument('--conf', help=argparse.SUPPRESS)
    parser.add_argument('--url', help=argparse.SUPPRESS)
    parser.add_argument('--runs', type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        import logging
        logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
        return {'plugin': child_plugin, 'naive': child_naive, 'queue': child_queue}[args.child](args)

    os.makedirs(args.cache, exist_ok=True)
    print('machine: %s' % machine_note(), flush=True)
    rows, queue_rows = [], []
    for size in [parse_size(s) for s in args.sizes.split(',')]:
        print('preparing %s ...' % human(size), flush=True)
        info = prepare(args.cache, size)
        info_path = os.path.join(args.cache, str(size), 'ready.json')
        results = {}
        with tempfile.TemporaryDirectory(prefix='bench-') as work:
            conf = os.path.join(work, 'rekor_log.conf')
            for approach in ('plugin', 'naive', 'curl'):
                rekor = LocalRekor(work)  # a fresh log: every approach meets 201
                try:
                    write_conf(conf, rekor, info)
                    if approach == 'curl':
                        results[approach] = run_curl(rekor.url, info['body'])
                    else:
                        results[approach] = measure([
                            sys.executable, __file__, '--child', approach, '--info', info_path,
                            '--conf', conf, '--url', rekor.url])
                finally:
                    rekor.stop()
                r = results[approach]
                print('  %-6s %8.2f s  %7.1f MiB RSS  %s written' % (
                    approach, r['seconds'], r['rss'] / MiB, human(r['written'])), flush=True)
            rekor = LocalRekor(work)
            try:
                write_conf(conf, rekor, info, queue_only=True)
                queue = measure([sys.executable, __file__, '--child', 'queue', '--info', info_path,
                                 '--conf', conf, '--runs', str(args.queue_runs)])
            finally:
                rekor.stop()
        rows.append((info['size'], results))
        queue_rows.append((info['size'], queue))
    print_table(rows, queue_rows, args.queue_runs)


def print_table(rows, queue_rows, runs):
    print()
    print('| RPM | approach | wall time | peak RSS | written to disk | plugin/naive | plugin/curl |')
    print('|---|---|---|---|---|---|---|')
    for size, results in rows:
        p = results['plugin']
        for name in ('plugin', 'naive', 'curl'):
            r = results[name]
            ratios = ('%.2fx time, %.2fx RSS' % (p['seconds'] / results['naive']['seconds'],
                                                 p['rss'] / results['naive']['rss']),
                      '%.2fx time' % (p['seconds'] / results['curl']['seconds'])) \
                if name == 'plugin' else ('', '')
            print('| %s | %s | %.2f s | %.1f MiB | %s | %s | %s |' % (
                human(size), name, r['seconds'], r['rss'] / MiB, human(r['written']), *ratios))
    print()
    print('queue_only: postRPMSign + postCommit per signature import (%d runs)' % runs)
    print('| RPM | median | max |')
    print('|---|---|---|')
    for size, q in queue_rows:
        print('| %s | %.1f ms | %.1f ms |' % (human(size), q['median'] * 1000, q['max'] * 1000))


if __name__ == '__main__':
    sys.exit(main())
