"""koji-rekor monitor with api = 2: a Rekor v2 shard read from its tiles
(the local v2 log on 127.0.0.1): checkpoints verified and proved
consistent from tiles, entry bundles read one at a time from the saved
position, entries made with our keys accounted for with what Koji
recorded. And the v1 monitor finding a hashedrekord made with our key."""

import base64
import hashlib
import http.server
import json
import os
import threading

import pytest
import requests

import koji_rekor.monitor.v2
import koji_rekor.monitor.watchlist
from tests.support import rpmfactory
from tests.support.common import HUB_USER, ROOT
from tests.support.kojidouble import KojiDouble
from tests.support.rekor_server import canonical_json
from koji_rekor.v2 import hashedrekord, upload
from koji_rekor.v2.client import ClientSettings
from tests.support.rekor_v2_server import RekorV2Server, Tree, leaf_hash
from tests.integration.test_monitor import Monitor, closed_port
from tests.integration.test_v2w_hashedrekord import sign


@pytest.fixture
def v2log():
    with RekorV2Server(interval=0.05) as log:
        yield log


@pytest.fixture
def kojihub():
    double = KojiDouble().start()
    yield double
    double.stop()


@pytest.fixture
def v2key_file(tmp_path, v2log):
    path = tmp_path / 'v2log.pub'
    path.write_bytes(v2log.key.public_pem)
    return path


class V2Monitor(Monitor):
    def configure(self, url, log_key_file, key_dir=None, koji_url=None, extra=''):
        text = ('[rekor]\napi = 2\nurl = %s\nallow_insecure_http = true\nlog_public_key = %s\n'
                'timeout = 5\nretries = 1\nbackoff = 0.01\n' % (url, log_key_file))
        if key_dir:
            text += '[signing]\npublic_key_dir = %s\n' % key_dir
        text += '[upload]\nhub_user = %s\n' % HUB_USER
        text += '[koji]\nserver = %s\n' % (koji_url or 'http://127.0.0.1:%d/kojihub'
                                            % closed_port())
        # Its memory off the topdir, private to the test.
        state = 'state_dir = %s\n' % self.state
        if '[monitor]\n' in extra:
            extra = extra.replace('[monitor]\n', '[monitor]\n' + state, 1)
        else:
            extra += '\n[monitor]\n' + state
        self.conf.write_text(text + extra)
        self.args = (url, log_key_file, key_dir, koji_url)


@pytest.fixture
def monitor(tmp_path, topdir, v2log, v2key_file, key_dir, kojihub, capsys, plugin_log):
    made = V2Monitor(tmp_path, topdir, capsys, plugin_log)
    made.configure(v2log.url, v2key_file, key_dir, kojihub.url)
    return made


@pytest.fixture(scope='module')
def sha256_rpms(tmp_path_factory, keys, unsigned_rpm):
    """Koji's package and a stray one, both signed RSA/SHA-256 (v2 takes no
    other RSA hash), with our RSA key."""
    out = tmp_path_factory.mktemp('v2signed')
    stray = rpmfactory.build_rpm(str(out), name='stray', version='6.6', release='6')
    return {'koji': sign(unsigned_rpm, str(out / 'koji.rpm'), keys['rsa']),
            'stray': sign(stray, str(out / 'stray.rpm'), keys['rsa'])}


def log_by_hand(v2log, path, keys):
    return upload.upload_rpm(path, keys['rsa'].armored,
                             ClientSettings(v2log.url, backoff=0.01))


def append(v2log, bodies, publish=True):
    """Entries put straight into the log (as other people's entries are)."""
    with v2log.cond:
        for body in bodies:
            v2log.tree.append(leaf_hash(body))
            v2log.bodies.append(body)
    if publish:
        v2log.publish_now()


