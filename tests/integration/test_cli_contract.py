"""The command-line contract of every koji-rekor subcommand: exit 0 on
success, 1 when the thing checked failed, 2 when the command could not run;
--json on each; --debug before or after the subcommand; a failed request is
one short cause; and KojiDir found where the hub finds it."""

import datetime
import http.server
import json
import ssl
import subprocess
import sys
import threading

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

import koji_rekor.cli
import koji_rekor.config
from tests.support.common import HUB_USER, ROOT


def cli(capsys, *argv):
    status = koji_rekor.cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert 'Traceback' not in err
    return status, out, err


@pytest.fixture
def conf(tmp_path, rekor, log_key_file, key_dir):
    path = tmp_path / 'rekor_log.conf'
    path.write_text('[rekor]\nurl = %s\nallow_insecure_http = true\nlog_public_key = %s\n'
                    'retries = 0\ntimeout = 5\n[signing]\npublic_key_dir = %s\n'
                    '[upload]\nhub_user = %s\n[monitor]\nstate_dir = %s\n'
                    % (rekor.url, log_key_file, key_dir, HUB_USER, tmp_path / 'monitor-state'))
    return path


@pytest.fixture
def workdir(tmp_path):
    topdir = tmp_path / 'koji'
    topdir.mkdir()
    return topdir


@pytest.fixture
def receipt(capsys, conf, workdir, signed_rpms, keys, tmp_path):
    path = tmp_path / 'receipt.json'
    status, out, err = cli(capsys, 'upload', signed_rpms[('rsa', 'header')], '--key',
                           keys['rsa'].path, '--config', conf, '--topdir', workdir,
                           '--receipt', path)
    assert status == 0, err
    return path


def commands(conf, workdir, receipt, signed_rpms, keys):
    """A successful run of every subcommand."""
    return {
        'upload': ['upload', signed_rpms[('ed25519', 'header')], '--key', keys['ed25519'].path,
                   '--config', conf, '--topdir', workdir],
        'verify': ['verify', receipt, '--rpm', signed_rpms[('rsa', 'header')], '--config', conf],
        'retry': ['retry', '--config', conf, '--topdir', workdir],
        'monitor': ['monitor', '--config', conf, '--topdir', workdir, '--start-index', '0'],
        'backfill': ['backfill', '--config', conf, '--topdir', workdir],
        'outbox': ['outbox', '--topdir', workdir],
        'log-key': ['log-key', '--config', conf, '--topdir', workdir],
        'verify-rpm': ['verify-rpm', signed_rpms[('rsa', 'header')], '--receipt', receipt,
                       '--config', conf, '--key', keys['rsa'].path],
    }


SUBCOMMANDS = ('upload', 'verify', 'retry', 'monitor', 'backfill', 'outbox', 'log-key',
               'verify-rpm', 'doctor')


def test_every_subcommand_is_covered_here():
    parser = koji_rekor.cli.build_parser()
    sub, = [a for a in parser._actions if a.dest == 'command']
    assert set(sub.choices) == set(SUBCOMMANDS)


@pytest.mark.parametrize('command', SUBCOMMANDS[:-1])
def test_every_subcommand_prints_json_with_its_exit_status(command, capsys, conf, workdir,
                                                           receipt, signed_rpms, keys):
    argv = commands(conf, workdir, receipt, signed_rpms, keys)[command]
    status, out, err = cli(capsys, *argv, '--json')
    # The monitor reads the two uploads, made with our keys, and has no Koji
    # hub to ask whether Koji signed them: it could not check (2).
    assert status == (2 if command == 'monitor' else 0), err
    report = json.loads(out)
    assert report['exit_status'] == status


@pytest.mark.parametrize('command', SUBCOMMANDS[:-1])
def test_json_is_accepted_before_the_subcommand(command, capsys, conf, workdir, receipt,
                                                signed_rpms, keys):
    argv = commands(conf, workdir, receipt, signed_rpms, keys)[command]
    status, out, err = cli(capsys, '--json', *argv)
    assert status == (2 if command == 'monitor' else 0), err
    assert json.loads(out)['exit_status'] == status


@pytest.mark.parametrize('command', SUBCOMMANDS[:-1])
def test_debug_is_accepted_before_and_after_the_subcommand(command, conf, workdir, receipt,
                                                           signed_rpms, keys):
    argv = [str(a) for a in commands(conf, workdir, receipt, signed_rpms, keys)[command]]
    parser = koji_rekor.cli.build_parser()
    assert parser.parse_args([argv[0], '--debug'] + argv[1:]).debug is True
    assert parser.parse_args(['--debug'] + argv).debug is True
    assert parser.parse_args(argv).debug is False


