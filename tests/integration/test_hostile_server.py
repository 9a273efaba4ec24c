"""A hostile or broken log (issue 10, items 5 and 8): whatever the server
does, the plugin spends a bounded time and memory on it, writes nothing
outside rekor-logs/, loses no signature, and says what happened in one line.

The server is tests/support/hostile_server.py (raw sockets: drip, huge, canned
answers of every kind) in front of, or instead of, the local log of
tests/support/rekor_server.py. Hub requests that could hang or eat memory on a
broken client run in a process of their own (tests/support/hub_request.py), killed
after PROCESS_TIMEOUT.
"""

import json
import logging
import os
import subprocess
import sys
import time

import pytest

from tests.support import rekor_server
from tests.support.common import ROOT
from tests.support.hostile_server import HostileServer, canned, endless
from tests.integration.test_outbox import ENTRIES, PROCESS_TIMEOUT, packages, sigs, world  # noqa: F401

RETRIES = 2


@pytest.fixture
def front(world):
    with HostileServer(backend=world.rekor) as server:
        server.mode = 'canned'
        yield server


@pytest.fixture
def elsewhere():
    """Another server, where nothing must ever be sent."""
    with HostileServer() as server:
        server.mode = 'canned'
        server.answer = canned('200 OK', b'{}')
        yield server


def snapshot(world):
    """Every file outside rekor-logs/ (and the hub processes' own files)."""
    seen = {}
    for top, dirs, files in os.walk(world.tmp_path):
        dirs[:] = [d for d in dirs if not d.startswith('hub-request-')
                   and os.path.join(top, d) != str(world.topdir / 'rekor-logs')]
        for name in files:
            path = os.path.join(top, name)
            st = os.lstat(path)
            seen[path] = (st.st_size, st.st_mtime_ns)
    return seen


class Attack:
    def __init__(self, world, front, caplog):
        self.world, self.front, self.caplog = world, front, caplog
        self.imported = None

    def configure(self, **kws):
        options = dict(url=self.front.url, timeout=1, retries=RETRIES, backoff=0.01)
        options.update(kws)
        self.world.configure(**options)

    def run(self, answer=None, mode='canned', process=False, imported=None, earlier=()):
        """Import one signature against the hostile server; returns
        (where the signature is, its record, the one-line cause, seconds).
        earlier: signatures the test imported before."""
        world = self.world
        self.imported = imported = imported or world.sigs[0]
        self.front.mode, self.front.answer = mode, answer
        before = snapshot(world)
        start = time.monotonic()
        if process:
            code, out, err = world.hub_process([imported]).wait()
            assert code == 0, err
            log = err
        else:
            self.caplog.clear()
            world.sign(imported)
            log = self.caplog.text
            assert not any(r.exc_info for r in self.caplog.records), log
        held = time.monotonic() - start
        assert 'Traceback' not in log, log
        assert snapshot(world) == before, 'written outside rekor-logs/'
        place = world.account(imported, *earlier)[imported.name]   # nothing lost
        record = world.record(imported)
        cause = (record.get('set_aside') or {}).get('reason') or record['last_error']
        assert '\n' not in cause and len(cause) < 400, cause   # one line of cause
        return place, record, cause, held

    def posts(self):
        return sum(1 for method, path in self.front.requests if method == 'POST')

    def gets(self):
        return sum(1 for method, path in self.front.requests if method == 'GET')


@pytest.fixture
def attack(world, front, sigs, caplog):
    caplog.set_level(logging.INFO, logger='koji.plugin.rekor_log')
    world.sigs = sigs
    made = Attack(world, front, caplog)
    made.configure()
    return made


def error(status, message='m'):
    body = json.dumps({'code': int(status.split()[0]), 'message': message}).encode()
    return canned(status, body, [('Content-Type', 'application/json')])


# ---------------------------------------------------------------------------
# Time and size
# ---------------------------------------------------------------------------

def test_a_dripping_log_is_cut_at_the_request_deadline(attack):
    attack.configure(timeout=1, retries=1)
    place, record, cause, held = attack.run(mode='drip', process=True)
    assert place == 'queued' and record['next_attempt'] == 0
    assert cause.endswith('timed out after 1 s (after 2 attempts)'), cause
    assert held < 2 * 1.1 + 4   # two attempts of timeout + a few KiB at min_rate, loosely


def test_a_huge_answer_is_not_read_whole(attack):
    place, record, cause, held = attack.run(
        endless('201 Created', b'{"', b'a' * 65536), process=True)
    assert place == 'queued'
    assert 'sent an answer larger than 4096 KiB' in cause and 'attempts' not in cause, cause
    assert attack.posts() == 1
    assert attack.front.sent < 64 << 20, attack.front.sent


