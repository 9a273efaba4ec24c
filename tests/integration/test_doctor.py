"""koji-rekor doctor: one line per check of an installation, each broken
setup named on its own line, against the local Rekor-compatible log."""

import base64
import grp
import json
import os
import pwd
import re
import shutil

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

import koji_rekor.cli
import koji_rekor.config
import koji_rekor.openpgp
import koji_rekor.state
from tests.support import rpmfactory

ME = pwd.getpwuid(os.getuid()).pw_name


class Setup:
    """A hub's installation: configuration, keys, topdir, PATH; each test
    breaks one thing and runs the doctor."""

    def __init__(self, tmp_path, rekor, keys, key_dir, log_key_file, capsys, monkeypatch):
        self.tmp_path, self.rekor, self.keys, self.key_dir = tmp_path, rekor, keys, key_dir
        self.capsys, self.monkeypatch = capsys, monkeypatch
        self.conf = tmp_path / 'rekor_log.conf'
        self.topdir = tmp_path / 'koji'
        (self.topdir / 'rekor-logs').mkdir(parents=True)
        self.bin = tmp_path / 'bin'
        self.bin.mkdir()
        monkeypatch.setenv('PATH', '%s:%s' % (self.bin, os.environ['PATH']))
        self.options = {'rekor': {'url': rekor.url, 'allow_insecure_http': 'true',
                                  'log_public_key': str(log_key_file), 'timeout': '5',
                                  'retries': '0'},
                        'signing': {'public_key_dir': str(key_dir)},
                        'upload': {'hub_user': ME}}
        self.getsebool('httpd_can_network_connect --> on')
        # The hub's own configuration, as /etc/koji-hub/hub.conf says it.
        self.hub_conf = tmp_path / 'hub.conf'
        self.plugins = tmp_path / 'hub-plugins'
        self.plugins.mkdir()
        (self.plugins / 'rekor_log.py').write_text('# the plugin\n')
        self.hub_conf.write_text('[hub]\nPlugins = protonmsg rekor_log\nPluginPath = %s\n'
                                 % self.plugins)
        monkeypatch.setattr(koji_rekor.config, 'HUB_CONFIG_FILE', str(self.hub_conf))
        monkeypatch.setattr(koji_rekor.config, 'HUB_CONFIG_DIR', str(tmp_path / 'hub.conf.d'))

    def getsebool(self, answer):
        """What SELinux's getsebool says on this host (Debian has none)."""
        path = self.bin / 'getsebool'
        path.write_text('#!/bin/sh\necho "%s"\n' % answer)
        path.chmod(0o755)

    def run(self, *args):
        self.conf.write_text(''.join('[%s]\n%s' % (section, ''.join(
            '%s = %s\n' % item for item in options.items()))
            for section, options in self.options.items()))
        return self.run_as_is(*args)

    def run_as_is(self, *args, topdir=True):
        status = koji_rekor.cli.main(['doctor', '--config', str(self.conf)] + (
            ['--topdir', str(self.topdir)] if topdir else []) + list(args))
        out, err = self.capsys.readouterr()
        assert 'Traceback' not in err
        return status, out

    def lines(self):
        status, out = self.run()
        return status, out.splitlines()

    def failures(self):
        status, lines = self.lines()
        return status, [line for line in lines if line.startswith('FAIL')]


@pytest.fixture
def setup(tmp_path, rekor, keys, key_dir, log_key_file, capsys, monkeypatch):
    return Setup(tmp_path, rekor, keys, key_dir, log_key_file, capsys, monkeypatch)


def test_a_working_installation_passes_every_check(setup, keys):
    status, lines = setup.lines()
    assert status == 0, lines
    checks = [line.split(':')[0] for line in lines]
    assert checks == ['ok   configuration', 'ok   hub.conf', 'ok   plugin', 'ok   topdir'] + sorted(
        'ok   key %s/%s.asc' % (setup.key_dir, keys[a].sigkey) for a in ('rsa', 'ed25519')) + [
        'ok   log', 'ok   selinux', 'ok   rekor-logs', 'ok   outbox']
    assert 'ok   topdir: %s (--topdir)' % setup.topdir in lines
    assert 'ok   hub.conf: %s: Plugins includes rekor_log' % setup.hub_conf in lines
    assert 'ok   plugin: %s/rekor_log.py' % setup.plugins in lines
    log, = [line for line in lines if line.startswith('ok   log')]
    assert log.startswith('ok   log: %s: signed tree head of tree ' % setup.rekor.url)


