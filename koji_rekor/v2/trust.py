"""Sigstore trust files: TrustedRoot (where logs are and their keys) and
SigningConfig v0.2 (which shards to write to), parsed strictly into frozen
models.

Formats: sigstore/protobuf-specs, protos/sigstore_trustroot.proto
(TrustedRoot.tlogs: TransparencyLogInstance{baseUrl, hashAlgorithm,
publicKey{rawBytes, keyDetails, validFor}, logId{keyId}}; SigningConfig
v0.2: rekorTlogUrls: Service{url, majorApiVersion, validFor}), as
sigstore/root-signing publishes them in JSON (protojson field names).
A Rekor v2 log's origin is its baseUrl without the scheme, and its
logId.keyId is the full note key hash (rekor-tiles pkg/note KeyHash);
sigstore-go finds the log of an entry by that keyId.

Pure functions: callers read the files and pass the bytes or JSON.
Written by hand: sigstore-python parses these, but would be a new runtime
dependency (with its protobuf stack) for a few dozen lines of JSON reading.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Optional, Tuple, Union

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from .note import NoteError, NoteKey, note_key

TRUSTED_ROOT_MEDIA_TYPE = 'application/vnd.dev.sigstore.trustedroot+json;version=0.1'
SIGNING_CONFIG_MEDIA_TYPE = 'application/vnd.dev.sigstore.signingconfig.v0.2+json'

# keyDetails (protobuf-specs PublicKeyDetails) that a checkpoint key can
# have and that we can verify with cryptography: the key class and curve.
KEY_DETAILS = {
    'PKIX_ED25519': (ed25519.Ed25519PublicKey, None),
    'PKIX_ECDSA_P256_SHA_256': (ec.EllipticCurvePublicKey, 'secp256r1'),
    'PKIX_ECDSA_P384_SHA_384': (ec.EllipticCurvePublicKey, 'secp384r1'),
    'PKIX_ECDSA_P521_SHA_512': (ec.EllipticCurvePublicKey, 'secp521r1'),
}

# RFC 3339 as protojson writes google.protobuf.Timestamp (fraction optional).
_TIME = re.compile(r'(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(\.\d{1,9})?'
                   r'(Z|[+-]\d\d:\d\d)\Z')


class TrustError(ValueError):
    """A trust file that is malformed, or a lookup that finds nothing."""


@dataclass(frozen=True)
class Validity:
    """A validFor window, both ends inclusive and either open, as
    sigstore-go's Service.ValidAtTime reads it (pkg/root/signing_config.go)."""
    start: Optional[datetime]
    end: Optional[datetime]

    def contains(self, when: datetime) -> bool:
        return ((self.start is None or self.start <= when)
                and (self.end is None or when <= self.end))


@dataclass(frozen=True)
class LogKey:
    """One log's checkpoint key, where it is, and when it is valid."""
    base_url: str
    origin: str
    key_details: str
    der: bytes
    note_key: NoteKey
    log_id: bytes                    # logId.keyId, checked against the key
    valid: Validity

    @property
    def public_key(self):
        return self.note_key.public_key


@dataclass(frozen=True)
class TrustedRoot:
    logs: Tuple[LogKey, ...]
    # tlogs whose key type we cannot verify (e.g. a future ML-DSA log):
    # "baseUrl keyDetails", for doctor to mention. They are not trusted.
    unsupported: Tuple[str, ...]


@dataclass(frozen=True)
class Shard:
    url: str
    major_api_version: int
    valid: Validity
    operator: str


@dataclass(frozen=True)
class SigningConfig:
    rekor: Tuple[Shard, ...]


def _load(data: Union[bytes, str, dict], what: str) -> dict:
    if isinstance(data, dict):
        return data
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise TrustError('%s is not JSON: %s' % (what, str(e).splitlines()[0]))
    if not isinstance(obj, dict):
        raise TrustError('%s is not a JSON object' % what)
    return obj


def _field(obj: Any, name: str, kind, where: str, required: bool = True):
    if not isinstance(obj, dict):
        raise TrustError('%s is not an object' % where)
    value = obj.get(name)
    if value is None:
        if required:
            raise TrustError('%s.%s is missing' % (where, name))
        return None
    if not isinstance(value, kind) or isinstance(value, bool):
        raise TrustError('%s.%s has the wrong type' % (where, name))
    return value


