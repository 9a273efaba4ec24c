#!/usr/bin/env python3
"""A local Rekor v1-compatible transparency log for tests, demos and benchmarks.

It speaks the subset of the Rekor v1 REST API that an RPM-signing client
needs (rpm v0.0.1 entries), keeps a real RFC 6962 Merkle tree, signs
checkpoints and signed entry timestamps (SETs) with an ECDSA P-256 key, and
really checks each RPM's OpenPGP signature with ``rpmkeys``.  It also lets a
test break it on purpose: ``RekorServer.faults`` makes it fail, stall, drop
connections or lie in specific ways.

Python use::

    log = RekorLog()                          # the log: key, trees, entries
    with RekorServer(log).start() as srv:     # HTTP on 127.0.0.1, own thread
        srv.url                               # "http://127.0.0.1:PORT"
        srv.faults.fail_count = 2             # next two entry POSTs get 503

Command line (for other processes)::

    python3 -m tests.support.rekor_server [--port N] [--state-dir DIR]
                                  [--key-out FILE] [--refuse-header-only]

Other processes steer it over HTTP: POST /_test/faults (a JSON object of
Faults fields), POST /_test/reset (faults and request counts),
GET /_test/state, POST /_test/rotate_shard, POST /_test/rewrite_history.

The server binds to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import dataclasses
import hashlib
import http
import http.server
import json
import os
import re
import secrets
import signal
import socket
import socketserver
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.parse
from dataclasses import dataclass, field
from typing import Iterator, Optional

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

LOOPBACK = "127.0.0.1"
ENTRIES_PATH = "/api/v1/log/entries"
MAX_SEARCH_QUERIES = 10            # Rekor's maxSearchQueries
MAX_DELAY_SECONDS = 600.0          # upper bound for the delay fault
SOCKET_TIMEOUT = 60.0              # a stalled client cannot hold a thread longer
STOP_JOIN_SECONDS = 5.0
RPMKEYS_TIMEOUT = 900.0            # checking a 1 GB RPM takes seconds, not minutes
PIECE = 1 << 20                    # request bodies are read 1 MiB at a time
BIG_STRING = 64 * 1024             # JSON strings longer than this go to disk
MAX_SKELETON = 16 * 1024 * 1024    # everything else in a proposed entry
MAX_SMALL_BODY = 16 * 1024 * 1024  # bodies of the search endpoints
MAX_KEY_BYTES = 1 << 20
BUSY_MAX_RATE = 1000.0             # entries a second other clients may append
BUSY_MAX_ENTRIES = 20000           # and in all, so a forgotten server stays small
BUSY_RATE = 25.0                   # what the tests' busy logs take (the public log: more)
LINGER_SECONDS = 2.0               # see _Handler._linger_close
LINGER_BYTES = 64 << 20
IMPOSTOR_HOST = "rekor.impostor.test"

# Every kind Rekor knows; other kinds fail its request parsing with 422.
REKOR_KINDS = frozenset({"alpine", "cose", "dsse", "hashedrekord", "helm", "intoto",
                         "jar", "rekord", "rfc3161", "rpm", "tuf"})

TAMPER_MODES = frozenset({
    "proof_hash", "root_hash", "checkpoint_signature", "checkpoint_key",
    "checkpoint_origin", "checkpoint_size", "set", "set_key", "log_id", "log_index",
    "integrated_time", "entry_uuid", "body_hash", "body_key", "no_checkpoint",
    "no_set", "tree_index", "forked_checkpoint",
})


# --------------------------------------------------------------------------
# Fault switches
# --------------------------------------------------------------------------

def _nonnegative_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _optional(check):
    return lambda value: value is None or check(value)


_FAULT_CHECKS = {
    "fail_status": lambda v: _nonnegative_int(v) and 100 <= v <= 599,
    "fail_count": _nonnegative_int,
    "fail_paths": _optional(lambda v: isinstance(v, (list, tuple))
                            and all(isinstance(p, str) and p.startswith("/") for p in v)),
    "delay": lambda v: (isinstance(v, (int, float)) and not isinstance(v, bool)
                        and 0 <= v <= MAX_DELAY_SECONDS),
    "drop_count": _nonnegative_int,
    "drop_after_commit": lambda v: isinstance(v, bool),
    "max_body_bytes": _optional(_nonnegative_int),
    "malformed_count": _nonnegative_int,
    "refuse_header_only": lambda v: isinstance(v, bool),
    "hold_index": lambda v: isinstance(v, bool),
    "tamper": _optional(lambda v: v in TAMPER_MODES),
    "lagging_count": _nonnegative_int,
    "queue_count": _nonnegative_int,
    "queued_lookups": lambda v: _nonnegative_int(v) and 1 <= v <= 1000,
    "disabled_paths": _optional(lambda v: isinstance(v, (list, tuple))
                                and all(isinstance(p, str) and p.startswith("/") for p in v)),
    "request_timeout": _optional(lambda v: isinstance(v, (int, float))
                                 and not isinstance(v, bool) and 0 < v <= MAX_DELAY_SECONDS),
    "read_rate": _optional(lambda v: _nonnegative_int(v) and v > 0),
}


@dataclass
class Faults:
    """Ways to make the server misbehave; every field is checked when set.

    fail_count, drop_count and delay apply to the requests chosen by
    fail_paths (path prefixes; None means only POST /api/v1/log/entries).
    Failed and dropped requests are read but not acted on, unless
    drop_after_commit; malformed answers (entry POSTs only) replace the
    answer of a request that was acted on.
    """

    fail_status: int = 503
    fail_count: int = 0
    fail_paths: Optional[list] = None
    delay: float = 0.0
    drop_count: int = 0
    drop_after_commit: bool = False   # drop after doing the work, so only the answer is lost
    max_body_bytes: Optional[int] = None
    malformed_count: int = 0
    refuse_header_only: bool = False
    hold_index: bool = False          # index writes wait for RekorLog.release_index()
    tamper: Optional[str] = None
    # Several Rekor instances behind one URL: the next lagging_count proof
    # requests reach an instance that has not seen the newest tree head yet.
    lagging_count: int = 0
    # The next queue_count new entries are queued, not integrated, and the
    # answer lost (the client gave up waiting); the entry integrates once
    # queued_lookups GETs of it have been made (each one before answers 404).
    queue_count: int = 0
    queued_lookups: int = 2
    # Endpoints an operator turned off (Rekor's --enabled_api_endpoints).
    disabled_paths: Optional[list] = None
    # The whole-request timeout, in seconds, of Rekor's HTTP server:
    # rekor-server serve (cmd/rekor-server/app/serve.go) runs the go-swagger
    # server (pkg/generated/restapi/server.go) as it is, which sets
    # http.Server ReadTimeout and WriteTimeout from its --read-timeout and
    # --write-timeout flags, 30 s each by default. Go's ReadTimeout covers the
    # request body; once it passes, reading fails and, the write deadline
    # being gone too, the client gets no answer: the connection is closed
    # under it. None: no such limit (a test's default, for speed).
    request_timeout: Optional[float] = None
    # Bytes a second the server reads a request body at: a slow link
    # between the client and the log, to make an upload take time.
    read_rate: Optional[int] = None

    def __setattr__(self, name, value):
        check = _FAULT_CHECKS.get(name)
        if check is None:
            raise AttributeError(f"no fault named {name!r}")
        if not check(value):
            raise ValueError(f"invalid value for fault {name}: {value!r}")
        super().__setattr__(name, value)

    def update(self, changes: dict) -> None:
        for name, value in changes.items():
            setattr(self, name, value)

    def reset(self) -> None:
        for f in dataclasses.fields(self):
            setattr(self, f.name, f.default)

    def applies_to(self, method: str, path: str) -> bool:
        if self.fail_paths is None:
            return method == "POST" and path == ENTRIES_PATH
        return any(path.startswith(prefix) for prefix in self.fail_paths)


# --------------------------------------------------------------------------
# The HTTP server
# --------------------------------------------------------------------------

class RekorServer:
    """Serves a RekorLog over HTTP on 127.0.0.1 from a daemon thread.

    The log is a separate object so a test can stop one server and start a
    new one on the same port with the same log ("Rekor down, then back").
    """

    def __init__(self, log: Optional[RekorLog] = None, host: str = LOOPBACK, port: int = 0,
                 busy: float = 0.0, busy_max: int = BUSY_MAX_ENTRIES):
        if host != LOOPBACK:
            raise ValueError("the test Rekor server only binds to 127.0.0.1")
        if not (0 <= busy <= BUSY_MAX_RATE and 0 <= busy_max):
            raise ValueError(f"busy must be 0 to {BUSY_MAX_RATE} entries a second")
        self.log = log if log is not None else RekorLog()
        # The public log never stands still: with busy, other clients append
        # that many entries a second (at most busy_max in all) while it serves.
        self.busy = busy
        self.busy_max = busy_max
        self.busy_added = 0
        self._busy_thread: Optional[threading.Thread] = None
        self.faults = Faults()
        self.requests: list = []               # (method, path, status); status 0 = dropped
        self.delay_started = threading.Event()  # set when a request starts a delay fault
        self._address = (host, port)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd: Optional[_HTTPServer] = None
        self._thread: Optional[threading.Thread] = None

    # lifecycle ------------------------------------------------------------

    def start(self) -> RekorServer:
        if self._httpd is not None:
            return self
        self._stopping.clear()
        self._httpd = _HTTPServer(self._address, self)
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        kwargs={"poll_interval": 0.1},
                                        name=f"rekor-server-{self.port}", daemon=True)
        self._thread.start()
        if self.busy:
            self._busy_thread = threading.Thread(target=self._other_clients,
                                                 name=f"rekor-busy-{self.port}", daemon=True)
            self._busy_thread.start()
        return self

    def _other_clients(self) -> None:
        """Append other clients' hashedrekord entries at the busy rate until
        the server stops or busy_max entries were added."""
        # The rate is read each time, so a test can make the log busier.
        while (self.busy_added < self.busy_max
               and not self._stopping.wait(1.0 / min(max(self.busy, 0.1), BUSY_MAX_RATE))):
            self.log.add_entry(_other_client_body(), other_client=True)
            self.busy_added += 1

    def stop(self, timeout: float = STOP_JOIN_SECONDS) -> None:
        """Stop serving; in-flight requests are cut off, not committed."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        self._stopping.set()  # wakes delayed requests and stops commits
        httpd.shutdown()      # returns within one poll interval
        httpd.server_close()
        httpd.close_connections(timeout)
        self._thread.join(timeout)
        if self._busy_thread is not None:
            self._busy_thread.join(timeout)
            self._busy_thread = None

    def __enter__(self) -> RekorServer:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._httpd is not None:
            return self._httpd.server_address[1]
        return self._address[1]

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    # fault and request bookkeeping -------------------------------------------

    def reset_faults(self) -> None:
        self.faults.reset()

    def count(self, method: str, path: str, status: Optional[int] = None) -> int:
        with self._lock:
            return sum(1 for m, p, s in self.requests
                       if m == method and p == path and (status is None or s == status))

    def state(self) -> dict:
        with self._lock:
            counts: dict = {}
            for method, path, status in self.requests:
                per_status = counts.setdefault(f"{method} {path}", {})
                per_status[str(status)] = per_status.get(str(status), 0) + 1
            total = len(self.requests)
        info = self.log.log_info()
        return {"entries": len(self.log.entries), "treeID": info["treeID"],
                "treeSize": info["treeSize"], "requests": total, "counts": counts,
                "faults": dataclasses.asdict(self.faults)}

    def take(self, counter: str) -> bool:
        """Consume one unit of a counted fault, atomically across threads."""
        with self._lock:
            left = getattr(self.faults, counter)
            if left <= 0:
                return False
            setattr(self.faults, counter, left - 1)
            return True

    def wait_delay(self) -> bool:
        """Sleep for the delay fault; False if the server stopped meanwhile."""
        if self.faults.delay <= 0:
            return True
        self.delay_started.set()
        return not self._stopping.wait(self.faults.delay)

    def record(self, method: str, path: str, status: int) -> None:
        with self._lock:
            self.requests.append((method, path, status))


