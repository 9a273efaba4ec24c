"""The entry body: streamed by a reader thread, byte for byte the
straightforward encoding, and the thread gone on every way an upload ends."""

import base64
import hashlib
import json
import os
import socket
import threading

import koji
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import koji_rekor.config
import koji_rekor.delivery
import koji_rekor.entry
import koji_rekor.errors
import koji_rekor.rekor.client_v1
import koji_rekor.rpmsig
from tests.support import rpmfactory
from koji_rekor.entry import EntryBody
from koji_rekor.rpmsig import CHUNK_SIZE, SignedRpm

# Big enough that the body outlasts the loopback socket's buffers and the
# reader's queue, so the failures below hit it in the middle of the upload.
LARGE_PAYLOAD = 24 << 20
THREAD_WAIT = 10  # seconds a test waits for a thread that must end by itself


def body_threads():
    return [t for t in threading.enumerate() if t.name.startswith('rekor_log body of ')]


@pytest.fixture(autouse=True)
def no_reader_left_behind():
    assert body_threads() == []
    yield
    for thread in body_threads():  # keep one failing test from failing the next
        thread.join(THREAD_WAIT)


# --- byte for byte ---------------------------------------------------------------

@pytest.fixture(scope='module')
def rpm_parts(signed_rpms, unsigned_rpm):
    """(signed header part, unsigned header part, signature header) of real RPMs:
    lead, signature header and main header, to which a test appends a payload."""
    def header_part(path):
        start, size = koji.find_rpm_sighdr(path)
        with open(path, 'rb') as fo:
            return fo.read(start + size + koji.rpm_hdr_size(path, start + size))
    signed = signed_rpms[('rsa', 'header')]
    return header_part(signed), header_part(unsigned_rpm), koji.rip_rpm_sighdr(signed)


def straightforward(rpm_bytes, public_key):
    """The proposed entry as the original plugin built it."""
    return json.dumps({'kind': 'rpm', 'apiVersion': '0.0.1', 'spec': {
        'package': {'content': base64.b64encode(rpm_bytes).decode()},
        'publicKey': {'content': base64.b64encode(public_key).decode()}}},
        separators=(',', ':')).encode()


# Stream sizes on and either side of every chunk boundary up to past the
# queue's depth, and anywhere in between.
SIZES = st.one_of(
    st.builds(lambda k, d: k * CHUNK_SIZE + d,
              st.integers(1, koji_rekor.entry.QUEUE_CHUNKS + 2), st.integers(-3, 3)),
    st.integers(0, (koji_rekor.entry.QUEUE_CHUNKS + 2) * CHUNK_SIZE))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(size=SIZES, spliced=st.booleans(), seed=st.integers(0, 2 ** 32))
def test_the_body_is_the_straightforward_encoding(rpm_parts, keys, tmp_path_factory, size,
                                                  spliced, seed):
    signed_head, unsigned_head, sighdr = rpm_parts
    head = unsigned_head if spliced else signed_head
    payload = hashlib.shake_128(b'%d' % seed).digest(max(0, size - len(head)))
    path = str(tmp_path_factory.mktemp('rpm') / 'x.rpm')
    with open(path, 'wb') as fo:
        fo.write(head + payload)
    signed = SignedRpm('x-1-1.noarch', keys['rsa'].sigkey, path, sighdr, spliced)
    if spliced:  # what Koji's own reader makes of the unsigned RPM and header
        with koji.spliced_sig_reader(path, sighdr) as fo:
            rpm_bytes = fo.read()
    else:
        rpm_bytes = head + payload
    assert signed.size() == len(rpm_bytes)

    body = EntryBody(signed, keys['rsa'].armored)
    sent = b''.join(body)

    assert sent == straightforward(rpm_bytes, keys['rsa'].armored)
    assert len(body) == len(sent)
    assert body.sha256 == hashlib.sha256(rpm_bytes).hexdigest()
    with signed.open() as fo:
        assert koji_rekor.rpmsig.sha256_of(fo) == body.sha256
    with open(path, 'rb') as fo:  # as `koji-rekor verify --rpm` reads a file
        assert koji_rekor.rpmsig.sha256_of(fo) == hashlib.sha256(head + payload).hexdigest()
    assert body_threads() == []


# --- a large RPM through the hub -------------------------------------------------

@pytest.fixture(scope='module')
def large_rpms(tmp_path_factory, keys):
    """(unsigned, signed) RPMs with a payload of LARGE_PAYLOAD bytes."""
    base = tmp_path_factory.mktemp('large')
    unsigned = rpmfactory.build_rpm(str(base), name='large', payload_bytes=LARGE_PAYLOAD)
    return unsigned, rpmfactory.sign_rpm(unsigned, str(base / 'signed.rpm'), keys['rsa'])


