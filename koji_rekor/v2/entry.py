"""Rekor v2 TransparencyLogEntry: parse once, verify offline.

Format: sigstore/protobuf-specs protos/sigstore_rekor.proto
(TransparencyLogEntry, InclusionProof, Checkpoint) in protojson, as
rekor-tiles answers `POST /api/v2/log/entries` with 201 and as Sigstore
bundles carry it (verificationMaterial.tlogEntries). int64 fields are JSON
strings (protojson), also accepted as numbers; proto3 may omit zero values.
A v2 entry has no time (integratedTime "0") and no SET (inclusionPromise
null): its proof of logging is the inclusion proof against a checkpoint
signed by the log. sigstore-go does the same: pkg/verify/tlog.go finds the
log by logId.keyId among the TrustedRoot's logs, pkg/tlog/entry.go
VerifyInclusion checks the checkpoint note with that log's key, then the
inclusion proof to the checkpoint's root.
Parsed by hand for the same reason as trust.py: no new runtime dependency.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from typing import Any, Optional, Tuple, Union

from .note import Checkpoint, NoteError, verify_checkpoint
from .tiles import Fetch, prove_inclusion
from .trust import LogKey, TrustedRoot, TrustError, find_log
from ..errors import VerificationError
from ..merkle import hash_leaf, root_from_inclusion_proof

KIND = 'hashedrekord'
VERSION = '0.0.2'
MAX_PROOF_HASHES = 64               # a tree of 2**64 leaves needs no more
_INT64 = re.compile(r'(0|[1-9][0-9]{0,18})\Z')


class EntryError(VerificationError):
    """An entry that does not parse or does not verify."""


@dataclass(frozen=True)
class InclusionProof:
    log_index: int
    root_hash: bytes
    tree_size: int
    hashes: Tuple[bytes, ...]
    checkpoint: str                  # the signed note, as received


@dataclass(frozen=True)
class TransparencyLogEntry:
    log_index: int
    log_id: bytes
    kind: str
    version: str
    integrated_time: int
    has_promise: bool
    body: bytes                      # canonicalizedBody, decoded
    proof: InclusionProof


@dataclass(frozen=True)
class VerifiedEntry:
    entry: TransparencyLogEntry
    checkpoint: Checkpoint
    log: LogKey


def _obj(v: Any, where: str) -> dict:
    if not isinstance(v, dict):
        raise EntryError('%s is missing or not an object' % where)
    return v


def _int64(obj: dict, name: str, where: str) -> int:
    v = obj.get(name)
    if v is None:
        return 0                     # proto3: a zero int64 may be left out
    if isinstance(v, bool) or not isinstance(v, (int, str)):
        raise EntryError('%s.%s is not an int64' % (where, name))
    if isinstance(v, str):
        if not _INT64.match(v):
            raise EntryError('%s.%s %r is not a decimal int64' % (where, name, v[:30]))
        v = int(v)
    if not 0 <= v < 1 << 63:
        raise EntryError('%s.%s is out of range' % (where, name))
    return v


def _bytes(obj: dict, name: str, where: str, size: Optional[int] = None) -> bytes:
    v = obj.get(name)
    if not isinstance(v, str):
        raise EntryError('%s.%s is missing or not a string' % (where, name))
    try:
        # protojson writes standard base64 and reads URL-safe too.
        b = base64.b64decode(v.replace('-', '+').replace('_', '/'), validate=True)
    except (binascii.Error, ValueError):
        raise EntryError('%s.%s is not base64' % (where, name))
    if size is not None and len(b) != size:
        raise EntryError('%s.%s is %d bytes, not %d' % (where, name, len(b), size))
    return b


def parse_entry(data: Union[bytes, str, dict]) -> TransparencyLogEntry:
    """A TransparencyLogEntry from its protojson (bytes, text or parsed)."""
    if isinstance(data, (bytes, str)):
        try:
            data = json.loads(data)
        except (ValueError, UnicodeDecodeError) as e:
            raise EntryError('entry is not JSON: %s' % str(e).splitlines()[0])
    e = _obj(data, 'entry')
    kv = _obj(e.get('kindVersion'), 'kindVersion')
    kind, version = kv.get('kind'), kv.get('version')
    if not isinstance(kind, str) or not isinstance(version, str):
        raise EntryError('kindVersion.kind and .version must be strings')
    ip = _obj(e.get('inclusionProof'), 'inclusionProof')
    raw_hashes = ip.get('hashes', [])
    if not isinstance(raw_hashes, list) or len(raw_hashes) > MAX_PROOF_HASHES:
        raise EntryError('inclusionProof.hashes is not a list of at most %d'
                         % MAX_PROOF_HASHES)
    hashes = tuple(_bytes({'h': h}, 'h', 'inclusionProof.hashes[%d]' % i, 32)
                   for i, h in enumerate(raw_hashes))
    cp = _obj(ip.get('checkpoint'), 'inclusionProof.checkpoint')
    envelope = cp.get('envelope')
    if not isinstance(envelope, str) or not envelope:
        raise EntryError('inclusionProof.checkpoint.envelope is missing')
    promise = e.get('inclusionPromise')
    if promise is not None and not isinstance(promise, dict):
        raise EntryError('inclusionPromise is not an object')
    return TransparencyLogEntry(
        log_index=_int64(e, 'logIndex', 'entry'),
        log_id=_bytes(_obj(e.get('logId'), 'logId'), 'keyId', 'logId'),
        kind=kind, version=version,
        integrated_time=_int64(e, 'integratedTime', 'entry'),
        has_promise=bool(promise),
        body=_bytes(e, 'canonicalizedBody', 'entry'),
        proof=InclusionProof(
            log_index=_int64(ip, 'logIndex', 'inclusionProof'),
            root_hash=_bytes(ip, 'rootHash', 'inclusionProof', 32),
            tree_size=_int64(ip, 'treeSize', 'inclusionProof'),
            hashes=hashes, checkpoint=envelope))


def entry_from_bundle(data: Union[bytes, str, dict]) -> TransparencyLogEntry:
    """The first tlog entry of a Sigstore bundle (v0.2 and later)."""
    if isinstance(data, (bytes, str)):
        try:
            data = json.loads(data)
        except (ValueError, UnicodeDecodeError) as e:
            raise EntryError('bundle is not JSON: %s' % str(e).splitlines()[0])
    b = _obj(data, 'bundle')
    mt = b.get('mediaType')
    if not isinstance(mt, str) or not mt.startswith('application/vnd.dev.sigstore.bundle'):
        raise EntryError('not a Sigstore bundle (mediaType %r)' % (mt,))
    entries = _obj(b.get('verificationMaterial'), 'verificationMaterial').get('tlogEntries')
    if not isinstance(entries, list) or not entries:
        raise EntryError('bundle has no verificationMaterial.tlogEntries')
    return parse_entry(entries[0])


def _pick_log(entry: TransparencyLogEntry,
              log_keys: Union[TrustedRoot, Tuple[LogKey, ...], LogKey]) -> LogKey:
    if isinstance(log_keys, LogKey):
        log_keys = (log_keys,)
    try:
        return find_log(log_keys, entry.log_id)
    except TrustError as e:
        raise EntryError('entry logId: %s' % e)


def verify_entry(entry: Union[TransparencyLogEntry, bytes, str, dict], expected_body: bytes,
                 log_keys: Union[TrustedRoot, Tuple[LogKey, ...], LogKey]) -> VerifiedEntry:
    """Everything a v2 entry claims, offline: the kind, the body we sent,
    the log's signature on the checkpoint, and the inclusion proof to it.
    Key validity windows are not checked: a v2 entry carries no time."""
    if not isinstance(entry, TransparencyLogEntry):
        entry = parse_entry(entry)
    if (entry.kind, entry.version) != (KIND, VERSION):
        raise EntryError('entry is %s/%s, not %s/%s'
                         % (entry.kind[:40], entry.version[:20], KIND, VERSION))
    # The body the log committed to must be ours, byte for byte (both JCS).
    if entry.body != expected_body:
        raise EntryError('the logged body is not the one we sent')
    log = _pick_log(entry, log_keys)
    try:
        cp = verify_checkpoint(entry.proof.checkpoint, log.note_key, log.origin)
    except NoteError as e:
        raise EntryError('checkpoint: %s' % e)
    p = entry.proof
    if p.tree_size != cp.size or p.root_hash != cp.root_hash:
        raise EntryError('inclusion proof is for tree %d, the checkpoint for tree %d '
                         'or another root' % (p.tree_size, cp.size))
    if p.log_index != entry.log_index:
        raise EntryError('inclusion proof is for index %d, the entry says %d'
                         % (p.log_index, entry.log_index))
    # RFC 9162 section 2.1.3.2, against the signed root.
    try:
        root = root_from_inclusion_proof(entry.log_index, cp.size, hash_leaf(entry.body),
                                         list(p.hashes))
    except VerificationError as e:
        raise EntryError(str(e))
    if root != cp.root_hash:
        raise EntryError('inclusion proof of index %d does not lead to the checkpoint root'
                         % entry.log_index)
    return VerifiedEntry(entry=entry, checkpoint=cp, log=log)


def entry_from_tiles(fetch: Fetch, log: LogKey, index: int, expected_body: bytes) -> dict:
    """The TransparencyLogEntry (protojson, as a 201 carries it) of entry
    `index`, rebuilt from the shard's static files: what a 409 answer
    (`x-log-index`) is turned into. The checkpoint must verify with the
    log's key and origin and cover the index, the logged bytes must be
    `expected_body`, and the proof from the tiles must lead to the
    checkpoint's root; verify_entry() then accepts it as it does a 201."""
    raw = fetch('checkpoint')
    if raw is None:
        raise EntryError('the shard has no /checkpoint')
    try:
        cp = verify_checkpoint(raw, log.note_key, log.origin)
    except NoteError as e:
        raise EntryError('checkpoint: %s' % e)
    if not 0 <= index < cp.size:
        raise EntryError('entry %d is not in the latest checkpoint (size %d)'
                         % (index, cp.size))
    try:
        body, proof = prove_inclusion(fetch, cp, index)
    except VerificationError as e:
        raise EntryError('from tiles: %s' % e)
    if body != expected_body:
        raise EntryError('the logged body at index %d is not the one we sent' % index)
    # The body names its own kind and version (rekor-tiles canonicalizes
    # the entry with apiVersion and kind, e.g. hashedrekord 0.0.2).
    try:
        doc = json.loads(body)
        kind, version = doc['kind'], doc['apiVersion']
    except (ValueError, TypeError, KeyError):
        raise EntryError('the logged body at index %d names no kind and apiVersion' % index)
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    return {
        'logIndex': str(index),
        'logId': {'keyId': b64(log.log_id)},
        'kindVersion': {'kind': kind, 'version': version},
        'integratedTime': '0',
        'inclusionPromise': None,
        'inclusionProof': {
            'logIndex': str(index), 'rootHash': b64(cp.root_hash), 'treeSize': str(cp.size),
            'hashes': [b64(h) for h in proof],
            'checkpoint': {'envelope': cp.raw.decode('utf-8')}},
        'canonicalizedBody': b64(body),
    }
