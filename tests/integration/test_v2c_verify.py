"""`koji-rekor verify` on Rekor v2: receipts (and the v1 receipt a v2 one
carries), bare TransparencyLogEntry files and Sigstore bundles; the real
production answer and staging bundle with the real TrustedRoots, receipts
made against the local v2 log, every lie (exit 1), no key (exit 2)."""

import base64
import copy
import json
import os

import pytest

import koji_rekor.cli
import koji_rekor.config
from tests.support import rpmfactory
from tests.support.common import SHARED
from koji_rekor.v2 import upload
from koji_rekor.v2.client import ClientSettings
from tests.support.rekor_v2_server import RekorV2Server

REAL = os.path.join(SHARED, 'rekor-v2-real')
REAL_V1 = os.path.join(SHARED, 'rekor-real')
needs_real = pytest.mark.skipif(not os.path.isdir(REAL), reason='no ../shared/rekor-v2-real')
needs_v1 = pytest.mark.skipif(not os.path.isdir(REAL_V1), reason='no ../shared/rekor-real')
PROD_ANSWER = os.path.join(REAL, 'entries', 'log2025-1.idx412114.hashedrekord.create-response.json')
STAGING_BUNDLE = os.path.join(REAL, 'entries', 'log2025-alpha1.idx645.hashedrekord.bundle.json')
PROD_ROOT = os.path.join(REAL, 'trustroot', 'public-good.trusted_root.json')
STAGING_ROOT = os.path.join(REAL, 'trustroot', 'staging.trusted_root.json')
NO_CONFIG = []


@pytest.fixture(autouse=True)
def no_hub_config(monkeypatch):
    # the hub's own file, when this machine has one, is not the test's
    monkeypatch.setattr(koji_rekor.config, 'CONFIG_FILE', '/nonexistent/rekor_log.conf')


