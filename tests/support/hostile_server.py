"""A hostile HTTP server on 127.0.0.1, on raw sockets, for the tests of the
plugin's network bounds: it can refuse connections, hang, drip an answer a
byte at a time, send canned answers (huge, nested, redirects, odd statuses),
or forward every connection to a real log (tests/support/rekor_server.py), so that a
test can turn a healthy log hostile and back on the same port.

    with HostileServer(backend=rekor) as front:
        front.url                 # "http://127.0.0.1:PORT"
        front.mode = 'drip'       # forward, hang, drip, canned
        front.refuse()            # nothing listens on the port ...
        front.serve()             # ... until it listens again

The mode is read when a connection is accepted. Every thread ends when the
server stops; every wait is bounded by that.
"""

import random
import socket
import threading

LOOPBACK = '127.0.0.1'
HEAD_LIMIT = 64 * 1024
POLL = 0.05


class HostileServer:
    def __init__(self, backend=None):
        self.backend = backend          # an object with .port (a RekorServer), for 'forward'
        self.mode = 'forward'
        self.drip_interval = 0.05       # seconds between two dripped bytes
        self.drip_head = (b'HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n'
                          b'Content-Length: 10000000\r\n\r\n')
        self.answer = None              # for 'canned': callable(method, path) -> iterable of bytes
        self.requests = []              # (method, path) of every request read
        self.sent = 0                   # bytes of canned answers sent
        self.stopping = threading.Event()
        self.threads = []
        self.connections = []
        self.lock = threading.Lock()
        self.listener = None
        self.port = 0
        self.serve()

    @property
    def url(self):
        return 'http://%s:%d' % (LOOPBACK, self.port)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.stop()

    # listening ---------------------------------------------------------------

    def serve(self):
        """Listen (again, on the same port)."""
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if self.port:
            listener.bind((LOOPBACK, self.port))
        else:
            # A port below the ephemeral range: while refusing, no outgoing
            # connection (of this machine, or one connecting to itself) can
            # take it, so that the server can listen on it again.
            for _ in range(100):
                try:
                    listener.bind((LOOPBACK, random.randrange(20000, 32000)))
                    break
                except OSError:
                    continue
            else:
                listener.bind((LOOPBACK, 0))
        listener.listen(16)
        listener.settimeout(POLL)
        self.port = listener.getsockname()[1]
        self.listener = listener
        self.spawn(self.accept_loop, listener)

    def refuse(self):
        """Stop listening: connections are refused."""
        listener, self.listener = self.listener, None
        if listener is not None:
            listener.close()

    def stop(self):
        self.stopping.set()
        self.refuse()
        with self.lock:
            for conn in self.connections:
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                conn.close()
        for thread in list(self.threads):
            thread.join(5)

    def spawn(self, target, *args):
        thread = threading.Thread(target=target, args=args, daemon=True)
        self.threads.append(thread)
        thread.start()

    def accept_loop(self, listener):
        while not self.stopping.is_set() and self.listener is listener:
            try:
                conn, _ = listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            conn.settimeout(POLL)
            with self.lock:
                self.connections.append(conn)
            self.spawn(self.handle, conn, self.mode)

    # one connection -------------------------------------------------------------

    def handle(self, conn, mode):
        try:
            if mode == 'forward':
                self.forward(conn)
                return
            while not self.stopping.is_set():
                request = self.read_request(conn)
                if request is None:
                    return
                self.requests.append(request)
                if mode == 'hang':
                    self.stopping.wait()
                    return
                if mode == 'drip':
                    self.drip(conn)
                    return
                for piece in self.answer(*request):
                    if self.stopping.is_set():
                        return
                    conn.sendall(piece)
                    self.sent += len(piece)
        except OSError:
            pass
        finally:
            conn.close()

    def recv(self, conn):
        """Some bytes, b'' at the end, None when stopping."""
        while not self.stopping.is_set():
            try:
                return conn.recv(65536)
            except socket.timeout:
                continue
        return None

    def read_request(self, conn):
        """(method, path) of one request, its body read and dropped."""
        data = b''
        while b'\r\n\r\n' not in data:
            chunk = self.recv(conn)
            if not chunk or len(data) > HEAD_LIMIT:
                return None
            data += chunk
        head, rest = data.split(b'\r\n\r\n', 1)
        lines = head.decode('latin-1').split('\r\n')
        method, path = lines[0].split(' ')[:2]
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(':')
            if name.strip().lower() == 'content-length':
                length = int(value)
        while len(rest) < length:
            chunk = self.recv(conn)
            if not chunk:
                return None
            rest += chunk
        return method, path

    def drip(self, conn):
        conn.sendall(self.drip_head)
        while not self.stopping.wait(self.drip_interval):
            conn.sendall(b' ')

    def forward(self, conn):
        backend = socket.create_connection((LOOPBACK, self.backend.port), timeout=5)
        backend.settimeout(POLL)
        with self.lock:
            self.connections.append(backend)
        self.spawn(self.pipe, backend, conn)
        self.pipe(conn, backend)

    def pipe(self, source, target):
        try:
            while True:
                data = self.recv(source)
                if not data:
                    break
                target.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def canned(status, body=b'', headers=()):
    """An answer callable for 'canned' mode: one answer, then close."""
    def answer(method, path):
        head = 'HTTP/1.1 %s\r\nContent-Length: %d\r\nConnection: close\r\n' % (status, len(body))
        head += ''.join('%s: %s\r\n' % h for h in headers) + '\r\n'
        yield head.encode('latin-1') + body
    return answer


def endless(status, first, then, limit=256 << 20):
    """An answer of a claimed length of 1 GiB: `first`, then `then` until
    `limit` bytes were sent (so that a client reading it whole survives)."""
    def answer(method, path):
        head = 'HTTP/1.1 %s\r\nContent-Length: %d\r\nContent-Type: application/json\r\n' \
            'Connection: close\r\n\r\n' % (status, 1 << 30)
        yield head.encode('latin-1') + first
        for _ in range(limit // len(then)):
            yield then
    return answer
