"""koji-rekor monitor against a local Rekor-compatible log on 127.0.0.1: each
tree of the log proved consistent run after run with the tree heads the
plugin and earlier runs kept; split views, shrunk and vanished trees found;
every entry made with our signing keys verified and checked against the
receipts; the watchlist; the report and the exit status."""

import base64
import hashlib
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap

import koji
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

import koji_rekor.cli
import koji_rekor.config
import koji_rekor.delivery
import koji_rekor.logkey
import koji_rekor.monitor.scan
import koji_rekor.monitor.watchlist
import koji_rekor.openpgp
import koji_rekor.progress
import koji_rekor.rpmsig

from tests.support import rpmfactory
from tests.support.common import HUB_USER, KEY_ALGOS, ROOT
from tests.support.kojidouble import KojiDouble
from tests.support.rekor_server import OpenPgpKey, RekorLog, RekorServer, canonical_json

PROOF = '/api/v1/log/proof'
PROCESS_TIMEOUT = 120


class Monitor:
    """koji-rekor monitor in this process, with a configuration of the
    test's own: (exit status, stdout, stderr)."""

    def __init__(self, tmp_path, topdir, capsys, caplog):
        self.conf = tmp_path / 'monitor.conf'
        self.topdir = topdir
        self.state = tmp_path / 'monitor-state'
        self.capsys = capsys
        self.caplog = caplog

    def configure(self, url, log_key_file, key_dir=None, koji_url=None, extra=''):
        text = ('[rekor]\nurl = %s\nallow_insecure_http = true\nlog_public_key = %s\n'
                'timeout = 5\nretries = 1\nbackoff = 0.01\n' % (url, log_key_file))
        if key_dir:
            text += '[signing]\npublic_key_dir = %s\n' % key_dir
        text += '[upload]\nhub_user = %s\n' % HUB_USER
        # a closed port unless a test gives a hub: Koji can never be asked by accident
        text += '[koji]\nserver = %s\n' % (koji_url or 'http://127.0.0.1:%d/kojihub'
                                            % closed_port())
        # Its memory off the topdir, private to the test.
        state = 'state_dir = %s\n' % self.state
        if '[monitor]\n' in extra:
            extra = extra.replace('[monitor]\n', '[monitor]\n' + state, 1)
        else:
            extra += '\n[monitor]\n' + state
        self.conf.write_text(text + extra)
        self.args = (url, log_key_file, key_dir, koji_url)

    def reconfigure(self, extra):
        self.configure(*self.args, extra=extra)

    def run(self, *args):
        self.caplog.clear()
        status = koji_rekor.cli.main(['monitor', '--config', str(self.conf),
                                 '--topdir', str(self.topdir)] + [str(a) for a in args])
        out, err = self.capsys.readouterr()
        assert 'Traceback' not in err
        return status, out, err

    def report(self, *args):
        status, out, err = self.run('--json', *args)
        report = json.loads(out)
        assert report['exit_status'] == status
        return status, report

    def logged_findings(self):
        return [r.getMessage() for r in self.caplog.records
                if r.levelname == 'ERROR' and 'rekor_log: finding: ' in r.getMessage()]

    def kept_head(self, log, tree_id):
        """The tree head the monitor keeps in its state_dir."""
        path = (self.state / 'rekor-logs' / '@state' / 'checkpoints' / log.log_id
                / ('%d.json' % tree_id))
        return json.loads(path.read_text())


@pytest.fixture
def kojihub():
    double = KojiDouble().start()
    yield double
    double.stop()


@pytest.fixture
def monitor(tmp_path, topdir, rekor, log_key_file, key_dir, kojihub, capsys, plugin_log):
    made = Monitor(tmp_path, topdir, capsys, plugin_log)
    made.configure(rekor.url, log_key_file, key_dir, kojihub.url)
    return made


def add_entries(log, count, tag='entry'):
    """Entries of another kind, by nobody we know (as most of a public log)."""
    start = log.tree_size
    for n in range(start, start + count):
        log.add_entry(canonical_json({'apiVersion': '0.0.1', 'kind': 'hashedrekord',
                                      'spec': {'data': {'hash': {
                                          'algorithm': 'sha256', 'value': hashlib.sha256(
                                              b'%s %d' % (tag.encode(), n)).hexdigest()}}}}))


def trees(report):
    return {int(tree['tree_id']): tree for tree in report['trees']}


# --- the log's trees ---------------------------------------------------------------

@pytest.mark.quiet_log  # counts sizes or requests: a log only this test writes
def test_a_growing_log_is_quiet_and_the_kept_tree_head_advances(monitor, rekor):
    add_entries(rekor.log, 3)
    status, first = monitor.report()
    assert status == 0 and first['findings'] == []
    assert trees(first)[rekor.log.tree_id]['status'] == 'first seen'
    assert monitor.kept_head(rekor.log, rekor.log.tree_id)['size'] == 3

    add_entries(rekor.log, 4)
    status, out, err = monitor.run()

    assert status == 0
    assert 'size 7' in out and 'grew from size 3, proved consistent' in out
    assert 'Result: OK, nothing found (exit 0)' in out
    assert monitor.logged_findings() == []
    assert rekor.count('GET', PROOF) == 1
    kept = monitor.kept_head(rekor.log, rekor.log.tree_id)
    assert kept['size'] == 7 and kept['root_hash'] == rekor.log.root_hash().hex()
    # The signed note, signatures included (ECDSA signs anew each time).
    text, signatures = kept['checkpoint'].split('\n\n')
    assert text + '\n' == rekor.log.checkpoint().split('\n\n')[0] + '\n'
    assert signatures.startswith('\u2014 127.0.0.1 ')


@pytest.mark.quiet_log  # counts sizes or requests: a log only this test writes
def test_an_unchanged_log_needs_no_proof(monitor, rekor):
    add_entries(rekor.log, 2)
    assert monitor.run()[0] == 0
    status, report = monitor.report()
    assert status == 0
    assert trees(report)[rekor.log.tree_id]['status'] == 'unchanged'
    assert rekor.count('GET', PROOF) == 0


@pytest.mark.quiet_log  # counts sizes or requests: a log only this test writes
def test_history_rewritten_under_the_same_key_is_a_split_view(monitor, rekor):
    add_entries(rekor.log, 3)
    assert monitor.run()[0] == 0
    add_entries(rekor.log, 2)
    rekor.log.rewrite_history()

    status, out, err = monitor.run()

    assert status == 1
    assert 'split view' in out and 'does not verify' in out
    assert 'Result: 1 finding (exit 1)' in out
    (logged,) = monitor.logged_findings()
    assert 'split view' in logged and str(rekor.log.tree_id) in logged
    # The tree head seen before stays the one to compare with.
    assert monitor.kept_head(rekor.log, rekor.log.tree_id)['size'] == 3


@pytest.mark.quiet_log  # counts sizes or requests: a log only this test writes
def test_the_same_size_with_another_root_is_a_split_view(monitor, rekor):
    add_entries(rekor.log, 3)
    assert monitor.run()[0] == 0
    kept = monitor.kept_head(rekor.log, rekor.log.tree_id)
    rekor.log.rewrite_history()

    status, report = monitor.report()

    assert status == 1
    (finding,) = report['findings']
    assert finding['kind'] == 'split view'
    assert 'two roots for tree size 3' in finding['message']
    assert trees(report)[rekor.log.tree_id]['status'] == 'inconsistent'
    assert monitor.kept_head(rekor.log, rekor.log.tree_id) == kept


