"""koji_rekor.v2.entry: the real production 201 answer and the real staging
bundle verify with the real TrustedRoots; every lie is caught."""

import base64
import copy
import hashlib
import json
import os

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from koji_rekor.v2 import entry as v2entry
from koji_rekor.v2 import trust
from koji_rekor.merkle import hash_children, hash_leaf

from tests.support.common import ROOT  # noqa: E402
REAL = os.path.join(os.path.dirname(ROOT), 'shared', 'rekor-v2-real')

needs_real = pytest.mark.skipif(not os.path.isdir(REAL), reason='no ../shared/rekor-v2-real')


def read(*parts):
    with open(os.path.join(REAL, *parts), 'rb') as fo:
        return fo.read()


def jcs(obj):
    # README: for these entry shapes, sorted compact JSON is the JCS form.
    return json.dumps(obj, sort_keys=True, separators=(',', ':')).encode()


@pytest.fixture
def prod():
    data = json.loads(read('entries', 'log2025-1.idx412114.hashedrekord.create-response.json'))
    root = trust.parse_trusted_root(read('trustroot', 'public-good.trusted_root.json'))
    # The body as the signer built it: decode, then the canonical form again.
    body = jcs(json.loads(base64.b64decode(data['canonicalizedBody'])))
    return data, body, root


@pytest.fixture
def staging():
    bundle = json.loads(read('entries', 'log2025-alpha1.idx645.hashedrekord.bundle.json'))
    root = trust.parse_trusted_root(read('trustroot', 'staging.trusted_root.json'))
    ms = bundle['messageSignature']
    # The hashedrekord v0.0.2 body, built from the bundle and the artifact,
    # not taken from the entry.
    assert base64.b64decode(ms['messageDigest']['digest']) == \
        hashlib.sha256(read('entries', 'log2025-alpha1.idx645.artifact.txt')).digest()
    body = jcs({'apiVersion': '0.0.2', 'kind': 'hashedrekord', 'spec': {'hashedRekordV002': {
        'data': {'algorithm': 'SHA2_256', 'digest': ms['messageDigest']['digest']},
        'signature': {'content': ms['signature'], 'verifier': {
            'keyDetails': 'PKIX_ECDSA_P256_SHA_256',
            'x509Certificate': {'rawBytes': bundle['verificationMaterial']['certificate']
                                ['rawBytes']}}}}}})
    return bundle, body, root


@needs_real
def test_production_201_answer_verifies(prod):
    data, body, root = prod
    v = v2entry.verify_entry(data, body, root)
    assert v.log.origin == 'log2025-1.rekor.sigstore.dev'
    assert (v.entry.log_index, v.checkpoint.size) == (412114, 412115)
    assert v.entry.integrated_time == 0 and not v.entry.has_promise
    # also from bytes, and parsed once into the model
    e = v2entry.parse_entry(json.dumps(data).encode())
    assert v2entry.verify_entry(e, body, root.logs).entry == e


@needs_real
def test_staging_bundle_verifies(staging):
    bundle, body, root = staging
    e = v2entry.entry_from_bundle(bundle)
    v = v2entry.verify_entry(e, body, root)
    assert v.log.origin == 'log2025-alpha1.rekor.sigstage.dev'
    assert (e.log_index, v.checkpoint.size) == (645, 646)
    # the staging log's key window ended in 2025; a v2 entry has no time,
    # so that window is not held against it.
    assert v.log.valid.end is not None


@needs_real
def test_production_entry_does_not_verify_with_staging_root(prod):
    data, body, _ = prod
    staging_root = trust.parse_trusted_root(read('trustroot', 'staging.trusted_root.json'))
    with pytest.raises(v2entry.EntryError, match='no trusted log'):
        v2entry.verify_entry(data, body, staging_root)


def b64(b):
    return base64.b64encode(b).decode()


