"""A hostile or broken topdir: the topdir is shared storage that others write
too, so every record, receipt, pin and saved tree head read from it is input.
Planted records, links, keys and checkpoints: nothing is written outside
rekor-logs/, nothing is lost, and each fault is one line of cause."""

import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile

import koji
import pytest

import koji_rekor.cli
import koji_rekor.outbox
import koji_rekor.state

from tests.support.common import HUB_USER, ROOT
from tests.support.rekor_server import RekorLog

ENTRIES = '/api/v1/log/entries'


class Site:
    """A hub and its worker sharing a topdir, with a directory beside the
    topdir that nothing may ever write to."""

    def __init__(self, hub, rekor, topdir, key_dir, log_key_file, koji_import, signed_rpms,
                 tmp_path, capsys, caplog):
        self.hub, self.rekor, self.topdir = hub, rekor, topdir
        self.key_dir, self.log_key_file = key_dir, log_key_file
        self.koji_import, self.signed_rpms = koji_import, signed_rpms
        self.capsys, self.caplog = capsys, caplog
        self.outside = tmp_path / 'outside'
        self.outside.mkdir()
        self.logs = topdir / 'rekor-logs'
        self.outbox = self.logs / '@outbox'
        self.configure()

    def configure(self, rekor_extra='', **upload):
        upload.setdefault('hub_user', HUB_USER)
        text = ('[rekor]\nurl = %s\nallow_insecure_http = true\ntimeout = 5\nretries = 0\n'
                'backoff = 0.05\n%s[signing]\npublic_key_dir = %s\n[upload]\n'
                % (self.rekor.url, rekor_extra, self.key_dir))
        text += ''.join('%s = %s\n' % (k, str(v).lower() if isinstance(v, bool) else v)
                        for k, v in upload.items())
        if 'log_public_key' not in rekor_extra and 'trust_on_first_use' not in rekor_extra:
            text = text.replace('[signing]', 'log_public_key = %s\n[signing]'
                                % self.log_key_file)
        self.hub.configure(text)

    def imported(self, algo='rsa'):
        return self.koji_import(self.signed_rpms[(algo, 'header')])

    def queue(self, *imports):
        """Queue signatures for the worker (queue_only), as the hub does."""
        self.configure(queue_only=True)
        self.hub.sign(*imports)
        self.configure()

    def record_path(self, imported):
        return self.outbox / ('hello-1.0-1.noarch.%s.json' % imported.sigkey)

    def receipt_path(self, imported):
        return self.logs / 'hello' / '1.0' / '1' / 'noarch' / (
            'hello-1.0-1.noarch.%s.json' % imported.sigkey)

    def retry(self, *args):
        self.caplog.clear()
        status = koji_rekor.cli.main(['retry', '--config', str(self.hub.conf_path),
                                  '--topdir', str(self.topdir), '--now'] + list(args))
        out, err = self.capsys.readouterr()
        assert 'Traceback' not in err
        return status, out, err

    def errors(self):
        return [r.getMessage() for r in self.caplog.records if r.levelname == 'ERROR']

    def posts(self):
        return self.rekor.count('POST', ENTRIES)

    def assert_nothing_outside(self):
        assert sorted(os.listdir(self.outside)) == []
        # Nothing anywhere in the tmp tree but the topdir and the test's own files.
        for path in self.topdir.parent.rglob('*'):
            if path.is_symlink():
                continue
            assert self.logs in path.parents or path == self.logs or \
                self.logs not in path.parents, path


@pytest.fixture
def site(hub, rekor, topdir, key_dir, log_key_file, koji_import, signed_rpms, tmp_path, capsys,
         plugin_log):
    return Site(hub, rekor, topdir, key_dir, log_key_file, koji_import, signed_rpms, tmp_path,
                capsys, plugin_log)


def plant(path, value):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(value if isinstance(value, str) else json.dumps(value))


# --- planted records ---------------------------------------------------------

def valid_record(site, imported):
    return koji_rekor.outbox.new_record(imported.build, imported.rpm, imported.sigkey, imported.sighash)


