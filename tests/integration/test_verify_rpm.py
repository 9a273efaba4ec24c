"""koji-rekor verify-rpm: a package user checks RPM files against the local
Rekor-compatible log, with nothing of Koji's but the files."""

import json
import os
import shutil
import subprocess
import sys
import threading
import time

import pytest

import koji_rekor.cli
import koji_rekor.config
from tests.support.common import HUB_USER, ROOT, SHARED

INDEX = '/api/v1/index/retrieve'


@pytest.fixture(autouse=True)
def no_hub_configuration(monkeypatch, tmp_path):
    """verify-rpm reads the hub's file when there is one (the real hub's
    harness writes it); the tests use none unless they say --config."""
    monkeypatch.setattr(koji_rekor.config, 'CONFIG_FILE', str(tmp_path / 'no-hub-configuration'))


@pytest.fixture
def logged(rekor, log_key_file, signed_rpms, keys, tmp_path, capsys):
    """Log the RSA header-signed RPM with the upload command; returns
    (rpm path, receipt path)."""
    rpm = signed_rpms[('rsa', 'header')]
    receipt = tmp_path / 'receipt.json'
    conf = tmp_path / 'upload.conf'
    conf.write_text('[rekor]\nallow_insecure_http = true\nlog_public_key = %s\nretries = 0\n'
                    '[upload]\nhub_user = %s\n' % (log_key_file, HUB_USER))
    assert koji_rekor.cli.main(['upload', rpm, '--key', keys['rsa'].path, '--config', str(conf),
                            '--url', rekor.url, '--topdir', str(tmp_path),
                            '--receipt', str(receipt)]) == 0
    capsys.readouterr()
    wait_until_indexed(rekor, json.loads(receipt.read_text())['sha256'])
    return rpm, str(receipt)


def wait_until_indexed(rekor, sha256, timeout=10.0):
    """Rekor writes its search index after answering (as the local log may):
    wait, boundedly, for the entry to be searchable."""
    deadline = time.monotonic() + timeout
    while not rekor.log.search_index(['sha256:%s' % sha256]):
        assert time.monotonic() < deadline, 'the log never indexed sha256:%s' % sha256
        threading.Event().wait(0.01)


def verify_rpm(capsys, rekor, log_key_file, *args, online=True):
    argv = ['verify-rpm'] + [str(a) for a in args] + ['--log-key', str(log_key_file)]
    if online:
        argv += ['--url', rekor.url, '--allow-insecure-http']
    status = koji_rekor.cli.main(argv)
    out, err = capsys.readouterr()
    return status, out, err


def as_json(capsys, rekor, log_key_file, *args, **kws):
    status, out, err = verify_rpm(capsys, rekor, log_key_file, '--json', *args, **kws)
    report = json.loads(out)
    assert report['exit_status'] == status
    return status, report['packages'], err


def flipped_copy(path, tmp_path):
    """A copy with one byte of the payload changed: the headers, and so the
    header-only signature, are untouched."""
    copy = tmp_path / 'flipped.rpm'
    shutil.copy(path, copy)
    data = bytearray(copy.read_bytes())
    data[-10] ^= 0xff
    copy.write_bytes(bytes(data))
    return str(copy)


@pytest.mark.quiet_log  # exact log indexes or tree sizes: a log only this test writes
def test_a_logged_rpm_signed_by_a_trusted_key(capsys, rekor, log_key_file, logged, keys):
    rpm, receipt = logged
    status, out, err = verify_rpm(capsys, rekor, log_key_file, rpm, '--key', keys['rsa'].path)
    assert (status, err) == (0, '')
    entry_id = next(iter(json.load(open(receipt))['log_entry']))
    assert out == ('logged %s (hello-1.0-1.noarch): log index 0, integrated %s, signed by %s '
                   '(trusted: %s), entry %s\n  log key: --log-key %s\n' % (
                       rpm, out.split('integrated ')[1].split(', signed')[0],
                       keys['rsa'].fingerprint, keys['rsa'].path, entry_id, log_key_file))
    assert rekor.count('POST', INDEX) == 1

    status, (package,), err = as_json(capsys, rekor, log_key_file, rpm, '--key', keys['rsa'].path)
    assert status == 0
    assert (package['logged'], package['status'], package['log_index'], package['entry_id'],
            package['fingerprint'], package['time_signed'], package['nvra']) == (
        True, 'logged', 0, entry_id, keys['rsa'].fingerprint, True, 'hello-1.0-1.noarch')
    assert isinstance(package['integrated_time'], int)