@pytest.fixture
def log_signing_key():
    return ec.generate_private_key(ec.SECP256R1())


def serve_instead(rekor, log):
    """Rekor restarted on the same port with another log behind it."""
    port = rekor.port
    rekor.stop()
    return RekorServer(log, port=port).start()


def test_a_tree_that_shrank_is_a_finding(monitor, tmp_path, log_signing_key):
    first = RekorLog(signing_key=log_signing_key)
    add_entries(first, 5)
    with RekorServer(first).start() as server:
        log_key = tmp_path / 'own.pub'
        log_key.write_bytes(first.public_key_pem)
        monitor.configure(server.url, log_key)
        assert monitor.run()[0] == 0
        # The same log (key and tree) serving only the first 3 entries: it lost some.
        shrunk = RekorLog(tree_id=first.tree_id, signing_key=log_signing_key)
        add_entries(shrunk, 3)
        with serve_instead(server, shrunk):
            status, report = monitor.report()

    assert status == 1
    (finding,) = report['findings']
    assert finding['kind'] == 'tree shrank'
    assert 'signs size 3 now, size 5 was seen before' in finding['message']
    assert 'cannot prove' in finding['message']
    assert trees(report)[first.tree_id]['status'] == 'shrank'
    assert monitor.kept_head(first, first.tree_id)['size'] == 5


def test_a_tree_seen_before_that_the_log_no_longer_lists_is_a_finding(monitor, tmp_path,
                                                                      log_signing_key):
    first = RekorLog(signing_key=log_signing_key)
    add_entries(first, 2)
    with RekorServer(first).start() as server:
        log_key = tmp_path / 'own.pub'
        log_key.write_bytes(first.public_key_pem)
        monitor.configure(server.url, log_key)
        assert monitor.run()[0] == 0
        other = RekorLog(signing_key=log_signing_key)  # same key, another tree
        add_entries(other, 2)
        with serve_instead(server, other):
            status, report = monitor.report()

    assert status == 1
    (finding,) = report['findings']
    assert finding['kind'] == 'tree missing'
    assert 'tree %d, seen before at size 2, is not listed' % first.tree_id in finding['message']


@pytest.mark.quiet_log  # counts entries and requests: a log only this test writes
def test_inactive_shards_are_verified_and_proved_consistent(monitor, rekor):
    add_entries(rekor.log, 2)
    assert monitor.run()[0] == 0
    old_tree = rekor.log.tree_id
    add_entries(rekor.log, 1)
    rekor.log.rotate_shard()
    add_entries(rekor.log, 2, tag='new shard')

    status, report = monitor.report()

    assert status == 0 and report['findings'] == []
    inactive, active = trees(report)[old_tree], trees(report)[rekor.log.tree_id]
    assert (inactive['active'], inactive['size'], inactive['size_before'],
            inactive['status']) == (False, 3, 2, 'grew')
    assert (active['active'], active['size'], active['status']) == (True, 2, 'first seen')
    assert rekor.count('GET', PROOF) == 1
    assert monitor.kept_head(rekor.log, old_tree)['size'] == 3
    assert monitor.kept_head(rekor.log, rekor.log.tree_id)['size'] == 2
    # The next run finds both unchanged.
    status, report = monitor.report()
    assert status == 0 and {t['status'] for t in report['trees']} == {'unchanged'}


def test_a_tree_head_signed_by_another_key_is_a_finding(monitor, rekor, tmp_path):
    add_entries(rekor.log, 2)
    impostor = tmp_path / 'impostor.pub'
    impostor.write_bytes(RekorLog().public_key_pem)
    monitor.configure(rekor.url, impostor)
    status, report = monitor.report()
    assert status == 1
    (finding,) = report['findings']
    assert finding['kind'] == 'bad tree head'
    assert 'no valid signature by the log key' in finding['message']


# --- reading the log by index ---------------------------------------------------------

RETRIEVE = '/api/v1/log/entries/retrieve'


def closed_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.mark.quiet_log  # counts entries and requests: a log only this test writes
def test_the_first_run_starts_at_the_end_and_each_run_reads_what_is_new(monitor, rekor):
    add_entries(rekor.log, 5)
    status, first = monitor.report()
    assert status == 0 and first['scan']['from'] == 5 and first['scan']['counts']['read'] == 0
    assert 'first run' in first['notes'][0]

    add_entries(rekor.log, 3)
    status, second = monitor.report()

    assert status == 0
    assert (second['scan']['from'], second['scan']['to']) == (5, 8)
    assert second['scan']['counts']['read'] == 3
    assert rekor.count('POST', RETRIEVE) == 1
    status, third = monitor.report()
    assert third['scan']['counts']['read'] == 0 and rekor.count('POST', RETRIEVE) == 1


@pytest.mark.quiet_log  # counts sizes or requests: a log only this test writes
def test_start_index_reads_from_there_ten_a_request_several_in_flight(monitor, rekor, monkeypatch):
    monkeypatch.setattr(koji_rekor.progress, 'PROGRESS_INTERVAL', 3600)  # however slow the machine
    add_entries(rekor.log, 93)
    status, out, err = monitor.run('--json', '--start-index', 7)
    report = json.loads(out)
    assert status == 0 and report['scan']['counts']['read'] == 86
    assert rekor.count('POST', RETRIEVE, 200) == 9
    assert 'read 40/86 entries from log index 7\n' in err
    assert 'read 86/86 entries from log index 7\n' in err


class Interrupt(koji_rekor.progress.Progress):
    """Ctrl-C after the given number of progress updates."""

    def __init__(self, after):
        super().__init__(io.StringIO())
        self.left = after

    def update(self, text, done=False):
        self.left -= 1
        if self.left < 0:
            raise KeyboardInterrupt


@pytest.mark.quiet_log  # counts entries and requests: a log only this test writes
def test_a_scan_stopped_by_ctrl_c_resumes_where_it_stopped(monitor, rekor, topdir):
    add_entries(rekor.log, 100)
    settings = koji_rekor.config.load_config(str(monitor.conf))
    with pytest.raises(KeyboardInterrupt):
        koji_rekor.monitor.scan.monitor_log(settings, str(topdir), koji_rekor.monitor.watchlist.Watchlist(), Interrupt(1),
                               start_index=0)
    assert rekor.count('POST', RETRIEVE) == 8   # two windows of four requests

    status, report = monitor.report()

    assert status == 0
    assert (report['scan']['from'], report['scan']['counts']['read']) == (80, 20)


@pytest.mark.quiet_log  # counts sizes or requests: a log only this test writes
def test_shard_rotation_continues_the_global_index(monitor, rekor):
    add_entries(rekor.log, 4)
    assert monitor.run('--start-index', 0)[0] == 0
    add_entries(rekor.log, 2)
    rekor.log.rotate_shard()
    add_entries(rekor.log, 3, tag='new shard')

    status, report = monitor.report()

    assert status == 0 and report['findings'] == []
    assert (report['scan']['from'], report['scan']['to'], report['scan']['counts']['read']) == (
        4, 9, 5)


