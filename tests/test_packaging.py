"""The two ways an admin installs koji-rekor: the RPM from `make rpm`, and
`pip install .` into a clean virtual environment."""

import os
import subprocess
import sys
import venv

import koji.plugin
import pytest

from conftest import ROOT

EXPECTED_FILES = {
    '/etc/koji-hub/plugins/rekor-keys',
    '/etc/koji-hub/plugins/rekor_log.conf',
    '/usr/bin/koji-rekor',
    '/usr/lib/koji-hub-plugins/rekor_log.py',
    '/usr/lib/systemd/system/koji-rekor-monitor.service',
    '/usr/lib/systemd/system/koji-rekor-monitor.timer',
    '/usr/lib/systemd/system/koji-rekor-retry.service',
    '/usr/share/doc/koji-rekor',
    '/usr/share/doc/koji-rekor/README.md',
    '/usr/share/koji-rekor',
    '/usr/share/koji-rekor/koji_rekor.py',
    '/usr/share/koji-rekor/rekor.sigstore.dev.pub',
    '/usr/share/licenses/koji-rekor',
    '/usr/share/licenses/koji-rekor/LICENSE',
}


def run(cmd, **kws):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=600, **kws)


@pytest.fixture(scope='module')
def built_rpm():
    run(['make', 'rpm'], cwd=ROOT)
    version = run([sys.executable, '-c', 'import rekor_log; print(rekor_log.__version__)'],
                  cwd=ROOT).stdout.strip()
    path = os.path.join(ROOT, 'dist', 'koji-rekor-%s-1.noarch.rpm' % version)
    assert os.path.isfile(path)
    return path


def test_the_rpm_holds_exactly_the_plugin_its_configuration_command_key_and_units(built_rpm):
    files = run(['rpm', '-qlp', built_rpm]).stdout.split()
    assert set(files) == EXPECTED_FILES
    flags = dict(line.rsplit(' ', 1) for line in run(
        ['rpm', '-qp', '--qf', '[%{FILENAMES} %{FILEFLAGS:fflags}\n]', built_rpm]
    ).stdout.splitlines() if ' ' in line)
    # The admin's edits survive an upgrade.
    assert flags['/etc/koji-hub/plugins/rekor_log.conf'] == 'cn'


def test_the_installed_rpm_puts_the_plugin_where_koji_loads_it(built_rpm, tmp_path):
    root = tmp_path / 'root'
    run(['rpm', '--root', str(root), '--initdb'])
    run(['rpm', '--root', str(root), '-i', '--nodeps', '--noscripts', built_rpm])
    plugins = root / 'usr/lib/koji-hub-plugins'
    module = koji.plugin.PluginTracker(path=[str(plugins)], prefix='_rpm_test_').load(
        'rekor_log', reload=True)
    assert {cb for f in vars(module).values() for cb in getattr(f, 'callbacks', ()) or ()} == {
        'postRPMSign', 'postCommit'}
    shipped = (root / 'usr/share/koji-rekor/rekor.sigstore.dev.pub').read_bytes()
    assert shipped == module.PUBLIC_REKOR_KEY
    # The command finds the plugin module where the package put it.
    wrapper = (root / 'usr/bin/koji-rekor').read_text()
    assert "sys.path.insert(0, '/usr/lib/koji-hub-plugins')" in wrapper
    out = run([sys.executable, str(root / 'usr/bin/koji-rekor'), '--version'],
              env=dict(os.environ, PYTHONPATH='%s:%s' % (plugins, root / 'usr/share/koji-rekor'))).stdout
    assert out.strip() == 'koji-rekor %s' % module.__version__


def test_pip_installs_the_module_and_the_command_in_a_clean_venv(tmp_path):
    env_dir = tmp_path / 'venv'
    venv.create(env_dir, with_pip=True)
    pip = [str(env_dir / 'bin/python'), '-m', 'pip', 'install', '-q',
           '--disable-pip-version-check']
    run(pip + [ROOT])
    out = run([str(env_dir / 'bin/koji-rekor'), '--version']).stdout
    assert out.startswith('koji-rekor ')
    run([str(env_dir / 'bin/python'), '-c', 'import rekor_log, koji, requests, rpm, cryptography'],
        cwd=str(tmp_path))
