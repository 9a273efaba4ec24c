"""The hub call rekorLogStatus and the koji CLI plugin `koji rekor-status`:
the plugin loaded by Koji's loader and called as kojixmlrpc calls it, the CLI
plugin loaded by the koji command's own plugin loading, for signatures that
are logged, queued and rejected."""

import json
import os
import shutil
import subprocess
import sys

import koji
import koji_rekor.state
import pytest

from tests.support import hubsim
from tests.support import rpmfactory
from tests.support.common import ROOT

NVRA = 'hello-1.0-1.noarch'
KOJI_CLI = os.path.join(os.path.dirname(sys.executable), 'koji')


@pytest.fixture
def signatures(configured_hub, rekor, koji_import, signed_rpms, unsigned_rpm, keys, key_dir,
               tmp_path, topdir):
    """One RPM with three signatures: RSA logged, ed25519 queued (the log
    answered 503), a third key's rejected (the log answered 400)."""
    other = rpmfactory.sign_rpm(unsigned_rpm, str(tmp_path / 'other.rpm'), keys['other'])
    shutil.copy(keys['other'].path, key_dir / ('%s.asc' % keys['other'].sigkey))
    logged = koji_import(signed_rpms[('rsa', 'header')])
    configured_hub.sign(logged)
    queued = koji_import(signed_rpms[('ed25519', 'header')])
    rekor.faults.update({'fail_status': 503, 'fail_count': 100})
    configured_hub.sign(queued)
    # The log's outage has passed by the next import (the plugin holds
    # further uploads back while it lasts).
    koji_rekor.state.clear_outage(str(topdir))
    rejected = koji_import(other)
    rekor.faults.update({'fail_status': 400, 'fail_count': 100})
    configured_hub.sign(rejected)
    rekor.reset_faults()
    hubsim.install_kojihub([logged, queued, rejected])
    yield {'logged': logged, 'queued': queued, 'rejected': rejected}
    hubsim.uninstall_kojihub()


def by_sigkey(statuses):
    return {s['sigkey']: s for s in statuses}


def test_the_hub_call_reports_logged_queued_and_rejected(signatures, keys, topdir):
    receipt = json.load(open(topdir / 'rekor-logs' / 'hello' / '1.0' / '1' / 'noarch' /
                             ('%s.%s.json' % (NVRA, keys['rsa'].sigkey))))
    (entry_id, entry), = receipt['log_entry'].items()
    for rpm in (NVRA, signatures['logged'].rpm['id'], str(signatures['logged'].rpm['id'])):
        statuses = by_sigkey(hubsim.hub_call('rekorLogStatus', rpm))
        assert sorted(statuses) == sorted(keys[k].sigkey for k in ('rsa', 'ed25519', 'other'))
        logged = statuses[keys['rsa'].sigkey]
        assert (logged['status'], logged['entry_id'], logged['log_index'],
                logged['integrated_time'], logged['nvra']) == (
            'logged', entry_id, entry['logIndex'], entry['integratedTime'], NVRA)
        queued = statuses[keys['ed25519'].sigkey]
        assert (queued['status'], queued['attempts'], queued['committed']) == ('queued', 1, True)
        assert queued['last_error'].startswith('Rekor answered 503')
        rejected = statuses[keys['other'].sigkey]
        assert rejected['status'] == 'rejected'
        assert rejected['reason'].startswith('Rekor answered 400')
    # Named arguments arrive as kojixmlrpc decodes them.
    assert hubsim.hub_call('rekorLogStatus', rpm=NVRA) == hubsim.hub_call('rekorLogStatus', NVRA)


def test_the_hub_call_fails_for_an_unknown_rpm(signatures):
    with pytest.raises(koji.GenericError, match='No such rpm'):
        hubsim.hub_call('rekorLogStatus', 'nothing-1.0-1.noarch')


def test_a_receipt_that_does_not_verify_is_not_reported_logged(signatures, keys, topdir):
    # The package Koji holds changed after it was logged: its receipt no
    # longer matches the signed copy.
    path = signatures['logged'].unsigned_path
    data = bytearray(open(path, 'rb').read())
    data[-10] ^= 0xff
    with open(path, 'wb') as fo:
        fo.write(bytes(data))
    status = by_sigkey(hubsim.hub_call('rekorLogStatus', NVRA))[keys['rsa'].sigkey]
    assert status['status'] == 'unverified'
    assert status['reason'].startswith('the receipt does not verify: body records package '
                                       'sha256:')


def test_a_receipt_whose_entry_was_altered_is_unverified(signatures, keys, topdir):
    path = (topdir / 'rekor-logs' / 'hello' / '1.0' / '1' / 'noarch' /
            ('%s.%s.json' % (NVRA, keys['rsa'].sigkey)))
    receipt = json.load(open(path))
    (entry_id, entry), = receipt['log_entry'].items()
    entry['logIndex'] += 1  # the SET no longer covers it
    path.write_text(json.dumps(receipt))
    status = by_sigkey(hubsim.hub_call('rekorLogStatus', NVRA))[keys['rsa'].sigkey]
    assert (status['status'], status['reason']) == (
        'unverified', 'the receipt does not verify: signed entry timestamp: does not verify '
        'with the log key')


