"""The worker catching up: `retry --jobs N` (a client per thread, a
consistency proof once per tree head and pass), `koji-rekor outbox` (seeing
and requeueing records), and `koji-rekor verify` of many receipts at once.

The signatures, the hub, the local log and the worker come from
test_outbox's world.
"""

import json
import shutil
import subprocess
import sys

import pytest

import koji_rekor.checkpoint
import koji_rekor.config
import koji_rekor.logkey
import koji_rekor.merkle
import koji_rekor.rekor.client_v1
import koji_rekor.state
import koji_rekor.verify
import koji_rekor.worker

from tests.support.common import ROOT
from tests.support.rekor_server import RekorLog
from tests.integration.test_outbox import koji_hub, packages, sigs, world  # noqa: F401 - fixtures

PROOF = '/api/v1/log/proof'
PROCESS_TIMEOUT = 60


def cli(*args):
    return subprocess.run([sys.executable, '-m', 'koji_rekor'] + [str(a) for a in args],
                          cwd=ROOT, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=PROCESS_TIMEOUT)


def receipt_heads(world, imports):
    """The distinct (tree size, root hash) the receipts were verified with."""
    heads = set()
    for imported in imports:
        (entry,) = world.receipt(imported)['log_entry'].values()
        proof = entry['verification']['inclusionProof']
        heads.add((proof['treeSize'], proof['rootHash']))
    return heads


def saved_head(world):
    """The tree head kept under @state, as (size, root hash)."""
    checkpoints = world.topdir / 'rekor-logs' / '@state' / 'checkpoints'
    (path,) = checkpoints.rglob('*.json')
    saved = json.loads(path.read_text())
    return saved['size'], saved['root_hash']


# ---------------------------------------------------------------------------
# retry --jobs
# ---------------------------------------------------------------------------

def test_a_parallel_drain_logs_each_record_once_with_verified_receipts(world, sigs):
    world.configure(queue_only=True)
    world.sign(*sigs)
    assert len(world.outbox()) == len(sigs)

    done = world.retry('--jobs', '4')

    assert (done.returncode, done.summary) == (0, 'logged 8; 0 left in the outbox'), done.stderr
    assert set(world.account(*sigs).values()) == {'receipt'}
    assert world.posts() == world.posts(201) == len(sigs)
    receipts = world.topdir / 'rekor-logs'
    checked = cli('verify', receipts, '--log-key', world.log_key_file)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.splitlines()[-1] == 'verified 8, failed 0, unreadable 0'
    # The tree head kept for the next pass is the newest one any receipt has.
    assert saved_head(world) == max(receipt_heads(world, sigs))


@pytest.mark.quiet_log  # on a busy log (the real one) each 201 is at a head of its own
def test_uploads_that_follow_each_other_need_no_consistency_proof(world, sigs):
    """Each entry's inclusion proof also proves the tree of the entries
    before it: the newest head proves the next one, as long as nobody else
    wrote to the log in between."""
    world.configure(queue_only=True)
    world.sign(*sigs[:4])
    assert world.retry().summary == 'logged 4; 0 left in the outbox'
    world.sign(*sigs[4:])
    assert world.retry().summary == 'logged 4; 0 left in the outbox'
    assert world.rekor.count('GET', PROOF) == 0
    assert saved_head(world) == max(receipt_heads(world, sigs))
    assert set(world.account(*sigs).values()) == {'receipt'}


def test_a_pass_asks_the_consistency_proof_at_most_once_per_tree_head(world, sigs):
    world.configure(queue_only=True)
    world.sign(*sigs[:4])
    done = world.retry('--jobs', '3')
    assert done.summary == 'logged 4; 0 left in the outbox'
    heads = receipt_heads(world, sigs[:4])
    # The first head of the pass has nothing to be proved against.
    assert world.rekor.count('GET', PROOF) <= len(heads) - 1

    world.rekor.requests.clear()
    world.sign(*sigs[4:])
    done = world.retry('--jobs', '3')
    assert done.summary == 'logged 4; 0 left in the outbox'
    assert world.rekor.count('GET', PROOF) <= len(receipt_heads(world, sigs[4:]))
    assert saved_head(world) == max(receipt_heads(world, sigs))

    world.rekor.requests.clear()
    assert world.retry('--jobs', '3').summary == 'nothing to do; 0 left in the outbox'
    assert world.rekor.requests == []