@pytest.mark.quiet_log  # counts entries and requests: a log only this test writes
def test_an_entry_the_log_does_not_return_is_asked_for_again(monitor, rekor):
    add_entries(rekor.log, 3)
    assert monitor.run()[0] == 0
    add_entries(rekor.log, 12)
    rekor.faults.update({'fail_paths': [RETRIEVE], 'fail_count': 4})   # two batches, two tries

    status, report = monitor.report()

    assert status == 2 and report['scan']['counts']['unchecked'] == 12
    assert 'log indexes 3-12: Rekor answered 503' in report['not_checked'][0]
    assert report['scan']['to'] == 15
    status, report = monitor.report()
    assert status == 0 and report['scan']['counts']['read'] == 12


@pytest.mark.quiet_log  # counts sizes or requests: a log only this test writes
def test_a_first_run_that_cannot_read_the_log_still_starts_at_its_end(monitor, rekor, topdir):
    add_entries(rekor.log, 20)
    rekor.faults.update({'fail_paths': ['/api/v1/log'], 'fail_count': 2})
    assert monitor.run()[0] == 2
    status, report = monitor.report()
    assert status == 0 and report['scan']['from'] == 20 and report['scan']['counts']['read'] == 0


@pytest.mark.quiet_log  # counts entries and requests: a log only this test writes
def test_a_quiet_run_costs_one_request_at_ten_thousand_entries(monitor, rekor):
    for n in range(10000):
        rekor.log.add_entry(b'{"n":%d}' % n)
    assert monitor.run()[0] == 0
    before = len(rekor.requests)
    status, report = monitor.report()
    assert status == 0
    assert rekor.requests[before:] == [('GET', '/api/v1/log', 200)]


# --- entries made with our keys, and what Koji says --------------------------------------

@pytest.fixture(scope='module')
def stray_rpms(tmp_path_factory, keys):
    """RPMs signed with our keys (and the other one) that Koji never saw."""
    out = tmp_path_factory.mktemp('stray')
    unsigned = rpmfactory.build_rpm(str(out), name='stray', version='6.6', release='6')
    return {algo: rpmfactory.sign_rpm(unsigned, str(out / ('stray-%s.rpm' % algo)), keys[algo])
            for algo in KEY_ALGOS + ('other',)}


@pytest.fixture(scope='module')
def reexported(tmp_path_factory, keys):
    """Our RSA key exported again with one more user ID, as a thief might."""
    home = str(tmp_path_factory.mktemp('thief') / 'g')
    shutil.copytree(keys['rsa'].gnupghome, home, ignore=shutil.ignore_patterns('S.*'))
    env = dict(os.environ, GNUPGHOME=home)
    try:
        subprocess.run(['gpg', '--batch', '--quick-add-uid', keys['rsa'].fingerprint,
                        'Release team <release@example.test>'], env=env, check=True,
                       capture_output=True, timeout=PROCESS_TIMEOUT)
        armored = subprocess.run(['gpg', '--batch', '--export', '--armor',
                                  keys['rsa'].fingerprint], env=env, check=True,
                                 capture_output=True, timeout=PROCESS_TIMEOUT).stdout
    finally:
        rpmfactory.stop_gpg_agent(home)
    path = os.path.join(os.path.dirname(home), 'reexported.asc')
    with open(path, 'wb') as fo:
        fo.write(armored)
    return path


def upload_by_hand(rekor, log_key_file, signed_path, key_path):
    """What someone holding our key could do: log a signed RPM themselves."""
    settings = koji_rekor.config.Settings(url=rekor.url, log_public_key=str(log_key_file),
                                  allow_insecure_http=True, timeout=5, retries=1, backoff=0.01)
    return koji_rekor.delivery.upload_signed_rpm(settings, koji_rekor.rpmsig.signed_rpm_from_file(signed_path),
                                       key_path)


def sha256_file(path):
    with open(path, 'rb') as fo:
        return hashlib.sha256(fo.read()).hexdigest()


def signed_by_koji(hub, kojihub, koji_import, signed, **kws):
    imported = koji_import(signed, **kws)
    hub.sign(imported)
    kojihub.add(imported)
    return imported


@pytest.mark.quiet_log  # counts entries and requests: a log only this test writes
def test_entries_koji_signed_are_accounted_for(monitor, configured_hub, kojihub, koji_import,
                                               signed_rpms, rekor):
    assert monitor.run()[0] == 0
    for algo in KEY_ALGOS:
        signed_by_koji(configured_hub, kojihub, koji_import, signed_rpms[(algo, 'header')])

    status, report = monitor.report()

    assert status == 0 and report['findings'] == []
    assert report['scan']['counts'] == {'read': 2, 'ours': 2, 'accounted': 2, 'findings': 0,
                                        'unchecked': 0}
    assert sorted(kojihub.calls) == sorted(['getRPM', 'queryRPMSigs', 'getBuild'] * 2)


def test_a_package_logged_with_a_reexported_copy_of_our_key_is_reported(
        monitor, configured_hub, kojihub, koji_import, signed_rpms, keys, rekor, log_key_file,
        stray_rpms, reexported):
    import requests
    assert monitor.run()[0] == 0
    signed_by_koji(configured_hub, kojihub, koji_import, signed_rpms[('rsa', 'header')])
    stolen = upload_by_hand(rekor, log_key_file, stray_rpms['rsa'], reexported)
    # Rekor's index keys the entry on its re-encoding of the thief's export:
    # searching it with our key file does not find the entry.
    found = requests.post(rekor.url + '/api/v1/index/retrieve', timeout=5, json={
        'publicKey': {'format': 'pgp',
                      'content': base64.b64encode(keys['rsa'].armored).decode()}}).json()
    assert stolen.verified.entry_id not in found and len(found) == 1

    status, report = monitor.report()

    assert status == 1
    (finding,) = report['findings']
    assert (finding['kind'], finding['id']) == ('not in Koji', stolen.verified.uuid)
    assert 'stray-0:6.6-6.noarch sha256:%s' % sha256_file(stray_rpms['rsa']) in finding['message']
    assert 'Koji has no such RPM' in finding['message']
    assert finding['acknowledge'] == ("koji-rekor monitor --ack %s --reason 'TEXT'"
                                      % stolen.verified.uuid)
    assert monitor.logged_findings() == ['rekor_log: finding: ' + finding['message']]


def test_a_planted_receipt_silences_nothing(monitor, kojihub, rekor, log_key_file, keys,
                                           stray_rpms, topdir):
    assert monitor.run()[0] == 0
    stolen = upload_by_hand(rekor, log_key_file, stray_rpms['ed25519'], keys['ed25519'].path)
    planted = (topdir / 'rekor-logs' / 'stray' / '6.6' / '6' / 'noarch'
               / ('stray-6.6-6.noarch.%s.json' % keys['ed25519'].sigkey))
    planted.parent.mkdir(parents=True)
    planted.write_text(json.dumps({'rekor_url': rekor.url, 'nvra': 'stray-6.6-6.noarch',
                                   'sigkey': keys['ed25519'].sigkey,
                                   'sha256': sha256_file(stray_rpms['ed25519']),
                                   'log_entry': {stolen.verified.entry_id: {}}}))

    status, report = monitor.report()

    assert status == 1
    assert [(f['kind'], f['id']) for f in report['findings']] == [('not in Koji',
                                                                  stolen.verified.uuid)]