def test_a_large_rpm_is_logged_and_its_entry_verifies(configured_hub, rekor, topdir,
                                                      large_rpms, plugin_log):
    unsigned, signed_path = large_rpms
    imported = rpmfactory.koji_import_signature(str(topdir), unsigned, signed_path)
    # the hub itself sends it, rather than leaving it to the worker
    configured_hub.configure(configured_hub.conf_path.read_text().replace(
        '[upload]\n', '[upload]\nhub_budget = 600\n'))
    configured_hub.sign(imported)

    receipts = [p for p in (topdir / 'rekor-logs' / 'large').rglob('*.json')]
    assert len(receipts) == 1, plugin_log.text
    receipt = json.loads(receipts[0].read_text())
    with open(signed_path, 'rb') as fo:
        assert receipt['sha256'] == hashlib.sha256(fo.read()).hexdigest()
    assert rekor.count('POST', '/api/v1/log/entries') == 1
    assert body_threads() == []


# --- the reader thread ends on every path ----------------------------------------

class BadLog:
    """A log on 127.0.0.1 that takes the headers and 64 KiB of one upload,
    then closes the connection ('close') or stops reading ('hang')."""

    def __init__(self, mode):
        self.mode = mode
        self.listener = socket.create_server(('127.0.0.1', 0))
        self.url = 'http://127.0.0.1:%d' % self.listener.getsockname()[1]
        self.release = threading.Event()
        self.connections = 0
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        self.listener.settimeout(THREAD_WAIT)
        try:
            conn, _ = self.listener.accept()  # one: the uploads below do not retry
            self.connections += 1
            with conn:
                conn.settimeout(THREAD_WAIT)
                received = b''
                while b'\r\n\r\n' not in received or len(received) < 64 << 10:
                    data = conn.recv(64 << 10)
                    if not data:
                        break
                    received += data
                if self.mode == 'hang':
                    self.release.wait(THREAD_WAIT)
        except OSError:
            pass

    def close(self):
        self.release.set()
        self.listener.close()
        self.thread.join(THREAD_WAIT)


@pytest.fixture
def large_signed(topdir, large_rpms):
    unsigned, signed_path = large_rpms
    imported = rpmfactory.koji_import_signature(str(topdir), unsigned, signed_path)
    return koji_rekor.rpmsig.locate_signed_rpm(imported.build, imported.rpm, imported.sigkey)


def upload_settings(url, log_key_file, timeout):
    return koji_rekor.config.Settings(url=url, allow_insecure_http=True, timeout=timeout, retries=0,
                              backoff=0.01, log_public_key=str(log_key_file))


@pytest.mark.parametrize('mode', ['close', 'hang'])
def test_the_reader_ends_when_the_log_fails_in_the_middle_of_the_body(
        large_signed, keys, key_dir, log_key_file, mode):
    log = BadLog(mode)
    try:
        with pytest.raises(koji_rekor.errors.RekorUnavailable) as failed:
            koji_rekor.delivery.upload_signed_rpm(upload_settings(log.url, log_key_file, timeout=1),
                                        large_signed, str(key_dir / (keys['rsa'].sigkey + '.asc')))
        assert log.connections == 1
        # upload_signed_rpm has stopped and joined the reader before it returned
        assert body_threads() == []
    finally:
        log.close()
    if mode == 'hang':
        assert 'timed out' in str(failed.value)


@pytest.mark.quiet_log  # exact log indexes or tree sizes: a log only this test writes
def test_the_reader_ends_when_the_rpm_grows_during_the_upload(rekor, large_signed, keys,
                                                              log_key_file):
    body = EntryBody(large_signed, keys['rsa'].armored)
    with open(large_signed.path, 'ab') as fo:
        fo.write(b'more')
    client = koji_rekor.rekor.client_v1.RekorClient(upload_settings(rekor.url, log_key_file, timeout=5))
    try:
        with pytest.raises(koji_rekor.errors.SourceGone, match='changed while it was being sent'):
            client.create_entry(body)
    finally:
        client.close()
    assert body_threads() == []
    assert rekor.log.tree_size == 0


def test_an_rpm_removed_before_it_is_read_is_gone(large_signed, keys):
    body = EntryBody(large_signed, keys['rsa'].armored)
    os.unlink(large_signed.path)
    with pytest.raises(koji_rekor.errors.SourceGone, match='RPM file missing'):
        b''.join(body)
    assert body_threads() == []


def test_an_abandoned_iteration_stops_its_reader_by_itself(large_signed, keys):
    body = EntryBody(large_signed, keys['rsa'].armored, stall_timeout=0.2)
    chunks = iter(body)
    next(chunks), next(chunks)
    [reader] = body_threads()
    reader.join(THREAD_WAIT)  # nobody takes its chunks: it gives up
    assert not reader.is_alive()
    del chunks


def test_close_and_a_retry_stop_the_reader_of_an_unfinished_iteration(large_signed, keys):
    body = EntryBody(large_signed, keys['rsa'].armored)
    first = iter(body)
    next(first), next(first)
    [reader] = body_threads()
    again = iter(body)
    next(again)  # a retried request starts the body over
    assert not reader.is_alive()
    [reader] = body_threads()
    body.close()
    assert not reader.is_alive()
    assert body_threads() == []
    with koji.spliced_sig_reader(large_signed.path, large_signed.sighdr) as fo:
        assert b''.join(body)[len(body.prefix):-len(body.suffix)] \
            == base64.b64encode(fo.read())
    del first, again