class _HTTPServer(http.server.ThreadingHTTPServer):
    """Tracks live connections so stop() can cut keep-alive clients off."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, address, rekor: RekorServer):
        self.rekor = rekor
        self.api = _Api(rekor)
        self._live: dict = {}
        self._live_lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self):
        # HTTPServer.server_bind would look the host name up (getfqdn), which
        # can stall on a machine without working DNS; it is not needed here.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def process_request_thread(self, request, client_address):
        with self._live_lock:
            self._live[request] = threading.current_thread()
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._live_lock:
                self._live.pop(request, None)

    def close_connections(self, timeout: float) -> None:
        with self._live_lock:
            live = list(self._live.items())
        for sock, _ in live:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        deadline = time.monotonic() + timeout
        for _, thread in live:
            thread.join(max(0.0, deadline - time.monotonic()))


class ApiError(Exception):
    """An error answered with Rekor's error model, {"code": N, "message": "..."}."""

    def __init__(self, status: int, message: Optional[str] = None, headers=None, close=False):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}
        self.close = close   # the request body was not read: the connection must go

    def response(self) -> Response:
        if self.message is None:  # Rekor answers some 404s with no body at all
            return Response(self.status, b"", None, self.headers)
        return _error_response(self.status, self.message, self.headers)


class _Drop(Exception):
    """Close the connection without answering."""


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: Optional[str] = "application/json"
    headers: dict = field(default_factory=dict)


def _json_response(status: int, obj, headers=None) -> Response:
    # go-openapi's JSON producer: struct fields in (alphabetical) order, newline-terminated
    body = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return Response(status, (body + "\n").encode(), "application/json", headers or {})


def _error_response(status: int, message: str, headers=None) -> Response:
    return _json_response(status, {"code": status, "message": message}, headers)


def _status_phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Error"


class _Handler(http.server.BaseHTTPRequestHandler):
    """HTTP plumbing: faults, body reading, answering; the API is in _Api."""

    protocol_version = "HTTP/1.1"   # keep-alive, as Rekor's clients use it
    # Headers and body go out in two writes; with Nagle the second waits for
    # the client's delayed ACK (~40 ms) on a kept-alive connection. Go's
    # net/http sets TCP_NODELAY too.
    disable_nagle_algorithm = True
    server_version = "rekor-test"
    timeout = SOCKET_TIMEOUT

    def log_message(self, format, *args):  # noqa: A002 - stdlib signature
        pass  # tests assert on RekorServer.requests rather than read stderr

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_DELETE(self):
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        url = urllib.parse.urlsplit(self.path)
        self.body = None
        request = _Request(method, url.path, url.query, self)
        control = url.path.startswith("/_test/")
        try:
            try:
                self.body = _Body(self.rfile, self.headers, self.server.rekor.faults)
                if control:
                    self._answer(request, self.server.api.control(request), record=False)
                else:
                    self._serve(request)
            except ApiError as err:
                self._answer(request, err.response(), close=err.close, record=not control)
        except (_Drop, _RequestTimedOut):
            self._drop(request)
        except (ConnectionError, socket.timeout, _ClientGone):
            self.close_connection = True
        except Exception:  # noqa: BLE001 - a bug must not kill the server
            traceback.print_exc()
            self._answer(request, _error_response(500, "unexpected result from transparency log"),
                         close=True)

    def _serve(self, request: _Request) -> None:
        rekor, faults = self.server.rekor, self.server.rekor.faults
        endpoint = self.server.api.route(request)
        if faults.disabled_paths and any(request.path.startswith(prefix)
                                         for prefix in faults.disabled_paths):
            # An endpoint left out of --enabled_api_endpoints (its operationIds,
            # cmd/rekor-server/app/root.go) has no handler, and go-swagger
            # answers an operation without one with 501.
            self.body.drain()
            raise ApiError(501, f"operation {endpoint.__name__} has not yet been implemented")
        self._check_body_limit(faults.max_body_bytes)
        targeted = faults.applies_to(request.method, request.path)
        if targeted and not faults.drop_after_commit and rekor.take("drop_count"):
            self.body.drain()
            raise _Drop
        if targeted and rekor.take("fail_count"):
            self.body.drain()
            self._answer(request, _error_response(faults.fail_status,
                                                  _status_phrase(faults.fail_status)), targeted)
            return
        # the entry is still logged: only the answer is garbage
        garbled = request.is_entry_post and rekor.take("malformed_count")
        close = False
        try:
            response = endpoint(request)
        except ApiError as err:
            response, close = err.response(), err.close
        if targeted and faults.drop_after_commit and rekor.take("drop_count"):
            raise _Drop
        if garbled:
            response = Response(201, b'{"c0ffee": [truncated', "application/json")
        try:
            self._answer(request, response, targeted, close=close)
        finally:
            if request.after_answer is not None:
                request.after_answer()

    def _check_body_limit(self, limit: Optional[int]) -> None:
        self.body.limit = limit
        if limit is not None and self.body.length is not None and self.body.length > limit:
            # Rekor's message since "Update 413 status code error handling (#2813)"
            raise ApiError(413, f"Request Entity Too Large. Limit set to {limit}", close=True)

    def _answer(self, request, response: Response, delayed=False, close=False, record=True):
        if delayed and not self.server.rekor.wait_delay():
            raise _Drop  # the server is stopping: behave like a dying process
        if self.body is None or not self.body.consumed:
            close = True  # the unread rest of the body would be taken for the next request
        if record:   # before answering, so a client that has the answer sees the record
            self.server.rekor.record(request.method, request.path, response.status)
        self.send_response(response.status)
        if response.content_type:
            self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        for name, value in response.headers.items():
            self.send_header(name, value)
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(response.body)
        self.wfile.flush()
        if close and self.body is not None and not self.body.consumed:
            self._linger_close()

    def _linger_close(self) -> None:
        # Closing a socket with unread input makes the kernel send a reset,
        # which can destroy the answer before the client reads it. Like Go's
        # net/http, stop writing and discard input for a bounded time first.
        try:
            self.connection.shutdown(socket.SHUT_WR)
            deadline = time.monotonic() + LINGER_SECONDS
            discarded = 0
            while discarded < LINGER_BYTES and time.monotonic() < deadline:
                self.connection.settimeout(max(0.01, deadline - time.monotonic()))
                data = self.connection.recv(PIECE)
                if not data:
                    break
                discarded += len(data)
        except OSError:
            pass

    def _drop(self, request) -> None:
        self.server.rekor.record(request.method, request.path, 0)
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class _ClientGone(Exception):
    """The client closed the connection in the middle of the request body."""


class _RequestTimedOut(Exception):
    """The request outlasted Faults.request_timeout (Go's ReadTimeout)."""


class _Body:
    """The request body, read lazily in bounded pieces.

    Supports Content-Length and Transfer-Encoding: chunked, so a 1.3 GB
    upload never has to be in memory at once.
    """

    def __init__(self, rfile, headers, faults=None):
        self._rfile = rfile
        # Go starts the clock when it begins reading the request; the header
        # is small, so here it starts once the header is read.
        timeout = faults.request_timeout if faults is not None else None
        self._deadline = time.monotonic() + timeout if timeout else None
        self._rate = faults.read_rate if faults is not None else None
        self.chunked = "chunked" in headers.get("Transfer-Encoding", "").lower()
        self.length: Optional[int] = None
        if not self.chunked:
            try:
                self.length = int(headers.get("Content-Length") or 0)
            except ValueError:
                raise ApiError(400, "invalid Content-Length", close=True) from None
            if self.length < 0:
                raise ApiError(400, "invalid Content-Length", close=True)
        self.limit: Optional[int] = None
        self.consumed = self.length == 0
        self._started = False

    def pieces(self) -> Iterator[bytes]:
        if self._started:
            raise RuntimeError("the request body can be read only once")
        self._started = True
        source = self._chunked_pieces() if self.chunked else self._sized_pieces()
        total, started = 0, time.monotonic()
        for piece in source:
            total += len(piece)
            if self._rate:  # the slow link: this much took total / rate seconds
                until = started + total / self._rate
                if self._deadline is not None:
                    until = min(until, self._deadline + 0.001)
                time.sleep(max(0.0, until - time.monotonic()))
            if self._deadline is not None and time.monotonic() > self._deadline:
                raise _RequestTimedOut
            if self.limit is not None and total > self.limit:
                raise ApiError(413, f"Request Entity Too Large. Limit set to {self.limit}",
                               close=True)
            yield piece
        self.consumed = True

    def drain(self) -> None:
        if not self._started:
            for _ in self.pieces():
                pass

    def read_all(self, cap: int) -> bytes:
        data = bytearray()
        for piece in self.pieces():
            data += piece
            if len(data) > cap:
                raise ApiError(413, f"Request Entity Too Large. Limit set to {cap}", close=True)
        return bytes(data)

    def _sized_pieces(self) -> Iterator[bytes]:
        remaining = self.length
        while remaining > 0:
            piece = self._rfile.read(min(remaining, PIECE))
            if not piece:
                raise _ClientGone
            remaining -= len(piece)
            yield piece

    def _chunked_pieces(self) -> Iterator[bytes]:
        while True:
            size = self._chunk_size()
            if size == 0:
                self._skip_trailers()
                return
            remaining = size
            while remaining > 0:
                piece = self._rfile.read(min(remaining, PIECE))
                if not piece:
                    raise _ClientGone
                remaining -= len(piece)
                yield piece
            if self._rfile.read(2) != b"\r\n":
                raise ApiError(400, "malformed chunked request body", close=True)

    def _chunk_size(self) -> int:
        line = self._rfile.readline(1025)
        if not line:
            raise _ClientGone
        try:
            return int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise ApiError(400, "malformed chunked request body", close=True) from None

    def _skip_trailers(self) -> None:
        for _ in range(100):  # a sane client sends none or a few
            line = self._rfile.readline(8193)
            if line in (b"\r\n", b"\n", b""):
                return
        raise ApiError(400, "too many trailers in chunked request body", close=True)


@dataclass
class _Request:
    method: str
    path: str
    query_string: str
    handler: _Handler
    params: dict = field(default_factory=dict)   # from the matched route
    after_answer: Optional[object] = None          # work done once the answer is sent

    @property
    def body(self) -> _Body:
        return self.handler.body

    @property
    def query(self) -> dict:
        return urllib.parse.parse_qs(self.query_string, keep_blank_values=True)

    @property
    def is_entry_post(self) -> bool:
        return self.method == "POST" and self.path == ENTRIES_PATH

    def json_body(self):
        raw = self.body.read_all(MAX_SMALL_BODY)
        try:
            return json.loads(raw)
        except ValueError as err:
            raise ApiError(400, f"parsing request body failed, because {err}") from None


# --------------------------------------------------------------------------
# The Rekor API
# --------------------------------------------------------------------------

