"""tests/support/rekor_v2_server.py behaves as rekor-tiles does.

Its tile and Merkle code is checked against a real tile log written by
tessera (../shared/rekor-v2-real/tiles), its answers against the real
production answer, and its proofs with the project's RFC 9162 verifier.
"""

import base64
import hashlib
import json
import os
import threading
import time

import pytest
import requests
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

import koji_rekor.errors
import koji_rekor.merkle
from koji_rekor.v2 import hashedrekord
from tests.support.rekor_v2_server import (ENTRIES_PATH, RekorV2Server, Tree, bundle, leaf_hash,
                             parse_tile_path, tile_n)

from tests.support.common import ROOT  # noqa: E402
V2REAL = os.path.join(os.path.dirname(ROOT), 'shared', 'rekor-v2-real')
TILES = os.path.join(V2REAL, 'tiles', 'log')
needs_v2real = pytest.mark.skipif(not os.path.isdir(V2REAL),
                                  reason='../shared/rekor-v2-real absent')
REAL_LEAVES = [b'one', b'two', b'three', b'four', b'five', b'six', b'seven', b'eit', b'nain',
               b'ten', b'ileven', b'twelf', b'threeten', b'fourten', b'fivten']
REAL_VKEY = 'example.com/log/testdata+33d7b496+AeHTu4Q3hEIMHNqc6fASMsq3rKNx280NI+oO5xCFkkSx'


# --- helpers ------------------------------------------------------------------

SIGNER = ec.generate_private_key(ec.SECP256R1())