def others(count, tag=b'other'):
    return [json.dumps({'apiVersion': '0.0.2', 'kind': 'hashedrekord', 'spec': {
        'hashedRekordV002': {'data': {'digest': base64.b64encode(
            hashlib.sha256(tag + b'%d' % n).digest()).decode(), 'algorithm': 'SHA2_256'}}}},
        sort_keys=True, separators=(',', ':')).encode() for n in range(count)]


def bundle_reads(v2log):
    return [p for m, p, s in list(v2log.requests) if m == 'GET' and p.startswith('/tile/entries')]


def test_an_entry_made_with_our_key_outside_koji_is_a_finding(monitor, v2log, keys,
                                                              sha256_rpms):
    append(v2log, others(3))
    stolen = log_by_hand(v2log, sha256_rpms['stray'], keys)

    status, report = monitor.report()

    assert status == 1
    (finding,) = report['findings']
    assert finding['kind'] == 'not signed in Koji'
    assert finding['id'] == leaf_hash(stolen.entry.canonical_body()).hex()
    assert stolen.entry.digest.hex() in finding['message']
    assert report['scan']['counts'] == {'read': 4, 'ours': 1, 'accounted': 0, 'findings': 1,
                                        'unchecked': 0}
    # kept until acknowledged, and not read twice
    status, again = monitor.report()
    assert status == 1 and [f['new'] for f in again['findings']] == [False]
    assert again['scan']['counts']['read'] == 0


def test_koji_s_own_uploads_are_accounted_for(monitor, v2log, keys, sha256_rpms, koji_import,
                                              kojihub):
    imported = koji_import(sha256_rpms['koji'])
    kojihub.add(imported)
    # what the hub's v2 path sends: the entry from Koji's sigcache header
    with open(imported.sighdr_path, 'rb') as fo:
        upload.upload_rpm(imported.unsigned_path, keys['rsa'].armored,
                          ClientSettings(v2log.url, backoff=0.01), sighdr=fo.read())
    append(v2log, others(2))

    status, report = monitor.report()

    assert (status, report['findings']) == (0, [])
    assert report['scan']['counts'] == {'read': 3, 'ours': 1, 'accounted': 1, 'findings': 0,
                                        'unchecked': 0}
    # the index is derived again from Koji; a second entry costs no new index
    status, report = monitor.report()
    assert status == 0


def test_a_planted_digest_index_silences_nothing(monitor, v2log, keys, sha256_rpms,
                                                 koji_import, kojihub, topdir):
    imported = koji_import(sha256_rpms['koji'])
    kojihub.add(imported)
    stolen = log_by_hand(v2log, sha256_rpms['stray'], keys)
    entry = stolen.entry
    planted = {keys['rsa'].sigkey: {'%s/%s' % (imported.rpm['id'], imported.sighash): [
        entry.digest.hex(), hashlib.sha256(entry.signature).hexdigest(),
        hashlib.sha256(entry.public_key).hexdigest(), 'hello']}}
    state = monitor.state / 'rekor-logs' / '@state' / 'monitor'
    state.mkdir(parents=True)
    (state / 'v2-digests.json').write_text(json.dumps(planted))

    status, report = monitor.report()

    assert status == 1
    assert [f['kind'] for f in report['findings']] == ['not signed in Koji']


def test_a_dsse_entry_or_a_certificate_with_our_key_is_a_finding(monitor, v2log, keys):
    (der, _), = [(d, s) for d, s in koji_rekor.monitor.watchlist.der_public_keys(keys['rsa'].armored)][:1]
    dsse = json.dumps({'apiVersion': '0.0.2', 'kind': 'dsse', 'spec': {'dsseV002': {
        'payloadHash': {'algorithm': 'SHA2_256', 'digest': base64.b64encode(b'x' * 32).decode()},
        'signatures': [{'content': 'AAAA', 'verifier': {
            'publicKey': {'rawBytes': base64.b64encode(der).decode()},
            'keyDetails': 'PKIX_RSA_PKCS1V15_3072_SHA256'}}]}}}).encode()
    append(v2log, [dsse])

    status, report = monitor.report()

    assert status == 1
    (finding,) = report['findings']
    assert finding['kind'] == 'other kind' and 'a dsse 0.0.2 entry' in finding['message']


