"""[rekor] entry = hashedrekord with api = 1: the header signature logged to
the local v1 log (tests/support/rekor_server.py) as a hashedrekord v0.0.1,
built from the RPM's headers alone, verified as an rpm entry is plus its
body; the receipt checked by rekorLogStatus and `koji-rekor verify`; a lying
body caught; what cannot be a hashedrekord (ed25519) set aside with its reason."""

import base64
import json
import os

import koji
import koji_rekor.cli
import pytest

from cryptography.hazmat.primitives import serialization

from tests.support import hubsim, rpmfactory
from tests.support.common import HUB_USER
from koji_rekor.v2 import hashedrekord


@pytest.fixture(scope='module')
def sha256_rpm(tmp_path_factory, keys, unsigned_rpm):
    out = tmp_path_factory.mktemp('v1h')
    return rpmfactory.sign_rpm(unsigned_rpm, str(out / 'rsa.rpm'), keys['rsa'],
                               digest_algo='sha256')


@pytest.fixture
def v1h_hub(hub, rekor, key_dir, log_key_file):
    hub.configure('''
        [rekor]
        url = %s
        entry = hashedrekord
        allow_insecure_http = true
        log_public_key = %s
        timeout = 5
        retries = 2
        backoff = 0.05
        [signing]
        public_key_dir = %s
        [upload]
        hub_user = %s
        ''' % (rekor.url, log_key_file, key_dir, HUB_USER))
    return hub


def nvra(imported):
    return '%(name)s-%(version)s-%(release)s.%(arch)s' % imported.rpm


def receipt_path(topdir, imported):
    return os.path.join(str(topdir), 'rekor-logs', *[imported.rpm[k] for k in (
        'name', 'version', 'release', 'arch')], '%s.%s.json' % (nvra(imported), imported.sigkey))


def record_of(topdir, imported, folder=''):
    path = os.path.join(str(topdir), 'rekor-logs', '@outbox', folder,
                        '%s.%s.json' % (nvra(imported), imported.sigkey))
    if not os.path.exists(path):
        return None
    with open(path) as fo:
        return json.load(fo)


def logged_body(receipt):
    (_, entry), = receipt['log_entry'].items()
    return json.loads(base64.b64decode(entry['body']))


def test_import_sig_is_logged_as_hashedrekord(v1h_hub, rekor, topdir, koji_import, sha256_rpm,
                                              keys, capsys):
    imported = koji_import(sha256_rpm)
    v1h_hub.sign(imported)
    with open(receipt_path(topdir, imported)) as fo:
        receipt = json.load(fo)
    assert receipt['nvra'] == nvra(imported) and receipt['sha256'] is None
    body = logged_body(receipt)
    with open(keys['rsa'].path, 'rb') as fo:
        ours = hashedrekord.from_rpm_file(sha256_rpm, fo.read())
    assert body['kind'] == 'hashedrekord' and body['apiVersion'] == '0.0.1'
    assert body['spec']['data']['hash'] == {'algorithm': 'sha256', 'value': ours.digest.hex()}
    assert base64.b64decode(body['spec']['signature']['content']) == ours.signature
    pem = base64.b64decode(body['spec']['signature']['publicKey']['content'])
    assert serialization.load_pem_public_key(pem).public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo) \
        == ours.public_key
    assert v1h_hub.outbox() == []

    hubsim.install_kojihub([imported])
    try:
        status, = hubsim.hub_call('rekorLogStatus', nvra(imported))
        assert status['status'] == 'logged', status
    finally:
        hubsim.uninstall_kojihub()

    code = koji_rekor.cli.main(['verify', receipt_path(topdir, imported),
                                '--config', str(v1h_hub.conf_path)])
    out, err = capsys.readouterr()
    assert code == 0, out + err


def test_a_second_upload_meets_409_and_the_same_receipt(v1h_hub, rekor, topdir, koji_import,
                                                         sha256_rpm):
    imported = koji_import(sha256_rpm)
    v1h_hub.sign(imported)
    first = json.load(open(receipt_path(topdir, imported)))
    os.unlink(receipt_path(topdir, imported))
    v1h_hub.sign(imported)
    second = json.load(open(receipt_path(topdir, imported)))
    assert first['log_entry'].keys() == second['log_entry'].keys()


def test_a_receipt_whose_body_lies_is_unverified(v1h_hub, topdir, koji_import, sha256_rpm):
    imported = koji_import(sha256_rpm)
    v1h_hub.sign(imported)
    path = receipt_path(topdir, imported)
    receipt = json.load(open(path))
    (entry_id, entry), = receipt['log_entry'].items()
    body = json.loads(base64.b64decode(entry['body']))
    body['spec']['data']['hash']['value'] = '00' * 32
    entry['body'] = base64.b64encode(json.dumps(body).encode()).decode()
    json.dump(receipt, open(path, 'w'))
    hubsim.install_kojihub([imported])
    try:
        status, = hubsim.hub_call('rekorLogStatus', nvra(imported))
    finally:
        hubsim.uninstall_kojihub()
    assert status['status'] == 'unverified', status


