"""The plugin, the worker and the monitor against a log that never stands
still (issue 19): other clients append while they work, and every proof
Rekor answers is at the latest tree size, its rootHash the latest root
(GetLogProofHandler in sigstore/rekor pkg/api/tlog.go).

Also the pure decisions behind it: the saved tree head never moves
backwards, and a fork after an older, smaller head is still caught.
"""

import json
import subprocess
import sys

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

import koji_rekor.checkpoint
import koji_rekor.config
import koji_rekor.errors
import koji_rekor.logkey
import koji_rekor.merkle
import koji_rekor.rekor.client_v1
import koji_rekor.rekor.transport
import koji_rekor.state
from tests.support.common import ROOT
from tests.support.rekor_server import RekorLog, RekorServer
from tests.integration.test_outbox import koji_hub, packages, sigs, world  # noqa: F401 - fixtures

PROOF = '/api/v1/log/proof'


# ---------------------------------------------------------------------------
# The local log answers as Rekor does
# ---------------------------------------------------------------------------

def test_a_proof_answers_the_latest_root_not_the_root_at_last_size():
    import requests
    log = RekorLog()
    for number in range(6):
        log.add_entry(koji_rekor.checkpoint.canonical_json({'n': number}))
    with RekorServer(log) as server:
        answer = requests.get(server.url + PROOF, params={'firstSize': 2, 'lastSize': 4},
                              timeout=10).json()
    assert answer['rootHash'] == log.root_hash(6).hex() != log.root_hash(4).hex()
    proof = [bytes.fromhex(h) for h in answer['hashes']]
    koji_rekor.merkle.verify_consistency(2, 4, log.root_hash(2), log.root_hash(4), proof)


def test_a_lagging_instance_refuses_a_proof_for_a_head_the_log_signed():
    import requests
    log = RekorLog()
    for number in range(3):
        log.add_entry(koji_rekor.checkpoint.canonical_json({'n': number}))
    with RekorServer(log) as server:
        server.faults.lagging_count = 1
        refused = requests.get(server.url + PROOF, params={'firstSize': 1, 'lastSize': 3},
                               timeout=10)
        again = requests.get(server.url + PROOF, params={'firstSize': 1, 'lastSize': 3},
                             timeout=10)
    assert refused.status_code == 400
    assert refused.json()['message'] == ('the tree size requested(3) was greater than what '
                                         'is currently observable(2)')
    assert again.status_code == 200


def test_a_queued_duplicate_is_409_then_404_until_integrated():
    import requests
    log = RekorLog()
    body = koji_rekor.checkpoint.canonical_json({'queued': 1})
    entry_id = log.queue_entry(body, '', 2)
    with RekorServer(log) as server:
        first = requests.get(server.url + '/api/v1/log/entries/' + entry_id, timeout=10)
        second = requests.get(server.url + '/api/v1/log/entries/' + entry_id, timeout=10)
    assert first.status_code == 404
    assert second.status_code == 200 and list(second.json()) == [entry_id]


def test_a_disabled_endpoint_answers_501():
    import requests
    with RekorServer() as server:
        server.faults.disabled_paths = ['/api/v1/log/entries']
        answer = requests.post(server.url + '/api/v1/log/entries', json={}, timeout=10)
    assert answer.status_code == 501
    assert 'not yet been implemented' in answer.json()['message']


def test_a_busy_log_grows_while_it_serves_and_stops_with_the_server():
    log = RekorLog()
    server = RekorServer(log, busy=200, busy_max=20).start()
    try:
        with pytest.raises(ValueError):
            RekorServer(busy=1e9)
    finally:
        server.stop()
    added = server.busy_added
    assert log.tree_size == added <= 20
    # Stopped: nothing more is appended (the thread was joined).
    assert server._busy_thread is None


# ---------------------------------------------------------------------------
# check_consistency: the saved head never moves backwards (issue 24)
# ---------------------------------------------------------------------------

class LocalProofs:
    """What RekorClient.consistency_proof answers, from a RekorLog in this
    process: the proof between the two sizes and, as Rekor, the latest
    root."""

    def __init__(self, log):
        self.log = log
        self.asked = []

    def consistency_proof(self, first, last, tree_id):
        self.asked.append((first, last))
        root, proof = self.log.consistency_proof(first, last, tree_id)
        return {'rootHash': root.hex(), 'hashes': [h.hex() for h in proof]}


def signed_head(log, size):
    """A verified checkpoint of the log at this size: (size, root, note)."""
    from tests.support.rekor_server import signed_checkpoint
    root = log.root_hash(size)
    note = signed_checkpoint(log.origin_host, log.tree_id, size, root, log._signer)
    return size, root, note


