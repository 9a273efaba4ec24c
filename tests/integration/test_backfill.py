"""koji-rekor backfill: a Koji topdir with signatures logged by the plugin,
signatures imported before it (on two volumes, one of them a subpackage's),
and signatures by a key we do not have; each unlogged one logged exactly
once, through the local Rekor-compatible log on 127.0.0.1."""

import hashlib
import json
import os
import shutil
import subprocess
import sys

import koji
import pytest

import koji_rekor.backfill
import koji_rekor.cli
import koji_rekor.logkey
import koji_rekor.receipts
import koji_rekor.rpmsig
import koji_rekor.state
import koji_rekor.verify

from tests.support import rpmfactory
from tests.support.common import ROOT

ENTRIES = '/api/v1/log/entries'
PROCESS_TIMEOUT = 300


@pytest.fixture(scope='module')
def packages(tmp_path_factory, keys):
    """Unsigned RPMs and their signed copies: {label: (unsigned, signed, key)}."""
    out = tmp_path_factory.mktemp('backfill-rpms')
    made = {}
    for label, name, key in (('alpha', 'alpha', 'rsa'), ('beta', 'beta', 'ed25519'),
                             ('gamma', 'gamma', 'other'), ('delta', 'delta', 'rsa'),
                             ('tools', 'suite-tools', 'ed25519')):
        unsigned = rpmfactory.build_rpm(str(out / label), name=name)
        signed = rpmfactory.sign_rpm(unsigned, str(out / ('%s-signed.rpm' % label)), keys[key])
        made[label] = (unsigned, signed, keys[key])
    return made


class Layout:
    """What a test topdir holds: each signature's rpm dict, sigkey and
    signed RPM, by label."""

    def __init__(self, topdir):
        self.topdir = topdir
        self.signatures = {}

    def add(self, label, rpm, sigkey, signed, sighdr_path):
        self.signatures[label] = dict(rpm=rpm, sigkey=sigkey, signed=signed, sighdr=sighdr_path)

    def receipt(self, label):
        sig = self.signatures[label]
        return koji_rekor.receipts.receipt_path(str(self.topdir), sig['rpm'], sig['sigkey'])

    def nvra(self, label):
        return koji_rekor.rpmsig.nvra_of(self.signatures[label]['rpm'])


def import_into_build(topdir, build, unsigned, signed):
    """A subpackage's signature, whose build is named otherwise than the
    RPM, laid out as add_rpm_sig does."""
    pathinfo = koji.PathInfo(topdir=str(topdir))
    rpm = koji.get_header_fields(koji.get_rpm_header(unsigned),
                                 ['name', 'version', 'release', 'arch'])
    builddir = pathinfo.build(build)
    os.makedirs(os.path.join(builddir, rpm['arch']))
    shutil.copyfile(unsigned, os.path.join(builddir, pathinfo.rpm(rpm)))
    sighdr = koji.rip_rpm_sighdr(signed)
    sigkey = koji.get_sighdr_key(sighdr)
    path = os.path.join(builddir, pathinfo.sighdr(rpm, sigkey))
    os.makedirs(os.path.dirname(path))
    with open(path, 'wb') as fo:
        fo.write(sighdr)
    return rpm, sigkey, path


@pytest.fixture
def layout(configured_hub, topdir, koji_import, signed_rpms, packages):
    """hello logged by the plugin (receipt); alpha, beta, delta (on volume
    archive, linked from the default volume as Koji does) and suite-tools
    (a subpackage of build suite) imported before the plugin; gamma signed
    by a key we have no public key for."""
    made = Layout(topdir)
    hello = koji_import(signed_rpms[('rsa', 'header')])
    configured_hub.sign(hello)
    made.add('hello', hello.rpm, hello.sigkey, signed_rpms[('rsa', 'header')], hello.sighdr_path)
    for number, label in enumerate(('alpha', 'beta', 'gamma', 'delta'), 2):
        unsigned, signed, key = packages[label]
        volume = 'archive' if label == 'delta' else 'DEFAULT'
        imported = rpmfactory.koji_import_signature(str(topdir), unsigned, signed,
                                                    build_id=number, rpm_id=number,
                                                    volume_name=volume)
        made.add(label, imported.rpm, imported.sigkey, signed, imported.sighdr_path)
    # Koji links a build on another volume from the default volume.
    link = topdir / 'packages' / 'delta' / '1.0' / '1'
    link.parent.mkdir(parents=True)
    link.symlink_to('../../../vol/archive/packages/delta/1.0/1')
    unsigned, signed, key = packages['tools']
    build = {'name': 'suite', 'version': '1.0', 'release': '1', 'volume_name': 'DEFAULT'}
    rpm, sigkey, path = import_into_build(topdir, build, unsigned, signed)
    made.add('tools', rpm, sigkey, signed, path)
    return made


