"""Strict configuration, as Koji's own plugins: the file must exist and
parse; unknown sections and options, a missing header, duplicates and
absurd numbers are one line naming the file and the option (exit 2 for a
command). In the hub the signature is queued first; a configuration error
then fails the import unless the file parses and sets enforce to false."""

import json
import os

import koji
import pytest

import koji_rekor.cli
import koji_rekor.config

from tests.support.common import HUB_USER

ENTRIES = '/api/v1/log/entries'

BAD = [
    ('[uplaod]\nenforce = true\n', 'unknown section [uplaod]'),
    ('[upload]\nenforse = true\n', 'unknown option [upload] enforse'),
    ('enforce = true\n', 'line 1: no [section] header before it'),
    ('[upload]\nenforce = true\nenforce = false\n', 'line 3: [upload] enforce appears twice'),
    ('[upload]\nenforce = true\n[upload]\nqueue_only = false\n',
     'line 3: section [upload] appears twice'),
    ('[rekor]\ntimeout = nan\n', "[rekor] timeout: 'nan' is not a valid number of seconds"),
    ('[rekor]\ntimeout = inf\n', "[rekor] timeout: 'inf' is not a valid number of seconds"),
    ('[rekor]\ntimeout = 1e9\n', "[rekor] timeout: '1e9' is more than the most that makes sense"),
    ('[rekor]\nbackoff = -inf\n', "[rekor] backoff: '-inf' is not a valid number of seconds"),
    ('[rekor]\nretries = 5000\n', "[rekor] retries: '5000' is more than the most that makes sense"),
    ('[upload]\npoll_interval = NaN\n', "[upload] poll_interval: 'NaN' is not a valid"),
    ('[rekor]\nurl = https://rekor.example.test:99999\n', '[rekor] url'),
    ('[rekor]\nlog_public_key =\n', '[rekor] log_public_key: empty'),
    ('[upload]\nhub_user =\n', '[upload] hub_user: empty'),
    (b'[rekor]\nurl = \xff\n', 'not UTF-8 text'),
]


@pytest.mark.parametrize('text, cause', BAD, ids=[b[1][:40] for b in BAD])
def test_a_bad_file_is_one_line_naming_file_and_option(tmp_path, text, cause):
    path = tmp_path / 'rekor_log.conf'
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(koji.ConfigurationError) as info:
        koji_rekor.config.load_config(str(path))
    message = str(info.value)
    assert message.startswith('%s: ' % path)
    assert cause in message
    assert '\n' not in message


@pytest.mark.parametrize('text, cause', BAD[:6], ids=[b[1][:40] for b in BAD[:6]])
def test_commands_exit_2_on_a_bad_file(tmp_path, capsys, text, cause):
    path = tmp_path / 'rekor_log.conf'
    path.write_text(text)
    for command in ('retry', 'backfill', 'monitor'):
        status = koji_rekor.cli.main([command, '--config', str(path), '--topdir', str(tmp_path)])
        out, err = capsys.readouterr()
        assert (status, out) == (2, '')
        assert err.startswith('koji-rekor: %s: ' % path) and cause in err
        assert err.count('\n') == 1


def test_commands_need_their_file(tmp_path, capsys):
    for command in ('retry', 'backfill', 'monitor'):
        status = koji_rekor.cli.main([command, '--config', str(tmp_path / 'none.conf'),
                                  '--topdir', str(tmp_path)])
        out, err = capsys.readouterr()
        assert (status, err) == (2, 'koji-rekor: %s: no such configuration file\n'
                                 % (tmp_path / 'none.conf'))


def test_the_hubs_file_must_exist(hub, rekor, koji_import, signed_rpms, topdir):
    hub.module.CONFIG_FILE = str(topdir / 'missing.conf')
    imported = koji_import(signed_rpms[('rsa', 'header')])
    with pytest.raises(koji.CallbackError) as info:
        hub.sign(imported)
    assert 'missing.conf: no such configuration file' in str(info.value)
    assert rekor.count('POST', ENTRIES) == 0
    assert hub.outbox() == []  # the import fails, Koji rolls back: nothing waits


