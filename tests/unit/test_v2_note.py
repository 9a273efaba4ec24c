"""koji_rekor.v2.note: C2SP signed notes and checkpoints, against real ones."""

import base64
import glob
import json
import os

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from koji_rekor.v2 import note

from tests.support.common import ROOT  # noqa: E402
REAL = os.path.join(os.path.dirname(ROOT), 'shared', 'rekor-v2-real')
TILES = os.path.join(REAL, 'tiles', 'log')
# From ../shared/rekor-v2-real/README.md: the tessera test log's verifier key.
VKEY = 'example.com/log/testdata+33d7b496+AeHTu4Q3hEIMHNqc6fASMsq3rKNx280NI+oO5xCFkkSx'
ORIGIN = 'example.com/log/testdata'

needs_real = pytest.mark.skipif(not os.path.isdir(REAL), reason='no ../shared/rekor-v2-real')


def read(path):
    with open(path, 'rb') as fo:
        return fo.read()


def checkpoints():
    return sorted(glob.glob(os.path.join(TILES, 'checkpoint*')))


@needs_real
def test_every_real_checkpoint_verifies():
    key = note.parse_vkey(VKEY)
    assert key.key_id.hex() == '33d7b496'
    paths = checkpoints()
    assert len(paths) == 17
    sizes = set()
    for p in paths:
        cp = note.verify_checkpoint(read(p), key, ORIGIN)
        assert cp.origin == ORIGIN and len(cp.root_hash) == 32
        sizes.add(cp.size)
        if not p.endswith('checkpoint'):
            assert cp.size == int(p.rsplit('.', 1)[1])
    assert sizes == set(range(16))
    # The empty tree's root is SHA-256 of nothing (RFC 6962 MTH({})).
    assert note.verify_checkpoint(read(os.path.join(TILES, 'checkpoint.0')), key).root_hash \
        == bytes.fromhex('e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855')


@needs_real
@pytest.mark.parametrize('mutate', [
    lambda s: s.replace(b'\n3\n', b'\n4\n', 1),                  # size
    lambda s: s.replace(b'Wqx3', b'Wqx4', 1),                    # root
    lambda s: s.replace(b'testdata\n3', b'testdatb\n3', 1),      # origin, signed
    lambda s: s[:-10] + (b'A' if s[-10:-9] != b'A' else b'B') + s[-9:],  # signature
])
def test_tampered_checkpoint_fails(mutate):
    key = note.parse_vkey(VKEY)
    raw = read(os.path.join(TILES, 'checkpoint.3'))
    bad = mutate(raw)
    assert bad != raw
    with pytest.raises(note.NoteError):
        note.verify_checkpoint(bad, key, ORIGIN)


@needs_real
def test_wrong_origin_and_wrong_key_fail():
    key = note.parse_vkey(VKEY)
    raw = read(os.path.join(TILES, 'checkpoint.3'))
    with pytest.raises(note.NoteError, match='origin'):
        note.verify_checkpoint(raw, key, 'example.com/other')
    other = note.note_key(ORIGIN, ed25519.Ed25519PrivateKey.generate().public_key())
    with pytest.raises(note.NoteError, match='no signature by'):
        note.verify_checkpoint(raw, other, ORIGIN)
    # Same name and key id but another key: a forged key-id collision.
    forged = note.NoteKey(ORIGIN, key.key_id, key.log_id, other.public_key)
    with pytest.raises(note.NoteError, match='does not verify'):
        note.verify_checkpoint(raw, forged, ORIGIN)


def test_vkey_with_wrong_hash_is_refused():
    with pytest.raises(note.NoteError, match='does not match'):
        note.parse_vkey(VKEY.replace('33d7b496', '33d7b497'))
    with pytest.raises(note.NoteError):
        note.parse_vkey('example.com+33d7b496')


def _sign_ed(priv, name, text, key_id=None):
    pub = note.note_key(name, priv.public_key())
    sig = priv.sign(text)
    return '\u2014 %s %s\n' % (name, base64.b64encode((key_id or pub.key_id) + sig).decode())


