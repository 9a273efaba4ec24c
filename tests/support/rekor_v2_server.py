"""A local Rekor v2 (rekor-tiles) log on 127.0.0.1, for tests and benchmarks.

It behaves as rekor-tiles does, field by field; each behaviour cites where
the real server does it (sigstore/rekor-tiles; transparency-dev/tessera,
which stores and publishes its tiles; C2SP tlog-tiles, tlog-checkpoint,
signed-note and tlog-cosignature):

- POST /api/v2/log/entries: protojson with unknown fields refused
  (internal/server/http.go: DiscardUnknown false), a hashedrekord v0.0.2
  request validated and its signature verified over the digest with the DER
  key (pkg/types/hashedrekord/hashedrekord.go, ToLogEntry), the allowed
  algorithms of internal/algorithmregistry, every failure a 400 whose message
  never says why (internal/server/service.go, CreateEntry: "invalid
  hashedrekord request").
- The call blocks until a published checkpoint covers the entry (tessera
  await.go, PublicationAwaiter.Await); checkpoints are published every
  `interval` seconds. 201: a TransparencyLogEntry as protojson with
  EmitUnpopulated (http.go), so integratedTime "0" and inclusionPromise
  null, int64s as strings, logId.keyId the checkpoint key's full C2SP key
  hash (service.go, logID; pkg/note/note.go, KeyHash), the inclusion proof
  against the checkpoint it waited for (internal/tessera/tessera.go,
  buildProof).
- A duplicate (same canonical body: tessera's default identity hash) waits
  for its index too and answers 409 with x-log-index (service.go,
  duplicateEntryHeader; http.go forwardHeaderHandler).
- Switches: 503 (tessera pushback: "reached max pushback; retry"), 500
  (codes.Unknown: "failed to integrate entry"), 405 when frozen (service.go,
  readOnly: the message as the body, http.go httpResponseModifier).
- Reads are static files at the shard's root (the tiles bucket):
  /checkpoint, /tile/<L>/<N>[.p/<W>], /tile/entries/<N>[.p/<W>] (C2SP
  tlog-tiles; tessera api/layout/paths.go),
  entry bundles as big-endian uint16 lengths each followed by one body;
  partial tiles are gone once their tile is full (tessera's garbage
  collection) unless keep_partials.
- Checkpoints are signed notes by an Ed25519 key (default) or an ECDSA
  P-256 one (pkg/note/note.go), with witness cosignature lines
  (C2SP tlog-cosignature) placed before or after the log's own line.
- Lies, for the client's checks: 'body' (a 201 with another canonical body),
  'proof' (a wrong inclusion proof), 'checkpoint_signature' (a bad log
  signature), 'origin' (checkpoints signed under another origin),
  'bundle' (entry bundles holding other bodies), 'tile' (wrong tile hashes),
  'index' (a 409 naming another entry's index); pad_answers appends that
  many bytes to every answer (hostile logs: huge answers).

Signed-note signing is written here, for tests only; the project's own
note verification lives in koji_rekor.v2.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import os
import re
import socket
import socketserver
import sys
import threading
import time
from typing import Optional

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa, utils

# Tile paths come from the project's one tile implementation (koji_rekor.v2.tiles).
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
from koji_rekor.v2 import tiles  # noqa: E402

LOOPBACK = '127.0.0.1'
ENTRIES_PATH = '/api/v2/log/entries'
TILE_WIDTH = 256
# rekor-tiles' defaults (internal/server/grpcconfig.go): 4 MiB bodies, 60 s
# per request.
MAX_BODY = 4 * 1024 * 1024
REQUEST_TIMEOUT = 60.0
FROZEN_MESSAGE = 'This log has been frozen, please switch to the latest log.'
LIES = ('body', 'proof', 'checkpoint_signature', 'origin', 'bundle', 'tile', 'index')

# internal/algorithmregistry AllowedClientSigningAlgorithms, and the hash
# each implies (sigstore GetAlgorithmDetails). PKIX_ED25519 (pure) is known
# but has no hash: hashedrekord refuses it.
KEY_DETAILS = {
    'PKIX_RSA_PKCS1V15_2048_SHA256': ('rsa', 2048, 'sha256'),
    'PKIX_RSA_PKCS1V15_3072_SHA256': ('rsa', 3072, 'sha256'),
    'PKIX_RSA_PKCS1V15_4096_SHA256': ('rsa', 4096, 'sha256'),
    'PKIX_ECDSA_P256_SHA_256': ('ec', 'secp256r1', 'sha256'),
    'PKIX_ECDSA_P384_SHA_384': ('ec', 'secp384r1', 'sha384'),
    'PKIX_ECDSA_P521_SHA_512': ('ec', 'secp521r1', 'sha512'),
    'PKIX_ED25519_PH': ('ed25519', None, 'sha512'),
    'PKIX_ED25519': ('ed25519', None, None),
}
# sigstore common.proto PublicKeyDetails numbers protojson also accepts.
KEY_DETAILS_NUMBERS = {9: 'PKIX_RSA_PKCS1V15_2048_SHA256', 10: 'PKIX_RSA_PKCS1V15_3072_SHA256',
                       11: 'PKIX_RSA_PKCS1V15_4096_SHA256', 5: 'PKIX_ECDSA_P256_SHA_256',
                       12: 'PKIX_ECDSA_P384_SHA_384', 13: 'PKIX_ECDSA_P521_SHA_512',
                       7: 'PKIX_ED25519', 8: 'PKIX_ED25519_PH'}
HASHES = {'sha256': (hashes.SHA256, 'SHA2_256', 32), 'sha384': (hashes.SHA384, 'SHA2_384', 48),
          'sha512': (hashes.SHA512, 'SHA2_512', 64)}


# --- Merkle trees (RFC 6962 section 2.1) -----------------------------------

def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b'\x00' + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b'\x01' + left + right).digest()


class Tree:
    """Leaf hashes and every complete subtree's hash, level by level, so
    that tiles, roots and proofs are cheap at any size."""

    def __init__(self):
        self.levels: list = [[]]

    def append(self, leaf: bytes) -> None:
        self.levels[0].append(leaf)
        level = 0
        while len(self.levels[level]) % 2 == 0:
            nodes = self.levels[level]
            if len(self.levels) == level + 1:
                self.levels.append([])
            self.levels[level + 1].append(node_hash(nodes[-2], nodes[-1]))
            level += 1

    @property
    def size(self) -> int:
        return len(self.levels[0])

    def subtree(self, start: int, size: int) -> bytes:
        """MTH(D[start:start+size]) (RFC 6962 2.1.1)."""
        if size == 0:
            return hashlib.sha256(b'').digest()
        if size & (size - 1) == 0 and start % size == 0:
            return self.levels[size.bit_length() - 1][start // size]
        split = 1 << ((size - 1).bit_length() - 1)
        return node_hash(self.subtree(start, split), self.subtree(start + split, size - split))

    def root(self, size: int) -> bytes:
        return self.subtree(0, size)

    def inclusion(self, index: int, size: int) -> list:
        """PATH(index, D[0:size]) (RFC 6962 2.1.1), the deepest hash first."""
        def path(m, start, n):
            if n <= 1:
                return []
            k = 1 << ((n - 1).bit_length() - 1)
            if m < k:
                return path(m, start, k) + [self.subtree(start + k, n - k)]
            return path(m - k, start + k, n - k) + [self.subtree(start, k)]
        return path(index, 0, size)

    def tile(self, level: int, index: int, width: int) -> bytes:
        """Tile <level>/<index> of `width` hashes (C2SP tlog-tiles): the
        hashes of the complete subtrees of 256**level leaves it covers."""
        nodes = self.levels[8 * level] if len(self.levels) > 8 * level else []
        return b''.join(nodes[index * TILE_WIDTH:index * TILE_WIDTH + width])

    def tile_nodes(self, level: int) -> int:
        return len(self.levels[8 * level]) if len(self.levels) > 8 * level else 0


# --- signed notes (C2SP signed-note, tlog-checkpoint, tlog-cosignature) ----

class NoteKey:
    """A checkpoint signing key as rekor-tiles uses it (pkg/note/note.go)."""

    def __init__(self, name: str, kind: str = 'ed25519'):
        self.name = name
        self.kind = kind
        if kind == 'ed25519':
            self.private = ed25519.Ed25519PrivateKey.generate()
            raw = self.public_key.public_bytes(serialization.Encoding.Raw,
                                               serialization.PublicFormat.Raw)
            # ed25519KeyHash: SHA-256(name || "\n" || 0x01 || key).
            self.key_hash = hashlib.sha256(name.encode() + b'\n\x01' + raw).digest()
            self.vkey = '%s+%s+%s' % (name, self.key_hash[:4].hex(),
                                      base64.b64encode(b'\x01' + raw).decode())
        elif kind == 'ecdsa':
            self.private = ec.generate_private_key(ec.SECP256R1())
            # ecdsaKeyHash: SHA-256 of the DER key, whatever the name.
            self.key_hash = hashlib.sha256(self.public_der).digest()
            self.vkey = None
        else:
            raise ValueError('kind must be ed25519 or ecdsa')

    @property
    def public_key(self):
        return self.private.public_key()

    @property
    def public_der(self) -> bytes:
        return self.public_key.public_bytes(serialization.Encoding.DER,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)

    @property
    def public_pem(self) -> bytes:
        return self.public_key.public_bytes(serialization.Encoding.PEM,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)

    def key_id(self, name: str) -> bytes:
        if self.kind == 'ed25519':
            raw = self.public_key.public_bytes(serialization.Encoding.Raw,
                                               serialization.PublicFormat.Raw)
            return hashlib.sha256(name.encode() + b'\n\x01' + raw).digest()[:4]
        return self.key_hash[:4]

    def sign(self, text: bytes) -> bytes:
        if self.kind == 'ed25519':
            return self.private.sign(text)
        return self.private.sign(text, ec.ECDSA(hashes.SHA256()))


class Witness:
    """A witness cosigning checkpoints (C2SP tlog-cosignature v1)."""

    def __init__(self, name: str):
        self.name = name
        self.private = ed25519.Ed25519PrivateKey.generate()
        raw = self.private.public_key().public_bytes(serialization.Encoding.Raw,
                                                     serialization.PublicFormat.Raw)
        self.key_id = hashlib.sha256(name.encode() + b'\n\x04' + raw).digest()[:4]

    def line(self, body: bytes, when: int) -> str:
        signed = b'cosignature/v1\ntime %d\n' % when + body
        sig = self.key_id + when.to_bytes(8, 'big') + self.private.sign(signed)
        return '\u2014 %s %s\n' % (self.name, base64.b64encode(sig).decode())


def checkpoint_body(origin: str, size: int, root: bytes) -> bytes:
    """The note text of a checkpoint (C2SP tlog-checkpoint)."""
    return ('%s\n%d\n%s\n' % (origin, size, base64.b64encode(root).decode())).encode()


def sign_note(body: bytes, key: NoteKey, name: str, witnesses=(), witness_first=False,
              corrupt=False, when: int = 0) -> bytes:
    """A signed note: the text, a blank line, signature lines."""
    sig = key.sign(body)
    if corrupt:
        sig = bytes([sig[0] ^ 1]) + sig[1:]
    own = '\u2014 %s %s\n' % (name, base64.b64encode(key.key_id(name) + sig).decode())
    others = [w.line(body, when) for w in witnesses]
    lines = others + [own] if witness_first else [own] + others
    return body + b'\n' + ''.join(lines).encode()


# --- tile paths (C2SP tlog-tiles) -------------------------------------------

def tile_index(groups: str) -> Optional[int]:
    """N from "x001/x234/067" (all groups but the last prefixed x)."""
    parts = groups.split('/')
    if not all(re.fullmatch(r'x\d{3}', p) for p in parts[:-1]) or \
            not re.fullmatch(r'\d{3}', parts[-1]):
        return None
    return int(''.join(p.lstrip('x') for p in parts))


def tile_n(n: int) -> str:
    """The "N" of a tile path for index n (koji_rekor.v2.tiles: one place for
    tile paths)."""
    return tiles.index_path(n)


def parse_tile_path(path: str):
    """(level or 'entries', index, width or None) of a tile path, or None."""
    m = re.fullmatch(r'/tile/(entries|\d{1,2})/([x\d/]+?)(?:\.p/(\d{1,3}))?', path)
    if not m:
        return None
    level = m.group(1) if m.group(1) == 'entries' else int(m.group(1))
    index = tile_index(m.group(2))
    width = int(m.group(3)) if m.group(3) else None
    if index is None or (width is not None and not 1 <= width < TILE_WIDTH) or (
            level != 'entries' and level > 63):
        return None
    # Only the path koji_rekor.v2.tiles writes for it (no "/tile/00/..." aliases).
    made = tiles.entries_path(index, width) if level == 'entries' else \
        tiles.tile_path(level, index, width)
    if '/' + made != path:
        return None
    return level, index, width


def bundle(bodies) -> bytes:
    """An entry bundle: each body after its big-endian uint16 length."""
    return b''.join(len(b).to_bytes(2, 'big') + b for b in bodies)


# --- protojson ------------------------------------------------------------

class Invalid(Exception):
    """Answered 400; the message is what grpc-gateway or rekor-tiles says."""


def _field(obj: dict, json_name: str, proto_name: str):
    """protojson accepts a field by its JSON name or its proto name, not both."""
    if json_name in obj and proto_name in obj and json_name != proto_name:
        raise Invalid('proto: duplicate field "%s"' % json_name)
    value = obj.get(json_name, obj.get(proto_name))
    return value


def _message(value, fields: dict, where: str) -> dict:
    """A JSON object holding only known fields (json name -> proto name)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise Invalid('proto: (line 1:1): invalid value for %s' % where)
    known = set(fields) | set(fields.values())
    for name in value:
        if name not in known:
            raise Invalid('proto: (line 1:1): unknown field "%s"' % name)
    return value