def test_debug_after_the_subcommand_logs_debug_messages(conf, workdir, signed_rpms, keys):
    done = subprocess.run(
        [sys.executable, '-m', 'koji_rekor', 'upload', '--debug', signed_rpms[('rsa', 'rpmv3')],
         '--key', keys['rsa'].path, '--config', str(conf), '--topdir', str(workdir)],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert 'DEBUG: Starting new HTTP connection' in done.stderr


def could_not_run(tmp_path, conf, workdir, receipt, signed_rpms, keys):
    """For every subcommand, a way it cannot run, and the one line it says."""
    missing = tmp_path / 'missing'
    bad_conf = tmp_path / 'bad.conf'
    bad_conf.write_text('[rekor]\ntimeout = soon\n')
    return {
        'upload': (['upload', missing, '--key', keys['rsa'].path, '--config', conf,
                    '--topdir', workdir], 'RPM file missing: %s' % missing),
        'upload key': (['upload', signed_rpms[('rsa', 'header')], '--key', missing, '--config',
                        conf, '--topdir', workdir],
                       'cannot read public key %s: No such file or directory' % missing),
        'verify': (['verify', missing, '--config', conf],
                   'cannot read %s: No such file or directory' % missing),
        'retry': (['retry', '--config', bad_conf, '--topdir', workdir],
                  "%s: [rekor] timeout: 'soon' is not a valid number of seconds" % bad_conf),
        'monitor': (['monitor', '--config', conf, '--topdir', missing],
                    'no such topdir: %s' % missing),
        'backfill': (['backfill', '--config', conf, '--topdir', missing],
                     'no such topdir: %s' % missing),
        'outbox': (['outbox', '--topdir', missing], 'no such topdir: %s' % missing),
        'log-key': (['log-key', '--config', missing], '%s: no such configuration file' % missing),
        'doctor': (['doctor', '--config', conf, '--topdir', workdir, '--no-such-option'], None),
        'verify-rpm': (['verify-rpm', signed_rpms[('rsa', 'header')], '--config', conf],
                       'no trusted keys: pass --key FILE, --keys DIR or --rpmdb'),
    }


@pytest.mark.parametrize('case', ['upload', 'upload key', 'verify', 'retry', 'monitor',
                                  'backfill', 'outbox', 'doctor', 'verify-rpm'])
def test_every_subcommand_exits_2_with_one_line_when_it_cannot_run(
        case, capsys, tmp_path, conf, workdir, receipt, signed_rpms, keys, rekor):
    argv, cause = could_not_run(tmp_path, conf, workdir, receipt, signed_rpms, keys)[case]
    posts = rekor.count('POST', '/api/v1/log/entries')
    if cause is None:  # an argument error: argparse's usage and message
        with pytest.raises(SystemExit) as exit:
            cli(capsys, *argv)
        assert exit.value.code == 2
        return
    status, out, err = cli(capsys, *argv)
    assert (status, out, err) == (2, '', 'koji-rekor: %s\n' % cause)
    status, out, err = cli(capsys, *argv, '--json')
    assert status == 2 and json.loads(out) == {'error': cause, 'exit_status': 2}
    assert rekor.count('POST', '/api/v1/log/entries') == posts


def test_a_failed_verification_exits_1(capsys, conf, receipt, signed_rpms):
    status, out, err = cli(capsys, 'verify', receipt, '--rpm', signed_rpms[('ed25519', 'header')],
                           '--config', conf, '--json')
    assert status == 1
    assert json.loads(out)['error'].startswith('verification failed: %s has sha256 '
                                               % signed_rpms[('ed25519', 'header')])


# --- a failed request is one short cause --------------------------------------

def upload_to(capsys, url, conf, signed_rpms, keys, workdir):
    return cli(capsys, 'upload', signed_rpms[('rsa', 'header')], '--key', keys['rsa'].path,
               '--config', conf, '--topdir', workdir, '--url', url)


def test_a_log_that_refuses_connections(capsys, conf, signed_rpms, keys, workdir, rekor):
    url = rekor.url
    rekor.stop()
    status, out, err = upload_to(capsys, url, conf, signed_rpms, keys, workdir)
    assert status == 2
    assert_short_cause(err, 'koji-rekor: cannot reach Rekor at %s: connection refused' % url)


def assert_short_cause(err, start, *words):
    """One line, the cause in a few words (and how many attempts it took),
    none of the urllib3 wrapping around it."""
    assert err.count('\n') == 1 and err.startswith(start), err
    assert all(word in err for word in words), err
    assert len(err) < len(start) + 80, err
    for noise in ('Max retries', 'HTTPConnectionPool', 'HTTPSConnectionPool', 'Caused by',
                  'object at 0x'):
        assert noise not in err


def test_a_log_that_does_not_answer_in_time(capsys, conf, signed_rpms, keys, workdir, rekor):
    conf.write_text(conf.read_text().replace('timeout = 5', 'timeout = 0.5'))
    rekor.faults.update({'delay': 3, 'fail_paths': ['/api/v1/log']})
    status, out, err = upload_to(capsys, rekor.url, conf, signed_rpms, keys, workdir)
    assert status == 2
    assert_short_cause(err, 'koji-rekor: Rekor at %s timed out after 0.5' % rekor.url)


@pytest.fixture
def self_signed_log(tmp_path):
    """An HTTPS server on 127.0.0.1 whose certificate nobody trusts."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, '127.0.0.1')])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    pem = tmp_path / 'tls.pem'
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())
                    + cert.public_bytes(serialization.Encoding.PEM))
    server = http.server.HTTPServer(('127.0.0.1', 0), http.server.BaseHTTPRequestHandler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(pem))
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={'poll_interval': 0.05})
    thread.start()
    yield 'https://127.0.0.1:%d' % server.server_address[1]
    server.shutdown()
    server.server_close()
    thread.join(10)


def test_a_log_whose_certificate_does_not_verify(capsys, conf, signed_rpms, keys, workdir,
                                                 self_signed_log):
    status, out, err = upload_to(capsys, self_signed_log, conf, signed_rpms, keys, workdir)
    assert status == 2
    assert_short_cause(err, 'koji-rekor: cannot reach Rekor at %s: TLS: certificate verify '
                       'failed' % self_signed_log, 'self-signed certificate')


# --- KojiDir as the hub reads it ------------------------------------------------

@pytest.fixture
def hub_conf(tmp_path, monkeypatch):
    conf_dir = tmp_path / 'hub.conf.d'
    conf_dir.mkdir()
    conf = tmp_path / 'hub.conf'
    monkeypatch.setattr(koji_rekor.config, 'HUB_CONFIG_FILE', str(conf))
    monkeypatch.setattr(koji_rekor.config, 'HUB_CONFIG_DIR', str(conf_dir), raising=False)
    return conf, conf_dir


def test_kojidir_from_hub_conf_d(hub_conf):
    conf, conf_dir = hub_conf
    conf.write_text('[hub]\nDBName = koji\n')
    (conf_dir / '10-paths.conf').write_text('[hub]\nKojiDir = /srv/koji\n')
    assert koji_rekor.config.default_topdir() == '/srv/koji'


def test_hub_conf_wins_over_hub_conf_d(hub_conf):
    conf, conf_dir = hub_conf
    conf.write_text('[hub]\nKojiDir = /srv/main\n')
    (conf_dir / '10-paths.conf').write_text('[hub]\nKojiDir = /srv/dropin\n')
    assert koji_rekor.config.default_topdir() == '/srv/main'


def test_the_later_drop_in_wins_and_without_any_the_default(hub_conf):
    conf, conf_dir = hub_conf
    assert koji_rekor.config.default_topdir() == '/mnt/koji'
    (conf_dir / '10-a.conf').write_text('[hub]\nKojiDir = /srv/a\n')
    (conf_dir / '20-b.conf').write_text('[hub]\nKojiDir = /srv/b\n')
    assert koji_rekor.config.default_topdir() == '/srv/b'


def test_topdir_option_wins_over_the_hub_configuration(hub_conf, capsys, conf, workdir):
    conf_file, conf_dir = hub_conf
    (conf_dir / '10-paths.conf').write_text('[hub]\nKojiDir = /nonexistent/koji\n')
    status, out, err = cli(capsys, 'doctor', '--config', conf, '--json')
    assert json.loads(out)['topdir'] == '/nonexistent/koji'
    status, out, err = cli(capsys, 'retry', '--config', conf, '--topdir', workdir, '--json')
    assert status == 0 and json.loads(out)['summary'] == 'nothing to do; 0 left in the outbox'