def run(capsys, *argv):
    status = koji_rekor.cli.main(['verify'] + [str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def write(path, data):
    path.write_text(json.dumps(data))
    return path


def load(path):
    with open(path) as fo:
        return json.load(fo)


def flip(text):
    raw = bytearray(base64.b64decode(text))
    raw[len(raw) // 2] ^= 1
    return base64.b64encode(bytes(raw)).decode()


# --- the real data ----------------------------------------------------------

@needs_real
def test_production_answer_verifies_with_the_real_trusted_root(capsys):
    status, out, _ = run(capsys, PROD_ANSWER, '--trusted-root', PROD_ROOT, *NO_CONFIG)
    assert status == 0, out
    assert "log index 412114 of tree 412115, origin 'log2025-1.rekor.sigstore.dev'" in out
    assert 'log key: --trusted-root %s' % PROD_ROOT in out
    status, out, _ = run(capsys, PROD_ANSWER, '--trusted-root', PROD_ROOT, '--json', *NO_CONFIG)
    result = json.loads(out)
    assert (status, result['exit_status'], result['document'], result['log_index']) == \
        (0, 0, 'entry', 412114)


@needs_real
def test_staging_bundle_verifies_with_the_real_trusted_root(capsys):
    status, out, _ = run(capsys, STAGING_BUNDLE, '--trusted-root', STAGING_ROOT, *NO_CONFIG)
    assert status == 0, out
    assert "bundle entry, log index 645 of tree 646, origin 'log2025-alpha1.rekor.sigstage.dev'" \
        in out


@needs_real
def test_trusted_root_from_the_configuration(capsys, tmp_path):
    conf = tmp_path / 'rekor_log.conf'
    conf.write_text('[rekor]\nurl = https://log2025-1.rekor.sigstore.dev\napi = 2\n'
                    'trusted_root = %s\n' % PROD_ROOT)
    status, out, _ = run(capsys, PROD_ANSWER, '--config', conf)
    assert status == 0, out
    assert 'log key: [rekor] trusted_root %s (%s)' % (PROD_ROOT, conf) in out


def flip_log_signature(envelope):
    head = '\u2014 log2025-1.rekor.sigstore.dev '
    lines = envelope.split('\n')
    i = next(i for i, line in enumerate(lines) if line.startswith(head))
    lines[i] = head + flip(lines[i][len(head):])
    return '\n'.join(lines)


def _lies():
    yield 'checkpoint signature', lambda e: e['inclusionProof']['checkpoint'].update(
        envelope=flip_log_signature(e['inclusionProof']['checkpoint']['envelope']))
    yield 'root hash', lambda e: e['inclusionProof'].update(
        rootHash=flip(e['inclusionProof']['rootHash']))
    yield 'proof hash', lambda e: e['inclusionProof']['hashes'].__setitem__(
        0, flip(e['inclusionProof']['hashes'][0]))
    yield 'log index', lambda e: e.update(logIndex='412113')
    yield 'kind', lambda e: e['kindVersion'].update(version='0.0.1')


@needs_real
@pytest.mark.parametrize('name, lie', list(_lies()), ids=[n for n, _ in _lies()])
def test_each_lie_in_the_production_answer_fails(capsys, tmp_path, name, lie):
    entry = load(PROD_ANSWER)
    lie(entry)
    assert entry != load(PROD_ANSWER)
    status, out, err = run(capsys, write(tmp_path / 'e.json', entry), '--trusted-root',
                           PROD_ROOT, *NO_CONFIG)
    assert status == 1, (name, out, err)
    assert 'verification failed' in err


@needs_real
def test_bundle_with_another_signature_fails(capsys, tmp_path):
    bundle = load(STAGING_BUNDLE)
    bundle['messageSignature']['signature'] = flip(bundle['messageSignature']['signature'])
    status, _, err = run(capsys, write(tmp_path / 'b.json', bundle), '--trusted-root',
                         STAGING_ROOT, *NO_CONFIG)
    assert status == 1 and 'not the one we sent' in err


@needs_real
def test_no_key_cannot_check(capsys):
    status, _, err = run(capsys, PROD_ANSWER, *NO_CONFIG)
    assert status == 2 and 'no key for Rekor v2 logs' in err
    # a root that does not list the entry's log: not checked, not a lie
    status, _, err = run(capsys, PROD_ANSWER, '--trusted-root', STAGING_ROOT, *NO_CONFIG)
    assert status == 2 and 'no key for its log' in err


# --- receipts made against the local v2 log ---------------------------------

@pytest.fixture(scope='module')
def signed(tmp_path_factory):
    """Two RPMs signed RSA/SHA-256 by one throwaway key (v2 takes SHA-256 only)."""
    from tests.integration.test_v2w_hashedrekord import gpg_key, sign
    base = tmp_path_factory.mktemp('v2c')
    home = str(base / 'gnupg')
    os.makedirs(home, mode=0o700)
    key = gpg_key(home, 'rsa2048', 'v2c')
    try:
        one = sign(rpmfactory.build_rpm(str(base / 'b1'), name='one'), str(base / 'one.rpm'), key)
        two = sign(rpmfactory.build_rpm(str(base / 'b2'), name='two'), str(base / 'two.rpm'), key)
    finally:
        rpmfactory.stop_gpg_agent(home)
    yield key, one, two


@pytest.fixture(scope='module')
def logged(signed, tmp_path_factory):
    key, one, two = signed
    base = tmp_path_factory.mktemp('v2c-log')
    with RekorV2Server(interval=0.05) as log:
        done = upload.upload_rpm(one, key.armored, ClientSettings(log.url, backoff=0.01))
        pem = base / 'log.pem'
        pem.write_bytes(log.key.public_pem)
        receipt = {'rekor_api': 2, 'rekor_url': log.url, 'origin': log.origin,
                   'nvra': 'one-1.0-1.noarch', 'sigkey': key.sigkey, 'sighash': None,
                   'build': 'one-1.0-1',
                   'body': base64.b64encode(done.entry.canonical_body()).decode(),
                   'transparency_log_entry': done.answer.entry}
        yield receipt, pem, log.origin, key, one, two, base


def test_local_receipt_verifies(capsys, tmp_path, logged):
    receipt, pem, origin, key, one, two, _ = logged
    path = write(tmp_path / 'r.json', receipt)
    status, out, err = run(capsys, path, '--log-key', pem, '--origin', origin, *NO_CONFIG)
    assert status == 0, err
    assert 'Rekor v2 receipt of one-1.0-1.noarch sigkey %s' % key.sigkey in out
    assert 'log key: --log-key %s, origin %s' % (pem, origin) in out
    # the body against the RPM's own headers, with the signer's key
    status, out, err = run(capsys, path, '--log-key', pem, '--origin', origin, '--rpm', one,
                           '--key', key.path, *NO_CONFIG)
    assert status == 0, err
    status, _, err = run(capsys, path, '--log-key', pem, '--origin', origin, '--rpm', two,
                         '--key', key.path, *NO_CONFIG)
    assert status == 1 and 'not the logged hashedrekord' in err
    # --rpm without a key for the signature: cannot check
    status, _, err = run(capsys, path, '--log-key', pem, '--origin', origin, '--rpm', one,
                         *NO_CONFIG)
    assert status == 2 and 'no public key for sigkey' in err


def test_local_receipt_with_the_configured_key(capsys, tmp_path, logged):
    receipt, pem, origin, key, one, _, _ = logged
    keys = tmp_path / 'keys'
    keys.mkdir()
    (keys / ('%s.asc' % key.sigkey)).write_bytes(key.armored)
    conf = tmp_path / 'rekor_log.conf'
    conf.write_text('[rekor]\nurl = %s\napi = 2\nlog_public_key = %s\nallow_insecure_http = true\n'
                    '[signing]\npublic_key_dir = %s\n' % (receipt['rekor_url'], pem, keys))
    path = write(tmp_path / 'r.json', receipt)
    status, out, err = run(capsys, path, '--config', conf, '--rpm', one)
    assert status == 0, err
    assert 'log key: [rekor] log_public_key %s' % pem in out
    # the receipt claims another sigkey's signature: the logged key is not it
    other = dict(receipt, sigkey='0badc0de')
    (keys / '0badc0de.asc').write_bytes(key.armored)
    status, _, err = run(capsys, write(tmp_path / 'o.json', other), '--config', conf)
    assert status == 1 and 'records sigkey 0badc0de' in err


@pytest.mark.parametrize('lie', ['body', 'origin', 'entry body', 'checkpoint'])
def test_lying_local_receipt_fails(capsys, tmp_path, logged, lie):
    receipt, pem, origin, *_ = logged
    bad = copy.deepcopy(receipt)
    tle = bad['transparency_log_entry']
    if lie == 'body':
        bad['body'] = flip(bad['body'])
    elif lie == 'origin':
        bad['origin'] = 'elsewhere.example'
    elif lie == 'entry body':
        tle['canonicalizedBody'] = flip(tle['canonicalizedBody'])
    else:
        cp = tle['inclusionProof']['checkpoint']
        cp['envelope'] = cp['envelope'].replace('\n1\n', '\n2\n', 1)
    status, _, err = run(capsys, write(tmp_path / 'r.json', bad), '--log-key', pem,
                         '--origin', origin, *NO_CONFIG)
    assert status == 1, (lie, err)


@needs_v1
def test_receipt_carrying_a_v1_receipt_checks_both(capsys, tmp_path, logged):
    receipt, pem, origin, *_ = logged
    with open(os.path.join(REAL_V1, 'production-entry-with-checkpoint.json')) as fo:
        v1 = {'rekor_url': 'https://rekor.sigstore.dev', 'log_entry': json.load(fo)}
    both = dict(receipt, rekor_v1=v1)
    status, out, err = run(capsys, write(tmp_path / 'r.json', both), '--log-key', pem,
                           '--origin', origin, *NO_CONFIG)
    assert status == 0, err
    assert 'OK its rekor_v1 part' in out and 'built into koji-rekor' in out
    (entry_id, entry), = v1['log_entry'].items()
    entry['verification']['inclusionProof']['rootHash'] = '00' * 32
    status, _, err = run(capsys, write(tmp_path / 'r.json', dict(receipt, rekor_v1=v1)),
                         '--log-key', pem, '--origin', origin, *NO_CONFIG)
    assert status == 1, err
    # a directory of receipts: both kinds, one line each
    status, out, _ = run(capsys, tmp_path, '--log-key', pem, '--origin', origin, *NO_CONFIG)
    assert status == 1 and 'FAILED' in out


# --- verify-rpm with Rekor v2 receipts ----------------------------------------

def run_rpm(capsys, *argv):
    status = koji_rekor.cli.main(['verify-rpm'] + [str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def test_verify_rpm_with_a_v2_receipt(capsys, tmp_path, logged):
    receipt, pem, origin, key, one, two, _ = logged
    path = write(tmp_path / 'r.json', receipt)
    log = ['--log-key', pem, '--origin', origin]
    status, out, err = run_rpm(capsys, one, '--receipt', path, '--key', key.path, *log)
    assert status == 0, out + err
    assert out.startswith('logged %s' % one) and 'no recorded time (Rekor v2)' in out
    assert 'index 0' in out and 'log key: --log-key %s' % pem in out
    # another package signed by the same key: not what the receipt logs
    status, out, _ = run_rpm(capsys, two, '--receipt', path, '--key', key.path, *log)
    assert status == 1 and 'another signature than this file' in out
    # a receipt whose entry lies
    bad = copy.deepcopy(receipt)
    tle = bad['transparency_log_entry']
    tle['inclusionProof']['rootHash'] = flip(tle['inclusionProof']['rootHash'])
    status, out, _ = run_rpm(capsys, one, '--receipt', write(tmp_path / 'bad.json', bad),
                             '--key', key.path, *log)
    assert status == 1 and out.startswith('NOT VERIFIED')
    # no key for the v2 log: not checked
    status, out, _ = run_rpm(capsys, one, '--receipt', path, '--key', key.path)
    assert status == 2 and 'no key for Rekor v2 logs' in out


def test_verify_rpm_with_a_v2_receipt_and_an_untrusted_key(capsys, tmp_path, logged, signed):
    receipt, pem, origin, _, one, _, base = logged
    from tests.integration.test_v2w_hashedrekord import gpg_key
    home = str(tmp_path / 'gnupg')
    os.makedirs(home, mode=0o700)
    try:
        other = gpg_key(home, 'rsa2048', 'someone else')
    finally:
        rpmfactory.stop_gpg_agent(home)
    status, out, _ = run_rpm(capsys, one, '--receipt', write(tmp_path / 'r.json', receipt),
                             '--key', other.path, '--log-key', pem, '--origin', origin)
    assert status == 1 and out.startswith('NOT TRUSTED'), out


def test_verify_rpm_on_a_v2_log_without_a_receipt(capsys, tmp_path, logged):
    receipt, pem, _, key, one, _, _ = logged
    conf = tmp_path / 'rekor_log.conf'
    conf.write_text('[rekor]\nurl = %s\napi = 2\nlog_public_key = %s\nallow_insecure_http = true\n'
                    % (receipt['rekor_url'], pem))
    status, _, err = run_rpm(capsys, one, '--config', conf, '--key', key.path)
    assert status == 2 and 'a Rekor v2 log has no search: pass --receipt' in err
    # with the receipt, the configured key checks it
    status, out, err = run_rpm(capsys, one, '--config', conf, '--key', key.path, '--receipt',
                               write(tmp_path / 'r.json', receipt))
    assert status == 0, out + err


class HubAndTopurl:
    """The hub's rekorLogStatus over XML-RPC and its topdir over HTTP, on
    127.0.0.1: what verify-rpm reads for a v2 log without --receipt."""

    def __init__(self, topdir, statuses):
        import functools
        import http.server
        import threading
        import xmlrpc.server

        class Rpc(xmlrpc.server.SimpleXMLRPCRequestHandler):
            rpc_paths = ('/kojihub',)

            def log_message(self, *args):
                pass

        class Files(http.server.SimpleHTTPRequestHandler):
            def log_message(self, *args):
                pass

        self.asked = []
        self.rpc = xmlrpc.server.SimpleXMLRPCServer(('127.0.0.1', 0), Rpc, logRequests=False,
                                                    allow_none=True)

        def rekorLogStatus(rpm):  # noqa: N802 (the hub's name)
            self.asked.append(rpm)
            return statuses.get(rpm, [])
        self.rpc.register_function(rekorLogStatus)
        self.files = http.server.ThreadingHTTPServer(
            ('127.0.0.1', 0), functools.partial(Files, directory=str(topdir)))
        for server in (self.rpc, self.files):
            threading.Thread(target=server.serve_forever, daemon=True).start()
        self.hub = 'http://127.0.0.1:%d/kojihub' % self.rpc.server_address[1]
        self.topurl = 'http://127.0.0.1:%d' % self.files.server_address[1]

    def close(self):
        for server in (self.rpc, self.files):
            server.shutdown()
            server.server_close()


def test_verify_rpm_on_a_v2_log_asks_the_hub(capsys, tmp_path, logged):
    receipt, pem, _, key, one, two, _ = logged
    topdir = tmp_path / 'koji'
    where = topdir / 'rekor-logs' / 'one' / '1.0' / '1' / 'noarch'
    where.mkdir(parents=True)
    write(where / ('one-1.0-1.noarch.%s.json' % key.sigkey), receipt)
    hub = HubAndTopurl(topdir, {
        'one-1.0-1.noarch': [{'sigkey': key.sigkey, 'status': 'logged', 'receipt': 'x'}],
        'two-1.0-1.noarch': [{'sigkey': key.sigkey, 'status': 'queued', 'reason': 'waiting'}]})
    try:
        conf = tmp_path / 'rekor_log.conf'
        conf.write_text('[rekor]\nurl = %s\napi = 2\nlog_public_key = %s\n'
                        'allow_insecure_http = true\ntimeout = 5\nretries = 0\n'
                        '[koji]\nserver = %s\ntopurl = %s\n'
                        % (receipt['rekor_url'], pem, hub.hub, hub.topurl))
        status, out, err = run_rpm(capsys, one, '--config', conf, '--key', key.path)
        assert status == 0, out + err
        assert out.startswith('logged %s' % one) and hub.asked == ['one-1.0-1.noarch']
        # the hub has not logged the other one yet: not found, with its word
        status, out, _ = run_rpm(capsys, two, '--config', conf, '--key', key.path)
        assert status == 1 and 'NOT FOUND' in out and 'the hub says queued: waiting' in out
        # a receipt on the web server that lies is caught like any other
        bad = copy.deepcopy(receipt)
        tle = bad['transparency_log_entry']
        tle['inclusionProof']['rootHash'] = flip(tle['inclusionProof']['rootHash'])
        write(where / ('one-1.0-1.noarch.%s.json' % key.sigkey), bad)
        status, out, _ = run_rpm(capsys, one, '--config', conf, '--key', key.path)
        assert status == 1 and out.startswith('NOT VERIFIED'), out
    finally:
        hub.close()
    # the hub cannot be reached: not checked
    status, out, _ = run_rpm(capsys, one, '--config', conf, '--key', key.path)
    assert status == 2 and 'cannot ask the hub' in out, out


def test_bare_local_entry_with_rpm(capsys, tmp_path, logged):
    receipt, pem, origin, key, one, two, _ = logged
    path = write(tmp_path / 'e.json', receipt['transparency_log_entry'])
    log = ['--log-key', pem, '--origin', origin, '--key', key.path]
    status, out, err = run(capsys, path, *log)
    assert status == 0 and 'note: a bare entry: its body was compared with nothing' in out
    status, out, err = run(capsys, path, '--rpm', one, *log)
    assert status == 0, err
    status, _, err = run(capsys, path, '--rpm', two, *log)
    assert status == 1 and 'not the logged hashedrekord' in err


@needs_v1
def test_a_v1_part_for_another_signature_fails(capsys, tmp_path, logged):
    receipt, pem, origin, *_ = logged
    with open(os.path.join(REAL_V1, 'production-entry-with-checkpoint.json')) as fo:
        v1 = {'rekor_url': 'https://rekor.sigstore.dev', 'log_entry': json.load(fo),
              'nvra': 'other-1-1.noarch'}
    status, _, err = run(capsys, write(tmp_path / 'r.json', dict(receipt, rekor_v1=v1)),
                         '--log-key', pem, '--origin', origin)
    assert status == 1 and 'rekor_v1 part records nvra other-1-1.noarch' in err
    status, _, err = run(capsys, write(tmp_path / 'r.json', dict(receipt, rekor_api=3)),
                         '--log-key', pem, '--origin', origin)
    assert status == 2 and 'rekor_api' in err


@needs_real
def test_bundle_with_a_key_hint_takes_the_logged_key(capsys, tmp_path):
    bundle = load(STAGING_BUNDLE)
    material = bundle['verificationMaterial']
    del material['certificate']
    material['publicKey'] = {'hint': 'some key'}
    status, out, _ = run(capsys, write(tmp_path / 'b.json', bundle), '--trusted-root',
                         STAGING_ROOT)
    assert status == 0 and 'note: the bundle names its key by hint only' in out
    bundle['messageSignature']['messageDigest']['digest'] = flip(
        bundle['messageSignature']['messageDigest']['digest'])
    status, _, err = run(capsys, write(tmp_path / 'b.json', bundle), '--trusted-root',
                         STAGING_ROOT)
    assert status == 1 and 'not the one we sent' in err