class _Api:
    """Rekor v1 endpoints; each takes a _Request and returns a Response."""

    def __init__(self, rekor: RekorServer):
        self.rekor = rekor
        self._routes = [
            ("POST", re.compile(r"/api/v1/log/entries"), self.create_entry),
            ("GET", re.compile(r"/api/v1/log/entries"), self.get_entry_by_index),
            ("POST", re.compile(r"/api/v1/log/entries/retrieve"), self.search_entries),
            ("GET", re.compile(r"/api/v1/log/entries/(?P<id>[^/]*)"), self.get_entry_by_id),
            ("POST", re.compile(r"/api/v1/index/retrieve"), self.search_index),
            ("GET", re.compile(r"/api/v1/log"), self.log_info),
            ("GET", re.compile(r"/api/v1/log/publicKey"), self.public_key),
            ("GET", re.compile(r"/api/v1/log/proof"), self.log_proof),
        ]

    @property
    def log(self) -> RekorLog:
        return self.rekor.log

    def route(self, request: _Request):
        """The endpoint for a request; 404 or 405 (go-swagger's wording) if none."""
        allowed = []
        for method, pattern, endpoint in self._routes:
            match = pattern.fullmatch(request.path)
            if match and method == request.method:
                request.params = match.groupdict()
                return endpoint
            if match:
                allowed.append(method)
        if allowed:
            raise ApiError(405, f"method {request.method} is not allowed, but "
                                f"[{','.join(allowed)}] are")
        raise ApiError(404, f"path {request.path} was not found")

    # entries -------------------------------------------------------------

    def create_entry(self, request: _Request) -> Response:
        faults = self.rekor.faults
        body, package_sha256 = submit_rpm_entry(request.body.pieces(), faults.refuse_header_only)
        if faults.tamper in ("body_hash", "body_key"):
            body = _lying_body(body, faults.tamper, self.log)
        if self.rekor.stopping:
            raise _Drop  # a dying server does not commit
        queued = self.log.queued_id(body)
        if queued is not None:
            # Trillian deduplicates at QueueLeaf time (ALREADY_EXISTS), before
            # the leaf is integrated: Rekor answers 409 for an entry that a GET
            # does not find yet (pkg/api/entries.go createLogEntry;
            # pkg/trillianclient AddLeaf).
            raise ApiError(409, "an equivalent entry already exists in the transparency log "
                                f"with UUID {queued}",
                           headers={"Location": _entry_location(request, queued)})
        if self.rekor.take("queue_count"):
            self.log.queue_entry(body, package_sha256, faults.queued_lookups)
            raise _Drop  # the client stopped waiting for the integration
        entry, created = self.log.add_entry(body, package_sha256=package_sha256, index=False)
        if created:
            # Rekor writes its search index in a goroutine after answering:
            # an entry is in the log before the index knows it, if ever.
            request.after_answer = lambda: self.log.index_entry(entry, faults.hold_index)
        if not created:
            location = _entry_location(request, entry.entry_id)
            raise ApiError(409, "an equivalent entry already exists in the transparency log "
                                f"with UUID {entry.entry_id}", headers={"Location": location})
        entry_id, document = self.log.render_entry(entry, faults.tamper)
        headers = {"Location": _entry_location(request, entry_id), "ETag": entry_id}
        return _json_response(201, document, headers)

    def get_entry_by_index(self, request: _Request) -> Response:
        index = _int_param(request.query, "logIndex", minimum=0, required=True)
        entry = self.log.entry_at(index)
        if entry is None:
            raise ApiError(404)
        return _json_response(200, self.log.render_entry(entry, self.rekor.faults.tamper)[1])

    def get_entry_by_id(self, request: _Request) -> Response:
        entry_id = request.params["id"]
        if not _ENTRY_ID.fullmatch(entry_id):
            raise ApiError(422, "entryUUID in path should match "
                                "'^([0-9a-fA-F]{64}|[0-9a-fA-F]{80})$'")
        entry = self.log.find(entry_id) or self.log.integrate_if_due(entry_id)
        if entry is None:
            raise ApiError(404)
        return _json_response(200, self.log.render_entry(entry, self.rekor.faults.tamper)[1])

    def search_entries(self, request: _Request) -> Response:
        query = request.json_body()
        if not isinstance(query, dict):
            raise ApiError(400, "parsing entry body failed: expected a JSON object")
        ids = query.get("entryUUIDs") or []
        indexes = query.get("logIndexes") or []
        proposed = query.get("entries") or []
        if not all(isinstance(v, list) for v in (ids, indexes, proposed)):
            raise ApiError(422, "entryUUIDs, logIndexes and entries must be arrays")
        if len(ids) + len(indexes) + len(proposed) > MAX_SEARCH_QUERIES:
            message = f"more than max allowed {MAX_SEARCH_QUERIES} entries in request"
            raise ApiError(422, message)
        if proposed:
            raise ApiError(400, "searching by proposed entries is not supported by this test log")
        tamper = self.rekor.faults.tamper
        return _json_response(200, [self.log.render_entry(e, tamper)[1]
                                    for e in self._search(ids, indexes)])

    def _search(self, ids, indexes) -> list:
        # Rekor answers full entry IDs first, then plain UUIDs (searched in
        # every shard), then log indexes; missing entries are skipped.
        found, plain = [], []
        for entry_id in ids:
            if not isinstance(entry_id, str) or not _ENTRY_ID.fullmatch(entry_id):
                kind = "entryID" if isinstance(entry_id, str) and len(entry_id) == 80 else "uuid"
                raise ApiError(400, f"invalid {kind} {entry_id}")
            if len(entry_id) == 80:
                found += [e for e in [self.log.find(entry_id)] if e]
            else:
                plain.append(entry_id.lower())
        for uuid in plain:
            found += self.log.find_in_all_shards(uuid)
        for index in indexes:
            if not _nonnegative_int(index):
                raise ApiError(422, "logIndexes in body should be greater than or equal to 0")
            found += [e for e in [self.log.entry_at(index)] if e]
        return found

    # index ---------------------------------------------------------------

    def search_index(self, request: _Request) -> Response:
        query = request.json_body()
        if not isinstance(query, dict):
            raise ApiError(400, "parsing query body failed: expected a JSON object")
        lookups = self._index_lookups(query)
        operator = (query.get("operator") or "or").lower()
        return _json_response(200, self.log.search_index(lookups, operator == "and"))

    def _index_lookups(self, query: dict) -> list:
        lookups = []
        if query.get("hash"):
            lookups.append(_prefix_sha(str(query["hash"])).lower())
        if query.get("publicKey") is not None:
            lookups.append(self._key_lookup(query["publicKey"]))
        for name in ("email", "subject"):
            if query.get(name):
                lookups.append(str(query[name]).lower())
        return lookups

    @staticmethod
    def _key_lookup(public_key) -> str:
        if not isinstance(public_key, dict) or public_key.get("format") != "pgp":
            raise ApiError(400, "the PKI format requested is not supported by this server")
        try:   # binascii.Error is a ValueError too
            content = base64.b64decode(public_key.get("content") or "", validate=True)
            key = OpenPgpKey.parse(content)
        except ValueError:
            raise ApiError(400, "public key provided could not be parsed") from None
        return hashlib.sha256(key.canonical_armor).hexdigest()

    # tree ----------------------------------------------------------------

    def log_info(self, request: _Request) -> Response:
        return _json_response(200, self.log.log_info())

    def public_key(self, request: _Request) -> Response:
        tree_id = (request.query.get("treeID") or [""])[0]
        if tree_id and not (tree_id.isdigit() and self.log.has_tree(int(tree_id))):
            raise ApiError(400, f"{tree_id} is not a valid tree ID and doesn't have an "
                                "associated public key")
        # Rekor answers the key of the shard asked for, else the active one's
        # (GetPublicKeyHandler, pkg/api/public_key.go).
        return Response(200, self.log.public_key_pem_of(int(tree_id) if tree_id else None),
                        "application/x-pem-file")

    def log_proof(self, request: _Request) -> Response:
        query = request.query
        first = _int_param(query, "firstSize", minimum=1, default=1)
        last = _int_param(query, "lastSize", minimum=1, required=True)
        if first > last:
            raise ApiError(400, f"firstSize({first}) must be less than lastSize({last})")
        tree_id = self._proof_tree(query)
        size = self.log.tree_size_of(tree_id)
        if self.rekor.take("lagging_count"):
            # An instance behind the others: it has not seen the newest head.
            size = min(size, last - 1)
        if last > size:
            # Trillian answers a proof past the size it observes with no
            # proof; Rekor turns that into this 400, also for a tree head it
            # signed itself on another instance (GetLogProofHandler in
            # pkg/api/tlog.go, lastSizeGreaterThanKnown).
            raise ApiError(400, f"the tree size requested({last}) was greater than what is "
                                f"currently observable({size})")
        root, proof = self.log.consistency_proof(first, last, tree_id)
        # rootHash is the root of the latest tree (the SignedLogRoot Trillian
        # returns beside the proof), not the root at lastSize: on a live log
        # the two differ (GetLogProofHandler in pkg/api/tlog.go).
        return _json_response(200, {"rootHash": root.hex(), "hashes": [h.hex() for h in proof]})

    def _proof_tree(self, query: dict) -> int:
        tree_id = (query.get("treeID") or [""])[0]
        if not tree_id:
            return self.log.tree_id
        if not tree_id.isdigit():
            raise ApiError(400, f"invalid tree ID specified: {tree_id}")
        if not self.log.has_tree(int(tree_id)):
            raise ApiError(400, f"no log range found for tree ID {int(tree_id)}")
        return int(tree_id)

    # test control (never subject to faults, not recorded) ----------------------

    def control(self, request: _Request) -> Response:
        action = (request.method, request.path)
        if action == ("GET", "/_test/state"):
            return _json_response(200, self.rekor.state())
        if request.method != "POST":
            raise ApiError(404, f"path {request.path} was not found")
        if request.path == "/_test/faults":
            return self._set_faults(request.json_body())
        if request.path == "/_test/reset":
            request.body.drain()
            self.rekor.reset_faults()
            with self.rekor._lock:
                self.rekor.requests.clear()
            return _json_response(200, self.rekor.state())
        if request.path == "/_test/rotate_shard":
            request.body.drain()
            return _json_response(200, {"treeID": str(self.log.rotate_shard())})
        if request.path == "/_test/rewrite_history":
            request.body.drain()
            return _json_response(200, {"entryID": self.log.rewrite_history().entry_id})
        raise ApiError(404, f"path {request.path} was not found")

    def _set_faults(self, changes) -> Response:
        if not isinstance(changes, dict):
            raise ApiError(400, "expected a JSON object of fault fields")
        try:
            trial = dataclasses.replace(self.rekor.faults)
            trial.update(changes)  # validate everything before changing anything
        except (AttributeError, ValueError) as err:
            raise ApiError(400, str(err)) from None
        self.rekor.faults.update(changes)
        return _json_response(200, dataclasses.asdict(self.rekor.faults))


_ENTRY_ID = re.compile(r"[0-9a-fA-F]{64}|[0-9a-fA-F]{80}")


def _int_param(query: dict, name: str, minimum: int, required=False, default=None) -> int:
    """A query parameter checked the way go-swagger does (422 on violations)."""
    values = query.get(name)
    if not values:
        if required:
            raise ApiError(422, f"{name} in query is required")
        return default
    try:
        value = int(values[0])
    except ValueError:
        raise ApiError(422, f"{name} in query must be of type int64: \"{values[0]}\"") from None
    if value < minimum:
        raise ApiError(422, f"{name} in query should be greater than or equal to {minimum}")
    return value


def _entry_location(request: _Request, entry_id: str) -> str:
    # Rekor appends the ID to the request's own URL, which on the server side
    # is path-only: the Location is relative. It keeps the query, minus apiKey.
    query = [(k, v) for k, v in urllib.parse.parse_qsl(request.query_string, True)
             if k != "apiKey"]
    location = f"{request.path}/{entry_id}"
    return f"{location}?{urllib.parse.urlencode(query)}" if query else location


def _prefix_sha(value: str) -> str:
    if ":" in value:
        return value
    prefix = {40: "sha1:", 64: "sha256:", 96: "sha384:", 128: "sha512:"}.get(len(value), "")
    return prefix + value


# --------------------------------------------------------------------------
# The log
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class Entry:
    """One stored log entry."""

    body: bytes
    uuid: str                 # hex RFC 6962 leaf hash of body
    tree_id: int
    tree_index: int           # index inside its tree (the proof's logIndex)
    global_index: int         # shard offset + tree_index (the entry's logIndex)
    integrated_time: int
    package_sha256: str       # sha256 of the RPM actually submitted

    @property
    def entry_id(self) -> str:
        return f"{self.tree_id:016x}{self.uuid}"


@dataclass
class _Tree:
    tree_id: int
    offset: int                      # global index of its first entry
    merkle: MerkleTree = field(default_factory=lambda: MerkleTree())  # defined below
    entries: list = field(default_factory=list)
    by_uuid: dict = field(default_factory=dict)
    frozen_checkpoint: Optional[str] = None   # set once the shard is inactive
    signer: Optional[_Signer] = None          # its own key (None: the log's first)

    @property
    def size(self) -> int:
        return len(self.entries)