def test_an_entry_proves_the_trees_of_the_entries_before_it():
    log = RekorLog()
    for number in range(33):
        log.add_entry(koji_rekor.checkpoint.canonical_json({'n': number}))
        size = log.tree_size
        for index in range(size):
            proof = log.inclusion_proof(index, size)
            leaf = koji_rekor.merkle.hash_leaf(log.entries[index].body)
            left = koji_rekor.merkle.left_subtrees(index, size, proof)
            expected = {index + 1: log.root_hash(index + 1)}
            if index:
                expected[index] = log.root_hash(index)
            assert koji_rekor.merkle.prefix_roots(index, leaf, left) == expected, (index, size)


def verified_heads(world, sizes):
    """Entry 0 of the log, verified as Rekor shows it when the log has each
    of these many entries: tree heads of one tree, in this order."""
    key = koji_rekor.logkey.load_log_key(world.rekor.log.public_key_pem)
    shown = {}
    for size in sorted(set(sizes)):
        while world.rekor.log.tree_size < size:
            world.rekor.log.add_entry(koji_rekor.checkpoint.canonical_json({
                'n': world.rekor.log.tree_size}))
        entry_id, document = world.rekor.log.render_entry(world.rekor.log.entries[0])
        shown[size] = (koji_rekor.verify.verify_log_entry(entry_id, document[entry_id], key,
                                                  '127.0.0.1'), document[entry_id])
    return key, [shown[size] for size in sizes]


def test_a_tree_head_seen_before_in_the_pass_is_not_proved_again(world, tmp_path):
    """Threads finish out of order: the heads of sizes 5, 2, 8, 2, 5 come
    back. Sizes 2 and 8 are each proved once; a check per signature against
    the head kept on disk would ask four times."""
    settings = koji_rekor.config.load_config(str(world.hub.conf_path))
    key, shown = verified_heads(world, [5, 2, 8, 2, 5])
    heads = koji_rekor.worker.TreeHeads(str(tmp_path / 'state'))
    client = koji_rekor.rekor.client_v1.RekorClient(settings)
    try:
        for verified, entry in shown:
            heads.check(client, key, verified, entry)
        assert world.rekor.count('GET', PROOF) == 2  # 2 to 5, then 5 to 8
        assert heads.save(client) == 0
    finally:
        client.close()
    saved = koji_rekor.state.saved_tree_head(str(tmp_path / 'state'), key, shown[2][0].tree_id)
    assert saved == (8, shown[2][0].root_hash)


def test_a_tree_head_off_the_history_fails_its_record_and_keeps_no_receipt(world, sigs):
    world.configure(queue_only=True)
    world.sign(*sigs[:2])
    assert world.retry('--jobs', '2').returncode == 0
    world.rekor.log.rewrite_history()  # the log now shows another history
    world.sign(sigs[2])

    done = world.retry('--jobs', '2')

    assert done.returncode == 1 and done.summary.startswith('failed 1; 1 left')
    assert 'split view' in world.record(sigs[2])['last_error']
    assert world.receipt(sigs[2]) is None


# ---------------------------------------------------------------------------
# koji-rekor outbox
# ---------------------------------------------------------------------------

def outbox(world, *args):
    return cli('outbox', '--topdir', world.topdir, '--config', world.hub.conf_path, *args)


def test_the_outbox_lists_pending_rejected_and_rolled_back_records(world, sigs, koji_hub):
    world.configure(koji_server=koji_hub.url)
    pending, rejected, rolled_back = sigs[0], sigs[2], sigs[4]
    world.rekor.faults.max_body_bytes = 1000
    world.sign(rejected)
    world.rekor.reset_faults()
    code, _, _ = world.hub_process([rolled_back], no_commit=True).wait()
    assert code == 0
    world.age(rolled_back)
    assert 'rolled back 1' in world.retry().summary
    world.rekor.faults.fail_status, world.rekor.faults.fail_count = 503, 10
    world.sign(pending)
    assert world.account(pending, rejected, rolled_back) == {
        pending.name: 'queued', rejected.name: 'rejected', rolled_back.name: 'rolled-back'}

    listed = outbox(world, '--json')

    assert listed.returncode == 0, listed.stderr
    report = json.loads(listed.stdout)
    assert report['counts'] == {'pending': 1, 'uncommitted': 0, 'rejected': 1,
                                'rolled-back': 1}
    by_name = {item['name']: item for item in report['records']}
    assert by_name[pending.name]['state'] == 'pending'
    assert by_name[pending.name]['attempts'] == 1
    assert 'Rekor answered 503' in by_name[pending.name]['last_error']
    assert by_name[rejected.name]['state'] == 'rejected'
    assert 'too large' in by_name[rejected.name]['reason']
    assert by_name[rolled_back.name]['state'] == 'rolled-back'
    assert 'rolled back' in by_name[rolled_back.name]['reason']
    assert 0 <= by_name[pending.name]['age'] < 600

    text = outbox(world)
    assert text.returncode == 0
    lines = text.stdout.splitlines()
    assert lines[-1] == 'pending 1, uncommitted 0, rejected 1, rolled-back 1'
    line = next(line for line in lines if pending.name in line)
    assert line.startswith('pending') and '1 attempt' in line and 'Rekor answered 503' in line


