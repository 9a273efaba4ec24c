"""Bounded HTTP for the log clients: a watchdog on every request, capped answers."""

import contextlib
import json
import re
import socket
import threading
from dataclasses import dataclass

from ..display import innermost
from ..errors import RekorUnavailable

# Rekor's JSON answers are a few KiB (an rpm entry's body holds hashes, the
# header's NEVRA and the key, never the RPM); a log key is well under 64 KiB.
MAX_JSON_ANSWER = 4 * 1024 * 1024

MAX_KEY_ANSWER = 64 * 1024


class Watchdog:
    """Cuts the requests of one client at their deadline by shutting down
    the sockets of the connections the client's session opened."""

    def __init__(self):
        import weakref
        self.connections = weakref.WeakSet()
        self.lock = threading.Lock()
        self.cut = False

    def add(self, connection):
        with self.lock:
            self.connections.add(connection)

    @contextlib.contextmanager
    def deadline(self, remaining):
        self.cut = False
        timer = threading.Timer(max(remaining, 0), self.cut_now)
        timer.daemon = True
        timer.start()
        try:
            yield
        finally:
            timer.cancel()

    def cut_now(self):
        self.cut = True
        with self.lock:
            connections = list(self.connections)
        for connection in connections:
            sock = getattr(connection, 'sock', None)
            if sock is not None:
                with contextlib.suppress(OSError):
                    # socket.socket's own shutdown: an SSLSocket's would also
                    # tear down its TLS state under the reading thread.
                    socket.socket.shutdown(sock, socket.SHUT_RDWR)


def watched_adapter(requests, watchdog):
    """A requests adapter whose connections (direct or through a proxy)
    register with the watchdog when they connect."""
    from urllib3 import connection, connectionpool

    def tracked(base):
        def connect(self):
            base.connect(self)
            watchdog.add(self)
        return type('Watched' + base.__name__, (base,), {'connect': connect})

    pools = {
        'http': type('WatchedHTTPConnectionPool', (connectionpool.HTTPConnectionPool,),
                     {'ConnectionCls': tracked(connection.HTTPConnection)}),
        'https': type('WatchedHTTPSConnectionPool', (connectionpool.HTTPSConnectionPool,),
                      {'ConnectionCls': tracked(connection.HTTPSConnection)}),
    }

    class Adapter(requests.adapters.HTTPAdapter):
        def init_poolmanager(self, *args, **kws):
            super().init_poolmanager(*args, **kws)
            self.poolmanager.pool_classes_by_scheme = pools

        def proxy_manager_for(self, proxy, **kws):
            manager = super().proxy_manager_for(proxy, **kws)
            if hasattr(manager, 'pool_classes_by_scheme'):
                manager.pool_classes_by_scheme = pools
            return manager

    return Adapter(max_retries=0)


def bounded_session(requests, watchdog):
    """A requests session whose every connection the watchdog can close, as
    both log clients use: a request's own deadline, whatever the server does."""
    from .. import __version__
    session = requests.Session()
    adapter = watched_adapter(requests, watchdog)
    session.mount('https://', adapter)
    session.mount('http://', adapter)
    session.headers['User-Agent'] = 'koji-rekor/%s' % __version__
    # Decompressed answers could outgrow the size cap on the wire.
    session.headers['Accept-Encoding'] = 'identity'
    return session


def read_capped(response, cap, who):
    """An answer's whole body, or RekorUnavailable (not retried: the same
    answer would come again) once it passes cap bytes; who names the log."""
    chunks, size = [], 0
    while True:
        chunk = response.raw.read(65536, decode_content=True)
        if not chunk:
            return b''.join(chunks)
        size += len(chunk)
        if size > cap:
            raise RekorUnavailable('%s sent an answer larger than %d KiB' % (who, cap // 1024),
                                   at_once=True)
        chunks.append(chunk)


def is_timeout(exc):
    from urllib3.exceptions import NewConnectionError, TimeoutError as Urllib3Timeout
    import requests
    inner = innermost(exc)
    return isinstance(inner, TimeoutError) or (
        isinstance(exc, requests.Timeout) or isinstance(inner, Urllib3Timeout)) and not (
        isinstance(inner, NewConnectionError))


def urllib3_error():
    from urllib3.exceptions import HTTPError
    return HTTPError


@dataclass
class Answer:
    """A status, headers and a body read whole up to a cap."""
    status: int
    reason: str
    headers: dict
    content: bytes
    url: str

    def json(self):
        try:
            return json.loads(self.content)
        except (ValueError, RecursionError):
            raise RekorUnavailable('malformed reply from Rekor (HTTP %d, not JSON)' % self.status)


def is_object(value):
    return isinstance(value, dict)

# An entry ID is 80 hex digits, a UUID 64: an array item longer than this is
# no ID, and is refused before it is read whole.
MAX_ID_CHARS = 128

ID_ARRAY_TOKEN = re.compile(rb'[ \t\r\n]*(?:([\[\],])|"([0-9a-fA-F]{0,%d})")' % MAX_ID_CHARS)


def read_id_array(chunks):
    """The strings of a JSON array of hex strings (the index search's
    answer), parsed as the chunks arrive, keeping only an unfinished token
    between chunks. Hand-written: the standard json module reads only
    whole documents, and this array is flat and its items hex, so a token
    pattern and four states read it in bounded memory without a
    streaming-JSON dependency on the hub."""
    ids, state, rest = [], 'start', b''   # start, item, after, end
    for chunk in chunks:
        data, pos = rest + chunk, 0
        while True:
            match = ID_ARRAY_TOKEN.match(data, pos)
            if match is None:
                break
            mark, item = match.groups()
            if item is not None and state == 'item':
                ids.append(item.decode('ascii'))
                state = 'after'
            elif (state, mark) in (('start', b'['), ('after', b',')):
                state = 'item'
            elif mark == b']' and (state == 'after' or (state == 'item' and not ids)):
                state = 'end'
            else:
                raise RekorUnavailable('malformed index search answer from Rekor')
            pos = match.end()
        rest = data[pos:]
        if len(rest) > MAX_ID_CHARS + 64 or (state == 'end' and rest.strip()):
            raise RekorUnavailable('malformed index search answer from Rekor: an item that is '
                                   'not an entry ID')
    if state != 'end' or rest.strip():
        raise RekorUnavailable('malformed index search answer from Rekor: it ends early')
    return ids
