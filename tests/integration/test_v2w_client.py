"""koji_rekor.v2.client against the local v2 log (tests/support/rekor_v2_server.py):
each status the real server answers, and the 409 path through the tiles."""

import base64
import threading
import time

import pytest

import koji_rekor.errors
from koji_rekor.v2 import client as v2client
from koji_rekor.v2.client import AlreadyLogged, ClientSettings, Created, ShardFrozen, V2Client
from tests.support.rekor_v2_server import ENTRIES_PATH, RekorV2Server, leaf_hash
from tests.integration.test_v2w_server import request_for


@pytest.fixture
def log():
    with RekorV2Server(interval=0.05) as server:
        yield server


def client_for(log, **kws):
    kws.setdefault('backoff', 0.01)
    return V2Client(ClientSettings(log.url, **kws))


def test_201_hands_back_the_entry(log):
    entry = request_for(b'a')
    with client_for(log) as client:
        got = client.create_entry(entry)
    assert isinstance(got, Created)
    assert base64.b64decode(got.entry['canonicalizedBody']) == entry.canonical_body()
    assert got.entry['logIndex'] == '0' and got.entry['kindVersion']['kind'] == 'hashedrekord'
    assert log.count('POST', ENTRIES_PATH) == 1


def test_409_reads_the_logged_body_and_a_checkpoint_from_tiles(log):
    entry = request_for(b'dup')
    with client_for(log) as client:
        client.create_entry(request_for(b'other'))
        first = client.create_entry(entry)
        client.create_entry(request_for(b'later'))
        again = client.create_entry(entry)
    assert isinstance(again, AlreadyLogged)
    assert again.log_index == int(first.entry['logIndex']) == 1
    assert again.body == entry.canonical_body()
    assert v2client.checkpoint_size(again.checkpoint) >= 3
    assert log.count('GET', '/checkpoint') == 1
    assert log.count('GET', '/tile/entries/000.p/3', 200) == 1


def test_409_uses_the_full_bundle_when_the_partial_one_is_gone(log):
    """The checkpoint read covers 200 entries, the log has 300: bundle
    000.p/200 was collected once bundle 000 was full."""
    entry = request_for(b'0')
    with client_for(log) as client:
        client.create_entry(entry)
    log.paused = True
    for n in range(1, 300):
        body = request_for(b'%d' % n).canonical_body()
        with log.cond:
            log.tree.append(leaf_hash(body))
            log.bodies.append(body)
            log.by_identity[__import__('hashlib').sha256(body).digest()] = n
            if n == 199:
                log._publish()
    with client_for(log) as client:
        got = client.create_entry(entry)
    assert got.log_index == 0 and v2client.checkpoint_size(got.checkpoint) == 200
    assert log.count('GET', '/tile/entries/000.p/200', 404) == 1
    assert log.count('GET', '/tile/entries/000', 200) == 1


def test_409_with_another_body_there_is_a_lie(log):
    entry = request_for(b'x')
    with client_for(log) as client:
        client.create_entry(entry)
        log.lie = 'bundle'
        with pytest.raises(koji_rekor.errors.VerificationError, match='the entry there is another'):
            client.create_entry(entry)


def test_400_is_permanent_and_says_the_server_never_says_why(log):
    entry = request_for(b'b')
    bad = entry.__class__(entry.digest, 8, entry.signature, entry.public_key,
                          'PKIX_ECDSA_P384_SHA_384', '')
    with client_for(log) as client, pytest.raises(koji_rekor.errors.RekorRejected) as caught:
        client.create_entry(bad)
    assert caught.value.permanent
    assert 'never says why' in str(caught.value) and '\n' not in str(caught.value)
    assert log.count('POST', ENTRIES_PATH) == 1


@pytest.mark.parametrize('switch', ['unavailable', 'internal_errors'])
def test_503_and_500_are_retried(log, switch):
    setattr(log, switch, 2)
    with client_for(log, retries=3) as client:
        got = client.create_entry(request_for(b'r'))
    assert isinstance(got, Created)
    assert log.count('POST', ENTRIES_PATH) == 3