@pytest.mark.parametrize('case', ['sigkey', 'rpm-name', 'rpm-arch', 'build-volume'])
def test_a_record_naming_a_path_outside_is_set_aside_without_writing_or_sending(site, case):
    imported = site.imported()
    record = valid_record(site, imported)
    target = site.outside / 'policy'
    if case == 'sigkey':
        record['sigkey'] = '../../../../outside/policy'
    elif case == 'rpm-name':
        record['rpm']['name'] = '../../../../../outside/policy'
    elif case == 'rpm-arch':
        record['rpm']['arch'] = '../../../../outside'
    else:
        record['build']['volume_name'] = '../../../outside'
    name = 'planted.json'
    plant(site.outbox / name, record)
    status, out, err = site.retry()
    assert status == 1
    assert site.posts() == 0
    assert not target.exists() and not (site.outside / 'policy.json').exists()
    site.assert_nothing_outside()
    # Set aside as it was, with the reason beside it; the output names it.
    assert json.loads((site.outbox / 'rejected' / name).read_text()) == record
    reason = (site.outbox / 'rejected' / (name + '.reason')).read_text()
    assert reason.count('\n') == 1 and 'not a valid' in reason or 'is not' in reason
    assert any(name in e and 'set aside in rejected/' in e for e in site.errors())
    assert out == 'rejected 1; 0 left in the outbox; 1 set aside in %s\n' % (
        site.outbox / 'rejected')


BAD_RECORDS = {
    'a-list': '[]',
    'not-json': '{"nvra": ',
    'next-attempt-soon': lambda r: r.update(next_attempt='soon'),
    'attempts-text': lambda r: r.update(attempts='3'),
    'nested': '[' * 100000 + ']' * 100000,
    'huge-time': lambda r: r.update(next_attempt=1e300),
    'nvra-of-another': lambda r: r.update(nvra='other-1-1.noarch'),
    'receipt-a-list': lambda r: r.update(receipt=[]),
    'build-not-object': lambda r: r.update(build=None),
    'uppercase-sigkey': None,
}


@pytest.mark.parametrize('case', sorted(BAD_RECORDS))
def test_a_malformed_record_is_set_aside_and_the_worker_goes_on(site, case):
    good, other = site.imported('rsa'), site.imported('ed25519')
    site.queue(good)
    bad = BAD_RECORDS[case]
    name = 'hello-1.0-1.noarch.%s.json' % other.sigkey
    if case == 'uppercase-sigkey':
        record = valid_record(site, other)
        # Upper case for sure: a key ID of digits alone has no case.
        record['sigkey'] = other.sigkey[:-2].upper() + 'AB'
        name = 'hello-1.0-1.noarch.%s.json' % record['sigkey']
        plant(site.outbox / name, record)
    elif callable(bad):
        record = valid_record(site, other)
        bad(record)
        plant(site.outbox / name, record)
    else:
        plant(site.outbox / name, bad)
    # Sorted after the bad one, the good record is still logged.
    status, out, err = site.retry()
    assert status == 1
    assert site.receipt_path(good).exists()
    assert (site.outbox / 'rejected' / name).exists()
    assert (site.outbox / 'rejected' / (name + '.reason')).read_text().count('\n') == 1
    assert out.startswith('logged 1, rejected 1; 0 left in the outbox')
    assert site.posts() == 1