def _bytes(value, where: str) -> bytes:
    """protojson bytes: standard or URL-safe base64, padded or not."""
    if value is None:
        return b''
    if not isinstance(value, str):
        raise Invalid('proto: (line 1:1): invalid value for bytes field %s' % where)
    text = value.replace('-', '+').replace('_', '/')
    text += '=' * (-len(text) % 4)
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:
        raise Invalid('proto: (line 1:1): invalid value for bytes field %s' % where)


def parse_create_request(raw: bytes):
    """(digest, signature content, verifier kind, verifier bytes, keyDetails)
    of a CreateEntryRequest holding a hashedRekordRequestV002."""
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        raise Invalid('proto: syntax error (line 1:1): unexpected token')
    top = _message(data, {'hashedRekordRequestV002': 'hashed_rekord_request_v002',
                          'dsseRequestV002': 'dsse_request_v002'}, 'CreateEntryRequest')
    request = _field(top, 'hashedRekordRequestV002', 'hashed_rekord_request_v002')
    if request is None:
        # service.go: dsse was dropped; nothing else is a hashedrekord.
        raise Invalid('invalid type, must be hashedrekord')
    request = _message(request, {'digest': 'digest', 'signature': 'signature'},
                       'HashedRekordRequestV002')
    digest = _bytes(request.get('digest'), 'digest')
    sig = _message(request.get('signature'), {'content': 'content', 'verifier': 'verifier'},
                   'Signature')
    content = _bytes(sig.get('content'), 'content')
    verifier = _message(sig.get('verifier'), {'publicKey': 'public_key',
                                              'x509Certificate': 'x509_certificate',
                                              'keyDetails': 'key_details'}, 'Verifier')
    public = _field(verifier, 'publicKey', 'public_key')
    cert = _field(verifier, 'x509Certificate', 'x509_certificate')
    if public is not None and cert is not None:
        raise Invalid('proto: (line 1:1): error parsing "verifier", oneof is already set')
    kind, raw_bytes = None, b''
    if public is not None:
        kind = 'publicKey'
        raw_bytes = _bytes(_field(_message(public, {'rawBytes': 'raw_bytes'}, 'PublicKey'),
                                  'rawBytes', 'raw_bytes'), 'rawBytes')
    elif cert is not None:
        kind = 'x509Certificate'
        raw_bytes = _bytes(_field(_message(cert, {'rawBytes': 'raw_bytes'}, 'X509Certificate'),
                                  'rawBytes', 'raw_bytes'), 'rawBytes')
    details = _field(verifier, 'keyDetails', 'key_details')
    if isinstance(details, int) and not isinstance(details, bool):
        details = KEY_DETAILS_NUMBERS.get(details, 'UNKNOWN_%d' % details)
    elif details is not None and not isinstance(details, str):
        raise Invalid('proto: (line 1:1): invalid value for enum field keyDetails')
    return digest, content, kind, raw_bytes, details