class RekorLog:
    """The log's state: signing key, shards (trees), entries and search index.

    Thread-safe. With state_dir, the key and every change are stored there
    (a PEM file and a JSON-lines journal), so a restarted process is the
    same log; the stored state then wins over the other arguments.
    """

    def __init__(self, tree_id: Optional[int] = None, index_offset: int = 0,
                 origin_host: str = LOOPBACK, signing_key=None,
                 checkpoint_extra_lines=(), state_dir: Optional[str] = None):
        # Several hosts: replicas of one log, each signing with its own name.
        # Rekor signs checkpoints as rekor_server.hostname, whose default is
        # os.Hostname() (cmd/rekor-server/app/root.go): a pod's name on
        # Kubernetes, one per replica, when the chart does not set it.
        self.origin_hosts = (origin_host,) if isinstance(origin_host, str) else tuple(origin_host)
        self._next_origin = 0
        self.checkpoint_extra_lines = tuple(checkpoint_extra_lines)
        self._lock = threading.RLock()
        self._trees: list = []            # oldest first; the last one is active
        self._index: dict = {}            # index key -> [entry IDs]
        self._index_now = True
        self._held_index: list = []       # entries whose index keys wait (hold_index)
        self._queued: dict = {}           # uuid -> [body, package sha256, lookups left]
        self._other_clients: set = set()  # uuids the busy mode appended
        self._impostor: Optional[_Signer] = None
        self._impostor_pgp: Optional[bytes] = None
        self._replaying = False
        self._journal = _Journal(state_dir) if state_dir else None
        if self._journal and self._journal.exists():
            self._signer = _Signer(_load_private_key(self._journal.read_key()))
            self._replay(self._journal.records())
            return
        self._signer = _Signer(_load_private_key(signing_key) if signing_key is not None
                               else ec.generate_private_key(ec.SECP256R1()))
        self._trees.append(_Tree(tree_id or _new_tree_id(), index_offset))
        if self._journal:
            self._journal.create(self._signer.private_pem,
                                 {"op": "init", "tree_id": self.tree_id,
                                  "index_offset": index_offset})

    # identity --------------------------------------------------------------

    @property
    def origin_host(self) -> str:
        """The host the replica answering now signs as (round robin)."""
        with self._lock:
            self._next_origin = (self._next_origin + 1) % len(self.origin_hosts)
            return self.origin_hosts[self._next_origin]

    @property
    def public_key_pem(self) -> bytes:
        return self._signer.public_pem

    @property
    def log_id(self) -> str:
        return self.signer_of().log_id

    @property
    def tree_id(self) -> int:
        return self._active.tree_id

    @property
    def tree_size(self) -> int:
        return self._active.size

    @property
    def inactive_tree_ids(self) -> list:
        return [t.tree_id for t in self._trees[:-1]]

    @property
    def entries(self) -> list:
        with self._lock:
            return [e for tree in self._trees for e in tree.entries]

    @property
    def submitted(self) -> list:
        """The entries clients of the test submitted, without those the
        busy mode's other clients appended."""
        with self._lock:
            return [e for tree in self._trees for e in tree.entries
                    if e.uuid not in self._other_clients]

    @property
    def _active(self) -> _Tree:
        return self._trees[-1]

    # changes -----------------------------------------------------------------

    def add_entry(self, body: bytes, package_sha256: str = "",
                  integrated_time: Optional[int] = None, index: bool = True,
                  other_client: bool = False) -> tuple:
        """Append a canonical body; (entry, False) if the active tree has it.

        index=False leaves the search index to a later index_entry(), as
        Rekor writes it after answering.
        """
        uuid = _leaf_hash(body).hex()
        with self._lock:
            existing = self._active.by_uuid.get(uuid)
            if existing is not None:
                return existing, False
            record = {"op": "add", "body": _b64(body), "package_sha256": package_sha256,
                      "integrated_time": int(time.time()) if integrated_time is None
                      else integrated_time}
            self._index_now = index
            try:
                entry = self._apply(record)
            finally:
                self._index_now = True
            if other_client:
                self._other_clients.add(uuid)
            return entry, True

    def index_entry(self, entry: Entry, hold: bool = False) -> None:
        """Write an entry's search index keys (now, or at release_index())."""
        with self._lock:
            if hold:
                self._held_index.append(entry)
                return
            for key in _index_keys(entry.body):
                self._index.setdefault(key, []).append(entry.entry_id)

    def release_index(self) -> int:
        """Write the index keys held back; how many entries they were for."""
        with self._lock:
            held, self._held_index = self._held_index, []
        for entry in held:
            self.index_entry(entry)
        return len(held)

    def rotate_shard(self, new_tree_id: Optional[int] = None, signing_key=None) -> int:
        """Freeze the active tree (it becomes an inactive shard) and start a new one,
        signed with signing_key if given: Rekor's sharding configuration
        gives each shard its own key (pemPubKey, pkg/sharding/ranges.go)."""
        with self._lock:
            old = self._active
            checkpoint = self._checkpoint(old, old.size)
            new_id = new_tree_id or _new_tree_id(exclude={t.tree_id for t in self._trees})
            record = {"op": "rotate", "tree_id": new_id, "checkpoint": checkpoint}
            if signing_key is not None:
                record["signing_key"] = _Signer(_load_private_key(signing_key)).private_pem.decode()
            self._apply(record)
            return new_id

    def signer_of(self, tree_id: Optional[int] = None) -> _Signer:
        tree = self._tree(tree_id) if tree_id else self._active
        return tree.signer or self._signer

    def public_key_pem_of(self, tree_id: Optional[int] = None) -> bytes:
        return self.signer_of(tree_id).public_pem

    def rewrite_history(self) -> Entry:
        """Lie: replace leaf 0 of the active tree by other data, keeping the size."""
        with self._lock:
            if not self._active.entries:
                raise ValueError("the active tree is empty: there is no history to rewrite")
            body = _rewritten_body(self._active.entries[0].body)
            return self._apply({"op": "rewrite", "body": _b64(body)})

    def _apply(self, record: dict):
        """Apply one journal record (new or replayed) and persist it."""
        handler = {"add": self._apply_add, "rotate": self._apply_rotate,
                   "rewrite": self._apply_rewrite}[record["op"]]
        result = handler(record)
        if self._journal and not self._replaying:
            self._journal.append(record)
        return result

    def _apply_add(self, record: dict) -> Entry:
        tree, body = self._active, base64.b64decode(record["body"])
        entry = Entry(body=body, uuid=_leaf_hash(body).hex(), tree_id=tree.tree_id,
                      tree_index=tree.size, global_index=tree.offset + tree.size,
                      integrated_time=record["integrated_time"],
                      package_sha256=record.get("package_sha256", ""))
        tree.merkle.append(bytes.fromhex(entry.uuid))
        tree.entries.append(entry)
        tree.by_uuid[entry.uuid] = entry
        if self._index_now or self._replaying:
            self.index_entry(entry)
        return entry

    def _apply_rotate(self, record: dict) -> None:
        old = self._active
        old.frozen_checkpoint = record["checkpoint"]
        signer = (_Signer(_load_private_key(record["signing_key"]))
                  if record.get("signing_key") else None)
        self._trees.append(_Tree(record["tree_id"], old.offset + old.size, signer=signer))

    def _apply_rewrite(self, record: dict) -> Entry:
        tree, body = self._active, base64.b64decode(record["body"])
        old = tree.entries[0]
        entry = dataclasses.replace(old, body=body, uuid=_leaf_hash(body).hex())
        tree.merkle.replace(0, bytes.fromhex(entry.uuid))
        tree.entries[0] = entry
        del tree.by_uuid[old.uuid]
        tree.by_uuid[entry.uuid] = entry
        return entry

    def _replay(self, records: list) -> None:
        init = records[0]
        self._trees.append(_Tree(init["tree_id"], init.get("index_offset", 0)))
        self._replaying = True
        try:
            for record in records[1:]:
                self._apply(record)
        finally:
            self._replaying = False

    # lookups -----------------------------------------------------------------

    def has_tree(self, tree_id: int) -> bool:
        return self._tree(tree_id) is not None

    def tree_size_of(self, tree_id: int) -> int:
        return self._tree(tree_id).size

    def find(self, entry_id: str) -> Optional[Entry]:
        """An entry by 80-hex entry ID (that tree only) or 64-hex UUID (any tree)."""
        entry_id = entry_id.lower()
        if len(entry_id) == 64:
            found = self.find_in_all_shards(entry_id)
            return found[0] if found else None
        tree = self._tree(int(entry_id[:16], 16))
        return tree.by_uuid.get(entry_id[16:]) if tree else None

    def find_in_all_shards(self, uuid: str) -> list:
        with self._lock:   # Rekor looks in the active shard first
            trees = [self._active] + self._trees[:-1]
            return [t.by_uuid[uuid] for t in trees if uuid in t.by_uuid]

    def entry_at(self, global_index: int) -> Optional[Entry]:
        with self._lock:
            for tree in self._trees:
                if tree.offset <= global_index < tree.offset + tree.size:
                    return tree.entries[global_index - tree.offset]
        return None

    def search_index(self, lookups: list, intersect: bool = False) -> list:
        with self._lock:
            found = [self._index.get(key, []) for key in lookups]
        if not found:
            return []
        if intersect:
            common = set(found[0]).intersection(*found[1:])
            return [e for e in dict.fromkeys(found[0]) if e in common]
        return list(dict.fromkeys(e for ids in found for e in ids))

    def _tree(self, tree_id: int) -> Optional[_Tree]:
        return next((t for t in self._trees if t.tree_id == tree_id), None)

    # proofs and signed views --------------------------------------------------

    def root_hash(self, size: Optional[int] = None, tree_id: Optional[int] = None) -> bytes:
        with self._lock:
            tree = self._tree(tree_id) if tree_id else self._active
            return tree.merkle.root(tree.size if size is None else size)

    def inclusion_proof(self, tree_index: int, size: Optional[int] = None,
                        tree_id: Optional[int] = None) -> list:
        with self._lock:
            tree = self._tree(tree_id) if tree_id else self._active
            return tree.merkle.inclusion_proof(tree_index, tree.size if size is None else size)

    def consistency_proof(self, first: int, last: int, tree_id: Optional[int] = None) -> tuple:
        """(root of the whole tree now, RFC 9162 consistency proof from first
        to last), as Rekor answers it."""
        with self._lock:
            tree = self._tree(tree_id) if tree_id else self._active
            return tree.merkle.root(tree.size), tree.merkle.consistency_proof(first, last)

    # queued entries (Trillian's queue, before integration) ---------------------

    def queue_entry(self, body: bytes, package_sha256: str, lookups: int) -> str:
        """Queue a body without integrating it; its entry ID."""
        uuid = _leaf_hash(body).hex()
        with self._lock:
            self._queued[uuid] = [body, package_sha256, lookups]
            return f"{self.tree_id:016x}{uuid}"

    def queued_id(self, body: bytes) -> Optional[str]:
        uuid = _leaf_hash(body).hex()
        with self._lock:
            return f"{self.tree_id:016x}{uuid}" if uuid in self._queued else None

    def integrate_if_due(self, entry_id: str) -> Optional[Entry]:
        """A lookup of a queued entry: None (404) until it has been looked
        up often enough, then integrated."""
        uuid = entry_id.lower()[-64:]
        with self._lock:
            waiting = self._queued.get(uuid)
            if waiting is None:
                return None
            waiting[2] -= 1
            if waiting[2] > 0:
                return None
            del self._queued[uuid]
            return self.add_entry(waiting[0], package_sha256=waiting[1])[0]

    def checkpoint(self, tree_id: Optional[int] = None) -> str:
        with self._lock:
            tree = self._tree(tree_id) if tree_id else self._active
            return tree.frozen_checkpoint or self._checkpoint(tree, tree.size)

    def log_info(self) -> dict:
        with self._lock:
            info = self._shard_info(self._active)
            inactive = [self._shard_info(t) for t in self._trees[:-1]]
        if inactive:
            info["inactiveShards"] = inactive
        return info

    def _shard_info(self, tree: _Tree) -> dict:
        return {"rootHash": tree.merkle.root(tree.size).hex(), "treeSize": tree.size,
                "signedTreeHead": tree.frozen_checkpoint or self._checkpoint(tree, tree.size),
                "treeID": str(tree.tree_id)}

    def _checkpoint(self, tree: _Tree, size: int) -> str:
        return signed_checkpoint(self.origin_host, tree.tree_id, size, tree.merkle.root(size),
                                 tree.signer or self._signer, self.checkpoint_extra_lines)

    def render_entry(self, entry: Entry, tamper: Optional[str] = None) -> tuple:
        """(entry ID, {entryID: LogEntry}) with a proof for the tree's current size.

        tamper names one way to lie (see TAMPER_MODES); body_hash and body_key
        lie at insertion time instead, so they are not handled here.
        """
        with self._lock:
            view = self._view(entry)
        if tamper:
            _tamper_view(view, tamper, self)
        entry_id, document = _render(view)
        if tamper:
            entry_id, document = _tamper_document(entry_id, document, tamper)
        return entry_id, document

    def _view(self, entry: Entry) -> _EntryView:
        tree = self._tree(entry.tree_id)
        current = tree.entries[entry.tree_index]  # rewrite_history may have replaced it
        root = tree.merkle.root(tree.size)
        return _EntryView(
            tree_id=tree.tree_id, uuid=current.uuid, body=current.body,
            integrated_time=current.integrated_time,
            log_id=(tree.signer or self._signer).log_id,
            log_index=current.global_index, tree_index=current.tree_index,
            tree_size=tree.size, root=root,
            hashes=tree.merkle.inclusion_proof(current.tree_index, tree.size),
            checkpoint=tree.frozen_checkpoint, origin_host=self.origin_host,
            checkpoint_size=tree.size, checkpoint_root=root,
            extra_lines=self.checkpoint_extra_lines,
            checkpoint_signer=tree.signer or self._signer,
            set_signer=tree.signer or self._signer)

    # keys used to lie -------------------------------------------------------------

    @property
    def impostor(self) -> _Signer:
        """Another ECDSA P-256 key: what a log lying about its key would sign with."""
        with self._lock:
            if self._impostor is None:
                self._impostor = _Signer(ec.generate_private_key(ec.SECP256R1()))
            return self._impostor

    @property
    def impostor_pgp_armor(self) -> bytes:
        """A valid OpenPGP public key that nobody submitted, canonically armored."""
        with self._lock:
            if self._impostor_pgp is None:
                packets = _new_openpgp_ed25519_key("Impostor <impostor@rekor.impostor.test>")
                self._impostor_pgp = OpenPgpKey.parse(packets).canonical_armor
            return self._impostor_pgp