def test_the_deadline_grows_with_what_is_sent(attack, world):
    """A slow but working log is not cut off while the upload's size allows
    for it at min_rate; a stalled one is, at timeout plus that allowance."""
    world.rekor.faults.delay = 1.5          # answers 1.5 s late
    attack.configure(timeout=0.5, retries=0, hub_budget=60)
    text = world.hub.conf_path.read_text()
    # A test RPM's upload is a few KiB: 1 kB/s allows it several seconds.
    world.hub.conf_path.write_text(text.replace('[rekor]\n', '[rekor]\nmin_rate = 1000\n'))
    world.hub.module.CONFIG = None
    attack.front.mode = 'forward'
    world.sign(world.sigs[0])
    assert world.account(world.sigs[0]) == {world.sigs[0].name: 'receipt'}, \
        world.record(world.sigs[0])

    world.hub.conf_path.write_text(text.replace('[rekor]\n', '[rekor]\nmin_rate = 1e9\n'))
    world.hub.module.CONFIG = None
    place, record, cause, held = attack.run(mode='forward', imported=world.sigs[2],
                                            earlier=[world.sigs[0]])
    assert place == 'queued' and 'timed out after 0.5 s' in cause


@pytest.mark.parametrize('nested', ['[' * 100000, '{"message": ' * 50000],
                         ids=['a 201 of lists', 'a 400 of messages'])
def test_deeply_nested_json_is_a_malformed_answer(attack, nested):
    status = '201 Created' if nested.startswith('[') else '400 Bad Request'
    place, record, cause, _ = attack.run(canned(status, nested.encode()))
    if status.startswith('201'):
        assert place == 'queued' and cause.startswith('malformed reply from Rekor (HTTP 201, '
                                                      'not JSON)'), cause
    else:
        assert place == 'rejected' and cause == 'Rekor answered 400: Bad Request', cause


# ---------------------------------------------------------------------------
# Redirects and 409s lead nowhere else
# ---------------------------------------------------------------------------

@pytest.mark.parametrize('status', ['301 Moved Permanently', '302 Found', '303 See Other',
                                    '307 Temporary Redirect', '308 Permanent Redirect'])
def test_a_redirect_is_a_configuration_problem_and_not_followed(attack, elsewhere, status):
    place, record, cause, _ = attack.run(canned(status, b'', [
        ('Location', elsewhere.url + ENTRIES)]))
    assert place == 'queued' and record['next_attempt'] == 0   # kept, waits like for a down log
    assert cause.startswith('Rekor answered %s for %s' % (status.split()[0], ENTRIES)), cause
    assert elsewhere.requests == [] and attack.posts() == 1   # not followed, not retried


@pytest.mark.parametrize('where', ['elsewhere', 'scheme-relative', 'other path', 'https',
                                   'credentials'])
def test_a_409_is_followed_only_to_this_logs_entries(attack, elsewhere, where):
    port = attack.front.port
    location = {
        'elsewhere': elsewhere.url + ENTRIES + '/abc',
        'scheme-relative': '//127.0.0.1:%d%s/abc' % (elsewhere.port, ENTRIES),
        'other path': '/api/v1/log/publicKey',
        'https': 'https://127.0.0.1:%d%s/abc' % (port, ENTRIES),
        'credentials': 'http://user:secret@127.0.0.1:%d%s/abc' % (elsewhere.port, ENTRIES),
    }[where]
    place, record, cause, _ = attack.run(canned('409 Conflict', b'{}', [('Location', location)]))
    assert place == 'queued'
    assert cause.startswith('Rekor answered 409 with a Location outside its entries'), cause
    assert 'secret' not in cause
    assert elsewhere.requests == [] and attack.gets() == 0 and attack.posts() == 1


def test_a_409_and_its_fetch_share_one_set_of_retries(attack):
    def answer(method, path):
        if method == 'POST':
            return canned('409 Conflict', b'{}', [('Location', ENTRIES + '/abc')])(method, path)
        return error('503 Service Unavailable')(method, path)
    place, record, cause, _ = attack.run(answer)
    assert place == 'queued'
    assert cause == 'Rekor answered 503: m (after %d attempts)' % (RETRIES + 1), cause
    assert (attack.posts(), attack.gets()) == (RETRIES + 1, RETRIES + 1)


# ---------------------------------------------------------------------------
# Every odd status
# ---------------------------------------------------------------------------

