"""koji_rekor.v2.trust: the real Sigstore TrustedRoots and SigningConfigs."""

import base64
import glob
import json
import os
from datetime import datetime, timezone

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from koji_rekor.v2 import trust

from tests.support.common import ROOT  # noqa: E402
REAL = os.path.join(os.path.dirname(ROOT), 'shared', 'rekor-v2-real')
TR = os.path.join(REAL, 'trustroot')

needs_real = pytest.mark.skipif(not os.path.isdir(REAL), reason='no ../shared/rekor-v2-real')


def utc(*a):
    return datetime(*a, tzinfo=timezone.utc)


def read(name):
    with open(os.path.join(TR, name), 'rb') as fo:
        return fo.read()


@needs_real
def test_every_real_trust_file_parses_as_what_it_is():
    files = sorted(os.path.basename(p) for p in glob.glob(os.path.join(TR, '*.json')))
    assert len(files) == 6
    kinds = {}
    for f in files:
        data = read(f)
        mt = json.loads(data).get('mediaType', '')
        if 'trustedroot' in mt:
            kinds[f] = trust.parse_trusted_root(data)
        elif 'signingconfig' in mt:
            kinds[f] = trust.parse_signing_config(data)
        else:
            # the TUF root is neither: both parsers refuse it in one line
            for parse in (trust.parse_trusted_root, trust.parse_signing_config):
                with pytest.raises(trust.TrustError) as ei:
                    parse(data)
                assert '\n' not in str(ei.value)
            kinds[f] = None
    assert kinds['public-good.tuf-root.json'] is None
    assert sum(isinstance(v, trust.TrustedRoot) for v in kinds.values()) == 2
    assert sum(isinstance(v, trust.SigningConfig) for v in kinds.values()) == 3


@needs_real
def test_production_trusted_root():
    root = trust.parse_trusted_root(read('public-good.trusted_root.json'))
    assert root.unsupported == ()
    by_origin = {lk.origin: lk for lk in root.logs}
    assert set(by_origin) == {'rekor.sigstore.dev', 'log2025-1.rekor.sigstore.dev'}
    v2 = by_origin['log2025-1.rekor.sigstore.dev']
    assert v2.key_details == 'PKIX_ED25519'
    assert isinstance(v2.public_key, ed25519.Ed25519PublicKey)
    assert base64.b64encode(v2.log_id).decode() == 'zxGZFVvd0FEmjR8WrFwMdcAJ9vtaY/QXf44Y1wUeP6A='
    assert v2.note_key.key_id == v2.log_id[:4]
    assert v2.valid == trust.Validity(utc(2025, 9, 23), None)
    assert trust.find_log(root, v2.log_id) is v2
    v1 = by_origin['rekor.sigstore.dev']
    assert isinstance(v1.public_key, ec.EllipticCurvePublicKey)
    with pytest.raises(trust.TrustError, match='no trusted log'):
        trust.find_log(root, b'\0' * 32)


@needs_real
def test_staging_trusted_root_windows():
    root = trust.parse_trusted_root(read('staging.trusted_root.json'))
    alpha = {lk.origin.split('.')[0]: lk for lk in root.logs}
    assert alpha['log2025-alpha1'].valid == trust.Validity(utc(2025, 4, 16), utc(2025, 9, 4))
    assert alpha['log2025-alpha1'].valid.contains(utc(2025, 6, 9))
    assert alpha['log2025-alpha1'].valid.contains(utc(2025, 9, 4))      # end inclusive
    assert not alpha['log2025-alpha1'].valid.contains(utc(2025, 9, 4, 0, 0, 1))
    assert alpha['log2025-alpha3'].valid.end is None


@needs_real
def test_signing_config_selection():
    prod_default = trust.parse_signing_config(read('public-good.signing_config.v0.2.json'))
    assert trust.select_shards(prod_default, utc(2026, 12, 4)) == ()
    assert [s.url for s in trust.select_shards(prod_default, utc(2026, 12, 4), 1)] \
        == ['https://rekor.sigstore.dev']
    prod_v2 = trust.parse_signing_config(read('public-good.signing_config_rekor_v2.v0.2.json'))
    assert trust.select_shards(prod_v2, utc(2025, 12, 31, 23, 59, 59)) == ()
    assert [s.url for s in trust.select_shards(prod_v2, utc(2026, 1, 1))] \
        == ['https://log2025-1.rekor.sigstore.dev']
    staging = trust.parse_signing_config(read('staging.signing_config.v0.2.json'))
    assert [s.url.split('//')[1].split('.')[0]
            for s in trust.select_shards(staging, utc(2025, 9, 1))] == ['log2025-alpha2']
    assert [s.url.split('//')[1].split('.')[0]
            for s in trust.select_shards(staging, utc(2025, 9, 22, 11))] \
        == ['log2025-alpha3', 'log2025-alpha2']     # the hand-over instant: both
    assert [s.url.split('//')[1].split('.')[0]
            for s in trust.select_shards(staging, utc(2026, 12, 4))] == ['log2025-alpha3']


def _config(*shards):
    return {'mediaType': trust.SIGNING_CONFIG_MEDIA_TYPE, 'rekorTlogUrls': [
        {'url': u, 'majorApiVersion': v, 'validFor': vf} for u, v, vf in shards]}