def request_for(data=b'', signer=SIGNER):
    """A valid hashedrekord request over sha256(data), ECDSA P-256."""
    digest = hashlib.sha256(data).digest()
    from cryptography.hazmat.primitives.asymmetric import utils
    sig = signer.sign(digest, ec.ECDSA(utils.Prehashed(hashes.SHA256())))
    der = signer.public_key().public_bytes(serialization.Encoding.DER,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashedrekord.HashedRekord(digest, hashedrekord.HASH_SHA256, sig, der,
                                     'PKIX_ECDSA_P256_SHA_256', '')


def post(log, body, timeout=30):
    if not isinstance(body, (bytes, str)):
        body = json.dumps(body)
    return requests.post(log.url + ENTRIES_PATH, data=body, timeout=timeout,
                         headers={'Content-Type': 'application/json'})


def note_parts(note):
    text, sigs = note.split(b'\n\n', 1)
    return text + b'\n', [line for line in sigs.decode().split('\n') if line]


def check_note(note, log, origin=None):
    """The log's signature line verifies over the note text."""
    text, lines = note_parts(note)
    origin = origin or log.origin
    assert text.split(b'\n')[0].decode() == origin
    own = [line for line in lines if line.split(' ')[1] == origin]
    assert len(own) == 1
    sig = base64.b64decode(own[0].split(' ')[2])
    assert sig[:4] == log.key.key_id(origin)
    public = serialization.load_der_public_key(log.key.public_der)
    if isinstance(public, ed25519.Ed25519PublicKey):
        public.verify(sig[4:], text)
    else:
        public.verify(sig[4:], text, ec.ECDSA(hashes.SHA256()))
    return text


@pytest.fixture
def log():
    with RekorV2Server(interval=0.05) as server:
        yield server


# --- against real data ----------------------------------------------------------

@needs_v2real
def test_tree_tiles_and_bundles_match_a_real_tessera_log():
    tree = Tree()
    for size, leaf in enumerate(REAL_LEAVES, 1):
        tree.append(leaf_hash(leaf))
        with open(os.path.join(TILES, 'checkpoint.%d' % size), 'rb') as fo:
            real = fo.read()
        assert real.split(b'\n')[1] == str(size).encode()
        assert base64.b64decode(real.split(b'\n')[2]) == tree.root(size)
        with open(os.path.join(TILES, 'tile', '0', '000.p', str(size)), 'rb') as fo:
            assert fo.read() == tree.tile(0, 0, size)
        with open(os.path.join(TILES, 'tile', 'entries', '000.p', str(size)), 'rb') as fo:
            assert fo.read() == bundle(REAL_LEAVES[:size])
    for index in range(15):
        proof = tree.inclusion(index, 15)
        assert koji_rekor.merkle.root_from_inclusion_proof(
            index, 15, leaf_hash(REAL_LEAVES[index]), proof) == tree.root(15)


@needs_v2real
def test_real_checkpoint_signature_as_the_double_signs():
    """The double's Ed25519 key id and line format are the real ones."""
    name, key_id, vkey = REAL_VKEY.split('+', 2)
    raw = base64.b64decode(vkey)
    assert raw[0] == 1 and hashlib.sha256(name.encode() + b'\n' + raw).digest()[:4].hex() == key_id
    with open(os.path.join(TILES, 'checkpoint'), 'rb') as fo:
        note = fo.read()
    text, lines = note_parts(note)
    (line,) = lines
    assert line.startswith('\u2014 %s ' % name)
    sig = base64.b64decode(line.split(' ')[2])
    assert sig[:4].hex() == key_id
    ed25519.Ed25519PublicKey.from_public_bytes(raw[1:]).verify(sig[4:], text)


@needs_v2real
def test_production_checkpoint_signed_as_the_double_signs():
    """The production shard's 201 checkpoint verifies with its key from the
    TrustedRoot by the double's formulas: key hash SHA-256(origin, 0x0A,
    0x01, key) as logId.keyId, its first 4 bytes as the line's key hint,
    Ed25519 over the note text."""
    with open(os.path.join(V2REAL, 'trustroot', 'public-good.trusted_root.json')) as fo:
        (tlog,) = [t for t in json.load(fo)['tlogs'] if 'log2025-1' in t['baseUrl']]
    with open(os.path.join(V2REAL, 'entries',
                           'log2025-1.idx412114.hashedrekord.create-response.json')) as fo:
        real = json.load(fo)
    public = serialization.load_der_public_key(base64.b64decode(tlog['publicKey']['rawBytes']))
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    origin = 'log2025-1.rekor.sigstore.dev'
    key_hash = hashlib.sha256(origin.encode() + b'\n\x01' + raw).digest()
    assert base64.b64encode(key_hash).decode() == real['logId']['keyId'] == \
        tlog['logId']['keyId']
    text, lines = note_parts(real['inclusionProof']['checkpoint']['envelope'].encode())
    (line,) = lines
    sig = base64.b64decode(line.split(' ')[2])
    assert line.split(' ')[1] == origin and sig[:4] == key_hash[:4]
    public.verify(sig[4:], text)


@needs_v2real
def test_201_has_the_production_answers_shape(log):
    with open(os.path.join(V2REAL, 'entries',
                           'log2025-1.idx412114.hashedrekord.create-response.json')) as fo:
        real = json.load(fo)
    answer = post(log, request_for(b'shape').request())
    assert answer.status_code == 201
    ours = answer.json()
    assert list(ours) == list(real)
    assert list(ours['inclusionProof']) == list(real['inclusionProof'])
    assert (ours['integratedTime'], ours['inclusionPromise']) == ('0', None)
    assert ours['kindVersion'] == real['kindVersion']
    for field in ('logIndex',):
        assert isinstance(ours[field], str)


# --- the write API ------------------------------------------------------------

def test_201_verifies(log):
    entry = request_for(b'hello')
    answer = post(log, entry.request())
    assert answer.status_code == 201
    tle = answer.json()
    body = base64.b64decode(tle['canonicalizedBody'])
    assert body == entry.canonical_body()  # the log stores the body the client builds
    proof = tle['inclusionProof']
    index, size = int(proof['logIndex']), int(proof['treeSize'])
    assert index == int(tle['logIndex']) == 0 and size >= 1
    text = check_note(proof['checkpoint']['envelope'].encode(), log)
    assert text.split(b'\n')[1] == str(size).encode()
    assert base64.b64decode(text.split(b'\n')[2]) == base64.b64decode(proof['rootHash'])
    assert koji_rekor.merkle.root_from_inclusion_proof(
        index, size, leaf_hash(body), [base64.b64decode(h) for h in proof['hashes']]
    ) == base64.b64decode(proof['rootHash'])
    assert base64.b64decode(tle['logId']['keyId']) == hashlib.sha256(
        log.origin.encode() + b'\n\x01' + log.key.public_key.public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw)).digest()


def test_post_blocks_until_a_checkpoint_covers_the_entry(log):
    log.paused = True
    answers = []
    thread = threading.Thread(target=lambda: answers.append(post(log, request_for(b'x')
                                                                 .request())))
    thread.start()
    deadline = time.monotonic() + 10
    while log.tree.size < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert log.tree.size == 1
    thread.join(0.5)
    assert thread.is_alive() and not answers  # sequenced, not yet published
    log.paused = False
    log.publish_now()
    thread.join(10)
    assert answers[0].status_code == 201
    assert answers[0].json()['inclusionProof']['treeSize'] == '1'