def parse_time(text: str, where: str) -> datetime:
    m = _TIME.match(text) if isinstance(text, str) else None
    if not m:
        raise TrustError('%s: %r is not an RFC 3339 time' % (where, str(text)[:40]))
    y, mo, d, h, mi, s, frac, tz = m.groups()
    try:
        t = datetime(int(y), int(mo), int(d), int(h), int(mi), int(s),
                     int((frac or '.0')[1:7].ljust(6, '0')), tzinfo=timezone.utc)
    except ValueError:
        raise TrustError('%s: %r is not a valid time' % (where, text))
    if tz != 'Z':
        sign = 1 if tz[0] == '+' else -1
        t -= sign * timedelta(hours=int(tz[1:3]), minutes=int(tz[4:6]))
    return t


def _validity(obj: Any, where: str, required: bool) -> Validity:
    vf = _field(obj, 'validFor', dict, where, required)
    if vf is None:
        return Validity(None, None)
    start = _field(vf, 'start', str, where + '.validFor', required)
    end = _field(vf, 'end', str, where + '.validFor', False)
    v = Validity(parse_time(start, where + '.validFor.start') if start else None,
                 parse_time(end, where + '.validFor.end') if end else None)
    if v.start and v.end and v.end <= v.start:
        raise TrustError('%s.validFor ends before it starts' % where)
    return v


def origin_of(url: str, where: str = 'url') -> str:
    """A shard URL without its scheme (and without a trailing slash): the
    origin line of its checkpoints."""
    m = re.match(r'(https?)://([^/?#\s]+)(/[^?#\s]*)?\Z', url or '')
    if not m:
        raise TrustError('%s: %r is not an http(s) URL' % (where, (url or '')[:100]))
    return (m.group(2) + (m.group(3) or '')).rstrip('/')


