"""Offline verification of Rekor entries: real entries from the public logs,
every field of them tampered with, RFC 9162 proofs from a local log, and
the `koji-rekor verify` command on receipts and raw entries.

The real entries live in the `shared/rekor-real` directory beside the
checkout and are read in place; without it, their tests are skipped.
"""

import base64
import copy
import hashlib
import json
import logging
import os
import pathlib
import random
import re
import subprocess
import sys

import pytest

import koji_rekor.checkpoint
import koji_rekor.cli
import koji_rekor.config
import koji_rekor.logkey
import koji_rekor.merkle
import koji_rekor.verify

from tests.support.common import ROOT, SHARED
from koji_rekor.errors import VerificationError
from tests.support.rekor_server import EMPTY_ROOT, TAMPER_MODES, RekorLog, canonical_json

REAL = os.path.join(SHARED, 'rekor-real')
HAVE_REAL = os.path.isfile(os.path.join(REAL, 'README.md'))

PRODUCTION = 'production-entry-with-checkpoint.json'
NO_SET = 'production-entry-no-set.json'
NO_CHECKPOINT = 'production-entry-no-checkpoint.json'
STAGING = 'staging-entry.json'
PRODUCTION_KEY = 'rekor.sigstore.dev.pub'
STAGING_KEY = 'rekor.sigstage.dev.pub'
KEY_OF = {PRODUCTION: PRODUCTION_KEY, NO_SET: PRODUCTION_KEY, NO_CHECKPOINT: PRODUCTION_KEY,
          STAGING: STAGING_KEY}
OTHER_KEY = {PRODUCTION_KEY: STAGING_KEY, STAGING_KEY: PRODUCTION_KEY}
HOST_OF = {PRODUCTION_KEY: 'rekor.sigstore.dev', STAGING_KEY: 'rekor.sigstage.dev'}
VERIFYING = (PRODUCTION, NO_SET, STAGING)
SHORT = {PRODUCTION: 'production', NO_SET: 'production-no-set',
         NO_CHECKPOINT: 'production-no-checkpoint', STAGING: 'staging'}

# What each check says when it fails (VerificationError text).
UUID_FAILS = r'^entry UUID [0-9a-f]{64} is not the hash of its body$'
SET_FAILS = r'^signed entry timestamp: does not verify with the log key$'
LOG_ID_FAILS = r'^logID [0-9a-fA-F]+ is not the log key$'
INCLUSION_FAILS = r'^inclusion proof'
ROOT_FAILS = r'^inclusion proof does not lead to root hash [0-9a-f]{64}$'
CHECKPOINT_SIGNATURE_FAILS = r'^checkpoint: no valid signature by the log key$'
CHECKPOINT_TREE_FAILS = r"^checkpoint: origin '[^']*' is not tree \d+$"
NO_CHECKPOINT_FAILS = r'^no checkpoint: nothing signs the root hash$'
NO_CONFIG = '/nonexistent/rekor_log.conf'
ORIGIN_OF_KEY = {PRODUCTION_KEY: 'rekor.sigstore.dev', STAGING_KEY: 'rekor.sigstage.dev'}
LOCAL_HOST = '127.0.0.1'


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------

def real_bytes(name):
    with open(os.path.join(REAL, name), 'rb') as fo:
        return fo.read()


def real_entry(name):
    """(entryID, LogEntry) of a real entry file, a fresh copy each time."""
    (entry_id, entry), = json.loads(real_bytes(name)).items()
    return entry_id, entry


def real_key(name):
    return koji_rekor.logkey.load_log_key(real_bytes(name))


@pytest.fixture
def real():
    if not HAVE_REAL:
        pytest.skip('no real Rekor entries in %s' % REAL)
    return REAL


def verify_real(name, entry_id, entry, key_name=None):
    """verify_log_entry as the plugin would call it for that log: its origin
    host, and a SET required when the entry came with one."""
    key_name = key_name or KEY_OF[name]
    return koji_rekor.verify.verify_log_entry(
        entry_id, entry, real_key(key_name), HOST_OF[key_name],
        require_set=name != NO_SET)


def flip(data, byte=-1, bit=0):
    data = bytearray(data)
    data[byte] ^= 1 << bit
    return bytes(data)


def flip_hex(text, byte=-1):
    return flip(bytes.fromhex(text), byte).hex()


def other_char(char):
    """Another character of the same kind (digit, lower, upper, base64 sign)."""
    for alphabet in ('0123456789', 'abcdefghijklmnopqrstuvwxyz',
                     'ABCDEFGHIJKLMNOPQRSTUVWXYZ', '+/'):
        if char in alphabet:
            return alphabet[(alphabet.index(char) + 1) % len(alphabet)]
    raise ValueError('no other character for %r' % char)


def change_char(text, pos):
    assert text[pos].isalnum() or text[pos] in '+/', (text, pos)
    return text[:pos] + other_char(text[pos]) + text[pos + 1:]


def alnum_positions(text):
    return [i for i, c in enumerate(text) if c.isalnum()]


def write_json(path, value):
    path.write_text(json.dumps(value, indent=1))
    return str(path)


def read_json(path):
    with open(path, 'rb') as fo:
        return json.load(fo)


def run_cli(capsys, *argv):
    """koji-rekor in this process: (exit status, stdout, stderr)."""
    status = koji_rekor.cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert 'Traceback' not in err
    return status, out, err


def one_line(text):
    return text.endswith('\n') and text.count('\n') == 1


# ---------------------------------------------------------------------------
# 1. Real entries from the public logs
# ---------------------------------------------------------------------------

def test_production_entry_with_checkpoint_verifies_with_the_production_key(real):
    entry_id, entry = real_entry(PRODUCTION)
    verified = verify_real(PRODUCTION, entry_id, entry)
    assert verified.uuid == entry_id[16:]
    assert verified.tree_id == 2605736670972794746
    assert (verified.log_index, verified.tree_index) == (79605083, 75441652)
    assert verified.log_index - verified.tree_index == 4163431
    assert verified.tree_size == 75441653
    assert verified.checkpoint.origin == 'rekor.sigstore.dev - 2605736670972794746'
    assert verified.body['kind'] == 'hashedrekord'
    assert verified.notes == []


def test_production_entry_without_set_verifies_with_a_note(real):
    entry_id, entry = real_entry(NO_SET)
    verified = koji_rekor.verify.verify_log_entry(entry_id, entry, real_key(PRODUCTION_KEY),
                                          'rekor.sigstore.dev', require_set=False)
    assert verified.tree_id == 1193050959916656506
    assert verified.log_index - verified.tree_index == 121904262
    assert len(verified.notes) == 1
    assert 'no signed entry timestamp' in verified.notes[0]


def test_production_entry_without_set_fails_when_a_set_is_required(real):
    entry_id, entry = real_entry(NO_SET)
    with pytest.raises(VerificationError, match=r'^no signed entry timestamp$'):
        koji_rekor.verify.verify_log_entry(entry_id, entry, real_key(PRODUCTION_KEY),
                                   'rekor.sigstore.dev', require_set=True)


def test_staging_entry_verifies_with_the_staging_key(real):
    entry_id, entry = real_entry(STAGING)
    verified = verify_real(STAGING, entry_id, entry)
    assert verified.tree_id == 8050909264565447525
    assert verified.checkpoint.origin == 'rekor.sigstage.dev - 8050909264565447525'
    # The checkpoint's extra line is kept, and is part of what is signed.
    assert len(verified.checkpoint.other) == 1
    assert verified.checkpoint.other[0].startswith('Timestamp: ')