def test_an_rpm_koji_has_but_never_signed_with_our_key_is_reported(
        monitor, configured_hub, kojihub, koji_import, signed_rpms, keys, rekor, log_key_file):
    assert monitor.run()[0] == 0
    # Koji holds hello-1.0-1 signed with the ed25519 key; someone logs it signed with the RSA one.
    signed_by_koji(configured_hub, kojihub, koji_import, signed_rpms[('ed25519', 'header')])
    upload_by_hand(rekor, log_key_file, signed_rpms[('rsa', 'header')], keys['rsa'].path)

    status, report = monitor.report()

    assert status == 1
    (finding,) = report['findings']
    assert finding['kind'] == 'not signed in Koji'
    assert 'Koji has this RPM but no signature of it by this key' in finding['message']


def test_other_bytes_under_a_signature_koji_has_are_reported(
        monitor, configured_hub, kojihub, koji_import, signed_rpms, keys, rekor, log_key_file):
    assert monitor.run()[0] == 0
    signed_by_koji(configured_hub, kojihub, koji_import, signed_rpms[('rsa', 'header')])
    # the same NVRA and key, other bytes: the v3 signature of the same package
    upload_by_hand(rekor, log_key_file, signed_rpms[('rsa', 'rpmv3')], keys['rsa'].path)

    status, report = monitor.report()

    assert status == 1
    (finding,) = report['findings']
    assert finding['kind'] == 'other bytes'
    assert report['scan']['counts']['accounted'] == 1


@pytest.mark.parametrize('signed_copy', [False, True], ids=['sigcache', 'signed-copy'])
def test_without_the_topdir_koji_s_copy_is_read_from_topurl(
        monitor, configured_hub, kojihub, koji_import, signed_rpms, topdir, tmp_path, rekor,
        signed_copy):
    import functools
    import http.server
    import threading
    served = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            served.append(self.path)

    web = http.server.ThreadingHTTPServer(('127.0.0.1', 0), functools.partial(
        Handler, directory=str(topdir)))
    threading.Thread(target=web.serve_forever, kwargs={'poll_interval': 0.1}, daemon=True).start()
    try:
        elsewhere = tmp_path / 'monitor-host'
        elsewhere.mkdir()
        monitor.topdir = elsewhere   # the topdir is not mounted where the monitor runs
        monitor.reconfigure('topurl = http://127.0.0.1:%d/\n' % web.server_address[1])
        assert monitor.run()[0] == 0
        koji.pathinfo.topdir = str(topdir)   # the command set it to its own; the hub's is this
        imported = koji_import(signed_rpms[('ed25519', 'rpmv3')], write_signed_copy=signed_copy)
        configured_hub.sign(imported)
        kojihub.add(imported)

        status, report = monitor.report()
    finally:
        web.shutdown()
        web.server_close()

    assert status == 0 and report['scan']['counts']['accounted'] == 1, report
    assert any(p.endswith(('/signed/%s/noarch/hello-1.0-1.noarch.rpm' if signed_copy else
                           '/sigcache/%s/noarch/hello-1.0-1.noarch.rpm.sig') % imported.sigkey)
               for p in served), served


@pytest.mark.parametrize('where', ['mounted', 'topurl signed copy', 'topurl sigcache'])
def test_a_thief_s_copy_in_the_topdir_is_not_koji_s(
        monitor, configured_hub, kojihub, koji_import, signed_rpms, keys, topdir, tmp_path,
        rekor, log_key_file, where):
    """Whoever writes the topdir (or the web server behind topurl) puts the
    thief's copy, signed with the stolen key, where Koji's signed copy and
    signature header go: its signature header is not the one Koji recorded
    (sighash), so it accounts for nothing."""
    import functools
    import http.server
    import threading
    assert monitor.run()[0] == 0
    imported = signed_by_koji(configured_hub, kojihub, koji_import,
                              signed_rpms[('rsa', 'header')], write_signed_copy=True)
    thief = signed_rpms[('rsa', 'rpmv3')]
    upload_by_hand(rekor, log_key_file, thief, keys['rsa'].path)
    with open(imported.sighdr_path, 'wb') as fo:
        fo.write(koji.rip_rpm_sighdr(thief))
    if where != 'topurl sigcache':
        shutil.copy(thief, imported.signed_path)
    else:
        os.unlink(imported.signed_path)
    web = None
    if where != 'mounted':
        web = http.server.ThreadingHTTPServer(('127.0.0.1', 0), functools.partial(
            http.server.SimpleHTTPRequestHandler, directory=str(topdir)))
        web.RequestHandlerClass.log_message = lambda *args: None
        threading.Thread(target=web.serve_forever, kwargs={'poll_interval': 0.1},
                         daemon=True).start()
        elsewhere = tmp_path / 'monitor-host'
        elsewhere.mkdir()
        monitor.topdir = elsewhere
        monitor.reconfigure('topurl = http://127.0.0.1:%d/\n' % web.server_address[1])
    try:
        status, report = monitor.report()
    finally:
        if web:
            web.shutdown()
            web.server_close()

    assert status != 0 and report['scan']['counts']['accounted'] == 0, report


def test_a_signature_deleted_in_koji_is_its_own_kind(monitor, configured_hub, kojihub,
                                                    koji_import, signed_rpms):
    assert monitor.run()[0] == 0
    imported = signed_by_koji(configured_hub, kojihub, koji_import, signed_rpms[('rsa', 'header')])
    kojihub.delete_signature(imported)

    status, report = monitor.report()

    assert status == 1
    (finding,) = report['findings']
    assert finding['kind'] == 'signature deleted in Koji'
    assert 'Koji no longer has this signature' in finding['message']


def test_when_koji_cannot_be_asked_the_run_cannot_check_and_asks_next_time(
        monitor, configured_hub, kojihub, koji_import, signed_rpms, rekor, log_key_file, key_dir):
    assert monitor.run()[0] == 0
    imported = koji_import(signed_rpms[('rsa', 'header')])
    configured_hub.sign(imported)
    kojihub.down = True

    status, report = monitor.report()

    assert status == 2 and report['findings'] == []
    assert 'Koji cannot be asked: getRPM at %s failed' % kojihub.url in report['not_checked'][0]
    assert 'left to check next run' in report['not_checked'][1]
    # Koji back, with the signature: the entry is checked then, and accounted for.
    kojihub.down = False
    kojihub.add(imported)
    status, report = monitor.report()
    assert status == 0 and report['scan']['counts']['accounted'] == 1
    # Without a hub at all, never 0 either.
    monitor.configure(rekor.url, log_key_file, key_dir)
    configured_hub.sign(koji_import(signed_rpms[('ed25519', 'header')]))
    assert monitor.run()[0] == 2


def test_a_hub_that_fails_is_asked_once_a_run(monitor, rekor, log_key_file, keys, stray_rpms,
                                              key_dir):
    import threading
    accepted = []
    listener = socket.socket()
    listener.bind(('127.0.0.1', 0))
    listener.listen(8)
    listener.settimeout(0.2)
    stop = threading.Event()

    def drop_everything():   # a hub that hangs up on every request
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            accepted.append(1)
            conn.close()
    thread = threading.Thread(target=drop_everything, daemon=True)
    thread.start()
    try:
        monitor.configure(rekor.url, log_key_file, key_dir,
                          'http://127.0.0.1:%d/kojihub' % listener.getsockname()[1])
        assert monitor.run()[0] == 0
        upload_by_hand(rekor, log_key_file, stray_rpms['rsa'], keys['rsa'].path)
        assert monitor.run()[0] == 2
        one_call = len(accepted)   # one call, with the client's retries
        upload_by_hand(rekor, log_key_file, stray_rpms['ed25519'], keys['ed25519'].path)
        status, report = monitor.report()   # the pending entry and the new one
    finally:
        stop.set()
        thread.join(5)
        listener.close()

    assert status == 2 and report['scan']['counts']['unchecked'] == 2
    assert one_call >= 1 and len(accepted) == 2 * one_call


