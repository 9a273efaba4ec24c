"""One test per check that nothing else would notice removed: the
checkpoint's root against the proof's, the checkpoint's key hint, the shipped
key for rekor.sigstore.dev, each line of the body (NEVRA, arch, MD5, kind,
apiVersion), an RPM with no header signature, atomic writes and their
fsyncs, and the lock other processes take on saved tree heads. None of
them needs ../shared."""

import base64
import json
import os
import subprocess
import sys
import threading

import koji
import pytest

import koji_rekor.checkpoint
import koji_rekor.config
import koji_rekor.delivery
import koji_rekor.errors
import koji_rekor.logkey
import koji_rekor.receipts
import koji_rekor.rpmsig
import koji_rekor.safefs
import koji_rekor.state
import koji_rekor.verify
from tests.support.common import ROOT
from tests.support.rekor_server import RekorLog, canonical_json, signed_checkpoint

PRODUCTION_LOG_ID = 'c0d23d6ad406973f9559f3ba2d1ca01f84147d8ffc5b8445c224f98b9591801d'


@pytest.fixture
def local():
    log = RekorLog()
    for number in range(4):
        log.add_entry(canonical_json({'apiVersion': '0.0.1', 'kind': 'rpm', 'n': number}))
    entry, _ = log.add_entry(canonical_json({'apiVersion': '0.0.1', 'kind': 'rpm', 'n': 99}))
    log.add_entry(canonical_json({'apiVersion': '0.0.1', 'kind': 'rpm', 'n': 100}))
    entry_id, document = log.render_entry(entry)
    return log, koji_rekor.logkey.load_log_key(log.public_key_pem), entry_id, document[entry_id]


def test_the_checkpoint_must_sign_the_proofs_root_not_only_its_size(local):
    log, key, entry_id, entry = local
    proof = entry['verification']['inclusionProof']
    # Signed by the log itself, for the same size, but for another root.
    proof['checkpoint'] = signed_checkpoint('127.0.0.1', log.tree_id, proof['treeSize'],
                                            b'\x42' * 32, log._signer)
    with pytest.raises(koji_rekor.errors.VerificationError,
                       match=r'^checkpoint is for size 6 root 4242.*, proof for size 6 root '):
        koji_rekor.verify.verify_log_entry(entry_id, entry, key, '127.0.0.1')


def test_the_checkpoint_signature_must_carry_the_log_keys_hint(local):
    log, key, entry_id, entry = local
    note = log.checkpoint()
    text, signature_line = note.split('\n\n')
    dash, name, blob = signature_line.strip('\n').split(' ')
    raw = base64.b64decode(blob)
    wrong_hint = bytes(b ^ 0xff for b in raw[:4]) + raw[4:]  # the signature itself is valid
    forged = '%s\n\n%s %s %s\n' % (text, dash, name, base64.b64encode(wrong_hint).decode())
    assert koji_rekor.checkpoint.verify_checkpoint(note, key, '127.0.0.1', log.tree_id).size == 6
    with pytest.raises(koji_rekor.errors.VerificationError, match='no valid signature by the log key'):
        koji_rekor.checkpoint.verify_checkpoint(forged, key, '127.0.0.1', log.tree_id)


def test_the_shipped_key_is_used_for_rekor_sigstore_dev_without_asking_it():
    settings = koji_rekor.config.Settings(url='https://rekor.sigstore.dev')
    # No client at all: anything but the shipped key would have to ask the log.
    key = koji_rekor.state.resolve_log_key(settings, None, None)
    assert koji_rekor.logkey.log_key_id(key).hex() == PRODUCTION_LOG_ID


def test_a_configured_key_wins_over_the_shipped_one(tmp_path):
    log = RekorLog()
    pem = tmp_path / 'log.pub'
    pem.write_bytes(log.public_key_pem)
    settings = koji_rekor.config.Settings(url='https://rekor.sigstore.dev', log_public_key=str(pem))
    key = koji_rekor.state.resolve_log_key(settings, None, None)
    assert koji_rekor.logkey.log_key_id(key).hex() == log.log_id


