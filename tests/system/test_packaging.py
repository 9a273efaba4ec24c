"""The two ways an admin installs koji-rekor: the RPMs from `make rpm`
(built here as a clean build root would: with a python3 that cannot import
koji or anything else of ours), and `pip install .` into a clean virtual
environment."""

import os
import shutil
import subprocess
import sys
import venv

import koji.plugin
import pytest

from tests.support.common import ROOT

UNITS = ('koji-rekor-retry.service', 'koji-rekor-monitor.service', 'koji-rekor-monitor.timer')


def run(cmd, **kws):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=600, **kws)


def version():
    return run([sys.executable, '-c', 'import koji_rekor; print(koji_rekor.__version__)'],
               cwd=ROOT).stdout.strip()


class Build:
    """make rpm run with a venv's python3 (no koji, no requests) first on
    PATH and as the spec's python."""

    def __init__(self, tmp, source):
        self.python = str(tmp / 'venv' / 'bin' / 'python3')
        venv.create(tmp / 'venv', with_pip=False)
        probe = subprocess.run([self.python, '-c', 'import koji'], capture_output=True,
                               cwd=str(tmp))
        assert probe.returncode != 0, 'the build python must not have koji'
        self.info = run([self.python, '-Ic', 'import sys, sysconfig; print(sysconfig.get_path('
                         '"purelib", "posix_prefix", vars={"base": "/usr", "platbase": "/usr"}));'
                         ' print(sys.implementation.cache_tag)']).stdout.split()
        env = dict(os.environ, PATH='%s:%s' % (os.path.dirname(self.python), os.environ['PATH']))
        env.pop('PYTHONPATH', None)
        run(['make', 'rpm', 'RPM_PYTHON=%s' % self.python], cwd=str(source), env=env)
        dist = os.path.join(str(source), 'dist')
        self.cli = os.path.join(dist, 'koji-rekor-%s-1.noarch.rpm' % version())
        self.hub = os.path.join(dist, 'koji-rekor-hub-%s-1.noarch.rpm' % version())
        self.srpm = os.path.join(dist, 'koji-rekor-%s-1.src.rpm' % version())

    @property
    def sitelib(self):
        return self.info[0]

    def expected_cli_files(self, cli_plugin):
        files = {'/usr/bin/koji-rekor', '/usr/share/doc/koji-rekor',
                 '/usr/share/doc/koji-rekor/README.md', '/usr/share/doc/koji-rekor/docs',
                 '/usr/share/licenses/koji-rekor',
                 '/usr/share/licenses/koji-rekor/LICENSE'} | self.package_files() | {
            '/usr/share/doc/koji-rekor/docs/' + name for name in os.listdir(os.path.join(ROOT, 'docs'))}
        files |= {'/usr/lib/systemd/system/' + unit for unit in UNITS}
        if cli_plugin:
            files |= {self.sitelib + '/koji_cli_plugins/rekor_cli.py'} | {
                '%s/koji_cli_plugins/__pycache__/rekor_cli.%s%s.pyc' % (
                    self.sitelib, self.info[1], opt) for opt in ('', '.opt-1')}
        return files

    def package_files(self):
        """Every module of koji_rekor/ in the checkout, its directories and
        its byte-compiled forms, as installed in site-packages."""
        files = set()
        for folder, _, names in os.walk(os.path.join(ROOT, 'koji_rekor')):
            if os.path.basename(folder) == '__pycache__':
                continue
            relative = os.path.relpath(folder, ROOT)
            files.add('%s/%s' % (self.sitelib, relative))
            for name in names:
                if name.endswith('.py'):
                    files.add('%s/%s/%s' % (self.sitelib, relative, name))
                    files.add('%s/%s/__pycache__' % (self.sitelib, relative))
                    files |= {'%s/%s/__pycache__/%s.%s%s.pyc' % (
                        self.sitelib, relative, name[:-3], self.info[1], opt)
                        for opt in ('', '.opt-1')}
        return files

    def expected_hub_files(self):
        return {'/etc/koji-hub/plugins/rekor-keys', '/etc/koji-hub/plugins/rekor_log.conf',
                '/usr/lib/koji-hub-plugins/rekor_log.py'} | {
            '/usr/lib/koji-hub-plugins/__pycache__/rekor_log.%s%s.pyc' % (self.info[1], opt)
            for opt in ('', '.opt-1')}