def test_duplicate_answers_409_with_x_log_index(log):
    entry = request_for(b'dup')
    assert post(log, request_for(b'first').request()).status_code == 201
    first = post(log, entry.request())
    again = post(log, entry.request())
    assert again.status_code == 409
    assert again.headers['x-log-index'] == first.json()['logIndex'] == '1'
    assert again.json()['code'] == 6
    assert log.tree.size == 2


@pytest.mark.parametrize('mutate', [
    lambda r: r['hashedRekordRequestV002'].update(extra='x'),
    lambda r: r.update(somethingElse={}),
    lambda r: r['hashedRekordRequestV002']['signature']['verifier'].update(keyDetails=7),
])
def test_unknown_fields_and_pure_ed25519_are_400(log, mutate):
    request = request_for(b'u').request()
    mutate(request)
    answer = post(log, request)
    assert answer.status_code == 400 and answer.json()['code'] == 3
    assert log.tree.size == 0


def test_protojson_proto_names_and_certificates_are_accepted(log):
    """protojson takes a field by its proto name too; a verifier may be an
    X.509 certificate (pkg/types/hashedrekord extractVerifier)."""
    import datetime
    from cryptography import x509
    from cryptography.x509.oid import NameOID
    entry = request_for(b'snake')
    request = entry.request()['hashedRekordRequestV002']
    snake = {'hashed_rekord_request_v002': {
        'digest': request['digest'].rstrip('='),
        'signature': {'content': request['signature']['content'],
                      'verifier': {'public_key': {'raw_bytes': request['signature'][
                          'verifier']['publicKey']['rawBytes']},
                          'key_details': 5}}}}
    assert post(log, snake).status_code == 201
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, 'signer')])
    now = datetime.datetime.now(datetime.timezone.utc)
    from tests.integration.test_v2w_server import SIGNER as key
    cert = x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(
        key.public_key()).serial_number(1).not_valid_before(now).not_valid_after(
        now + datetime.timedelta(days=1)).sign(key, hashes.SHA256())
    other = request_for(b'cert')
    body = other.request()
    verifier = body['hashedRekordRequestV002']['signature']['verifier']
    del verifier['publicKey']
    verifier['x509Certificate'] = {'rawBytes': base64.b64encode(
        cert.public_bytes(serialization.Encoding.DER)).decode()}
    answer = post(log, body)
    assert answer.status_code == 201
    logged = json.loads(base64.b64decode(answer.json()['canonicalizedBody']))
    assert 'x509Certificate' in logged['spec']['hashedRekordV002']['signature']['verifier']
    both = other.request()
    both['hashedRekordRequestV002']['signature']['verifier']['x509Certificate'] = \
        verifier['x509Certificate']
    assert post(log, both).status_code == 400


def test_invalid_requests_are_400_without_a_reason(log):
    entry = request_for(b'v')
    pem = serialization.load_der_public_key(entry.public_key).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    bad = [
        entry.__class__(entry.digest, 8, entry.signature, pem, entry.key_details, ''),
        entry.__class__(entry.digest, 8, entry.signature, entry.public_key,
                        'PKIX_ECDSA_P384_SHA_384', ''),
        entry.__class__(hashlib.sha256(b'other').digest(), 8, entry.signature,
                        entry.public_key, entry.key_details, ''),
        entry.__class__(entry.digest, 8, b'', entry.public_key, entry.key_details, ''),
    ]
    for request in bad:
        answer = post(log, request.request())
        assert answer.status_code == 400
        assert answer.json()['message'] == 'invalid hashedrekord request'
    assert post(log, b'not json').status_code == 400
    assert log.tree.size == 0


def test_rsa_signature_must_be_modulus_length(log):
    from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils
    key = rsa.generate_private_key(65537, 2048)
    der = key.public_key().public_bytes(serialization.Encoding.DER,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    for n in range(3000):
        digest = hashlib.sha256(b'%d' % n).digest()
        sig = key.sign(digest, padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))
        if sig[0] == 0:
            break
    else:
        pytest.skip('no signature with a leading zero byte in 3000 tries')
    entry = hashedrekord.HashedRekord(digest, 8, sig[1:], der, 'PKIX_RSA_PKCS1V15_2048_SHA256',
                                      '')
    assert post(log, entry.request()).status_code == 400
    assert post(log, entry.__class__(digest, 8, sig, der, entry.key_details, '')
                .request()).status_code == 201


def test_switches(log):
    log.unavailable = 1
    assert post(log, request_for(b's').request()).status_code == 503
    log.internal_errors = 1
    assert post(log, request_for(b's').request()).status_code == 500
    log.frozen = True
    frozen = post(log, request_for(b's').request())
    assert frozen.status_code == 405 and 'frozen' in frozen.text
    log.frozen = False
    assert post(log, request_for(b's').request()).status_code == 201


