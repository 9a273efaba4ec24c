"""More of one test per check (issue 24): each fails when the check it is
named after is removed or weakened. All are fast: no Rekor server, no RPM
build, no topdir beyond tmp_path, no Koji; they call the decision itself.
`make mutation` runs the mutation tool against these and test_checks.py."""

import base64
import copy
import hashlib
import os
import types

import pytest

import koji_rekor.config
import koji_rekor.errors
import koji_rekor.logkey
import koji_rekor.merkle
import koji_rekor.monitor.koji_view
import koji_rekor.monitor.report
import koji_rekor.monitor.scan
import koji_rekor.outbox
import koji_rekor.progress
import koji_rekor.rekor.client_v1
import koji_rekor.rekor.models
import koji_rekor.rpmsig
import koji_rekor.safefs
import koji_rekor.state
import koji_rekor.verify
import koji_rekor.verify_rpm

from tests.support.rekor_server import RekorLog, canonical_json


# --- a reference Merkle tree (RFC 9162, section 2.1), written from the RFC's
# definitions, independent of the code under test ---------------------------------------

def mth(leaves):
    if len(leaves) == 1:
        return hashlib.sha256(b'\x00' + leaves[0]).digest()
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return hashlib.sha256(b'\x01' + mth(leaves[:k]) + mth(leaves[k:])).digest()


def subproof(m, leaves, whole):
    """RFC 9162, section 2.1.4.1: SUBPROOF(m, D[n], b)."""
    n = len(leaves)
    if m == n:
        return [] if whole else [mth(leaves)]
    k = 1
    while k * 2 < n:
        k *= 2
    if m <= k:
        return subproof(m, leaves[:k], whole) + [mth(leaves[k:])]
    return subproof(m - k, leaves[k:], False) + [mth(leaves[:k])]


LEAVES = [b'leaf %d' % i for i in range(16)]


def root(size):
    return mth(LEAVES[:size])


def consistency(m, n):
    return subproof(m, LEAVES[:n], True)


@pytest.mark.parametrize('m,n', [(1, 2), (3, 8), (4, 7), (5, 16), (6, 9), (7, 8)])
def test_the_reference_consistency_proofs_verify(m, n):
    koji_rekor.merkle.verify_consistency(m, n, root(m), root(n), consistency(m, n))


def path(m, leaves):
    """RFC 9162, section 2.1.3.1: PATH(m, D[n])."""
    n = len(leaves)
    if n == 1:
        return []
    k = 1
    while k * 2 < n:
        k *= 2
    if m < k:
        return path(m, leaves[:k]) + [mth(leaves[k:])]
    return path(m - k, leaves[k:]) + [mth(leaves[:k])]


def leaf_hash(i):
    return hashlib.sha256(b'\x00' + LEAVES[i]).digest()


def test_every_inclusion_proof_of_the_reference_tree():
    # Every leaf of every tree up to 16 leaves: leaf 0, the right edges
    # (shift_past_right_edge) and perfect trees included.
    for size in range(1, 17):
        for index in range(size):
            proof = path(index, LEAVES[:size])
            assert koji_rekor.merkle.root_from_inclusion_proof(index, size, leaf_hash(index),
                                                       proof) == root(size), (index, size)
            # What the worker derives from a verified proof: the trees of
            # the first index and index + 1 leaves.
            left = koji_rekor.merkle.left_subtrees(index, size, proof)
            wanted = {index + 1: root(index + 1)}
            if index:
                wanted[index] = root(index)
            assert koji_rekor.merkle.prefix_roots(index, leaf_hash(index), left) == wanted, (index, size)


def test_every_consistency_proof_of_the_reference_tree():
    for n in range(1, 17):
        for m in range(1, n + 1):
            koji_rekor.merkle.verify_consistency(m, n, root(m), root(n), consistency(m, n))
            if m < n:
                with pytest.raises(koji_rekor.errors.VerificationError):
                    koji_rekor.merkle.verify_consistency(m, n, root(m), root(n - 1) if n - 1 != m
                                                 else b'\x00' * 32, consistency(m, n))


INCLUSION_FAILURES = {
    'negative index': ((-1, 4, leaf_hash(0), path(0, LEAVES[:4])),
                       'inclusion proof: negative index -1'),
    'index at size': ((4, 4, leaf_hash(0), path(0, LEAVES[:4])),
                      'inclusion proof: index 4 is not below tree size 4'),
    'too many': ((2, 4, leaf_hash(2), path(2, LEAVES[:4]) + [root(1)]),
                 'inclusion proof: too many hashes'),
    'too few': ((2, 8, leaf_hash(2), path(2, LEAVES[:4])), 'inclusion proof: too few hashes'),
}