def _new_tree_id(exclude=()) -> int:
    # Trillian tree IDs are positive random int64s
    while True:
        tree_id = secrets.randbits(63)
        if tree_id and tree_id not in exclude:
            return tree_id


def _other_client_body() -> bytes:
    """A hashedrekord v0.0.1 body, as another client's signing of a blob
    leaves it in the log (nothing of ours; its key is nobody's)."""
    return canonical_json({
        "apiVersion": "0.0.1", "kind": "hashedrekord",
        "spec": {"data": {"hash": {"algorithm": "sha256", "value": secrets.token_hex(32)}},
                 "signature": {"content": _b64(secrets.token_bytes(70)),
                               "publicKey": {"content": _b64(b"-----BEGIN PUBLIC KEY-----\n"
                                                             b"other client\n"
                                                             b"-----END PUBLIC KEY-----\n")}}}})


def _rewritten_body(body: bytes) -> bytes:
    """Other plausible data for a leaf: the same entry with another package hash."""
    try:
        document = json.loads(body)
        package_hash = document["spec"]["package"]["hash"]
        package_hash["value"] = hashlib.sha256(package_hash["value"].encode()).hexdigest()
        return canonical_json(document)
    except (ValueError, KeyError, TypeError, AttributeError):
        return b"rewritten:" + body


def _index_keys(body: bytes) -> list:
    """What Rekor indexes an rpm entry under: key hash, key emails, package hash."""
    try:
        spec = json.loads(body)["spec"]
        armored = base64.b64decode(spec["publicKey"]["content"])
        package_hash = spec["package"]["hash"]
    except (ValueError, KeyError, TypeError):
        return []  # not an rpm entry body (e.g. added directly by a test)
    keys = [hashlib.sha256(armored).hexdigest()]
    try:
        keys += [email.lower() for email in OpenPgpKey.parse(armored).emails]
    except ValueError:
        pass
    keys.append(f"{package_hash['algorithm']}:{package_hash['value']}".lower())
    return keys


# --------------------------------------------------------------------------
# Log entries: rendering, signing, lying
# --------------------------------------------------------------------------

@dataclass
class _EntryView:
    """Everything a LogEntry shows; tampering edits this before rendering."""

    tree_id: int
    uuid: str
    body: bytes
    integrated_time: int
    log_id: str
    log_index: int
    tree_index: int
    tree_size: int
    root: bytes
    hashes: list
    checkpoint: Optional[str]        # a frozen shard's fixed checkpoint
    origin_host: str
    checkpoint_size: int
    checkpoint_root: bytes
    extra_lines: tuple
    checkpoint_signer: _Signer
    set_signer: _Signer


def _render(view: _EntryView) -> tuple:
    anon = {"body": _b64(view.body), "integratedTime": view.integrated_time,
            "logID": view.log_id, "logIndex": view.log_index}
    # The SET signs the RFC 8785 form of these four fields (Rekor's signEntry)
    entry_timestamp = view.set_signer.sign(canonical_json(anon))
    checkpoint = view.checkpoint or signed_checkpoint(
        view.origin_host, view.tree_id, view.checkpoint_size, view.checkpoint_root,
        view.checkpoint_signer, view.extra_lines)
    anon["verification"] = {
        "inclusionProof": {"checkpoint": checkpoint, "hashes": [h.hex() for h in view.hashes],
                           "logIndex": view.tree_index, "rootHash": view.root.hex(),
                           "treeSize": view.tree_size},
        "signedEntryTimestamp": _b64(entry_timestamp),
    }
    entry_id = f"{view.tree_id:016x}{view.uuid}"
    return entry_id, {entry_id: anon}


def _tamper_view(view: _EntryView, mode: str, log: RekorLog) -> None:
    """Lies that the signatures are then made consistent with."""
    if mode == "proof_hash":
        # with a one-leaf tree there is no hash to flip: add a bogus one instead
        view.hashes = ([_flip(view.hashes[0])] + view.hashes[1:] if view.hashes
                       else [hashlib.sha256(b"bogus").digest()])
    elif mode == "root_hash":
        view.root = view.checkpoint_root = _flip(view.root)
    elif mode == "checkpoint_key":
        view.checkpoint_signer = log.impostor
    elif mode == "checkpoint_origin":
        view.origin_host = IMPOSTOR_HOST
    elif mode == "checkpoint_size":
        view.checkpoint_size += 1
    elif mode == "set_key":
        view.set_signer = log.impostor
    elif mode == "log_id":
        view.log_id = log.impostor.log_id
    elif mode == "tree_index":
        view.tree_index = view.tree_size
    elif mode == "forked_checkpoint":
        # The entry as a fork of the tree shows it: the same leaves up to
        # it, another last leaf, everything signed; only a consistency
        # proof against a head of the real tree tells the two apart.
        fork = MerkleTree()
        for entry in log._tree(view.tree_id).entries[:view.tree_size]:
            fork.append(bytes.fromhex(entry.uuid))
        bogus = hashlib.sha256(b"a leaf only the fork has").digest()
        if view.tree_index < view.tree_size - 1:
            fork.replace(view.tree_size - 1, bogus)
        else:
            fork.append(bogus)
        view.tree_size = view.checkpoint_size = len(fork)
        view.root = view.checkpoint_root = fork.root()
        view.hashes = fork.inclusion_proof(view.tree_index, len(fork))
        view.checkpoint = None
    else:
        return
    if mode.startswith(("checkpoint_", "root_")):
        view.checkpoint = None  # sign a fresh one, even for a frozen shard


def _tamper_document(entry_id: str, document: dict, mode: str) -> tuple:
    """Lies made after signing, so exactly the matching check fails."""
    anon = document[entry_id]
    verification = anon["verification"]
    proof = verification["inclusionProof"]
    if mode == "checkpoint_signature":
        proof["checkpoint"] = _corrupt_note_signature(proof["checkpoint"])
    elif mode == "set":
        verification["signedEntryTimestamp"] = _b64(_flip(_unb64(
            verification["signedEntryTimestamp"])))
    elif mode == "log_index":
        anon["logIndex"] += 1
    elif mode == "integrated_time":
        anon["integratedTime"] += 1
    elif mode == "entry_uuid":
        fake_uuid = hashlib.sha256(b"not this entry" + entry_id.encode()).hexdigest()
        entry_id = entry_id[:16] + fake_uuid
        document = {entry_id: anon}
    elif mode == "no_checkpoint":
        del proof["checkpoint"]
    elif mode == "no_set":
        del verification["signedEntryTimestamp"]
    return entry_id, document


def _lying_body(body: bytes, mode: str, log: RekorLog) -> bytes:
    """The canonical body a lying log stores instead of the honest one."""
    document = json.loads(body)
    spec = document["spec"]
    if document.get("kind") == "hashedrekord":
        # A hashedrekord's lie: another digest (body_hash) or signature (body_key).
        if mode == "body_hash":
            honest = spec["data"]["hash"]["value"]
            spec["data"]["hash"]["value"] = hashlib.sha256(b"not the digest" +
                                                           honest.encode()).hexdigest()
        else:
            spec["signature"]["content"] = _b64(b"not the signature")
        return canonical_json(document)
    if mode == "body_hash":
        honest = spec["package"]["hash"]["value"]
        spec["package"]["hash"]["value"] = hashlib.sha256(b"not the package" +
                                                          honest.encode()).hexdigest()
    else:
        spec["publicKey"]["content"] = _b64(log.impostor_pgp_armor)
    return canonical_json(document)


def _corrupt_note_signature(note: str) -> str:
    text, _, signature_line = note.rstrip("\n").rpartition("\n")
    dash, name, signature = signature_line.split(" ")
    return f"{text}\n{dash} {name} {_b64(_flip(_unb64(signature)))}\n"


def _flip(data: bytes) -> bytes:
    # the last byte: for a DER ECDSA signature this keeps the DER valid
    return data[:-1] + bytes([data[-1] ^ 0x01])


def signed_checkpoint(origin_host: str, tree_id: int, size: int, root: bytes,
                      signer: _Signer, extra_lines=()) -> str:
    """A Rekor checkpoint: a signed note (golang.org/x/mod/sumdb/note format).

    The signature line is "— <name> base64(4-byte key hint || signature)",
    the key hint being the first bytes of SHA256 of the key's DER SPKI.
    """
    text = f"{origin_host} - {tree_id}\n{size}\n{_b64(root)}\n"
    text += "".join(f"{line}\n" for line in extra_lines)
    signature = signer.sign(text.encode())
    return f"{text}\n\u2014 {origin_host} {_b64(signer.key_hint + signature)}\n"


class _Signer:
    """A log key as Rekor (sigstore's signers) uses it: ECDSA with DER
    signatures over SHA-256, RSA PKCS #1 v1.5 over SHA-256, or Ed25519."""

    def __init__(self, key):
        self.key = key
        public = key.public_key()
        self.spki_der = public.public_bytes(serialization.Encoding.DER,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
        self.public_pem = public.public_bytes(serialization.Encoding.PEM,
                                              serialization.PublicFormat.SubjectPublicKeyInfo)
        digest = hashlib.sha256(self.spki_der).digest()
        self.log_id = digest.hex()
        self.key_hint = digest[:4]

    @property
    def private_pem(self) -> bytes:
        return self.key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())

    def sign(self, data: bytes) -> bytes:
        if isinstance(self.key, rsa.RSAPrivateKey):
            return self.key.sign(data, padding.PKCS1v15(), hashes.SHA256())
        if isinstance(self.key, ed25519.Ed25519PrivateKey):
            return self.key.sign(data)
        return self.key.sign(data, ec.ECDSA(hashes.SHA256()))


def _load_private_key(key):
    if isinstance(key, (bytes, str)):
        key = serialization.load_pem_private_key(
            key.encode() if isinstance(key, str) else key, password=None)
    if not isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey,
                            ed25519.Ed25519PrivateKey)):
        raise TypeError("the log's signing key must be an ECDSA, RSA or Ed25519 private key")
    return key


# --------------------------------------------------------------------------
# Submitting an rpm entry (what Rekor's rpm v0.0.1 type does)
# --------------------------------------------------------------------------

def submit_rpm_entry(body_pieces: Iterator[bytes], refuse_header_only: bool = False) -> tuple:
    """Check a proposed rpm entry; return (canonical body, package sha256).

    Raises ApiError with Rekor's status and message when the entry is refused.
    """
    with tempfile.TemporaryDirectory(prefix="rekor-entry-") as workdir:
        document, strings = scan_proposed_entry(body_pieces, workdir)
        if isinstance(document, dict) and document.get("kind") == "hashedrekord" and \
                isinstance(document.get("spec"), dict):
            return _hashedrekord_body(document), ""
        proposal = _rpm_proposal(document, strings, workdir)
        try:
            body = _canonical_rpm_body(proposal, workdir, refuse_header_only)
        except _Refused as refused:
            raise ApiError(400, f"error processing entry: {refused}") from None
        return body, proposal.package.sha256


