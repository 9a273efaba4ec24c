"""The plugin end to end: Koji's loader and run_callbacks, real signed RPMs
in a Koji topdir, a local Rekor-compatible log over HTTP on 127.0.0.1."""

import base64
import hashlib
import json
import os
import re
import socket

import koji
import koji_rekor.config
import koji_rekor.outbox
import pytest

from tests.support.common import KEY_ALGOS, SIGN_MODES, frozen

ENTRIES = '/api/v1/log/entries'


def sha256_file(path):
    with open(path, 'rb') as fo:
        return hashlib.sha256(fo.read()).hexdigest()


def receipt_file(topdir, imported):
    r = imported.rpm
    return (topdir / 'rekor-logs' / r['name'] / r['version'] / r['release'] / r['arch']
            / ('%s-%s-%s.%s.%s.json' % (r['name'], r['version'], r['release'], r['arch'],
                                        imported.sigkey)))


def receipts(topdir):
    """Every receipt file under rekor-logs/ (not the log state)."""
    base = topdir / 'rekor-logs'
    return sorted(str(p.relative_to(base)) for p in base.rglob('*.json')
                  if not any(part.startswith('@') for part in p.parts)) if base.exists() else []


@pytest.mark.parametrize('algo', KEY_ALGOS)
@pytest.mark.parametrize('mode', SIGN_MODES)
def test_signature_becomes_entry_with_receipt(configured_hub, rekor, topdir, koji_import,
                                              signed_rpms, algo, mode, plugin_log):
    signed = signed_rpms[(algo, mode)]
    imported = koji_import(signed)

    configured_hub.sign(imported)

    receipt = json.loads(receipt_file(topdir, imported).read_text())
    assert receipt['rekor_url'] == rekor.url
    assert receipt['nvra'] == 'hello-1.0-1.noarch'
    assert receipt['sigkey'] == imported.sigkey
    # The hash of what was streamed is the hash of the real signed RPM.
    assert receipt['sha256'] == sha256_file(signed)
    (entry_id, entry), = receipt['log_entry'].items()
    body = json.loads(base64.b64decode(entry['body']))
    assert body['kind'] == 'rpm'
    assert body['spec']['package']['hash']['value'] == sha256_file(signed)
    assert body['spec']['package']['headers']['Name'] == 'hello'
    assert set(entry) >= {'body', 'integratedTime', 'logID', 'logIndex', 'verification'}
    assert rekor.count('POST', ENTRIES) == 1
    assert 'logged hello-1.0-1.noarch sigkey %s' % imported.sigkey in plugin_log.text


def test_receipt_holds_the_entry_exactly_as_the_log_returned_it(configured_hub, rekor, topdir,
                                                                koji_import, signed_rpms):
    imported = koji_import(signed_rpms[('rsa', 'header')])
    configured_hub.sign(imported)
    receipt = json.loads(receipt_file(topdir, imported).read_text())
    (entry_id, entry), = receipt['log_entry'].items()
    # Fetching the entry again gives the same body, index and time.
    import requests
    fetched = requests.get(rekor.url + ENTRIES + '/' + entry_id, timeout=5).json()[entry_id]
    for name in ('body', 'integratedTime', 'logID', 'logIndex'):
        assert fetched[name] == entry[name]


def test_signed_copy_is_used_when_present(configured_hub, rekor, topdir, koji_import,
                                          signed_rpms):
    signed = signed_rpms[('ed25519', 'rpmv3')]
    imported = koji_import(signed, write_signed_copy=True)
    os.unlink(imported.sighdr_path)  # only the signed copy can serve now
    configured_hub.sign(imported)
    receipt = json.loads(receipt_file(topdir, imported).read_text())
    assert receipt['sha256'] == sha256_file(signed)


def test_unsigned_import_is_skipped(configured_hub, rekor, topdir, koji_import, signed_rpms,
                                    plugin_log):
    imported = koji_import(signed_rpms[('rsa', 'header')])
    configured_hub.sign(imported, sigkey='')
    assert rekor.count('POST', ENTRIES) == 0
    assert receipts(topdir) == []
    assert 'imported without a signature' in plugin_log.text


def test_external_rpm_is_skipped(configured_hub, rekor, topdir, koji_import, signed_rpms,
                                 plugin_log):
    imported = koji_import(signed_rpms[('rsa', 'header')])
    rpm = dict(imported.rpm, external_repo_id=3, external_repo_name='fedora')
    configured_hub.sign(imported, rpm=rpm)
    assert rekor.count('POST', ENTRIES) == 0
    assert 'external repo fedora' in plugin_log.text