UNLOGGED = ('alpha', 'beta', 'delta', 'tools')


class Backfill:
    def __init__(self, conf, topdir, capsys):
        self.conf, self.topdir, self.capsys = conf, topdir, capsys

    def run(self, *args):
        status = koji_rekor.cli.main(['backfill', '--config', str(self.conf),
                                 '--topdir', str(self.topdir)] + [str(a) for a in args])
        out, err = self.capsys.readouterr()
        assert 'Traceback' not in err
        return status, out, err


@pytest.fixture
def backfill(configured_hub, topdir, capsys):
    return Backfill(configured_hub.conf_path, topdir, capsys)


def sha256_file(path):
    with open(path, 'rb') as fo:
        return hashlib.sha256(fo.read()).hexdigest()


def logged_hashes(rekor):
    return sorted(json.loads(e.body)['spec']['package']['hash']['value']
                  for e in rekor.log.submitted)


def test_each_unlogged_signature_is_logged_once_and_unknown_keys_are_listed(
        backfill, layout, rekor, keys, plugin_log):
    posts_before = rekor.count('POST', ENTRIES)

    status, out, err = backfill.run()

    assert status == 0
    assert rekor.count('POST', ENTRIES) - posts_before == len(UNLOGGED)
    assert logged_hashes(rekor) == sorted(sha256_file(layout.signatures[label]['signed'])
                                          for label in ('hello',) + UNLOGGED)
    for label in UNLOGGED:
        receipt = json.loads(open(layout.receipt(label)).read())
        assert receipt['sha256'] == sha256_file(layout.signatures[label]['signed'])
        assert receipt['nvra'] == layout.nvra(label)
        assert 'rekor_log: logged %s sigkey %s' % (
            layout.nvra(label), layout.signatures[label]['sigkey']) in plugin_log.text
    assert not os.path.exists(layout.receipt('gamma'))
    assert 'unknown key %s: gamma-1.0-1.noarch (%s): no public key for sigkey %s' % (
        keys['other'].sigkey, layout.signatures['gamma']['sighdr'], keys['other'].sigkey) in out
    assert out.splitlines()[-1] == ('logged 4, already in the log 0, failed 0, unknown key 1, '
                                    'skipped 1 (receipt exists)')
    assert 'backfill: 4/4 signatures (logged 4, already in the log 0, failed 0)\n' in err


def test_a_rerun_posts_nothing(backfill, layout, rekor):
    assert backfill.run()[0] == 0
    posts = rekor.count('POST', ENTRIES)

    status, out, err = backfill.run()

    assert status == 0
    assert rekor.count('POST', ENTRIES) == posts
    assert out.splitlines()[-1] == ('logged 0, already in the log 0, failed 0, unknown key 1, '
                                    'skipped 5 (receipt exists)')


def test_the_dicts_from_the_path_are_those_koji_pathinfo_expects(layout, topdir):
    stored = list(koji_rekor.backfill.stored_signatures(str(topdir)))
    assert [(path, reason) for path, signature, reason in stored if signature is None] == []
    found = [signature for path, signature, reason in stored]
    by_nvra = {s.nvra: s for s in found}
    assert sorted(by_nvra) == sorted(layout.nvra(label) for label in layout.signatures)
    for label, sig in layout.signatures.items():
        stored = by_nvra[layout.nvra(label)]
        assert stored.path == sig['sighdr'] and stored.sigkey == sig['sigkey']
        for field in ('name', 'version', 'release', 'arch'):
            assert stored.rpminfo[field] == sig['rpm'][field]
        # The files the plugin reads are where Koji put them.
        builddir = koji.pathinfo.build(stored.build)
        assert os.path.isfile(os.path.join(builddir, koji.pathinfo.rpm(stored.rpminfo)))
    assert by_nvra['delta-1.0-1.noarch'].build['volume_name'] == 'archive'
    assert by_nvra['suite-tools-1.0-1.noarch'].build['name'] == 'suite'
    assert by_nvra['alpha-1.0-1.noarch'].build['volume_name'] == 'DEFAULT'


def test_dry_run_sends_nothing_and_lists_what_it_would_log(backfill, layout, rekor):
    rekor.requests.clear()

    status, out, err = backfill.run('--dry-run')

    assert status == 0
    assert rekor.requests == []
    for label in UNLOGGED:
        assert 'would log %s sigkey %s (%s)' % (
            layout.nvra(label), layout.signatures[label]['sigkey'],
            layout.signatures[label]['sighdr']) in out
        assert not os.path.exists(layout.receipt(label))
    assert out.splitlines()[-1] == 'would log 4, unknown key 1, skipped 1 (receipt exists)'


