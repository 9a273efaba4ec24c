"""Rekor v2 through the hub: an import-sig logged to the local v2 log
(tests/support/rekor_v2_server.py) by the plugin as Koji loads and fires it, the
receipt verified, every lie of the log caught, a 409 turned into the same
receipt, a frozen shard handed over to the next, what v2 cannot hold set
aside, and the hub's budget for a checkpoint wait."""

import base64
import json
import os
import shutil

import koji
import koji_rekor.delivery
import koji_rekor.config
import koji_rekor.hub
import pytest

from tests.support import rpmfactory
from tests.support.common import HUB_USER
from koji_rekor.v2 import client as v2client, entry as v2entry, hashedrekord, trust
from tests.support.rekor_v2_server import RekorV2Server


@pytest.fixture(scope='module')
def v2_rpms(tmp_path_factory, keys, unsigned_rpm):
    """The test RPM signed with SHA-256 (v2 takes RSA with SHA-256 only) by
    the RSA key and by another RSA key: two signatures of one RPM."""
    out = tmp_path_factory.mktemp('v2signed')
    return {name: rpmfactory.sign_rpm(unsigned_rpm, str(out / ('%s.rpm' % name)), keys[name],
                                      digest_algo='sha256')
            for name in ('rsa', 'other')}


@pytest.fixture
def v2log():
    with RekorV2Server(interval=0.05) as server:
        yield server


@pytest.fixture
def v2_key_dir(key_dir, keys):
    shutil.copy(keys['other'].path, key_dir / ('%s.asc' % keys['other'].sigkey))
    return key_dir


def configure_v2(hub, tmp_path, v2log, key_dir, extra=''):
    pem = tmp_path / ('v2-%d.pub' % v2log.port)
    pem.write_bytes(v2log.key.public_pem)
    hub.configure('''
        [rekor]
        api = 2
        url = %s
        allow_insecure_http = true
        log_public_key = %s
        timeout = 5
        retries = 1
        backoff = 0.05
        [signing]
        public_key_dir = %s
        [upload]
        hub_user = %s
        %s
        ''' % (v2log.url, pem, key_dir, HUB_USER, extra))


def log_key(v2log):
    return trust.log_key(v2log.origin, v2log.key.public_der)


def nvra(imported):
    return '%(name)s-%(version)s-%(release)s.%(arch)s' % imported.rpm


def receipt_path(topdir, imported):
    return os.path.join(str(topdir), 'rekor-logs', *[imported.rpm[k] for k in (
        'name', 'version', 'release', 'arch')], '%s.%s.json' % (nvra(imported), imported.sigkey))


def receipt_of(topdir, imported):
    path = receipt_path(topdir, imported)
    if not os.path.exists(path):
        return None
    with open(path) as fo:
        return json.load(fo)


def body_of(imported, keys, name):
    return hashedrekord.from_rpm_file(imported.unsigned_path, keys[name].armored,
                                      sighdr=open(imported.sighdr_path, 'rb').read()
                                      ).canonical_body()


def record_of(topdir, imported, folder=''):
    name = '%s.%s.json' % (nvra(imported), imported.sigkey)
    path = os.path.join(str(topdir), 'rekor-logs', '@outbox', folder, name)
    if not os.path.exists(path):
        return None
    with open(path) as fo:
        return json.load(fo)