def files_of(rpm):
    return set(run(['rpm', '-qlp', rpm]).stdout.split())


def requires_of(rpm):
    return set(run(['rpm', '-qp', '--requires', rpm]).stdout.splitlines())


@pytest.fixture(scope='module')
def built(tmp_path_factory):
    return Build(tmp_path_factory.mktemp('rpmbuild'), ROOT)


def test_the_command_package_holds_the_shared_modules_the_command_and_the_units(built):
    assert files_of(built.cli) == built.expected_cli_files(
        os.path.isfile(os.path.join(ROOT, 'rekor_cli.py')))


def test_the_hub_package_holds_the_byte_compiled_plugin_and_its_configuration(built):
    assert files_of(built.hub) == built.expected_hub_files()
    flags = dict(line.rsplit(' ', 1) for line in run(
        ['rpm', '-qp', '--qf', '[%{FILENAMES} %{FILEFLAGS:fflags}\n]', built.hub]
    ).stdout.splitlines() if ' ' in line)
    # The admin's edits survive an upgrade.
    assert flags['/etc/koji-hub/plugins/rekor_log.conf'] == 'cn'


def test_requires_the_hub_only_for_the_hub_plugin(built):
    hub = requires_of(built.hub)
    # koji-hub-plugins owns /usr/lib/koji-hub-plugins and /etc/koji-hub/plugins
    # (koji.spec), and brings the hub.
    assert {'koji-hub-plugins', 'koji-rekor = %s-1' % version()} <= hub
    assert 'koji-hub' not in hub
    cli = requires_of(built.cli)
    assert {'python3-koji', 'python3-requests', 'python3-rpm', 'python3-cryptography',
            'python3-pyyaml'} <= cli
    assert not {r for r in cli if r.startswith(('koji-hub', 'httpd', 'mod_'))}


def test_the_command_package_enables_stops_and_restarts_its_units(built):
    scripts = run(['rpm', '-qp', '--scripts', built.cli]).stdout
    sections = {}
    for line in scripts.splitlines():
        if line.endswith('scriptlet (using /bin/sh):'):
            current = sections.setdefault(line.split()[0], [])
        else:
            current.append(line)
    assert set(sections) == {'postinstall', 'preuninstall', 'postuninstall'}
    for section in ('postinstall', 'preuninstall'):
        assert all(unit in '\n'.join(sections[section]) for unit in UNITS)
    # The spec's fallbacks (this host) or systemd's own macros (Fedora's
    # newer ones call systemd-update-helper instead of systemctl).
    assert any(word in '\n'.join(sections['postinstall'])
               for word in ('preset', 'install-system-units'))
    assert any(word in '\n'.join(sections['preuninstall'])
               for word in ('disable', 'remove-system-units'))
    assert any(word + ' koji-rekor-retry.service' in '\n'.join(sections['postuninstall'])
               for word in ('try-restart', 'mark-restart-system-units'))
    assert run(['rpm', '-qp', '--scripts', built.hub]).stdout == ''


def test_the_source_rpm_names_what_the_build_needs(built):
    assert files_of(built.srpm) == {'koji-rekor.spec', 'koji-rekor-%s.tar.gz' % version()}
    assert 'python3-devel' in requires_of(built.srpm)