def flip(b64text):
    raw = bytearray(base64.b64decode(b64text))
    raw[len(raw) // 2] ^= 1
    return b64(bytes(raw))


LIES = {
    'body': lambda d: d.__setitem__('canonicalizedBody', b64(
        base64.b64decode(d['canonicalizedBody']).replace(b'SHA2_256', b'SHA2_384'))),
    'proof hash': lambda d: d['inclusionProof']['hashes'].__setitem__(
        3, flip(d['inclusionProof']['hashes'][3])),
    'proof too short': lambda d: d['inclusionProof']['hashes'].pop(),
    'proof root': lambda d: d['inclusionProof'].__setitem__(
        'rootHash', flip(d['inclusionProof']['rootHash'])),
    'proof size': lambda d: d['inclusionProof'].__setitem__(
        'treeSize', str(int(d['inclusionProof']['treeSize']) + 1)),
    'proof index': lambda d: d['inclusionProof'].__setitem__('logIndex', '1'),
    'entry index': lambda d: (d.__setitem__('logIndex', '412113'),
                              d['inclusionProof'].__setitem__('logIndex', '412113')),
    'checkpoint root': lambda d: d['inclusionProof']['checkpoint'].__setitem__(
        'envelope', d['inclusionProof']['checkpoint']['envelope'].replace('+8vU', '+8vV')),
    'checkpoint signature': lambda d: d['inclusionProof']['checkpoint'].__setitem__(
        'envelope', d['inclusionProof']['checkpoint']['envelope'].replace('zxGZFahC', 'zxGZFahD')),
    'checkpoint origin': lambda d: d['inclusionProof']['checkpoint'].__setitem__(
        'envelope', d['inclusionProof']['checkpoint']['envelope'].replace(
            'log2025-1.rekor.sigstore.dev\n', 'log2025-2.rekor.sigstore.dev\n', 1)),
    'keyId of the v1 log': lambda d: d['logId'].__setitem__(
        'keyId', 'wNI9atQGlz+VWfO6LRygH4QUfY/8W4RFwiT5i5WRgB0='),
    'unknown keyId': lambda d: d['logId'].__setitem__('keyId', flip(d['logId']['keyId'])),
    'kind': lambda d: d['kindVersion'].__setitem__('kind', 'dsse'),
    'version': lambda d: d['kindVersion'].__setitem__('version', '0.0.1'),
    'int64 not decimal': lambda d: d.__setitem__('logIndex', '0x64a12'),
    'hash not 32 bytes': lambda d: d['inclusionProof']['hashes'].__setitem__(0, b64(b'x' * 31)),
    'no checkpoint': lambda d: d['inclusionProof'].pop('checkpoint'),
}


@needs_real
@pytest.mark.parametrize('lie', sorted(LIES))
def test_each_lie_in_the_production_answer_is_caught(prod, lie):
    data, body, root = prod
    bad = copy.deepcopy(data)
    LIES[lie](bad)
    assert bad != data
    with pytest.raises(v2entry.EntryError) as ei:
        v2entry.verify_entry(bad, body, root)
    assert '\n' not in str(ei.value)


@needs_real
def test_other_body_than_ours_is_caught(prod, staging):
    data, _, root = prod
    _, staging_body, _ = staging
    with pytest.raises(v2entry.EntryError, match='not the one we sent'):
        v2entry.verify_entry(data, staging_body, root)
    # Same JSON, other bytes (not canonical): still not ours.
    data2, body, _ = prod
    with pytest.raises(v2entry.EntryError, match='not the one we sent'):
        v2entry.verify_entry(data2, json.dumps(json.loads(body)).encode(), root)


@needs_real
def test_a_single_configured_key_must_match_the_entry(prod):
    data, body, root = prod
    v2 = [lk for lk in root.logs if lk.origin.startswith('log2025-1')][0]
    assert v2entry.verify_entry(data, body, v2).log is v2
    v1 = [lk for lk in root.logs if lk.origin == 'rekor.sigstore.dev'][0]
    with pytest.raises(v2entry.EntryError, match='logId'):
        v2entry.verify_entry(data, body, v1)


def _signed_entry(priv, log_origin, cp_origin, body):
    """A one-entry tree, checkpoint signed by `priv` under `log_origin`'s key
    name but saying `cp_origin`: a log that signs another origin."""
    from koji_rekor.v2 import note
    key = note.note_key(log_origin, priv.public_key())
    root = hash_leaf(body)
    text = ('%s\n1\n%s\n' % (cp_origin, b64(root))).encode()
    env = text + ('\n\u2014 %s %s\n' % (log_origin, b64(key.key_id + priv.sign(text)))).encode()
    return {'logIndex': '0', 'logId': {'keyId': b64(key.log_id)},
            'kindVersion': {'kind': 'hashedrekord', 'version': '0.0.2'},
            'integratedTime': '0', 'inclusionPromise': None,
            'inclusionProof': {'logIndex': '0', 'rootHash': b64(root), 'treeSize': '1',
                               'hashes': [], 'checkpoint': {'envelope': env.decode()}},
            'canonicalizedBody': b64(body)}


def test_checkpoint_with_another_origin_signed_by_the_right_key_is_caught():
    priv = ed25519.Ed25519PrivateKey.generate()
    pem = priv.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)
    lk = trust.log_key('log.example', pem)
    body = b'{"kind":"hashedrekord"}'
    good = _signed_entry(priv, 'log.example', 'log.example', body)
    assert v2entry.verify_entry(good, body, lk).checkpoint.size == 1
    lie = _signed_entry(priv, 'log.example', 'other.example', body)
    with pytest.raises(v2entry.EntryError, match='origin'):
        v2entry.verify_entry(lie, body, lk)