def test_an_entry_of_another_kind_made_with_our_key_is_a_finding(monitor, rekor, keys):
    assert monitor.run()[0] == 0
    # The local log accepts only rpm entries over its API; an entry of
    # another kind is put in directly, shaped as an alpine entry.
    armored = OpenPgpKey.parse(keys['ed25519'].armored).canonical_armor
    rekor.log.add_entry(canonical_json({
        'apiVersion': '0.0.1', 'kind': 'alpine',
        'spec': {'package': {'hash': {'algorithm': 'sha256', 'value': 'ab' * 32}},
                 'publicKey': {'content': base64.b64encode(armored).decode()}}}))

    status, report = monitor.report()

    assert status == 1
    (finding,) = report['findings']
    assert finding['kind'] == 'other kind'
    assert 'a alpine entry made with our key %s' % keys['ed25519'].sigkey in finding['message']


def test_an_entry_that_does_not_verify_is_a_finding(monitor, rekor):
    add_entries(rekor.log, 1)
    assert monitor.run()[0] == 0
    add_entries(rekor.log, 1)
    rekor.faults.tamper = 'set'

    status, report = monitor.report()

    assert status == 1
    # One per entry read: the busy log's other clients may have added more.
    assert report['findings']
    for finding in report['findings']:
        assert finding['kind'] == 'unverified entry'
        assert 'signed entry timestamp: does not verify' in finding['message']


def test_an_entry_proved_at_another_tree_head_is_checked_against_the_kept_one(
        monitor, rekor, topdir):
    # Between the log's tree head and its entries, the log may change: each
    # entry's own tree head is proved consistent with the one kept too.
    add_entries(rekor.log, 2)
    assert monitor.run()[0] == 0
    add_entries(rekor.log, 1)
    rekor.faults.tamper = 'checkpoint_size'

    status, report = monitor.report()

    assert status == 1
    assert 'unverified entry' in [f['kind'] for f in report['findings']]


class MisplacingLog(RekorLog):
    """A log answering one log index with the entry after it, signed as if
    it were there: the entry really there would never be read."""

    misplaced = None

    def _view(self, entry):
        if entry.global_index != self.misplaced:
            return super()._view(entry)
        view = super()._view(self.entry_at(entry.global_index + 1))
        view.log_index = entry.global_index
        return view


def test_an_entry_answered_for_another_index_is_a_finding(monitor, tmp_path, log_signing_key):
    log = MisplacingLog(signing_key=log_signing_key)
    add_entries(log, 2)
    with RekorServer(log).start() as server:
        log_key = tmp_path / 'own.pub'
        log_key.write_bytes(log.public_key_pem)
        monitor.configure(server.url, log_key)
        assert monitor.run()[0] == 0
        add_entries(log, 3)
        log.misplaced = 3
        status, report = monitor.report()

    assert status == 1
    (finding,) = report['findings']
    assert finding['kind'] == 'unverified entry'
    assert 'log index 3: the log answered with entry' in finding['message']
    assert 'at index 4 of tree %d' % log.tree_id in finding['message']


# --- findings persist until acknowledged ----------------------------------------------

def test_findings_persist_until_acknowledged(monitor, rekor, log_key_file, keys, stray_rpms,
                                             topdir):
    assert monitor.run()[0] == 0
    stolen = upload_by_hand(rekor, log_key_file, stray_rpms['rsa'], keys['rsa'].path)
    assert monitor.report()[0] == 1

    # Nothing new in the log: the finding is still reported (the cron mail was missed).
    status, report = monitor.report()
    assert status == 1
    (finding,) = report['findings']
    assert (finding['id'], finding['new']) == (stolen.verified.uuid, False)

    status, out, err = monitor.run('--ack', stolen.verified.entry_id, '--reason',
                                   'test build by hand')
    assert status == 0 and out == 'acknowledged %s: test build by hand\n' % stolen.verified.uuid
    status, report = monitor.report()
    assert status == 0 and report['findings'] == [] and report['acknowledged'] == 1
    acks = json.loads((monitor.state / 'rekor-logs' / '@state' / 'monitor' /
                       'acknowledged.json').read_text())
    assert acks[stolen.verified.uuid]['reason'] == 'test build by hand'
    assert not (topdir / 'rekor-logs' / '@state' / 'monitor').exists()


@pytest.mark.quiet_log  # exact sizes and indexes
def test_the_hub_s_tree_heads_add_evidence_only(monitor, configured_hub, kojihub, koji_import,
                                                signed_rpms, rekor, topdir):
    """The hub's tree head under the topdir is not the monitor's memory, but
    one the log signed that does not fit what it signs now is a finding."""
    signed_by_koji(configured_hub, kojihub, koji_import, signed_rpms[('rsa', 'header')])
    add_entries(rekor.log, 2)
    rekor.log.rewrite_history()   # leaf 0, which the hub's head covers, is replaced

    status, report = monitor.report('--start-index', 3)

    assert status == 1
    assert [f['kind'] for f in report['findings']] == ['split view']
    assert 'the tree head of size 1 the hub kept' in report['findings'][0]['message']
    # Read, never written, and the monitor's own head is in its state_dir.
    assert monitor.kept_head(rekor.log, rekor.log.tree_id)['size'] == 3


def plant_state(topdir, name, data):
    """What whoever writes the topdir (the hub's user) can leave where older
    versions kept the monitor's state."""
    folder = topdir / 'rekor-logs' / '@state' / 'monitor'
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(json.dumps(data))


def test_a_planted_acknowledgement_silences_nothing(monitor, rekor, log_key_file, keys,
                                                    stray_rpms, topdir):
    assert monitor.run()[0] == 0
    stolen = upload_by_hand(rekor, log_key_file, stray_rpms['rsa'], keys['rsa'].path)
    plant_state(topdir, 'acknowledged.json',
                {stolen.verified.uuid: {'reason': 'nothing to see', 'by': 'root', 'at': 0}})
    status, report = monitor.report()
    assert status == 1
    assert [f['id'] for f in report['findings']] == [stolen.verified.uuid]
    assert report['acknowledged'] == 0


def test_a_planted_scan_position_silences_nothing(monitor, rekor, log_key_file, keys,
                                                  stray_rpms, topdir):
    assert monitor.run()[0] == 0
    stolen = upload_by_hand(rekor, log_key_file, stray_rpms['rsa'], keys['rsa'].path)
    plant_state(topdir, '%s.json' % rekor.log.log_id,
                {'next_index': stolen.verified.log_index + 100, 'pending': [], 'findings': {}})
    status, report = monitor.report()
    assert status == 1
    assert [f['id'] for f in report['findings']] == [stolen.verified.uuid]


def test_acknowledging_needs_a_reason_and_a_uuid(monitor, topdir):
    assert monitor.run('--ack', 'ab' * 32)[0] == 2
    assert monitor.run('--ack', 'not-a-uuid', '--reason', 'x')[0] == 2