def test_503_for_ever_gives_up_after_the_retries(log):
    log.unavailable = -1
    with client_for(log, retries=2) as client, pytest.raises(koji_rekor.errors.RekorUnavailable) as e:
        client.create_entry(request_for(b'r'))
    assert 'answered 503' in str(e.value) and 'after 3 attempts' in str(e.value)
    assert not e.value.permanent
    assert log.count('POST', ENTRIES_PATH) == 3


def test_405_is_a_frozen_shard_at_once(log):
    log.frozen = True
    with client_for(log) as client, pytest.raises(ShardFrozen) as caught:
        client.create_entry(request_for(b'f'))
    assert 'frozen' in str(caught.value) and 'next shard' in str(caught.value)
    assert isinstance(caught.value, koji_rekor.errors.RekorMisconfigured)
    assert log.count('POST', ENTRIES_PATH) == 1


def test_a_post_waiting_past_its_deadline_is_cut(log):
    log.paused = True
    started = time.monotonic()
    with client_for(log, write_timeout=0.5, retries=0) as client, \
            pytest.raises(koji_rekor.errors.RekorUnavailable, match='timed out after 0.5 s'):
        client.create_entry(request_for(b't'))
    assert time.monotonic() - started < 5


def test_the_callers_deadline_bounds_everything(log):
    log.paused = True
    client = V2Client(ClientSettings(log.url, retries=5, backoff=0.01),
                      deadline=time.monotonic() + 0.5, spent='the hub budget of 0.5 s is spent')
    with client, pytest.raises(koji_rekor.errors.RekorUnavailable, match='hub budget'):
        client.create_entry(request_for(b'd'))


def test_a_post_waits_for_the_checkpoint(log):
    """The answer comes only once a checkpoint covers the entry."""
    log.paused = True
    got = []
    with client_for(log) as client:
        thread = threading.Thread(target=lambda: got.append(client.create_entry(
            request_for(b'w'))))
        thread.start()
        deadline = time.monotonic() + 10
        while log.tree.size < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        thread.join(0.3)
        assert thread.is_alive() and not got
        log.paused = False
        thread.join(10)
    assert got[0].entry['inclusionProof']['treeSize'] == '1'


def test_tile_reads(log):
    with client_for(log) as client:
        for n in range(3):
            client.create_entry(request_for(b'%d' % n))
        assert client.read_tile(0, 0, 3) == log.tree.tile(0, 0, 3)
        assert client.read_bundle(0, 3) == log.bodies
        assert v2client.checkpoint_size(client.read_checkpoint()) == 3
        with pytest.raises(koji_rekor.errors.RekorUnavailable, match='no tile'):
            client.read_tile(0, 0, 4)
    assert v2client.tile_path(0, 1234067, 8) == '/tile/0/x001/x234/067.p/8'
    assert v2client.tile_path('entries', 5) == '/tile/entries/005'


def test_unreachable_log_is_transient():
    with RekorV2Server() as server:
        url = server.url
    with V2Client(ClientSettings(url, retries=0)) as client, \
            pytest.raises(koji_rekor.errors.RekorUnavailable, match='cannot reach'):
        client.create_entry(request_for(b'u'))


def test_409_naming_another_entry_is_a_lie(log):
    entry = request_for(b'mine')
    with client_for(log) as client:
        client.create_entry(request_for(b'theirs'))
        client.create_entry(entry)
        log.lie = 'index'
        with pytest.raises(koji_rekor.errors.VerificationError, match='at index 0'):
            client.create_entry(entry)


@pytest.mark.parametrize('call', [
    lambda c: c.create_entry(request_for(b'h')),
    lambda c: c.read_checkpoint(),
])
def test_huge_answers_are_cut_at_their_cap(log, call):
    log.pad_answers = 2 * 1024 * 1024
    with client_for(log, retries=3) as client, \
            pytest.raises(koji_rekor.errors.RekorUnavailable, match='larger than'):
        call(client)
    assert len(log.requests) == 1  # not retried: the log is broken, not busy