# --- reads --------------------------------------------------------------------

def test_tile_paths():
    assert tile_n(1234067) == 'x001/x234/067' and tile_n(5) == '005'
    assert parse_tile_path('/tile/0/x001/x234/067.p/8') == (0, 1234067, 8)
    assert parse_tile_path('/tile/entries/001') == ('entries', 1, None)
    for bad in ('/tile/0/1', '/tile/0/x001', '/tile/0/000.p/256', '/tile/0/000.p/0',
                '/tile/64/000', '/tile/0/001/002'):
        assert parse_tile_path(bad) is None


def test_tiles_partial_and_full(log):
    log.paused = True
    bodies = []
    for n in range(300):
        body = request_for(b'%d' % n).canonical_body()
        bodies.append(body)
        with log.cond:
            log.tree.append(leaf_hash(body))
            log.bodies.append(body)
    log.publish_now()
    get = lambda p: requests.get(log.url + p, timeout=10)  # noqa: E731
    full = get('/tile/0/000')
    assert full.status_code == 200 and full.content == b''.join(
        leaf_hash(b) for b in bodies[:256])
    assert get('/tile/0/001.p/44').content == b''.join(leaf_hash(b) for b in bodies[256:])
    assert get('/tile/0/001.p/43').content == b''.join(leaf_hash(b) for b in bodies[256:299])
    assert get('/tile/0/000.p/200').status_code == 404  # the tile is full: collected
    assert get('/tile/0/001').status_code == 404       # not full yet
    assert get('/tile/entries/001.p/44').content == bundle(bodies[256:])
    assert get('/tile/entries/000').content == bundle(bodies[:256])
    # Level 1 holds the roots of each 256 leaves: one so far.
    assert get('/tile/1/000.p/1').content == log.tree.root(256)
    assert get('/tile/1/000.p/2').status_code == 404
    note = get('/checkpoint').content
    assert check_note(note, log).split(b'\n')[1] == b'300'


def test_witness_lines_in_either_order():
    for first in (False, True):
        with RekorV2Server(interval=0.05, witnesses=2, witness_first=first) as log:
            note = post(log, request_for(b'w').request()).json()[
                'inclusionProof']['checkpoint']['envelope'].encode()
            _, lines = note_parts(note)
            names = [line.split(' ')[1] for line in lines]
            assert len(lines) == 3 and names.index(log.origin) == (2 if first else 0)
            check_note(note, log)


def test_ecdsa_checkpoint_key():
    with RekorV2Server(interval=0.05, key='ecdsa', origin='log.example.test') as log:
        tle = post(log, request_for(b'e').request()).json()
        assert base64.b64decode(tle['logId']['keyId']) == hashlib.sha256(
            log.key.public_der).digest()
        check_note(tle['inclusionProof']['checkpoint']['envelope'].encode(), log)


# --- lies ---------------------------------------------------------------------

def test_lies(log):
    entry = request_for(b'lie')
    post(log, request_for(b'before').request())
    log.lie = 'body'
    tle = post(log, entry.request()).json()
    assert base64.b64decode(tle['canonicalizedBody']) != entry.canonical_body()
    log.lie = 'proof'
    tle = post(log, request_for(b'p').request()).json()
    proof = tle['inclusionProof']
    with pytest.raises(koji_rekor.errors.VerificationError):
        got = koji_rekor.merkle.root_from_inclusion_proof(
            int(proof['logIndex']), int(proof['treeSize']),
            leaf_hash(base64.b64decode(tle['canonicalizedBody'])),
            [base64.b64decode(h) for h in proof['hashes']])
        if got != base64.b64decode(proof['rootHash']):
            raise koji_rekor.errors.VerificationError('root differs')
    log.lie = 'checkpoint_signature'
    tle = post(log, request_for(b'c').request()).json()
    with pytest.raises(Exception):
        check_note(tle['inclusionProof']['checkpoint']['envelope'].encode(), log)
    log.lie = 'origin'
    note = post(log, request_for(b'o').request()).json()['inclusionProof']['checkpoint'][
        'envelope'].encode()
    assert note.split(b'\n')[0].decode() != log.origin
    log.lie = 'bundle'
    assert requests.get(log.url + '/tile/entries/000.p/%d' % log.tree.size, timeout=10
                        ).content != bundle(log.bodies)
    log.lie = 'tile'
    assert requests.get(log.url + '/tile/0/000.p/%d' % log.tree.size, timeout=10
                        ).content != log.tree.tile(0, 0, log.tree.size)