@pytest.mark.parametrize('require_set', [True, False])
def test_production_entry_without_checkpoint_fails_as_nothing_signs_its_root(real,
                                                                             require_set):
    entry_id, entry = real_entry(NO_CHECKPOINT)
    # Its SET alone does verify: it is the missing checkpoint that fails.
    koji_rekor.verify.verify_set(entry, real_key(PRODUCTION_KEY))
    with pytest.raises(VerificationError, match=NO_CHECKPOINT_FAILS):
        koji_rekor.verify.verify_log_entry(entry_id, entry, real_key(PRODUCTION_KEY),
                                   'rekor.sigstore.dev', require_set=require_set)


@pytest.mark.parametrize('name', [PRODUCTION, NO_SET, NO_CHECKPOINT, STAGING],
                         ids=lambda n: SHORT[n])
def test_each_real_entry_fails_with_the_other_logs_key(real, name):
    entry_id, entry = real_entry(name)
    other = OTHER_KEY[KEY_OF[name]]
    with pytest.raises(VerificationError, match=LOG_ID_FAILS):
        verify_real(name, entry_id, entry, key_name=other)


@pytest.mark.parametrize('name', VERIFYING, ids=lambda n: SHORT[n])
def test_claiming_the_other_logs_id_does_not_help_a_real_entry(real, name):
    """With logID rewritten to the other log's, the checkpoint still fails."""
    entry_id, entry = real_entry(name)
    other = OTHER_KEY[KEY_OF[name]]
    entry['logID'] = koji_rekor.logkey.log_key_id(real_key(other)).hex()
    with pytest.raises(VerificationError, match=CHECKPOINT_SIGNATURE_FAILS):
        verify_real(name, entry_id, entry, key_name=other)


def test_staging_entry_fails_with_the_production_key(real):
    entry_id, entry = real_entry(STAGING)
    with pytest.raises(VerificationError, match=LOG_ID_FAILS):
        koji_rekor.verify.verify_log_entry(entry_id, entry, real_key(PRODUCTION_KEY))


def test_shipped_public_key_is_the_production_log_key(real):
    shipped = koji_rekor.logkey.load_log_key(koji_rekor.config.PUBLIC_REKOR_KEY)
    production = real_key(PRODUCTION_KEY)
    assert koji_rekor.logkey.log_key_id(shipped) == koji_rekor.logkey.log_key_id(production)
    assert koji_rekor.logkey.log_key_id(shipped) != koji_rekor.logkey.log_key_id(real_key(STAGING_KEY))
    for name in (PRODUCTION, NO_SET, NO_CHECKPOINT):
        assert real_entry(name)[1]['logID'] == koji_rekor.logkey.log_key_id(shipped).hex()
    assert koji_rekor.config.PUBLIC_REKOR_HOST == 'rekor.sigstore.dev'


@pytest.mark.parametrize('name', VERIFYING, ids=lambda n: SHORT[n])
def test_real_entry_fails_with_another_origin_host(real, name):
    entry_id, entry = real_entry(name)
    with pytest.raises(VerificationError, match=r"^checkpoint: origin '.*' is not log "
                                                r"rekor\.example\.org$"):
        koji_rekor.verify.verify_log_entry(entry_id, entry, real_key(KEY_OF[name]),
                                   'rekor.example.org', require_set=False)


def test_real_entry_checkpoint_key_hint_is_the_start_of_the_log_id(real):
    for name in VERIFYING:
        entry_id, entry = real_entry(name)
        note = entry['verification']['inclusionProof']['checkpoint']
        checkpoint, signatures = koji_rekor.checkpoint.parse_checkpoint(note)
        key = real_key(KEY_OF[name])
        assert [hint for _, hint, _ in signatures] == [koji_rekor.logkey.log_key_id(key)[:4]]
        assert koji_rekor.checkpoint.verify_checkpoint(note, key, HOST_OF[KEY_OF[name]],
                                           int(entry_id[:16], 16)) == checkpoint


@pytest.mark.parametrize('name', [PRODUCTION, NO_SET], ids=lambda n: SHORT[n])
def test_verify_without_log_key_uses_the_shipped_key_for_production_entries(real, capsys,
                                                                            name):
    entry_id, _ = real_entry(name)
    status, out, err = run_cli(capsys, 'verify', os.path.join(REAL, name))
    assert (status, err) == (0, '')
    lines = out.splitlines()
    assert lines[0].startswith('OK %s: log index ' % entry_id[16:])
    assert "origin 'rekor.sigstore.dev - " in lines[0]
    # Where the key came from is said, last.
    assert lines[-1] == 'log key: built into koji-rekor for rekor.sigstore.dev'
    if name == NO_SET:
        assert '(unsigned)' in lines[0]
        assert lines[1:-1] == ['note: no signed entry timestamp: the checkpoint signs the body '
                               'and its place in the tree, but nothing signs integratedTime or '
                               'the global log index shown']
    else:
        assert lines[1:-1] == []


def test_verify_staging_entry_with_the_staging_key_file(real, capsys):
    entry_id, _ = real_entry(STAGING)
    status, out, err = run_cli(capsys, 'verify', os.path.join(REAL, STAGING), '--log-key',
                               os.path.join(REAL, STAGING_KEY),
                               '--origin', 'rekor.sigstage.dev')
    assert (status, err) == (0, '')
    assert out.startswith('OK %s: log index 7390977 (tree 8050909264565447525, '
                          'index 7376158 of 7376159)' % entry_id[16:])


def test_verify_staging_entry_without_log_key_cannot_start(real, capsys):
    status, out, err = run_cli(capsys, 'verify', os.path.join(REAL, STAGING))
    assert (status, out) == (2, '')
    assert one_line(err)
    assert err.startswith('koji-rekor: cannot check %s: no key for logID d32f30a3c32d639c'
                          % os.path.join(REAL, STAGING))
    assert 'pass --log-key' in err


def test_verify_staging_entry_fails_with_the_production_key_file(real, capsys):
    status, out, err = run_cli(capsys, 'verify', os.path.join(REAL, STAGING), '--log-key',
                               os.path.join(REAL, PRODUCTION_KEY))
    assert (status, out) == (1, '')
    assert one_line(err)
    assert re.match('koji-rekor: verification failed: logID d32f30a3c32d639c.* is not the '
                    'log key$', err)


def test_verify_production_entry_without_checkpoint_fails(real, capsys):
    status, out, err = run_cli(capsys, 'verify', os.path.join(REAL, NO_CHECKPOINT))
    assert (status, out) == (1, '')
    assert err == ('koji-rekor: verification failed: no checkpoint: nothing signs the '
                   'root hash\n')