def test_a_forked_log_is_a_split_view_and_the_kept_checkpoint_stays(monitor, v2log, topdir):
    append(v2log, others(5))
    assert monitor.run()[0] == 0
    kept = json.loads(next((monitor.state / 'rekor-logs' / '@state' / 'monitor').glob('v2-*.json'))
                      .read_text())['checkpoint']
    # the same key signs another history that also has 7 entries
    with v2log.cond:
        v2log.tree, v2log.bodies = Tree(), []
    append(v2log, others(7, tag=b'fork'))

    status, report = monitor.report()

    assert status == 1
    (finding,) = report['findings']
    assert finding['kind'] == 'split view' and 'size 7' in finding['message']
    assert json.loads(next((monitor.state / 'rekor-logs' / '@state' / 'monitor').glob('v2-*.json'))
                      .read_text())['checkpoint'] == kept
    status, out, _ = monitor.run()       # and again next run: never moved forward
    assert status == 1
    assert 'tree %s (active): size 7' % v2log.origin in out
    assert 'NOT consistent with the tree head seen before' in out


def test_a_checkpoint_that_does_not_verify_is_a_finding(monitor, v2log):
    append(v2log, others(1))
    v2log.lie = 'checkpoint_signature'
    v2log.publish_now()

    status, report = monitor.report()

    assert status == 1
    assert [f['kind'] for f in report['findings']] == ['bad tree head']


def test_lying_tiles_are_a_finding(monitor, v2log):
    append(v2log, others(3))
    v2log.lie = 'tile'

    status, report = monitor.report()

    assert status == 1
    assert [f['kind'] for f in report['findings']] == ['split view']


def test_the_scan_reads_one_bundle_at_a_time_and_full_tiles_when_partials_are_gone(
        monitor, v2log):
    append(v2log, others(300))
    v2log.paused = True          # the checkpoint stays at 300 ...
    assert monitor.run()[0] == 0
    assert bundle_reads(v2log) == ['/tile/entries/000', '/tile/entries/001.p/44']
    v2log.paused = False
    v2log.publish_now()
    v2log.paused = True
    assert monitor.run()[0] == 0         # nothing new: no bundle read
    assert len(bundle_reads(v2log)) == 2
    del v2log.requests[:]
    append(v2log, others(300, tag=b'more'), publish=False)  # ... the tree grows to 600
    v2log.publish_now()          # 600: bundle 1 is full, its partial gone

    status, report = monitor.report()

    assert status == 0
    assert report['scan']['from'] == 300 and report['scan']['counts']['read'] == 300
    # one read per bundle from the saved position: 1 (full), 2 (partial)
    assert bundle_reads(v2log) == ['/tile/entries/001', '/tile/entries/002.p/88']


def test_a_stale_checkpoint_reads_a_gone_partial_from_the_full_tile(monitor, v2log):
    append(v2log, others(300))
    v2log.paused = True
    append(v2log, others(300, tag=b'more'), publish=False)

    status, report = monitor.report()   # checkpoint 300, tree 600: .p/44 is gone

    assert status == 0 and report['scan']['counts']['read'] == 300
    assert '/tile/entries/001.p/44' in bundle_reads(v2log)
    assert bundle_reads(v2log)[-1] == '/tile/entries/001'


def test_a_bounded_tile_cache_at_any_size(monitor, v2log, monkeypatch):
    held = []
    real = koji_rekor.monitor.v2.check_v2_index

    def spy(log, reader, *args):
        held.append(len(reader._cache))
        return real(log, reader, *args)
    monkeypatch.setattr(koji_rekor.monitor.v2, 'check_v2_index', spy)
    append(v2log, others(256 * 6))

    assert monitor.run()[0] == 0
    assert len(held) == 256 * 6 and max(held) <= koji_rekor.monitor.v2.V2_TILE_CACHE