@pytest.mark.parametrize('case', sorted(INCLUSION_FAILURES))
def test_each_inclusion_check(case):
    args, message = INCLUSION_FAILURES[case]
    with pytest.raises(koji_rekor.errors.VerificationError) as info:
        koji_rekor.merkle.root_from_inclusion_proof(*args)
    assert str(info.value) == message


CONSISTENCY_FAILURES = {
    'shrank': ((8, 3, root(8), root(3), []), 'consistency: tree shrank from 8 to 3'),
    'two roots': ((5, 5, root(5), root(6), []), 'consistency: two roots for tree size 5'),
    'same size, a proof': ((5, 5, root(5), root(5), [root(1)]),
                           'consistency: two roots for tree size 5'),
    'from empty, a proof': ((0, 5, b'', root(5), [root(1)]),
                            'consistency: a proof from the empty tree must be empty'),
    'empty proof': ((3, 8, root(3), root(8), []), 'consistency: empty proof'),
    'wrong first root': ((3, 8, root(2), root(8), consistency(3, 8)),
                         'consistency: proof from size 3 to 8 does not verify'),
    'wrong second root': ((3, 8, root(3), root(7), consistency(3, 8)),
                          'consistency: proof from size 3 to 8 does not verify'),
    'wrong power of two root': ((4, 8, root(3), root(8), consistency(4, 8)),
                                'consistency: proof from size 4 to 8 does not verify'),
    'too many': ((3, 8, root(3), root(8), consistency(3, 8) + [b'\x07' * 32]),
                 'consistency: too many hashes'),
}


@pytest.mark.parametrize('case', sorted(CONSISTENCY_FAILURES))
def test_each_consistency_check(case):
    args, message = CONSISTENCY_FAILURES[case]
    with pytest.raises(koji_rekor.errors.VerificationError) as info:
        koji_rekor.merkle.verify_consistency(*args)
    assert str(info.value) == message


@pytest.mark.parametrize('m,n', [(0, 0), (0, 5), (5, 5), (1, 1)])
def test_consistency_with_nothing_to_prove(m, n):
    koji_rekor.merkle.verify_consistency(m, n, root(m) if m else b'', root(n) if n else b'', [])


def test_consistency_too_few_hashes():
    # PROOF(3, D[4]) is a prefix of PROOF(3, D[8]) and leads to the root of
    # 4 leaves: a log that signs that root as its tree of 8 must not pass.
    proof = consistency(3, 4)
    assert consistency(3, 8)[:len(proof)] == proof
    koji_rekor.merkle.verify_consistency(3, 4, root(3), root(4), proof)
    with pytest.raises(koji_rekor.errors.VerificationError, match='does not verify'):
        koji_rekor.merkle.verify_consistency(3, 8, root(3), root(4), proof)


def test_consistency_too_many_hashes():
    # Redundant with the final `fr != first_root` check (an extra hash is
    # hashed into fr, so fr can no longer be first_root), kept for its
    # clearer message; this test holds the message.
    proof = consistency(3, 8) + [b'\x07' * 32]
    with pytest.raises(koji_rekor.errors.VerificationError, match='too many hashes'):
        koji_rekor.merkle.verify_consistency(3, 8, root(3), root(8), proof)


def test_consistency_empty_proof_between_different_sizes():
    with pytest.raises(koji_rekor.errors.VerificationError, match='empty proof'):
        koji_rekor.merkle.verify_consistency(3, 8, root(3), root(8), [])


def test_inclusion_too_few_hashes():
    # The proof of leaf 2 in the tree of 4 leaves is a prefix of its proof
    # in the tree of 8; it must not prove leaf 2 in a tree of 8 whose
    # signed root is that of 4.
    leaf = hashlib.sha256(b'\x00' + LEAVES[2]).digest()
    short = [hashlib.sha256(b'\x00' + LEAVES[3]).digest(), mth(LEAVES[:2])]
    assert koji_rekor.merkle.root_from_inclusion_proof(2, 4, leaf, short) == root(4)
    with pytest.raises(koji_rekor.errors.VerificationError, match='too few hashes'):
        koji_rekor.merkle.root_from_inclusion_proof(2, 8, leaf, short)