def test_installed_the_hub_plugin_is_a_shim_over_the_package_the_command_imports(built, tmp_path):
    root = tmp_path / 'root'
    run(['rpm', '--root', str(root), '--initdb'])
    run(['rpm', '--root', str(root), '-i', '--nodeps', '--noscripts', built.cli, built.hub])
    plugins = root / 'usr/lib/koji-hub-plugins'
    sitelib = str(root) + built.sitelib
    # A real file, the checkout's shim, not a link into site-packages.
    assert not os.path.islink(plugins / 'rekor_log.py')
    with open(os.path.join(ROOT, 'rekor_log.py')) as fo:
        assert (plugins / 'rekor_log.py').read_text() == fo.read()
    sys.path.insert(0, sitelib)  # as the hub's python finds site-packages
    # The checkout's modules, put back after: the tests collected before
    # hold them, and a lazy import must not find a second copy.
    saved = {m: sys.modules[m] for m in list(sys.modules)
             if m == 'koji_rekor' or m.startswith('koji_rekor.')}
    try:
        for name in saved:
            del sys.modules[name]
        module = koji.plugin.PluginTracker(path=[str(plugins)], prefix='_rpm_test_').load(
            'rekor_log', reload=True)
        assert module.hub.__file__.startswith(sitelib)
    finally:
        sys.path.remove(sitelib)
        for name in [m for m in sys.modules if m == 'koji_rekor' or m.startswith('koji_rekor.')]:
            del sys.modules[name]
        sys.modules.update(saved)
    assert {cb for f in vars(module).values() for cb in getattr(f, 'callbacks', ()) or ()} == {
        'postRPMSign', 'postCommit'}
    # The byte-compiled plugin is the one Python uses: its header records
    # the installed source's mtime and size.
    for source in (str(plugins / 'rekor_log.py'), os.path.join(sitelib, 'koji_rekor', 'hub.py')):
        import importlib.util
        with open(importlib.util.cache_from_source(source), 'rb') as fo:
            header = fo.read(16)
        stat = os.stat(source)
        assert int.from_bytes(header[4:8], 'little') == 0  # timestamp-checked
        assert int.from_bytes(header[8:12], 'little') == int(stat.st_mtime) & 0xffffffff
        assert int.from_bytes(header[12:16], 'little') == stat.st_size
    # The command runs from site-packages with no path of its own.
    wrapper = (root / 'usr/bin/koji-rekor').read_text()
    assert wrapper.startswith('#!/usr/bin/python3\n') and 'sys.path' not in wrapper
    out = run([sys.executable, str(root / 'usr/bin/koji-rekor'), '--version'],
              env=dict(os.environ, PYTHONPATH=sitelib)).stdout
    assert out.strip() == 'koji-rekor %s' % version()
    # Every file installed is one the code reads: no copy of the log key.
    assert not (root / 'usr/share/koji-rekor').exists()


def test_the_koji_cli_plugin_is_shipped_when_the_sources_have_it(tmp_path):
    source = tmp_path / 'src'
    source.mkdir()
    for name in ('rekor_log.py', 'rekor_log.conf', 'README.md', 'LICENSE',
                 'koji-rekor.spec', 'Makefile'):
        shutil.copy(os.path.join(ROOT, name), source / name)
    shutil.copytree(os.path.join(ROOT, 'docs'), source / 'docs')
    shutil.copytree(os.path.join(ROOT, 'koji_rekor'), source / 'koji_rekor',
                    ignore=shutil.ignore_patterns('__pycache__'))
    shutil.copytree(os.path.join(ROOT, 'systemd'), source / 'systemd')
    if os.path.isfile(os.path.join(ROOT, 'rekor_cli.py')):
        shutil.copy(os.path.join(ROOT, 'rekor_cli.py'), source / 'rekor_cli.py')
    else:
        (source / 'rekor_cli.py').write_text('# stands in for the Koji CLI plugin\n')
    built = Build(tmp_path, source)
    assert files_of(built.cli) == built.expected_cli_files(cli_plugin=True)
    assert 'python3-koji-cli-plugins' in requires_of(built.cli)


def test_pip_installs_the_package_the_shim_and_the_command_in_a_clean_venv(tmp_path):
    env_dir = tmp_path / 'venv'
    venv.create(env_dir, with_pip=True)
    pip = [str(env_dir / 'bin/python'), '-m', 'pip', 'install', '-q',
           '--disable-pip-version-check']
    run(pip + [ROOT])
    out = run([str(env_dir / 'bin/koji-rekor'), '--version']).stdout
    assert out.startswith('koji-rekor ')
    run([str(env_dir / 'bin/python'), '-c', 'import koji_rekor.cli, koji_rekor.hub, rekor_log, '
         'koji, requests, rpm, cryptography'], cwd=str(tmp_path))