@pytest.mark.quiet_log  # the newest head is the log's own size
def test_three_jobs_log_each_signature_once(backfill, layout, rekor):
    posts_before = rekor.count('POST', ENTRIES)

    status, out, err = backfill.run('--jobs', 3)

    assert status == 0
    assert rekor.count('POST', ENTRIES) - posts_before == len(UNLOGGED)
    assert len(rekor.log.submitted) == 1 + len(UNLOGGED)
    log_key = koji_rekor.logkey.load_log_key(rekor.log.public_key_pem)
    for label in UNLOGGED:
        receipt = json.loads(open(layout.receipt(label)).read())
        (entry_id, entry), = receipt['log_entry'].items()
        koji_rekor.verify.verify_log_entry(entry_id, entry, log_key, '127.0.0.1')
    # The threads kept the newest tree head, not whichever wrote last.
    kept = koji_rekor.state.saved_tree_head(str(layout.topdir / 'rekor-logs' / '@state'), log_key,
                                     rekor.log.tree_id)
    assert kept == (rekor.log.tree_size, rekor.log.root_hash())


@pytest.mark.parametrize('jobs', ['0', '-1', 'two'])
def test_jobs_must_be_a_positive_number(backfill, jobs, capsys):
    with pytest.raises(SystemExit) as info:
        backfill.run('--jobs', jobs)
    assert info.value.code == 2
    assert 'is not a positive whole number' in capsys.readouterr().err


def test_a_signature_logged_before_its_receipt_was_written_counts_as_already_logged(
        backfill, layout, rekor):
    os.unlink(layout.receipt('hello'))

    status, out, err = backfill.run()

    assert status == 0
    assert out.splitlines()[-1] == ('logged 4, already in the log 1, failed 0, unknown key 1, '
                                    'skipped 0 (receipt exists)')
    assert os.path.exists(layout.receipt('hello'))


def test_failures_exit_1_and_a_rerun_logs_them(backfill, layout, rekor):
    rekor.faults.fail_status, rekor.faults.fail_count = 400, 2

    status, out, err = backfill.run('--jobs', 1)

    assert status == 1
    failed = [line for line in out.splitlines() if line.startswith('failed ')]
    assert len(failed) == 2 and all('Rekor answered 400' in line for line in failed)
    assert out.splitlines()[-1] == ('logged 2, already in the log 0, failed 2, unknown key 1, '
                                    'skipped 1 (receipt exists)')

    status, out, err = backfill.run()

    assert status == 0
    assert out.splitlines()[-1] == ('logged 2, already in the log 0, failed 0, unknown key 1, '
                                    'skipped 3 (receipt exists)')


def test_a_signature_queued_in_the_outbox_is_left_to_the_worker(backfill, layout, rekor, topdir):
    outbox = topdir / 'rekor-logs' / '@outbox'
    outbox.mkdir(parents=True, exist_ok=True)  # the hub's signature made it
    (outbox / ('%s.%s.json' % (layout.nvra('alpha'), layout.signatures['alpha']['sigkey']))
     ).write_text('{}')

    status, out, err = backfill.run()

    assert status == 0
    assert not os.path.exists(layout.receipt('alpha'))
    assert out.splitlines()[-1] == ('logged 3, already in the log 0, failed 0, unknown key 1, '
                                    'skipped 1 (receipt exists), queued 1 (in the outbox, for '
                                    'the worker)')


def test_a_file_not_where_koji_keeps_it_is_ignored(backfill, layout, topdir):
    alpha = layout.signatures['alpha']
    stray = os.path.join(os.path.dirname(os.path.dirname(alpha['sighdr'])), 'x86_64',
                         os.path.basename(alpha['sighdr']))
    os.makedirs(os.path.dirname(stray))
    shutil.copyfile(alpha['sighdr'], stray)

    status, out, err = backfill.run('--dry-run')

    assert status == 0
    assert 'ignored %s: not where Koji keeps it' % stray in out
    assert out.splitlines()[-1].endswith(', ignored 1 (not laid out as Koji does)')


def test_backfill_as_a_command(layout, configured_hub, topdir, rekor):
    done = subprocess.run(
        [sys.executable, '-m', 'koji_rekor', 'backfill', '--config', str(configured_hub.conf_path),
         '--topdir', str(topdir), '--jobs', '2'], cwd=ROOT, capture_output=True, text=True,
        timeout=PROCESS_TIMEOUT, stdin=subprocess.DEVNULL)

    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == ('logged 4, already in the log 0, failed 0, '
                                            'unknown key 1, skipped 1 (receipt exists)')
    for label in UNLOGGED:
        assert 'INFO: rekor_log: logged %s sigkey' % layout.nvra(label) in done.stderr
    assert 'backfill: 4/4 signatures' in done.stderr
    assert 'Traceback' not in done.stderr