TRANSIENT = ['408 Request Timeout', '425 Too Early', '429 Too Many Requests',
             '500 Internal Server Error', '502 Bad Gateway', '503 Service Unavailable',
             '504 Gateway Timeout', '599 Odd', '999 Odder']
CONFIGURATION = ['401 Unauthorized', '403 Forbidden', '404 Not Found', '300 Multiple Choices',
                 '304 Not Modified']
REFUSED = ['400 Bad Request', '405 Method Not Allowed', '406 Not Acceptable', '410 Gone',
           '413 Payload Too Large', '415 Unsupported Media Type', '418 Teapot',
           '422 Unprocessable Entity']
ODD_SUCCESS = ['200 OK', '202 Accepted', '204 No Content', '299 Odd']


@pytest.mark.parametrize('status', TRANSIENT + CONFIGURATION + REFUSED + ODD_SUCCESS)
def test_every_odd_status_has_its_meaning(attack, status):
    place, record, cause, _ = attack.run(error(status))
    if status in REFUSED:
        assert place == 'rejected'                                 # this entry, for good
        assert attack.posts() == 1
    elif status in CONFIGURATION:
        assert place == 'queued' and record['next_attempt'] == 0  # kept, waits for the log
        assert 'check [rekor] url and credentials' in cause and attack.posts() == 1
    else:
        assert place == 'queued' and record['next_attempt'] == 0
        assert attack.posts() == RETRIES + 1                       # retried
    assert (attack.world.topdir / 'rekor-logs' / '@state' / 'outage.json').exists() == (
        place == 'queued')


@pytest.mark.parametrize('body', [b'{"message": {"a": [1]}}', b'{"message": 5}', b'[]',
                                  b'\xff\x00\x1b[31m binary', b'{"message": "two\\nlines"}'])
def test_a_refusal_whose_message_is_not_text(attack, body):
    place, record, cause, _ = attack.run(canned('400 Bad Request', body))
    assert place == 'rejected'
    assert cause in ('Rekor answered 400: Bad Request', 'Rekor answered 400: two lines'), cause


# ---------------------------------------------------------------------------
# Absurd values in an answer
# ---------------------------------------------------------------------------

@pytest.mark.parametrize('when', ['1e20', '100000000000000000000', '-1', '"soon"'])
def test_an_entry_with_an_absurd_integrated_time(attack, when):
    entry = ('{"24296fb24b8ad77a%s": {"body": "e30=", "integratedTime": %s, "logID": "00", '
             '"logIndex": 0, "verification": {"inclusionProof": {"logIndex": 0, "treeSize": 1, '
             '"rootHash": "00", "hashes": []}}}}' % ('0' * 64, when))
    place, record, cause, _ = attack.run(canned('201 Created', entry.encode()))
    assert place == 'queued' and cause, cause


def test_a_log_that_signs_an_absurd_time_is_not_believed_and_verify_says_why(
        attack, world, tmp_path):
    """The log itself signs integratedTime 1e20 (a broken clock, or a lie):
    no receipt is written from it, the record waits with a one-line cause,
    and `koji-rekor verify` of that entry says why in one line."""
    from koji_rekor.entry import EntryBody
    from koji_rekor.rpmsig import locate_signed_rpm, read_public_key
    imported = world.sigs[0]
    signed = locate_signed_rpm(imported.build, imported.rpm, imported.sigkey)
    key = read_public_key(str(world.key_dir / ('%s.asc' % imported.sigkey)))
    body, sha256 = rekor_server.submit_rpm_entry(iter(EntryBody(signed, key)))
    entry, _ = world.rekor.log.add_entry(body, sha256, integrated_time=10 ** 20)

    attack.front.mode = 'forward'
    world.sign(imported)                    # 409: the entry the log already has
    assert world.account(imported) == {imported.name: 'queued'}
    assert 'not whole numbers in range' in world.record(imported)['last_error']

    entry_file = tmp_path / 'entry.json'
    entry_file.write_text(json.dumps(world.rekor.log.render_entry(entry)[1]))
    done = subprocess.run(
        [sys.executable, '-m', 'koji_rekor', 'verify', str(entry_file),
         '--log-key', str(world.log_key_file), '--origin', '127.0.0.1'],
        cwd=ROOT, capture_output=True, text=True, timeout=PROCESS_TIMEOUT,
        stdin=subprocess.DEVNULL)
    assert 'Traceback' not in done.stderr, done.stderr
    assert done.returncode == 1
    assert 'not whole numbers in range' in done.stderr


# ---------------------------------------------------------------------------
# Credentials, CAs and proxies
# ---------------------------------------------------------------------------