def grown_log(size, tag='n'):
    log = RekorLog(signing_key=KEY_PEM)
    for number in range(size):
        log.add_entry(koji_rekor.checkpoint.canonical_json({tag: number}))
    return log


KEY_PEM = ec.generate_private_key(ec.SECP256R1()).private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
    serialization.NoEncryption())


def saved(state, key, tree_id):
    return koji_rekor.state.saved_tree_head(state, key, tree_id)


def test_an_older_smaller_head_never_replaces_the_saved_larger_one(tmp_path):
    state = str(tmp_path / 'koji' / 'rekor-logs' / '@state')
    (tmp_path / 'koji' / 'rekor-logs').mkdir(parents=True)
    log = grown_log(10)
    key = koji_rekor.logkey.load_log_key(log.public_key_pem)
    client = LocalProofs(log)
    koji_rekor.state.check_consistency(client, state, key, log.tree_id, *signed_head(log, 8))
    koji_rekor.state.check_consistency(client, state, key, log.tree_id, *signed_head(log, 4))
    assert saved(state, key, log.tree_id) == (8, log.root_hash(8))
    # A fork after size 4 but before size 8 is caught against the kept 8,
    # which an older head that rolled the anchor back to 4 would let pass.
    fork = RekorLog(tree_id=log.tree_id, signing_key=KEY_PEM)
    for number in range(10):
        fork.add_entry(koji_rekor.checkpoint.canonical_json({'n': number} if number < 5 else
                                                {'fork': number}))
    with pytest.raises(koji_rekor.errors.VerificationError, match='split view'):
        koji_rekor.state.check_consistency(LocalProofs(fork), state, key, log.tree_id,
                                    *signed_head(fork, 10))
    assert saved(state, key, log.tree_id) == (8, log.root_hash(8))


def test_a_larger_head_replaces_the_saved_one_once_proved(tmp_path):
    state = str(tmp_path / 'koji' / 'rekor-logs' / '@state')
    (tmp_path / 'koji' / 'rekor-logs').mkdir(parents=True)
    log = grown_log(10)
    key = koji_rekor.logkey.load_log_key(log.public_key_pem)
    client = LocalProofs(log)
    koji_rekor.state.check_consistency(client, state, key, log.tree_id, *signed_head(log, 4))
    koji_rekor.state.check_consistency(client, state, key, log.tree_id, *signed_head(log, 9))
    assert client.asked == [(4, 9)]
    assert saved(state, key, log.tree_id) == (9, log.root_hash(9))


def test_a_proof_is_checked_against_the_heads_held_not_the_root_it_comes_with():
    """rootHash is the latest root: a proof between two held heads verifies
    whatever it says, and a proof that does not fit them never does."""
    log = grown_log(12)
    client = LocalProofs(log)
    old, new = (3, log.root_hash(3)), (7, log.root_hash(7))
    koji_rekor.state.prove_consistency(client, log.tree_id, old, new)      # rootHash is size 12's
    with pytest.raises(koji_rekor.errors.VerificationError, match='split view'):
        koji_rekor.state.prove_consistency(client, log.tree_id, old, (7, log.root_hash(8)))
    with pytest.raises(koji_rekor.errors.VerificationError, match='split view'):
        koji_rekor.state.prove_consistency(client, log.tree_id, (3, log.root_hash(2)), new)


# ---------------------------------------------------------------------------
# The plugin, the worker and the monitor on a busy log
# ---------------------------------------------------------------------------

def test_signatures_imported_one_after_another_on_a_busy_log_all_get_receipts(world, sigs):
    assert world.rekor.busy
    world.rekor.busy = 400    # a new entry between any two requests of an upload
    for imported in sigs[:4]:
        world.sign(imported)
    assert world.outbox() == []
    assert set(world.account(*sigs[:4]).values()) == {'receipt'}
    assert world.rekor.busy_added > 0


def test_a_worker_pass_with_four_jobs_on_a_busy_log_logs_everything(world, sigs):
    world.configure(queue_only=True)
    world.sign(*sigs)
    done = world.retry('--jobs', '4')
    assert (done.returncode, done.summary) == (0, 'logged 8; 0 left in the outbox'), done.stderr
    assert set(world.account(*sigs).values()) == {'receipt'}
    # A proof per tree head the pass met, never two for one (the first has
    # nothing to be proved against).
    heads = set()
    for imported in sigs:
        (entry,) = world.receipt(imported)['log_entry'].values()
        proof = entry['verification']['inclusionProof']
        heads.add((proof['treeSize'], proof['rootHash']))
    assert world.rekor.count('GET', PROOF) <= len(heads) - 1