def test_a_signature_with_neither_receipt_nor_record(configured_hub, koji_import, signed_rpms,
                                                    keys):
    imported = koji_import(signed_rpms[('rsa', 'header')])  # the plugin never saw it
    hubsim.install_kojihub([imported])
    try:
        (status,) = hubsim.hub_call('rekorLogStatus', NVRA)
    finally:
        hubsim.uninstall_kojihub()
    assert (status['status'], status['reason']) == (
        'not logged', 'no receipt and nothing in the outbox')


def koji_cli(tmp_path, server, *args):
    """The koji command, finding the CLI plugin as it finds any: in a
    directory of --plugin-paths, where it is installed like
    koji_cli_plugins/rekor_cli.py."""
    plugins = tmp_path / 'cli-plugins'
    plugins.mkdir(exist_ok=True)
    shutil.copy(os.path.join(ROOT, 'rekor_cli.py'), plugins / 'rekor_cli.py')
    conf = tmp_path / 'koji.conf'
    conf.write_text('[koji]\nserver = %s\n' % server.url)
    env = dict(os.environ, HOME=str(tmp_path))  # no ~/.koji of the machine's
    return subprocess.run([sys.executable, KOJI_CLI, '-c', str(conf), '--noauth',
                           '--plugin-paths', str(plugins), 'rekor-status'] + list(args),
                          capture_output=True, text=True, timeout=120, env=env)


@pytest.mark.skipif(not os.path.isfile(KOJI_CLI), reason='the koji command is not installed')
@pytest.mark.quiet_log  # exact log indexes or tree sizes: a log only this test writes
def test_the_cli_plugin_prints_a_build_as_a_table(signatures, keys, tmp_path):
    with hubsim.HubServer() as server:
        proc = koji_cli(tmp_path, server, 'hello-1.0-1')
        assert proc.returncode == 1, proc.stderr  # not every signature is logged
        lines = proc.stdout.splitlines()
        assert lines[0].split() == ['NVRA', 'SIGKEY', 'STATUS', 'LOG', 'INDEX', 'TIME', 'DETAIL']
        rows = {line.split()[1]: line for line in lines[1:]}
        assert sorted(rows) == sorted(keys[k].sigkey for k in ('rsa', 'ed25519', 'other'))
        assert rows[keys['rsa'].sigkey].split()[:4] == [NVRA, keys['rsa'].sigkey, 'logged', '0']
        assert rows[keys['ed25519'].sigkey].split()[2:5] == ['queued', 'attempts', '1,']
        assert 'last error: Rekor answered 503' in rows[keys['ed25519'].sigkey]
        assert rows[keys['other'].sigkey].split()[2] == 'rejected'
        assert rows[keys['other'].sigkey].endswith('  Rekor answered 400: Bad Request')

        proc = koji_cli(tmp_path, server, '--json', NVRA)
        assert proc.returncode == 1, proc.stderr
        assert by_sigkey(json.loads(proc.stdout)) == by_sigkey(
            hubsim.hub_call('rekorLogStatus', NVRA))


@pytest.mark.skipif(not os.path.isfile(KOJI_CLI), reason='the koji command is not installed')
def test_the_cli_plugin_exits_0_when_all_is_logged_and_2_for_unknown_builds(
        configured_hub, koji_import, signed_rpms, keys, tmp_path):
    logged = koji_import(signed_rpms[('rsa', 'header')])
    configured_hub.sign(logged)
    hubsim.install_kojihub([logged])
    try:
        with hubsim.HubServer() as server:
            proc = koji_cli(tmp_path, server, 'hello-1.0-1', NVRA)
            assert proc.returncode == 0, proc.stderr
            assert [line.split()[2] for line in proc.stdout.splitlines()[1:]] == ['logged'] * 2
            proc = koji_cli(tmp_path, server, 'nothing-1.0-1')
            assert (proc.returncode, proc.stdout) == (2, '')
            assert proc.stderr == 'rekor-status: no such build or RPM: nothing-1.0-1\n'
    finally:
        hubsim.uninstall_kojihub()


def test_a_receipt_that_is_a_symlink_is_not_followed(signatures, keys, topdir, tmp_path):
    path = (topdir / 'rekor-logs' / 'hello' / '1.0' / '1' / 'noarch' /
            ('%s.%s.json' % (NVRA, keys['rsa'].sigkey)))
    elsewhere = tmp_path / 'elsewhere.json'
    path.rename(elsewhere)
    path.symlink_to(elsewhere)
    status = by_sigkey(hubsim.hub_call('rekorLogStatus', NVRA))[keys['rsa'].sigkey]
    assert status['status'] == 'unverified'
    assert status['reason'] == ('the receipt does not verify: %s is a symlink: not followed'
                                % path.name)
