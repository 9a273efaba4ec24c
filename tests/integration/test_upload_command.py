"""koji-rekor upload: an RPM signed before the plugin was enabled, logged
from the command line against the local Rekor-compatible log."""

import json
import os
import re
import subprocess
import sys

import pytest

import koji_rekor.cli
from tests.support.common import HUB_USER, ROOT, SHARED

ENTRIES = '/api/v1/log/entries'


@pytest.fixture
def conf(tmp_path, log_key_file):
    path = tmp_path / 'rekor_log.conf'
    path.write_text('[rekor]\nallow_insecure_http = true\nlog_public_key = %s\nretries = 0\n'
                    '[upload]\nhub_user = %s\n' % (log_key_file, HUB_USER))
    return str(path)


def upload(capsys, *args):
    status = koji_rekor.cli.main(['upload'] + [str(a) for a in args])
    out, err = capsys.readouterr()
    return status, out, err


def test_upload_logs_a_signed_rpm_and_writes_the_receipt(rekor, conf, signed_rpms, keys,
                                                         tmp_path):
    receipt_path = tmp_path / 'receipt.json'
    proc = subprocess.run(
        [sys.executable, '-m', 'koji_rekor', 'upload', signed_rpms[('ed25519', 'rpmv3')],
         '--key', keys['ed25519'].path, '--config', conf, '--url', rekor.url,
         '--topdir', str(tmp_path), '--receipt', str(receipt_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    # At whatever index the busy log's other clients left it.
    assert re.match(r'logged hello-1\.0-1\.noarch: log index \d+, uuid ', proc.stderr)
    receipt = json.loads(receipt_path.read_text())
    assert (receipt['nvra'], receipt['sigkey'], receipt['rekor_url']) == (
        'hello-1.0-1.noarch', keys['ed25519'].sigkey, rekor.url)
    assert rekor.count('POST', ENTRIES) == 1
    # The receipt verifies offline with the same command line.
    status = koji_rekor.cli.main(['verify', str(receipt_path), '--rpm',
                             signed_rpms[('ed25519', 'rpmv3')], '--config', conf,
                              '--url', rekor.url])
    assert status == 0


def test_upload_prints_the_receipt_without_receipt_option(rekor, conf, signed_rpms, keys,
                                                          tmp_path, capsys):
    status, out, err = upload(capsys, signed_rpms[('rsa', 'header')], '--key', keys['rsa'].path,
                              '--config', conf, '--url', rekor.url, '--topdir', tmp_path)
    assert status == 0
    assert json.loads(out)['nvra'] == 'hello-1.0-1.noarch'


def test_upload_again_uses_the_existing_entry(rekor, conf, signed_rpms, keys, tmp_path, capsys):
    args = (signed_rpms[('rsa', 'header')], '--key', keys['rsa'].path, '--config', conf,
            '--url', rekor.url, '--topdir', tmp_path)
    first = json.loads(upload(capsys, *args)[1])
    status, out, err = upload(capsys, *args)
    assert status == 0 and err.startswith('already in the log hello-1.0-1.noarch')
    (entry_id, entry), = json.loads(out)['log_entry'].items()
    (first_id, first_entry), = first['log_entry'].items()
    # The same entry; its SET and checkpoint are signed afresh for each answer.
    assert entry_id == first_id
    assert {k: entry[k] for k in ('body', 'integratedTime', 'logID', 'logIndex')} == \
        {k: first_entry[k] for k in ('body', 'integratedTime', 'logID', 'logIndex')}
    assert len(rekor.log.submitted) == 1


@pytest.mark.parametrize('case', ['wrong key', 'unsigned', 'missing'])
def test_upload_refuses_before_sending_anything(rekor, conf, signed_rpms, unsigned_rpm, keys,
                                               tmp_path, capsys, case):
    rpm, key = signed_rpms[('rsa', 'header')], keys['rsa'].path
    # A signature check that fails exits 1; input that cannot be used, 2.
    if case == 'wrong key':
        key, expected = keys['other'].path, 1
        cause = 'public key %s does not verify hello-1.0-1.noarch signed by %s' % (
            key, keys['rsa'].sigkey)
    elif case == 'unsigned':
        rpm, cause, expected = unsigned_rpm, '%s is not signed' % unsigned_rpm, 2
    else:
        rpm, expected = str(tmp_path / 'nothing.rpm'), 2
        cause = 'RPM file missing: %s' % rpm
    status, out, err = upload(capsys, rpm, '--key', key, '--config', conf, '--url', rekor.url,
                              '--topdir', tmp_path)
    assert (status, out, err) == (expected, '', 'koji-rekor: %s\n' % cause)
    assert rekor.count('POST', ENTRIES) == 0


def test_upload_to_plain_http_needs_the_configuration_to_allow_it(rekor, signed_rpms, keys,
                                                                  tmp_path, capsys,
                                                                  log_key_file):
    conf = tmp_path / 'rekor_log.conf'
    conf.write_text('[rekor]\ntimeout = 5\nlog_public_key = %s\n[upload]\nhub_user = %s\n'
                    % (log_key_file, HUB_USER))
    status, out, err = upload(capsys, signed_rpms[('rsa', 'header')], '--key', keys['rsa'].path,
                              '--config', conf, '--url', rekor.url)
    assert status == 2
    # The user typed --url: the message names the flag, not the file's option.
    assert err == ('koji-rekor: --url %s is plain http: pass --allow-insecure-http to allow it\n'
                   % rekor.url)
    assert rekor.count('POST', ENTRIES) == 0
    status, out, err = upload(capsys, signed_rpms[('rsa', 'header')], '--key', keys['rsa'].path,
                              '--config', conf, '--url', rekor.url, '--topdir', tmp_path,
                              '--allow-insecure-http')
    assert status == 0, err
    # From the file, the option is named.
    conf.write_text('[rekor]\nurl = %s\n[upload]\nhub_user = %s\n' % (rekor.url, HUB_USER))
    status, out, err = upload(capsys, signed_rpms[('rsa', 'header')], '--key', keys['rsa'].path,
                              '--config', conf)
    assert status == 2
    assert err.startswith('koji-rekor: %s: [rekor] url: %s is plain http; set '
                          'allow_insecure_http = true' % (conf, rekor.url))


REAL_RPMS = os.path.join(SHARED, 'rekor-real', 'rpms')


@pytest.mark.skipif(not os.path.isdir(REAL_RPMS), reason='../shared/rekor-real is absent')
def test_rpms_own_warnings_are_captured_not_printed(rekor, conf, tmp_path, capfd):
    # rpm writes "warning: /memfd:... (deleted): ... NOKEY" to the process's
    # stderr (a real CentOS RPM checked with another key makes it say so);
    # the user gets the one-line cause only.
    rpm = os.path.join(REAL_RPMS, 'NetworkManager-bluetooth-1.26.0-8.el8.x86_64.rpm')
    key = os.path.join(REAL_RPMS, 'test-6b5c00fd2745ac5c.asc')
    status = koji_rekor.cli.main(['upload', rpm, '--key', key, '--config', conf, '--url', rekor.url,
                              '--topdir', str(tmp_path)])
    out, err = capfd.readouterr()
    assert status == 1
    assert err == ('koji-rekor: public key %s does not verify '
                   'NetworkManager-bluetooth-1.26.0-8.el8.x86_64 signed by 8483c65d\n' % key)


def test_an_openpgp_key_as_log_public_key_is_one_line(rekor, signed_rpms, keys, tmp_path, capsys):
    conf = tmp_path / 'rekor_log.conf'
    conf.write_text('[rekor]\nlog_public_key = %s\n' % keys['rsa'].path)
    status, out, err = upload(capsys, signed_rpms[('rsa', 'header')], '--key', keys['rsa'].path,
                              '--config', conf)
    assert status == 2
    assert err == ('koji-rekor: %s: [rekor] log_public_key: %s: an OpenPGP key, not a log key: '
                   "the log's PEM public key is wanted (koji-rekor log-key prints it)\n"
                   % (conf, keys['rsa'].path))


def test_upload_with_a_missing_configuration_file_cannot_start(rekor, signed_rpms, keys, capsys):
    # Not "defaults": those would send the package to the public log.
    status, out, err = upload(capsys, signed_rpms[('rsa', 'header')], '--key', keys['rsa'].path,
                              '--config', '/nonexistent.conf', '--url', rekor.url)
    assert (status, out, err) == (2, '', 'koji-rekor: /nonexistent.conf: no such configuration '
                                         'file\n')
    assert rekor.count('POST', ENTRIES) == 0