def to_log_entry(digest, content, kind, raw, details):
    """rekor-tiles hashedrekord.ToLogEntry: validate, check the algorithm
    against the registry, verify; the entry as the log stores it, JCS."""
    if not content or kind is None or not digest or not raw:
        raise Invalid('missing field')  # validate(): missing signature/verifier/digest
    try:
        if kind == 'publicKey':
            key = serialization.load_der_public_key(raw)  # x509.ParsePKIXPublicKey: DER only
        else:
            key = x509.load_der_x509_certificate(raw).public_key()
    except ValueError:
        raise Invalid('parsing verifier')
    if details not in KEY_DETAILS:
        raise Invalid('getting key algorithm details')
    _, _, hash_name = KEY_DETAILS[details]
    if hash_name is None:
        raise Invalid('no associated digest algorithm')
    # algorithmregistry.CheckEntryAlgorithms: the key with this hash must be
    # one of the allowed algorithms (key type, size or curve, and hash).
    allowed = False
    for family, size, h in KEY_DETAILS.values():
        if h != hash_name:
            continue
        if family == 'rsa' and isinstance(key, rsa.RSAPublicKey) and \
                (key.key_size + 7) // 8 * 8 == size:
            allowed = True
        elif family == 'ec' and isinstance(key, ec.EllipticCurvePublicKey) and \
                key.curve.name == size:
            allowed = True
        elif family == 'ed25519' and isinstance(key, ed25519.Ed25519PublicKey):
            allowed = True
    if not allowed:
        raise Invalid('unsupported entry algorithm')
    algorithm, proto_hash, length = HASHES[hash_name]
    if len(digest) != length:
        raise Invalid('digest length does not match')
    try:
        if isinstance(key, rsa.RSAPublicKey):
            if len(content) != (key.key_size + 7) // 8:
                raise InvalidSignature  # Go's VerifyPKCS1v15 wants exactly k bytes
            key.verify(content, digest, padding.PKCS1v15(), utils.Prehashed(algorithm()))
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(content, digest, ec.ECDSA(utils.Prehashed(algorithm())))
        else:
            raise InvalidSignature  # Ed25519ph: not needed by these tests
    except InvalidSignature:
        raise Invalid('verifying signature')
    verifier = {kind: {'rawBytes': base64.b64encode(raw).decode()}, 'keyDetails': details}
    entry = {'kind': 'hashedrekord', 'apiVersion': '0.0.2', 'spec': {'hashedRekordV002': {
        'data': {'digest': base64.b64encode(digest).decode(), 'algorithm': proto_hash},
        'signature': {'content': base64.b64encode(content).decode(), 'verifier': verifier}}}}
    # protojson.Marshal then jsoncanonicalizer.Transform (service.go): for
    # ASCII strings and objects only, sorted keys without spaces is JCS.
    return json.dumps(entry, sort_keys=True, separators=(',', ':')).encode()


