"""The outbox ("Lose nothing"): every signature Koji imports ends with exactly
one receipt, or with a record that says why not, whatever fails on the way;
and each signature is logged once.

Hub requests run in this process through Koji's plugin loader (the `hub`
fixture) or in processes of their own (tests/support/hub_request.py); the worker is
the real command line (`python3 -m koji_rekor retry`). Rekor is the local log
of tests/support/rekor_server.py and the Koji hub the worker asks about uncommitted
records is a small XML-RPC server; both listen on 127.0.0.1 only.
"""

import contextlib
import hashlib
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from xmlrpc.server import SimpleXMLRPCRequestHandler, SimpleXMLRPCServer

import koji
import koji_rekor.outbox
import koji.plugin
import koji.util
import pytest
from koji.context import context

from tests.support import rpmfactory
from tests.support.common import HUB_USER, ROOT
from tests.support.rekor_server import RekorServer

ENTRIES = '/api/v1/log/entries'
PROCESS_TIMEOUT = 30     # upper bound for any child process; none should come near it
POLL_TIMEOUT = 20        # upper bound for a condition polled for
PACKAGES = ('hello', 'alpha', 'beta', 'gamma')
ALGOS = ('rsa', 'ed25519')


# ---------------------------------------------------------------------------
# Signatures: 4 packages x 2 keys = 8 distinct signatures
# ---------------------------------------------------------------------------

@pytest.fixture(scope='session')
def packages(tmp_path_factory, keys, unsigned_rpm, signed_rpms):
    """{name: (unsigned rpm, {algo: signed rpm})}, header-only signatures."""
    out = tmp_path_factory.mktemp('packages')
    made = {'hello': (unsigned_rpm, {algo: signed_rpms[(algo, 'header')] for algo in ALGOS})}
    for name in PACKAGES[1:]:
        unsigned = rpmfactory.build_rpm(str(out / name), name=name)
        made[name] = (unsigned, {algo: rpmfactory.sign_rpm(
            unsigned, str(out / ('%s-%s.rpm' % (name, algo))), keys[algo]) for algo in ALGOS})
    return made


def sha256_file(path):
    with open(path, 'rb') as fo:
        return hashlib.sha256(fo.read()).hexdigest()


@pytest.fixture
def sigs(topdir, packages):
    """The 8 signatures laid out in the topdir as add_rpm_sig leaves them:
    sigs[0] is hello signed by the RSA key, sigs[1] hello by the ed25519 key,
    sigs[2] alpha by RSA, and so on. Each KojiImport also carries .sha256,
    the hash of the signed RPM (what Rekor logs), and .name, its record name."""
    made = []
    for number, name in enumerate(PACKAGES, 1):
        unsigned, signed = packages[name]
        for algo in ALGOS:
            imported = rpmfactory.koji_import_signature(str(topdir), unsigned, signed[algo],
                                                        build_id=number, rpm_id=number)
            imported.sha256 = sha256_file(signed[algo])
            imported.name = '%(name)s-%(version)s-%(release)s.%(arch)s' % imported.rpm \
                + '.' + imported.sigkey
            made.append(imported)
    return made


# ---------------------------------------------------------------------------
# A fake Koji hub, for the worker's question about uncommitted records
# ---------------------------------------------------------------------------