def _hashedrekord_body(document: dict) -> bytes:
    """Rekor's hashedrekord v0.0.1 (pkg/types/hashedrekord/v0.0.1/entry.go:
    validate, then Canonicalize): a PEM key or certificate, a signature that
    verifies over the given digest (sha256, or sha384/sha512 by name), and a
    canonical body holding the key as PEM, the signature and the hash. Small
    values only: what a hashedrekord carries."""
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric import utils
    version = document.get("apiVersion")
    if version != "0.0.1":
        raise ApiError(400, f"error processing entry: hashedrekord implementation for version "
                            f"'{version}' not found: unable to locate entry for version {version}")

    def refuse(why):
        return ApiError(400, f"error processing entry: {why}")
    spec = document["spec"]
    try:
        signature = base64.b64decode(spec["signature"]["content"], validate=True)
        key_pem = base64.b64decode(spec["signature"]["publicKey"]["content"], validate=True)
        algorithm = spec["data"]["hash"].get("algorithm") or "sha256"
        value = spec["data"]["hash"]["value"]
    except (KeyError, TypeError, AttributeError, ValueError):
        raise refuse("missing signature, public key or hash") from None
    hash_class = {"sha384": hashes.SHA384, "sha512": hashes.SHA512}.get(algorithm, hashes.SHA256)
    if not isinstance(value, str) or len(value) != hash_class.digest_size * 2:
        raise refuse("invalid value for hash")
    try:
        digest = bytes.fromhex(value)
        if b"CERTIFICATE" in key_pem[:100]:
            key = x509.load_pem_x509_certificate(key_pem).public_key()
        else:
            key = serialization.load_pem_public_key(key_pem)
            key_pem = key.public_bytes(serialization.Encoding.PEM,
                                       serialization.PublicFormat.SubjectPublicKeyInfo)
        prehashed = utils.Prehashed(hash_class())
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, digest, padding.PKCS1v15(), prehashed)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, digest, ec.ECDSA(prehashed))
        else:
            raise ValueError("unsupported key type")  # ed25519ph: not needed here
    except (ValueError, InvalidSignature) as err:
        raise refuse(f"verifying signature: {err or 'invalid signature'}") from None
    hash_name = algorithm if algorithm in ("sha384", "sha512") else "sha256"
    return canonical_json({"apiVersion": "0.0.1", "kind": "hashedrekord", "spec": {
        "data": {"hash": {"algorithm": hash_name, "value": value}},
        "signature": {"content": _b64(signature), "publicKey": {"content": _b64(key_pem)}}}})


class _Refused(Exception):
    """The entry is invalid; Rekor answers 400 "error processing entry: <why>"."""


@dataclass
class _RpmProposal:
    key: bytes                       # the submitted key, as decoded from base64
    package: _Base64File             # the decoded RPM on disk
    claimed_sha256: Optional[str]    # spec.package.hash.value, if given


def _rpm_proposal(document, strings: dict, workdir: str) -> _RpmProposal:
    """Rekor's checks of a proposed entry's shape, in Rekor's order."""
    if not isinstance(document, dict):
        raise ApiError(400, "parsing proposedEntry body failed: expected a JSON object")
    kind = document.get("kind")
    if not isinstance(kind, str) or not kind:
        raise ApiError(422, "kind in body is required")
    if kind not in REKOR_KINDS:
        raise ApiError(422, f"invalid kind value: {json.dumps(kind)}")
    for name in ("apiVersion", "spec"):
        if document.get(name) is None:
            raise ApiError(422, f"{name} in body is required")
    version = document["apiVersion"]
    if kind != "rpm":
        raise ApiError(400, "error processing entry: entry kind "
                            f"'{kind}' is not enabled for submission on this server")
    if version != "0.0.1":
        raise ApiError(400, f"error processing entry: rpm implementation for version "
                            f"'{version}' not found: unable to locate entry for version {version}")
    try:
        return _rpm_spec(document["spec"], strings, workdir)
    except _Refused as refused:
        raise ApiError(400, f"error processing entry: {refused}") from None


def _rpm_spec(spec, strings: dict, workdir: str) -> _RpmProposal:
    if not isinstance(spec, dict):
        raise _Refused("unsupported input type for DecodeEntry")
    public_key = spec.get("publicKey")
    package = spec.get("package")
    if not isinstance(public_key, dict):
        raise _Refused("publicKey in body is required")
    if not isinstance(package, dict):
        raise _Refused("package in body is required")
    key_text = public_key.get("content")
    if not isinstance(key_text, str) or not key_text:
        raise _Refused("'content' must be specified for publicKey")
    key = _decode_base64_value(key_text, strings, "publicKey", workdir)
    if key.size > MAX_KEY_BYTES:
        raise _Refused("public key is too large")
    claimed = _claimed_hash(package.get("hash"))
    content = package.get("content")
    if not isinstance(content, str) or not content:
        if claimed is None:
            raise _Refused("'content' must be specified for package")
        raise _Refused("entry not insertable into log: missing package content")
    rpm_file = _decode_base64_value(content, strings, "package", workdir)
    with open(key.path, "rb") as f:
        key_bytes = f.read()
    return _RpmProposal(key_bytes, rpm_file, claimed)


def _claimed_hash(package_hash) -> Optional[str]:
    if package_hash is None:
        return None
    if not isinstance(package_hash, dict):
        raise _Refused("invalid value for hash")
    if package_hash.get("algorithm") != "sha256":
        raise _Refused("package.hash.algorithm in body should be one of [sha256]")
    value = package_hash.get("value")
    if not isinstance(value, str) or not re.fullmatch(r"[0-9a-fA-F]{64}", value):
        raise _Refused("invalid value for hash")
    return value


def _decode_base64_value(value: str, strings: dict, what: str, workdir: str) -> _Base64File:
    decoded = strings.get(value)
    if decoded is None:  # a short string, still in the parsed document
        decoded = _Base64File(os.path.join(workdir, f"{what}.small"))
        decoded.feed(value.encode("utf-8"))
        decoded.close()
    if decoded.error is not None:
        raise _Refused(f"failed parsing base64 data for {what} content: {decoded.error}")
    return decoded


def _canonical_rpm_body(proposal: _RpmProposal, workdir: str, refuse_header_only: bool) -> bytes:
    """Rekor's rpm v0.0.1 Canonicalize, then RFC 8785 (CanonicalizeEntry)."""
    try:
        key = OpenPgpKey.parse(proposal.key)
    except ValueError as err:
        raise _Refused(str(err)) from None
    computed = proposal.package.sha256
    if proposal.claimed_sha256 and proposal.claimed_sha256 != computed:
        raise _Refused(f"SHA mismatch: {computed} != {proposal.claimed_sha256}")
    signatures = check_signature_issuers(proposal.package.path, key)
    check_rpm_signature(proposal.package.path, key.canonical_armor, workdir, refuse_header_only)
    if not signatures:
        raise _Refused("no supported PGP signature found in RPM")
    headers = read_rpm_headers(proposal.package.path)
    return canonical_json({
        "apiVersion": "0.0.1",
        "kind": "rpm",
        "spec": {
            "package": {"hash": {"algorithm": "sha256",
                                 "value": proposal.claimed_sha256 or computed},
                        "headers": headers},
            "publicKey": {"content": _b64(key.canonical_armor)},
        },
    })


# --------------------------------------------------------------------------
# Streaming a proposed entry off the socket
# --------------------------------------------------------------------------

def scan_proposed_entry(pieces: Iterator[bytes], workdir: str) -> tuple:
    """Parse a JSON body whose long strings are base64; (document, strings).

    In the document, every string longer than BIG_STRING stands for itself
    only as a placeholder key of `strings`, whose value is that string
    base64-decoded into a file under workdir (with its sha256).
    """
    scanner = _JsonSkeletonScanner(workdir)
    for piece in pieces:
        scanner.feed(piece)
    return scanner.finish()


class _JsonSkeletonScanner:
    """Splits JSON into a small skeleton plus large string values.

    Hand-written because json.load needs the whole document in memory, and
    the proposed entry of a 1 GB RPM is 1.3 GB of JSON. It only needs to
    find where strings start and end (quotes and backslash escapes); the
    small skeleton that remains is then parsed by the json module. Large
    strings are base64-decoded to disk as they stream past, since the only
    large values a proposed rpm entry has are base64.
    """

    def __init__(self, workdir: str):
        self._workdir = workdir
        self._token = secrets.token_hex(8)
        self._skeleton = bytearray()
        self._in_string = False
        self._escape: Optional[bytearray] = None   # an escape split across pieces
        self._small = bytearray()                  # raw text of the current short string
        self._big: Optional[_Base64File] = None    # the current long string, if long
        self.strings: dict = {}

    def feed(self, data: bytes) -> None:
        pos, end = 0, len(data)
        next_quote = next_backslash = -1
        while pos < end:
            if self._escape is not None:
                pos = self._continue_escape(data, pos)
            elif not self._in_string:
                quote = data.find(b'"', pos)
                self._structure(data[pos:quote if quote >= 0 else end])
                if quote < 0:
                    return
                self._in_string, pos = True, quote + 1
            else:
                # the next quote or backslash ends this run of plain text;
                # each is searched again only once passed, to stay linear
                if next_quote < pos:
                    next_quote = _find_or_end(data, b'"', pos)
                if next_backslash < pos:
                    next_backslash = _find_or_end(data, b"\\", pos)
                stop = min(next_quote, next_backslash)
                self._text(data[pos:stop])
                if stop == end:
                    return
                if stop == next_quote:
                    self._close_string()
                    pos = stop + 1
                else:
                    self._escape, pos = bytearray(), stop

    def finish(self) -> tuple:
        if self._in_string or self._escape is not None:
            raise ApiError(400, "parsing proposedEntry body failed: unexpected end of JSON input")
        try:
            document = json.loads(bytes(self._skeleton))
        except ValueError as err:
            raise ApiError(400, f"parsing proposedEntry body failed: {err}") from None
        return document, self.strings

    def _structure(self, data: bytes) -> None:
        self._skeleton += data
        if len(self._skeleton) > MAX_SKELETON:
            raise ApiError(400, "proposed entry has too much JSON outside its base64 strings")

    def _continue_escape(self, data: bytes, pos: int) -> int:
        escape = self._escape
        while pos < len(data):
            escape.append(data[pos])
            pos += 1
            wanted = 6 if len(escape) >= 2 and escape[1:2] == b"u" else 2
            if len(escape) == wanted:
                self._escape = None
                self._escaped(bytes(escape))
                break
        return pos

    def _text(self, raw: bytes) -> None:
        if self._big is not None:
            self._big.feed(raw)
            return
        self._small += raw
        self._promote_if_long()

    def _escaped(self, escape: bytes) -> None:
        if self._big is not None:
            # a lone surrogate is no base64 either: let the decoder reject it
            self._big.feed(_unescape(escape).encode("utf-8", "surrogatepass"))
            return
        self._small += escape
        self._promote_if_long()

    def _promote_if_long(self) -> None:
        if len(self._small) <= BIG_STRING:
            return
        path = os.path.join(self._workdir, f"string-{len(self.strings)}")
        self._big = _Base64File(path)
        self._big.feed(_unescape(bytes(self._small)).encode("utf-8", "surrogatepass"))
        self._small = bytearray()

    def _close_string(self) -> None:
        self._in_string = False
        if self._big is None:
            self._structure(b'"' + bytes(self._small) + b'"')
            self._small = bytearray()
            return
        self._big.close()
        placeholder = f"\u0000long-string:{self._token}:{len(self.strings)}"
        self.strings[placeholder] = self._big
        self._big = None
        self._structure(json.dumps(placeholder).encode())


def _find_or_end(data: bytes, needle: bytes, pos: int) -> int:
    found = data.find(needle, pos)
    return found if found >= 0 else len(data)


def _unescape(raw: bytes) -> str:
    try:
        return json.loads(b'"' + raw + b'"')
    except ValueError as err:
        raise ApiError(400, f"parsing proposedEntry body failed: {err}") from None