def test_hub_logs_an_import_sig_to_v2_and_writes_the_receipt(
        hub, tmp_path, topdir, v2log, v2_key_dir, koji_import, v2_rpms, keys):
    configure_v2(hub, tmp_path, v2log, v2_key_dir)
    imported = koji_import(v2_rpms['rsa'])
    hub.sign(imported)
    receipt = receipt_of(topdir, imported)
    assert receipt is not None and hub.outbox() == []
    body = body_of(imported, keys, 'rsa')
    assert base64.b64decode(receipt['body']) == body == v2log.bodies[0]
    assert {k: receipt[k] for k in ('rekor_api', 'rekor_url', 'origin', 'nvra', 'sigkey',
                                    'sighash', 'build')} == {
        'rekor_api': 2, 'rekor_url': v2log.url, 'origin': v2log.origin,
        'nvra': nvra(imported),
        'sigkey': imported.sigkey, 'sighash': imported.sighash,
        'build': '%(name)s-%(version)s-%(release)s' % imported.build}
    assert 'rekor_v1' not in receipt
    verified = v2entry.verify_entry(receipt['transparency_log_entry'], body, log_key(v2log))
    assert verified.entry.log_index == 0
    # The payload was never sent: the log holds a hashedrekord of the header.
    assert json.loads(body)['kind'] == 'hashedrekord'
    # The checkpoint is kept for the next upload's consistency check.
    state = os.path.join(str(topdir), 'rekor-logs', '@state', 'checkpoints',
                         'v2-' + v2log.log_id.hex())
    saved = json.load(open(os.path.join(state, v2log.origin.replace(':', '_') + '.json')))
    assert saved['size'] == 1


def test_a_v1_receipt_is_kept_under_rekor_v1(
        hub, tmp_path, topdir, v2log, v2_key_dir, koji_import, v2_rpms):
    configure_v2(hub, tmp_path, v2log, v2_key_dir)
    imported = koji_import(v2_rpms['rsa'])
    v1 = {'rekor_url': 'https://rekor.example', 'nvra': 'x', 'sigkey': imported.sigkey,
          'sha256': '00' * 32, 'log_entry': {'ab': {}}}
    koji_rekor.delivery.write_receipt(hub.module.get_config(), str(topdir), imported.rpm,
                             imported.sigkey, v1)
    hub.sign(imported)
    receipt = receipt_of(topdir, imported)
    assert receipt['rekor_api'] == 2 and receipt['rekor_v1'] == v1


def test_a_409_yields_the_same_receipt(hub, tmp_path, topdir, v2log, v2_key_dir,
                                       koji_import, v2_rpms):
    configure_v2(hub, tmp_path, v2log, v2_key_dir)
    imported = koji_import(v2_rpms['rsa'])
    hub.sign(imported)
    first = receipt_of(topdir, imported)
    os.unlink(receipt_path(topdir, imported))
    v2log.paused = True  # no newer checkpoint: the 409 is read under the 201's
    hub.sign(imported)
    assert v2log.count('POST', '/api/v2/log/entries', 409) == 1
    assert receipt_of(topdir, imported) == first and hub.outbox() == []


# Lies in a 201, each caught by verify_entry.
@pytest.mark.parametrize('lie', ['body', 'proof', 'checkpoint_signature', 'origin'])
def test_each_lie_of_a_201_is_caught(hub, tmp_path, topdir, v2log, v2_key_dir, koji_import,
                                     v2_rpms, lie):
    configure_v2(hub, tmp_path, v2log, v2_key_dir)
    honest = koji_import(v2_rpms['rsa'])
    hub.sign(honest)
    assert receipt_of(topdir, honest) is not None
    v2log.lie = lie
    lied = koji_import(v2_rpms['other'])
    hub.sign(lied)
    assert v2log.count('POST', '/api/v2/log/entries', 201) == 2
    assert receipt_of(topdir, lied) is None
    record = record_of(topdir, lied)
    assert record is not None and record['attempts'] == 1 and record['last_error']