def test_a_tile_of_the_wrong_size_is_refused(log):
    with client_for(log) as client:
        client.create_entry(request_for(b'1'))
        log.pad_answers = 1
        with pytest.raises(koji_rekor.errors.RekorUnavailable, match='of 33 bytes, not 32'):
            client.read_tile(0, 0, 1)


def test_many_in_flight_share_checkpoints():
    """A POST waits for a checkpoint, so uploads in parallel share them:
    32 at once need far fewer than 32 checkpoints."""
    with RekorV2Server(interval=0.2) as log:
        before = log.checkpoints
        got, errors = [], []

        def one(n):
            try:
                with client_for(log) as client:
                    got.append(client.create_entry(request_for(b'par%d' % n)))
            except Exception as e:  # reported below
                errors.append(e)
        threads = [threading.Thread(target=one, args=(n,)) for n in range(32)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        used = log.checkpoints - before
    assert not errors
    assert sorted(int(c.entry['logIndex']) for c in got) == list(range(32))
    assert used < 16


def test_409_on_a_busy_log(log):
    """Others keep logging while our duplicate is answered: the checkpoint
    read then is newer than the one our first upload got."""
    entry = request_for(b'busy')
    stop = threading.Event()

    def others():
        with client_for(log) as client:
            n = 0
            while not stop.is_set() and n < 500:
                client.create_entry(request_for(b'other%d' % n))
                n += 1
    with client_for(log) as client:
        first = client.create_entry(entry)
        thread = threading.Thread(target=others)
        thread.start()
        try:
            deadline = time.monotonic() + 10
            while log.tree.size < 3 and time.monotonic() < deadline:
                time.sleep(0.01)
            again = client.create_entry(entry)
        finally:
            stop.set()
            thread.join(30)
    assert again.log_index == int(first.entry['logIndex'])
    assert again.body == entry.canonical_body()
    assert v2client.checkpoint_size(again.checkpoint) > int(
        first.entry['inclusionProof']['treeSize'])


def test_409_yields_the_verified_entry_a_201_gave(log):
    """With the log's key, a 409 is completed into the TransparencyLogEntry
    a 201 carries (koji_rekor.v2.entry.entry_from_tiles): under the same
    checkpoint, the very same entry, and verify_entry accepts it."""
    from koji_rekor.v2 import entry as v2entry, trust
    key = trust.log_key(log.origin, log.key.public_der)
    entry = request_for(b'same')
    with client_for(log) as client:
        client.create_entry(request_for(b'before'))
        first = client.create_entry(entry, log=key)
        log.paused = True  # no newer checkpoint: the 409 reads the 201's one
        again = client.create_entry(entry, log=key)
    assert isinstance(again, AlreadyLogged)
    assert again.entry == first.entry
    verified = v2entry.verify_entry(again.entry, entry.canonical_body(), key)
    assert verified.entry.log_index == 1


def test_409_with_tiles_that_lie_yields_no_entry(log):
    from koji_rekor.v2 import trust
    key = trust.log_key(log.origin, log.key.public_der)
    entry = request_for(b'x')
    with client_for(log) as client:
        client.create_entry(request_for(b'y'))
        client.create_entry(entry)
        log.lie = 'tile'
        with pytest.raises(koji_rekor.errors.VerificationError, match='tiles|leaf'):
            client.create_entry(entry, log=key)


def test_server_tile_paths_are_the_ones_rekor_v2_tiles_writes():
    from koji_rekor.v2 import tiles
    from tests.support.rekor_v2_server import parse_tile_path
    assert parse_tile_path('/' + tiles.tile_path(1, 1234067, 8)) == (1, 1234067, 8)
    assert parse_tile_path('/' + tiles.entries_path(5)) == ('entries', 5, None)
    for alias in ('/tile/0/0005', '/tile/0/x000/005', '/tile/00/005', '/tile/0/005.p/256'):
        assert parse_tile_path(alias) is None
