"""koji-rekor doctor with [rekor] api = 2: the shard reachable and its
checkpoint verifying with the configured key and origin, each signing key
loggable in v2, the trust files listing a shard valid now (and a warning
when the newest ends soon), against the local v2 log."""

import base64
import json
import os
from datetime import datetime, timedelta, timezone

import pytest

from tests.support.rekor_v2_server import RekorV2Server
from tests.integration.test_doctor import Setup
from tests.support.common import SHARED

REAL = os.path.join(SHARED, 'rekor-v2-real')


def stamp(when):
    return when.strftime('%Y-%m-%dT%H:%M:%SZ')


NOW = datetime.now(timezone.utc)


@pytest.fixture
def shard():
    with RekorV2Server(interval=0.05) as log:
        yield log


@pytest.fixture
def v2(tmp_path, rekor, keys, key_dir, log_key_file, capsys, monkeypatch, shard):
    setup = Setup(tmp_path, rekor, keys, key_dir, log_key_file, capsys, monkeypatch)
    pem = tmp_path / 'shard.pem'
    pem.write_bytes(shard.key.public_pem)
    setup.options['rekor'].update(url=shard.url, api='2', log_public_key=str(pem))
    # Rekor v2 cannot log the ed25519 key's signatures: only the RSA key here
    os.remove(key_dir / ('%s.asc' % keys['ed25519'].sigkey))
    setup.shard, setup.pem = shard, pem
    return setup


def trusted_root(shard, end=None):
    valid = {'start': stamp(NOW - timedelta(days=10))}
    if end:
        valid['end'] = stamp(end)
    return {'mediaType': 'application/vnd.dev.sigstore.trustedroot+json;version=0.1',
            'tlogs': [{'baseUrl': shard.url, 'hashAlgorithm': 'SHA2_256',
                       'publicKey': {'rawBytes': base64.b64encode(shard.key.public_der).decode(),
                                     'keyDetails': 'PKIX_ED25519', 'validFor': valid},
                       'logId': {'keyId': base64.b64encode(shard.log_id).decode()}}]}


def signing_config(*shards):
    return {'mediaType': 'application/vnd.dev.sigstore.signingconfig.v0.2+json',
            'rekorTlogUrls': [{'url': url, 'majorApiVersion': 2, 'operator': 'test',
                               'validFor': dict({'start': stamp(start)},
                                                **({'end': stamp(end)} if end else {}))}
                              for url, start, end in shards]}


def line(lines, check):
    found = [x for x in lines if x[5:].startswith(check + ':')]
    assert len(found) == 1, lines
    return found[0]


def test_a_working_v2_installation(v2, keys):
    status, lines = v2.lines()
    assert status == 0, lines
    log = line(lines, 'log')
    assert log.startswith('ok   log: %s (Rekor v2): checkpoint of size ' % v2.shard.url)
    assert 'verifies with [rekor] log_public_key %s, origin %s' % (v2.pem, v2.shard.origin) in log
    key = line(lines, 'v2 key %s/%s.asc' % (v2.key_dir, keys['rsa'].sigkey))
    assert key.startswith('ok') and 'PKIX_RSA_PKCS1V15_' in key


def test_an_ed25519_signing_key_fails(v2, keys):
    v2.key_dir.joinpath('%s.asc' % keys['ed25519'].sigkey).write_bytes(keys['ed25519'].armored)
    status, lines = v2.lines()
    assert status == 1
    key = line(lines, 'v2 key %s/%s.asc' % (v2.key_dir, keys['ed25519'].sigkey))
    assert key.startswith('FAIL') and 'Rekor v2 cannot log its signatures' in key
    assert 'EdDSA' in key


def test_a_checkpoint_signed_by_another_key_fails(v2, tmp_path):
    with RekorV2Server(interval=0.05) as other:
        v2.pem.write_bytes(other.key.public_pem)
        status, lines = v2.lines()
    assert status == 1
    log = line(lines, 'log')
    assert log.startswith('FAIL log: %s: its checkpoint does not verify' % v2.shard.url)


def test_another_origin_fails(v2):
    v2.options['rekor']['origin'] = 'elsewhere.example'
    status, lines = v2.lines()
    log = line(lines, 'log')
    assert status == 1 and log.startswith('FAIL log: %s: its checkpoint does not verify with '
                                          '[rekor] log_public_key %s and origin '
                                          'elsewhere.example' % (v2.shard.url, v2.pem)), lines


def test_a_shard_that_cannot_be_reached(v2):
    url = v2.shard.url
    v2.shard.stop()
    status, lines = v2.lines()
    assert status == 1, lines
    assert line(lines, 'log') == 'FAIL log: cannot reach Rekor v2 at %s: connection refused' \
        % url


