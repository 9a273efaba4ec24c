"""The local log behaves as Rekor 1.5.4 where the plugin depends on it, and
the plugin meets those behaviours: real RPMs from Rekor's own test data
logged through the hub path with the bodies Rekor stores, Rekor's two
signature rules checked before anything is sent, and log keys of every
type Rekor signs with (ECDSA, RSA, Ed25519)."""

import base64
import hashlib
import json
import os
import shutil

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

import koji_rekor.cli
import koji_rekor.config
import koji_rekor.entry
import koji_rekor.errors
import koji_rekor.openpgp
import koji_rekor.rekor.client_v1
import koji_rekor.rpmsig

from tests.support import rpmfactory
from tests.support import sigheader
from tests.support.common import HUB_USER, SHARED
from tests.support.rekor_server import OpenPgpKey, RekorLog, RekorServer

ENTRIES = '/api/v1/log/entries'
REAL_RPMS = os.path.join(SHARED, 'rekor-real', 'rpms')

# What the Rekor v1.5.4 source stores for each (../shared/rekor-real/README.md).
REAL = {
    'NetworkManager-bluetooth-1.26.0-8.el8.x86_64.rpm': (
        'centos-8-05b555b38483c65d.asc',
        'c8b0bc59708d74f53aab0089ac587d5c348d6ead143dab9f6d9c4b48c973bfd8',
        {'Name': 'NetworkManager-bluetooth', 'Epoch': '1', 'Version': '1.26.0',
         'Release': '8.el8', 'Architecture': 'x86_64',
         'RPMSIGTAG_MD5': 'e26884f09d043e4a85c21dc570ed0bd7'}),
    'test-package-1.0-1.noarch.rpm': (
        'test-6b5c00fd2745ac5c.asc',
        'f5214798b9d78fac428fad6d70cffce0eee6512c27a9faee9112a68e9b5519c6',
        {'Name': 'test-package', 'Epoch': '0', 'Version': '1.0', 'Release': '1',
         'Architecture': 'noarch'}),
}


def go_keyid(keyid):
    """A key ID as Rekor prints it: Go's %08x of a 64-bit number, so
    leading zeros beyond eight digits go."""
    return '%08x' % int(keyid, 16)


def entry_body(receipt):
    (entry,) = receipt['log_entry'].values()
    return json.loads(base64.b64decode(entry['body']))


def receipts(topdir):
    base = topdir / 'rekor-logs'
    return [json.loads(p.read_text()) for p in base.rglob('*.json')
            if not any(part.startswith('@') for part in p.relative_to(base).parts)]


@pytest.mark.skipif(not os.path.isdir(REAL_RPMS), reason='../shared/rekor-real is absent')
@pytest.mark.parametrize('rpm_name', sorted(REAL))
def test_real_rpms_are_logged_through_the_hub_with_the_body_rekor_stores(
        hub, rekor, topdir, tmp_path, log_key_file, rpm_name):
    key_name, sha256, headers = REAL[rpm_name]
    real_rpm = os.path.join(REAL_RPMS, rpm_name)
    key_file = os.path.join(REAL_RPMS, key_name)
    keys = tmp_path / 'keys'
    keys.mkdir()
    sigkey = rpmfactory.sigkey_of(real_rpm)
    shutil.copy(key_file, keys / ('%s.asc' % sigkey))
    hub.configure('''
        [rekor]
        url = %s
        allow_insecure_http = true
        log_public_key = %s
        retries = 0
        [signing]
        public_key_dir = %s
        [upload]
        hub_user = %s
        ''' % (rekor.url, log_key_file, keys, HUB_USER))
    if headers.get('RPMSIGTAG_MD5'):
        imported = rpmfactory.koji_import_signature(str(topdir), real_rpm, real_rpm)
        hub.sign(imported)
        (receipt,) = receipts(topdir)
    else:
        # Koji cannot import an RPM without an MD5 (its payloadhash): the
        # admin's upload command logs it, as the plugin would.
        out = tmp_path / 'receipt.json'
        assert koji_rekor.cli.main(['upload', real_rpm, '--key', key_file, '--config',
                                str(hub.conf_path), '--topdir', str(topdir),
                                '--receipt', str(out)]) == 0
        receipt = json.loads(out.read_text())
    body = entry_body(receipt)
    assert receipt['sha256'] == sha256
    assert body['spec']['package'] == {'hash': {'algorithm': 'sha256', 'value': sha256},
                                       'headers': headers}
    # The key is stored re-armored: no armor headers, so not the bytes sent,
    # but the same key.
    with open(key_file, 'rb') as fo:
        sent = fo.read()
    logged = base64.b64decode(body['spec']['publicKey']['content'])
    assert logged == OpenPgpKey.parse(sent).canonical_armor
    assert logged.split(b'\n')[1] == b''
    if b'Version:' in sent:
        assert logged != sent
    assert koji_rekor.openpgp.openpgp_fingerprints(logged) == koji_rekor.openpgp.openpgp_fingerprints(sent)


@pytest.fixture(scope='module')
def odd_rpms(tmp_path_factory, keys, unsigned_rpm):
    """RPMs Rekor 1.5.4 refuses although rpm accepts them with our key."""
    out = tmp_path_factory.mktemp('odd')
    ours = rpmfactory.sign_rpm(unsigned_rpm, str(out / 'ours.rpm'), keys['rsa'], rpmv3=True)
    theirs = rpmfactory.sign_rpm(unsigned_rpm, str(out / 'theirs.rpm'), keys['other'],
                                 rpmv3=True)
    ours_header = rpmfactory.sign_rpm(unsigned_rpm, str(out / 'ours-h.rpm'), keys['rsa'])
    return {
        # header signature by another key, header+payload one (Koji's sigkey) by ours
        'mixed': sigheader.with_payload_signature_of(theirs, ours, str(out / 'mixed.rpm')),
        'openpgp': sigheader.openpgp_only(ours_header, str(out / 'openpgp.rpm')),
    }