# --- the log ----------------------------------------------------------------

class RekorV2Server:
    """A v2 shard served over HTTP on 127.0.0.1 from daemon threads."""

    def __init__(self, origin: Optional[str] = None, interval: float = 0.2,
                 key: str = 'ed25519', witnesses: int = 1, witness_first: bool = False,
                 keep_partials: bool = False, request_timeout: float = REQUEST_TIMEOUT,
                 port: int = 0):
        self.interval = interval
        self.request_timeout = request_timeout
        self.keep_partials = keep_partials
        self.witness_first = witness_first
        self._origin = origin
        self.key_kind = key
        self.key: Optional[NoteKey] = None
        self.witnesses = [Witness('witness%d.example' % i) for i in range(witnesses)]
        self.tree = Tree()
        self.bodies: list = []
        self.by_identity: dict = {}
        self.published_size = 0
        self.published_note = b''
        self.checkpoints = 0
        self.cond = threading.Condition()
        # switches
        self.frozen = False
        self.unavailable = 0        # answer the next N POSTs 503; -1: all of them
        self.internal_errors = 0    # answer the next N POSTs 500
        self.lie: Optional[str] = None
        self.paused = False         # stop publishing checkpoints
        self.pad_answers = 0        # bytes appended to every answer
        self.requests: list = []    # (method, path, status)
        self._address = (LOOPBACK, port)
        self._stop = threading.Event()
        self._httpd = None
        self._threads: list = []

    # lifecycle --------------------------------------------------------------

    def start(self) -> 'RekorV2Server':
        self._stop.clear()
        self._httpd = _HTTPServer(self._address, self)
        if self._origin is None:
            self._origin = '%s:%d' % (LOOPBACK, self._httpd.server_address[1])
        if self.key is None:
            self.key = NoteKey(self._origin, self.key_kind)
        with self.cond:
            self._publish()  # tessera writes a checkpoint of size 0 on start
        for target in (lambda: self._httpd.serve_forever(poll_interval=0.05), self._publisher):
            thread = threading.Thread(target=target, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stop.set()
        with self.cond:
            self.cond.notify_all()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd.close_connections()
        for thread in self._threads:
            thread.join(5)
        self._threads = []
        self._httpd = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return 'http://%s:%d' % (LOOPBACK, self.port)

    @property
    def origin(self) -> str:
        return self._origin

    @property
    def log_id(self) -> bytes:
        """logId.keyId: the full key hash (service.go logID)."""
        return self.key.key_hash

    def count(self, method: str, path: str, status: Optional[int] = None) -> int:
        return sum(1 for m, p, s in list(self.requests)
                   if m == method and p == path and (status is None or s == status))

    # checkpoints -------------------------------------------------------------

    def _publisher(self) -> None:
        while not self._stop.wait(self.interval):
            with self.cond:
                if not self.paused:
                    self._publish()

    def _publish(self) -> None:
        size = self.tree.size
        self.published_size = size
        self.published_note = self.note(size)
        self.checkpoints += 1
        self.cond.notify_all()

    def note(self, size: int) -> bytes:
        """The signed checkpoint of the tree at size, lies included."""
        origin = 'evil.%s' % self._origin if self.lie == 'origin' else self._origin
        return sign_note(checkpoint_body(origin, size, self.tree.root(size)), self.key, origin,
                         self.witnesses, self.witness_first,
                         corrupt=(self.lie == 'checkpoint_signature'),
                         when=int(time.time()))

    def publish_now(self) -> None:
        """Publish a checkpoint at once (tests that must not wait)."""
        with self.cond:
            self._publish()

    def wait_published(self, index: int, deadline: float) -> Optional[bytes]:
        """The first published checkpoint covering index (await.go)."""
        with self.cond:
            while self.published_size <= index:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._stop.is_set():
                    return None
                self.cond.wait(remaining)
            return self.published_note

    # the write API ---------------------------------------------------------

    def create(self, raw: bytes):
        """(status, headers, body) of POST /api/v2/log/entries."""
        deadline = time.monotonic() + self.request_timeout
        if self.frozen:
            # Go's net/http sniffs the written message as text/plain.
            return 405, {'Content-Type': 'text/plain; charset=utf-8'}, \
                (FROZEN_MESSAGE + '\n').encode()
        try:
            parsed = parse_create_request(raw)
            body = to_log_entry(*parsed)
        except Invalid as e:
            message = str(e)
            # Only protojson errors say what is wrong; a request that parses
            # but does not validate gets one sentence (service.go).
            if not message.startswith(('proto:', 'invalid type')):
                message = 'invalid hashedrekord request'
            return _grpc_error(400, 3, message)
        with self.cond:
            if self.unavailable:
                self.unavailable -= self.unavailable > 0
                return _grpc_error(503, 14, 'reached max pushback; retry')
            if self.internal_errors:
                self.internal_errors -= 1
                return _grpc_error(500, 2, 'failed to integrate entry')
            identity = hashlib.sha256(body).digest()
            index = self.by_identity.get(identity)
            duplicate = index is not None
            if not duplicate:
                index = self.tree.size
                self.tree.append(leaf_hash(body))
                self.bodies.append(body)
                self.by_identity[identity] = index
        note = self.wait_published(index, deadline)
        if note is None:
            return _grpc_error(504, 4, 'context deadline exceeded')
        if duplicate:
            status, headers, answer = _grpc_error(
                409, 6, 'an equivalent entry already exists in the transparency log with '
                'index %d' % index)  # tessera.go DuplicateError, unwrapped
            if self.lie == 'index':
                index = 0 if index else 1
            headers['x-log-index'] = str(index)
            return status, headers, answer
        return 201, {'Content-Type': 'application/json'}, self.entry_json(index, note)

    def entry_json(self, index: int, note: bytes) -> bytes:
        size = int(note.split(b'\n')[1])
        logged = self.bodies[index]
        if self.lie == 'body':
            other = json.loads(logged)
            other['spec']['hashedRekordV002']['data']['digest'] = base64.b64encode(
                hashlib.sha256(logged).digest()).decode()
            logged = json.dumps(other, sort_keys=True, separators=(',', ':')).encode()
        proof = self.tree.inclusion(index, size)
        if self.lie == 'proof':
            proof = [bytes([proof[0][0] ^ 1]) + proof[0][1:]] + proof[1:] if proof \
                else [hashlib.sha256(b'lie').digest()]
        b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
        # Field order and forms of the production answer (EmitUnpopulated).
        return json.dumps({
            'logIndex': str(index),
            'logId': {'keyId': b64(self.log_id)},
            'kindVersion': {'kind': 'hashedrekord', 'version': '0.0.2'},
            'integratedTime': '0',
            'inclusionPromise': None,
            'inclusionProof': {'logIndex': str(index), 'rootHash': b64(self.tree.root(size)),
                               'treeSize': str(size), 'hashes': [b64(h) for h in proof],
                               'checkpoint': {'envelope': note.decode()}},
            'canonicalizedBody': b64(logged)}).encode()

    # the read side -----------------------------------------------------------

    def read(self, path: str):
        """(status, headers, body) of a static read."""
        if path == '/checkpoint':
            with self.cond:
                return 200, {'Content-Type': 'text/plain; charset=utf-8'}, self.published_note
        parsed = parse_tile_path(path)
        if parsed is None:
            return 404, {'Content-Type': 'text/plain'}, b'not found\n'
        level, index, width = parsed
        with self.cond:
            if level == 'entries':
                available = self.tree.size - index * TILE_WIDTH
            else:
                available = self.tree.tile_nodes(level) - index * TILE_WIDTH
            want = width or TILE_WIDTH
            # Partial tiles stay until the tile is full; then tessera's
            # garbage collection removes them (unless keep_partials).
            if available < want or (width and available >= TILE_WIDTH and
                                    not self.keep_partials):
                return 404, {'Content-Type': 'text/plain'}, b'not found\n'
            if level == 'entries':
                bodies = self.bodies[index * TILE_WIDTH:index * TILE_WIDTH + want]
                if self.lie == 'bundle':
                    bodies = [b.replace(b'"kind"', b'"kind" ') for b in bodies]
                data = bundle(bodies)
            else:
                data = self.tree.tile(level, index, want)
                if self.lie == 'tile':
                    data = bytes([data[0] ^ 1]) + data[1:]
        return 200, {'Content-Type': 'application/octet-stream'}, data


def _grpc_error(status: int, code: int, message: str):
    """grpc-gateway's DefaultHTTPErrorHandler body: {code, message, details}."""
    return status, {'Content-Type': 'application/json'}, json.dumps(
        {'code': code, 'message': message, 'details': []}).encode()


class _HTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, address, log: RekorV2Server):
        self.log = log
        self._live: set = set()
        self._live_lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self):
        socketserver.TCPServer.server_bind(self)  # no getfqdn: no DNS needed
        self.server_name, self.server_port = self.server_address[:2]

    def process_request_thread(self, request, client_address):
        with self._live_lock:
            self._live.add(request)
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._live_lock:
                self._live.discard(request)

    def handle_error(self, request, client_address):
        # A client that hangs up (a cap reached, a deadline cut) is no error.
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)

    def close_connections(self):
        with self._live_lock:
            live = list(self._live)
        for sock in live:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    server_version = 'rekor-v2-double'

    def log_message(self, format, *args):  # noqa: A002 - stdlib signature
        pass

    def do_GET(self):
        path = self.path.split('?', 1)[0]
        self._answer('GET', path, *self.server.log.read(path))

    def do_POST(self):
        path = self.path.split('?', 1)[0]
        log = self.server.log
        length = self.headers.get('Content-Length')
        if path != ENTRIES_PATH:
            return self._answer('POST', path, 404, {'Content-Type': 'text/plain'},
                                b'Not Found\n')
        if length is None or not length.isdigit():
            return self._answer('POST', path, 411, {'Content-Type': 'text/plain'},
                                b'length required\n', close=True)
        if int(length) > MAX_BODY:
            # http.MaxBytesHandler: the read fails, the gateway says so (400).
            return self._answer('POST', path, *_grpc_error(400, 3, 'http: request body too '
                                                           'large'), close=True)
        raw = self.rfile.read(int(length))
        self._answer('POST', path, *log.create(raw))

    def do_PUT(self):
        self._answer('PUT', self.path, 405, {'Content-Type': 'text/plain'}, b'')

    def _answer(self, method, path, status, headers, body, close=False):
        self.server.log.requests.append((method, path, status))
        body += b' ' * self.server.log.pad_answers
        try:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header('Content-Length', str(len(body)))
            if close:
                self.send_header('Connection', 'close')
                self.close_connection = True
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            self.close_connection = True