def test_verify_as_a_real_command(real, tmp_path):
    """python3 -m koji_rekor verify, as a separate process."""
    done = subprocess.run(
        [sys.executable, '-m', 'koji_rekor', 'verify', os.path.join(REAL, PRODUCTION)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith('OK %s: ' % real_entry(PRODUCTION)[0][16:])
    assert done.stderr == ''


# ---------------------------------------------------------------------------
# 2. Tampering with real entries: every field, and the check that catches it
# ---------------------------------------------------------------------------

def set_field(key, change):
    def tamper(entry_id, entry):
        entry[key] = change(entry[key])
        return entry_id, entry
    return tamper


def set_proof_field(key, change):
    def tamper(entry_id, entry):
        proof = entry['verification']['inclusionProof']
        proof[key] = change(proof[key])
        return entry_id, entry
    return tamper


def change_body_base64_char(entry_id, entry):
    body = entry['body']
    pos = len(body) // 2
    while not body[pos].isalnum():
        pos += 1
    entry['body'] = change_char(body, pos)
    base64.b64decode(entry['body'], validate=True)
    return entry_id, entry


def change_decoded_body(entry_id, entry):
    decoded = base64.b64decode(entry['body'])
    pos = decoded.index(b'"kind":"hashedrekord"') + len('"kind":"')
    changed = decoded[:pos] + b'H' + decoded[pos + 1:]   # "Hashedrekord"
    entry['body'] = base64.b64encode(changed).decode()
    return entry_id, entry


def flip_proof_hash(index):
    def tamper(entry_id, entry):
        hashes = entry['verification']['inclusionProof']['hashes']
        hashes[index] = flip_hex(hashes[index])
        return entry_id, entry
    return tamper


def change_checkpoint(line_number, pos):
    """Change one character of one line of the checkpoint note."""
    def tamper(entry_id, entry):
        proof = entry['verification']['inclusionProof']
        lines = proof['checkpoint'].split('\n')
        lines[line_number] = change_char(lines[line_number], pos)
        proof['checkpoint'] = '\n'.join(lines)
        return entry_id, entry
    return tamper


def replace_em_dash(entry_id, entry):
    proof = entry['verification']['inclusionProof']
    proof['checkpoint'] = proof['checkpoint'].replace('\u2014 ', '- ')
    return entry_id, entry


def flip_set(byte):
    def tamper(entry_id, entry):
        verification = entry['verification']
        signature = base64.b64decode(verification['signedEntryTimestamp'])
        verification['signedEntryTimestamp'] = base64.b64encode(flip(signature, byte)).decode()
        return entry_id, entry
    return tamper


def change_entry_id(pos):
    def tamper(entry_id, entry):
        return change_char(entry_id, pos), entry
    return tamper


def tamper_cases():
    """[(entry file, case id, tamper(entry_id, entry), expected message)]."""
    if not HAVE_REAL:
        return []
    cases = []
    for name in VERIFYING:
        entry_id, entry = real_entry(name)
        proof = entry['verification']['inclusionProof']

        def add(case, tamper, expected):
            cases.append((name, case, tamper, expected))

        add('body-base64-char', change_body_base64_char, UUID_FAILS)
        add('body-decoded-byte', change_decoded_body, UUID_FAILS)
        if 'signedEntryTimestamp' in entry['verification']:
            add('integratedTime', set_field('integratedTime', lambda v: v + 1), SET_FAILS)
            add('logIndex', set_field('logIndex', lambda v: v + 1), SET_FAILS)
            add('set-last-byte', flip_set(-1), SET_FAILS)
            add('set-byte-10', flip_set(10), SET_FAILS)
            add('set-first-byte', flip_set(0), SET_FAILS)
        add('logID', set_field('logID', lambda v: hashlib.sha256(v.encode()).hexdigest()),
            LOG_ID_FAILS)
        for index in range(len(proof['hashes'])):
            add('proof-hash-%d' % index, flip_proof_hash(index), ROOT_FAILS)
        add('rootHash', set_proof_field('rootHash', flip_hex), ROOT_FAILS)
        add('treeSize-plus-1', set_proof_field('treeSize', lambda v: v + 1), INCLUSION_FAILS)
        add('treeSize-minus-1', set_proof_field('treeSize', lambda v: v - 1), INCLUSION_FAILS)
        add('proof-logIndex-plus-1', set_proof_field('logIndex', lambda v: v + 1),
            INCLUSION_FAILS)
        add('proof-logIndex-minus-1', set_proof_field('logIndex', lambda v: v - 1),
            INCLUSION_FAILS)
        text, _, signatures = proof['checkpoint'].partition('\n\n')
        text_lines = text.split('\n')
        for number, line in enumerate(text_lines):
            positions = alnum_positions(line)
            for where, pos in (('first', positions[0]), ('last', positions[-1])):
                add('checkpoint-line-%d-%s-char' % (number, where),
                    change_checkpoint(number, pos), CHECKPOINT_SIGNATURE_FAILS)
        signature_line = len(text_lines) + 1
        sig = proof['checkpoint'].split('\n')[signature_line]
        start = sig.rindex(' ') + 1      # the base64 of key hint || signature
        for where, pos in (('key-hint', start + 1), ('signature-start', start + 8),
                           ('signature-middle', (start + len(sig)) // 2)):
            add('checkpoint-signature-line-%s' % where, change_checkpoint(signature_line, pos),
                CHECKPOINT_SIGNATURE_FAILS)
        add('checkpoint-signature-line-dash', replace_em_dash,
            r'^checkpoint: malformed signature line$')
        add('entryID-uuid-digit', change_entry_id(40), UUID_FAILS)
        add('entryID-tree-digit', change_entry_id(3), CHECKPOINT_TREE_FAILS)
    return cases


TAMPER_CASES = tamper_cases()
TAMPER_BY_ID = {(name, case): (tamper, expected)
                for name, case, tamper, expected in TAMPER_CASES}


@pytest.mark.parametrize('name, case, tamper, expected', TAMPER_CASES,
                         ids=['%s-%s' % (SHORT[c[0]], c[1]) for c in TAMPER_CASES])
def test_tampered_real_entry_is_rejected_by_the_right_check(real, name, case, tamper,
                                                            expected):
    entry_id, entry = real_entry(name)
    original = (entry_id, copy.deepcopy(entry))
    tampered = tamper(entry_id, entry)
    assert tampered != original, 'the tampering changed nothing'
    with pytest.raises(VerificationError, match=expected):
        verify_real(name, *tampered)


CLI_TAMPER = [(PRODUCTION, 'body-base64-char'), (PRODUCTION, 'set-last-byte'),
              (PRODUCTION, 'proof-hash-0'), (PRODUCTION, 'checkpoint-line-2-first-char'),
              (PRODUCTION, 'entryID-tree-digit'), (STAGING, 'checkpoint-line-3-last-char'),
              (STAGING, 'logIndex'), (NO_SET, 'rootHash'), (NO_SET, 'logID')]
CLI_TAMPER = CLI_TAMPER if HAVE_REAL else []


@pytest.mark.parametrize('name, case', CLI_TAMPER,
                         ids=['%s-%s' % (SHORT[n], c) for n, c in CLI_TAMPER])
def test_verify_command_rejects_a_tampered_real_entry(real, tmp_path, capsys, name, case):
    tamper, expected = TAMPER_BY_ID[(name, case)]
    entry_id, entry = tamper(*real_entry(name))
    path = write_json(tmp_path / 'entry.json', {entry_id: entry})
    status, out, err = run_cli(capsys, 'verify', path, '--log-key',
                               os.path.join(REAL, KEY_OF[name]), '--origin',
                               ORIGIN_OF_KEY[KEY_OF[name]])
    assert (status, out) == (1, '')
    assert one_line(err)
    prefix = 'koji-rekor: verification failed: '
    assert err.startswith(prefix)
    assert re.match(expected, err[len(prefix):].rstrip('\n'))


def test_untampered_copy_of_a_real_entry_verifies_through_the_command(real, tmp_path,
                                                                      capsys):
    """The temporary-file round trip itself changes nothing."""
    entry_id, entry = real_entry(STAGING)
    path = write_json(tmp_path / 'entry.json', {entry_id: entry})
    status, out, err = run_cli(capsys, 'verify', path, '--log-key',
                               os.path.join(REAL, STAGING_KEY), '--origin', 'rekor.sigstage.dev')
    assert (status, err) == (0, '')
    assert out.startswith('OK %s' % entry_id[16:])


# ---------------------------------------------------------------------------
# 3. RFC 9162 proofs from a local log
# ---------------------------------------------------------------------------

LOG_SIZE = 300
INTEGRATED = 1700000000


def rpm_body(number, package_sha256=None, signing_key=None):
    """A canonical rpm v0.0.1 body, as the local log stores them."""
    value = package_sha256 or hashlib.sha256(b'package %d' % number).hexdigest()
    spec = {'package': {'hash': {'algorithm': 'sha256', 'value': value},
                        'headers': {'Name': 'pkg%d' % number, 'Version': '1.0',
                                    'Release': '1', 'Architecture': 'noarch'}}}
    if signing_key:
        spec['publicKey'] = {'content': base64.b64encode(signing_key.armored).decode()}
    return canonical_json({'apiVersion': '0.0.1', 'kind': 'rpm', 'spec': spec})


@pytest.fixture(scope='module')
def big_log():
    log = RekorLog()
    for number in range(LOG_SIZE):
        entry, created = log.add_entry(rpm_body(number), integrated_time=INTEGRATED + number)
        assert created
    assert log.tree_size == LOG_SIZE
    return log


def leaf(log, index):
    return koji_rekor.merkle.hash_leaf(log.entries[index].body)


def proves(index, size, leaf_hash, proof, root):
    """Does the proof lead to root? (a malformed proof does not)"""
    try:
        return koji_rekor.merkle.root_from_inclusion_proof(index, size, leaf_hash, proof) == root
    except VerificationError:
        return False


def consistent(first, second, first_root, second_root, proof):
    try:
        koji_rekor.merkle.verify_consistency(first, second, first_root, second_root, proof)
    except VerificationError:
        return False
    return True


PROOF_SIZES = [1, 2, 3, 4, 5, 6, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 100, 127, 128,
               129, 200, 255, 256, 257, 299, 300]


def sample_indexes(size):
    return sorted({i for i in (0, 1, size // 3, size // 2, size - 2, size - 1)
                   if 0 <= i < size})


def test_local_leaf_hash_is_the_entry_uuid(big_log):
    for entry in big_log.entries[:20]:
        assert koji_rekor.merkle.hash_leaf(entry.body).hex() == entry.uuid
    assert koji_rekor.merkle.hash_children(b'a', b'b') == hashlib.sha256(b'\x01ab').digest()


@pytest.mark.parametrize('size', PROOF_SIZES)
def test_log_inclusion_proofs_lead_to_the_root_of_their_size(big_log, size):
    root = big_log.root_hash(size)
    for index in sample_indexes(size):
        proof = big_log.inclusion_proof(index, size)
        assert koji_rekor.merkle.root_from_inclusion_proof(index, size, leaf(big_log, index),
                                                   proof) == root


def test_every_leaf_of_a_small_tree_has_a_verifying_proof(big_log):
    for size in range(1, 70):
        root = big_log.root_hash(size)
        for index in range(size):
            assert proves(index, size, leaf(big_log, index),
                          big_log.inclusion_proof(index, size), root), (index, size)


@pytest.mark.parametrize('size', PROOF_SIZES)
def test_inclusion_proof_fails_for_another_index(big_log, size):
    root = big_log.root_hash(size)
    for index in sample_indexes(size):
        proof = big_log.inclusion_proof(index, size)
        for wrong in (index - 1, index + 1, size - 1 - index, 0, size - 1):
            if wrong != index and 0 <= wrong < size:
                assert not proves(wrong, size, leaf(big_log, index), proof, root), \
                    (index, wrong, size)
        with pytest.raises(VerificationError, match='is not below tree size'):
            koji_rekor.merkle.root_from_inclusion_proof(size, size, leaf(big_log, index), proof)


@pytest.mark.parametrize('size', PROOF_SIZES)
def test_inclusion_proof_fails_for_another_tree_size(big_log, size):
    for index in sample_indexes(size):
        proof = big_log.inclusion_proof(index, size)
        for wrong in (size - 1, size + 1, size * 2, size + 7):
            if index < wrong <= LOG_SIZE and wrong != size:
                assert not proves(index, wrong, leaf(big_log, index), proof,
                                  big_log.root_hash(wrong)), (index, size, wrong)


@pytest.mark.parametrize('size', [s for s in PROOF_SIZES if s > 1])
def test_inclusion_proof_with_a_hash_dropped_or_added_fails(big_log, size):
    root = big_log.root_hash(size)
    for index in sample_indexes(size):
        proof = big_log.inclusion_proof(index, size)
        leaf_hash = leaf(big_log, index)
        for dropped in range(len(proof)):
            shorter = proof[:dropped] + proof[dropped + 1:]
            with pytest.raises(VerificationError, match='too few hashes'):
                koji_rekor.merkle.root_from_inclusion_proof(index, size, leaf_hash, shorter)
        for extra in ([root], [proof[0]], [b'\0' * 32]):
            for longer in (proof + extra, extra + proof):
                with pytest.raises(VerificationError, match='too many hashes'):
                    koji_rekor.merkle.root_from_inclusion_proof(index, size, leaf_hash, longer)
        flipped = [flip(proof[0])] + proof[1:]
        assert not proves(index, size, leaf_hash, flipped, root)
        assert not proves(index, size, flip(leaf_hash), proof, root)


def test_single_leaf_tree_needs_no_proof_and_takes_none(big_log):
    leaf_hash = leaf(big_log, 0)
    assert koji_rekor.merkle.root_from_inclusion_proof(0, 1, leaf_hash, []) == big_log.root_hash(1)
    assert big_log.root_hash(1) == leaf_hash
    with pytest.raises(VerificationError, match='too many hashes'):
        koji_rekor.merkle.root_from_inclusion_proof(0, 1, leaf_hash, [leaf_hash])
    with pytest.raises(VerificationError, match='is not below tree size'):
        koji_rekor.merkle.root_from_inclusion_proof(0, 0, leaf_hash, [])


def check_consistency_pair(log, first, second):
    """The log's proof verifies, and no single change to it does."""
    latest_root, proof = log.consistency_proof(first, second)
    first_root, second_root = log.root_hash(first), log.root_hash(second)
    assert latest_root == log.root_hash()   # Rekor answers the latest root beside the proof
    koji_rekor.merkle.verify_consistency(first, second, first_root, second_root, proof)
    if first == second:
        return
    assert not consistent(first, second, second_root, first_root, proof), 'swapped roots'
    assert not consistent(first, second, flip(first_root), second_root, proof)
    assert not consistent(first, second, first_root, flip(second_root), proof)
    for dropped in range(len(proof)):
        assert not consistent(first, second, first_root, second_root,
                              proof[:dropped] + proof[dropped + 1:]), ('dropped', dropped)
    for extra in (first_root, proof[0]):
        assert not consistent(first, second, first_root, second_root, proof + [extra])
        assert not consistent(first, second, first_root, second_root, [extra] + proof)
    for changed in range(len(proof)):
        assert not consistent(first, second, first_root, second_root,
                              proof[:changed] + [flip(proof[changed])] + proof[changed + 1:])
    # Neighbouring sizes with the same proof do not verify either.
    if first > 1:
        assert not consistent(first - 1, second, log.root_hash(first - 1), second_root, proof)
    if second < LOG_SIZE:
        assert not consistent(first, second + 1, first_root, log.root_hash(second + 1), proof)
    with pytest.raises(VerificationError, match='shrank'):
        koji_rekor.merkle.verify_consistency(second, first, second_root, first_root, proof)


@pytest.mark.parametrize('second', range(1, 65))
def test_consistency_proofs_between_all_sizes_up_to_64_verify_and_resist_changes(big_log,
                                                                                  second):
    for first in range(1, second + 1):
        check_consistency_pair(big_log, first, second)


def sampled_pairs():
    rng = random.Random(9162)
    pairs = {(1, 300), (2, 300), (128, 300), (255, 256), (256, 257), (257, 300), (299, 300),
             (64, 65), (65, 300), (100, 200), (150, 151), (300, 300)}
    while len(pairs) < 250:
        first, second = sorted(rng.sample(range(1, LOG_SIZE + 1), 2))
        pairs.add((first, second))
    return sorted(pairs)


def test_sampled_consistency_proofs_up_to_300_verify_and_resist_changes(big_log):
    for first, second in sampled_pairs():
        check_consistency_pair(big_log, first, second)


def test_consistency_with_equal_sizes_needs_equal_roots(big_log):
    for size in (1, 2, 7, 64, 300):
        root = big_log.root_hash(size)
        koji_rekor.merkle.verify_consistency(size, size, root, root, [])
        with pytest.raises(VerificationError, match='two roots for tree size %d' % size):
            koji_rekor.merkle.verify_consistency(size, size, root, flip(root), [])
        with pytest.raises(VerificationError, match='two roots'):
            koji_rekor.merkle.verify_consistency(size, size, root, big_log.root_hash(size - 1), [])
        with pytest.raises(VerificationError):
            koji_rekor.merkle.verify_consistency(size, size, root, root, [root])


def test_consistency_from_the_empty_tree_always_holds(big_log):
    assert koji_rekor.merkle.verify_consistency(0, 0, EMPTY_ROOT, EMPTY_ROOT, []) is None
    for size in (1, 5, 64, 300):
        # Whatever root the empty tree is said to have: nothing to prove.
        for first_root in (EMPTY_ROOT, b'\x00' * 32):
            assert koji_rekor.merkle.verify_consistency(0, size, first_root, big_log.root_hash(size),
                                                []) is None
        # ... and a proof that claims to prove something is not one.
        with pytest.raises(VerificationError, match='from the empty tree must be empty'):
            koji_rekor.merkle.verify_consistency(0, size, EMPTY_ROOT, big_log.root_hash(size),
                                         [big_log.root_hash(size)])
    with pytest.raises(VerificationError, match='two roots for tree size 0'):
        koji_rekor.merkle.verify_consistency(0, 0, EMPTY_ROOT, b'\x00' * 32, [])


def test_consistency_fails_when_the_tree_shrinks_or_the_proof_is_empty(big_log):
    with pytest.raises(VerificationError, match='^consistency: tree shrank from 10 to 9$'):
        koji_rekor.merkle.verify_consistency(10, 9, big_log.root_hash(10), big_log.root_hash(9), [])
    with pytest.raises(VerificationError, match='tree shrank from 1 to 0'):
        koji_rekor.merkle.verify_consistency(1, 0, big_log.root_hash(1), EMPTY_ROOT, [])
    for first, second in ((1, 2), (4, 8), (5, 9)):
        with pytest.raises(VerificationError, match='^consistency: empty proof$'):
            koji_rekor.merkle.verify_consistency(first, second, big_log.root_hash(first),
                                         big_log.root_hash(second), [])


# --- entries the local log renders -------------------------------------------

SHARD_OFFSET = 5000
FIRST_SHARD, SECOND_SHARD = 5, 7


@pytest.fixture(scope='module')
def sharded_log():
    """A log whose first tree starts at global index 5000, then rotated."""
    log = RekorLog(index_offset=SHARD_OFFSET)
    for number in range(FIRST_SHARD):
        log.add_entry(rpm_body(1000 + number), integrated_time=INTEGRATED)
    first_tree = log.tree_id
    second_tree = log.rotate_shard()
    for number in range(SECOND_SHARD):
        log.add_entry(rpm_body(2000 + number), integrated_time=INTEGRATED)
    assert log.inactive_tree_ids == [first_tree] and log.tree_id == second_tree
    return log


def local_key(log):
    return koji_rekor.logkey.load_log_key(log.public_key_pem)


def test_entries_rendered_by_the_log_verify_in_both_shards(sharded_log):
    key = local_key(sharded_log)
    first_tree, second_tree = sharded_log.inactive_tree_ids[0], sharded_log.tree_id
    for position, entry in enumerate(sharded_log.entries):
        entry_id, document = sharded_log.render_entry(entry)
        verified = koji_rekor.verify.verify_log_entry(entry_id, document[entry_id], key, LOCAL_HOST)
        in_first = position < FIRST_SHARD
        assert verified.log_index == SHARD_OFFSET + position
        assert verified.tree_index == (position if in_first else position - FIRST_SHARD)
        assert verified.tree_index != verified.log_index
        assert verified.tree_id == (first_tree if in_first else second_tree)
        assert verified.tree_size == (FIRST_SHARD if in_first else SECOND_SHARD)
        assert verified.checkpoint.origin == '%s - %d' % (LOCAL_HOST, verified.tree_id)
        assert verified.body['spec']['package']['headers']['Name'] == (
            'pkg%d' % ((1000 + position) if in_first else (2000 + position - FIRST_SHARD)))


def test_entries_rendered_by_the_log_fail_with_another_origin_host(sharded_log):
    key = local_key(sharded_log)
    for entry in (sharded_log.entries[0], sharded_log.entries[-1]):
        entry_id, document = sharded_log.render_entry(entry)
        with pytest.raises(VerificationError, match=r"^checkpoint: origin '127\.0\.0\.1 - \d+' "
                                                    r"is not log localhost$"):
            koji_rekor.verify.verify_log_entry(entry_id, document[entry_id], key, 'localhost')


def test_entries_rendered_by_the_log_fail_with_another_key(sharded_log):
    entry_id, document = sharded_log.render_entry(sharded_log.entries[-1])
    other = koji_rekor.logkey.load_log_key(RekorLog().public_key_pem)
    with pytest.raises(VerificationError, match=LOG_ID_FAILS):
        koji_rekor.verify.verify_log_entry(entry_id, document[entry_id], other, LOCAL_HOST)


def test_bare_uuid_needs_the_tree_id_from_elsewhere(sharded_log):
    key = local_key(sharded_log)
    entry = sharded_log.entries[-1]
    entry_id, document = sharded_log.render_entry(entry)
    with pytest.raises(VerificationError, match='^no tree ID'):
        koji_rekor.verify.verify_log_entry(entry.uuid, document[entry_id], key, LOCAL_HOST)
    verified = koji_rekor.verify.verify_log_entry(entry.uuid, document[entry_id], key, LOCAL_HOST,
                                          tree_id=sharded_log.tree_id)
    assert verified.uuid == entry.uuid
    with pytest.raises(VerificationError, match=CHECKPOINT_TREE_FAILS):
        koji_rekor.verify.verify_log_entry(entry.uuid, document[entry_id], key, LOCAL_HOST,
                                   tree_id=sharded_log.inactive_tree_ids[0])


def test_an_older_view_and_a_newer_view_are_consistent():
    log = RekorLog()
    key = local_key(log)
    for number in range(11):
        log.add_entry(rpm_body(number), integrated_time=INTEGRATED)
    entry_id, old = log.render_entry(log.entries[3])
    for number in range(11, 40):
        log.add_entry(rpm_body(number), integrated_time=INTEGRATED)
    new_id, new = log.render_entry(log.entries[3])
    assert new_id == entry_id
    before = koji_rekor.verify.verify_log_entry(entry_id, old[entry_id], key, LOCAL_HOST)
    after = koji_rekor.verify.verify_log_entry(entry_id, new[entry_id], key, LOCAL_HOST)
    assert (before.tree_size, after.tree_size) == (11, 40)
    root, proof = log.consistency_proof(11, 40)
    assert root == after.root_hash
    koji_rekor.merkle.verify_consistency(11, 40, before.root_hash, after.root_hash, proof)
    with pytest.raises(VerificationError):
        koji_rekor.merkle.verify_consistency(11, 40, after.root_hash, before.root_hash, proof)


# Lies the local log can tell when it renders an entry, and what catches them.
RENDER_TAMPERING = {
    'proof_hash': ROOT_FAILS,
    'root_hash': ROOT_FAILS,
    'checkpoint_signature': CHECKPOINT_SIGNATURE_FAILS,
    'checkpoint_key': CHECKPOINT_SIGNATURE_FAILS,
    'checkpoint_origin': r"^checkpoint: origin 'rekor\.impostor\.test - \d+' is not log "
                         r"127\.0\.0\.1$",
    'checkpoint_size': r'^checkpoint is for size \d+ root [0-9a-f]+, proof for size',
    'set': SET_FAILS,
    'set_key': SET_FAILS,
    'log_id': LOG_ID_FAILS,
    'log_index': SET_FAILS,
    'integrated_time': SET_FAILS,
    'entry_uuid': UUID_FAILS,
    'no_checkpoint': NO_CHECKPOINT_FAILS,
    'no_set': r'^no signed entry timestamp$',
    'tree_index': r'^inclusion proof: index \d+ is not below tree size \d+$',
}


def test_render_tampering_table_covers_every_render_time_lie():
    # forked_checkpoint verifies as an entry: only a consistency proof
    # catches it (test_monitor, test_busy_log).
    assert set(RENDER_TAMPERING) == TAMPER_MODES - {'body_hash', 'body_key',
                                                     'forked_checkpoint'}


@pytest.mark.parametrize('shard', ['inactive', 'active'])
@pytest.mark.parametrize('mode', sorted(RENDER_TAMPERING))
def test_a_lie_told_by_the_local_log_is_caught_by_the_right_check(sharded_log, mode, shard):
    entry = sharded_log.entries[1 if shard == 'inactive' else -2]
    entry_id, document = sharded_log.render_entry(entry, tamper=mode)
    with pytest.raises(VerificationError, match=RENDER_TAMPERING[mode]):
        koji_rekor.verify.verify_log_entry(entry_id, document[entry_id], local_key(sharded_log),
                                   LOCAL_HOST)


# ---------------------------------------------------------------------------
# 4. Receipts and the verify command
# ---------------------------------------------------------------------------

class Receipt:
    """A locally logged rpm entry, its receipt and the files to check it."""

    def __init__(self, tmp_path, rekor_url='http://127.0.0.1:1', receipt_sha256=None,
                 signing_key=None, nvra='pkg99-1.0-1.noarch'):
        self.rpm = tmp_path / 'hello-1.0-1.noarch.rpm'
        self.rpm.write_bytes(b'not really an rpm, but these are the bytes logged\n' * 64)
        self.sha256 = hashlib.sha256(self.rpm.read_bytes()).hexdigest()
        self.log = RekorLog()
        for number in range(6):
            self.log.add_entry(rpm_body(number), integrated_time=INTEGRATED)
        self.entry, _ = self.log.add_entry(rpm_body(99, self.sha256, signing_key),
                                           package_sha256=self.sha256,
                                           integrated_time=INTEGRATED)
        self.log.add_entry(rpm_body(100), integrated_time=INTEGRATED)
        self.entry_id, document = self.log.render_entry(self.entry)
        self.raw = write_json(tmp_path / 'entry.json', document)
        self.path = write_json(tmp_path / 'receipt.json', {
            'rekor_url': rekor_url, 'nvra': nvra,
            'sigkey': signing_key.sigkey if signing_key else 'deadbeef',
            'sha256': receipt_sha256 or self.sha256, 'log_entry': document})
        self.key = tmp_path / 'log.pub'
        self.key.write_bytes(self.log.public_key_pem)
        self.other_rpm = tmp_path / 'other.rpm'
        self.other_rpm.write_bytes(b'some other package\n')

    def verify(self, capsys, *extra, path=None):
        return run_cli(capsys, 'verify', path or self.path, '--log-key', self.key,
                       *extra)


@pytest.fixture(autouse=True)
def no_hub_configuration(monkeypatch):
    """verify reads the hub's file when there is one; the tests use none."""
    monkeypatch.setattr(koji_rekor.config, 'CONFIG_FILE', NO_CONFIG)


@pytest.fixture
def receipt(tmp_path, keys):
    return Receipt(tmp_path, signing_key=keys['rsa'])


def test_receipt_verifies_with_the_receipts_host_as_origin(receipt, capsys):
    status, out, err = receipt.verify(capsys)
    assert (status, err) == (0, '')
    summary, key = out.splitlines()
    assert key.startswith('log key: --log-key ')
    assert summary.startswith('OK %s: log index 6 (tree %d, index 6 of 8)'
                              % (receipt.entry.uuid, receipt.log.tree_id))
    assert summary.endswith("origin '127.0.0.1 - %d'" % receipt.log.tree_id)
    assert '2023-11-14 22:13:20 UTC' in summary


def test_receipt_from_another_host_fails_the_origin_check(tmp_path, keys, capsys):
    receipt = Receipt(tmp_path, rekor_url='https://rekor.sigstore.dev', signing_key=keys['rsa'])
    status, out, err = receipt.verify(capsys)
    assert (status, out) == (1, '')
    assert err == ("koji-rekor: verification failed: checkpoint: origin '127.0.0.1 - %d' is "
                   "not log rekor.sigstore.dev\n" % receipt.log.tree_id)
    # --origin names the log instead of the receipt's URL.
    status, out, err = receipt.verify(capsys, '--origin', '127.0.0.1')
    assert (status, err) == (0, '')


def test_origin_option_is_checked_for_a_raw_entry(receipt, capsys):
    # Nothing names the log: an origin is required, never skipped.
    status, out, err = receipt.verify(capsys, path=receipt.raw)
    assert (status, out) == (2, '')
    assert err == ('koji-rekor: no origin to check the checkpoint against: pass --origin '
                   'or --url\n')
    status, out, err = receipt.verify(capsys, '--origin', 'localhost', path=receipt.raw)
    assert status == 1
    assert err.endswith("is not log localhost\n")
    status, out, err = receipt.verify(capsys, '--origin', '127.0.0.1', path=receipt.raw)
    assert (status, err) == (0, '')


def test_log_key_from_the_configuration_is_used(receipt, tmp_path, capsys):
    conf = tmp_path / 'rekor_log.conf'
    conf.write_text('[rekor]\nurl = http://127.0.0.1:1\nallow_insecure_http = true\n'
                    'log_public_key = %s\n' % receipt.key)
    status, out, err = run_cli(capsys, 'verify', receipt.path, '--config', conf)
    assert (status, err) == (0, '')
    assert out.startswith('OK %s' % receipt.entry.uuid)


def test_the_configured_origin_wins_over_the_receipts_url(receipt, tmp_path, capsys):
    conf = tmp_path / 'rekor_log.conf'
    conf.write_text('[rekor]\nurl = http://127.0.0.1:1\nallow_insecure_http = true\n'
                    'origin = rekor.example.test\nlog_public_key = %s\n' % receipt.key)
    status, out, err = run_cli(capsys, 'verify', receipt.path, '--config', conf)
    assert (status, out) == (1, '')
    assert err == ("koji-rekor: verification failed: checkpoint: origin '127.0.0.1 - %d' is "
                   "not log rekor.example.test\n" % receipt.log.tree_id)


def test_the_configured_log_key_wins_over_the_shipped_one(real, tmp_path, capsys):
    # A production entry, but this site's log is another one: its key only.
    conf = tmp_path / 'rekor_log.conf'
    conf.write_text('[rekor]\nurl = https://rekor.sigstage.dev\nlog_public_key = %s\n'
                    % os.path.join(REAL, STAGING_KEY))
    status, out, err = run_cli(capsys, 'verify', os.path.join(REAL, PRODUCTION), '--config', conf)
    assert (status, out) == (1, '')
    assert err.startswith('koji-rekor: verification failed: logID ')


def test_a_config_naming_a_missing_file_is_an_error(receipt, tmp_path, capsys):
    status, out, err = receipt.verify(capsys, '--config', tmp_path / 'nope.conf')
    assert (status, out) == (2, '')
    assert err == 'koji-rekor: %s: no such configuration file\n' % (tmp_path / 'nope.conf')


@pytest.mark.parametrize('field, value, message', [
    ('nvra', 'pkg98-1.0-1.noarch', 'receipt records pkg98-1.0-1.noarch, the entry logged '
                                   'pkg99-1.0-1.noarch'),
    ('nvra', 'pkg99-1.0-1.x86_64', 'receipt records pkg99-1.0-1.x86_64, the entry logged '
                                   'pkg99-1.0-1.noarch'),
    ('sigkey', '0badc0de', 'receipt records sigkey 0badc0de, the entry logged another key'),
    ('sha256', '1' * 64, 'receipt records sha256 %s, the entry logged ' % ('1' * 64)),
    ('sigkey', ['x'], 'receipt: sigkey is not text'),
])
def test_the_receipts_own_fields_are_checked_against_the_body(receipt, capsys, field, value,
                                                              message):
    data = read_json(receipt.path)
    data[field] = value
    write_json(pathlib.Path(receipt.path), data)
    status, out, err = receipt.verify(capsys)
    assert (status, out) == (1, '')
    assert err.startswith('koji-rekor: verification failed: ' + message)


def test_local_receipt_without_log_key_cannot_start(receipt, capsys):
    status, out, err = run_cli(capsys, 'verify', receipt.path)
    assert (status, out) == (2, '')
    # The receipt names its log (rekor_url); it does not supply the key.
    assert err == ('koji-rekor: cannot check %s: no key for the log it names, %s: pass '
                   '--log-key, or --config with [rekor] log_public_key\n'
                   % (receipt.path, 'http://127.0.0.1:1'))


def test_rpm_whose_sha256_was_logged_passes(receipt, capsys):
    status, out, err = receipt.verify(capsys, '--rpm', receipt.rpm)
    assert (status, err) == (0, '')
    assert out.startswith('OK %s' % receipt.entry.uuid)
    # A raw entry, without a receipt, checks the RPM against the body alone.
    status, out, err = receipt.verify(capsys, '--rpm', receipt.rpm, '--origin', '127.0.0.1',
                                      path=receipt.raw)
    assert (status, err) == (0, '')


def test_another_rpm_fails(receipt, capsys):
    status, out, err = receipt.verify(capsys, '--rpm', receipt.other_rpm)
    assert (status, out) == (1, '')
    other = hashlib.sha256(receipt.other_rpm.read_bytes()).hexdigest()
    assert err == ('koji-rekor: verification failed: %s has sha256 %s, the entry logged %s\n'
                   % (receipt.other_rpm, other, receipt.sha256))


def test_rpm_is_checked_against_the_receipts_sha256_too(tmp_path, keys, capsys):
    receipt = Receipt(tmp_path, receipt_sha256='0' * 64, signing_key=keys['rsa'])
    status, out, err = receipt.verify(capsys, '--rpm', receipt.rpm)
    assert (status, out) == (1, '')
    assert err.startswith('koji-rekor: verification failed: receipt records sha256 %s'
                          % ('0' * 64))


def test_missing_rpm_cannot_be_checked(receipt, tmp_path, capsys):
    status, out, err = receipt.verify(capsys, '--rpm', tmp_path / 'missing.rpm')
    assert (status, out) == (2, '')
    assert err == 'koji-rekor: no such file: %s\n' % (tmp_path / 'missing.rpm')


def test_rpm_option_on_a_hashedrekord_entry_needs_an_rpm_entry(real, receipt, capsys):
    status, out, err = run_cli(capsys, 'verify', os.path.join(REAL, PRODUCTION), '--rpm',
                               receipt.rpm)
    assert (status, out) == (2, '')
    assert err == 'koji-rekor: --rpm needs an rpm entry, this is hashedrekord\n'


def test_tampered_receipt_fails(receipt, capsys):
    data = read_json(receipt.path)
    (entry_id, entry), = data['log_entry'].items()
    entry['integratedTime'] += 1
    write_json(pathlib.Path(receipt.path), data)
    status, out, err = receipt.verify(capsys)
    assert (status, out) == (1, '')
    assert err == ('koji-rekor: verification failed: signed entry timestamp: does not verify '
                   'with the log key\n')


def test_verify_receipt_as_a_real_command(receipt):
    done = subprocess.run(
        [sys.executable, '-m', 'koji_rekor', 'verify', receipt.path, '--log-key',
         str(receipt.key), '--rpm', str(receipt.rpm)],
        cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stderr) == (0, '')
    assert done.stdout.startswith('OK %s: ' % receipt.entry.uuid)
    done = subprocess.run(
        [sys.executable, '-m', 'koji_rekor', 'verify', receipt.path, '--log-key',
         str(receipt.key), '--rpm', str(receipt.other_rpm)],
        cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr.startswith('koji-rekor: verification failed: ')
    assert 'Traceback' not in done.stderr


BAD_FILES = {
    'missing': (None, r'^koji-rekor: cannot read .*missing\.json: No such file or directory$'),
    'not-json': ('{"this is": not json', r'^koji-rekor: .*not-json\.json is not JSON$'),
    'empty': ('', r'^koji-rekor: .*empty\.json is not JSON$'),
    'two-entries': ({'a' * 80: {}, 'b' * 80: {}},
                    r'^koji-rekor: .*two-entries\.json holds no single Rekor entry$'),
    'no-entries': ({}, r'^koji-rekor: .*no-entries\.json holds no single Rekor entry$'),
    'a-list': ([1, 2], r'^koji-rekor: .*a-list\.json holds no single Rekor entry$'),
    'entry-not-object': ({'a' * 80: 'x'},
                         r'^koji-rekor: .*entry-not-object\.json holds no single Rekor entry$'),
    'receipt-two-entries': ({'rekor_url': 'http://127.0.0.1:1',
                             'log_entry': {'a' * 80: {}, 'b' * 80: {}}},
                            r'^koji-rekor: .*receipt-two-entries\.json holds no single Rekor '
                            r'entry$'),
}


@pytest.mark.parametrize('case', sorted(BAD_FILES))
def test_bad_input_file_exits_2_with_one_line(receipt, tmp_path, capsys, case):
    content, message = BAD_FILES[case]
    path = tmp_path / ('%s.json' % case)
    if isinstance(content, str):
        path.write_text(content)
    elif content is not None:
        write_json(path, content)
    status, out, err = receipt.verify(capsys, path=path)
    assert (status, out) == (2, '')
    assert one_line(err)
    assert re.match(message, err.rstrip('\n'))


@pytest.mark.parametrize('case', ['missing', 'not-pem', 'truncated-pem'])
def test_bad_log_key_file_exits_2_with_one_line(receipt, tmp_path, capsys, case):
    key = tmp_path / 'key.pem'
    if case == 'not-pem':
        key.write_text('not a key\n')
    elif case == 'truncated-pem':
        key.write_text('-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n')
    status, out, err = run_cli(capsys, 'verify', receipt.path, '--log-key', key)
    assert (status, out) == (2, '')
    assert one_line(err)
    assert err.startswith('koji-rekor: ')


def test_entry_missing_fields_is_a_verification_failure(receipt, tmp_path, capsys):
    (entry_id, entry), = read_json(receipt.raw).items()
    del entry['verification']['inclusionProof']['hashes']
    path = write_json(tmp_path / 'broken.json', {entry_id: entry})
    status, out, err = receipt.verify(capsys, '--origin', '127.0.0.1', path=path)
    assert (status, out) == (1, '')
    assert err == 'koji-rekor: verification failed: entry is missing fields or malformed\n'


def test_load_log_key_rejects_what_is_not_a_pem_key():
    with pytest.raises(VerificationError, match='^not a PEM public key'):
        koji_rekor.logkey.load_log_key(b'hello')


# ---------------------------------------------------------------------------
# Malformed and unsigned fields
# ---------------------------------------------------------------------------

def test_negative_proof_index_is_rejected():
    """In a tree of 2^k leaves, the proof of the last leaf also 'verifies' for
    index -1: Python's -1 >> 1 == -1 and -1 & 1 == 1 walk the same path.
    The entry then verifies with tree_index -1."""
    log = RekorLog()
    for number in range(8):
        log.add_entry(rpm_body(number), integrated_time=INTEGRATED)
    proof = log.inclusion_proof(7, 8)
    assert not proves(-1, 8, leaf(log, 7), proof, log.root_hash(8))
    entry_id, document = log.render_entry(log.entries[7])
    entry = document[entry_id]
    entry['verification']['inclusionProof']['logIndex'] = -1
    try:
        verified = koji_rekor.verify.verify_log_entry(entry_id, entry, local_key(log), LOCAL_HOST)
    except VerificationError:
        return
    raise AssertionError('verified with tree index %d' % verified.tree_index)


def non_ascii_body(entry):
    entry['body'] = entry['body'][:-4] + '\u00e9==='


def non_ascii_set(entry):
    entry['verification']['signedEntryTimestamp'] = '\u00e9' + \
        entry['verification']['signedEntryTimestamp']


def non_ascii_checkpoint_signature(entry):
    proof = entry['verification']['inclusionProof']
    proof['checkpoint'] = proof['checkpoint'] + '\u2014 other.example \u00e9\u00e9\u00e9\u00e9\n'


def checkpoint_not_a_string(entry):
    entry['verification']['inclusionProof']['checkpoint'] = 5


MALFORMED = {'non-ascii-body': non_ascii_body, 'non-ascii-set': non_ascii_set,
             'non-ascii-checkpoint-signature': non_ascii_checkpoint_signature,
             'checkpoint-not-a-string': checkpoint_not_a_string}


@pytest.mark.parametrize('case', sorted(MALFORMED))
def test_malformed_entry_fields_are_verification_errors(receipt, case):
    (entry_id, entry), = read_json(receipt.raw).items()
    MALFORMED[case](entry)
    with pytest.raises(VerificationError):
        koji_rekor.verify.verify_log_entry(entry_id, entry, local_key(receipt.log), LOCAL_HOST)


@pytest.mark.parametrize('case', sorted(MALFORMED))
def test_verify_command_reports_malformed_entry_fields_without_traceback(receipt, tmp_path,
                                                                         capsys, case):
    (entry_id, entry), = read_json(receipt.raw).items()
    MALFORMED[case](entry)
    path = write_json(tmp_path / 'malformed.json', {entry_id: entry})
    try:
        status = koji_rekor.cli.main(['verify', path, '--log-key', str(receipt.key),
                                  '--origin', '127.0.0.1'])
    except Exception as e:  # what the interpreter would print as a traceback
        raise AssertionError('traceback: %s: %s' % (type(e).__name__, e))
    out, err = capsys.readouterr()
    assert status == 1 and err.startswith('koji-rekor: verification failed: ')


def test_without_a_set_the_unsigned_time_and_index_are_not_vouched_for(real, tmp_path,
                                                                        capsys):
    """Strip the SET of a real entry and forge its time and index: the
    command must not present the forged values as verified."""
    entry_id, entry = real_entry(PRODUCTION)
    del entry['verification']['signedEntryTimestamp']
    entry['integratedTime'] = 2000000000           # 2033-05-18
    entry['logIndex'] = 1
    path = write_json(tmp_path / 'forged.json', {entry_id: entry})
    status, out, err = run_cli(capsys, 'verify', path)
    assert (status, err) == (0, '')  # the checkpoint still signs the body and its place
    summary = out.splitlines()[0]
    assert 'log index 1 (unsigned)' in summary and '2033-05-18' in summary
    assert summary.count('(unsigned)') == 2
    notes = ' '.join(line for line in out.splitlines() if line.startswith('note: ')).lower()
    assert 'integratedtime' in notes and 'index' in notes, out


def test_without_a_set_a_local_entry_is_marked_unsigned(receipt, tmp_path, capsys):
    """The same without ../shared: a local entry whose SET is stripped."""
    (entry_id, entry), = read_json(receipt.raw).items()
    del entry['verification']['signedEntryTimestamp']
    entry['integratedTime'] = 2000000000
    entry['logIndex'] = 1
    path = write_json(tmp_path / 'forged.json', {entry_id: entry})
    status, out, err = receipt.verify(capsys, '--origin', '127.0.0.1', path=path)
    assert (status, err) == (0, '')
    summary = out.splitlines()[0]
    assert 'log index 1 (unsigned)' in summary and summary.count('(unsigned)') == 2
    assert out.splitlines()[1].startswith('note: no signed entry timestamp')


def test_an_openpgp_key_as_log_key_is_one_line(receipt, keys, capsys):
    status, out, err = run_cli(capsys, 'verify', receipt.path, '--log-key', keys['rsa'].path)
    assert (status, out) == (2, '')
    assert err == ("koji-rekor: %s: an OpenPGP key, not a log key: the log's PEM public key is "
                   'wanted (koji-rekor log-key prints it)\n' % keys['rsa'].path)


# ---------------------------------------------------------------------------
# Planted files: a FIFO, a link, a name that writes to the terminal

def test_verify_refuses_a_fifo_and_a_link_without_blocking(tmp_path):
    """A FIFO planted among the receipts held verify forever; a link was
    followed. Each is one UNREADABLE line now (a subprocess, so that a hang
    is a failure, not a stuck run)."""
    os.mkfifo(str(tmp_path / 'planted.json'))
    os.symlink('/etc/passwd', str(tmp_path / 'link.json'))
    done = subprocess.run([sys.executable, '-m', 'koji_rekor', 'verify', str(tmp_path),
                           '--url', 'http://127.0.0.1:9', '--origin', 'x'],
                          cwd=ROOT, capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 2, done.stderr
    lines = done.stdout.splitlines()
    assert 'UNREADABLE %s: %s is a symlink: not followed' % (
        tmp_path / 'link.json', tmp_path / 'link.json') in lines
    assert 'UNREADABLE %s: %s is not a regular file (a FIFO, device or directory): not read' % (
        tmp_path / 'planted.json', tmp_path / 'planted.json') in lines
    done = subprocess.run([sys.executable, '-m', 'koji_rekor', 'verify',
                           str(tmp_path / 'planted.json'), '--url', 'http://127.0.0.1:9',
                           '--origin', 'x'], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 2 and done.stderr.count('\n') == 1
    assert 'not a regular file' in done.stderr


def test_a_planted_name_cannot_write_a_fake_verified_line(tmp_path, capsys):
    name = 'x\x1b[2K\rOK all fine\n.json'
    (tmp_path / name).write_text('{}')
    status, out, err = run_cli(capsys, 'verify', tmp_path, '--url', 'http://127.0.0.1:9',
                               '--origin', 'x')
    assert status == 2
    assert '\x1b' not in out and '\r' not in out
    assert out.splitlines()[0].startswith('UNREADABLE %s/x\\x1b[2K\\rOK all fine\\n.json: '
                                          % tmp_path)


def test_log_lines_are_escaped():
    record = logging.LogRecord('koji.plugin.rekor_log', logging.WARNING, __file__, 1,
                               'rekor_log: %s', ('bad\x1b[31mname\nOK',), None)
    line = koji_rekor.cli.EscapingFormatter('%(levelname)s: %(message)s').format(record)
    assert line == 'WARNING: rekor_log: bad\\x1b[31mname\\nOK'