def test_json_has_every_check_and_the_exit_status(setup):
    setup.options['rekor']['retries'] = 'never'
    status, out = setup.run('--json')
    report = json.loads(out)
    assert status == report['exit_status'] == 1
    assert report['checks'][0]['status'] == 'fail'
    assert report['checks'][0]['check'] == 'configuration'
    assert "[rekor] retries: 'never'" in report['checks'][0]['detail']


def test_a_configuration_the_hub_refuses_fails_and_skips_what_needs_it(setup):
    setup.options['upload']['enforce'] = 'true'
    setup.options['upload']['queue_only'] = 'true'
    status, lines = setup.lines()
    assert status == 1
    assert lines[0].startswith('FAIL configuration: %s: [upload] queue_only' % setup.conf)
    assert [line.split(':')[0] for line in lines[3:6]] == [
        'skip signing keys', 'skip log', 'skip selinux']


def test_a_key_file_named_after_another_key(setup, keys):
    wrong = setup.key_dir / 'deadbeef.asc'
    shutil.copy(keys['other'].path, wrong)
    status, failures = setup.failures()
    assert status == 1
    assert failures == ['FAIL key %s: named deadbeef.asc, but signatures by this key have '
                        'sigkey %s: rename it to %s.asc' % (wrong, keys['other'].sigkey,
                                                          keys['other'].sigkey)]


def armor(binary):
    body = base64.b64encode(binary).decode()
    return ('-----BEGIN PGP PUBLIC KEY BLOCK-----\n\n%s\n-----END PGP PUBLIC KEY BLOCK-----\n'
            % '\n'.join(body[i:i + 64] for i in range(0, len(body), 64))).encode()


def test_a_key_file_holding_two_keys(setup, keys):
    both = koji_rekor.openpgp.dearmor(keys['rsa'].armored) + koji_rekor.openpgp.dearmor(keys['other'].armored)
    path = setup.key_dir / ('%s.asc' % keys['rsa'].sigkey)
    path.write_bytes(armor(both))
    status, failures = setup.failures()
    assert (status, failures) == (1, ['FAIL key %s: holds 2 primary keys, not one' % path])


def test_a_key_file_that_is_not_a_key(setup):
    path = setup.key_dir / '0badc0de.asc'
    path.write_text('-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nbm90IGEga2V5\n'
                    '-----END PGP PUBLIC KEY BLOCK-----\n')
    status, failures = setup.failures()
    assert status == 1 and len(failures) == 1
    assert failures[0].startswith('FAIL key %s: not a readable OpenPGP key' % path)


def test_a_key_named_after_its_signing_subkey_passes(setup, keys, tmp_path):
    home = str(tmp_path / 'gnupg')
    key = rpmfactory.generate_key(home, algo='rsa', name='Subkey signer')
    try:
        status = rpmfactory._run(['gpg', '--batch', '--passphrase', '', '--status-fd', '1',
                                  '--quick-add-key', key.fingerprint, 'ed25519', 'sign',
                                  'never'], 60, rpmfactory._gpg_env(home))
        subkey = rpmfactory._created_fingerprint(status)
        armored = rpmfactory._run(['gpg', '--batch', '--export', '--armor', key.fingerprint],
                                  60, rpmfactory._gpg_env(home)).encode()
    finally:
        rpmfactory.stop_gpg_agent(home)
    path = setup.key_dir / ('%s.asc' % subkey[-8:].lower())
    path.write_bytes(armored)
    status, lines = setup.lines()
    assert status == 0, lines
    assert 'ok   key %s: sigkey %s' % (path, subkey[-8:].lower()) in lines


def test_a_key_file_the_plugin_never_reads_is_a_warning(setup):
    (setup.key_dir / 'README').write_text('keys go here\n')
    status, lines = setup.lines()
    assert status == 0
    assert 'warn key %s/README: never read: the plugin reads only <sigkey>.asc' % (
        setup.key_dir) in lines