class _Base64File:
    """Decodes base64 text, fed in pieces, into a file, hashing what it writes.

    Strict like Go's base64.StdEncoding (padding required, nothing after
    it), which also skips CR and LF.
    """

    def __init__(self, path: str):
        self.path = path
        self.size = 0
        self.error: Optional[str] = None
        self._out = open(path, "wb")
        self._sha256 = hashlib.sha256()
        self._carry = b""
        self._seen = 0          # base64 characters decoded so far
        self._padded = False

    @property
    def sha256(self) -> str:
        return self._sha256.hexdigest()

    def feed(self, text: bytes) -> None:
        if self.error is not None:
            return
        text = text.translate(None, b"\r\n")
        if not text:
            return
        if self._padded:
            self._fail(self._seen)
            return
        data = self._carry + text
        usable = len(data) - len(data) % 4
        try:
            decoded = binascii.a2b_base64(data[:usable], strict_mode=True)
        except binascii.Error:
            self._fail(self._seen)
            return
        self._padded = data[:usable].endswith(b"=")
        self._out.write(decoded)
        self._sha256.update(decoded)
        self.size += len(decoded)
        self._carry = data[usable:]
        self._seen += usable

    def close(self) -> None:
        if self._carry and self.error is None:
            self._fail(self._seen + len(self._carry))
        self._out.close()

    def _fail(self, offset: int) -> None:
        self.error = f"illegal base64 data at input byte {offset}"


# --------------------------------------------------------------------------
# RPM checks
# --------------------------------------------------------------------------

# go-rpmutils reads these signature tags, in this order: the header-only RSA
# and DSA signatures, then the header+payload PGP and GPG ones. rpm 6's
# RPMTAG_OPENPGP (278) is not among them.
_LEGACY_SIGNATURE_TAGS = (268, 267, 1002, 1005)
_HEADER_MAGIC = b"\x8e\xad\xe8\x01"
_RPM_LEAD_SIZE = 96


def read_signature_tags(rpm_path: str) -> dict:
    """{tag: bytes} of the binary entries of an RPM's signature header."""
    with open(rpm_path, "rb") as f:
        f.seek(_RPM_LEAD_SIZE)
        intro = f.read(16)
        if len(intro) != 16 or intro[:4] != _HEADER_MAGIC:
            raise _Refused("could not read RPM signature header")
        count, size = struct.unpack(">II", intro[8:16])
        if count > 10000 or size > MAX_KEY_BYTES * 16:
            raise _Refused("could not read RPM signature header")
        index, store = f.read(16 * count), f.read(size)
    tags = {}
    for n in range(count):
        tag, kind, offset, length = struct.unpack(">iiii", index[16 * n:16 * n + 16])
        if kind == 7 and 0 <= offset <= offset + length <= len(store):   # RPM_BIN_TYPE
            tags[tag] = store[offset:offset + length]
    return tags


def _signature_issuer(blob: bytes) -> tuple:
    """(key ID, issuer fingerprint) of one signature packet, as go-rpmutils'
    verifier reads them; _Refused with its wording when it cannot."""
    packets = _read_packets(blob) if blob else []
    if not packets or packets[0][0] != 2 or not packets[0][1]:
        raise _Refused("no supported PGP signature packet found")
    if len(packets) > 1:
        raise _Refused("trailing garbage after PGP signature packet")
    body = packets[0][1]
    if body[0] == 3 and len(body) >= 15:
        return int.from_bytes(body[7:15], "big"), b""
    if body[0] != 4:
        raise _Refused("no supported PGP signature packet found")
    key_id, fingerprint, pos = None, b"", 4
    for _ in range(2):   # hashed, then unhashed subpackets
        size = int.from_bytes(body[pos:pos + 2], "big")
        area, pos = body[pos + 2:pos + 2 + size], pos + 2 + size
        at = 0
        while at < len(area):
            length, at = _new_format_length(area, at)
            kind, value = area[at] & 0x7F, area[at + 1:at + length]
            if kind == 16 and len(value) == 8:
                key_id = int.from_bytes(value, "big")
            elif kind == 33 and value[:1] == b"\x04":
                fingerprint = value[1:]
            at += length
    if key_id is None and not fingerprint:
        raise _Refused("no supported PGP signature packet found")
    return key_id or 0, fingerprint


def check_signature_issuers(rpm_path: str, key: OpenPgpKey) -> int:
    """Every legacy signature must be by the submitted key (its primary key
    or a subkey), as go-rpmutils looks keys up; the number of signatures."""
    tags = read_signature_tags(rpm_path)
    try:
        issuers = [_signature_issuer(tags[tag]) for tag in _LEGACY_SIGNATURE_TAGS if tag in tags]
    except ValueError:
        raise _Refused("no supported PGP signature packet found") from None
    ours = key.fingerprints
    for key_id, fingerprint in issuers:
        if key_id and any(int.from_bytes(fp[-8:], "big") == key_id for fp in ours):
            continue
        if not key_id and fingerprint in ours:
            continue
        if key_id == 0 and fingerprint:
            raise _Refused(f"key with fingerprint {fingerprint.hex()} not found")
        raise _Refused(f"keyid {key_id:08x} not found")
    return len(issuers)


_RPMKEYS_LINE = re.compile(r"^\s+(?P<what>.+?): (?P<status>[A-Z]+)\b(?P<detail>.*)$")
_rpm_lock = threading.Lock()  # librpm's Python bindings keep global state


def check_rpm_signature(rpm_path: str, armored_key: bytes, workdir: str,
                        refuse_header_only: bool = False) -> None:
    """Verify the RPM's OpenPGP signatures with rpmkeys against only this key.

    Raises _Refused with Rekor's wording. An unsigned RPM passes `rpmkeys -K`,
    so at least one signature must be present and good.
    """
    dbpath = os.path.join(workdir, "rpmdb")
    key_path = os.path.join(workdir, "key.asc")
    with open(key_path, "wb") as f:
        f.write(armored_key)
    imported = _rpmkeys(workdir, "--dbpath", dbpath, "--import", key_path)
    if imported.returncode != 0:
        raise _Refused(f"openpgp: invalid public key ({_one_line(imported.stderr)})")
    checked = _rpmkeys(workdir, "--dbpath", dbpath, "-Kv", rpm_path)
    problem = judge_rpmkeys_output(checked.stdout, checked.stderr, checked.returncode,
                                   refuse_header_only)
    if problem:
        raise _Refused(problem)


def judge_rpmkeys_output(stdout: str, stderr: str, returncode: int,
                         refuse_header_only: bool = False) -> Optional[str]:
    """Why `rpmkeys -Kv` output means a refusal, or None if it is acceptable."""
    items = [m.groupdict() for m in map(_RPMKEYS_LINE.match, stdout.splitlines()) if m]
    # A real signature item names its key ID ("V4 RSA/SHA512 Signature, key ID
    # ..."); "RSA signature: NOTFOUND" lines only say what is absent.
    signatures = [i for i in items if "Signature" in i["what"]]
    legacy = [i for i in signatures if not i["what"].startswith("Header ")]
    failed = [i for i in items if i["status"] not in ("OK", "NOTFOUND")]
    if refuse_header_only and signatures and not legacy:
        return "Package signature not found"   # what Rekor < 1.5.4 said
    if failed:
        return _describe_failure(failed[0])
    if not items and returncode != 0:
        return f"could not read RPM ({_one_line(stderr) or 'rpmkeys failed'})"
    if not signatures:
        return "no supported PGP signature found in RPM"
    if returncode != 0:
        return f"RPM signature check failed ({_one_line(stderr) or 'rpmkeys failed'})"
    return None


def _describe_failure(item: dict) -> str:
    line = f"rpmkeys: {item['what']}: {item['status']}{item['detail']}"
    if item["status"] == "NOKEY":
        return f"openpgp: signature made by unknown entity ({line})"
    if "Signature" in item["what"]:
        return f"openpgp: invalid signature ({line})"
    return f"RPM digest mismatch ({line})"