def test_an_unlogged_rpm_is_not_found_in_the_index(capsys, rekor, log_key_file, logged,
                                                  signed_rpms, keys):
    rpm = signed_rpms[('ed25519', 'header')]
    status, out, err = verify_rpm(capsys, rekor, log_key_file, rpm, '--key', keys['ed25519'].path)
    assert status == 1
    assert out == ("NOT FOUND %s (hello-1.0-1.noarch): not found in the log's index (the index "
                   'is best-effort: this does not prove it absent from the log)\n' % rpm)


def test_an_rpm_logged_with_a_key_the_user_does_not_trust(capsys, rekor, log_key_file, logged,
                                                         keys):
    rpm, receipt = logged
    status, (package,), err = as_json(capsys, rekor, log_key_file, rpm,
                                      '--key', keys['other'].path)
    assert status == 1
    assert (package['logged'], package['status'], package['fingerprint']) == (
        False, 'untrusted key', keys['rsa'].fingerprint)
    assert package['reason'] == ('logged with key %s, which is not one of the trusted keys'
                                 % keys['rsa'].fingerprint)
    status, out, err = verify_rpm(capsys, rekor, log_key_file, rpm, '--key', keys['other'].path)
    assert status == 1 and out.startswith('NOT TRUSTED %s' % rpm)


def test_a_file_that_differs_from_the_logged_one(capsys, rekor, log_key_file, logged, keys,
                                                tmp_path):
    rpm, receipt = logged
    flipped = flipped_copy(rpm, tmp_path)
    status, (package,), err = as_json(capsys, rekor, log_key_file, flipped,
                                      '--key', keys['rsa'].path)
    assert (status, package['status']) == (1, 'not found')
    # Against the receipt of the original, it is named for what it is.
    status, (package,), err = as_json(capsys, rekor, log_key_file, flipped,
                                      '--key', keys['rsa'].path, '--receipt', receipt)
    assert (status, package['status']) == (1, 'not verified')
    assert package['reason'] == (
        'the entry logs sha256 %s, this file has %s: it is not the file that was logged'
        % (json.load(open(receipt))['sha256'], package['sha256']))


@pytest.mark.quiet_log  # exact log indexes or tree sizes: a log only this test writes
def test_offline_with_a_receipt(capsys, rekor, log_key_file, logged, keys):
    rpm, receipt = logged
    rekor.stop()  # no network: nothing to ask
    status, (package,), err = as_json(capsys, rekor, log_key_file, rpm, '--key', keys['rsa'].path,
                                      '--receipt', receipt, online=False)
    assert (status, package['status'], package['log_index']) == (0, 'logged', 0)
    # The receipt's entry is checked too: an entry tampered with fails.
    data = json.load(open(receipt))
    (entry_id, entry), = data['log_entry'].items()
    entry['verification']['inclusionProof']['hashes'].append('00' * 32)
    with open(receipt, 'w') as fo:
        json.dump(data, fo)
    status, (package,), err = as_json(capsys, rekor, log_key_file, rpm, '--key', keys['rsa'].path,
                                      '--receipt', receipt, online=False)
    assert (status, package['status'], package['reason']) == (
        1, 'not verified', 'inclusion proof: too many hashes')


def test_trusted_keys_from_a_directory_and_from_an_rpm_database(capsys, rekor, log_key_file,
                                                                logged, keys, tmp_path):
    rpm, receipt = logged
    keydir = tmp_path / 'rpm-gpg'
    keydir.mkdir()
    shutil.copy(keys['rsa'].path, keydir / 'RPM-GPG-KEY-test')
    (keydir / 'README').write_text('not a key\n')
    status, (package,), err = as_json(capsys, rekor, log_key_file, rpm, '--keys', keydir)
    assert (status, package['trusted_key']) == (0, str(keydir / 'RPM-GPG-KEY-test'))

    dbpath = tmp_path / 'rpmdb'
    dbpath.mkdir()
    for key in ('other', 'rsa'):
        subprocess.run(['rpmkeys', '--dbpath', str(dbpath), '--import', keys[key].path],
                       check=True, timeout=60)
    status, (package,), err = as_json(capsys, rekor, log_key_file, rpm, '--rpmdb',
                                      '--dbpath', dbpath)
    assert status == 0
    assert package['trusted_key'] == 'gpg-pubkey-%s-%s' % (
        keys['rsa'].keyid[-8:].lower(), package['trusted_key'].rsplit('-', 1)[1])
    # Without the signing key in the database, the package is not trusted.
    other_db = tmp_path / 'otherdb'
    other_db.mkdir()
    subprocess.run(['rpmkeys', '--dbpath', str(other_db), '--import', keys['other'].path],
                   check=True, timeout=60)
    status, (package,), err = as_json(capsys, rekor, log_key_file, rpm, '--rpmdb',
                                      '--dbpath', other_db)
    assert (status, package['status']) == (1, 'untrusted key')
    # Where there is no database, none is made.
    missing = tmp_path / 'nodb'
    status, out, err = verify_rpm(capsys, rekor, log_key_file, rpm, '--rpmdb', '--dbpath', missing)
    assert (status, out, err) == (2, '', 'koji-rekor: no rpm database in %s\n' % missing)
    assert not missing.exists()