# ---------------------------------------------------------------------------
# Transient is transient
# ---------------------------------------------------------------------------

def outage_file(world):
    return world.topdir / 'rekor-logs' / '@state' / 'outage.json'


def test_a_lagging_instance_leaves_the_record_for_the_next_pass(world, sigs):
    """The proof of the new head is refused by an instance behind the log
    past the retries: the record waits for the next pass (never rejected/,
    never an outage), and the next pass logs it."""
    world.configure(queue_only=True)
    world.sign(sigs[0])
    assert world.retry().summary == 'logged 1; 0 left in the outbox'
    world.sign(sigs[1])
    world.rekor.faults.lagging_count = 1000

    done = world.retry()

    assert done.summary.startswith('failed 1; 1 left in the outbox'), done
    record = world.record(sigs[1])
    assert 'behind the log' in record['last_error'] and record['next_attempt'] == 0
    assert world.folder('rejected') == [] and not outage_file(world).exists()
    world.rekor.faults.lagging_count = 0
    assert world.retry().summary == 'already in the log 1; 0 left in the outbox'  # 409
    assert set(world.account(*sigs[:2]).values()) == {'receipt'}


def test_a_queued_duplicate_is_waited_for_not_taken_for_a_misconfiguration(world, sigs):
    """The first POST's answer is lost while Trillian still queues the entry;
    the retry gets 409 and the GET 404 until it is integrated."""
    world.configure(retries=3)
    world.rekor.faults.queue_count = 1
    world.sign(sigs[0])
    assert world.outbox() == [] and not outage_file(world).exists()
    assert world.rekor.count('GET', '/api/v1/log/entries/' + world.entries_of(sigs[0])[0]
                             .entry_id, 404) == 1
    assert set(world.account(sigs[0]).values()) == {'receipt'}


def test_a_log_that_no_longer_takes_entries_says_so_and_keeps_every_record(world, sigs):
    world.configure(queue_only=True)
    world.sign(*sigs[:3])
    world.rekor.faults.disabled_paths = ['/api/v1/log/entries']

    done = world.retry('--jobs', '2')

    assert done.returncode == 1
    assert 'the log no longer takes entries' in done.summary, done
    assert world.folder('rejected') == []
    assert set(world.account(*sigs[:3]).values()) == {'queued'}
    outage = json.loads(outage_file(world).read_text())
    assert outage['closed'] is True and '501' in outage['last_error']


# ---------------------------------------------------------------------------
# Private deployments
# ---------------------------------------------------------------------------

def test_several_origins_for_a_log_whose_replicas_sign_with_their_own_names(world, sigs):
    """Each replica signs as its own host name: [rekor] origin lists them
    all; a checkpoint naming any other host still fails."""
    world.rekor.log.origin_hosts = ('rekor-server-0', 'rekor-server-1')
    conf = world.hub.conf_path.read_text()
    world.hub.configure(conf.replace('allow_insecure_http = true\n',
                                     'allow_insecure_http = true\n'
                                     'origin = rekor-server-0, rekor-server-1\n'))
    world.sign(*sigs[:3])
    assert world.outbox() == []
    assert set(world.account(*sigs[:3]).values()) == {'receipt'}

    world.hub.configure(conf.replace('allow_insecure_http = true\n',
                                     'allow_insecure_http = true\norigin = rekor-server-0\n'))
    world.sign(*sigs[3:5])
    # The replicas answer in turn: one of the two was signed as rekor-server-1.
    records = [world.record(s) for s in sigs[3:5]]
    assert any(r and "is not log rekor-server-0" in r['last_error'] for r in records)


def test_one_origin_or_none_reads_as_before():
    settings = koji_rekor.config.Settings(url='https://rekor.example.org:3000')
    assert settings.origin_host == 'rekor.example.org'
    settings.origin = 'rekor.internal'
    assert settings.origin_host == 'rekor.internal'
    settings.origin = 'a.example, b.example c.example'
    assert settings.origin_host == frozenset({'a.example', 'b.example', 'c.example'})


def test_a_log_key_file_with_a_key_per_shard_verifies_each_entry_with_its_own(world, sigs):
    import subprocess
    import sys
    from tests.support.common import ROOT
    old_pem = world.rekor.log.public_key_pem
    world.sign(sigs[0])                                 # tree 1, the first key
    world.rekor.log.rotate_shard(signing_key=ec.generate_private_key(ec.SECP256R1()))
    new_pem = world.rekor.log.public_key_pem_of()
    world.sign(sigs[1])                                 # the only key: not this shard's
    assert 'logID' in world.record(sigs[1])['last_error']

    world.log_key_file.write_bytes(old_pem + new_pem)
    world.configure()
    world.sign(sigs[2])
    assert world.retry('--now').summary == 'already in the log 1; 0 left in the outbox'
    assert set(world.account(*sigs[:3]).values()) == {'receipt'}
    checked = subprocess.run(
        [sys.executable, '-m', 'koji_rekor', 'verify', str(world.topdir / 'rekor-logs'),
         '--log-key', str(world.log_key_file)], cwd=ROOT, capture_output=True, text=True,
        timeout=60)
    assert checked.stdout.splitlines()[-1] == 'verified 3, failed 0, unreadable 0', checked