def test_newest_first_then_next_for_a_405():
    cfg = trust.parse_signing_config(_config(
        ('https://old.example', 2, {'start': '2025-01-01T00:00:00Z'}),
        ('https://new.example', 2, {'start': '2026-01-01T00:00:00.000Z'}),
        ('https://future.example', 2, {'start': '2027-01-01T00:00:00Z'}),
        ('https://gone.example', 2, {'start': '2024-01-01T00:00:00Z',
                                     'end': '2025-01-01T00:00:00Z'}),
        ('https://v1.example', 1, {'start': '2020-01-01T00:00:00Z'})))
    assert [s.url for s in trust.select_shards(cfg, utc(2026, 6, 1))] \
        == ['https://new.example', 'https://old.example']


@pytest.mark.parametrize('obj, msg', [
    ({'mediaType': 'x'}, 'mediaType'),
    (_config(('ftp://x', 2, {'start': '2025-01-01T00:00:00Z'})), 'not an http'),
    (_config(('https://x', '2', {'start': '2025-01-01T00:00:00Z'})), 'wrong type'),
    (_config(('https://x', 2, {'start': '2025-13-01T00:00:00Z'})), 'not a valid time'),
    (_config(('https://x', 2, {'start': 'yesterday'})), 'RFC 3339'),
    (_config(('https://x', 2, {})), 'start is missing'),
    (_config(('https://x', 2, {'start': '2025-01-02T00:00:00Z',
                               'end': '2025-01-01T00:00:00Z'})), 'ends before'),
])
def test_bad_signing_configs_are_one_line_errors(obj, msg):
    with pytest.raises(trust.TrustError, match=msg) as ei:
        trust.parse_signing_config(json.dumps(obj))
    assert '\n' not in str(ei.value)


def _root(key_der, details='PKIX_ED25519', key_id=None, url='https://log.example'):
    from koji_rekor.v2 import note
    if key_id is None:
        key_id = note.note_key(trust.origin_of(url),
                               serialization.load_der_public_key(key_der)).log_id
    return json.dumps({'mediaType': trust.TRUSTED_ROOT_MEDIA_TYPE, 'tlogs': [{
        'baseUrl': url, 'hashAlgorithm': 'SHA2_256',
        'publicKey': {'rawBytes': base64.b64encode(key_der).decode(),
                      'keyDetails': details, 'validFor': {'start': '2025-01-01T00:00:00Z'}},
        'logId': {'keyId': base64.b64encode(key_id).decode()}}]})


def _der(key):
    return key.public_bytes(serialization.Encoding.DER,
                            serialization.PublicFormat.SubjectPublicKeyInfo)


def test_trusted_root_strictness():
    ed = _der(ed25519.Ed25519PrivateKey.generate().public_key())
    p384 = _der(ec.generate_private_key(ec.SECP384R1()).public_key())
    lk = trust.parse_trusted_root(_root(ed, url='http://127.0.0.1:8080/')).logs[0]
    assert lk.origin == '127.0.0.1:8080'
    with pytest.raises(trust.TrustError, match='is not the id of its key'):
        trust.parse_trusted_root(_root(ed, key_id=b'\1' * 32))
    with pytest.raises(trust.TrustError, match='is not PKIX_ECDSA_P256'):
        trust.parse_trusted_root(_root(p384, 'PKIX_ECDSA_P256_SHA_256'))
    assert trust.parse_trusted_root(_root(p384, 'PKIX_ECDSA_P384_SHA_384')).logs
    # a key type we cannot verify is listed, not trusted, not fatal
    r = trust.parse_trusted_root(_root(ed, 'ML_DSA_65', key_id=b'\2' * 32))
    assert r.logs == () and r.unsupported == ('https://log.example ML_DSA_65',)
    with pytest.raises(trust.TrustError, match='not JSON'):
        trust.parse_trusted_root(b'{')


def test_log_key_from_pem_for_configuration():
    priv = ed25519.Ed25519PrivateKey.generate()
    pem = priv.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)
    lk = trust.log_key('log.example', pem)
    assert lk.key_details == 'PKIX_ED25519' and lk.note_key.name == 'log.example'
    with pytest.raises(trust.TrustError, match='not a public key'):
        trust.log_key('log.example', b'-----BEGIN PUBLIC KEY-----\nxx\n')


def test_times_with_offsets_and_fractions():
    assert trust.parse_time('2026-01-01T02:30:00+02:30', 'x') == utc(2026, 1, 1)
    assert trust.parse_time('2025-12-31T19:00:00.5-05:00', 'x') \
        == datetime(2026, 1, 1, 0, 0, 0, 500000, tzinfo=timezone.utc)
    assert trust.parse_time('2022-04-13T20:06:15.000Z', 'x') == utc(2022, 4, 13, 20, 6, 15)
    for bad in ('2026-01-01', '2026-01-01T00:00:00', '2026-01-01 00:00:00Z', 20260101):
        with pytest.raises(trust.TrustError):
            trust.parse_time(bad, 'x')
    with pytest.raises(ValueError):
        trust.select_shards((), datetime(2026, 1, 1))      # naive time: a bug, not a config