def test_upload_prints_the_ack_command_or_records_the_ack(monitor, rekor, log_key_file, keys,
                                                          stray_rpms, topdir, capsys):
    assert monitor.run()[0] == 0
    base = ['upload', '--key', keys['rsa'].path, '--config', str(monitor.conf),
            '--topdir', str(topdir), '--receipt', str(topdir / 'r.json')]
    assert koji_rekor.cli.main(base + [stray_rpms['rsa']]) == 0
    err = capsys.readouterr().err
    uuid = json.loads((topdir / 'r.json').read_text())['log_entry'].popitem()[0][-64:]
    assert ("koji-rekor monitor reports this entry until it is acknowledged: koji-rekor "
            "monitor --ack %s --reason 'TEXT'" % uuid) in err
    assert koji_rekor.cli.main(base + [stray_rpms['ed25519'], '--ack', 'signed by hand for QA',
                                   '--key', keys['ed25519'].path]) == 0
    assert 'acknowledged for koji-rekor monitor: signed by hand for QA' in capsys.readouterr().err

    status, report = monitor.report()
    assert status == 1 and report['acknowledged'] == 1
    assert [f['id'] for f in report['findings']] == [uuid]


# --- telling someone ------------------------------------------------------------------------

def test_the_notify_command_gets_the_json_report_when_there_are_findings(
        monitor, rekor, log_key_file, keys, stray_rpms, tmp_path):
    out = tmp_path / 'notified.json'
    monitor.reconfigure('[monitor]\nnotify_command = %s -c "import sys; open(%r, \'w\')'
                        '.write(sys.stdin.read())"\n' % (sys.executable, str(out)))
    assert monitor.run()[0] == 0
    assert not out.exists()   # quiet: nobody is bothered
    upload_by_hand(rekor, log_key_file, stray_rpms['rsa'], keys['rsa'].path)

    status, report = monitor.report()

    assert status == 1
    told = json.loads(out.read_text())
    assert told['findings'][0]['kind'] == 'not in Koji' and told['exit_status'] == 1


def test_a_failing_notify_command_is_reported(monitor, rekor, log_key_file, keys, stray_rpms):
    monitor.reconfigure('[monitor]\nnotify_command = %s -c "raise SystemExit(3)"\n'
                        % sys.executable)
    assert monitor.run()[0] == 0
    upload_by_hand(rekor, log_key_file, stray_rpms['rsa'], keys['rsa'].path)
    status, report = monitor.report()
    assert status == 1
    assert 'notify_command' in report['not_checked'][0] and 'exit status 3' in \
        report['not_checked'][0]


# --- what identifies a key: fingerprints and subjects --------------------------------------