# Lies met on the 409 path: the entry rebuilt from tiles must verify.
@pytest.mark.parametrize('lie', ['bundle', 'index', 'tile'])
def test_each_lie_of_a_409_is_caught(hub, tmp_path, topdir, v2log, v2_key_dir, koji_import,
                                     v2_rpms, keys, lie):
    configure_v2(hub, tmp_path, v2log, v2_key_dir)
    imported = koji_import(v2_rpms['rsa'])
    with v2client.V2Client(v2client.ClientSettings(v2log.url, backoff=0.01)) as client:
        client.create_entry(hashedrekord.from_rpm_file(
            imported.unsigned_path, keys['rsa'].armored,
            sighdr=open(imported.sighdr_path, 'rb').read()))
        client.create_entry(hashedrekord.from_rpm_file(
            v2_rpms['other'], keys['other'].armored))
    v2log.lie = lie
    hub.sign(imported)
    assert v2log.count('POST', '/api/v2/log/entries', 409) >= 1
    assert receipt_of(topdir, imported) is None
    assert record_of(topdir, imported)['last_error']


def two_shards(tmp_path, old, new):
    """A SigningConfig naming two shards (new the newest) and a TrustedRoot
    with both logs' keys."""
    def tlog(log):
        return {'baseUrl': log.url, 'hashAlgorithm': 'SHA2_256',
                'publicKey': {'rawBytes': base64.b64encode(log.key.public_der).decode(),
                              'keyDetails': 'PKIX_ED25519',
                              'validFor': {'start': '2025-01-01T00:00:00Z'}},
                'logId': {'keyId': base64.b64encode(log.log_id).decode()}}
    root = tmp_path / 'trusted_root.json'
    root.write_text(json.dumps({'mediaType': trust.TRUSTED_ROOT_MEDIA_TYPE,
                                'tlogs': [tlog(old), tlog(new)]}))
    config = tmp_path / 'signing_config.json'
    config.write_text(json.dumps({'mediaType': trust.SIGNING_CONFIG_MEDIA_TYPE, 'rekorTlogUrls': [
        {'url': old.url, 'majorApiVersion': 2, 'validFor': {'start': '2025-01-01T00:00:00Z'}},
        {'url': new.url, 'majorApiVersion': 2, 'validFor': {'start': '2026-01-01T00:00:00Z'}},
        {'url': 'https://rekor.example', 'majorApiVersion': 1,
         'validFor': {'start': '2026-06-01T00:00:00Z'}}]}))
    return root, config


def configure_shards(hub, tmp_path, old, new, key_dir):
    root, config = two_shards(tmp_path, old, new)
    hub.configure('''
        [rekor]
        api = 2
        url = %s
        allow_insecure_http = true
        trusted_root = %s
        signing_config = %s
        timeout = 5
        retries = 1
        backoff = 0.05
        [signing]
        public_key_dir = %s
        [upload]
        hub_user = %s
        ''' % (new.url, root, config, key_dir, HUB_USER))


def test_a_frozen_shard_hands_over_to_the_next(hub, tmp_path, topdir, v2_key_dir, koji_import,
                                              v2_rpms, keys):
    with RekorV2Server(interval=0.05) as old, RekorV2Server(interval=0.05) as new:
        configure_shards(hub, tmp_path, old, new, v2_key_dir)
        first = koji_import(v2_rpms['rsa'])
        hub.sign(first)
        assert receipt_of(topdir, first)['rekor_url'] == new.url and old.bodies == []
        new.frozen = True
        second = koji_import(v2_rpms['other'])
        hub.sign(second)
        receipt = receipt_of(topdir, second)
        assert receipt['rekor_url'] == old.url and receipt['origin'] == old.origin
        assert new.count('POST', '/api/v2/log/entries', 405) == 1
        v2entry.verify_entry(receipt['transparency_log_entry'],
                             base64.b64decode(receipt['body']), log_key(old))


def test_no_shard_left_is_a_clear_stop(hub, tmp_path, topdir, v2_key_dir, koji_import,
                                       v2_rpms):
    with RekorV2Server(interval=0.05) as old, RekorV2Server(interval=0.05) as new:
        configure_shards(hub, tmp_path, old, new, v2_key_dir)
        old.frozen = new.frozen = True
        imported = koji_import(v2_rpms['rsa'])
        hub.sign(imported)
    aside = record_of(topdir, imported, 'rejected')
    assert 'takes no more entries' in aside['set_aside']['reason']
    assert '\n' not in aside['set_aside']['reason'] and hub.outbox() == []