# --- the v1 monitor and hashedrekord --------------------------------------------------

def test_v1_a_hashedrekord_made_with_our_key_is_a_finding(tmp_path, topdir, rekor, log_key_file,
                                                          key_dir, kojihub, capsys, plugin_log,
                                                          keys, sha256_rpms):
    from cryptography.hazmat.primitives import serialization
    v1 = Monitor(tmp_path, topdir, capsys, plugin_log)
    v1.configure(rekor.url, log_key_file, key_dir, kojihub.url)
    assert v1.run()[0] == 0
    entry = hashedrekord.from_rpm_file(sha256_rpms['stray'], keys['rsa'].armored)
    pem = serialization.load_der_public_key(entry.public_key).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    proposed = {'apiVersion': '0.0.1', 'kind': 'hashedrekord', 'spec': {
        'data': {'hash': {'algorithm': 'sha256', 'value': entry.digest.hex()}},
        'signature': {'content': base64.b64encode(entry.signature).decode(),
                      'publicKey': {'content': base64.b64encode(pem).decode()}}}}
    # the thief's own upload, which Rekor v1 takes (pkg/types/hashedrekord/v0.0.1)
    answer = requests.post(rekor.url + '/api/v1/log/entries', json=proposed, timeout=10)
    assert answer.status_code == 201
    forged = json.loads(json.dumps(proposed))
    forged['spec']['data']['hash']['value'] = '00' * 32
    refused = requests.post(rekor.url + '/api/v1/log/entries', json=forged, timeout=10)
    assert refused.status_code == 400 and 'verifying signature' in refused.json()['message']

    status, report = v1.report()

    assert status == 1
    (finding,) = report['findings']
    assert finding['kind'] == 'not signed in Koji'
    assert entry.digest.hex() in finding['message']


# --- real data and several shards -----------------------------------------------------

REAL_TILES = os.path.join(os.path.dirname(ROOT), 'shared', 'rekor-v2-real', 'tiles', 'log')
REAL_VKEY = 'example.com/log/testdata+33d7b496+AeHTu4Q3hEIMHNqc6fASMsq3rKNx280NI+oO5xCFkkSx'


class StaticTiles(http.server.SimpleHTTPRequestHandler):
    """A tile log's files as static files, as tessera's POSIX writer leaves
    them for a web server; /checkpoint is whichever checkpoint the test picks."""
    checkpoint = 'checkpoint'

    def translate_path(self, path):
        if path == '/checkpoint':
            path = '/' + self.checkpoint
        return os.path.join(REAL_TILES, path.lstrip('/'))

    def log_message(self, *args):
        pass