def write_watchlist(tmp_path, text):
    path = tmp_path / 'watch' / 'watchlist.yaml'
    path.parent.mkdir(exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def spaced(fingerprint):
    """A fingerprint as gpg --fingerprint prints it."""
    return ' '.join(fingerprint[i:i + 4] for i in range(0, 40, 4))


@pytest.mark.parametrize('algo', KEY_ALGOS)
def test_the_fingerprint_is_computed_as_gnupg_does(keys, algo):
    assert koji_rekor.openpgp.openpgp_fingerprint(keys[algo].armored) == keys[algo].fingerprint


def test_subkey_fingerprints_are_ours_too(tmp_path):
    home = str(tmp_path / 'g')
    key = rpmfactory.generate_key(home, 'rsa', 'With subkey')
    env = dict(os.environ, GNUPGHOME=home)
    try:
        subprocess.run(['gpg', '--batch', '--passphrase', '', '--quick-add-key', key.fingerprint,
                        'ed25519', 'sign'], env=env, check=True, capture_output=True,
                       timeout=PROCESS_TIMEOUT)
        listing = subprocess.run(['gpg', '--batch', '--with-colons', '--fingerprint',
                                  '--with-subkey-fingerprints', key.fingerprint], env=env,
                                 check=True, capture_output=True, text=True,
                                 timeout=PROCESS_TIMEOUT).stdout
        armored = subprocess.run(['gpg', '--batch', '--export', '--armor', key.fingerprint],
                                 env=env, check=True, capture_output=True,
                                 timeout=PROCESS_TIMEOUT).stdout
    finally:
        rpmfactory.stop_gpg_agent(home)
    expected = [line.split(':')[9] for line in listing.splitlines() if line.startswith('fpr:')]
    assert len(expected) == 2
    assert koji_rekor.openpgp.openpgp_fingerprints(armored) == expected


def test_a_watched_fingerprint_alone_is_enough(monitor, tmp_path, keys, rekor, log_key_file,
                                               stray_rpms):
    watchlist = write_watchlist(tmp_path, '''\
        monitoredValues:
          fingerprints:
            - "%s"
        ''' % spaced(keys['other'].fingerprint))
    assert monitor.run('--watchlist', watchlist)[0] == 0
    upload_by_hand(rekor, log_key_file, stray_rpms['other'], keys['other'].path)

    status, report = monitor.report('--watchlist', watchlist)

    assert status == 1
    (finding,) = report['findings']
    assert finding['kind'] == 'not in Koji' and keys['other'].sigkey in finding['message']
    assert {'fingerprint': keys['other'].fingerprint, 'from': 'watchlist'} in report['keys']


def test_a_watched_key_file_counts_as_ours(monitor, tmp_path, keys, rekor, log_key_file,
                                           stray_rpms):
    watchlist = write_watchlist(tmp_path, 'monitoredValues:\n  keys: [other.asc]\n')
    (watchlist.parent / 'other.asc').write_bytes(keys['other'].armored)
    assert monitor.run('--watchlist', watchlist)[0] == 0
    upload_by_hand(rekor, log_key_file, stray_rpms['other'], keys['other'].path)
    status, report = monitor.report('--watchlist', watchlist)
    assert status == 1 and report['findings'][0]['kind'] == 'not in Koji'


def test_a_key_claiming_a_watched_subject_is_a_finding(monitor, tmp_path, keys, rekor,
                                                       log_key_file, stray_rpms):
    # "Somebody else <rsa@example.test>": not our key, but our address
    watchlist = write_watchlist(tmp_path, 'monitoredValues:\n  subjects: [RSA@example.test]\n')
    assert monitor.run('--watchlist', watchlist)[0] == 0
    upload_by_hand(rekor, log_key_file, stray_rpms['other'], keys['other'].path)

    status, report = monitor.report('--watchlist', watchlist)

    assert status == 1
    (finding,) = report['findings']
    assert finding['kind'] == 'our identity'
    assert 'not one of ours, whose user ID claims rsa@example.test' in finding['message']
    assert report['subjects'] == ['rsa@example.test']


@pytest.mark.quiet_log  # counts sizes or requests: a log only this test writes
def test_history_looks_back_through_the_index_best_effort(monitor, rekor, log_key_file, keys,
                                                          stray_rpms):
    upload_by_hand(rekor, log_key_file, stray_rpms['rsa'], keys['rsa'].path)
    add_entries(rekor.log, 2)
    assert monitor.run('--start-index', 3)[0] == 0   # starts after it, told to

    status, report = monitor.report('--history')

    assert status == 1
    assert report['history']['counts']['read'] == 1 and 'best-effort' in report['history']['note']
    assert [f['kind'] for f in report['findings']] == ['not in Koji']


@pytest.mark.quiet_log  # exact sizes and indexes
def test_a_monitor_set_up_after_the_theft_finds_it(monitor, rekor, log_key_file, keys,
                                                   stray_rpms):
    """No state yet: the first run looks up the entries made with our keys
    before it, through the index, and checks them."""
    stolen = upload_by_hand(rekor, log_key_file, stray_rpms['rsa'], keys['rsa'].path)
    add_entries(rekor.log, 2)

    status, report = monitor.report()

    assert status == 1
    assert [f['id'] for f in report['findings']] == [stolen.verified.uuid]
    assert report['scan']['from'] == 3 and report['history']['counts']['read'] == 1
    # Done once: the next run reads only what is new, and still reports it.
    status, again = monitor.report()
    assert (status, again['history']) == (1, None)
    assert [f['id'] for f in again['findings']] == [stolen.verified.uuid]


@pytest.mark.parametrize('text, line, cause', [
    ('monitoredValues:\n  fingerprints: [abc\n', 3, 'not valid YAML'),
    ('monitoredValues:\n  fingerprints:\n  - a\n - b\n', 4, 'not valid YAML'),
    ('monitoredValues:\n  keys: []\nstartIndex: 3\n', 3, "unknown key 'startIndex'"),
    ('monitoredValues:\n  certIdentities: []\n', 2, "unknown key 'certIdentities' in "
                                                    'monitoredValues (known: fingerprints, keys, '
                                                    'subjects)'),
    ('monitoredValues:\n  fingerprints:\n    - 0123\n', 3, "fingerprint '0123' is not 40 hex"),
    ('monitoredValues:\n  fingerprints: {a: b}\n', 2, 'fingerprints must be a list'),
    ('monitoredValues:\n  keys:\n    - k1.asc\n    - missing.asc\n', 4, 'no such key file'),
    ('monitoredValues:\n  subjects:\n    - release team\n', 3, 'is not an e-mail address'),
    ('- monitoredValues\n', 1, 'the watchlist must be a mapping'),
])
def test_a_malformed_watchlist_names_the_line(monitor, tmp_path, rekor, text, line, cause):
    watchlist = write_watchlist(tmp_path, text)
    (watchlist.parent / 'k1.asc').write_text('not read before the check\n')

    status, out, err = monitor.run('--watchlist', watchlist)

    assert status == 2 and out == ''
    assert err.startswith('koji-rekor: %s: line %d: ' % (watchlist, line))
    assert cause in err and err.count('\n') == 1
    assert rekor.requests == []


def test_a_fingerprint_of_digits_stays_as_written(tmp_path):
    # Read as YAML values, 0123... would be an octal number and lose digits.
    path = write_watchlist(tmp_path, 'monitoredValues:\n  fingerprints: [%s]\n' % ('0' + '7' * 39))
    assert koji_rekor.monitor.watchlist.read_watchlist(str(path)).fingerprints == ['0' + '7' * 39]


def test_an_empty_watchlist_adds_nothing(monitor, tmp_path, rekor):
    add_entries(rekor.log, 1)
    status, report = monitor.report('--watchlist', write_watchlist(tmp_path, '# nothing\n'))
    assert status == 0 and report['subjects'] == [] and len(report['keys']) == 2


# --- the report and the exit status ------------------------------------------------------

@pytest.mark.quiet_log  # counts entries and requests: a log only this test writes
def test_the_json_report_holds_what_was_checked(monitor, configured_hub, kojihub, koji_import,
                                                signed_rpms, keys, rekor, key_dir):
    signed_by_koji(configured_hub, kojihub, koji_import, signed_rpms[('rsa', 'rpmv3')])

    status, report = monitor.report('--start-index', 0)

    assert status == 0
    assert report['rekor_url'] == rekor.url and report['log_id'] == rekor.log.log_id
    # Where the key came from, as verify and verify-rpm say it.
    assert report['log_key'].startswith('[rekor] log_public_key ')
    assert report['trees'] == [{'tree_id': str(rekor.log.tree_id), 'active': True, 'size': 1,
                                'root_hash': rekor.log.root_hash().hex(), 'size_before': None,
                                'status': 'first seen'}]  # the hub's head is not its memory
    assert {'fingerprint': keys['rsa'].fingerprint,
            'from': '%s.asc' % keys['rsa'].sigkey} in report['keys']
    assert report['scan']['counts']['accounted'] == 1
    assert (report['findings'], report['not_checked'], report['exit_status']) == ([], [], 0)


def test_an_unreachable_log_cannot_be_checked(monitor, log_key_file, key_dir):
    monitor.configure('http://127.0.0.1:%d' % closed_port(), log_key_file, key_dir)

    status, out, err = monitor.run()

    assert status == 2
    assert 'Not checked:\n  - the tree heads of http://127.0.0.1:' in out
    assert 'cannot reach Rekor' in out and 'after 2 attempts' in out
    assert 'the entries added since log index' in out


def test_a_broken_key_in_the_key_dir_cannot_be_checked(monitor, rekor, key_dir):
    add_entries(rekor.log, 1)
    (key_dir / 'broken.asc').write_text('hello\n')
    status, report = monitor.report()
    assert status == 2
    assert report['not_checked'] == ['%s is not an ASCII-armored OpenPGP public key'
                                     % (key_dir / 'broken.asc')]
    assert len(report['keys']) == 2  # the others are still checked


def test_a_monitor_state_that_is_not_ours_stops_the_run(monitor, rekor, topdir):
    assert monitor.run()[0] == 0
    (state,) = (monitor.state / 'rekor-logs' / '@state' / 'monitor').glob('*.json')
    state.write_text('{"next_index": "0"}')
    status, out, err = monitor.run()
    assert status == 2 and 'is not a monitor state file' in err


def test_the_command_logs_findings_and_exits_1(monitor, rekor):
    add_entries(rekor.log, 2)
    assert monitor.run()[0] == 0
    rekor.log.rewrite_history()

    done = subprocess.run([sys.executable, '-m', 'koji_rekor', 'monitor', '--config', monitor.conf,
                           '--topdir', monitor.topdir], cwd=ROOT, capture_output=True, text=True,
                          timeout=PROCESS_TIMEOUT, stdin=subprocess.DEVNULL)

    assert done.returncode == 1
    assert 'ERROR: rekor_log: finding: tree %d: split view' % rekor.log.tree_id in done.stderr
    assert 'FINDINGS:\n  - [split view] tree %d: split view' % rekor.log.tree_id in done.stdout
    assert 'Traceback' not in done.stderr


# --- progress -----------------------------------------------------------------------------

class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_on_a_terminal_is_one_line_rewritten_in_place():
    stream = Terminal()
    progress = koji_rekor.progress.Progress(stream)
    progress.update('checked 10/20 entries for key k')
    progress.clear()
    stream.write('a finding\n')
    progress.update('checked 20/20 entries for key k', done=True)
    progress.clear()  # nothing left to clear
    assert stream.getvalue() == ('\rchecked 10/20 entries for key k\x1b[K\r\x1b[K'
                                 'a finding\n\rchecked 20/20 entries for key k\x1b[K\n')


def test_progress_without_a_terminal_prints_now_and_then_and_the_end(monkeypatch):
    monkeypatch.setattr(koji_rekor.progress, 'PROGRESS_INTERVAL', 3600)  # however slow the machine
    stream = io.StringIO()
    progress = koji_rekor.progress.Progress(stream)
    for n in range(1, 5):
        progress.update('step %d/4' % n, done=n == 4)
    progress.update('other 1/1', done=True)
    assert stream.getvalue() == 'step 1/4\nstep 4/4\nother 1/1\n'


# --- a log that never stands still (issue 19) ---------------------------------------

def test_repeated_runs_on_a_busy_log_find_nothing_and_the_kept_head_advances(monitor, rekor):
    """Other clients append all the time: every run sees a larger tree,
    proves it against the head kept, and finds nothing."""
    assert rekor.busy
    rekor.busy = 400    # a new entry between any two requests of a run
    sizes = []
    for _ in range(3):
        add_entries(rekor.log, 3)
        status, report = monitor.report()
        assert (status, report['findings'], report['not_checked']) == (0, [], [])
        sizes.append(monitor.kept_head(rekor.log, rekor.log.tree_id)['size'])
    assert sizes == sorted(sizes) and sizes[-1] > sizes[0]


def test_an_entry_that_comes_with_a_forked_tree_head_is_not_taken_as_the_logs(monitor, rekor):
    """The log's own tree head is honest; the entries come with heads of a
    fork. Each entry verifies against its head; only proving that head
    consistent with the one held tells."""
    add_entries(rekor.log, 2)
    assert monitor.run()[0] == 0
    add_entries(rekor.log, 4)
    rekor.faults.tamper = 'forked_checkpoint'

    status, report = monitor.report()

    assert status == 1
    assert {f['kind'] for f in report['findings']} == {'split view'}
    assert report['scan']['counts']['accounted'] == 0
    assert any("not taken as the log's" in n for n in report['not_checked'])


def test_an_instance_behind_the_log_makes_a_head_not_checked_never_a_finding(monitor, rekor):
    """Rekor's 400 'the tree size requested(N) was greater than what is
    currently observable(M)', from an instance that has not seen the head
    another one signed, past the retries: not checked (exit 2), no finding,
    and the kept head is not replaced."""
    add_entries(rekor.log, 2)
    assert monitor.run()[0] == 0
    kept = monitor.kept_head(rekor.log, rekor.log.tree_id)
    add_entries(rekor.log, 3)
    rekor.faults.lagging_count = 1000

    status, report = monitor.report()

    assert (status, report['findings']) == (2, [])
    assert trees(report)[rekor.log.tree_id]['status'] == 'not checked'
    assert monitor.kept_head(rekor.log, rekor.log.tree_id) == kept
    rekor.faults.lagging_count = 0
    status, report = monitor.report()
    assert (status, report['findings']) == (0, [])


# --- a private log whose shards have keys of their own ------------------------------

def test_shards_with_keys_of_their_own_each_verify_with_theirs(monitor, rekor, tmp_path,
                                                               log_key_file, key_dir, kojihub):
    """[rekor] log_public_key may hold several keys: each tree head and
    entry is verified with the key its signature or logID names, and each
    tree's head kept under that key. A shard whose key is not configured
    is reported and skipped; the other trees are still read."""
    add_entries(rekor.log, 3)
    assert monitor.run()[0] == 0
    old_tree, old_key = rekor.log.tree_id, rekor.log.public_key_pem
    rekor.log.rotate_shard(signing_key=new_key())
    new_pem = rekor.log.public_key_pem_of()
    assert new_pem != old_key
    add_entries(rekor.log, 4, tag='new shard')

    both = tmp_path / 'both.pem'
    both.write_bytes(old_key + new_pem)
    monitor.configure(rekor.url, both, key_dir, kojihub.url)
    status, report = monitor.report('--start-index', 0)
    assert (status, report['findings'], report['not_checked']) == (0, [], [])
    assert {int(t['tree_id']) for t in report['trees']} == {old_tree, rekor.log.tree_id}
    new_dir = koji_rekor.logkey.log_key_id(koji_rekor.logkey.load_log_key(new_pem)).hex()
    kept = (monitor.state / 'rekor-logs' / '@state' / 'checkpoints' / new_dir
            / ('%d.json' % rekor.log.tree_id))
    assert 4 <= json.loads(kept.read_text())['size'] <= rekor.log.tree_size_of(rekor.log.tree_id)

    only_new = tmp_path / 'new.pem'
    only_new.write_bytes(new_pem)
    monitor.configure(rekor.url, only_new, key_dir, kojihub.url)
    status, report = monitor.report('--start-index', 0)
    assert (status, report['findings']) == (2, [])
    assert any(n.startswith('tree %d: ' % old_tree) and 'its entries are skipped' in n
               for n in report['not_checked'])
    assert trees(report)[rekor.log.tree_id]['status'] in ('first seen', 'grew', 'unchanged')
    assert report['scan']['counts']['read'] >= 4


def new_key():
    return ec.generate_private_key(ec.SECP256R1())


def monitor_scan_state(monitor):
    (path,) = [p for p in (monitor.state / 'rekor-logs' / '@state' / 'monitor').glob('*.json')
               if not p.name.startswith(('acknowledged', 'v2-'))]
    return path


@pytest.mark.quiet_log  # exact sizes and indexes
def test_the_first_run_history_search_shows_progress_and_resumes(monitor, rekor, log_key_file,
                                                                  keys, stray_rpms):
    """The first run's history search says how far it got on stderr and
    keeps its position; a run after an interrupted search goes on after
    the last entry it checked instead of starting over."""
    # (entry ID as the index lists it, the finding's ID), in the search's order
    stolen = sorted((v.entry_id.lower(), v.uuid) for v in (
        upload_by_hand(rekor, log_key_file, stray_rpms[algo], keys[algo].path).verified
        for algo in ('rsa', 'ed25519')))
    add_entries(rekor.log, 2)
    status, out, err = monitor.run()
    assert status == 1
    assert 'history: 2/2 entries the index lists for our keys' in err, err
    # An interrupted search (the position written as it goes, the search
    # still pending): the next run checks only what comes after it.
    path = monitor_scan_state(monitor)
    state = json.loads(path.read_text())
    assert 'history' not in state and 'history_after' not in state   # done: forgotten
    state.update(history='pending', history_after=stolen[0][0], findings={})
    path.write_text(json.dumps(state))
    retrieved = rekor.count('POST', '/api/v1/log/entries/retrieve')
    status, report = monitor.report()
    assert report['history']['listed'] == 2 and report['history']['resumed_after'] == 1
    assert report['history']['counts']['read'] == 1
    assert [f['id'] for f in report['findings']] == [stolen[1][1]]
    assert rekor.count('POST', '/api/v1/log/entries/retrieve') == retrieved + 1
    assert 'history_after' not in json.loads(path.read_text())


@pytest.mark.quiet_log
def test_the_history_position_never_passes_an_entry_not_checked(monitor, rekor, log_key_file,
                                                                keys, stray_rpms, monkeypatch):
    """One entry per request: the first request fails, the second one is
    read; the position stays before the first, so the next run asks again."""
    import koji_rekor.monitor.scan
    monkeypatch.setattr(koji_rekor.monitor.scan, 'RETRIEVE_BATCH', 1)
    for algo in ('rsa', 'ed25519'):
        upload_by_hand(rekor, log_key_file, stray_rpms[algo], keys[algo].path)
    add_entries(rekor.log, 2)
    rekor.faults.fail_paths = ['/api/v1/log/entries/retrieve']
    rekor.faults.fail_count = 2       # the first request and its one retry
    status, report = monitor.report()
    assert status == 1 and report['history']['counts']['read'] == 1, (
        report['not_checked'], rekor.requests[-8:])
    assert any('--history: entries' in u for u in report['not_checked'])
    state = json.loads(monitor_scan_state(monitor).read_text())
    assert state['history'] == 'pending' and 'history_after' not in state
    status, report = monitor.report()
    assert report['history']['counts']['read'] == 2 and report['not_checked'] == []