@pytest.mark.parametrize('tamper,expected', [
    ('body_hash', 'body records digest sha256:'),
    ('body_key', 'body records another signature'),
    ('entry_uuid', 'is not the hash of its body'),
    ('set', 'signed entry timestamp: does not verify'),
    ('proof_hash', 'inclusion proof'),
])
def test_a_lying_log_gets_no_receipt(v1h_hub, rekor, topdir, koji_import, sha256_rpm,
                                     tamper, expected):
    rekor.faults.tamper = tamper
    with open(v1h_hub.conf_path, 'a') as fo:
        fo.write('enforce = true\n')  # [upload] is the file's last section
    imported = koji_import(sha256_rpm)
    with pytest.raises(koji.CallbackError) as info:
        v1h_hub.sign(imported)
    assert expected in str(info.value), str(info.value)
    assert not os.path.exists(receipt_path(topdir, imported))


def test_the_body_check_compares_digest_signature_key_and_kind(v1h_hub, topdir, koji_import, sha256_rpm,
                                                keys):
    """The body check itself: another digest, signature or key than ours."""
    from koji_rekor.v1hashedrekord import v1_entry, verify_hashedrekord_body
    from koji_rekor.errors import VerificationError
    with open(keys['rsa'].path, 'rb') as fo:
        ours = hashedrekord.from_rpm_file(sha256_rpm, fo.read())
    verify_hashedrekord_body(v1_entry(ours), ours)
    for change in ('digest', 'signature', 'kind'):
        body = v1_entry(ours)
        if change == 'digest':
            body['spec']['data']['hash']['value'] = '11' * 32
        elif change == 'signature':
            body['spec']['signature']['content'] = base64.b64encode(b'x' * 256).decode()
        else:
            body['kind'] = 'rekord'
        with pytest.raises(VerificationError):
            verify_hashedrekord_body(body, ours)


def test_ed25519_is_refused_with_its_reason_and_set_aside(v1h_hub, rekor, topdir, koji_import,
                                                          signed_rpms):
    imported = koji_import(signed_rpms[('ed25519', 'header')])
    v1h_hub.sign(imported)
    aside = record_of(topdir, imported, 'rejected')
    assert aside is not None and 'EdDSA' in aside['set_aside']['reason']
    assert not os.path.exists(receipt_path(topdir, imported))
    assert v1h_hub.outbox() == []


def test_a_hashedrekord_receipt_kept_in_a_record_is_verified_again(
        v1h_hub, rekor, topdir, koji_import, sha256_rpm):
    """Under enforce the receipt rides in the record until the commit; when
    the request died before it, the worker verifies the kept entry again,
    body included (against the hashedrekord built from the RPM's headers)."""
    import koji_rekor.config
    import koji_rekor.worker
    with open(v1h_hub.conf_path, 'a') as fo:
        fo.write('enforce = true\n')
    imported = koji_import(sha256_rpm)
    v1h_hub.sign(imported, commit=False)
    outbox = os.path.join(str(topdir), 'rekor-logs', '@outbox')
    name = '%s.%s' % (nvra(imported), imported.sigkey)
    os.rename(os.path.join(outbox, name + '.uncommitted'), os.path.join(outbox, name + '.json'))
    record = record_of(topdir, imported)
    good = record['receipt']
    assert logged_body(good)['kind'] == 'hashedrekord'
    settings = koji_rekor.config.load_config(v1h_hub.conf_path)
    # A kept entry whose body is another digest is not written.
    (entry_id, entry), = good['log_entry'].items()
    body = logged_body(good)
    body['spec']['data']['hash']['value'] = '22' * 32
    lying = dict(good, log_entry={entry_id: dict(entry, body=base64.b64encode(
        json.dumps(body).encode()).decode())})
    record['receipt'] = lying
    with open(os.path.join(outbox, name + '.json'), 'w') as fo:
        json.dump(record, fo)
    assert koji_rekor.worker.drain_outbox(settings, str(topdir), now=True)['failed'] == 1
    assert not os.path.exists(receipt_path(topdir, imported))
    record = record_of(topdir, imported)
    record['receipt'] = good
    with open(os.path.join(outbox, name + '.json'), 'w') as fo:
        json.dump(record, fo)
    assert koji_rekor.worker.drain_outbox(settings, str(topdir), now=True)['logged'] == 1
    with open(receipt_path(topdir, imported)) as fo:
        assert json.load(fo) == good