def test_two_leaf_tree_and_zero_index_omitted():
    # proto3 protojson may leave logIndex 0 out; it still means 0.
    priv = ed25519.Ed25519PrivateKey.generate()
    from koji_rekor.v2 import note
    key = note.note_key('log.example', priv.public_key())
    lk = trust.log_key('log.example', priv.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo))
    a, b = b'{"a":1}', b'{"b":2}'
    root = hash_children(hash_leaf(a), hash_leaf(b))
    text = ('log.example\n2\n%s\n' % b64(root)).encode()
    env = text + ('\n\u2014 log.example %s\n' % b64(key.key_id + priv.sign(text))).encode()
    e = {'logId': {'keyId': b64(key.log_id)},
         'kindVersion': {'kind': 'hashedrekord', 'version': '0.0.2'},
         'inclusionProof': {'rootHash': b64(root), 'treeSize': 2,
                            'hashes': [b64(hash_leaf(b))], 'checkpoint': {'envelope': env.decode()}},
         'canonicalizedBody': b64(a)}
    assert v2entry.verify_entry(e, a, lk).entry.log_index == 0
    e['inclusionProof']['hashes'] = [b64(hash_leaf(a))]
    with pytest.raises(v2entry.EntryError, match='does not lead'):
        v2entry.verify_entry(e, a, lk)


@pytest.mark.parametrize('bad', [b'', b'[]', b'{"mediaType": "x"}',
                                 b'{"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",'
                                 b' "verificationMaterial": {"tlogEntries": []}}'])
def test_bad_bundles_are_one_line_errors(bad):
    with pytest.raises(v2entry.EntryError) as ei:
        v2entry.entry_from_bundle(bad)
    assert '\n' not in str(ei.value)


@needs_real
def test_other_body_with_a_matching_expectation_fails_the_proof(prod):
    data, body, root = prod
    other = body.replace(b'SHA2_256', b'SHA2_384')
    bad = copy.deepcopy(data)
    bad['canonicalizedBody'] = b64(other)
    with pytest.raises(v2entry.EntryError, match='does not lead'):
        v2entry.verify_entry(bad, other, root)


def _tile_log(bodies, priv, origin):
    """A shard's static files for `bodies`, laid out as tlog-tiles says,
    with a checkpoint signed by `priv`."""
    from koji_rekor.v2 import note, tiles
    size = len(bodies)
    files = {}
    level, L = [hash_leaf(b) for b in bodies], 0
    while level:
        for t in range(0, len(level), 256):
            chunk = level[t:t + 256]
            files[tiles.tile_path(L, t // 256, len(chunk))] = b''.join(chunk)
        for _ in range(8):
            level = [hash_children(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        L += 1
    for t in range(0, size, 256):
        chunk = bodies[t:t + 256]
        files[tiles.entries_path(t // 256, len(chunk))] = b''.join(
            len(b).to_bytes(2, 'big') + b for b in chunk)
    reader = tiles.TileReader(files.get, size)
    key = note.note_key(origin, priv.public_key())
    text = ('%s\n%d\n%s\n' % (origin, size, b64(reader.root()))).encode()
    files['checkpoint'] = text + ('\n\u2014 %s %s\n' % (
        origin, b64(key.key_id + priv.sign(text)))).encode()
    return files


def test_entry_from_tiles_is_what_a_201_would_be():
    priv = ed25519.Ed25519PrivateKey.generate()
    lk = trust.log_key('log.example', priv.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo))
    bodies = [jcs({'apiVersion': '0.0.2', 'kind': 'hashedrekord', 'spec': {'n': i}})
              for i in range(300)]
    files = _tile_log(bodies, priv, 'log.example')
    for i in (0, 255, 256, 299):
        e = v2entry.entry_from_tiles(files.get, lk, i, bodies[i])
        v = v2entry.verify_entry(json.loads(json.dumps(e)), bodies[i], lk)
        assert (v.entry.log_index, v.checkpoint.size) == (i, 300)
    with pytest.raises(v2entry.EntryError, match='not the one we sent'):
        v2entry.entry_from_tiles(files.get, lk, 5, bodies[6])
    with pytest.raises(v2entry.EntryError, match='not in the latest checkpoint'):
        v2entry.entry_from_tiles(files.get, lk, 300, bodies[0])
    # tiles that lie about the body: caught against the signed root
    lying = dict(files)
    lying[tiles_entries(1, 44)] = lying[tiles_entries(1, 44)].replace(b'"n":260', b'"n":261')
    with pytest.raises(v2entry.EntryError, match='from tiles'):
        v2entry.entry_from_tiles(lying.get, lk, 260, bodies[261])
    # a checkpoint by another key
    other = ed25519.Ed25519PrivateKey.generate()
    forged = _tile_log(bodies, other, 'log.example')
    with pytest.raises(v2entry.EntryError, match='checkpoint: note has no signature by'):
        v2entry.entry_from_tiles(forged.get, lk, 3, bodies[3])
    with pytest.raises(v2entry.EntryError, match='no /checkpoint'):
        v2entry.entry_from_tiles({}.get, lk, 3, bodies[3])


def tiles_entries(index, width):
    from koji_rekor.v2 import tiles
    return tiles.entries_path(index, width)