def test_the_key_from_the_trusted_root(v2, tmp_path):
    root = tmp_path / 'trusted_root.json'
    root.write_text(json.dumps(trusted_root(v2.shard)))
    del v2.options['rekor']['log_public_key']
    v2.options['rekor']['trusted_root'] = str(root)
    status, lines = v2.lines()
    assert status == 0, lines
    assert line(lines, 'trusted_root').startswith('ok   trusted_root: %s: valid now: %s'
                                                  % (root, v2.shard.url))
    assert 'verifies with [rekor] trusted_root %s' % root in line(lines, 'log')


def test_a_trusted_root_ending_soon_warns_and_one_ended_fails(v2, tmp_path):
    root = tmp_path / 'trusted_root.json'
    v2.options['rekor']['trusted_root'] = str(root)
    root.write_text(json.dumps(trusted_root(v2.shard, end=NOW + timedelta(days=5))))
    status, lines = v2.lines()
    assert status == 0 and line(lines, 'trusted_root').startswith('warn'), lines
    root.write_text(json.dumps(trusted_root(v2.shard, end=NOW - timedelta(days=1))))
    status, lines = v2.lines()
    assert status == 1 and 'lists no log valid now' in line(lines, 'trusted_root')
    root.write_text('{"mediaType": "something else"}')
    status, lines = v2.lines()
    assert status == 1 and line(lines, 'trusted_root').startswith('FAIL'), lines


def test_the_signing_config_names_the_shard(v2, tmp_path):
    config = tmp_path / 'signing_config.json'
    v2.options['rekor']['signing_config'] = str(config)
    root = tmp_path / 'trusted_root.json'
    root.write_text(json.dumps(trusted_root(v2.shard)))
    v2.options['rekor']['trusted_root'] = str(root)
    del v2.options['rekor']['log_public_key']
    old = 'https://log-old.example'
    config.write_text(json.dumps(signing_config(
        (old, NOW - timedelta(days=400), None),
        (v2.shard.url, NOW - timedelta(days=1), NOW + timedelta(days=200)))))
    status, lines = v2.lines()
    assert status == 0, lines
    assert line(lines, 'signing_config').startswith('ok   signing_config: %s: valid now: %s, %s'
                                                    % (config, v2.shard.url, old))
    assert line(lines, 'log').startswith('ok   log: %s (Rekor v2)' % v2.shard.url)
    # the newest ends within 30 days: a warning
    config.write_text(json.dumps(signing_config(
        (v2.shard.url, NOW - timedelta(days=1), NOW + timedelta(days=20)))))
    status, lines = v2.lines()
    assert status == 0 and line(lines, 'signing_config').startswith('warn'), lines
    # none valid now
    config.write_text(json.dumps(signing_config(
        (v2.shard.url, NOW + timedelta(days=1), None))))
    status, lines = v2.lines()
    assert status == 1 and 'lists no Rekor v2 shard valid now' in line(lines, 'signing_config')


@pytest.mark.skipif(not os.path.isdir(REAL), reason='no ../shared/rekor-v2-real')
def test_the_real_trust_files_parse(v2):
    v2.options['rekor']['trusted_root'] = os.path.join(REAL, 'trustroot',
                                                       'public-good.trusted_root.json')
    v2.options['rekor']['signing_config'] = os.path.join(
        REAL, 'trustroot', 'public-good.signing_config_rekor_v2.v0.2.json')
    _, lines = v2.lines()
    assert 'https://log2025-1.rekor.sigstore.dev' in line(lines, 'trusted_root')
    cfg = line(lines, 'signing_config')
    assert cfg.startswith('ok') and 'https://log2025-1.rekor.sigstore.dev' in cfg, cfg


@pytest.fixture(scope='module')
def more_keys(tmp_path_factory):
    from tests.support import rpmfactory
    from tests.integration.test_v2w_hashedrekord import gpg_key
    home = str(tmp_path_factory.mktemp('gnupg-v2c'))
    os.chmod(home, 0o700)
    try:
        yield {algo: gpg_key(home, algo, 'v2c %s' % algo)
               for algo in ('dsa2048', 'rsa1024', 'nistp384')}
    finally:
        rpmfactory.stop_gpg_agent(home)


@pytest.mark.parametrize('algo, status, says', [
    ('dsa2048', 'FAIL', 'it signs with DSA, which Rekor v2 cannot log'),
    ('rsa1024', 'FAIL', 'RSA-1024; Rekor v2 takes RSA keys of 2048, 3072 or 4096 bits only'),
    ('nistp384', 'ok', 'loggable in Rekor v2 as PKIX_ECDSA_P384_SHA_384')])
def test_each_signing_key_type(v2, more_keys, algo, status, says):
    key = more_keys[algo]
    path = v2.key_dir / ('%s.asc' % key.sigkey)
    path.write_bytes(key.armored)
    _, lines = v2.lines()
    found = line(lines, 'v2 key %s' % path)
    assert found.startswith(status) and says in found, found