# ---------------------------------------------------------------------------
# Answers of any size
# ---------------------------------------------------------------------------

def test_an_index_search_larger_than_the_answer_cap_is_read_whole(tmp_path):
    """Rekor's index search has no limit: 60,000 entries of one package
    answer about 5 MiB, more than the 4 MiB every other answer may have."""
    log = RekorLog()
    digest = 'sha256:' + 'ab' * 32
    ids = ['%016x%064x' % (log.tree_id, n) for n in range(60000)]
    log._index[digest] = ids     # as if logged: indexing 60,000 RPMs takes minutes
    settings = koji_rekor.config.Settings(url='http://127.0.0.1', allow_insecure_http=True)
    with RekorServer(log) as server:
        settings.url = server.url
        client = koji_rekor.rekor.client_v1.RekorClient(settings)
        try:
            found = client.search_index({'hash': digest})
        finally:
            client.close()
    assert len(json.dumps(ids)) > koji_rekor.rekor.transport.MAX_JSON_ANSWER
    assert found == ids


@pytest.mark.parametrize('answer', [b'', b'[', b'["ab",]', b'["zz"]', b'null', b'{}',
                                    b'["' + b'a' * 200 + b'"]', b'[] x', b'["a" "b"]',
                                    b'["a"]]'])
def test_a_malformed_index_answer_is_refused(answer):
    with pytest.raises(koji_rekor.errors.RekorUnavailable, match='malformed index search answer'):
        koji_rekor.rekor.transport.read_id_array(iter([answer[:2], answer[2:]]))


def test_an_index_answer_is_read_across_any_chunking():
    text = b' [ "0a" ,\n"BC", "%s" ]\n' % (b'f' * 80)
    for size in range(1, len(text) + 1):
        chunks = [text[i:i + size] for i in range(0, len(text), size)]
        assert koji_rekor.rekor.transport.read_id_array(iter(chunks)) == ['0a', 'BC', 'f' * 80]
    assert koji_rekor.rekor.transport.read_id_array(iter([b'[]'])) == []


def test_a_log_refusing_proofs_past_the_bound_is_not_checked_in_status_and_doctor(world, sigs):
    """Each pass the lagging instance refuses the proof again: the record
    waits (no outage), and once the run reaches the bound, rekorLogStatus
    says 'not checked' with why and doctor warns; a proof at last ends it."""
    import koji_rekor.config
    import koji_rekor.state
    import koji_rekor.status
    world.configure(queue_only=True)
    world.sign(sigs[0])
    assert world.retry().summary == 'logged 1; 0 left in the outbox'
    world.sign(sigs[1])
    world.rekor.faults.lagging_count = 10 ** 6
    settings = koji_rekor.config.load_config(str(world.hub.conf_path))

    def status():
        return koji_rekor.status.status_of_signature(
            settings, str(world.topdir), sigs[1].build, sigs[1].rpm, sigs[1].sigkey)

    for _ in range(koji_rekor.state.PROOFS_REFUSED_BOUND - 1):
        assert world.retry().summary.startswith('failed 1; 1 left in the outbox')
    assert status()['status'] == 'queued' and not outage_file(world).exists()
    assert world.retry().summary.startswith('failed 1; 1 left in the outbox')
    said = status()
    assert said['status'] == 'not checked', said
    assert said['reason'].startswith('not checked: the log has refused %d consistency proofs'
                                     % koji_rekor.state.PROOFS_REFUSED_BOUND)
    assert 'behind the log' in said['reason'] and not outage_file(world).exists()
    doctor = subprocess.run([sys.executable, '-m', 'koji_rekor', 'doctor', '--config',
                             str(world.hub.conf_path), '--topdir', str(world.topdir)],
                            cwd=ROOT, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                            timeout=120)
    assert 'warn log: %s: not checked: the log has refused' % world.rekor.url \
        in doctor.stdout, doctor.stdout + doctor.stderr
    world.rekor.faults.lagging_count = 0
    assert world.retry().summary == 'already in the log 1; 0 left in the outbox'
    assert status()['status'] == 'logged'
    assert not (world.topdir / 'rekor-logs' / '@state' / 'behind.json').exists()
