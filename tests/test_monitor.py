"""koji-rekor monitor against a local Rekor-compatible log on 127.0.0.1: each
tree of the log proved consistent run after run with the tree heads the
plugin and earlier runs kept; split views, shrunk and vanished trees found;
every entry made with our signing keys verified and checked against the
receipts; the watchlist; the report and the exit status."""

import base64
import hashlib
import io
import json
import socket
import subprocess
import sys
import textwrap

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

import koji_rekor
import rekor_log
import rpmfactory
from conftest import HUB_USER, KEY_ALGOS, ROOT
from rekor_server import OpenPgpKey, RekorLog, RekorServer, canonical_json

PROOF = '/api/v1/log/proof'
PROCESS_TIMEOUT = 120


class Monitor:
    """koji-rekor monitor in this process, with a configuration of the
    test's own: (exit status, stdout, stderr)."""

    def __init__(self, tmp_path, topdir, capsys, caplog):
        self.conf = tmp_path / 'monitor.conf'
        self.topdir = topdir
        self.capsys = capsys
        self.caplog = caplog

    def configure(self, url, log_key_file, key_dir=None):
        text = ('[rekor]\nurl = %s\nallow_insecure_http = true\nlog_public_key = %s\n'
                'timeout = 5\nretries = 1\nbackoff = 0.01\n' % (url, log_key_file))
        if key_dir:
            text += '[signing]\npublic_key_dir = %s\n' % key_dir
        text += '[upload]\nhub_user = %s\n' % HUB_USER
        self.conf.write_text(text)

    def run(self, *args):
        self.caplog.clear()
        status = koji_rekor.main(['monitor', '--config', str(self.conf),
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
        """The tree head kept under @state, as the plugin keeps it."""
        path = (self.topdir / 'rekor-logs' / '@state' / 'checkpoints' / log.log_id
                / ('%d.json' % tree_id))
        return json.loads(path.read_text())


@pytest.fixture
def monitor(tmp_path, topdir, rekor, log_key_file, key_dir, capsys, plugin_log):
    made = Monitor(tmp_path, topdir, capsys, plugin_log)
    made.configure(rekor.url, log_key_file, key_dir)
    return made


def add_entries(log, count, tag='entry'):
    start = log.tree_size
    for n in range(start, start + count):
        log.add_entry(b'%s %d' % (tag.encode(), n))


def trees(report):
    return {int(tree['tree_id']): tree for tree in report['trees']}


# --- the log's trees ---------------------------------------------------------------

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


def test_an_unchanged_log_needs_no_proof(monitor, rekor):
    add_entries(rekor.log, 2)
    assert monitor.run()[0] == 0
    status, report = monitor.report()
    assert status == 0
    assert trees(report)[rekor.log.tree_id]['status'] == 'unchanged'
    assert rekor.count('GET', PROOF) == 0


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


# --- entries made with our keys --------------------------------------------------------

@pytest.fixture(scope='module')
def stray_rpms(tmp_path_factory, keys):
    """RPMs signed with our keys (and the other one) that Koji never saw."""
    out = tmp_path_factory.mktemp('stray')
    unsigned = rpmfactory.build_rpm(str(out), name='stray', version='6.6', release='6')
    return {algo: rpmfactory.sign_rpm(unsigned, str(out / ('stray-%s.rpm' % algo)), keys[algo])
            for algo in KEY_ALGOS + ('other',)}


def upload_without_receipt(rekor, log_key_file, signed_path, key):
    """What someone holding our key could do: log a signed RPM themselves."""
    settings = rekor_log.Settings(url=rekor.url, log_public_key=str(log_key_file),
                                  allow_insecure_http=True, timeout=5, retries=1, backoff=0.01)
    return rekor_log.upload_signed_rpm(settings, rekor_log.signed_rpm_from_file(signed_path),
                                       key.path)


def sha256_file(path):
    with open(path, 'rb') as fo:
        return hashlib.sha256(fo.read()).hexdigest()


def counts_by_key(report):
    return {key['key']: key['counts'] for key in report['keys']}


def test_entries_of_our_keys_with_receipts_are_quiet(monitor, configured_hub, koji_import,
                                                     signed_rpms, keys, rekor):
    for algo in KEY_ALGOS:
        configured_hub.sign(koji_import(signed_rpms[(algo, 'header')]))

    status, out, err = monitor.run('--json')

    report = json.loads(out)
    assert status == 0 and report['findings'] == [] and report['receipts'] == 2
    for algo in KEY_ALGOS:
        counts = counts_by_key(report)[keys[algo].sigkey]
        assert (counts['entries'], counts['rpm_with_receipt']) == (1, 1)
        assert 'checked 1/1 entries for key %s' % keys[algo].sigkey in err
    # The monitor compares with the tree head the plugin kept.
    assert trees(report)[rekor.log.tree_id]['size_before'] == 2
    assert monitor.logged_findings() == []


def test_an_rpm_logged_with_our_key_without_a_receipt_is_a_finding(
        monitor, configured_hub, koji_import, signed_rpms, keys, rekor, log_key_file,
        stray_rpms):
    configured_hub.sign(koji_import(signed_rpms[('rsa', 'header')]))
    upload_without_receipt(rekor, log_key_file, stray_rpms['rsa'], keys['rsa'])

    status, report = monitor.report()

    assert status == 1
    (finding,) = report['findings']
    assert finding['kind'] == 'rpm without receipt'
    message = finding['message']
    assert message.startswith('key %s: rpm entry ' % keys['rsa'].sigkey)
    assert 'stray-6.6-6.noarch sha256:%s' % sha256_file(stray_rpms['rsa']) in message
    assert 'that this Koji did not log' in message
    counts = counts_by_key(report)[keys['rsa'].sigkey]
    assert (counts['entries'], counts['rpm_with_receipt'], counts['rpm_without_receipt']) == (
        2, 1, 1)
    assert counts_by_key(report)[keys['ed25519'].sigkey]['entries'] == 0
    assert monitor.logged_findings() == ['rekor_log: finding: ' + message]


def test_an_entry_of_another_kind_made_with_our_key_is_a_finding(monitor, rekor, keys):
    # The local log accepts only rpm entries over its API; an entry of
    # another kind is put in directly, shaped as an alpine entry
    # (spec.publicKey, spec.package.hash), which its index files under the key.
    armored = OpenPgpKey.parse(keys['ed25519'].armored).canonical_armor
    rekor.log.add_entry(canonical_json({
        'apiVersion': '0.0.1', 'kind': 'alpine',
        'spec': {'package': {'hash': {'algorithm': 'sha256', 'value': 'ab' * 32}},
                 'publicKey': {'content': base64.b64encode(armored).decode()}}}))

    status, report = monitor.report()

    assert status == 1
    (finding,) = report['findings']
    assert finding['kind'] == 'other kind'
    assert finding['message'].startswith('key %s: alpine entry ' % keys['ed25519'].sigkey)
    assert counts_by_key(report)[keys['ed25519'].sigkey]['other_kind'] == 1


def test_an_entry_of_our_key_that_does_not_verify_is_a_finding(monitor, configured_hub,
                                                               koji_import, signed_rpms, keys,
                                                               rekor):
    configured_hub.sign(koji_import(signed_rpms[('rsa', 'header')]))
    rekor.faults.tamper = 'set'

    status, report = monitor.report()

    assert status == 1
    (finding,) = report['findings']
    assert finding['kind'] == 'unverified entry'
    assert 'signed entry timestamp: does not verify' in finding['message']
    assert counts_by_key(report)[keys['rsa'].sigkey]['unverified'] == 1


def test_an_entry_proved_at_another_tree_head_is_checked_against_the_kept_one(
        monitor, configured_hub, koji_import, signed_rpms, keys, rekor, topdir):
    # Between the log's tree head and its entries, the log may change: each
    # entry's own tree head is proved consistent with the one kept too.
    add_entries(rekor.log, 1)
    configured_hub.sign(koji_import(signed_rpms[('rsa', 'header')]))  # keeps size 2
    rekor.log.rewrite_history()  # leaf 0, not our entry: same size, another root
    settings = rekor_log.load_config(str(monitor.conf))
    client = rekor_log.RekorClient(settings)
    log_key = rekor_log.load_log_key(rekor.log.public_key_pem)
    report = koji_rekor.Report(settings.url, str(topdir), koji_rekor.Progress())
    view = koji_rekor.LogView(client, settings, str(topdir / 'rekor-logs' / '@state'), log_key,
                             report)
    try:
        (key,) = [k for k in koji_rekor.watched_keys(settings, koji_rekor.Watchlist(), report)
                  if k.name == keys['rsa'].sigkey]
        koji_rekor.check_key_entries(view, key, koji_rekor.receipt_hashes(str(topdir), report))
    finally:
        client.close()

    (finding,) = report.findings
    assert finding['kind'] == 'split view'
    assert 'two roots for tree size 2' in finding['message']
    assert report.keys[0]['counts']['rpm_with_receipt'] == 1


def test_entries_are_fetched_at_most_ten_at_a_time(monitor, rekor, keys, monkeypatch):
    monkeypatch.setattr(koji_rekor, 'PROGRESS_INTERVAL', 3600)  # however slow the machine
    armored = OpenPgpKey.parse(keys['rsa'].armored).canonical_armor
    for n in range(23):
        rekor.log.add_entry(canonical_json({
            'apiVersion': '0.0.1', 'kind': 'alpine',
            'spec': {'package': {'hash': {'algorithm': 'sha256',
                                          'value': hashlib.sha256(b'%d' % n).hexdigest()}},
                     'publicKey': {'content': base64.b64encode(armored).decode()}}}))

    status, out, err = monitor.run('--json')

    assert status == 1
    counts = counts_by_key(json.loads(out))[keys['rsa'].sigkey]
    assert (counts['entries'], counts['other_kind']) == (23, 23)
    assert rekor.count('POST', '/api/v1/log/entries/retrieve', 200) == 3
    assert rekor.count('POST', '/api/v1/log/entries/retrieve') == 3
    # Without a terminal: the first batch and the end, not every batch.
    assert 'checked 10/23 entries for key %s\n' % keys['rsa'].sigkey in err
    assert 'checked 23/23 entries for key %s\n' % keys['rsa'].sigkey in err
    assert 'checked 20/23' not in err


# --- the watchlist ------------------------------------------------------------------------

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
    assert rekor_log.openpgp_fingerprint(keys[algo].armored) == keys[algo].fingerprint


def test_a_watched_fingerprint_is_matched_to_our_key(monitor, tmp_path, keys, rekor):
    add_entries(rekor.log, 1)
    watchlist = write_watchlist(tmp_path, '''\
        monitoredValues:
          fingerprints:
            - "%s"
            - 0x%s
        ''' % (spaced(keys['rsa'].fingerprint), keys['ed25519'].fingerprint.lower()))

    status, report = monitor.report('--watchlist', watchlist)

    assert status == 0
    assert [(w['fingerprint'], w['key']) for w in report['watchlist']] == [
        (keys['rsa'].fingerprint, keys['rsa'].sigkey),
        (keys['ed25519'].fingerprint, keys['ed25519'].sigkey)]
    assert report['not_checked'] == []


def test_a_watched_key_file_is_searched_too(monitor, tmp_path, keys, rekor, log_key_file,
                                            stray_rpms):
    watchlist = write_watchlist(tmp_path, '''\
        monitoredValues:
          keys: [other.asc]
          fingerprints: [%s]
        ''' % keys['other'].fingerprint)
    (watchlist.parent / 'other.asc').write_bytes(keys['other'].armored)
    upload_without_receipt(rekor, log_key_file, stray_rpms['other'], keys['other'])

    status, report = monitor.report('--watchlist', watchlist)

    assert status == 1
    (finding,) = report['findings']
    assert finding['kind'] == 'rpm without receipt'
    assert finding['message'].startswith('key %s: ' % keys['other'].sigkey)
    assert counts_by_key(report)[keys['other'].sigkey]['entries'] == 1
    assert report['watchlist'][0]['files'] == [str(watchlist.parent / 'other.asc')]


def test_a_fingerprint_without_a_key_cannot_be_checked(monitor, tmp_path, keys, rekor):
    add_entries(rekor.log, 1)
    watchlist = write_watchlist(tmp_path, '''\
        monitoredValues:
          fingerprints:
            - %s
        ''' % keys['other'].fingerprint)

    status, out, err = monitor.run('--watchlist', watchlist)

    assert status == 2
    assert 'Watchlist:\n  fingerprint %s: NOT CHECKABLE' % keys['other'].fingerprint in out
    assert ('Not checked:\n  - fingerprint %s: no public key for it'
            % keys['other'].fingerprint) in out
    assert 'Result: nothing found, but not everything could be checked (exit 2)' in out


def test_findings_outrank_what_could_not_be_checked(monitor, tmp_path, keys, rekor):
    add_entries(rekor.log, 2)
    assert monitor.run()[0] == 0
    rekor.log.rewrite_history()
    watchlist = write_watchlist(tmp_path, 'monitoredValues: {fingerprints: [%s]}\n'
                                % keys['other'].fingerprint)
    status, report = monitor.report('--watchlist', watchlist)
    assert status == 1
    assert [f['kind'] for f in report['findings']] == ['split view']
    assert len(report['not_checked']) == 1


@pytest.mark.parametrize('text, line, cause', [
    ('monitoredValues:\n  fingerprints: [abc\n', 3, 'not valid YAML'),
    ('monitoredValues:\n  fingerprints:\n  - a\n - b\n', 4, 'not valid YAML'),
    ('monitoredValues:\n  keys: []\nstartIndex: 3\n', 3, "unknown key 'startIndex'"),
    ('monitoredValues:\n  certIdentities: []\n', 2, "unknown key 'certIdentities' in "
                                                    'monitoredValues (known: fingerprints, keys)'),
    ('monitoredValues:\n  fingerprints:\n    - 0123\n', 3, "fingerprint '0123' is not 40 hex"),
    ('monitoredValues:\n  fingerprints: {a: b}\n', 2, 'fingerprints must be a list'),
    ('monitoredValues:\n  keys:\n    - k1.asc\n    - missing.asc\n', 4, 'no such key file'),
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
    assert koji_rekor.read_watchlist(str(path)).fingerprints == ['0' + '7' * 39]


def test_an_empty_watchlist_adds_nothing(monitor, tmp_path, rekor):
    add_entries(rekor.log, 1)
    status, report = monitor.report('--watchlist', write_watchlist(tmp_path, '# nothing\n'))
    assert status == 0 and report['watchlist'] == []


# --- the report and the exit status ------------------------------------------------------

def test_the_json_report_holds_what_was_checked(monitor, configured_hub, koji_import,
                                                signed_rpms, keys, rekor, key_dir):
    configured_hub.sign(koji_import(signed_rpms[('rsa', 'rpmv3')]))

    status, report = monitor.report()

    assert status == 0
    assert report['rekor_url'] == rekor.url and report['log_id'] == rekor.log.log_id
    assert report['trees'] == [{'tree_id': str(rekor.log.tree_id), 'active': True, 'size': 1,
                                'root_hash': rekor.log.root_hash().hex(), 'size_before': 1,
                                'status': 'unchanged'}]
    by_key = {key['key']: key for key in report['keys']}
    assert by_key[keys['rsa'].sigkey]['fingerprint'] == keys['rsa'].fingerprint
    assert by_key[keys['rsa'].sigkey]['files'] == [str(key_dir / ('%s.asc' % keys['rsa'].sigkey))]
    assert (report['findings'], report['not_checked'], report['exit_status']) == ([], [], 0)


def closed_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def test_an_unreachable_log_cannot_be_checked(monitor, log_key_file, key_dir):
    monitor.configure('http://127.0.0.1:%d' % closed_port(), log_key_file, key_dir)

    status, out, err = monitor.run()

    assert status == 2
    assert 'Not checked:\n  - the tree heads of http://127.0.0.1:' in out
    assert 'cannot reach Rekor' in out and 'after 2 attempts' in out
    assert 'the entries of our 2 keys, since the log does not answer' in out


def test_a_broken_key_in_the_key_dir_cannot_be_checked(monitor, rekor, key_dir):
    add_entries(rekor.log, 1)
    (key_dir / 'broken.asc').write_text('hello\n')
    status, report = monitor.report()
    assert status == 2
    assert report['not_checked'] == ['%s is not an ASCII-armored OpenPGP public key'
                                     % (key_dir / 'broken.asc')]
    assert len(report['keys']) == 2  # the others are still checked


def test_the_command_logs_findings_and_exits_1(monitor, rekor):
    add_entries(rekor.log, 2)
    assert monitor.run()[0] == 0
    rekor.log.rewrite_history()

    done = subprocess.run([sys.executable, 'koji_rekor.py', 'monitor', '--config', monitor.conf,
                           '--topdir', monitor.topdir], cwd=ROOT, capture_output=True, text=True,
                          timeout=PROCESS_TIMEOUT, stdin=subprocess.DEVNULL)

    assert done.returncode == 1
    assert 'ERROR: rekor_log: finding: tree %d: split view' % rekor.log.tree_id in done.stderr
    assert 'FINDINGS:\n  - tree %d: split view' % rekor.log.tree_id in done.stdout
    assert 'Traceback' not in done.stderr


# --- progress -----------------------------------------------------------------------------

class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_on_a_terminal_is_one_line_rewritten_in_place():
    stream = Terminal()
    progress = koji_rekor.Progress(stream)
    progress.update('checked 10/20 entries for key k')
    progress.clear()
    stream.write('a finding\n')
    progress.update('checked 20/20 entries for key k', done=True)
    progress.clear()  # nothing left to clear
    assert stream.getvalue() == ('\rchecked 10/20 entries for key k\x1b[K\r\x1b[K'
                                 'a finding\n\rchecked 20/20 entries for key k\x1b[K\n')


def test_progress_without_a_terminal_prints_now_and_then_and_the_end(monkeypatch):
    monkeypatch.setattr(koji_rekor, 'PROGRESS_INTERVAL', 3600)  # however slow the machine
    stream = io.StringIO()
    progress = koji_rekor.Progress(stream)
    for n in range(1, 5):
        progress.update('step %d/4' % n, done=n == 4)
    progress.update('other 1/1', done=True)
    assert stream.getvalue() == 'step 1/4\nstep 4/4\nother 1/1\n'