def test_retry_watch_survives_a_malformed_record(site, tmp_path):
    """The worker service: a bad record no longer crash-loops it."""
    good = site.imported('rsa')
    site.queue(good)
    plant(site.outbox / 'aaa.json', '[]')
    proc = subprocess.Popen(
        [sys.executable, '-m', 'koji_rekor', 'retry', '--watch', '--config',
         str(site.hub.conf_path), '--topdir', str(site.topdir)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # Bounded: the first pass logs the good record.
        deadline = 30
        import time
        end = time.monotonic() + deadline
        while not site.receipt_path(good).exists() and time.monotonic() < end \
                and proc.poll() is None:
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()
        assert site.receipt_path(good).exists()
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert 'Traceback' not in err
    assert (site.outbox / 'rejected' / 'aaa.json').exists()


def test_a_receipt_kept_in_a_record_is_not_written_as_it_stands(site):
    """A planted record carrying a receipt for another package's entry (real,
    signed by the log) does not become that package's receipt."""
    rsa, ed = site.imported('rsa'), site.imported('ed25519')
    site.hub.sign(rsa)  # a real entry and receipt for the RSA signature
    stolen = json.loads(site.receipt_path(rsa).read_text())
    record = valid_record(site, ed)
    record['receipt'] = dict(stolen, sigkey=ed.sigkey)
    plant(site.record_path(ed), record)
    status, out, err = site.retry()
    assert status == 1
    assert not site.receipt_path(ed).exists()
    kept = json.loads(site.record_path(ed).read_text())
    assert kept['attempts'] == 1
    assert kept['last_error'].startswith('body records')
    assert site.posts() == 1  # nothing sent for it


def test_a_receipt_kept_in_a_record_is_rebuilt_once_verified(site, koji_hub_unused=None):
    rsa = site.imported('rsa')
    site.configure(enforce=True)
    site.hub.sign(rsa, commit=False)  # uploaded under enforce; the request then died
    uncommitted = site.outbox / ('hello-1.0-1.noarch.%s.uncommitted' % rsa.sigkey)
    record = json.loads(uncommitted.read_text())
    record['receipt']['rekor_url'] = 'https://attacker.example'
    os.rename(uncommitted, site.record_path(rsa))
    plant(site.record_path(rsa), record)
    site.configure()
    status, out, err = site.retry()
    assert status == 0
    receipt = json.loads(site.receipt_path(rsa).read_text())
    assert receipt['rekor_url'] == site.rekor.url  # rebuilt, not copied
    assert site.posts() == 1  # verified again, not uploaded again


# --- planted links -------------------------------------------------------------

def test_a_link_in_place_of_a_receipt_directory_is_not_followed(site):
    rsa = site.imported('rsa')
    site.queue(rsa)
    (site.logs / 'hello').symlink_to(site.outside)
    status, out, err = site.retry()
    assert status == 1
    site.assert_nothing_outside()
    kept = json.loads(site.record_path(rsa).read_text())
    assert kept['last_error'] == '%s is a symlink or not a directory: not followed' % (
        site.logs / 'hello')


def test_a_link_in_place_of_a_receipt_file_is_replaced_not_followed(site):
    rsa = site.imported('rsa')
    site.queue(rsa)
    victim = site.outside / 'victim.json'
    victim.write_text('untouched')
    receipt = site.receipt_path(rsa)
    receipt.parent.mkdir(parents=True)
    receipt.symlink_to(victim)
    status, out, err = site.retry()
    assert status == 0
    assert victim.read_text() == 'untouched'
    assert not receipt.is_symlink() and json.loads(receipt.read_text())['sigkey'] == rsa.sigkey


def test_a_link_in_place_of_a_record_is_set_aside_unread(site):
    secret = site.outside / 'secret'
    secret.write_text('{"not": "yours"}')
    site.outbox.mkdir(parents=True)
    (site.outbox / 'x.json').symlink_to(secret)
    status, out, err = site.retry()
    assert status == 1
    assert (site.outbox / 'rejected' / 'x.json').is_symlink()
    assert secret.read_text() == '{"not": "yours"}'
    assert any('x.json' in e and 'symlink' in e for e in site.errors())


def test_a_link_in_place_of_rejected_keeps_the_record(site):
    rsa = site.imported('rsa')
    site.queue(rsa)
    os.unlink(rsa.unsigned_path)  # so that the record is rejected for good
    (site.outbox / 'rejected').symlink_to(site.outside)
    status, out, err = site.retry()
    assert status == 1
    site.assert_nothing_outside()
    assert site.record_path(rsa).exists()  # nothing lost


def test_a_link_in_place_of_the_outbox_fails_the_import_cleanly(site):
    site.logs.mkdir()
    (site.logs / '@outbox').symlink_to(site.outside)
    rsa = site.imported('rsa')
    site.configure(enforce=True)
    with pytest.raises(koji.CallbackError) as info:
        site.hub.sign(rsa)
    assert 'cannot queue it in' in str(info.value) and 'not followed' in str(info.value)
    site.assert_nothing_outside()
    assert site.posts() == 0


def test_a_checkpoint_lock_link_creates_nothing(site):
    rsa = site.imported('rsa')
    site.queue(rsa)
    log_id = site.rekor.log.log_id
    folder = site.logs / '@state' / 'checkpoints' / log_id
    folder.mkdir(parents=True)
    nologin = site.outside / 'nologin'
    (folder / ('%d.json.lock' % site.rekor.log.tree_id)).symlink_to(nologin)
    status, out, err = site.retry()
    assert status == 1
    assert not nologin.exists()
    kept = json.loads(site.record_path(rsa).read_text())
    assert kept['attempts'] == 1 and 'Too many levels of symbolic links' in kept['last_error'] \
        or 'symlink' in kept['last_error']


# --- planted keys and checkpoints ---------------------------------------------

def pin_path(site):
    return site.logs / '@state' / 'keys' / ('127.0.0.1_%d.pem' % site.rekor.port)


def test_an_existing_pin_keeps_working_and_is_read_back(site):
    """A pin from first use is what a later upload trusts (read back, not
    fetched again): a log that now serves another key is not believed."""
    site.configure(rekor_extra='trust_on_first_use = true\n')
    rsa, ed = site.imported('rsa'), site.imported('ed25519')
    site.hub.sign(rsa)
    assert pin_path(site).read_bytes() == site.rekor.log.public_key_pem
    assert site.rekor.count('GET', '/api/v1/log/publicKey') == 1
    # Another process (a fresh module load) with TOFU now off: the pin stands.
    site.configure()
    site.configure_text = None
    text = site.hub.conf_path.read_text().replace(
        'log_public_key = %s\n' % site.log_key_file, '')
    site.hub.conf_path.write_text(text)
    site.hub.module.CONFIG = None
    koji_rekor.state.PINS_SEEN.clear()
    site.hub.sign(ed)
    assert site.receipt_path(ed).exists()
    assert site.rekor.count('GET', '/api/v1/log/publicKey') == 1


def test_a_pin_changed_on_disk_is_reported_not_followed(site, tmp_path):
    site.configure(rekor_extra='trust_on_first_use = true\n')
    rsa, ed = site.imported('rsa'), site.imported('ed25519')
    site.hub.sign(rsa)
    rogue = RekorLog(origin_host='127.0.0.1')
    pin_path(site).write_bytes(rogue.public_key_pem)
    site.hub.sign(ed)
    assert not site.receipt_path(ed).exists()
    assert any('changed on disk since this process read it' in e for e in site.errors())
    assert pin_path(site).read_bytes() == rogue.public_key_pem  # reported, never rewritten


def test_a_rogue_pin_planted_before_first_use_is_not_trusted_without_tofu(site):
    rsa = site.imported('rsa')
    site.configure(rekor_extra='')
    rogue = RekorLog(origin_host='127.0.0.1')
    # No key configured and TOFU off: a planted pin is used only as an existing
    # pin; the log's answers do not verify with it, so nothing is written.
    text = site.hub.conf_path.read_text().replace(
        'log_public_key = %s\n' % site.log_key_file, '')
    site.hub.conf_path.write_text(text)
    site.hub.module.CONFIG = None
    pin_path(site).parent.mkdir(parents=True)
    pin_path(site).write_bytes(rogue.public_key_pem)
    site.hub.sign(rsa)
    assert not site.receipt_path(rsa).exists()


def test_a_pin_is_never_written_through_a_link(site):
    site.configure(rekor_extra='trust_on_first_use = true\n')
    text = site.hub.conf_path.read_text().replace(
        'log_public_key = %s\n' % site.log_key_file, '')
    site.hub.conf_path.write_text(text)
    site.hub.module.CONFIG = None
    pin_path(site).parent.mkdir(parents=True)
    pin_path(site).symlink_to(site.outside / 'pin.pem')
    rsa = site.imported('rsa')
    site.hub.sign(rsa)
    site.assert_nothing_outside()
    assert not site.receipt_path(rsa).exists()
    assert any('symlink' in e for e in site.errors())


@pytest.mark.quiet_log  # exact log indexes or tree sizes: a log only this test writes
def test_a_planted_checkpoint_is_reported_and_never_blocks_uploads(site):
    """A saved tree head of huge size that the log key did not sign: before,
    every later upload was refused for good."""
    rsa, ed = site.imported('rsa'), site.imported('ed25519')
    site.hub.sign(rsa)
    saved = (site.logs / '@state' / 'checkpoints' / site.rekor.log.log_id
             / ('%d.json' % site.rekor.log.tree_id))
    head = json.loads(saved.read_text())
    text, signatures = head['checkpoint'].split('\n\n')
    origin, size, root = text.split('\n')
    forged = '%s\n%d\n%s\n\n%s' % (origin, 10 ** 9, root, signatures)
    saved.write_text(json.dumps({'size': 10 ** 9, 'root_hash': head['root_hash'],
                                 'checkpoint': forged}))
    site.hub.sign(ed)
    assert site.receipt_path(ed).exists()
    tampering = [e for e in site.errors() if 'tampering' in e]
    assert len(tampering) == 1 and 'does not verify with the log key' in tampering[0]
    assert json.loads(saved.read_text())['size'] == 2  # replaced by a verified one


def test_a_saved_tree_head_whose_fields_disagree_with_its_note_is_ignored(site):
    rsa, ed = site.imported('rsa'), site.imported('ed25519')
    site.hub.sign(rsa)
    saved = (site.logs / '@state' / 'checkpoints' / site.rekor.log.log_id
             / ('%d.json' % site.rekor.log.tree_id))
    head = json.loads(saved.read_text())
    head['size'] = 10 ** 9  # the signed note is genuine, the field beside it is not
    saved.write_text(json.dumps(head))
    site.hub.sign(ed)
    assert site.receipt_path(ed).exists()
    assert any('tampering' in e for e in site.errors())


# --- one owner: root-owned leftovers ---------------------------------------------

def unprivileged():
    try:
        return pwd.getpwnam('nobody')
    except KeyError:
        return None


needs_root = pytest.mark.skipif(os.geteuid() != 0 or unprivileged() is None,
                                reason='needs root and the user nobody')


@pytest.fixture
def shared_dir():
    """A directory the user nobody can reach (pytest's are private to root)."""
    path = tempfile.mkdtemp(prefix='koji-rekor-owner-')
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path)


def owners(path):
    found = set()
    for directory, dirs, files in os.walk(path):
        for name in [directory] + [os.path.join(directory, n) for n in dirs + files]:
            found.add(os.lstat(name).st_uid)
    return found


@needs_root
def test_commands_started_as_root_write_as_the_hub_user(shared_dir, rekor, signed_rpms, keys,
                                                        log_key_file):
    nobody = unprivileged()
    topdir = os.path.join(shared_dir, 'koji')
    os.mkdir(topdir)
    os.chown(topdir, nobody.pw_uid, nobody.pw_gid)
    for name, src in (('log.pub', str(log_key_file)), ('key.asc', keys['rsa'].path),
                      ('signed.rpm', signed_rpms[('rsa', 'header')])):
        shutil.copy(src, os.path.join(shared_dir, name))
        os.chmod(os.path.join(shared_dir, name), 0o644)
    conf = os.path.join(shared_dir, 'rekor_log.conf')
    with open(conf, 'w') as fo:
        fo.write('[rekor]\nurl = %s\nallow_insecure_http = true\nlog_public_key = %s\n'
                 '[upload]\nhub_user = nobody\n' % (rekor.url, os.path.join(shared_dir, 'log.pub')))
    os.chmod(conf, 0o644)
    done = subprocess.run(
        [sys.executable, '-m', 'koji_rekor', 'upload', os.path.join(shared_dir, 'signed.rpm'),
         '--key', os.path.join(shared_dir, 'key.asc'), '--config', conf, '--topdir', topdir],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    logs = os.path.join(topdir, 'rekor-logs')
    assert owners(logs) == {nobody.pw_uid}
    # The owner of an existing rekor-logs/ wins over hub_user (no such user here).
    with open(conf, 'a') as fo:
        fo.write('')
    text = open(conf).read().replace('hub_user = nobody', 'hub_user = no-such-user-here')
    with open(conf, 'w') as fo:
        fo.write(text)
    done = subprocess.run(
        [sys.executable, '-m', 'koji_rekor', 'retry', '--config', conf, '--topdir', topdir],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert owners(logs) == {nobody.pw_uid}


@needs_root
def test_a_missing_hub_user_is_one_line_and_nothing_is_created(shared_dir):
    topdir = os.path.join(shared_dir, 'koji')
    os.mkdir(topdir)
    conf = os.path.join(shared_dir, 'rekor_log.conf')
    with open(conf, 'w') as fo:
        fo.write('[upload]\nhub_user = no-such-user-here\n')
    done = subprocess.run(
        [sys.executable, '-m', 'koji_rekor', 'retry', '--config', conf, '--topdir', topdir],
        cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.startswith('koji-rekor: no such user: no-such-user-here')
    assert done.stderr.count('\n') == 1
    assert os.listdir(topdir) == []


def test_log_key_prints_the_served_and_pinned_keys_for_the_admin(site):
    site.configure(rekor_extra='trust_on_first_use = true\n')
    site.hub.sign(site.imported('rsa'))
    argv = ['log-key', '--config', str(site.hub.conf_path), '--topdir', str(site.topdir)]
    assert koji_rekor.cli.main(argv) == 0
    out, err = site.capsys.readouterr()
    assert out.count('logID %s' % site.rekor.log.log_id) == 2
    assert site.rekor.log.public_key_pem.decode() in out
    # A pin that is not the served key: shown, and exit 1.
    pin_path(site).write_bytes(RekorLog().public_key_pem)
    assert koji_rekor.cli.main(argv) == 1
    out, err = site.capsys.readouterr()
    assert err == 'koji-rekor: the log serves another key than the one pinned\n'


@needs_root
def test_root_owned_leftovers_are_given_back_to_the_hub_user(shared_dir):
    """An older version run as root left root-owned directories and locks:
    the hub could then queue nothing. A command started as root gives them
    back before it does anything."""
    nobody = unprivileged()
    topdir = os.path.join(shared_dir, 'koji')
    logs = os.path.join(topdir, 'rekor-logs')
    os.makedirs(os.path.join(logs, '@outbox', 'rejected'))
    os.makedirs(os.path.join(logs, '@state', 'checkpoints', 'ab'))
    open(os.path.join(logs, '@state', 'checkpoints', 'ab', '1.json.lock'), 'w').close()
    os.symlink('/etc/passwd', os.path.join(logs, '@outbox', 'rejected', 'planted.json'))
    os.chown(topdir, nobody.pw_uid, nobody.pw_gid)
    conf = os.path.join(shared_dir, 'rekor_log.conf')
    with open(conf, 'w') as fo:
        fo.write('[upload]\nhub_user = nobody\n')
    os.chmod(conf, 0o644)
    done = subprocess.run(
        [sys.executable, '-m', 'koji_rekor', 'retry', '--config', conf, '--topdir', topdir],
        cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    # The link is left alone: neither it nor its target is root's to give.
    planted = os.path.join(logs, '@outbox', 'rejected', 'planted.json')
    os.unlink(planted)
    assert owners(logs) == {nobody.pw_uid}
    assert os.stat('/etc/passwd').st_uid == 0
    # The hub (as nobody) can queue again.
    if not shutil.which('setpriv'):
        return
    probe = subprocess.run(['setpriv', '--reuid', str(nobody.pw_uid), '--regid',
                            str(nobody.pw_gid), '--clear-groups', 'touch',
                            os.path.join(logs, '@outbox', 'probe')],
                           capture_output=True, text=True, timeout=30)
    assert probe.returncode == 0, probe.stderr