def _rpmkeys(workdir: str, *args: str) -> subprocess.CompletedProcess:
    # HOME points at the private work directory so no user macro file can
    # change what rpmkeys does; LC_ALL=C keeps its output parseable.
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": workdir, "LC_ALL": "C"}
    try:
        return subprocess.run(["rpmkeys", *args], capture_output=True, text=True, env=env,
                              timeout=RPMKEYS_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        raise _Refused("timed out checking the RPM signature") from None


def _one_line(text: str) -> str:
    return " ".join((text or "").split())[:500]


def read_rpm_headers(rpm_path: str) -> dict:
    """The NEVRA and SIGMD5 headers Rekor puts in the canonical body."""
    import rpm  # only entry creation needs librpm

    with _rpm_lock:
        ts = rpm.TransactionSet()
        ts.setVSFlags(rpm._RPMVSF_NOSIGNATURES | rpm._RPMVSF_NODIGESTS)
        try:
            with open(rpm_path, "rb") as f:
                header = ts.hdrFromFdno(f.fileno())
        except rpm.error as err:
            raise _Refused(f"could not read RPM header: {err}") from None
    epoch = header[rpm.RPMTAG_EPOCH]
    headers = {
        "Name": _text(header[rpm.RPMTAG_NAME]),
        "Epoch": "0" if epoch is None else str(epoch),   # go-rpmutils' GetNEVRA
        "Version": _text(header[rpm.RPMTAG_VERSION]),
        "Release": _text(header[rpm.RPMTAG_RELEASE]),
        "Architecture": _text(header[rpm.RPMTAG_ARCH]),
    }
    sigmd5 = header[rpm.RPMTAG_SIGMD5]
    if sigmd5:  # Rekor leaves the key out when the RPM has no MD5
        headers["RPMSIGTAG_MD5"] = bytes(sigmd5).hex()
    return headers


def _text(value) -> str:
    if value is None:
        return ""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


# --------------------------------------------------------------------------
# OpenPGP public keys (just enough to canonicalize and index them)
# --------------------------------------------------------------------------

_ARMOR_BEGIN = re.compile(r"-----BEGIN (?P<type>PGP [A-Z ]+)-----")
_PUBLIC_KEY_BLOCK = "PGP PUBLIC KEY BLOCK"
_TAG_PUBLIC_KEY, _TAG_USER_ID, _TAG_TRUST, _TAG_PUBLIC_SUBKEY = 6, 13, 12, 14


class OpenPgpKey:
    """An OpenPGP public key (or keyring) as Rekor's pgp package sees it."""

    def __init__(self, packets: list):
        self.packets = packets   # [(tag, body)], trust packets removed

    @classmethod
    def parse(cls, data: bytes) -> OpenPgpKey:
        """Armored (one or more blocks) or binary; ValueError on failure."""
        binary = _dearmor(data) if data.startswith(b"-----BEGIN PGP") else data
        packets = [p for p in _read_packets(binary) if p[0] != _TAG_TRUST]
        if not packets:
            raise ValueError("error reading PGP public key: openpgp: invalid argument: "
                             "no armored data found")
        if packets[0][0] != _TAG_PUBLIC_KEY:
            raise ValueError("error reading PGP public key: openpgp: invalid data: "
                             "first packet was not a public/private key")
        if not any(tag == _TAG_USER_ID for tag, _ in packets):
            raise ValueError("error reading PGP public key: openpgp: invalid data: "
                             "entity without any identities")
        return cls(packets)

    @property
    def canonical_armor(self) -> bytes:
        """The key as Rekor's CanonicalValue writes it.

        Go re-serializes each packet with a new-format header (RFC 4880
        4.2.2) and armors without headers; packet bodies are unchanged.
        """
        binary = b"".join(_new_format_header(tag, len(body)) + body
                          for tag, body in self.packets)
        return armor(_PUBLIC_KEY_BLOCK, binary)

    @property
    def fingerprints(self) -> list:
        """SHA-1 fingerprints (RFC 4880 12.2) of the v4 primary key and subkeys."""
        return [hashlib.sha1(b"\x99" + len(body).to_bytes(2, "big") + body).digest()
                for tag, body in self.packets
                if tag in (_TAG_PUBLIC_KEY, _TAG_PUBLIC_SUBKEY) and body[:1] == b"\x04"]

    @property
    def emails(self) -> list:
        found = []
        for tag, body in self.packets:
            if tag == _TAG_USER_ID:
                match = re.search(r"<([^<>]+)>\s*$", body.decode("utf-8", "replace"))
                if match:
                    found.append(match.group(1))
        return found


def armor(block_type: str, data: bytes) -> bytes:
    """ASCII armor (RFC 4880 section 6) as Go's openpgp/armor writes it:
    no headers, 64-column lines, CRC-24 line, no newline after END."""
    text = base64.b64encode(data).decode()
    lines = "\n".join(text[i:i + 64] for i in range(0, len(text), 64))
    checksum = base64.b64encode(_crc24(data).to_bytes(3, "big")).decode()
    return (f"-----BEGIN {block_type}-----\n\n{lines}\n={checksum}\n"
            f"-----END {block_type}-----").encode()


def _dearmor(data: bytes) -> bytes:
    try:
        lines = data.decode("ascii").splitlines()
    except UnicodeDecodeError:
        raise ValueError("invalid PGP public key provided: openpgp: invalid data: "
                         "armor invalid") from None
    binary, pos = b"", 0
    while pos < len(lines):
        begin = _ARMOR_BEGIN.fullmatch(lines[pos].strip())
        pos += 1
        if not begin:
            continue
        if begin.group("type") != _PUBLIC_KEY_BLOCK:
            raise ValueError("invalid PGP type detected")
        block, pos = _armor_block(lines, pos)
        binary += block
    return binary


def _armor_block(lines: list, pos: int) -> tuple:
    """(decoded data, next line) of one armor block whose BEGIN line was read."""
    while pos < len(lines) and ":" in lines[pos]:
        pos += 1   # armor headers ("Version: ...", "Comment: ...")
    body, checksum = [], None
    while pos < len(lines) and not lines[pos].startswith("-----END"):
        line = lines[pos].strip()
        if line.startswith("="):
            checksum = line[1:]
        elif line:
            body.append(line)
        pos += 1
    if pos == len(lines):
        raise ValueError("invalid PGP public key provided: openpgp: invalid data: armor invalid")
    try:
        data = base64.b64decode("".join(body), validate=True)
        crc_ok = checksum is None or base64.b64decode(checksum) == _crc24(data).to_bytes(3, "big")
    except binascii.Error:
        crc_ok, data = False, b""
    if not crc_ok:
        raise ValueError("invalid PGP public key provided: openpgp: invalid data: armor invalid")
    return data, pos + 1


def _read_packets(data: bytes) -> list:
    """Split OpenPGP packets (RFC 4880 section 4.2, both header formats)."""
    packets, pos = [], 0
    while pos < len(data):
        ctb = data[pos]
        if not ctb & 0x80:
            raise ValueError("error reading PGP public key: openpgp: invalid data: "
                             "tag byte does not have MSB set")
        if ctb & 0x40:
            tag = ctb & 0x3F
            length, pos = _new_format_length(data, pos + 1)
        else:
            tag = (ctb >> 2) & 0x0F
            width = (1, 2, 4, None)[ctb & 0x03]
            if width is None:     # indeterminate length: the rest of the data
                length, pos = len(data) - pos - 1, pos + 1
            else:
                length = int.from_bytes(data[pos + 1:pos + 1 + width], "big")
                pos += 1 + width
        if pos + length > len(data):
            raise ValueError("error reading PGP public key: unexpected EOF")
        packets.append((tag, data[pos:pos + length]))
        pos += length
    return packets


def _new_format_length(data: bytes, pos: int) -> tuple:
    if pos >= len(data):
        raise ValueError("error reading PGP public key: unexpected EOF")
    first = data[pos]
    if first < 192:
        return first, pos + 1
    if first < 224 and pos + 1 < len(data):
        return ((first - 192) << 8) + data[pos + 1] + 192, pos + 2
    if first == 255 and pos + 4 < len(data):
        return int.from_bytes(data[pos + 1:pos + 5], "big"), pos + 5
    raise ValueError("error reading PGP public key: partial-length packets are not "
                     "allowed in keys")


def _new_format_header(tag: int, length: int) -> bytes:
    # the shortest encoding, as Go's serializeHeader picks it
    if length < 192:
        return bytes([0xC0 | tag, length])
    if length < 8384:
        length -= 192
        return bytes([0xC0 | tag, (length >> 8) + 192, length & 0xFF])
    return bytes([0xC0 | tag, 0xFF]) + length.to_bytes(4, "big")


def _crc24(data: bytes) -> int:
    """The armor checksum (RFC 4880 section 6.1)."""
    crc = 0xB704CE
    for byte in data:
        crc ^= byte << 16
        for _ in range(8):
            crc <<= 1
            if crc & 0x1000000:
                crc ^= 0x1864CFB
    return crc & 0xFFFFFF


def _new_openpgp_ed25519_key(user_id: str, created: int = 1700000000) -> bytes:
    """A fresh, self-certified OpenPGP v4 Ed25519 public key (RFC 4880 + 6637 style).

    Used as "another public key" when the log lies about an entry's key.
    """
    private = ed25519.Ed25519PrivateKey.generate()
    point = b"\x40" + private.public_key().public_bytes(serialization.Encoding.Raw,
                                                        serialization.PublicFormat.Raw)
    ed25519_oid = bytes.fromhex("2b06010401da470f01")
    key_body = (b"\x04" + struct.pack(">I", created) + b"\x16"
                + bytes([len(ed25519_oid)]) + ed25519_oid + _mpi(point))
    fingerprint = hashlib.sha1(b"\x99" + struct.pack(">H", len(key_body)) + key_body).digest()
    uid = user_id.encode()
    hashed = (_subpacket(2, struct.pack(">I", created))       # creation time
              + _subpacket(33, b"\x04" + fingerprint)         # issuer fingerprint
              + _subpacket(27, b"\x03"))                      # may certify and sign
    head = b"\x04\x13\x16\x08" + struct.pack(">H", len(hashed)) + hashed
    digest = hashlib.sha256(b"\x99" + struct.pack(">H", len(key_body)) + key_body
                            + b"\xb4" + struct.pack(">I", len(uid)) + uid
                            + head + b"\x04\xff" + struct.pack(">I", len(head))).digest()
    signature = private.sign(digest)   # OpenPGP EdDSA signs the digest
    unhashed = _subpacket(16, fingerprint[-8:])             # issuer key ID
    sig_body = (head + struct.pack(">H", len(unhashed)) + unhashed + digest[:2]
                + _mpi(signature[:32]) + _mpi(signature[32:]))
    return b"".join(_new_format_header(tag, len(body)) + body for tag, body in
                    ((_TAG_PUBLIC_KEY, key_body), (_TAG_USER_ID, uid), (2, sig_body)))


def _mpi(value: bytes) -> bytes:
    value = value.lstrip(b"\x00")
    return struct.pack(">H", int.from_bytes(value, "big").bit_length()) + value


def _subpacket(kind: int, data: bytes) -> bytes:
    return bytes([len(data) + 1, kind]) + data


# --------------------------------------------------------------------------
# Merkle tree (RFC 6962 / RFC 9162)
# --------------------------------------------------------------------------

EMPTY_ROOT = hashlib.sha256(b"").digest()   # RFC 9162 2.1.1: MTH({})


def _leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def _node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than n (n > 1): RFC 9162's k."""
    return 1 << ((n - 1).bit_length() - 1)


class MerkleTree:
    """An append-only RFC 9162 Merkle tree over leaf hashes.

    Hashes of complete subtrees never change once their leaves exist, so
    they are cached: roots and proofs at any size then cost O(log^2 n).
    """

    def __init__(self):
        self._leaves: list = []
        self._complete: dict = {}   # (start, size) of a complete subtree -> hash

    def __len__(self) -> int:
        return len(self._leaves)

    def append(self, leaf_hash: bytes) -> None:
        self._leaves.append(leaf_hash)

    def replace(self, index: int, leaf_hash: bytes) -> None:
        """Rewrite history (only a lying log does this)."""
        self._leaves[index] = leaf_hash
        self._complete.clear()

    def root(self, size: Optional[int] = None) -> bytes:
        size = len(self._leaves) if size is None else size
        self._check_size(size)
        return self._hash(0, size) if size else EMPTY_ROOT

    def inclusion_proof(self, index: int, size: int) -> list:
        """RFC 9162 2.1.3.1: PATH(index, D[0:size]), leaf to root."""
        self._check_size(size)
        if not 0 <= index < size:
            raise ValueError(f"leaf index {index} is not in a tree of size {size}")
        return self._path(index, 0, size)

    def consistency_proof(self, first: int, last: int) -> list:
        """RFC 9162 2.1.4.1: PROOF(first, D[0:last])."""
        self._check_size(last)
        if not 0 < first <= last:
            raise ValueError(f"no consistency proof from size {first} to size {last}")
        return self._subproof(first, 0, last, True)

    def _check_size(self, size: int) -> None:
        if not 0 <= size <= len(self._leaves):
            raise ValueError(f"tree size {size} is beyond the log's {len(self._leaves)}")

    def _hash(self, start: int, n: int) -> bytes:
        """RFC 9162 2.1.1: MTH(D[start:start+n])."""
        if n == 1:
            return self._leaves[start]
        complete = n & (n - 1) == 0
        if complete and (start, n) in self._complete:
            return self._complete[(start, n)]
        k = _split(n)
        digest = _node_hash(self._hash(start, k), self._hash(start + k, n - k))
        if complete:
            self._complete[(start, n)] = digest
        return digest

    def _path(self, m: int, start: int, n: int) -> list:
        if n == 1:
            return []
        k = _split(n)
        if m < k:
            return self._path(m, start, k) + [self._hash(start + k, n - k)]
        return self._path(m - k, start + k, n - k) + [self._hash(start, k)]

    def _subproof(self, m: int, start: int, n: int, whole: bool) -> list:
        """RFC 9162 2.1.4.1: SUBPROOF(m, D[start:start+n], b)."""
        if m == n:
            return [] if whole else [self._hash(start, n)]
        k = _split(n)
        if m <= k:
            return self._subproof(m, start, k, whole) + [self._hash(start + k, n - k)]
        return self._subproof(m - k, start + k, n - k, False) + [self._hash(start, k)]


# --------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------

def canonical_json(value) -> bytes:
    """RFC 8785 JSON for what Rekor signs and stores (strings, integers, objects).

    For these types, sorted keys, no spaces and no escaping beyond JSON's
    minimum is exactly what RFC 8785 prescribes.
    """
    return json.dumps(value, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False).encode("utf-8")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text)


class _Journal:
    """Persistent state: the signing key (PEM) and a JSON-lines change log."""

    KEY_FILE = "log-key.pem"
    JOURNAL_FILE = "log.jsonl"

    def __init__(self, state_dir: str):
        self.state_dir = state_dir
        self._key_path = os.path.join(state_dir, self.KEY_FILE)
        self._journal_path = os.path.join(state_dir, self.JOURNAL_FILE)

    def exists(self) -> bool:
        return os.path.exists(self._journal_path)

    def read_key(self) -> bytes:
        with open(self._key_path, "rb") as f:
            return f.read()

    def records(self) -> list:
        with open(self._journal_path, encoding="utf-8") as f:
            # a line cut short by a crash mid-write is not part of the log
            return [json.loads(line) for line in f if line.endswith("\n")]

    def create(self, private_pem: bytes, init_record: dict) -> None:
        os.makedirs(self.state_dir, exist_ok=True)
        descriptor = os.open(self._key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "wb") as f:
            f.write(private_pem)
        with open(self._journal_path, "w", encoding="utf-8") as f:
            f.write(json.dumps(init_record) + "\n")

    def append(self, record: dict) -> None:
        with open(self._journal_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------

def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Run a local Rekor v1-compatible log "
                                                 "on 127.0.0.1 until SIGTERM or SIGINT.")
    parser.add_argument("--port", type=int, default=0, help="TCP port (default: any free one)")
    parser.add_argument("--state-dir", help="keep the key and entries here across restarts")
    parser.add_argument("--key-out", help="write the log's public key (PEM) to this file")
    parser.add_argument("--refuse-header-only", action="store_true",
                        help="refuse RPMs with only header signatures, as Rekor < 1.5.4 did")
    parser.add_argument("--tree-id", type=int, help="tree ID of a new log")
    parser.add_argument("--index-offset", type=int, default=0,
                        help="global index of a new log's first entry")
    parser.add_argument("--busy", type=float, default=0.0, metavar="RATE",
                        help="other clients append RATE entries a second (as on a live log)")
    args = parser.parse_args(argv)

    log = RekorLog(tree_id=args.tree_id, index_offset=args.index_offset,
                   state_dir=args.state_dir)
    server = RekorServer(log, port=args.port, busy=args.busy).start()
    server.faults.refuse_header_only = args.refuse_header_only
    if args.key_out:
        with open(args.key_out, "wb") as f:
            f.write(log.public_key_pem)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    print(f"rekor-compatible log listening on {server.url}", flush=True)
    while not stop.wait(0.5):  # wake up regularly so signal handlers run promptly
        pass
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