def test_several_rpms_in_one_run(capsys, rekor, log_key_file, logged, signed_rpms, keys):
    rpm, receipt = logged
    other = signed_rpms[('ed25519', 'header')]
    status, packages, err = as_json(capsys, rekor, log_key_file, rpm, other, rpm,
                                    '--key', keys['rsa'].path, '--key', keys['ed25519'].path)
    assert status == 1
    assert [(p['file'], p['status']) for p in packages] == [
        (rpm, 'logged'), (other, 'not found'), (rpm, 'logged')]


def test_an_entry_the_log_tampered_with_is_not_verified(capsys, rekor, log_key_file, logged,
                                                       keys):
    rpm, receipt = logged
    rekor.faults.tamper = 'proof_hash'
    status, (package,), err = as_json(capsys, rekor, log_key_file, rpm, '--key', keys['rsa'].path)
    assert (status, package['status']) == (1, 'not verified')
    assert package['reason'].startswith('inclusion proof')


def test_without_a_signed_entry_timestamp_the_time_is_marked_unsigned(capsys, rekor,
                                                                     log_key_file, logged, keys):
    rpm, receipt = logged
    rekor.faults.tamper = 'no_set'
    status, out, err = verify_rpm(capsys, rekor, log_key_file, rpm, '--key', keys['rsa'].path)
    assert status == 0
    line, note, key = out.splitlines()
    assert line.split(', integrated ')[1].split(', signed by')[0].endswith(
        ' UTC (unsigned: no signed entry timestamp)')
    assert note.startswith('  note: no signed entry timestamp: the checkpoint signs the body')


def test_a_log_it_cannot_reach_means_it_could_not_check(capsys, rekor, log_key_file, logged,
                                                       keys):
    rpm, receipt = logged
    rekor.stop()
    status, (package,), err = as_json(capsys, rekor, log_key_file, rpm, '--key', keys['rsa'].path)
    assert (status, package['status']) == (2, 'not checked')
    assert package['reason'].startswith('cannot reach Rekor at %s' % rekor.url)


@pytest.mark.parametrize('case', ['no trusted key', 'no log key', 'missing file', 'not a key'])
def test_what_it_cannot_check(capsys, rekor, log_key_file, signed_rpms, keys, tmp_path, case):
    rpm = signed_rpms[('rsa', 'header')]
    argv = ['verify-rpm', rpm, '--url', rekor.url, '--allow-insecure-http']
    if case == 'no trusted key':
        argv += ['--log-key', str(log_key_file)]
        cause = 'no trusted keys: pass --key FILE, --keys DIR or --rpmdb'
    elif case == 'no log key':
        argv += ['--key', keys['rsa'].path]
        cause = ('cannot check: no key for the log %s: pass --log-key, or --config with '
                 '[rekor] log_public_key' % rekor.url)
    elif case == 'not a key':
        argv += ['--key', str(log_key_file), '--log-key', str(log_key_file)]
        cause = '%s holds no ASCII-armored OpenPGP public key' % log_key_file
    else:
        argv[1] = str(tmp_path / 'missing.rpm')
        argv += ['--key', keys['rsa'].path, '--log-key', str(log_key_file), '--json']
    status = koji_rekor.cli.main(argv)
    out, err = capsys.readouterr()
    assert status == 2
    if case == 'missing file':
        (package,) = json.loads(out)['packages']
        assert (package['status'], package['reason']) == (
            'not checked', 'cannot read %s: No such file or directory' % argv[1])
    else:
        assert (out, err) == ('', 'koji-rekor: %s\n' % cause)
    assert rekor.count('POST', INDEX) == 0