@pytest.mark.skipif(not os.path.isdir(REAL_TILES), reason='../shared/rekor-v2-real absent')
def test_the_real_tile_log_scans_and_proves_consistent(tmp_path, topdir, key_dir, capsys,
                                                        plugin_log):
    from cryptography.hazmat.primitives import serialization
    from koji_rekor.v2 import note
    key = note.parse_vkey(REAL_VKEY).public_key
    pem = tmp_path / 'real.pub'
    pem.write_bytes(key.public_bytes(serialization.Encoding.PEM,
                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    handler = type('Handler', (StaticTiles,), {'checkpoint': 'checkpoint.10'})
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = 'http://127.0.0.1:%d' % server.server_address[1]
        monitor = V2Monitor(tmp_path, topdir, capsys, plugin_log)
        monitor.configure(url, pem, key_dir)
        monitor.conf.write_text(monitor.conf.read_text().replace(
            '[rekor]\n', '[rekor]\norigin = example.com/log/testdata\n', 1))
        status, report = monitor.report()
        assert status == 0, report['not_checked']
        assert report['scan']['counts']['read'] == 10
        handler.checkpoint = 'checkpoint'
        status, report = monitor.report()
        assert status == 0
        assert (report['scan']['from'], report['scan']['counts']['read']) == (10, 5)
        assert report['trees'][0]['status'] == 'grew'
    finally:
        server.shutdown()
        server.server_close()


def test_each_shard_of_the_signing_config_has_its_own_position(tmp_path, topdir, key_dir,
                                                               kojihub, capsys, plugin_log,
                                                               keys, sha256_rpms):
    from koji_rekor.v2 import trust
    with RekorV2Server(interval=0.05) as old, RekorV2Server(interval=0.05) as new:
        tlogs, shards = [], []
        for log, start in ((old, '2025-01-01T00:00:00Z'), (new, '2026-01-01T00:00:00Z')):
            tlogs.append({'baseUrl': log.url, 'hashAlgorithm': 'SHA2_256',
                          'publicKey': {'rawBytes': base64.b64encode(log.key.public_der).decode(),
                                        'keyDetails': 'PKIX_ED25519',
                                        'validFor': {'start': start}},
                          'logId': {'keyId': base64.b64encode(log.log_id).decode()}})
            shards.append({'url': log.url, 'majorApiVersion': 2, 'validFor': {'start': start}})
        shards.append({'url': 'https://rekor.example', 'majorApiVersion': 1,
                       'validFor': {'start': '2020-01-01T00:00:00Z'}})
        root, config = tmp_path / 'root.json', tmp_path / 'config.json'
        root.write_text(json.dumps({'mediaType': trust.TRUSTED_ROOT_MEDIA_TYPE, 'tlogs': tlogs}))
        config.write_text(json.dumps({'mediaType': trust.SIGNING_CONFIG_MEDIA_TYPE,
                                      'rekorTlogUrls': shards}))
        append(old, others(4))
        stolen = log_by_hand(old, sha256_rpms['stray'], keys)
        append(new, others(2, tag=b'new'))
        monitor = V2Monitor(tmp_path, topdir, capsys, plugin_log)
        monitor.configure(new.url, 'unused', key_dir, kojihub.url)
        monitor.conf.write_text(monitor.conf.read_text().replace(
            'log_public_key = unused\n', 'trusted_root = %s\nsigning_config = %s\n'
            % (root, config)))

        status, report = monitor.report()

        assert status == 1
        assert sorted(t['size'] for t in report['trees']) == [2, 5]
        assert [f['id'] for f in report['findings']] == [
            leaf_hash(stolen.entry.canonical_body()).hex()]
        append(new, others(1, tag=b'newer'))
        status, report = monitor.report()
        assert [(t['size'], t['status']) for t in report['trees']] == [(5, 'unchanged'),
                                                                      (3, 'grew')]
        assert [f['new'] for f in report['findings']] == [False]


def test_v1_only_options_are_refused_with_a_v2_log(monitor, v2log):
    for args in (('--history',), ('--start-index', '3')):
        status, out, err = monitor.run(*args)
        assert status == 2 and '--start-index and --history are for Rekor v1 logs' in err


def dsse_with(der, details):
    return json.dumps({'apiVersion': '0.0.2', 'kind': 'dsse', 'spec': {'dsseV002': {
        'payloadHash': {'algorithm': 'SHA2_256', 'digest': base64.b64encode(b'x' * 32).decode()},
        'signatures': [{'content': 'AAAA', 'verifier': {
            'publicKey': {'rawBytes': base64.b64encode(der).decode()},
            'keyDetails': details}}]}}}).encode()


def test_our_ed25519_key_is_known_in_its_der_form(monitor, v2log, keys):
    from cryptography.hazmat.primitives import serialization
    (der, sigkey), = koji_rekor.monitor.watchlist.der_public_keys(keys['ed25519'].armored)
    assert sigkey == keys['ed25519'].sigkey
    raw = serialization.load_der_public_key(der).public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    # the 32-byte point after 0x40 in the OpenPGP key packet (RFC 4880bis EdDSA)
    assert b'\x40' + raw in hashedrekord.key_packets(keys['ed25519'].armored)[0].body
    append(v2log, [dsse_with(der, 'PKIX_ED25519')])

    status, report = monitor.report()

    assert status == 1 and [f['kind'] for f in report['findings']] == ['other kind']


def test_our_key_inside_a_certificate_is_a_finding(monitor, v2log, keys, sha256_rpms):
    import datetime
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    entry = hashedrekord.from_rpm_file(sha256_rpms['stray'], keys['rsa'].armored)
    ca = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, 'someone')])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(serialization.load_der_public_key(entry.public_key))
            .serial_number(1).not_valid_before(now).not_valid_after(now)
            .sign(ca, hashes.SHA256()))
    body = json.loads(entry.canonical_body())
    body['spec']['hashedRekordV002']['signature']['verifier'] = {
        'x509Certificate': {'rawBytes': base64.b64encode(
            cert.public_bytes(serialization.Encoding.DER)).decode()},
        'keyDetails': entry.key_details}
    append(v2log, [json.dumps(body, sort_keys=True, separators=(',', ':')).encode()])

    status, report = monitor.report()

    assert status == 1
    (finding,) = report['findings']
    assert finding['kind'] == 'other kind' and 'as certificate' in finding['message']