@pytest.mark.parametrize('enforce', [False, True])
def test_hub_dicts_are_not_changed(configured_hub, rekor, topdir, koji_import, signed_rpms,
                                   enforce):
    """The plugin keeps copies of Koji's build and rpm dicts: what it adds to
    its record (attempts, receipts, reasons) never reaches Koji's."""
    if enforce:
        configured_hub.configure(configured_hub.conf_path.read_text().replace(
            '[upload]\n', '[upload]\nenforce = true\n'))
    imported = koji_import(signed_rpms[('rsa', 'header')])
    imported.build['extra'] = {'nested': ['kept']}
    build, rpm = frozen(imported.build), frozen(imported.rpm)
    configured_hub.sign(imported)
    assert receipt_file(topdir, imported).exists()  # the whole path ran
    assert rekor.count('POST', ENTRIES) == 1
    assert imported.build == build and imported.rpm == rpm
    # And the record kept no reference to them: changing Koji's dicts later
    # changes nothing the plugin wrote.
    record = koji_rekor.outbox.new_record(imported.build, imported.rpm, imported.sigkey, None)
    imported.rpm['name'] = 'changed'
    imported.build['name'] = 'changed'
    assert record['rpm']['name'] == 'hello' and record['build']['name'] == 'hello'


def test_a_repeat_meets_409_and_uses_the_existing_entry(configured_hub, rekor, topdir,
                                                        koji_import, signed_rpms, plugin_log):
    imported = koji_import(signed_rpms[('rsa', 'rpmv3')])
    configured_hub.sign(imported)
    first = json.loads(receipt_file(topdir, imported).read_text())
    receipt_file(topdir, imported).unlink()

    configured_hub.sign(imported)

    second = json.loads(receipt_file(topdir, imported).read_text())
    assert list(second['log_entry']) == list(first['log_entry'])
    assert rekor.count('POST', ENTRIES) == 2
    assert len(rekor.log.submitted) == 1
    assert 'already in the log hello-1.0-1.noarch' in plugin_log.text
    assert not any(n.startswith('.') for n in os.listdir(receipt_file(topdir, imported).parent))


def test_the_original_plugins_configuration_keeps_working(hub, rekor, topdir, koji_import,
                                                          signed_rpms, keys, log_key_file):
    # The original file: one [config] section, one key for every sigkey.
    hub.configure('''
        [config]
        rekor_server_url = %s
        public_key_path = %s
        enforce_rekor_upload = True
        record_log_info = True
        [rekor]
        allow_insecure_http = true
        log_public_key = %s
        ''' % (rekor.url, keys['rsa'].path, log_key_file))
    imported = koji_import(signed_rpms[('rsa', 'header')])
    hub.sign(imported)
    assert receipt_file(topdir, imported).exists()
    assert hub.module.get_config().enforce is True


def test_record_log_info_off_writes_no_receipt(hub, rekor, topdir, koji_import, signed_rpms,
                                               key_dir, log_key_file):
    hub.configure('''
        [rekor]
        url = %s
        allow_insecure_http = true
        log_public_key = %s
        [signing]
        public_key_dir = %s
        [upload]
        record_log_info = false
        ''' % (rekor.url, log_key_file, key_dir))
    hub.sign(koji_import(signed_rpms[('rsa', 'header')]))
    assert rekor.count('POST', ENTRIES) == 1
    assert receipts(topdir) == []


def test_log_key_is_trusted_on_first_use_and_pinned(hub, rekor, topdir, koji_import,
                                                    signed_rpms, key_dir, plugin_log):
    hub.configure('''
        [rekor]
        url = %s
        allow_insecure_http = true
        trust_on_first_use = true
        [signing]
        public_key_dir = %s
        ''' % (rekor.url, key_dir))
    hub.sign(koji_import(signed_rpms[('rsa', 'header')]))
    pinned = list((topdir / 'rekor-logs' / '@state' / 'keys').iterdir())
    assert [p.read_bytes() for p in pinned] == [rekor.log.public_key_pem]
    assert 'trusting the log key' in plugin_log.text