def test_inclusion_negative_index():
    leaf = hashlib.sha256(b'\x00' + LEAVES[0]).digest()
    with pytest.raises(koji_rekor.errors.VerificationError, match='negative index'):
        koji_rekor.merkle.root_from_inclusion_proof(-1, 1, leaf, [])


# --- an entry's indexes and time ------------------------------------------------------

@pytest.fixture
def local():
    log = RekorLog()
    for number in range(3):
        log.add_entry(canonical_json({'apiVersion': '0.0.1', 'kind': 'rpm', 'n': number}))
    entry, _ = log.add_entry(canonical_json({'apiVersion': '0.0.1', 'kind': 'rpm', 'n': 99}))
    entry_id, document = log.render_entry(entry)
    return log, koji_rekor.logkey.load_log_key(log.public_key_pem), entry_id, document[entry_id]


@pytest.mark.parametrize('field', ['integratedTime', 'logIndex'])
def test_negative_index_or_time_of_an_entry(local, field):
    # Without a SET nothing else signs these two: only the range check
    # stands between a negative number and a "verified" entry.
    log, key, entry_id, entry = local
    del entry['verification']['signedEntryTimestamp']
    assert koji_rekor.verify.verify_log_entry(entry_id, entry, key, '127.0.0.1', require_set=False)
    entry[field] = -1
    with pytest.raises(koji_rekor.errors.VerificationError, match='not whole numbers in range'):
        koji_rekor.verify.verify_log_entry(entry_id, entry, key, '127.0.0.1', require_set=False)


# --- verify-rpm: the checkpoint origin ------------------------------------------------

def test_verify_rpm_checks_the_checkpoint_origin(local):
    log, key, entry_id, entry = local
    check = types.SimpleNamespace(sha256='ab' * 32)
    outcome = koji_rekor.verify_rpm.check_entry_for_file(check, None, entry_id, entry, key,
                                              'rekor.example.org', [])
    assert outcome['outcome'] == 'failed'
    assert outcome['reason'] == ("checkpoint: origin '127.0.0.1 - %d' is not log "
                                 "rekor.example.org" % log.tree_id)


def test_verify_rpm_offline_entry_always_has_an_origin(local, tmp_path):
    # A raw entry (no receipt naming its log) and no --origin: the origin
    # is the configured log's host, never None (which checks no origin).
    log, key, entry_id, entry = local
    path = tmp_path / 'entry.json'
    path.write_text(__import__('json').dumps({entry_id: entry}))
    key_file = tmp_path / 'log.pub'
    key_file.write_bytes(log.public_key_pem)
    args = types.SimpleNamespace(log_key=str(key_file), origin=None, url=None)
    settings = koji_rekor.config.Settings()
    *_, origin = koji_rekor.verify_rpm.offline_entry(args, settings, str(path))
    assert origin == 'rekor.sigstore.dev'


# --- the monitor ----------------------------------------------------------------------

def test_monitor_finds_the_key_of_a_rekord_entry(keys):
    armored = keys['rsa'].armored
    body = {'kind': 'rekord', 'apiVersion': '0.0.1', 'spec': {
        'data': {'hash': {'algorithm': 'sha256', 'value': 'ab' * 32}},
        'signature': {'format': 'pgp', 'content': 'c2ln',
                      'publicKey': {'content': base64.b64encode(armored).decode()}}}}
    assert koji_rekor.rekor.models.body_public_keys(body) == [armored]
    rpm = {'kind': 'rpm', 'apiVersion': '0.0.1',
           'spec': {'publicKey': {'content': base64.b64encode(armored).decode()}}}
    assert koji_rekor.rekor.models.body_public_keys(rpm) == [armored]


def monitor_view(shards):
    report = koji_rekor.monitor.report.Report(url='https://rekor.example.org', topdir='/nonexistent',
                               progress=koji_rekor.progress.Progress(open(os.devnull, 'w')))
    return koji_rekor.monitor.scan.LogView(client=None, settings=koji_rekor.config.Settings(), state=None, key=None,
                              report=report, shards=shards)


def test_monitor_does_not_scan_a_tree_whose_head_does_not_verify():
    view = monitor_view([(1, 5), (2, None)])
    scan = types.SimpleNamespace(data={'next_index': 0, 'pending': []}, first=False)
    koji_rekor.monitor.scan.scan_log(view, None, None, scan, None)
    assert view.report.unchecked == [
        'the entries of a tree whose signed tree head does not verify']
    assert view.report.status == 2
    assert scan.data == {'next_index': 0, 'pending': []}   # nothing read, nothing moved