def test_a_rejected_record_is_requeued_once_fixed_and_then_logged(world, sigs):
    imported = sigs[0]
    world.rekor.faults.max_body_bytes = 1000
    world.sign(imported)
    assert world.account(imported) == {imported.name: 'rejected'}
    world.rekor.reset_faults()  # the admin raised the log's limit

    requeued = outbox(world, '--requeue', 'all')

    assert requeued.returncode == 0, requeued.stderr
    assert 'requeued %s' % imported.name in requeued.stdout
    assert world.account(imported) == {imported.name: 'queued'}
    record = world.record(imported)
    assert 'set_aside' not in record and record['next_attempt'] == 0
    done = world.retry()  # due now, no --now needed
    assert (done.returncode, done.summary) == (0, 'logged 1; 0 left in the outbox')
    assert world.account(imported) == {imported.name: 'receipt'}


def test_requeueing_what_is_not_rejected_cannot_start(world, sigs):
    world.configure(queue_only=True)
    world.sign(sigs[0])
    done = outbox(world, '--requeue', sigs[0].name)
    assert done.returncode == 2
    assert done.stderr.startswith('koji-rekor: no rejected record %s' % sigs[0].name)
    done = outbox(world, '--requeue', '../../etc')
    assert done.returncode == 2
    assert world.account(sigs[0]) == {sigs[0].name: 'queued'}


def test_an_unreadable_record_is_listed_with_the_cause(world, sigs):
    world.configure(queue_only=True)
    world.sign(sigs[0])
    (world.outbox_dir / 'broken-1-1.noarch.abcd1234.json').write_text('{"nvra": ')
    listed = json.loads(outbox(world, '--json').stdout)
    broken = next(i for i in listed['records'] if i['name'] == 'broken-1-1.noarch.abcd1234')
    assert broken['reason'].startswith('unreadable record')
    assert listed['counts']['pending'] == 2


# ---------------------------------------------------------------------------
# koji-rekor verify of many receipts
# ---------------------------------------------------------------------------

def change_integrated_time(path):
    receipt = json.loads(path.read_text())
    (entry,) = receipt['log_entry'].values()
    entry['integratedTime'] += 1
    path.write_text(json.dumps(receipt))


def test_verify_checks_many_receipts_in_one_process_and_names_the_bad_one(world, sigs,
                                                                          tmp_path):
    world.configure(queue_only=True)
    world.sign(*sigs)
    assert world.retry('--jobs', '2').summary == 'logged 8; 0 left in the outbox'
    copies = tmp_path / 'receipts'
    shutil.copytree(world.topdir / 'rekor-logs', copies)
    bad = copies.joinpath(*world.receipt_path(sigs[3]).relative_to(
        world.topdir / 'rekor-logs').parts)
    change_integrated_time(bad)
    stray = copies / 'notes.json'
    stray.write_text('not json')

    done = cli('verify', copies, '--log-key', world.log_key_file)

    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[-1] == 'verified 7, failed 1, unreadable 1'
    failed = [line for line in lines if line.startswith('FAILED')]
    assert len(failed) == 1
    assert failed[0].startswith('FAILED %s: signed entry timestamp' % bad)
    assert 'UNREADABLE %s: %s is not JSON' % (stray, stray) in lines
    assert sum(1 for line in lines if line.startswith('OK ')) == 7
    # Each says where the log key came from.
    assert all(line.endswith('(log key: --log-key %s)' % world.log_key_file)
               for line in lines if line.startswith('OK '))
    # The plugin's own state and outbox are not receipts.
    assert not any('@state' in line or '@outbox' in line for line in lines)

    # Files named one by one work the same; only the bad one fails.
    good = [copies.joinpath(*world.receipt_path(i).relative_to(
        world.topdir / 'rekor-logs').parts) for i in sigs[:3]]
    done = cli('verify', *good, '--log-key', world.log_key_file)
    assert (done.returncode, done.stdout.splitlines()[-1]) == (
        0, 'verified 3, failed 0, unreadable 0')
    done = cli('verify', good[0], good[1], '--rpm', good[2], '--log-key', world.log_key_file)
    assert done.returncode == 2 and 'one receipt' in done.stderr