def test_without_a_key_or_trust_on_first_use_nothing_is_trusted(hub, rekor, topdir, koji_import,
                                                                 signed_rpms, key_dir, plugin_log):
    hub.configure('''
        [rekor]
        url = %s
        allow_insecure_http = true
        [signing]
        public_key_dir = %s
        ''' % (rekor.url, key_dir))
    imported = koji_import(signed_rpms[('rsa', 'header')])
    hub.sign(imported)
    assert rekor.count('POST', ENTRIES) == 0
    assert not (topdir / 'rekor-logs' / '@state' / 'keys').exists() or \
        list((topdir / 'rekor-logs' / '@state' / 'keys').iterdir()) == []
    assert 'no log key for %s: set [rekor] log_public_key' % rekor.url in plugin_log.text
    assert hub.outbox() == ['hello-1.0-1.noarch.%s.json' % imported.sigkey]  # kept for a key


# --- configuration errors --------------------------------------------------

@pytest.mark.parametrize('text, option', [
    ('[upload]\nenforce = maybe\n', '[upload] enforce'),
    ('[config]\nenforce_rekor_upload = sometimes\n', '[config] enforce_rekor_upload'),
    ('[signing]\npublic_key_path = /nonexistent/key.asc\n', '[signing] public_key_path'),
    ('[config]\npublic_key_path = /nonexistent/key.asc\n', '[config] public_key_path'),
    ('[signing]\npublic_key_dir = /nonexistent/keys\n', '[signing] public_key_dir'),
    ('[rekor]\nlog_public_key = /nonexistent.pem\n', '[rekor] log_public_key'),
    ('[rekor]\nurl = http://rekor.example.test\n', '[rekor] url'),
    ('[rekor]\ntimeout = soon\n', '[rekor] timeout'),
    ('[rekor]\nretries = -1\n', '[rekor] retries'),
])
def test_bad_configuration_names_the_option(hub, koji_import, signed_rpms, text, option):
    hub.configure(text)
    with pytest.raises(koji.ConfigurationError) as info:
        koji_rekor.config.load_config(str(hub.conf_path))
    assert option in str(info.value)
    # Through the hub, the call fails with that cause.
    with pytest.raises(koji.CallbackError) as info:
        hub.sign(koji_import(signed_rpms[('rsa', 'header')]))
    assert option in str(info.value)


def test_a_missing_configuration_file_is_an_error_not_defaults(hub):
    # Defaults would send a private site's packages to the public log.
    with pytest.raises(koji.ConfigurationError) as info:
        koji_rekor.config.load_config('/nonexistent/rekor_log.conf')
    assert str(info.value) == '/nonexistent/rekor_log.conf: no such configuration file'


# --- bad input: a one-line cause, nothing sent, no receipt -------------------

def break_by(case, imported, keys, key_dir):
    if case == 'missing rpm':
        os.unlink(imported.unsigned_path)
        return 'RPM file missing: %s' % imported.unsigned_path
    if case == 'missing signature header':
        os.unlink(imported.sighdr_path)
        return 'signature header unreadable: %s' % imported.sighdr_path
    if case == 'corrupt signature header':
        with open(imported.sighdr_path, 'r+b') as fo:
            fo.write(b'garbage!')
        return 'corrupt signature header %s' % imported.sighdr_path
    if case == 'truncated signature header':
        with open(imported.sighdr_path, 'r+b') as fo:
            fo.truncate(200)
        return 'corrupt signature header %s' % imported.sighdr_path
    if case == 'unknown sigkey':
        os.unlink(key_dir / ('%s.asc' % imported.sigkey))
        return 'no public key for sigkey %s' % imported.sigkey
    if case == 'wrong key':
        path = key_dir / ('%s.asc' % imported.sigkey)
        path.write_bytes(keys['other'].armored)
        return 'public key %s does not verify hello-1.0-1.noarch signed by %s' % (
            path, imported.sigkey)
    if case == 'not a key':
        path = key_dir / ('%s.asc' % imported.sigkey)
        path.write_text('hello\n')
        return '%s is not an ASCII-armored OpenPGP public key' % path
    raise AssertionError(case)


BAD_INPUTS = ['missing rpm', 'missing signature header', 'corrupt signature header',
              'truncated signature header', 'unknown sigkey', 'wrong key', 'not a key']


@pytest.mark.parametrize('case', BAD_INPUTS)
def test_bad_input_is_logged_in_one_line_and_nothing_is_sent(configured_hub, rekor, topdir,
                                                             koji_import, signed_rpms, keys,
                                                             key_dir, plugin_log, case):
    imported = koji_import(signed_rpms[('rsa', 'header')])
    cause = break_by(case, imported, keys, key_dir)

    configured_hub.sign(imported)  # enforce is off: the hub call succeeds

    errors = [r for r in plugin_log.records if r.levelname == 'ERROR']
    assert len(errors) == 1
    message = errors[0].getMessage()
    assert cause in message and '\n' not in message
    assert errors[0].exc_info is None  # a cause, not a traceback
    assert rekor.count('POST', ENTRIES) == 0
    assert receipts(topdir) == []