def test_witness_lines_in_any_order_are_ignored():
    log = ed25519.Ed25519PrivateKey.generate()
    w1 = ed25519.Ed25519PrivateKey.generate()
    origin = 'log2099.example.org'
    text = ('%s\n7\n%s\n' % (origin, base64.b64encode(b'\x07' * 32).decode())).encode()
    lines = [_sign_ed(log, origin, text), _sign_ed(w1, 'witness.example', text),
             # a cosignature line of a type we do not know (timestamped)
             '\u2014 other.witness %s\n' % base64.b64encode(b'\x01\x02\x03\x04' + b'x' * 72).decode()]
    key = note.note_key(origin, log.public_key())
    for order in ([0, 1, 2], [1, 2, 0], [2, 0, 1]):
        raw = text + b'\n' + ''.join(lines[i] for i in order).encode()
        cp = note.verify_checkpoint(raw, key, origin)
        assert (cp.size, cp.root_hash) == (7, b'\x07' * 32)
    # without the log's own line it fails, whatever else signed it
    raw = text + b'\n' + (lines[1] + lines[2]).encode()
    with pytest.raises(note.NoteError, match='no signature by'):
        note.verify_checkpoint(raw, key, origin)


def test_ecdsa_key_id_is_sha256_of_der_and_verifies():
    priv = ec.generate_private_key(ec.SECP256R1())
    der = priv.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)
    import hashlib
    origin = 'ecdsa.example'
    key = note.note_key(origin, der)
    assert key.log_id == hashlib.sha256(der).digest() and key.key_id == key.log_id[:4]
    text = ('%s\n1\n%s\next one\n' % (origin, base64.b64encode(b'\x01' * 32).decode())).encode()
    sig = priv.sign(text, ec.ECDSA(hashes.SHA256()))
    raw = text + ('\n\u2014 %s %s\n' % (origin, base64.b64encode(key.key_id + sig).decode())).encode()
    cp = note.verify_checkpoint(raw, key)
    assert cp.extensions == ('ext one',)
    with pytest.raises(note.NoteError):
        note.verify_checkpoint(raw.replace(b'\n1\n', b'\n2\n'), key)


@pytest.mark.parametrize('raw', [
    b'',
    b'origin\n1\n' + base64.b64encode(b'\0' * 32) + b'\n',                 # no signatures
    b'origin\n01\n' + base64.b64encode(b'\0' * 32) + b'\n\n\xe2\x80\x94 origin AAAAAAAA\n',
    b'origin\n1\n' + base64.b64encode(b'\0' * 31) + b'\n\n\xe2\x80\x94 origin AAAAAAAA\n',
    b'origin\n1\n' + base64.b64encode(b'\0' * 32) + b'\n\n- origin AAAAAAAA\n',
    b'origin\r\n1\n' + base64.b64encode(b'\0' * 32) + b'\n\n\xe2\x80\x94 origin AAAAAAAA\n',
])
def test_malformed_notes_are_one_line_errors(raw):
    key = note.note_key('origin', ed25519.Ed25519PrivateKey.generate().public_key())
    with pytest.raises(note.NoteError) as ei:
        note.verify_checkpoint(raw, key)
    assert '\n' not in str(ei.value)


@needs_real
def test_production_entry_checkpoint_verifies_with_trusted_root_key():
    with open(os.path.join(REAL, 'trustroot', 'public-good.trusted_root.json')) as fo:
        root = json.load(fo)
    tlog = [t for t in root['tlogs'] if 'log2025-1' in t['baseUrl']][0]
    origin = tlog['baseUrl'].split('://', 1)[1]
    key = note.note_key(origin, base64.b64decode(tlog['publicKey']['rawBytes']))
    assert base64.b64encode(key.log_id).decode() == tlog['logId']['keyId']
    with open(os.path.join(REAL, 'entries',
                           'log2025-1.idx412114.hashedrekord.create-response.json')) as fo:
        entry = json.load(fo)
    cp = note.verify_checkpoint(entry['inclusionProof']['checkpoint']['envelope'], key, origin)
    assert cp.size == 412115
    assert base64.b64encode(cp.root_hash).decode() == entry['inclusionProof']['rootHash']