class AskedKoji(koji_rekor.monitor.koji_view.KojiView):
    """Koji's answers as data: the decision under test is account()'s."""

    def __init__(self, rpms):
        super().__init__(koji_rekor.config.Settings(), '/nonexistent')
        self.rpms = rpms

    def call(self, method, *args, **kws):
        assert method == 'getRPM'
        return self.rpms.get(args[0])

    def account_rpm(self, rpminfo, sigkeys, sha256, uuid, what):
        return None   # Koji signed it, the bytes match


def logged(epoch, arch='x86_64'):
    return types.SimpleNamespace(uuid='00' * 32, body={'spec': {'package': {
        'hash': {'value': 'ab' * 32},
        'headers': {'Name': 'hello', 'Epoch': epoch, 'Version': '1.0', 'Release': '1',
                    'Architecture': arch}}}})


@pytest.mark.parametrize('koji_epoch,logged_epoch,accounted', [
    (None, '', True), (None, '0', True), (0, '', True), (1, '1', True),
    (None, '1', False), (1, '', False), (1, '2', False)])
def test_monitor_compares_the_epoch(koji_epoch, logged_epoch, accounted):
    koji = AskedKoji({'hello-1.0-1.x86_64': {'id': 1, 'epoch': koji_epoch}})
    outcome = koji.account(logged(logged_epoch), ['AB' * 20], 'here')
    assert (outcome is None) == accounted, outcome
    if not accounted:
        assert outcome[0] == 'not in Koji'


def test_monitor_src_is_tried_only_after_the_logged_arch():
    koji = AskedKoji({'hello-1.0-1.src': {'id': 1, 'epoch': None}})
    assert koji.account(logged('', arch='x86_64'), ['AB' * 20], 'here') is None
    assert koji.account(logged('', arch='ppc64le'), ['AB' * 20], 'here') is None
    nothing = AskedKoji({})
    assert nothing.account(logged(''), ['AB' * 20], 'here')[0] == 'not in Koji'


# --- an RPM's arch in the body ---------------------------------------------------------

def test_src_arch_only_for_a_source_rpm(keys):
    def expected(source):
        return koji_rekor.rpmsig.Expected(
            sha256='ab' * 32, name='hello', version='1.0', release='1', epoch=None,
            arch='x86_64', sigmd5='cd' * 16, public_key=keys['rsa'].armored, source=source)
    body = {'kind': 'rpm', 'apiVersion': '0.0.1', 'spec': {
        'package': {'hash': {'algorithm': 'sha256', 'value': 'ab' * 32},
                    'headers': {'Name': 'hello', 'Version': '1.0', 'Release': '1',
                                'Epoch': '', 'Architecture': 'src'}},
        'publicKey': {'content': base64.b64encode(keys['rsa'].armored).decode()}}}
    koji_rekor.verify.verify_rpm_body(body, expected(True))
    with pytest.raises(koji_rekor.errors.VerificationError,
                       match="body records Architecture 'src', the RPM has 'x86_64'"):
        koji_rekor.verify.verify_rpm_body(body, expected(False))


# --- records: each path part, and the record's own name ---------------------------------

VALID_RECORD = koji_rekor.outbox.new_record(
    {'id': 1, 'name': 'hello', 'version': '1.0', 'release': '1', 'epoch': None,
     'volume_name': 'DEFAULT'},
    {'id': 1, 'build_id': 1, 'name': 'hello', 'version': '1.0', 'release': '1', 'epoch': None,
     'arch': 'noarch', 'payloadhash': 'ab', 'external_repo_id': 0}, 'b64940b3', 'cd')

# Every record field that becomes part of a path (receipt, outbox record,
# or Koji's pathinfo for the RPM read).
PATH_PARTS = [('rpm', 'name'), ('rpm', 'version'), ('rpm', 'release'), ('rpm', 'arch'),
              ('build', 'name'), ('build', 'version'), ('build', 'release'),
              ('build', 'volume_name'), ('sigkey',)]
CLIMBS = ['..', '.', '../x', '../../etc', 'a/../b', 'a/b', '/abs', '', 'a\0b']


@pytest.mark.parametrize('path', PATH_PARTS, ids='.'.join)
@pytest.mark.parametrize('value', CLIMBS)
def test_no_path_part_of_a_record_climbs(path, value):
    record = copy.deepcopy(VALID_RECORD)
    holder = record
    for key in path[:-1]:
        holder = holder[key]
    holder[path[-1]] = value
    record['nvra'] = '%(name)s-%(version)s-%(release)s.%(arch)s' % record['rpm']
    # The name the record would have, were it valid: only the part is wrong.
    name = '%s.%s.json' % (record['nvra'], record['sigkey'])
    with pytest.raises(koji_rekor.errors.BadRecord):
        koji_rekor.outbox.check_record(record, name)