# --- each line of the body ---------------------------------------------------------

@pytest.fixture
def body_and_expected(keys):
    expected = koji_rekor.rpmsig.Expected(
        sha256='ab' * 32, name='hello', version='1.0', release='1', epoch=None, arch='noarch',
        sigmd5='cd' * 16, public_key=keys['rsa'].armored)
    body = {'kind': 'rpm', 'apiVersion': '0.0.1', 'spec': {
        'package': {'hash': {'algorithm': 'sha256', 'value': 'ab' * 32},
                    'headers': {'Name': 'hello', 'Version': '1.0', 'Release': '1',
                                'Epoch': '', 'Architecture': 'noarch',
                                'RPMSIGTAG_MD5': 'cd' * 16}},
        'publicKey': {'content': base64.b64encode(keys['rsa'].armored).decode()}}}
    return body, expected


LIES = {
    'kind': (lambda b: b.update(kind='rekord'), 'body is rekord 0.0.1, not rpm 0.0.1'),
    'apiVersion': (lambda b: b.update(apiVersion='0.0.2'), 'body is rpm 0.0.2, not rpm 0.0.1'),
    'Name': (lambda b: b['spec']['package']['headers'].update(Name='hell0'),
             "body records Name 'hell0', the RPM has 'hello'"),
    'Version': (lambda b: b['spec']['package']['headers'].update(Version='1.1'),
                "body records Version '1.1', the RPM has '1.0'"),
    'Release': (lambda b: b['spec']['package']['headers'].update(Release='2'),
                "body records Release '2', the RPM has '1'"),
    'Epoch': (lambda b: b['spec']['package']['headers'].update(Epoch='3'),
              "body records Epoch '3', the RPM has ''"),
    'Architecture': (lambda b: b['spec']['package']['headers'].update(Architecture='x86_64'),
                     "body records Architecture 'x86_64', the RPM has 'noarch'"),
    'no Architecture': (lambda b: b['spec']['package']['headers'].pop('Architecture'),
                        "body records Architecture None, the RPM has 'noarch'"),
    'RPMSIGTAG_MD5': (lambda b: b['spec']['package']['headers'].update(RPMSIGTAG_MD5='00' * 16),
                      'body records RPMSIGTAG_MD5 %s, the RPM has %s' % ('00' * 16, 'cd' * 16)),
}


def test_the_true_body_verifies(body_and_expected):
    body, expected = body_and_expected
    assert koji_rekor.verify.verify_rpm_body(body, expected) is None


@pytest.mark.parametrize('lie', sorted(LIES))
def test_each_line_of_the_body_is_checked(body_and_expected, lie):
    body, expected = body_and_expected
    change, message = LIES[lie]
    change(body)
    with pytest.raises(koji_rekor.errors.VerificationError) as info:
        koji_rekor.verify.verify_rpm_body(body, expected)
    assert str(info.value) == message


# --- an RPM with no header signature --------------------------------------------------

def test_a_signed_copy_without_a_signature_is_refused_before_sending(configured_hub, rekor,
                                                                     topdir, koji_import,
                                                                     signed_rpms, unsigned_rpm,
                                                                     plugin_log):
    imported = koji_import(signed_rpms[('rsa', 'header')], write_signed_copy=True)
    # The "signed copy" is the unsigned RPM: its signature header signs nothing.
    with open(unsigned_rpm, 'rb') as src, open(imported.signed_path, 'wb') as dst:
        dst.write(src.read())
    configured_hub.sign(imported)
    assert rekor.count('POST', '/api/v1/log/entries') == 0
    errors = [r.getMessage() for r in plugin_log.records if r.levelname == 'ERROR']
    assert len(errors) == 1
    assert errors[0].endswith('is signed by nobody, not %s' % imported.sigkey), errors