def test_a_typo_in_enforce_fails_the_import(hub, rekor, koji_import, signed_rpms, key_dir,
                                            log_key_file, plugin_log):
    """[uplaod] enforce = true: the admin wanted enforce; ignoring it would
    let an unlogged signature through."""
    hub.configure('''
        [rekor]
        url = %s
        allow_insecure_http = true
        log_public_key = %s
        [signing]
        public_key_dir = %s
        [uplaod]
        enforce = true
        ''' % (rekor.url, log_key_file, key_dir))
    with pytest.raises(koji.CallbackError) as info:
        hub.sign(koji_import(signed_rpms[('rsa', 'header')]))
    assert 'unknown section [uplaod]' in str(info.value)
    # Koji puts the callback's traceback in the fault: one cause, not the
    # ConfigurationError and then "During handling ..." the CallbackError.
    assert str(info.value).count('Traceback') == 1
    assert 'During handling of the above exception' not in str(info.value)
    assert rekor.count('POST', ENTRIES) == 0
    errors = [r.getMessage() for r in plugin_log.records if r.levelname == 'ERROR']
    assert len(errors) == 1 and errors[0].startswith('rekor_log: failed hello-1.0-1.noarch')


# A bad value and a misspelt name are both configuration errors: one rule.
BAD_LINES = [('timeout = nan', "[rekor] timeout: 'nan'"),
             ('timout = 30', 'unknown option [rekor] timout')]


@pytest.mark.parametrize('bad, cause', BAD_LINES, ids=['bad value', 'unknown name'])
def test_with_enforce_explicitly_off_a_bad_file_leaves_the_signature_queued(
        hub, rekor, koji_import, signed_rpms, key_dir, log_key_file, topdir, plugin_log, capsys,
        bad, cause):
    text = '''
        [rekor]
        url = %s
        allow_insecure_http = true
        log_public_key = %s
        BAD
        [signing]
        public_key_dir = %s
        [upload]
        enforce = false
        hub_user = %s
        ''' % (rekor.url, log_key_file, key_dir, HUB_USER)
    hub.configure(text.replace('BAD', bad))
    imported = koji_import(signed_rpms[('rsa', 'header')])
    hub.sign(imported)  # the import goes on
    assert rekor.count('POST', ENTRIES) == 0
    assert hub.outbox() == ['hello-1.0-1.noarch.%s.json' % imported.sigkey]
    assert cause in plugin_log.text
    assert 'rekor_log: 1 signature waits in the outbox: configuration: ' in plugin_log.text
    # Once the file is fixed, the worker logs it: nothing was lost.
    hub.configure(text.replace('BAD', 'timeout = 5'))
    status = koji_rekor.cli.main(['retry', '--config', str(hub.conf_path), '--topdir', str(topdir)])
    assert status == 0, capsys.readouterr()
    assert hub.outbox() == []
    assert rekor.count('POST', ENTRIES) == 1


def test_the_original_plugins_http_file_keeps_working_with_a_warning(
        hub, rekor, topdir, koji_import, signed_rpms, keys, plugin_log):
    hub.configure('''
        [config]
        rekor_server_url = %s
        public_key_path = %s
        enforce_rekor_upload = True
        record_log_info = True
        ''' % (rekor.url, keys['rsa'].path))
    imported = koji_import(signed_rpms[('rsa', 'header')])
    hub.sign(imported)
    assert rekor.count('POST', ENTRIES) == 1
    warnings = [r.getMessage() for r in plugin_log.records if r.levelname == 'WARNING']
    assert any('is plain http, as the original plugin allowed' in w for w in warnings)
    # It cannot name a log key: the key is trusted on first use, as before.
    assert any('trusting the log key of %s on first use' % rekor.url in w for w in warnings)
    receipts = list((topdir / 'rekor-logs' / 'hello').rglob('*.json'))
    assert len(receipts) == 1
    assert json.loads(receipts[0].read_text())['rekor_url'] == rekor.url


def test_a_new_style_file_with_plain_http_still_needs_allow_insecure_http(tmp_path,
                                                                          log_key_file):
    path = tmp_path / 'rekor_log.conf'
    path.write_text('[config]\nrekor_server_url = http://rekor.example.test\n'
                    '[rekor]\nlog_public_key = %s\n' % log_key_file)
    with pytest.raises(koji.ConfigurationError) as info:
        koji_rekor.config.load_config(str(path))
    assert str(info.value) == ('%s: [rekor] url: http://rekor.example.test is plain http; set '
                               'allow_insecure_http = true to allow it' % path)


def test_the_shipped_file_reads_strictly(tmp_path):
    from tests.support.common import ROOT
    with open(os.path.join(ROOT, 'rekor_log.conf')) as fo:
        text = fo.read()
    path = tmp_path / 'rekor_log.conf'
    path.write_text(text.replace('/etc/koji-hub/plugins/rekor-keys', str(tmp_path)))
    settings = koji_rekor.config.load_config(str(path))
    assert settings.url == 'https://rekor.sigstore.dev'
    assert (settings.trust_on_first_use, settings.hub_user) == (False, 'apache')