@pytest.mark.parametrize('case', BAD_INPUTS)
def test_bad_input_under_enforce_fails_the_hub_call(configured_hub, rekor, topdir, koji_import,
                                                    signed_rpms, keys, key_dir, case):
    with open(configured_hub.conf_path, 'a') as fo:
        fo.write('enforce = true\n')  # [upload] is the file's last section
    imported = koji_import(signed_rpms[('ed25519', 'header')])
    cause = break_by(case, imported, keys, key_dir)
    with pytest.raises(koji.CallbackError) as info:
        configured_hub.sign(imported)
    assert cause in str(info.value)
    assert receipts(topdir) == []


# --- Rekor's answers ----------------------------------------------------------

def closed_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def test_unreachable_rekor_is_retried_then_reported(hub, topdir, koji_import, signed_rpms,
                                                    key_dir, log_key_file, plugin_log):
    hub.configure('''
        [rekor]
        url = http://127.0.0.1:%d
        allow_insecure_http = true
        log_public_key = %s
        retries = 2
        backoff = 0.01
        [signing]
        public_key_dir = %s
        [upload]
        enforce = true
        ''' % (closed_port(), log_key_file, key_dir))
    with pytest.raises(koji.CallbackError) as info:
        hub.sign(koji_import(signed_rpms[('rsa', 'header')]))
    assert 'cannot reach Rekor at http://127.0.0.1' in str(info.value)
    assert 'after 3 attempts' in str(info.value)
    assert receipts(topdir) == []


def test_server_errors_are_retried(configured_hub, rekor, topdir, koji_import, signed_rpms):
    rekor.faults.fail_status, rekor.faults.fail_count = 503, 2
    imported = koji_import(signed_rpms[('rsa', 'header')])
    configured_hub.sign(imported)
    assert rekor.count('POST', ENTRIES) == 3
    assert receipt_file(topdir, imported).exists()


def test_dropped_connections_are_retried(configured_hub, rekor, topdir, koji_import, signed_rpms):
    rekor.faults.drop_count = 1
    imported = koji_import(signed_rpms[('rsa', 'header')])
    configured_hub.sign(imported)
    assert receipt_file(topdir, imported).exists()
    assert len(rekor.log.submitted) == 1


def test_a_malformed_answer_is_retried_and_converges_on_the_entry(configured_hub, rekor, topdir,
                                                                  koji_import, signed_rpms):
    # The first POST is logged but answered with garbage; the retry meets 409.
    rekor.faults.malformed_count = 1
    imported = koji_import(signed_rpms[('rsa', 'header')])
    configured_hub.sign(imported)
    assert receipt_file(topdir, imported).exists()
    assert len(rekor.log.submitted) == 1


def test_a_slow_rekor_times_out(hub, rekor, topdir, koji_import, signed_rpms, key_dir,
                                log_key_file, plugin_log):
    hub.configure('''
        [rekor]
        url = %s
        allow_insecure_http = true
        log_public_key = %s
        timeout = 0.3
        retries = 1
        backoff = 0.01
        [signing]
        public_key_dir = %s
        ''' % (rekor.url, log_key_file, key_dir))
    rekor.faults.delay = 2
    hub.sign(koji_import(signed_rpms[('rsa', 'header')]))
    assert 'timed out after 0.3 s' in plugin_log.text
    assert receipts(topdir) == []


def test_rejection_is_permanent_and_not_retried(configured_hub, rekor, topdir, koji_import,
                                                signed_rpms, plugin_log):
    rekor.faults.fail_status, rekor.faults.fail_count = 400, 5
    configured_hub.sign(koji_import(signed_rpms[('rsa', 'header')]))
    assert rekor.count('POST', ENTRIES) == 1
    assert 'Rekor answered 400' in plugin_log.text


def test_old_rekor_refusing_header_only_signatures_is_explained(configured_hub, rekor, topdir,
                                                                koji_import, signed_rpms,
                                                                plugin_log):
    rekor.faults.refuse_header_only = True
    configured_hub.sign(koji_import(signed_rpms[('rsa', 'header')]))
    assert 'rpmsign --rpmv3' in plugin_log.text and '1.5.4' in plugin_log.text
    assert 'Package signature not found' in plugin_log.text
    assert receipts(topdir) == []