def test_when_koji_cannot_be_asked_the_entry_is_checked_next_run(monitor, v2log, keys,
                                                                  sha256_rpms, kojihub):
    log_by_hand(v2log, sha256_rpms['stray'], keys)
    append(v2log, others(2))
    kojihub.down = True

    status, report = monitor.report()

    assert status == 2 and report['scan']['counts']['unchecked'] == 1
    kojihub.down = False
    status, report = monitor.report()
    assert status == 1 and report['scan']['counts']['read'] == 1
    assert [f['kind'] for f in report['findings']] == ['not signed in Koji']


def test_v1_koji_s_own_hashedrekord_is_accounted_for(tmp_path, topdir, rekor, log_key_file,
                                                     key_dir, kojihub, capsys, plugin_log,
                                                     keys, sha256_rpms, koji_import):
    from cryptography.hazmat.primitives import serialization
    v1 = Monitor(tmp_path, topdir, capsys, plugin_log)
    v1.configure(rekor.url, log_key_file, key_dir, kojihub.url)
    assert v1.run()[0] == 0
    imported = koji_import(sha256_rpms['koji'])
    kojihub.add(imported)
    with open(imported.sighdr_path, 'rb') as fo:
        entry = hashedrekord.from_rpm_file(imported.unsigned_path, keys['rsa'].armored,
                                           sighdr=fo.read())
    pem = serialization.load_der_public_key(entry.public_key).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    rekor.log.add_entry(canonical_json({'apiVersion': '0.0.1', 'kind': 'hashedrekord', 'spec': {
        'data': {'hash': {'algorithm': 'sha256', 'value': entry.digest.hex()}},
        'signature': {'content': base64.b64encode(entry.signature).decode(),
                      'publicKey': {'content': base64.b64encode(pem).decode()}}}}))

    status, report = v1.report()

    assert (status, report['findings']) == (0, [])
    assert report['scan']['counts']['accounted'] == 1


def test_entry_bundles_that_are_not_the_logged_entries_are_a_finding(monitor, v2log):
    append(v2log, others(2))
    v2log.lie = 'bundle'

    status, report = monitor.report()

    assert status == 1
    assert [f['kind'] for f in report['findings']] == ['unverified entry'] * 2


def test_a_digest_index_naming_what_koji_lacks_is_dropped(monitor, v2log, keys, sha256_rpms,
                                                           topdir):
    stolen = log_by_hand(v2log, sha256_rpms['stray'], keys)
    entry = stolen.entry
    state = monitor.state / 'rekor-logs' / '@state' / 'monitor'
    state.mkdir(parents=True)
    (state / 'v2-digests.json').write_text(json.dumps({keys['rsa'].sigkey: {
        name: [entry.digest.hex(), 'x', 'y', 'z'] for name in ('77/ab', 'junk/cd')}}))

    status, report = monitor.report()

    assert status == 1
    assert [f['kind'] for f in report['findings']] == ['not signed in Koji']
    assert json.loads((state / 'v2-digests.json').read_text()) == {keys['rsa'].sigkey: {}}


