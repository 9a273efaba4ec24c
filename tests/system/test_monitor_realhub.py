"""Koji is the truth, with a real Koji hub: the plugin loaded by the hub logs
`koji import-sig`, and koji-rekor monitor asks that hub (anonymous getRPM,
queryRPMSigs, getBuild) and hashes its signed copy from the topdir. One hub
for the module (tests/support/realhub.py); skipped without ../shared/koji-hub."""

import json
import os

import pytest

import koji_rekor.cli
import koji_rekor.config
import koji_rekor.delivery
import koji_rekor.rpmsig
from tests.support import realhub

from tests.support.common import HUB_USER
from tests.support.rekor_server import RekorServer


@pytest.fixture(scope='module')
def rekor_for_hub():
    with RekorServer() as server:
        yield server


@pytest.fixture(scope='module')
def hub(rekor_for_hub):
    def write_conf(workdir, rpms):
        log_key = os.path.join(workdir, 'rekor.pub')
        with open(log_key, 'wb') as fo:
            fo.write(rekor_for_hub.log.public_key_pem)
        conf = os.path.join(workdir, 'rekor_log.conf')
        with open(conf, 'w') as fo:
            fo.write('[rekor]\nurl = %s\nallow_insecure_http = true\nlog_public_key = %s\n'
                     'timeout = 10\nretries = 1\nbackoff = 0.1\n[signing]\npublic_key_dir = %s\n'
                     % (rekor_for_hub.url, log_key, os.path.join(workdir, 'keys')))
        return conf
    yield from realhub.real_hub(write_conf)


def run_monitor(hub, capsys, *args):
    conf = os.path.join(hub.workdir, 'monitor.conf')
    with open(os.path.join(hub.workdir, 'rekor_log.conf')) as fo:
        text = fo.read()
    with open(conf, 'w') as fo:
        fo.write(text + '[koji]\nserver = %s\n[upload]\nhub_user = %s\n[monitor]\nstate_dir = %s\n'
                 % (hub.url, HUB_USER, os.path.join(hub.workdir, 'monitor-state')))
    status = koji_rekor.cli.main(['monitor', '--json', '--config', conf, '--topdir', hub.topdir]
                             + list(args))
    out, err = capsys.readouterr()
    report = json.loads(out)
    assert report['exit_status'] == status, err
    return status, report


def test_the_monitor_asks_the_real_hub(hub, rekor_for_hub, capsys):
    assert run_monitor(hub, capsys)[0] == 0   # the log is empty; reading starts at 0
    hub.koji('import', hub.rpms['SRPM'], hub.rpms['RPM'])
    hub.koji('import-sig', hub.rpms['SIGNED_RPM'])
    assert rekor_for_hub.log.tree_size == 1, hub.logs()

    # Koji signed it, the plugin logged it: accounted for by asking the hub.
    status, report = run_monitor(hub, capsys)
    assert status == 0, report
    assert report['scan']['counts'] == {'read': 1, 'ours': 1, 'accounted': 1, 'findings': 0,
                                        'unchecked': 0}

    # The same NVRA and key, other bytes, logged by hand: Koji did not sign that.
    settings = koji_rekor.config.load_config(os.path.join(hub.workdir, 'monitor.conf'))
    other = koji_rekor.delivery.upload_signed_rpm(
        settings, koji_rekor.rpmsig.signed_rpm_from_file(hub.rpms['SIGNED_RPM_V3']),
        os.path.join(hub.workdir, 'keys', '%s.asc' % hub.rpms['SIGKEY']))
    status, report = run_monitor(hub, capsys)
    assert status == 1
    assert [(f['kind'], f['id']) for f in report['findings']] == [('other bytes',
                                                                  other.verified.uuid)]

    # An admin deletes the signature in Koji (no callback fires): read again,
    # the entry the plugin logged is reported as such, not as theft, while
    # the other one now has no signature in Koji at all.
    # (as JSON: koji call turns an all-digit sigkey into a number otherwise)
    hub.koji('call', '--json-input', 'deleteRPMSig', '"hello-1.0-1.noarch"',
             '--kwargs', json.dumps({'sigkey': hub.rpms['SIGKEY']}))
    status, report = run_monitor(hub, capsys, '--start-index', 0)
    assert status == 1
    receipt = os.path.join(hub.topdir, 'rekor-logs', 'hello', '1.0', '1', 'noarch',
                           'hello-1.0-1.noarch.%s.json' % hub.rpms['SIGKEY'])
    with open(receipt) as fo:
        (logged,) = json.load(fo)['log_entry']
    assert sorted((f['kind'], f['id']) for f in report['findings']) == [
        ('not signed in Koji', other.verified.uuid),
        ('signature deleted in Koji', logged[-64:])]