def test_old_rekor_accepts_legacy_signatures(configured_hub, rekor, topdir, koji_import,
                                             signed_rpms, plugin_log):
    rekor.faults.refuse_header_only = True
    signed = signed_rpms[('ed25519', 'rpmv3')]
    imported = koji_import(signed)
    configured_hub.sign(imported)
    assert rekor.count('POST', ENTRIES, 201) == 1
    assert len(rekor.log.submitted) == 1
    receipt = json.loads(receipt_file(topdir, imported).read_text())
    assert receipt['sha256'] == sha256_file(signed)
    (entry_id, entry), = receipt['log_entry'].items()
    body = json.loads(base64.b64decode(entry['body']))
    assert body['spec']['package']['hash']['value'] == sha256_file(signed)
    assert 'logged hello-1.0-1.noarch sigkey %s' % imported.sigkey in plugin_log.text
    assert [r for r in plugin_log.records if r.levelname == 'ERROR'] == []


def test_too_large_is_reported(configured_hub, rekor, topdir, koji_import, signed_rpms,
                               plugin_log):
    rekor.faults.max_body_bytes = 1000
    configured_hub.sign(koji_import(signed_rpms[('rsa', 'header')]))
    assert 'too large' in plugin_log.text
    assert rekor.count('POST', ENTRIES) == 1
    assert receipts(topdir) == []


# --- a log that lies ------------------------------------------------------------

# Each way the log can lie, and the check that must catch it.
TAMPERING = {
    'proof_hash': 'inclusion proof',
    'root_hash': 'inclusion proof does not lead to root hash',
    'checkpoint_signature': 'checkpoint: no valid signature by the log key',
    'checkpoint_key': 'checkpoint: no valid signature by the log key',
    'checkpoint_origin': "is not log 127.0.0.1",
    'checkpoint_size': re.compile(r'checkpoint is for size (\d+) .*, proof for size (?!\1)\d+'),
    'set': 'signed entry timestamp: does not verify',
    'set_key': 'signed entry timestamp: does not verify',
    'log_id': 'is not the log key',
    'log_index': 'signed entry timestamp: does not verify',
    'integrated_time': 'signed entry timestamp: does not verify',
    'entry_uuid': 'is not the hash of its body',
    'body_hash': 'body records package sha256:',
    'body_key': 'body records another public key',
    'no_checkpoint': 'no checkpoint: nothing signs the root hash',
    'no_set': 'no signed entry timestamp',
    'tree_index': re.compile(r'inclusion proof: index (\d+) is not below tree size \1\b'),
}


@pytest.mark.parametrize('tamper', sorted(TAMPERING))
def test_a_lying_log_gets_no_receipt(configured_hub, rekor, topdir, koji_import, signed_rpms,
                                     plugin_log, tamper):
    rekor.faults.tamper = tamper
    with open(configured_hub.conf_path, 'a') as fo:
        fo.write('enforce = true\n')  # [upload] is the file's last section
    with pytest.raises(koji.CallbackError) as info:
        configured_hub.sign(koji_import(signed_rpms[('rsa', 'header')]))
    expected = TAMPERING[tamper]
    # The sizes depend on what the busy log's other clients added.
    assert (expected.search(str(info.value)) if isinstance(expected, re.Pattern)
            else expected in str(info.value)), str(info.value)
    assert receipts(topdir) == []
    errors = [r.getMessage() for r in plugin_log.records if r.levelname == 'ERROR']
    assert len(errors) == 1 and 'failed hello-1.0-1.noarch' in errors[0]


def test_a_split_view_is_caught(configured_hub, rekor, topdir, koji_import, signed_rpms,
                                unsigned_rpm, keys, tmp_path, plugin_log):
    from tests.support import rpmfactory
    configured_hub.sign(koji_import(signed_rpms[('rsa', 'header')]))
    rekor.log.rewrite_history()
    other = rpmfactory.build_rpm(str(tmp_path / 'b'), name='other')
    signed = rpmfactory.sign_rpm(other, str(tmp_path / 'other.rpm'), keys['rsa'])
    imported = rpmfactory.koji_import_signature(str(topdir), other, signed, build_id=2, rpm_id=2)
    configured_hub.sign(imported)
    assert 'split view' in plugin_log.text
    assert not receipt_file(topdir, imported).exists()
