"""C2SP signed notes and tlog checkpoints, as Rekor v2 publishes them.

Specs: https://c2sp.org/signed-note (note text, signature lines, key hashes,
verifier keys) and https://c2sp.org/tlog-checkpoint (origin, size, root hash,
extension lines). Rekor v2's key ids: sigstore/rekor-tiles pkg/note/note.go
(KeyHash): Ed25519 as C2SP says, ECDSA the SHA-256 of the DER
SubjectPublicKeyInfo (not C2SP-conformant, on purpose).

Written by hand (no library in Python does signed notes); cryptography does
the signatures.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass
from typing import Optional, Tuple, Union

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from ..errors import VerificationError


# signed-note: "a signature line ... starts with U+2014 (em dash) and a space".
SIG_PREFIX = '\u2014 '
# signed-note, signature types: 0x01 is Ed25519.
ALG_ED25519 = 0x01
# golang.org/x/mod/sumdb/note (what C2SP describes) gives up past 100
# signature lines; so do we, which also bounds the work a hostile note costs.
MAX_SIGNATURES = 100
# A checkpoint is a few hundred bytes; witnessed ones a few KiB.
MAX_NOTE_BYTES = 1 << 16

_DECIMAL = re.compile(r'(0|[1-9][0-9]*)\Z')

PublicKey = Union[ed25519.Ed25519PublicKey, ec.EllipticCurvePublicKey]


class NoteError(VerificationError):
    """A note or checkpoint that does not parse or does not verify."""


@dataclass(frozen=True)
class NoteKey:
    """A note verifier: the signer's name, the 4-byte key id its signature
    lines carry, the public key, and the full 32-byte hash that Rekor v2
    calls the log id (TransparencyLogEntry.logId.keyId)."""
    name: str
    key_id: bytes
    log_id: bytes
    public_key: PublicKey


@dataclass(frozen=True)
class Signature:
    name: str
    key_id: bytes
    signature: bytes


@dataclass(frozen=True)
class Note:
    text: bytes                      # the signed bytes, final newline included
    signatures: Tuple[Signature, ...]


@dataclass(frozen=True)
class Checkpoint:
    """tlog-checkpoint body, from a note whose signature verified."""
    origin: str
    size: int
    root_hash: bytes
    extensions: Tuple[str, ...]
    raw: bytes                       # the whole note as received


def valid_name(name: str) -> bool:
    # signed-note: key names are non-empty, contain no whitespace and no '+'.
    return bool(name) and not any(c.isspace() for c in name) and '+' not in name


def _der(key: PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.DER,
                            serialization.PublicFormat.SubjectPublicKeyInfo)


def note_key(name: str, public_key) -> NoteKey:
    """The verifier of `name` (the log's origin) for a public key (a
    cryptography key object or DER SubjectPublicKeyInfo bytes)."""
    if not valid_name(name):
        raise NoteError('note key name %r is not a valid signed-note name' % name)
    if isinstance(public_key, (bytes, bytearray)):
        try:
            public_key = serialization.load_der_public_key(bytes(public_key))
        except (ValueError, TypeError) as e:
            raise NoteError('not a DER public key: %s' % e)
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        raw = public_key.public_bytes(serialization.Encoding.Raw,
                                      serialization.PublicFormat.Raw)
        # signed-note: key hash = SHA-256(name || 0x0A || type || key);
        # rekor-tiles ed25519KeyHash keeps the full hash as the log id.
        full = hashlib.sha256(name.encode() + b'\n' + bytes([ALG_ED25519]) + raw).digest()
    elif isinstance(public_key, ec.EllipticCurvePublicKey):
        # rekor-tiles ecdsaKeyHash: SHA-256 of the DER SubjectPublicKeyInfo.
        full = hashlib.sha256(_der(public_key)).digest()
    else:
        raise NoteError('checkpoint keys must be Ed25519 or ECDSA, not %s'
                        % type(public_key).__name__)
    return NoteKey(name=name, key_id=full[:4], log_id=full, public_key=public_key)


def parse_vkey(vkey: str) -> NoteKey:
    """A signed-note verifier key: `<name>+<8 hex key id>+<base64(0x01 || key)>`
    (Ed25519 only: the only type the encoding names)."""
    # The base64 key may itself hold '+'; the name never does.
    parts = vkey.strip().split('+', 2)
    if len(parts) != 3:
        raise NoteError('verifier key is not <name>+<hash>+<key>')
    name, hexid, b64 = parts
    try:
        key_id = bytes.fromhex(hexid)
        blob = base64.b64decode(b64, validate=True)
    except (ValueError, binascii.Error):
        raise NoteError('verifier key %s: bad hash or base64' % name)
    if len(hexid) != 8:
        raise NoteError('verifier key %s: the hash is not 8 hex digits' % name)
    if len(blob) != 33 or blob[0] != ALG_ED25519:
        raise NoteError('verifier key %s: not an Ed25519 key (type 0x01, 32 bytes)' % name)
    key = note_key(name, ed25519.Ed25519PublicKey.from_public_bytes(blob[1:]))
    if key.key_id != key_id:
        raise NoteError('verifier key %s: hash %s does not match the key (%s)'
                        % (name, hexid, key.key_id.hex()))
    return key


def parse_note(raw: Union[bytes, str]) -> Note:
    """Split a signed note into its text and signature lines (signed-note,
    "Note text" and "Signatures"). Nothing is verified here."""
    if isinstance(raw, str):
        raw = raw.encode('utf-8')
    if len(raw) > MAX_NOTE_BYTES:
        raise NoteError('note is %d bytes, more than %d' % (len(raw), MAX_NOTE_BYTES))
    try:
        s = raw.decode('utf-8')
    except UnicodeDecodeError:
        raise NoteError('note is not UTF-8')
    # signed-note: no control characters but newline, anywhere.
    if any((ord(c) < 0x20 and c != '\n') or ord(c) == 0x7f for c in s):
        raise NoteError('note contains a control character')
    # The text ends at the last blank line: the signatures follow it.
    cut = s.rfind('\n\n')
    if cut < 0:
        raise NoteError('note has no blank line before its signatures')
    text, sigblock = s[:cut + 1], s[cut + 2:]
    if not sigblock.endswith('\n'):
        raise NoteError('note does not end with a newline')
    sigs = []
    for line in sigblock[:-1].split('\n'):
        if not line.startswith(SIG_PREFIX):
            raise NoteError('note signature line does not start with an em dash')
        fields = line[len(SIG_PREFIX):].split(' ')
        if len(fields) != 2 or not valid_name(fields[0]):
            raise NoteError('malformed note signature line')
        try:
            blob = base64.b64decode(fields[1], validate=True)
        except binascii.Error:
            raise NoteError('note signature of %s is not base64' % fields[0])
        if len(blob) < 5:
            raise NoteError('note signature of %s is too short' % fields[0])
        sigs.append(Signature(fields[0], blob[:4], blob[4:]))
        if len(sigs) > MAX_SIGNATURES:
            raise NoteError('note has more than %d signatures' % MAX_SIGNATURES)
    if not sigs:
        raise NoteError('note has no signatures')
    return Note(text.encode('utf-8'), tuple(sigs))


def _signature_ok(key: PublicKey, sig: bytes, text: bytes) -> bool:
    try:
        if isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(sig, text)
        else:
            # rekor-tiles signs the note text with the sigstore signer of the
            # key: ECDSA, ASN.1 DER signature, the curve's usual hash.
            h = {256: hashes.SHA256, 384: hashes.SHA384, 521: hashes.SHA512}.get(
                key.curve.key_size)
            if h is None:
                return False
            key.verify(sig, text, ec.ECDSA(h()))
    except InvalidSignature:
        return False
    return True


def verify_note(raw: Union[bytes, str], key: NoteKey) -> Note:
    """The note, when a signature line by `key` (same name, same key id)
    verifies. Lines by other names or keys (witness cosignatures, in any
    order) are ignored, as signed-note says verifiers do with unknown keys."""
    note = parse_note(raw)
    mine = [s for s in note.signatures if s.name == key.name and s.key_id == key.key_id]
    if not mine:
        names = sorted({'%s/%s' % (s.name, s.key_id.hex()) for s in note.signatures})
        raise NoteError('note has no signature by %s/%s (only %s)'
                        % (key.name, key.key_id.hex(), ', '.join(names)))
    for s in mine:
        if not _signature_ok(key.public_key, s.signature, note.text):
            raise NoteError('note signature by %s does not verify' % key.name)
    return note


def parse_checkpoint_text(text: bytes) -> Tuple[str, int, bytes, Tuple[str, ...]]:
    """tlog-checkpoint "Note text": origin, decimal size, base64 root hash,
    then zero or more non-empty extension lines."""
    lines = text.decode('utf-8').split('\n')
    # The text ends with a newline, so the split leaves one empty string.
    if len(lines) < 4 or lines[-1] != '':
        raise NoteError('checkpoint has fewer than three lines')
    origin, size_s, root_s = lines[0], lines[1], lines[2]
    extensions = tuple(lines[3:-1])
    if not origin:
        raise NoteError('checkpoint has an empty origin')
    if any(not e for e in extensions):
        raise NoteError('checkpoint has an empty extension line')
    # Sizes are uint64 in tlog-checkpoint; past 2**63 no log will ever be.
    if not _DECIMAL.match(size_s) or len(size_s) > 19:
        raise NoteError('checkpoint size %r is not a decimal number below 2**63'
                        % size_s[:40])
    try:
        root = base64.b64decode(root_s, validate=True)
    except binascii.Error:
        raise NoteError('checkpoint root hash is not base64')
    if len(root) != 32:
        raise NoteError('checkpoint root hash is %d bytes, not 32' % len(root))
    return origin, int(size_s), root, extensions


def verify_checkpoint(raw: Union[bytes, str], key: NoteKey,
                      origin: Optional[str] = None) -> Checkpoint:
    """A checkpoint signed by `key` whose origin line is `origin` (by
    default the key's name: Rekor v2 names its key after its origin)."""
    if isinstance(raw, str):
        raw = raw.encode('utf-8')
    note = verify_note(raw, key)
    got_origin, size, root, ext = parse_checkpoint_text(note.text)
    want = key.name if origin is None else origin
    if got_origin != want:
        raise NoteError('checkpoint origin is %r, expected %r' % (got_origin[:100], want))
    return Checkpoint(origin=got_origin, size=size, root_hash=root,
                      extensions=ext, raw=raw)