def test_rpm_itself_is_asked_only_about_a_header_with_a_signature(unsigned_rpm, keys):
    signed = koji_rekor.rpmsig.SignedRpm('hello-1.0-1.noarch', keys['rsa'].sigkey, unsigned_rpm,
                                 koji.rip_rpm_sighdr(unsigned_rpm), spliced=False)
    # An unsigned RPM passes rpm's own check: it is refused before rpm is
    # asked (and before anything is sent), by Rekor's rule that it be signed.
    with pytest.raises(koji_rekor.errors.BreaksRekorRule, match='has no signature'):
        koji_rekor.rpmsig.check_key_signed_rpm(signed, keys['rsa'].armored, keys['rsa'].path)


# --- atomic writes, fsyncs, crashes -----------------------------------------------------

def test_a_write_fsyncs_the_file_before_the_rename_and_the_directory_after(tmp_path,
                                                                           monkeypatch):
    calls = []
    real_fsync, real_rename = os.fsync, os.rename

    def fsync(fd):
        calls.append(('fsync', 'dir' if os.path.isdir('/proc/self/fd/%d' % fd) else 'file'))
        return real_fsync(fd)

    def rename(*args, **kws):
        calls.append(('rename',))
        return real_rename(*args, **kws)

    monkeypatch.setattr(os, 'fsync', fsync)
    monkeypatch.setattr(os, 'rename', rename)
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        koji_rekor.safefs.write_file_at(fd, 'x.json', b'{}')
    finally:
        os.close(fd)
    assert calls == [('fsync', 'file'), ('rename',), ('fsync', 'dir')]


class Crash(BaseException):
    """The process dies here (what SIGKILL would do, minus the kill)."""


@pytest.mark.parametrize('where', ['write', 'fsync', 'rename'])
def test_a_crash_at_any_step_leaves_the_old_receipt_or_the_new_one(topdir, monkeypatch, where):
    rpminfo = {'name': 'hello', 'version': '1.0', 'release': '1', 'arch': 'noarch'}
    settings = koji_rekor.config.Settings()
    koji_rekor.delivery.write_receipt(settings, str(topdir), rpminfo, 'b64940b3', {'old': True})
    path = koji_rekor.receipts.receipt_path(str(topdir), rpminfo, 'b64940b3')

    def crash(*args, **kws):
        raise Crash(where)
    monkeypatch.setattr(os, where, crash)
    with pytest.raises(Crash):
        koji_rekor.delivery.write_receipt(settings, str(topdir), rpminfo, 'b64940b3', {'new': True})
    monkeypatch.undo()
    with open(path) as fo:
        assert json.load(fo) == {'old': True}
    assert os.listdir(os.path.dirname(path)) == [os.path.basename(path)]  # no temporary left


# --- the lock on saved tree heads, across processes ---------------------------------------

HOLD_LOCK = '''
import sys

import koji_rekor.safefs

topdir, logid, name = sys.argv[1:]
with koji_rekor.safefs.logs_dir(topdir, ('@state', 'checkpoints', logid)) as fd, \\
        koji_rekor.safefs.locked_at(fd, name, 'held'):
    print('locked', flush=True)
    sys.stdin.readline()
'''


def test_saved_tree_heads_are_locked_against_other_processes(topdir, local):
    log, key, entry_id, entry = local
    verified = koji_rekor.verify.verify_log_entry(entry_id, entry, key, '127.0.0.1')
    state = koji_rekor.state.state_dir(str(topdir))
    holder = subprocess.Popen(
        [sys.executable, '-c', HOLD_LOCK, str(topdir), log.log_id, '%d.json' % log.tree_id],
        cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT), stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == 'locked\n'
        done = threading.Event()

        def save():
            koji_rekor.state.check_consistency(None, state, key, verified.tree_id, verified.tree_size,
                                        verified.root_hash, verified.checkpoint.note)
            done.set()
        thread = threading.Thread(target=save, daemon=True)
        thread.start()
        # Held by the other process: this one waits (and the file is not written).
        assert not done.wait(0.5)
        assert koji_rekor.state.saved_tree_head(state, key, verified.tree_id) is None
        holder.stdin.write('\n')
        holder.stdin.flush()
        assert done.wait(10)
    finally:
        holder.stdin.close()
        holder.wait(timeout=10)
    assert koji_rekor.state.saved_tree_head(state, key, verified.tree_id) == (
        verified.tree_size, verified.root_hash)