def test_credentials_in_the_url_go_nowhere_but_the_request(attack, world, caplog):
    front = attack.front
    url = 'http://koji:s3cr3t@127.0.0.1:%d' % front.port
    attack.configure(url=url)
    front.mode = 'forward'
    world.sign(world.sigs[0])                # the log works: a receipt
    front.refuse()
    world.sign(world.sigs[2])                # the log refuses connections: kept
    assert world.account(world.sigs[0], world.sigs[2]) == {
        world.sigs[0].name: 'receipt', world.sigs[2].name: 'queued'}
    assert 'connection refused' in world.record(world.sigs[2])['last_error']
    found = []
    for top, dirs, files in os.walk(world.topdir / 'rekor-logs'):
        for name in dirs + files:
            path = os.path.join(top, name)
            if 's3cr3t' in name or (os.path.isfile(path) and b's3cr3t' in open(path, 'rb').read()):
                found.append(path)
    assert found == []
    assert 's3cr3t' not in caplog.text
    assert world.receipt(world.sigs[0])['rekor_url'] == 'http://127.0.0.1:%d' % front.port


@pytest.fixture
def tls_log(tmp_path):
    """A canned HTTPS server on 127.0.0.1 with a certificate of a CA of its
    own; yields (url, the CA's PEM file)."""
    import datetime
    import http.server
    import ssl
    import threading
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    import ipaddress

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, 'test CA')])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address('127.0.0.1'))]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = tmp_path / 'ca.pem', tmp_path / 'key.pem'
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header('Content-Length', '2')
            self.end_headers()
            self.wfile.write(b'{}')

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={'poll_interval': 0.05},
                              daemon=True)
    thread.start()
    yield 'https://127.0.0.1:%d' % server.server_address[1], cert_file
    server.shutdown()
    server.server_close()
    thread.join(5)


def client_for(world, **settings):
    import koji_rekor.config
    import koji_rekor.errors
    import koji_rekor.rekor.client_v1
    values = dict(timeout=2, retries=0, backoff=0.01)
    values.update(settings)
    return koji_rekor.rekor.client_v1.RekorClient(koji_rekor.config.Settings(**values))


def test_ca_bundle_wins_over_requests_ca_bundle(world, tls_log, monkeypatch):
    import certifi
    import koji_rekor.config
    import koji_rekor.errors
    import koji_rekor.rekor.client_v1
    url, ca = tls_log
    monkeypatch.setenv('REQUESTS_CA_BUNDLE', certifi.where())   # does not know our CA
    client = client_for(world, url=url, ca_bundle=str(ca))
    try:
        assert client.log_info() == {}
    finally:
        client.close()
    client = client_for(world, url=url)     # no ca_bundle: the environment's CAs
    try:
        with pytest.raises(koji_rekor.errors.RekorUnavailable) as info:
            client.log_info()
    finally:
        client.close()
    assert str(info.value).startswith('cannot reach Rekor at %s: TLS: certificate verify '
                                      'failed' % url), info.value


def test_proxies_from_the_environment_still_work(world, elsewhere, monkeypatch):
    proxy = elsewhere
    target = 'http://127.0.0.1:1'           # nothing listens there: only the proxy can answer
    monkeypatch.setenv('HTTP_PROXY', proxy.url)
    monkeypatch.delenv('NO_PROXY', raising=False)
    monkeypatch.delenv('no_proxy', raising=False)
    client = client_for(world, url=target, allow_insecure_http=True)
    try:
        assert client.log_info() == {}
    finally:
        client.close()
    assert proxy.requests == [('GET', target + '/api/v1/log')]

    monkeypatch.setenv('NO_PROXY', '127.0.0.1')
    client = client_for(world, url=target, allow_insecure_http=True)
    try:
        with pytest.raises(Exception) as info:
            client.log_info()
    finally:
        client.close()
    assert 'connection refused' in str(info.value)
    assert len(proxy.requests) == 1


def test_a_dripping_proxy_is_cut_too(world, elsewhere, monkeypatch):
    import koji_rekor.config
    import koji_rekor.errors
    import koji_rekor.rekor.client_v1
    elsewhere.mode = 'drip'
    monkeypatch.setenv('HTTP_PROXY', elsewhere.url)
    client = client_for(world, url='http://127.0.0.1:1', timeout=0.5, allow_insecure_http=True)
    start = time.monotonic()
    try:
        with pytest.raises(koji_rekor.errors.RekorUnavailable) as info:
            client.log_info()
    finally:
        client.close()
    assert time.monotonic() - start < 0.5 + 3
    assert str(info.value).endswith('timed out after 0.5 s'), info.value