def test_ed25519_is_refused_with_its_reason_and_set_aside(
        hub, tmp_path, topdir, v2log, v2_key_dir, koji_import, signed_rpms):
    configure_v2(hub, tmp_path, v2log, v2_key_dir)
    imported = koji_import(signed_rpms[('ed25519', 'header')])
    hub.sign(imported)
    aside = record_of(topdir, imported, 'rejected')
    assert 'EdDSA' in aside['set_aside']['reason'] and 'Rekor v2' in aside['set_aside']['reason']
    assert v2log.requests == [] and hub.outbox() == []


def test_ed25519_under_enforce_fails_the_import(
        hub, tmp_path, topdir, v2log, v2_key_dir, koji_import, signed_rpms):
    configure_v2(hub, tmp_path, v2log, v2_key_dir, 'enforce = true')
    imported = koji_import(signed_rpms[('ed25519', 'header')])
    with pytest.raises(koji.CallbackError, match='EdDSA'):
        hub.sign(imported)
    assert v2log.requests == [] and hub.outbox() == []


def test_under_enforce_v2_logs_before_the_commit(
        hub, tmp_path, topdir, v2log, v2_key_dir, koji_import, v2_rpms):
    configure_v2(hub, tmp_path, v2log, v2_key_dir, 'enforce = true')
    imported = koji_import(v2_rpms['rsa'])
    hub.sign(imported)
    assert receipt_of(topdir, imported)['rekor_api'] == 2 and hub.outbox() == []


def test_the_hub_leaves_v2_to_the_worker_when_its_budget_cannot_cover_a_checkpoint(
        hub, tmp_path, topdir, v2log, v2_key_dir, koji_import, v2_rpms, plugin_log):
    configure_v2(hub, tmp_path, v2log, v2_key_dir, 'hub_budget = 3')
    imported = koji_import(v2_rpms['rsa'])
    hub.sign(imported)
    assert v2log.requests == [] and len(hub.outbox()) == 1
    assert 'waits for the next checkpoint' in plugin_log.text
    # The worker then logs it.
    import koji_rekor.worker
    settings = koji_rekor.config.load_config(hub.conf_path)
    counts = koji_rekor.worker.drain_outbox(settings, str(topdir), jobs=4)
    assert counts['logged'] == 1 and hub.outbox() == []
    assert receipt_of(topdir, imported)['rekor_api'] == 2


def test_a_shard_that_rewrote_its_past_is_a_split_view(
        hub, tmp_path, topdir, v2log, v2_key_dir, koji_import, v2_rpms):
    """Every 201 verifies on its own; only the consistency proof (from
    tiles) with the checkpoint kept from the first upload shows the fork."""
    from tests.support.rekor_v2_server import Tree, leaf_hash
    configure_v2(hub, tmp_path, v2log, v2_key_dir)
    honest = koji_import(v2_rpms['rsa'])
    hub.sign(honest)
    with v2log.cond:
        v2log.tree, v2log.bodies, v2log.by_identity = Tree(), [b'{"fork":1}'], {}
        v2log.tree.append(leaf_hash(b'{"fork":1}'))
    forked = koji_import(v2_rpms['other'])
    hub.sign(forked)
    assert v2log.count('POST', '/api/v2/log/entries', 201) == 2
    assert receipt_of(topdir, forked) is None
    assert 'split view' in record_of(topdir, forked)['last_error']