def _b64(text: str, where: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise TrustError('%s is not base64' % where)


def log_key(origin: str, public_key: Union[bytes, str], key_details: Optional[str] = None,
            base_url: Optional[str] = None, valid: Validity = Validity(None, None),
            log_id: Optional[bytes] = None) -> LogKey:
    """A LogKey from a DER or PEM public key (e.g. `[rekor] log_public_key`),
    its type checked against key_details when given."""
    where = base_url or origin
    if isinstance(public_key, str):
        public_key = public_key.encode()
    try:
        if public_key.lstrip().startswith(b'-----BEGIN'):
            key = serialization.load_pem_public_key(public_key)
        else:
            key = serialization.load_der_public_key(public_key)
    except (ValueError, TypeError) as e:
        raise TrustError('%s: not a public key: %s' % (where, str(e).splitlines()[0]))
    if key_details is not None:
        if key_details not in KEY_DETAILS:
            raise TrustError('%s: keyDetails %s is not a checkpoint key we can verify'
                             % (where, key_details))
        cls, curve = KEY_DETAILS[key_details]
        if not isinstance(key, cls) or (curve and key.curve.name != curve):
            raise TrustError('%s: the key is not %s' % (where, key_details))
    try:
        nk = note_key(origin, key)
    except NoteError as e:
        raise TrustError('%s: %s' % (where, e))
    if log_id is not None and log_id != nk.log_id:
        raise TrustError('%s: logId.keyId %s is not the id of its key (%s)'
                         % (where, base64.b64encode(log_id).decode(),
                            base64.b64encode(nk.log_id).decode()))
    der = key.public_bytes(serialization.Encoding.DER,
                           serialization.PublicFormat.SubjectPublicKeyInfo)
    details = key_details or ('PKIX_ED25519' if isinstance(key, ed25519.Ed25519PublicKey)
                              else {v[1]: k for k, v in KEY_DETAILS.items()}.get(
                                  getattr(getattr(key, 'curve', None), 'name', None), ''))
    return LogKey(base_url=base_url or 'https://' + origin, origin=origin,
                  key_details=details, der=der, note_key=nk, log_id=nk.log_id, valid=valid)


def parse_trusted_root(data: Union[bytes, str, dict]) -> TrustedRoot:
    """The transparency logs of a Sigstore TrustedRoot (tlogs only: CAs,
    CT logs and TSAs are not ours to use)."""
    obj = _load(data, 'trusted root')
    mt = obj.get('mediaType')
    if mt != TRUSTED_ROOT_MEDIA_TYPE:
        raise TrustError('trusted root mediaType is %r, expected %r'
                         % (mt, TRUSTED_ROOT_MEDIA_TYPE))
    tlogs = _field(obj, 'tlogs', list, 'trusted root')
    logs, unsupported, seen = [], [], set()
    for i, t in enumerate(tlogs):
        where = 'tlogs[%d]' % i
        base_url = _field(t, 'baseUrl', str, where)
        origin = origin_of(base_url, where + '.baseUrl')
        where = '%s (%s)' % (where, base_url)
        alg = _field(t, 'hashAlgorithm', str, where)
        if alg != 'SHA2_256':
            raise TrustError('%s: hashAlgorithm %s is not SHA2_256' % (where, alg))
        pk = _field(t, 'publicKey', dict, where)
        details = _field(pk, 'keyDetails', str, where + '.publicKey')
        raw = _b64(_field(pk, 'rawBytes', str, where + '.publicKey'), where + '.publicKey.rawBytes')
        valid = _validity(pk, where + '.publicKey', True)
        key_id = _b64(_field(_field(t, 'logId', dict, where), 'keyId', str, where + '.logId'),
                      where + '.logId.keyId')
        if details not in KEY_DETAILS:
            unsupported.append('%s %s' % (base_url, details))
            continue
        lk = log_key(origin, raw, details, base_url, valid, key_id)
        if lk.log_id in seen:
            raise TrustError('%s: logId.keyId appears twice' % where)
        seen.add(lk.log_id)
        logs.append(lk)
    return TrustedRoot(tuple(logs), tuple(unsupported))


def find_log(logs: Union[TrustedRoot, Tuple[LogKey, ...]], key_id: bytes) -> LogKey:
    """The log an entry names by logId.keyId (entries carry no URL)."""
    if isinstance(logs, TrustedRoot):
        logs = logs.logs
    for lk in logs:
        if lk.log_id == key_id:
            return lk
    raise TrustError('no trusted log has key id %s' % base64.b64encode(key_id).decode())


def parse_signing_config(data: Union[bytes, str, dict]) -> SigningConfig:
    """The Rekor services of a SigningConfig v0.2 (rekorTlogUrls)."""
    obj = _load(data, 'signing config')
    mt = obj.get('mediaType')
    if mt != SIGNING_CONFIG_MEDIA_TYPE:
        raise TrustError('signing config mediaType is %r, expected %r'
                         % (mt, SIGNING_CONFIG_MEDIA_TYPE))
    shards = []
    for i, s in enumerate(_field(obj, 'rekorTlogUrls', list, 'signing config')):
        where = 'rekorTlogUrls[%d]' % i
        url = _field(s, 'url', str, where)
        origin_of(url, where + '.url')
        version = _field(s, 'majorApiVersion', int, where)
        if version < 1:
            raise TrustError('%s.majorApiVersion %d is not a version' % (where, version))
        shards.append(Shard(url=url.rstrip('/'), major_api_version=version,
                            valid=_validity(s, where, True),
                            operator=_field(s, 'operator', str, where, False) or ''))
    return SigningConfig(tuple(shards))


def select_shards(config: Union[SigningConfig, Tuple[Shard, ...]], now: datetime,
                  api_version: int = 2) -> Tuple[Shard, ...]:
    """The shards of `api_version` valid at `now`, newest (latest start)
    first, as sigstore-go's SelectService orders them: write to [0]; when
    it answers 405 (frozen), to [1], and so on. Empty when none is valid:
    the caller says so."""
    if now.tzinfo is None:
        raise ValueError('now must be timezone-aware')
    shards = config.rekor if isinstance(config, SigningConfig) else config
    valid = [s for s in shards if s.major_api_version == api_version and s.valid.contains(now)]
    epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)
    return tuple(sorted(valid, key=lambda s: s.valid.start or epoch, reverse=True))