def test_the_valid_record_passes():
    name = koji_rekor.outbox.record_name(VALID_RECORD['rpm'], VALID_RECORD['sigkey']) + '.json'
    assert koji_rekor.outbox.check_record(copy.deepcopy(VALID_RECORD), name) == VALID_RECORD


@pytest.mark.parametrize('name', [
    'hello-1.0-2.noarch.b64940b3.json', 'other.json', 'hello-1.0-1.noarch.b64940b3.json.tmp',
    'hello-1.0-1.noarch.deadbeef.json', 'hello-1.0-1.noarch.b64940b3'])
def test_a_record_lives_under_its_own_name(name):
    with pytest.raises(koji_rekor.errors.BadRecord, match='the file name is not'):
        koji_rekor.outbox.check_record(copy.deepcopy(VALID_RECORD), name)


@pytest.mark.parametrize('part', ['..', '.', '', 'a/b', '../x', 'a\0b', None])
def test_dot_dot_in_a_path_part(part):
    with pytest.raises(koji_rekor.errors.UnsafePath):
        koji_rekor.safefs.check_part(part)


# --- regular files only ---------------------------------------------------------------

@pytest.mark.parametrize('what', ['device', 'directory', 'fifo'])
def test_records_and_receipts_are_regular_files(tmp_path, what):
    # The check every record and receipt read goes through (read_file_at,
    # and the outbox claim's read through its locked descriptor).
    if what == 'device':
        fd = os.open(os.devnull, os.O_RDONLY)   # reads as empty: a "valid" nothing
    elif what == 'directory':
        fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    else:
        os.mkfifo(tmp_path / 'f')
        fd = os.open(tmp_path / 'f', os.O_RDONLY | os.O_NONBLOCK)
    try:
        with pytest.raises(koji_rekor.errors.UnsafePath, match='is not a regular file'):
            koji_rekor.safefs.read_regular_file(fd, 'x.json')
    finally:
        os.close(fd)


# --- the first-use pin race -------------------------------------------------------------

class RacedClient:
    """A log that serves key B while another process pins key A first."""

    def __init__(self, state, pinned_first, served):
        self.state, self.pinned_first, self.served = state, pinned_first, served

    def log_public_key(self):
        keys = os.path.join(self.state, koji_rekor.state.KEYS_DIR)
        os.makedirs(keys, exist_ok=True)
        with open(os.path.join(keys, '127.0.0.1_9.pem'), 'wb') as fo:
            fo.write(self.pinned_first)
        return self.served


def test_the_first_pin_wins_a_race(tmp_path, monkeypatch):
    monkeypatch.setattr(koji_rekor.state, 'PINS_SEEN', {})
    first, second = RekorLog(), RekorLog()
    state = koji_rekor.state.state_dir(str(tmp_path))
    os.makedirs(state)
    settings = koji_rekor.config.Settings(url='http://127.0.0.1:9', trust_on_first_use=True)
    client = RacedClient(state, first.public_key_pem, second.public_key_pem)
    key = koji_rekor.state.resolve_log_key(settings, client, state)
    assert koji_rekor.logkey.log_key_id(key).hex() == first.log_id


# --- a 4xx with a Location is not a 409 -----------------------------------------------

@pytest.mark.parametrize('status', ['400 Bad Request', '410 Gone', '422 Unprocessable Entity',
                                    '404 Not Found'])
def test_only_a_409_with_a_location_names_an_entry(status):
    from tests.support.hostile_server import HostileServer, canned
    with HostileServer() as front:
        front.mode = 'canned'
        front.answer = canned(status, b'{"message": "m"}', [
            ('Location', koji_rekor.rekor.client_v1.ENTRIES_PATH + '/' + 'ab' * 32)])
        settings = koji_rekor.config.Settings(url=front.url, allow_insecure_http=True, retries=0)
        client = koji_rekor.rekor.client_v1.RekorClient(settings)
        try:
            with pytest.raises((koji_rekor.errors.RekorRejected, koji_rekor.errors.RekorMisconfigured),
                               match='Rekor answered %s' % status.split()[0]):
                client.create_entry(b'{}')
        finally:
            client.close()
        assert [method for method, _ in front.requests] == ['POST']   # nothing fetched