def test_a_trusted_root_s_v1_log_is_skipped_and_its_v2_shard_read(tmp_path, topdir, key_dir,
                                                                  kojihub, capsys, plugin_log,
                                                                  v2log, rekor):
    from cryptography.hazmat.primitives import serialization
    from koji_rekor.v2 import note, trust
    v1_der = serialization.load_pem_public_key(rekor.log.public_key_pem).public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    tlogs = []
    for url, der, details in ((rekor.url, v1_der, 'PKIX_ECDSA_P256_SHA_256'),
                              (v2log.url, v2log.key.public_der, 'PKIX_ED25519')):
        log_id = note.note_key(trust.origin_of(url), der).log_id
        tlogs.append({'baseUrl': url, 'hashAlgorithm': 'SHA2_256',
                      'publicKey': {'rawBytes': base64.b64encode(der).decode(),
                                    'keyDetails': details,
                                    'validFor': {'start': '2025-01-01T00:00:00Z'}},
                      'logId': {'keyId': base64.b64encode(log_id).decode()}})
    root = tmp_path / 'root.json'
    root.write_text(json.dumps({'mediaType': trust.TRUSTED_ROOT_MEDIA_TYPE, 'tlogs': tlogs}))
    append(v2log, others(3))
    monitor = V2Monitor(tmp_path, topdir, capsys, plugin_log)
    monitor.configure(v2log.url, 'unused', key_dir, kojihub.url)
    monitor.conf.write_text(monitor.conf.read_text().replace(
        'url = %s\n' % v2log.url, '').replace('log_public_key = unused\n',
                                              'trusted_root = %s\n' % root))

    status, report = monitor.report()

    assert status == 0, report['not_checked']
    assert [t['size'] for t in report['trees']] == [3]
    assert any('not a Rekor v2 log, skipped' in n for n in report['notes'])


def test_a_v2_finding_is_acknowledged_by_its_leaf_hash(monitor, v2log, keys, sha256_rpms):
    log_by_hand(v2log, sha256_rpms['stray'], keys)
    status, report = monitor.report()
    (finding,) = report['findings']
    assert finding['acknowledge'] == "koji-rekor monitor --ack %s --reason 'TEXT'" % finding['id']

    assert monitor.run('--ack', finding['id'], '--reason', 'our test upload')[0] == 0
    status, report = monitor.report()
    assert (status, report['findings'], report['acknowledged']) == (0, [], 1)


def test_the_same_size_with_another_root_is_a_split_view(monitor, v2log):
    append(v2log, others(5))
    assert monitor.run()[0] == 0
    with v2log.cond:
        v2log.tree, v2log.bodies = Tree(), []
    append(v2log, others(5, tag=b'fork'))

    status, report = monitor.report()

    assert status == 1 and [f['kind'] for f in report['findings']] == ['split view']
    assert report['scan'] == {}


def test_an_older_consistent_checkpoint_is_a_note_and_the_kept_one_stays(monitor, v2log,
                                                                          topdir):
    append(v2log, others(8))
    assert monitor.run()[0] == 0
    v2log.paused = True
    with v2log.cond:
        v2log.published_note = v2log.note(5)   # a cache serving an older checkpoint

    status, report = monitor.report()

    assert (status, report['findings']) == (0, [])
    assert report['trees'][0]['status'] == 'older'
    kept = json.loads(next((monitor.state / 'rekor-logs' / '@state' / 'monitor').glob('v2-*.json'))
                      .read_text())
    assert kept['next_index'] == 8 and kept['checkpoint'].split('\n')[1] == '8'