def test_no_signing_keys_at_all(setup):
    for name in os.listdir(setup.key_dir):
        os.unlink(setup.key_dir / name)
    status, failures = setup.failures()
    assert (status, failures) == (1, ['FAIL signing keys: no public keys (%s is empty): every '
                                      'signature would fail' % setup.key_dir])


def test_a_log_that_cannot_be_reached(setup, rekor):
    # One attempt: the hub's retries would keep the admin waiting.
    setup.options['rekor'].update(retries='3', backoff='30')
    url = rekor.url
    rekor.stop()
    status, failures = setup.failures()
    assert status == 1 and len(failures) == 1
    assert failures[0].startswith('FAIL log: cannot reach Rekor at %s: connection refused'
                                  % url)
    assert not re.search(r'after ([2-9]|\d\d+) attempts', failures[0])


def test_a_log_serving_another_key_than_the_pinned_one(setup, rekor, tmp_path):
    other = tmp_path / 'other.pub'
    other.write_bytes(ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    setup.options['rekor']['log_public_key'] = str(other)
    status, failures = setup.failures()
    assert status == 1 and len(failures) == 1
    assert failures[0].startswith('FAIL log: %s serves log key ' % rekor.url)
    assert failures[0].endswith('(%s)' % other)


def test_a_signed_tree_head_for_another_origin(setup, rekor):
    setup.options['rekor']['origin'] = 'rekor.example.org'
    status, failures = setup.failures()
    assert (status, failures) == (1, [
        'FAIL log: %s: its signed tree head does not verify: checkpoint: origin %r is not log '
        'rekor.example.org' % (rekor.url, rekor.log.checkpoint().splitlines()[0])])


def test_selinux_forbidding_httpd_to_connect(setup, rekor):
    setup.getsebool('httpd_can_network_connect --> off')
    status, failures = setup.failures()
    assert (status, failures) == (1, [
        'FAIL selinux: httpd_can_network_connect is off: SELinux stops httpd reaching %s; '
        'setsebool -P httpd_can_network_connect 1' % rekor.url])


def test_selinux_does_not_matter_with_queue_only(setup):
    setup.getsebool('httpd_can_network_connect --> off')
    setup.options['upload']['queue_only'] = 'true'
    status, lines = setup.lines()
    assert status == 0
    assert 'ok   selinux: queue_only: httpd does not reach the log, the worker does' in lines


def test_no_receipt_directory(setup):
    path = setup.topdir / 'rekor-logs'
    path.rmdir()
    status, failures = setup.failures()
    assert (status, failures) == (1, [
        'FAIL rekor-logs: %s: No such file or directory; create it: mkdir -p %s && chown %s: %s'
        % (path, path, ME, path)])


@pytest.mark.skipif(os.getuid() != 0, reason='chown needs root')
def test_a_receipt_directory_of_another_user(setup):
    path = setup.topdir / 'rekor-logs'
    os.chown(path, pwd.getpwnam('nobody').pw_uid, -1)
    status, failures = setup.failures()
    assert (status, failures) == (1, [
        'FAIL rekor-logs: %s belongs to nobody, not the hub user %s: chown -R %s: %s'
        % (path, ME, ME, path)])


def test_a_hub_user_this_host_does_not_have(setup):
    setup.options['upload']['hub_user'] = 'no-such-user-13'
    status, failures = setup.failures()
    assert (status, failures) == (1, [
        'FAIL rekor-logs: no user no-such-user-13 on this host ([upload] hub_user)'])


def test_the_outbox_is_summarised(setup):
    outbox = setup.topdir / 'rekor-logs' / '@outbox'
    (outbox / 'rejected').mkdir(parents=True)
    (outbox / 'a-1-1.noarch.0badc0de.json').write_text('not even JSON')
    (outbox / 'b-1-1.noarch.0badc0de.uncommitted').write_text('{}')
    (outbox / 'rejected' / 'c-1-1.noarch.0badc0de.json').write_text('{}')
    status, lines = setup.lines()
    assert status == 0
    assert lines[-1] == ('warn outbox: %s: 2 queued (oldest 0 s), 1 in rejected/; look at '
                         'rejected/, move each record back once fixed' % outbox)


def test_a_configuration_the_hub_user_cannot_read(setup):
    # The hub could not read it: every signature import would fail.
    setup.options['upload']['hub_user'] = 'nobody'
    setup.run()
    setup.conf.chmod(0o600)
    status, out = setup.run_as_is()
    assert status == 1
    assert out.splitlines()[0] == (
        'FAIL configuration: %s: not readable by the hub user nobody (mode 600, %s:%s), so the '
        'hub fails every signature import on it'
        % (setup.conf, ME, grp.getgrgid(os.getgid()).gr_name))


def test_a_key_file_the_hub_user_cannot_read(setup, keys):
    setup.options['upload']['hub_user'] = 'nobody'
    path = setup.key_dir / ('%s.asc' % keys['rsa'].sigkey)
    path.chmod(0o600)
    status, lines = setup.lines()
    assert status == 1
    assert 'FAIL key %s: not readable by the hub user nobody (mode 600, %s:%s)' % (
        path, ME, grp.getgrgid(os.getgid()).gr_name) in lines
    assert 'ok   key %s/%s.asc: sigkey %s' % (setup.key_dir, keys['ed25519'].sigkey,
                                             keys['ed25519'].sigkey) in lines


# --- the topdir: which one, and why; missing or unreadable is a FAIL --------

def test_the_topdir_from_hub_conf_is_named_with_why(setup):
    setup.hub_conf.write_text(setup.hub_conf.read_text() + 'KojiDir = %s\n' % setup.topdir)
    setup.run()
    status, out = setup.run_as_is(topdir=False)
    assert status == 0, out
    assert 'ok   topdir: %s (KojiDir in %s)' % (setup.topdir, setup.hub_conf) in out.splitlines()


def test_without_hub_conf_the_default_topdir_is_named_with_why(setup, monkeypatch, tmp_path):
    monkeypatch.setattr(koji_rekor.config, 'DEFAULT_TOPDIR', str(tmp_path / 'mnt-koji'))
    setup.hub_conf.unlink()
    setup.run()
    status, out = setup.run_as_is(topdir=False)
    lines = out.splitlines()
    assert status == 1
    assert 'warn hub.conf: %s does not exist: not a hub host? Plugins and PluginPath not ' \
        'checked' % setup.hub_conf in lines
    assert ("FAIL topdir: %s (Koji's default: %s does not exist) does not exist: mount it, or "
            "give --topdir / set KojiDir" % (tmp_path / 'mnt-koji', setup.hub_conf)) in lines
    # Nothing under a topdir that is not there is called ok.
    assert [line.split(':')[0] for line in lines[-2:]] == ['skip rekor-logs', 'skip outbox']


def test_a_missing_topdir_fails_and_skips_what_is_under_it(setup):
    shutil.rmtree(setup.topdir)
    status, lines = setup.lines()
    assert status == 1
    assert [line for line in lines if not line.startswith('ok')] == [
        'FAIL topdir: %s (--topdir) does not exist: mount it, or give --topdir / set KojiDir'
        % setup.topdir, 'skip rekor-logs: needs the topdir', 'skip outbox: needs the topdir']


def test_a_topdir_the_hub_user_cannot_read_fails_without_create_it(setup):
    setup.options['upload']['hub_user'] = 'nobody'
    setup.topdir.chmod(0o700)
    status, lines = setup.lines()
    assert status == 1
    topdir, = [line for line in lines if line.startswith('FAIL topdir')]
    assert topdir == 'FAIL topdir: %s (--topdir): not readable by the hub user nobody (mode 700, ' \
        '%s:%s)' % (setup.topdir, ME, grp.getgrgid(os.getgid()).gr_name)
    assert not any('create it' in line or 'ok   outbox' in line for line in lines)


def test_a_file_as_topdir_fails(setup):
    shutil.rmtree(setup.topdir)
    setup.topdir.write_text('')
    status, lines = setup.lines()
    assert status == 1
    assert 'FAIL topdir: %s (--topdir) is not a directory' % setup.topdir in lines


# --- what makes every upload fail -----------------------------------------

def test_a_private_log_without_a_key_and_no_trust_on_first_use_fails(setup, rekor):
    del setup.options['rekor']['log_public_key']
    status, lines = setup.lines()
    assert status == 1
    log, = [line for line in lines if line.startswith(('FAIL log', 'warn log', 'ok   log'))]
    assert log.startswith('FAIL log: %s: no log key configured or pinned, and '
                          'trust_on_first_use is off: every upload would fail' % rekor.url)


def test_a_private_log_trusted_on_first_use_is_a_warning(setup, rekor):
    del setup.options['rekor']['log_public_key']
    setup.options['rekor']['trust_on_first_use'] = 'true'
    status, lines = setup.lines()
    assert status == 0, lines
    assert any(line.startswith('warn log: %s: no log key configured or pinned' % rekor.url)
               for line in lines)


# --- hub.conf and what the hub's user reads --------------------------------

def test_hub_conf_not_loading_the_plugin_fails(setup):
    setup.hub_conf.write_text('[hub]\nPlugins = protonmsg\nPluginPath = %s\n' % setup.plugins)
    status, failures = setup.failures()
    assert (status, failures) == (1, [
        'FAIL hub.conf: %s: Plugins = protonmsg does not include rekor_log: the hub never '
        'loads the plugin; add rekor_log to Plugins' % setup.hub_conf])


def test_no_plugin_file_in_plugin_path_fails(setup):
    (setup.plugins / 'rekor_log.py').unlink()
    status, failures = setup.failures()
    assert (status, failures) == (1, [
        'FAIL plugin: no rekor_log.py in PluginPath %s: copy it there' % setup.plugins])


def test_a_plugin_file_the_hub_user_cannot_read_fails(setup):
    setup.options['upload']['hub_user'] = 'nobody'
    (setup.plugins / 'rekor_log.py').chmod(0o600)
    status, failures = setup.failures()
    assert status == 1
    assert failures[:1] == ['FAIL plugin: %s/rekor_log.py: not readable by the hub user nobody '
                        '(mode 600, %s:%s), so the hub cannot load it'
                        % (setup.plugins, ME, grp.getgrgid(os.getgid()).gr_name)]


def test_the_configured_hub_user_is_used_when_another_option_is_bad(setup):
    setup.options['upload']['hub_user'] = 'no-such-user-13'
    setup.options['rekor']['retries'] = 'never'
    status, lines = setup.lines()
    assert status == 1
    assert 'FAIL rekor-logs: no user no-such-user-13 on this host ([upload] hub_user)' in lines


def test_a_log_key_the_hub_user_cannot_read_fails(setup, log_key_file):
    setup.options['upload']['hub_user'] = 'nobody'
    setup.run()
    os.chmod(log_key_file, 0o600)
    status, out = setup.run_as_is()
    assert status == 1
    assert ('FAIL log: [rekor] log_public_key %s: not readable by the hub user nobody'
            % log_key_file) in out


def test_the_topdir_from_a_drop_in_names_that_file(setup, tmp_path):
    drop_in = tmp_path / 'hub.conf.d' / '10-paths.conf'
    drop_in.parent.mkdir()
    drop_in.write_text('[hub]\nKojiDir = %s\n' % setup.topdir)
    setup.run()
    status, out = setup.run_as_is(topdir=False)
    assert status == 0, out
    assert 'ok   topdir: %s (KojiDir in %s)' % (setup.topdir, drop_in) in out.splitlines()
    assert 'ok   hub.conf: %s, %s: Plugins includes rekor_log' % (drop_in, setup.hub_conf) \
        in out.splitlines()

def test_a_log_that_no_longer_takes_entries(setup, rekor):
    """The worker met 501 for POST /api/v1/log/entries (the write path
    turned off): the log answers everything else, and doctor says that it
    no longer takes entries."""
    import koji_rekor.cli
    import koji_rekor.config
    import koji_rekor.openpgp
    import koji_rekor.state
    setup.run()
    settings = koji_rekor.config.load_config(str(setup.conf))
    koji_rekor.state.record_outage(settings, str(setup.topdir), 'Rekor answered 501 for '
                            '/api/v1/log/entries: ...; this log no longer takes entries',
                            closed=True)
    status, failures = setup.failures()
    assert status == 1 and len(failures) == 1
    assert failures[0].startswith('FAIL log: %s no longer takes entries (since ' % rekor.url)