class FakeKojiHub:
    """queryRPMSigs over XML-RPC at http://127.0.0.1:PORT/kojihub, answering
    from .signatures, a set of (rpm_id, sigkey) the test controls."""

    def __init__(self):
        self.signatures = set()
        self.calls = []
        self.before_answer = None  # called (in the server's thread) before each answer

        class Handler(SimpleXMLRPCRequestHandler):
            rpc_paths = ('/kojihub',)

            def log_message(self, format, *args):  # noqa: A002
                pass

        self.server = SimpleXMLRPCServer(('127.0.0.1', 0), requestHandler=Handler,
                                         allow_none=True, logRequests=False)
        self.server.register_function(self.queryRPMSigs, 'queryRPMSigs')
        self.url = 'http://127.0.0.1:%d/kojihub' % self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       kwargs={'poll_interval': 0.05}, daemon=True)
        self.thread.start()

    def queryRPMSigs(self, *args):  # noqa: N802 - Koji's name
        args, kw = koji.decode_args(*args)
        names = ('rpm_id', 'sigkey', 'queryOpts')
        kw.update(zip(names, args))
        self.calls.append((kw.get('rpm_id'), kw.get('sigkey')))
        if self.before_answer:
            self.before_answer()
        if (kw.get('rpm_id'), kw.get('sigkey')) in self.signatures:
            return [{'rpm_id': kw['rpm_id'], 'sigkey': kw['sigkey'], 'sighash': 'f' * 32}]
        return []

    def close(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def koji_hub():
    server = FakeKojiHub()
    yield server
    server.close()


def closed_port():
    """A loopback port nothing listens on."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def test_fake_hub_answers_like_koji(koji_hub):
    koji_hub.signatures.add((1, 'abcd1234'))
    session = koji.ClientSession(koji_hub.url)
    assert session.queryRPMSigs(rpm_id=1, sigkey='abcd1234')[0]['sigkey'] == 'abcd1234'
    assert session.queryRPMSigs(rpm_id=2, sigkey='abcd1234') == []
    assert koji_hub.calls == [(1, 'abcd1234'), (2, 'abcd1234')]


# ---------------------------------------------------------------------------
# The world: hub, Rekor, outbox, worker
# ---------------------------------------------------------------------------

@dataclass
class Retry:
    returncode: int
    summary: str
    stderr: str


class HubProcess:
    """tests/support/hub_request.py running one hub request."""

    def __init__(self, world, imports, no_commit=False):
        self.tmp = world.tmp_path / ('hub-request-%d' % next(world.counter))
        self.tmp.mkdir()
        files = []
        for number, imported in enumerate(imports):
            path = self.tmp / ('import-%d.json' % number)
            path.write_text(json.dumps({
                'sigkey': imported.sigkey, 'sighash': imported.sighash,
                'build': koji.util.encode_datetime_recurse(imported.build),
                'rpm': imported.rpm}))
            files += ['--import', str(path)]
        cmd = [sys.executable, '-m', 'tests.support.hub_request', '--conf', str(world.hub.conf_path),
               '--topdir', str(world.topdir)] + files + (['--no-commit'] if no_commit else [])
        self.out = open(self.tmp / 'stdout', 'w+')
        self.err = open(self.tmp / 'stderr', 'w+')
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdin=subprocess.DEVNULL,
                                     stdout=self.out, stderr=self.err)

    def wait(self, timeout=PROCESS_TIMEOUT):
        """(exit status, stdout, stderr)"""
        try:
            code = self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(5)
        outputs = []
        for fo in (self.out, self.err):
            fo.seek(0)
            outputs.append(fo.read())
            fo.close()
        return code, outputs[0], outputs[1]

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        return self.wait(10)


class World:
    def __init__(self, hub, rekor, topdir, key_dir, log_key_file, tmp_path):
        self.hub, self.rekor, self.topdir = hub, rekor, topdir
        self.key_dir, self.log_key_file, self.tmp_path = key_dir, log_key_file, tmp_path
        self.outbox_dir = topdir / 'rekor-logs' / '@outbox'
        self.counter = iter(range(1000))
        self.module = hub.module

    # configuration ----------------------------------------------------------

    def configure(self, timeout=1, retries=1, backoff=0.05, koji_server=None, url=None,
                  **upload):
        text = ('[rekor]\nurl = %s\nallow_insecure_http = true\nlog_public_key = %s\n'
                'timeout = %s\nretries = %d\nbackoff = %s\n'
                '[signing]\npublic_key_dir = %s\n'
                % (url or self.rekor.url, self.log_key_file, timeout, retries, backoff,
                   self.key_dir))
        upload.setdefault('hub_user', HUB_USER)
        if upload:
            text += '[upload]\n' + ''.join(
                '%s = %s\n' % (k, str(v).lower() if isinstance(v, bool) else v)
                for k, v in upload.items())
        if koji_server:
            text += '[koji]\nserver = %s\n' % koji_server
        self.hub.configure(text)

    # hub requests -------------------------------------------------------------

    def sign(self, *imports, commit=True):
        self.hub.sign(*imports, commit=commit)

    def hub_process(self, imports, no_commit=False):
        return HubProcess(self, imports, no_commit)

    # the worker -------------------------------------------------------------------

    def retry(self, *args, timeout=PROCESS_TIMEOUT):
        proc = subprocess.run(self.retry_cmd(*args), cwd=ROOT, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=timeout)
        lines = proc.stdout.splitlines()
        assert len(lines) == 1, 'retry printed %r; stderr:\n%s' % (proc.stdout, proc.stderr)
        return Retry(proc.returncode, lines[0], proc.stderr)

    def retry_cmd(self, *args):
        return [sys.executable, '-m', 'koji_rekor', 'retry', '--config', str(self.hub.conf_path),
                '--topdir', str(self.topdir)] + list(args)

    # what is where -----------------------------------------------------------------

    def posts(self, status=None):
        return self.rekor.count('POST', ENTRIES, status)

    def outbox(self):
        return self.hub.outbox()

    def folder(self, name):
        path = self.outbox_dir / name
        return sorted(p.name for p in path.iterdir()) if path.is_dir() else []

    def record(self, imported):
        """The record of a signature, wherever it is, or None."""
        for path in (self.outbox_dir / (imported.name + '.json'),
                     self.outbox_dir / (imported.name + '.uncommitted'),
                     self.outbox_dir / 'rejected' / (imported.name + '.json'),
                     self.outbox_dir / 'rolled-back' / (imported.name + '.json')):
            if path.exists():
                return json.loads(path.read_text())
        return None

    def receipt_path(self, imported):
        r = imported.rpm
        return (self.topdir / 'rekor-logs' / r['name'] / r['version'] / r['release'] / r['arch']
                / (imported.name + '.json'))

    def receipt(self, imported):
        path = self.receipt_path(imported)
        return json.loads(path.read_text()) if path.exists() else None

    def receipts(self):
        base = self.topdir / 'rekor-logs'
        return sorted(p.name for p in base.rglob('*.json')
                      if not any(part.startswith('@') for part in p.relative_to(base).parts)
                      and not p.name.startswith('.'))

    def entries_of(self, imported):
        return [e for e in self.rekor.log.submitted if e.package_sha256 == imported.sha256]

    def age(self, imported):
        """Make an uncommitted record older than COMMIT_GRACE."""
        path = self.outbox_dir / (imported.name + '.uncommitted')
        then = time.time() - koji_rekor.outbox.COMMIT_GRACE - 60
        os.utime(path, (then, then))

    def account(self, *imports):
        """Where each signature ended: 'receipt', 'queued' (committed record),
        'uncommitted', 'rejected' or 'rolled-back'. Asserts that nothing is
        lost (each is in exactly one place, a set-aside record with a reason)
        and nothing duplicated (at most one entry per signature in the log,
        one receipt, matching that entry)."""
        where = {}
        for imported in {i.name: i for i in imports}.values():
            name = imported.name
            places = [place for place, path in (
                ('receipt', self.receipt_path(imported)),
                ('queued', self.outbox_dir / (name + '.json')),
                ('uncommitted', self.outbox_dir / (name + '.uncommitted')),
                ('rejected', self.outbox_dir / 'rejected' / (name + '.json')),
                ('rolled-back', self.outbox_dir / 'rolled-back' / (name + '.json')),
            ) if path.exists()]
            assert len(places) == 1, '%s: %s' % (
                name, 'in several places: %s' % places if places else 'LOST: no receipt, no record')
            place, = places
            if place in ('rejected', 'rolled-back'):
                assert self.record(imported)['set_aside']['reason']
            logged = self.entries_of(imported)
            assert len(logged) <= 1, '%s: DUPLICATED: %d entries in the log' % (name, len(logged))
            if place == 'receipt':
                assert len(logged) == 1, '%s: a receipt without an entry' % name
                receipt = self.receipt(imported)
                assert list(receipt['log_entry']) == [logged[0].entry_id]
                assert receipt['sha256'] == imported.sha256
                assert (receipt['nvra'], receipt['sigkey']) == (
                    '%(name)s-%(version)s-%(release)s.%(arch)s' % imported.rpm, imported.sigkey)
            where[name] = place
        assert self.receipts() == sorted(n + '.json' for n, p in where.items() if p == 'receipt')
        records = {n + ('.uncommitted' if p == 'uncommitted' else '.json')
                   for n, p in where.items() if p in ('queued', 'uncommitted')}
        assert set(self.outbox()) == records
        # No stray temporary files either.
        if self.outbox_dir.is_dir():
            assert [n for n in os.listdir(self.outbox_dir) if n.startswith('.')] == []
        return where


@pytest.fixture
def world(hub, rekor, topdir, key_dir, log_key_file, tmp_path):
    made = World(hub, rekor, topdir, key_dir, log_key_file, tmp_path)
    made.configure()
    return made


@contextlib.contextmanager
def hub_request():
    """One hub request, in this process, with callbacks fired by the test."""
    context._threadclear()
    try:
        yield
    finally:
        context._threadclear()


def post_rpm_sign(imported):
    koji.plugin.run_callbacks('postRPMSign', sigkey=imported.sigkey, sighash=imported.sighash,
                              build=imported.build, rpm=imported.rpm)


def post_commit():
    koji.plugin.run_callbacks('postCommit')


def wait_for(condition, what, timeout=POLL_TIMEOUT, interval=0.02):
    """Poll condition() until it is true; fail naming `what` after timeout."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError('timed out after %ss waiting for %s' % (timeout, what))
        time.sleep(interval)


# ---------------------------------------------------------------------------
# Committed uploads
# ---------------------------------------------------------------------------

def test_the_upload_waits_for_the_commit(world, sigs):
    imported = sigs[0]
    with hub_request():
        post_rpm_sign(imported)
        # Inside the transaction: recorded durably, nothing sent.
        assert world.posts() == 0
        assert world.outbox() == [imported.name + '.uncommitted']
        record = world.record(imported)
        assert (record['nvra'], record['sigkey'], record['sighash']) == (
            'hello-1.0-1.noarch', imported.sigkey, imported.sighash)
        assert record['attempts'] == 0 and record['receipt'] is None
        post_commit()
    assert world.posts() == 1
    assert world.account(imported) == {imported.name: 'receipt'}
    assert world.outbox() == []


def test_a_request_of_several_signatures_logs_each_once(world, sigs):
    world.sign(*sigs[:3])
    assert world.posts() == 3 == world.posts(201)
    assert set(world.account(*sigs[:3]).values()) == {'receipt'}


# ---------------------------------------------------------------------------
# Rollbacks, and what the worker makes of them
# ---------------------------------------------------------------------------

def test_a_rolled_back_request_sends_nothing(world, sigs):
    world.sign(sigs[0], commit=False)
    assert world.posts() == 0
    assert world.account(sigs[0]) == {sigs[0].name: 'uncommitted'}
    # Later requests do not pick it up either: it is not theirs.
    world.sign(sigs[2])
    assert world.account(sigs[0], sigs[2]) == {sigs[0].name: 'uncommitted',
                                               sigs[2].name: 'receipt'}
    assert world.entries_of(sigs[0]) == []


def test_an_uncommitted_record_within_the_grace_is_left_alone(world, sigs, koji_hub):
    world.configure(koji_server=koji_hub.url)
    world.sign(sigs[0], commit=False)
    done = world.retry('--now')
    assert (done.returncode, done.summary) == (0, 'nothing to do; 1 left in the outbox')
    assert koji_hub.calls == []  # too young to ask about: its request may still be running
    assert world.posts() == 0
    assert world.account(sigs[0]) == {sigs[0].name: 'uncommitted'}


@pytest.mark.parametrize('koji_says', ['absent', 'present', 'unreachable'])
def test_an_old_uncommitted_record_is_resolved_by_asking_koji(world, sigs, koji_hub, koji_says):
    imported = sigs[0]
    url = koji_hub.url if koji_says != 'unreachable' else \
        'http://127.0.0.1:%d/kojihub' % closed_port()
    world.configure(koji_server=url)
    if koji_says == 'present':
        koji_hub.signatures.add((imported.rpm['id'], imported.sigkey))
    world.sign(imported, commit=False)
    world.age(imported)

    done = world.retry()

    where = world.account(imported)
    if koji_says == 'absent':
        assert (done.returncode, done.summary) == (0, 'rolled back 1; 0 left in the outbox')
        assert where == {imported.name: 'rolled-back'}
        assert 'Koji has no such signature' in world.record(imported)['set_aside']['reason']
        assert world.posts() == 0
    elif koji_says == 'present':
        assert (done.returncode, done.summary) == (0, 'logged 1; 0 left in the outbox')
        assert where == {imported.name: 'receipt'}
        assert world.posts() == 1
    else:
        assert (done.returncode, done.summary) == (0, 'unconfirmed 1; 1 left in the outbox')
        assert where == {imported.name: 'uncommitted'}
        assert 'cannot ask the hub at %s' % url in done.stderr
        assert world.posts() == 0
    if koji_says != 'unreachable':
        assert koji_hub.calls == [(imported.rpm['id'], imported.sigkey)]
    # A second pass changes nothing and sends nothing more.
    posts = world.posts()
    again = world.retry()
    assert again.returncode == 0 and world.posts() == posts
    assert world.account(imported) == where


def test_a_request_that_outlives_the_grace_takes_its_record_back_at_commit(world, sigs,
                                                                           koji_hub, plugin_log):
    """A worker judged the request dead and set its record aside as rolled
    back, because Koji did not have the signature yet; then Koji commits."""
    imported = sigs[0]
    world.configure(koji_server=koji_hub.url)
    context._threadclear()
    try:
        koji.plugin.run_callbacks('postRPMSign', sigkey=imported.sigkey, sighash=imported.sighash,
                                  build=imported.build, rpm=imported.rpm)
        world.age(imported)
        done = world.retry()
        assert (done.returncode, done.summary) == (0, 'rolled back 1; 0 left in the outbox')
        koji.plugin.run_callbacks('postCommit')
    finally:
        context._threadclear()
    assert world.account(imported) == {imported.name: 'receipt'}
    assert world.posts() == 1
    assert 'but Koji committed it: queued again' in plugin_log.text


def test_a_hub_committing_while_the_worker_resolves_does_not_crash_it(world, sigs, koji_hub):
    world.configure(koji_server=koji_hub.url, timeout=10)
    old, young = sigs[2], sigs[0]   # alpha-... sorts before hello-...
    world.sign(old, commit=False)
    world.age(old)
    asked, answer = threading.Event(), threading.Event()

    def hold_the_answer():
        asked.set()
        answer.wait(PROCESS_TIMEOUT)
    koji_hub.before_answer = hold_the_answer

    with hub_request():
        post_rpm_sign(young)   # a request still open when the worker lists the outbox
        worker = subprocess.Popen(world.retry_cmd(), cwd=ROOT, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert asked.wait(PROCESS_TIMEOUT), 'the worker never asked Koji'
            post_commit()      # ... and commits while the worker asks Koji about the old one
            answer.set()
            out, err = worker.communicate(timeout=PROCESS_TIMEOUT)
        finally:
            answer.set()
            if worker.poll() is None:
                worker.kill()
                worker.communicate(timeout=5)
    assert world.account(old, young) == {old.name: 'rolled-back', young.name: 'receipt'}
    assert 'Traceback' not in err, err
    assert (worker.returncode, out) == (0, 'rolled back 1; 0 left in the outbox\n')


# ---------------------------------------------------------------------------
# The same signature more than once
# ---------------------------------------------------------------------------

def test_the_same_signature_twice_in_one_request_is_logged_once(world, sigs):
    # A multicall importing it twice (e.g. add, delete, add again).
    with hub_request():
        post_rpm_sign(sigs[0])
        post_rpm_sign(sigs[0])
        assert world.outbox() == [sigs[0].name + '.uncommitted']
        post_commit()
    assert world.posts() == 1
    assert world.account(sigs[0]) == {sigs[0].name: 'receipt'}
    assert len(world.rekor.log.submitted) == 1


def test_a_repeated_signature_does_not_stop_the_rest_of_the_request(world, sigs, plugin_log):
    world.sign(sigs[0], sigs[0], sigs[2])
    assert [r.getMessage() for r in plugin_log.records if r.levelno >= logging.WARNING] == []
    assert world.account(sigs[0], sigs[2]) == {sigs[0].name: 'receipt',
                                               sigs[2].name: 'receipt'}


def test_the_same_signature_in_two_requests_meets_409_and_keeps_one_entry(world, sigs):
    world.sign(sigs[0])
    first = world.receipt(sigs[0])
    world.sign(sigs[0])
    assert (world.posts(201), world.posts(409)) == (1, 1)
    assert world.account(sigs[0]) == {sigs[0].name: 'receipt'}
    assert list(world.receipt(sigs[0])['log_entry']) == list(first['log_entry'])


# ---------------------------------------------------------------------------
# enforce: upload inside the transaction
# ---------------------------------------------------------------------------

def test_enforce_uploads_before_the_commit_and_keeps_the_receipt_for_it(world, sigs):
    world.configure(enforce=True)
    imported = sigs[1]
    with hub_request():
        post_rpm_sign(imported)
        assert world.posts() == 1
        assert world.outbox() == [imported.name + '.uncommitted']
        assert world.receipt(imported) is None  # not before Koji commits
        held = world.record(imported)['receipt']
        assert list(held['log_entry']) == [world.entries_of(imported)[0].entry_id]
        post_commit()
    assert world.posts() == 1  # no second upload at commit
    assert world.account(imported) == {imported.name: 'receipt'}
    assert world.receipt(imported) == held


def test_enforce_fails_the_call_and_keeps_nothing_when_rekor_fails(world, sigs):
    world.configure(enforce=True)
    world.rekor.faults.fail_status, world.rekor.faults.fail_count = 503, 100
    with pytest.raises(koji.CallbackError) as info:
        world.sign(sigs[0])
    assert 'Rekor upload of hello-1.0-1.noarch (sigkey %s) failed: Rekor answered 503' \
        % sigs[0].sigkey in str(info.value)
    # One cause in Koji's fault, not two chained tracebacks.
    assert 'During handling of the above exception' not in str(info.value)
    assert world.posts() == 2  # retries = 1
    assert world.outbox() == [] and world.receipts() == []
    assert world.rekor.log.submitted == []


def test_enforce_then_rollback_keeps_the_receipt_in_the_uncommitted_record(world, sigs,
                                                                          koji_hub):
    world.configure(enforce=True, koji_server=koji_hub.url)
    imported = sigs[0]
    world.sign(imported, commit=False)
    assert world.posts() == 1
    assert world.receipts() == []
    record = world.record(imported)
    assert list(record['receipt']['log_entry']) == [world.entries_of(imported)[0].entry_id]
    assert world.account(imported) == {imported.name: 'uncommitted'}

    # The request died after Koji committed: the worker finds the signature
    # in Koji and writes the receipt it already has, without a second POST.
    koji_hub.signatures.add((imported.rpm['id'], imported.sigkey))
    world.age(imported)
    done = world.retry()
    assert (done.returncode, done.summary) == (0, 'logged 1; 0 left in the outbox')
    assert world.posts() == 1
    assert world.account(imported) == {imported.name: 'receipt'}
    assert world.receipt(imported) == record['receipt']


def test_hub_request_reports_an_enforce_failure_in_one_line(world, sigs):
    world.configure(enforce=True)
    world.rekor.faults.max_body_bytes = 1000
    code, out, err = world.hub_process([sigs[0]]).wait()
    assert code == 1
    line, = out.splitlines()
    assert line.startswith('Rekor upload of hello-1.0-1.noarch (sigkey %s) failed: Rekor '
                           'refused the upload as too large (request of ' % sigs[0].sigkey)
    assert line.endswith('Request Entity Too Large. Limit set to 1000')
    assert world.outbox() == [] and world.receipts() == []


# ---------------------------------------------------------------------------
# queue_only: the hub queues, the worker uploads
# ---------------------------------------------------------------------------

def test_queue_only_hub_sends_nothing_and_the_worker_sends_all(world, sigs):
    world.configure(queue_only=True)
    world.sign(*sigs[:3])
    assert world.posts() == 0
    assert world.outbox() == sorted(s.name + '.json' for s in sigs[:3])

    done = world.retry()

    assert (done.returncode, done.summary) == (0, 'logged 3; 0 left in the outbox')
    assert world.posts() == 3
    assert set(world.account(*sigs[:3]).values()) == {'receipt'}


def test_retry_limit_uploads_at_most_n_records(world, sigs):
    world.configure(queue_only=True)
    world.sign(*sigs[:3])
    done = world.retry('--limit', '1')
    assert (done.returncode, done.summary) == (0, 'logged 1; 2 left in the outbox')
    assert world.posts() == 1
    assert sorted(world.account(*sigs[:3]).values()) == ['queued', 'queued', 'receipt']
    done = world.retry('--limit', '5')
    assert (done.returncode, done.summary) == (0, 'logged 2; 0 left in the outbox')
    assert set(world.account(*sigs[:3]).values()) == {'receipt'}


def test_queue_only_cannot_be_combined_with_enforce(world, sigs):
    world.configure(queue_only=True, enforce=True)
    with pytest.raises(koji.CallbackError) as info:
        world.sign(sigs[0])
    assert '[upload] queue_only: cannot be combined with enforce' in str(info.value)
    done = subprocess.run(world.retry_cmd(), cwd=ROOT, capture_output=True, text=True,
                          timeout=PROCESS_TIMEOUT, stdin=subprocess.DEVNULL)
    assert done.returncode == 2
    assert 'cannot be combined with enforce' in done.stderr


def test_retry_without_a_topdir_cannot_start(world, tmp_path):
    done = subprocess.run(world.retry_cmd()[:-2] + ['--topdir', str(tmp_path / 'nowhere')],
                          cwd=ROOT, capture_output=True, text=True, timeout=PROCESS_TIMEOUT,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 2
    assert done.stderr.strip() == 'koji-rekor: no such topdir: %s' % (tmp_path / 'nowhere')


# ---------------------------------------------------------------------------
# Rekor failing: the record stays, with the cause, until the worker succeeds
# ---------------------------------------------------------------------------

def fault_503(rekor):
    rekor.faults.fail_status, rekor.faults.fail_count = 503, 100


def fault_slow(rekor):
    rekor.faults.delay = 3


def fault_drop(rekor):
    rekor.faults.drop_count = 100


def fault_malformed(rekor):
    rekor.faults.malformed_count = 100


def tampering(mode):
    def fault(rekor):
        rekor.faults.tamper = mode
    return fault


# fault: (make it, what the record's last_error must say ({url}: Rekor's),
#         entries the faulty attempts leave in the log, whose failure: the
#         log's (the record waits for the log) or the record's (own backoff))
TRANSIENT = {
    '503': (fault_503, ['Rekor answered 503: Service Unavailable (after 2 attempts)'], 0, 'log'),
    'slow': (fault_slow, ['Rekor at {url} timed out after 0.5 s (after 2 attempts)'], 1, 'log'),
    'dropped': (fault_drop, ['cannot reach Rekor at {url}: ',
                             'Remote end closed connection without response',
                             '(after 2 attempts)'], 0, 'log'),
    'malformed': (fault_malformed, ['malformed reply from Rekor (HTTP 201, not JSON) '
                                    '(after 2 attempts)'], 1, 'log'),
    'tampered proof': (tampering('proof_hash'), ['inclusion proof'], 1, 'own'),
    'tampered checkpoint': (tampering('checkpoint_signature'),
                            ['checkpoint: no valid signature by the log key'], 1, 'own'),
    'tampered SET': (tampering('set'), ['signed entry timestamp: does not verify'], 1, 'own'),
}


@pytest.mark.parametrize('fault', sorted(TRANSIENT))
def test_a_transient_failure_keeps_the_record_until_retry_succeeds(world, sigs, fault):
    make_fault, cause, leftover, whose = TRANSIENT[fault]
    world.configure(timeout=0.5)
    imported = sigs[0]
    make_fault(world.rekor)

    world.sign(imported)  # enforce is off: the hub call succeeds

    record = world.record(imported)
    assert world.account(imported) == {imported.name: 'queued'}
    assert record['attempts'] == 1
    for fragment in cause:
        assert fragment.format(url=world.rekor.url) in record['last_error']
    outage = world.topdir / 'rekor-logs' / '@state' / 'outage.json'
    if whose == 'log':
        assert record['next_attempt'] == 0 and outage.exists()
    else:
        assert 60 - 5 <= record['next_attempt'] - time.time() <= 60
        assert not outage.exists()
    assert len(world.rekor.log.submitted) == leftover

    world.rekor.reset_faults()
    done = world.retry('--now')

    # An entry the log kept before the failure meets 409, and says so.
    outcome = 'already in the log 1' if leftover else 'logged 1'
    assert (done.returncode, done.summary) == (0, outcome + '; 0 left in the outbox')
    assert world.account(imported) == {imported.name: 'receipt'}
    assert len(world.rekor.log.submitted) == 1


def test_rekor_down_then_back_with_the_same_log(world, sigs):
    imported = sigs[0]
    rekor = world.rekor
    port = rekor.port
    rekor.stop()

    world.sign(imported)
    record = world.record(imported)
    assert record['attempts'] == 1
    assert 'cannot reach Rekor at http://127.0.0.1:%d' % port in record['last_error']

    # Still down: the worker keeps it, says so, and exits 1.
    done = world.retry('--now')
    assert done.returncode == 1
    assert done.summary.startswith('failed 1; 1 left in the outbox; the log has been failing '
                                   'since ')
    assert world.record(imported)['attempts'] == 2

    with RekorServer(log=rekor.log, port=port) as back:
        world.rekor = back
        done = world.retry('--now')
        assert (done.returncode, done.summary) == (0, 'logged 1; 0 left in the outbox')
        assert back.count('POST', ENTRIES) == 1
        assert world.account(imported) == {imported.name: 'receipt'}


def test_a_failing_worker_pass_reports_the_failure(world, sigs):
    world.configure(queue_only=True)
    world.sign(sigs[0], sigs[2])
    fault_503(world.rekor)
    done = world.retry()
    assert done.returncode == 1
    # The log failed: the pass stops there, the other record waits for the log.
    assert done.summary.startswith('failed 1, waiting 1; 2 left in the outbox; the log has '
                                   'been failing since ')
    assert done.stderr.count('kept in the outbox): Rekor answered 503') == 1
    # (alpha, sigs[2], comes first)
    assert (world.record(sigs[2])['attempts'], world.record(sigs[2])['last_error']) == (
        1, 'Rekor answered 503: Service Unavailable (after 2 attempts)')
    assert world.record(sigs[0])['attempts'] == 0
    assert set(world.account(sigs[0], sigs[2]).values()) == {'queued'}


def test_a_tampered_answer_converges_once_the_log_stops_lying(world, sigs):
    world.configure(queue_only=True)
    imported = sigs[0]
    world.sign(imported)
    world.rekor.faults.tamper = 'root_hash'
    done = world.retry('--now')
    assert done.returncode == 1 and done.summary.startswith('failed 1; 1 left')
    done = world.retry('--now')  # the log still lies: still no receipt
    assert done.returncode == 1
    record = world.record(imported)
    assert record['attempts'] == 2
    assert 'inclusion proof does not lead to root hash' in record['last_error']
    assert world.receipts() == []

    world.rekor.faults.tamper = None
    done = world.retry('--now')
    assert (done.returncode, done.summary) == (0, 'already in the log 1; 0 left in the outbox')
    assert world.posts(201) == 1 and world.posts(409) == 2
    assert world.account(imported) == {imported.name: 'receipt'}


def test_too_large_is_set_aside_with_the_reason_and_not_retried(world, sigs):
    imported = sigs[0]
    world.rekor.faults.max_body_bytes = 1000
    world.sign(imported)
    assert world.account(imported) == {imported.name: 'rejected'}
    reason = world.record(imported)['set_aside']['reason']
    assert reason.startswith('Rekor refused the upload as too large (request of ')
    assert 'Limit set to 1000' in reason
    assert world.posts() == 1

    world.rekor.reset_faults()
    done = world.retry('--now')
    rejected = world.outbox_dir / 'rejected'
    assert (done.returncode, done.summary) == (
        0, 'nothing to do; 0 left in the outbox; 1 set aside in %s' % rejected)
    assert world.posts() == 1
    assert world.account(imported) == {imported.name: 'rejected'}


# ---------------------------------------------------------------------------
# Permanent failures: the source is gone
# ---------------------------------------------------------------------------

def test_an_rpm_deleted_before_the_commit_is_set_aside(world, sigs):
    imported = sigs[0]
    with hub_request():
        post_rpm_sign(imported)
        os.unlink(imported.unsigned_path)
        post_commit()
    assert world.posts() == 0
    assert world.account(imported) == {imported.name: 'rejected'}
    assert world.record(imported)['set_aside']['reason'] == \
        'RPM file missing: %s' % imported.unsigned_path

    done = world.retry('--now')
    assert done.returncode == 0
    assert done.summary.startswith('nothing to do; 0 left in the outbox; 1 set aside in ')
    assert world.posts() == 0


def test_the_worker_sets_aside_a_record_whose_rpm_is_gone(world, sigs):
    world.configure(queue_only=True)
    world.sign(sigs[0], sigs[2])
    os.unlink(sigs[2].unsigned_path)

    done = world.retry()

    rejected = world.outbox_dir / 'rejected'
    assert (done.returncode, done.summary) == (
        1, 'logged 1, rejected 1; 0 left in the outbox; 1 set aside in %s' % rejected)
    assert 'RPM file missing: %s' % sigs[2].unsigned_path in done.stderr
    assert world.account(sigs[0], sigs[2]) == {sigs[0].name: 'receipt',
                                               sigs[2].name: 'rejected'}
    assert world.record(sigs[2])['set_aside']['reason'] == \
        'RPM file missing: %s' % sigs[2].unsigned_path
    done = world.retry('--now')  # left alone from now on
    assert (done.returncode, done.summary) == (
        0, 'nothing to do; 0 left in the outbox; 1 set aside in %s' % rejected)
    assert world.posts() == 1


def test_a_corrupt_signature_header_is_set_aside(world, sigs):
    world.configure(queue_only=True)
    world.sign(sigs[0])
    with open(sigs[0].sighdr_path, 'r+b') as fo:
        fo.write(b'garbage!')
    done = world.retry()
    assert done.returncode == 1 and done.summary.startswith('rejected 1; 0 left')
    assert world.account(sigs[0]) == {sigs[0].name: 'rejected'}
    assert world.record(sigs[0])['set_aside']['reason'].startswith(
        'corrupt signature header %s' % sigs[0].sighdr_path)
    assert world.posts() == 0


# ---------------------------------------------------------------------------
# Backoff
# ---------------------------------------------------------------------------

def test_a_failed_record_waits_for_its_next_attempt_unless_now(world, sigs):
    imported = sigs[0]
    world.rekor.faults.tamper = 'set'  # the record's own failure, not the log's
    world.sign(imported)
    first = world.record(imported)
    assert first['attempts'] == 1
    posts = world.posts()

    done = world.retry()
    assert done.returncode == 0
    assert done.summary == 'waiting 1; 1 left in the outbox (next attempt %s)' % time.strftime(
        '%Y-%m-%d %H:%M:%S UTC', time.gmtime(first['next_attempt']))
    assert world.posts() == posts  # not even tried
    assert world.record(imported) == first

    before = int(time.time())
    done = world.retry('--now')  # still failing: the delay doubles
    after = time.time()
    assert done.returncode == 1
    second = world.record(imported)
    assert second['attempts'] == 2
    # next_attempt is "now + 120 s", now being some time during that pass.
    assert before <= second['next_attempt'] - 120 <= after

    world.rekor.reset_faults()
    done = world.retry('--now')
    # the log kept the entry whose answer lied: 409 now
    assert (done.returncode, done.summary) == (0, 'already in the log 1; 0 left in the outbox')
    assert world.account(imported) == {imported.name: 'receipt'}


# ---------------------------------------------------------------------------
# Concurrency: hub processes and workers at once
# ---------------------------------------------------------------------------

def test_concurrent_hub_processes_log_each_signature_once(world, sigs):
    different = [sigs[0], sigs[2], sigs[4], sigs[6]]
    same = sigs[7]
    procs = [world.hub_process([s]) for s in different] + \
        [world.hub_process([same]) for _ in range(3)]
    results = [p.wait() for p in procs]
    assert [code for code, _, _ in results] == [0] * 7, results
    assert set(world.account(*different, same).values()) == {'receipt'}
    assert len(world.rekor.log.submitted) == 5
    assert world.posts(201) == 5


def test_concurrent_workers_log_each_record_once(world, sigs):
    world.configure(queue_only=True)
    world.sign(*sigs)
    assert len(world.outbox()) == 8
    workers = [subprocess.Popen(world.retry_cmd(), cwd=ROOT, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for _ in range(2)]
    results = []
    for worker in workers:
        try:
            results.append(worker.communicate(timeout=PROCESS_TIMEOUT))
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.communicate(timeout=5)
    # Whatever the interleaving, each signature ends with one entry and one
    # receipt. (Whether the workers also stay out of each other's way, and
    # exit cleanly, is pinned down deterministically by the two tests below.)
    assert set(world.account(*sigs).values()) == {'receipt'}
    assert len(world.rekor.log.submitted) == 8
    # Each package was created once; any other POST of it met the entry (409).
    assert world.posts(201) == 8
    assert world.posts() == world.posts(201) + world.posts(409)


def test_a_record_held_by_one_process_is_skipped_by_another(world, sigs):
    world.configure(queue_only=True)
    imported = sigs[0]
    world.sign(imported)
    path = str(world.outbox_dir / (imported.name + '.json'))
    # This process holds the record, as a hub's postCommit or a worker does
    # while it uploads it; a worker meanwhile must leave it alone.
    with koji_rekor.outbox.claimed(path) as record:
        assert record['nvra'] == 'hello-1.0-1.noarch'
        done = world.retry('--now')
        assert world.posts() == 0, 'the other worker uploaded a record this process holds'
        assert (done.returncode, done.summary) == (0, 'busy 1; 1 left in the outbox')


def test_a_worker_leaves_alone_the_record_another_worker_is_uploading(world, sigs):
    world.configure(queue_only=True, timeout=20)
    world.sign(*sigs[:4])
    rekor = world.rekor
    rekor.faults.delay = 2
    first = subprocess.Popen(world.retry_cmd(), cwd=ROOT, stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    second = None
    try:
        # The first worker's first POST has reached Rekor (which logged it and
        # holds the answer back): freeze the worker right there, mid-upload.
        assert rekor.delay_started.wait(PROCESS_TIMEOUT), 'the first POST never arrived'
        first.send_signal(signal.SIGSTOP)
        rekor.faults.delay = 0
        second = subprocess.run(world.retry_cmd(), cwd=ROOT, stdin=subprocess.DEVNULL,
                                capture_output=True, text=True, timeout=PROCESS_TIMEOUT)
        first.send_signal(signal.SIGCONT)
        out, err = first.communicate(timeout=PROCESS_TIMEOUT)
    finally:
        if first.poll() is None:
            first.send_signal(signal.SIGCONT)
            first.kill()
            first.communicate(timeout=5)
    assert set(world.account(*sigs[:4]).values()) == {'receipt'}
    # The first worker finished its record and exited cleanly...
    assert 'Traceback' not in err, err
    assert first.returncode == 0 and out.startswith('logged 1'), out
    # ... the second one skipped that busy record and did the rest...
    assert second.returncode == 0, second.stderr
    assert second.stdout.startswith('logged 3, busy 1; '), second.stdout
    # ... so nothing was uploaded twice.
    assert (world.posts(201), world.posts(409)) == (4, 0)


# ---------------------------------------------------------------------------
# Crashes
# ---------------------------------------------------------------------------

def test_a_hub_killed_during_its_upload_leaves_the_record_for_the_worker(world, sigs):
    world.configure(timeout=20)
    imported = sigs[0]
    world.rekor.faults.delay = 30
    hub = world.hub_process([imported])
    assert world.rekor.delay_started.wait(PROCESS_TIMEOUT), 'the POST never arrived'
    # The POST is in flight (Rekor has logged it, the answer is held back).
    code, _, _ = hub.kill()
    assert code == -signal.SIGKILL
    assert world.account(imported) == {imported.name: 'queued'}
    assert world.record(imported)['attempts'] == 0

    world.rekor.faults.delay = 0
    world.configure()
    done = world.retry('--now')
    assert (done.returncode, done.summary) == (0, 'already in the log 1; 0 left in the outbox')
    assert world.account(imported) == {imported.name: 'receipt'}
    assert len(world.rekor.log.submitted) == 1 and world.posts(409) == 1


def test_a_hub_that_died_before_the_commit_is_resolved_through_koji(world, sigs, koji_hub):
    world.configure(koji_server=koji_hub.url)
    imported = sigs[0]
    code, _, _ = world.hub_process([imported], no_commit=True).wait()
    assert code == 0
    assert world.posts() == 0
    assert world.account(imported) == {imported.name: 'uncommitted'}

    koji_hub.signatures.add((imported.rpm['id'], imported.sigkey))  # Koji did commit it
    world.age(imported)
    done = world.retry()
    assert (done.returncode, done.summary) == (0, 'logged 1; 0 left in the outbox')
    assert world.account(imported) == {imported.name: 'receipt'}
    assert world.posts() == 1


@pytest.mark.parametrize('koji_says', ['absent', 'present'])
def test_a_hub_killed_during_an_enforced_upload(world, sigs, koji_hub, koji_says):
    world.configure(enforce=True, timeout=20, koji_server=koji_hub.url)
    imported = sigs[0]
    world.rekor.faults.delay = 30
    hub = world.hub_process([imported])
    assert world.rekor.delay_started.wait(PROCESS_TIMEOUT), 'the POST never arrived'
    code, _, _ = hub.kill()
    assert code == -signal.SIGKILL
    assert world.account(imported) == {imported.name: 'uncommitted'}
    assert world.record(imported)['receipt'] is None

    world.rekor.faults.delay = 0
    world.configure(koji_server=koji_hub.url)
    if koji_says == 'present':
        koji_hub.signatures.add((imported.rpm['id'], imported.sigkey))
    world.age(imported)
    done = world.retry()
    if koji_says == 'absent':
        # The dead request's transaction was rolled back: set aside. (Its
        # entry is in the log all the same: Rekor had it before the kill.)
        assert (done.returncode, done.summary) == (0, 'rolled back 1; 0 left in the outbox')
        assert world.account(imported) == {imported.name: 'rolled-back'}
        assert world.posts() == 0
    else:
        assert (done.returncode, done.summary) == (0, 'already in the log 1; 0 left in the outbox')
        assert world.account(imported) == {imported.name: 'receipt'}
        assert world.posts(409) == 1
    assert len(world.rekor.log.submitted) == 1


# ---------------------------------------------------------------------------
# retry --watch
# ---------------------------------------------------------------------------

def test_watch_uploads_what_is_queued_and_stops_on_sigterm(world, sigs, tmp_path):
    world.configure(queue_only=True, poll_interval=0.2)
    err = open(tmp_path / 'watch.stderr', 'w+')
    watcher = subprocess.Popen(world.retry_cmd('--watch'), cwd=ROOT, stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=err)
    try:
        world.sign(sigs[0], sigs[2])
        wait_for(lambda: world.outbox() == [] and len(world.receipts()) == 2,
                 'the watcher to upload both records')
        world.sign(sigs[4])  # and it keeps watching
        wait_for(lambda: world.outbox() == [] and len(world.receipts()) == 3,
                 'the watcher to upload the third record')
        assert watcher.poll() is None
        watcher.send_signal(signal.SIGTERM)
        assert watcher.wait(5) == 0
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait(5)
        err.seek(0)
        log = err.read()
        err.close()
    assert set(world.account(sigs[0], sigs[2], sigs[4]).values()) == {'receipt'}
    assert world.posts() == 3
    assert 'Traceback' not in log
    assert len(re.findall(r'rekor_log: logged \S+ sigkey ', log)) == 3


# --- the claim: one holder per record, and it removes only what it claimed -----------

def test_a_record_queued_again_during_its_upload_is_not_removed(world, sigs):
    """The hub queues the signature again while the worker uploads it (the
    hub's rename replaces the file): the worker's removal after its upload
    must leave the newer record for the next pass."""
    world.configure(queue_only=True)
    world.sign(sigs[0])
    path = str(world.outbox_dir / (sigs[0].name + '.json'))
    with koji_rekor.outbox.claimed(path) as record:
        assert record is not None
        world.sign(sigs[0])  # queued again: a new file under the same name
        again = os.stat(path).st_ino
        koji_rekor.outbox.remove_record(path)  # what deliver() does once its upload is done
        assert os.stat(path).st_ino == again
    assert world.outbox() == [sigs[0].name + '.json']
    # Unchanged, the claimed record is removed.
    with koji_rekor.outbox.claimed(path) as record:
        assert record is not None
        koji_rekor.outbox.remove_record(path)
    assert world.outbox() == []
    assert not [n for n in os.listdir(world.outbox_dir) if n.endswith('.done')]


def test_a_record_is_claimed_by_one_thread_of_a_process(world, sigs):
    """fcntl locks belong to the process: a second thread of the same worker
    (--jobs) must not take a record the first one holds."""
    world.configure(queue_only=True)
    world.sign(sigs[0])
    path = str(world.outbox_dir / (sigs[0].name + '.json'))
    seen = []
    with koji_rekor.outbox.claimed(path) as record:
        assert record is not None

        def other():
            with koji_rekor.outbox.claimed(path) as again:
                seen.append(again)
        thread = threading.Thread(target=other)
        thread.start()
        thread.join(30)
    assert seen == [None]


def test_a_record_replaced_after_it_was_opened_is_not_claimed(world, sigs):
    """A worker that opened and locked the file a name held before: the
    record now under that name is another's to deliver (the same-inode check
    claimed() makes after its lock)."""
    world.configure(queue_only=True)
    world.sign(sigs[0])
    path = str(world.outbox_dir / (sigs[0].name + '.json'))
    old = os.open(path, os.O_RDWR)
    out = os.open(os.path.dirname(path), os.O_RDONLY)
    try:
        assert koji_rekor.outbox.still_named(out, os.path.basename(path), old) is True
        world.sign(sigs[0])  # the name now holds a new file
        assert koji_rekor.outbox.still_named(out, os.path.basename(path), old) is False
    finally:
        os.close(old)
        os.close(out)
