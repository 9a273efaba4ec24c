"""One rule for configuration errors, on a real Koji hub (../shared/koji-hub
through tests/support/realhub.py): with `[upload] enforce = false` in the file, a
misspelt option name queues the signature, as a bad value does (docs/admin-guide.md:
Configuration); `koji import-sig` succeeds and nothing is sent."""

import os

import pytest

from tests.support.common import HUB_USER
from tests.support.rekor_server import RekorServer

from tests.support import realhub

ENTRIES = '/api/v1/log/entries'


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
                     'timout = 30\nretries = 0\n[signing]\npublic_key_dir = %s\n'
                     '[upload]\nenforce = false\nhub_user = %s\n'
                     % (module_rekor.url, log_key, os.path.join(workdir, 'keys'), HUB_USER))
        for path in (log_key, conf):
            os.chmod(path, 0o644)
        return conf
    yield from realhub.real_hub(write_conf)


def test_a_misspelt_option_with_enforce_off_queues_the_signature(hub, module_rekor):
    hub.koji('import', '--create-build', hub.rpms['RPM'])
    done = hub.koji('import-sig', hub.rpms['SIGNED_RPM'], check=False)
    assert done.returncode == 0, done.stdout + done.stderr + hub.logs()
    assert module_rekor.count('POST', ENTRIES) == 0
    nvra = os.path.basename(hub.rpms['RPM'])[:-len('.rpm')]
    outbox = os.path.join(hub.topdir, 'rekor-logs', '@outbox')
    assert sorted(os.listdir(outbox)) == ['%s.%s.json' % (nvra, hub.rpms['SIGKEY'].lower())]
    logs = hub.logs(200)
    assert 'unknown option [rekor] timout' in logs
    assert 'kept in the outbox' in logs


def test_doctor_reads_the_real_hubs_configuration(hub, monkeypatch, capsys):
    """doctor on the harness's hub.conf: the topdir is the hub's KojiDir,
    said so; Plugins and PluginPath load this plugin; the misspelt option
    is one FAIL line naming the file."""
    import koji_rekor.cli
    import koji_rekor.config
    conf = hub.env['HUB_CONF']
    monkeypatch.setattr(koji_rekor.config, 'HUB_CONFIG_FILE', conf)
    monkeypatch.setattr(koji_rekor.config, 'HUB_CONFIG_DIR', os.path.join(os.path.dirname(conf),
                                                                   'hub.conf.d'))
    status = koji_rekor.cli.main(['doctor', '--config', hub.env['PLUGIN_CONF']])
    lines = capsys.readouterr().out.splitlines()
    assert status == 1
    assert lines[0] == 'FAIL configuration: %s: unknown option [rekor] timout' % (
        hub.env['PLUGIN_CONF'])
    assert 'ok   hub.conf: %s: Plugins includes rekor_log' % conf in lines
    plugin, = [line for line in lines if line.startswith(('ok   plugin', 'FAIL plugin'))]
    assert plugin.startswith('ok   plugin: ') and plugin.endswith('/rekor_log.py'), plugin
    assert 'ok   topdir: %s (KojiDir in %s)' % (hub.topdir, conf) in lines