def test_rekor_log_status_checks_a_v2_receipt(hub, tmp_path, topdir, v2log, v2_key_dir,
                                               koji_import, v2_rpms, keys, signed_rpms):
    """The hub call verifies a v2 receipt offline (entry, checkpoint, proof,
    and the body against the signature Koji holds); an ed25519 signature
    reads as rejected with its reason."""
    from tests.support import hubsim
    configure_v2(hub, tmp_path, v2log, v2_key_dir)
    logged = koji_import(v2_rpms['rsa'])
    refused = koji_import(signed_rpms[('ed25519', 'header')])
    hub.sign(logged)
    hub.sign(refused)
    hubsim.install_kojihub([logged, refused])
    try:
        statuses = {s['sigkey']: s for s in hubsim.hub_call('rekorLogStatus', nvra(logged))}
        assert statuses[logged.sigkey]['status'] == 'logged'
        assert statuses[logged.sigkey]['log_index'] == 0
        assert statuses[refused.sigkey]['status'] == 'rejected'
        # A receipt whose body is another signature's does not count.
        path = receipt_path(topdir, logged)
        receipt = json.load(open(path))
        receipt['body'] = base64.b64encode(b'{}').decode()
        with open(path, 'w') as fo:
            json.dump(receipt, fo)
        status = {s['sigkey']: s for s in hubsim.hub_call('rekorLogStatus', nvra(logged))}
        assert status[logged.sigkey]['status'] == 'unverified'
    finally:
        hubsim.uninstall_kojihub()


def test_a_v2_receipt_kept_in_a_record_is_verified_again_before_it_is_written(
        hub, tmp_path, topdir, v2log, v2_key_dir, koji_import, v2_rpms):
    """Under enforce the receipt rides in the record until the commit; when
    the request died before it, the worker rebuilds it from the kept entry,
    verified again, never as it stands."""
    import koji_rekor.worker
    configure_v2(hub, tmp_path, v2log, v2_key_dir, 'enforce = true')
    imported = koji_import(v2_rpms['rsa'])
    hub.sign(imported, commit=False)
    outbox = os.path.join(str(topdir), 'rekor-logs', '@outbox')
    name = '%s.%s' % (nvra(imported), imported.sigkey)
    os.rename(os.path.join(outbox, name + '.uncommitted'), os.path.join(outbox, name + '.json'))
    record = record_of(topdir, imported)
    assert record['receipt']['rekor_api'] == 2
    good = record['receipt']
    settings = koji_rekor.config.load_config(hub.conf_path)
    # A kept entry that does not verify is not written.
    record['receipt'] = dict(good, transparency_log_entry=dict(
        good['transparency_log_entry'], logIndex='5'))
    with open(os.path.join(outbox, name + '.json'), 'w') as fo:
        json.dump(record, fo)
    assert koji_rekor.worker.drain_outbox(settings, str(topdir), now=True)['failed'] == 1
    assert receipt_of(topdir, imported) is None
    record = record_of(topdir, imported)
    assert 'the entry says 5' in record['last_error']
    record['receipt'] = good
    with open(os.path.join(outbox, name + '.json'), 'w') as fo:
        json.dump(record, fo)
    assert koji_rekor.worker.drain_outbox(settings, str(topdir), now=True)['logged'] == 1
    assert receipt_of(topdir, imported) == good and v2log.count('POST', '/api/v2/log/entries') == 1


def test_the_hub_holds_a_v2_upload_at_most_10_s_whatever_its_budget(
        hub, tmp_path, topdir, v2log, v2_key_dir, koji_import, v2_rpms):
    """A shard that publishes no checkpoint holds the POST; without enforce
    the hub lets go after V2_HUB_HOLD even with a larger hub_budget, and
    the record waits for the worker."""
    import time
    configure_v2(hub, tmp_path, v2log, v2_key_dir, 'hub_budget = 60')
    v2log.paused = True
    imported = koji_import(v2_rpms['rsa'])
    start = time.monotonic()
    hub.sign(imported)
    took = time.monotonic() - start
    assert koji_rekor.hub.V2_HUB_HOLD - 1 <= took < koji_rekor.hub.V2_HUB_HOLD + 3
    record = record_of(topdir, imported)
    assert 'hub budget of 10 s is spent' in record['last_error']
    assert receipt_of(topdir, imported) is None
