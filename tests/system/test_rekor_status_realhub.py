"""rekorLogStatus and `koji rekor-status` on a real Koji hub
(../shared/koji-hub, through tests/support/realhub.py): the call registered by the
hub's own loader and answered with kojihub's own functions, the CLI plugin
loaded by the koji command."""

import os
import shlex
import shutil
import subprocess

import koji
import pytest

from tests.support.common import HUB_USER, ROOT
from tests.support.rekor_server import RekorServer

from tests.support import realhub


@pytest.fixture(scope='module')
def module_rekor():
    with RekorServer() as server:
        yield server


@pytest.fixture(scope='module')
def hub(module_rekor):
    def write_conf(workdir, rpms):
        log_key = os.path.join(workdir, 'rekor.pub')
        with open(log_key, 'wb') as fo:
            fo.write(module_rekor.log.public_key_pem)
        conf = os.path.join(workdir, 'rekor_log.conf')
        with open(conf, 'w') as fo:
            fo.write('[rekor]\nurl = %s\nallow_insecure_http = true\nlog_public_key = %s\n'
                     'timeout = 10\nretries = 0\n[signing]\npublic_key_dir = %s\n'
                     '[upload]\nhub_user = %s\n'
                     % (module_rekor.url, log_key, os.path.join(workdir, 'keys'), HUB_USER))
        for path in (log_key, conf):
            os.chmod(path, 0o644)
        return conf
    yield from realhub.real_hub(write_conf)


def rekor_status(hub, tmp_path, *args):
    plugins = tmp_path / 'cli-plugins'
    plugins.mkdir(exist_ok=True)
    shutil.copy(os.path.join(ROOT, 'rekor_cli.py'), plugins / 'rekor_cli.py')
    # The harness's koji command (its client configuration), anonymous.
    return subprocess.run(shlex.split(hub.env['KOJI']) + [
        '--noauth', '--plugin-paths', str(plugins), 'rekor-status'] + list(args),
        capture_output=True, text=True, timeout=realhub.CALL_TIMEOUT,
        env=dict(os.environ, HOME=str(tmp_path)))


def test_a_signature_imported_into_a_real_hub_is_reported_logged(hub, tmp_path):
    hub.koji('import', '--create-build', hub.rpms['RPM'])
    hub.koji('import-sig', hub.rpms['SIGNED_RPM'])
    session = koji.ClientSession(hub.url)
    nvra = os.path.basename(hub.rpms['RPM'])[:-len('.rpm')]
    (status,) = session.rekorLogStatus(nvra)
    assert (status['status'], status['sigkey'], status['nvra']) == (
        'logged', hub.rpms['SIGKEY'], nvra), hub.logs()
    assert session.rekorLogStatus(status['rpm_id']) == [status]
    build = nvra.rsplit('.', 1)[0]
    proc = rekor_status(hub, tmp_path, build)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (row,) = proc.stdout.splitlines()[1:]
    assert row.split()[:4] == [nvra, hub.rpms['SIGKEY'], 'logged', str(status['log_index'])]
    with pytest.raises(koji.GenericError, match='No such rpm'):
        session.rekorLogStatus('nothing-1.0-1.noarch')


def test_verify_rpm_with_the_real_hubs_receipt_with_and_without_configuration(
        hub, tmp_path, monkeypatch, capsys):
    """The receipt the real hub wrote names its log; the key comes from the
    hub's configuration, or the check cannot be made (2), never a verdict."""
    import json

    import koji_rekor.cli
    import koji_rekor.config
    # Not the harness's copy in /etc: "without configuration" means none.
    monkeypatch.setattr(koji_rekor.config, 'CONFIG_FILE', str(tmp_path / 'none.conf'))
    nvra = os.path.basename(hub.rpms['RPM'])[:-len('.rpm')]
    name, version, rest = nvra.rsplit('-', 2)
    release, arch = rest.rsplit('.', 1)
    receipt = os.path.join(hub.topdir, 'rekor-logs', name, version, release, arch,
                           '%s.%s.json' % (nvra, hub.rpms['SIGKEY'].lower()))
    if not os.path.exists(receipt):  # this module's first test imports the signature
        hub.koji('import', '--create-build', hub.rpms['RPM'], check=False)
        hub.koji('import-sig', hub.rpms['SIGNED_RPM'])
    argv = ['verify-rpm', hub.rpms['SIGNED_RPM'], '--key', hub.rpms['PUBKEY'], '--receipt',
            receipt]
    conf = os.path.join(hub.workdir, 'rekor_log.conf')
    status = koji_rekor.cli.main(argv + ['--config', conf, '--json'])
    out, err = capsys.readouterr()
    (package,) = json.loads(out)['packages']
    assert (status, package['status']) == (0, 'logged'), out + err
    assert package['log_key'] == '[rekor] log_public_key %s (%s)' % (
        os.path.join(hub.workdir, 'rekor.pub'), conf)
    status = koji_rekor.cli.main(argv)
    out, err = capsys.readouterr()
    assert (status, out) == (2, ''), err
    assert err.startswith('koji-rekor: cannot check %s: no key for the log it names' % receipt)