def test_the_command_runs_with_no_configuration_file(rekor, log_key_file, logged, keys):
    rpm, receipt = logged
    proc = subprocess.run(
        [sys.executable, '-m', 'koji_rekor', 'verify-rpm', rpm, '--key', keys['rsa'].path,
         '--url', rekor.url, '--allow-insecure-http', '--log-key', str(log_key_file)],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith('logged %s' % rpm)


def test_several_rpms_against_their_receipts(capsys, rekor, log_key_file, logged, signed_rpms,
                                            keys, tmp_path):
    rpm, receipt = logged
    other, other_receipt = signed_rpms[('ed25519', 'header')], tmp_path / 'other.json'
    conf = tmp_path / 'upload.conf'
    assert koji_rekor.cli.main(['upload', other, '--key', keys['ed25519'].path, '--config', str(conf),
                            '--url', rekor.url, '--receipt', str(other_receipt)]) == 0
    capsys.readouterr()
    rekor.stop()
    status, packages, err = as_json(capsys, rekor, log_key_file, rpm, other,
                                    '--receipt', receipt, '--receipt', other_receipt,
                                    '--key', keys['rsa'].path, '--key', keys['ed25519'].path,
                                    online=False)
    assert status == 0
    assert [(p['file'], p['status'], p['notes'], [e['receipt'] for e in p['entries']])
            for p in packages] == [(rpm, 'logged', [], [receipt]),
                                   (other, 'logged', [], [str(other_receipt)])]


REAL_RPMS = os.path.join(SHARED, 'rekor-real', 'rpms')


@pytest.mark.skipif(not os.path.isdir(REAL_RPMS), reason='../shared/rekor-real is absent')
@pytest.mark.parametrize('rpm, key', [
    ('NetworkManager-bluetooth-1.26.0-8.el8.x86_64.rpm', 'centos-8-05b555b38483c65d.asc'),
    ('test-package-1.0-1.noarch.rpm', 'test-6b5c00fd2745ac5c.asc')])
def test_real_rpms_with_the_keys_that_signed_them(capsys, rekor, log_key_file, tmp_path, rpm,
                                                 key):
    """Real RPMs and key files (the CentOS one with armor headers and
    subkeys), logged as Rekor stores them, and checked by a user with the
    key file as published."""
    rpm, key = os.path.join(REAL_RPMS, rpm), os.path.join(REAL_RPMS, key)
    conf = tmp_path / 'upload.conf'
    conf.write_text('[rekor]\nallow_insecure_http = true\nlog_public_key = %s\n'
                    '[upload]\nhub_user = %s\n' % (log_key_file, HUB_USER))
    receipt = tmp_path / 'receipt.json'
    assert koji_rekor.cli.main(['upload', rpm, '--key', key, '--config', str(conf), '--url',
                            rekor.url, '--receipt', str(receipt)]) == 0
    capsys.readouterr()
    wait_until_indexed(rekor, json.loads(receipt.read_text())['sha256'])
    status, (package,), err = as_json(capsys, rekor, log_key_file, rpm, '--key', key)
    assert (status, package['status'], package['trusted_key']) == (0, 'logged', key)
    assert package['nvra'] == os.path.basename(rpm)[:-len('.rpm')]


def test_an_entry_the_index_does_not_know_yet_is_not_found_not_absent(
        capsys, rekor, log_key_file, signed_rpms, keys, tmp_path):
    """Rekor writes its index after answering, and may never: a logged RPM
    the index does not return is "not found", and its receipt still proves
    it logged."""
    rekor.faults.hold_index = True
    rpm, receipt = signed_rpms[('rsa', 'header')], tmp_path / 'receipt.json'
    conf = tmp_path / 'upload.conf'
    conf.write_text('[rekor]\nallow_insecure_http = true\nlog_public_key = %s\n'
                    '[upload]\nhub_user = %s\n' % (log_key_file, HUB_USER))
    assert koji_rekor.cli.main(['upload', rpm, '--key', keys['rsa'].path, '--config', str(conf),
                            '--url', rekor.url, '--receipt', str(receipt)]) == 0
    capsys.readouterr()
    status, (package,), err = as_json(capsys, rekor, log_key_file, rpm, '--key', keys['rsa'].path)
    assert (status, package['status']) == (1, 'not found')
    assert package['reason'].endswith('(the index is best-effort: this does not prove it absent '
                                      'from the log)')
    status, (package,), err = as_json(capsys, rekor, log_key_file, rpm, '--key', keys['rsa'].path,
                                      '--receipt', receipt)
    assert (status, package['status']) == (0, 'logged')
    assert rekor.log.release_index() == 1
    status, (package,), err = as_json(capsys, rekor, log_key_file, rpm, '--key', keys['rsa'].path)
    assert (status, package['status']) == (0, 'logged')


# --- one way to find the log's key: flags, configuration, built-in key ------

@pytest.fixture
def hub_receipt(configured_hub, koji_import, signed_rpms, topdir):
    """The receipt the hub (hubsim, against the local log) keeps for the RSA
    header-signed RPM: (rpm, receipt path)."""
    imported = koji_import(signed_rpms[('rsa', 'header')])
    configured_hub.sign(imported)
    receipt, = (topdir / 'rekor-logs' / 'hello').rglob('*.json')
    return signed_rpms[('rsa', 'header')], str(receipt)


def test_the_hubs_receipt_with_the_hubs_configuration(capsys, configured_hub, hub_receipt,
                                                      keys, log_key_file):
    rpm, receipt = hub_receipt
    status = koji_rekor.cli.main(['verify-rpm', rpm, '--key', keys['rsa'].path, '--receipt', receipt,
                              '--config', str(configured_hub.conf_path), '--json'])
    out, err = capsys.readouterr()
    (package,) = json.loads(out)['packages']
    assert (status, package['status']) == (0, 'logged'), package
    assert package['log_key'] == '[rekor] log_public_key %s (%s)' % (
        log_key_file, configured_hub.conf_path)


def test_the_hubs_receipt_without_configuration_cannot_be_checked(capsys, rekor, hub_receipt,
                                                                   keys):
    # The receipt names its log; it never supplies the key. Without one for
    # that log this is "could not check" (2), not a verdict on the package.
    rpm, receipt = hub_receipt
    status = koji_rekor.cli.main(['verify-rpm', rpm, '--key', keys['rsa'].path, '--receipt', receipt])
    out, err = capsys.readouterr()
    assert (status, out) == (2, '')
    assert err == ('koji-rekor: cannot check %s: no key for the log it names, %s: pass '
                   '--log-key, or --config with [rekor] log_public_key\n' % (receipt, rekor.url))


def test_the_hubs_receipt_with_log_key_states_where_the_key_came_from(capsys, hub_receipt, keys,
                                                                      log_key_file):
    rpm, receipt = hub_receipt
    status = koji_rekor.cli.main(['verify-rpm', rpm, '--key', keys['rsa'].path, '--receipt', receipt,
                              '--log-key', str(log_key_file)])
    out, err = capsys.readouterr()
    assert status == 0, out + err
    assert '  log key: --log-key %s\n' % log_key_file in out


def test_verify_states_where_the_key_came_from(capsys, configured_hub, hub_receipt, log_key_file):
    rpm, receipt = hub_receipt
    status = koji_rekor.cli.main(['verify', receipt, '--config', str(configured_hub.conf_path)])
    out, err = capsys.readouterr()
    assert status == 0, err
    assert 'log key: [rekor] log_public_key %s (%s)' % (log_key_file, configured_hub.conf_path) \
        in out
    # A configuration for the public log does not lend its key to a receipt
    # of another log, nor does the built-in key apply.
    public = configured_hub.conf_path.parent / 'public.conf'
    public.write_text('[upload]\nhub_user = %s\n' % HUB_USER)
    status = koji_rekor.cli.main(['verify', receipt, '--config', str(public)])
    out, err = capsys.readouterr()
    assert status == 2 and err.startswith('koji-rekor: cannot check %s: no key for the log it '
                                          'names' % receipt)


def test_a_receipt_of_another_log_than_the_key_is_not_a_verdict(capsys, hub_receipt, keys,
                                                                  tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    other = tmp_path / 'other.pub'
    other.write_bytes(ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    rpm, receipt = hub_receipt
    status = koji_rekor.cli.main(['verify-rpm', rpm, '--key', keys['rsa'].path, '--receipt', receipt,
                              '--log-key', str(other), '--json'])
    (package,) = json.loads(capsys.readouterr()[0])['packages']
    assert (status, package['status']) == (2, 'not checked')
    assert package['reason'].startswith('cannot check %s: its entry is from the log with logID '
                                        % receipt)


def test_a_plain_http_url_typed_on_the_command_line_names_the_flag(capsys, rekor, signed_rpms,
                                                                   keys, log_key_file):
    status = koji_rekor.cli.main(['verify-rpm', signed_rpms[('rsa', 'header')], '--key',
                              keys['rsa'].path, '--url', rekor.url, '--log-key',
                              str(log_key_file)])
    out, err = capsys.readouterr()
    assert (status, out, err) == (2, '', 'koji-rekor: --url %s is plain http: pass '
                                         '--allow-insecure-http to allow it\n' % rekor.url)