def test_the_plugin_refuses_an_rpm_with_a_signature_by_another_key_before_sending(
        configured_hub, rekor, topdir, koji_import, odd_rpms, keys, plugin_log):
    imported = koji_import(odd_rpms['mixed'])
    assert imported.sigkey == keys['rsa'].sigkey
    configured_hub.sign(imported)

    # One signature is ours, so the key is right and the RPM is what Rekor
    # would refuse: nothing sent, the record set aside for good.
    assert rekor.count('POST', ENTRIES) == 0
    assert receipts(topdir) == []
    cause = ('its RSA header signature is by key %s, not by the key sent, and Rekor checks '
             'every signature with that key alone (keyid %s not found)'
             % (keys['other'].keyid, go_keyid(keys['other'].keyid)))
    assert cause in plugin_log.text
    assert 'for good, set aside in rejected/' in plugin_log.text
    # The local log refuses it with exactly that message.
    with RekorServer() as log:
        client = koji_rekor.rekor.client_v1.RekorClient(koji_rekor.config.Settings(url=log.url, retries=0,
                                                          allow_insecure_http=True))
        signed = koji_rekor.rpmsig.signed_rpm_from_file(odd_rpms['mixed'])
        with pytest.raises(koji_rekor.errors.RekorRejected) as refused:
            client.create_entry(koji_rekor.entry.EntryBody(signed, keys['rsa'].armored))
        assert 'keyid %s not found' % go_keyid(keys['other'].keyid) in str(refused.value)


def test_upload_refuses_an_rpm_signed_only_in_rpmtag_openpgp_before_sending(
        rekor, odd_rpms, keys, tmp_path, log_key_file, capsys):
    conf = tmp_path / 'up.conf'
    conf.write_text('[rekor]\nallow_insecure_http = true\nlog_public_key = %s\nretries = 0\n'
                    '[upload]\nhub_user = %s\n' % (log_key_file, HUB_USER))
    status = koji_rekor.cli.main(['upload', odd_rpms['openpgp'], '--key', keys['rsa'].path,
                              '--config', str(conf), '--url', rekor.url,
                              '--topdir', str(tmp_path)])
    err = capsys.readouterr().err
    assert status == 1, err
    assert 'its only signature is in RPMTAG_OPENPGP (rpm 6)' in err
    assert 'no supported PGP signature found in RPM' in err
    assert rekor.count('POST', ENTRIES) == 0


LOG_KEYS = {
    'ecdsa': lambda: ec.generate_private_key(ec.SECP256R1()),
    'rsa': lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
    'ed25519': ed25519.Ed25519PrivateKey.generate,
}


@pytest.mark.parametrize('kind', sorted(LOG_KEYS))
def test_entries_of_a_log_signing_with_any_key_type_rekor_uses_verify(
        hub, topdir, tmp_path, key_dir, koji_import, signed_rpms, kind, capsys):
    log = RekorLog(signing_key=LOG_KEYS[kind]())
    log_key = tmp_path / 'log.pem'
    log_key.write_bytes(log.public_key_pem)
    with RekorServer(log) as server:
        hub.configure('''
            [rekor]
            url = %s
            allow_insecure_http = true
            log_public_key = %s
            retries = 0
            [signing]
            public_key_dir = %s
            ''' % (server.url, log_key, key_dir))
        imported = koji_import(signed_rpms[('rsa', 'header')])
        hub.sign(imported)
    (receipt,) = receipts(topdir)
    path = tmp_path / 'receipt.json'
    path.write_text(json.dumps(receipt))
    assert koji_rekor.cli.main(['verify', str(path), '--log-key', str(log_key)]) == 0, \
        capsys.readouterr()
    # and a flipped signed entry timestamp does not
    (entry,) = receipt['log_entry'].values()
    signature = bytearray(base64.b64decode(entry['verification']['signedEntryTimestamp']))
    signature[len(signature) // 2] ^= 1
    entry['verification']['signedEntryTimestamp'] = base64.b64encode(bytes(signature)).decode()
    path.write_text(json.dumps(receipt))
    assert koji_rekor.cli.main(['verify', str(path), '--log-key', str(log_key)]) == 1


def test_the_index_is_written_after_the_answer(rekor, signed_rpms, keys):
    """Rekor writes its search index after answering the upload (or never,
    if that fails): the log holds an entry its index does not know yet."""
    import requests
    rekor.faults.hold_index = True
    signed = koji_rekor.rpmsig.signed_rpm_from_file(signed_rpms[('rsa', 'header')])
    client = koji_rekor.rekor.client_v1.RekorClient(koji_rekor.config.Settings(url=rekor.url, allow_insecure_http=True))
    entry_id, entry, created = client.create_entry(koji_rekor.entry.EntryBody(signed, keys['rsa'].armored))
    query = {'hash': 'sha256:' + hashlib.sha256(open(signed.path, 'rb').read()).hexdigest()}
    assert requests.post(rekor.url + '/api/v1/index/retrieve', json=query, timeout=5).json() == []
    assert rekor.log.release_index() == 1
    assert requests.post(rekor.url + '/api/v1/index/retrieve', json=query,
                         timeout=5).json() == [entry_id]
