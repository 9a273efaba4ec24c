"""Rekor v1 hashedrekord v0.0.1 entries ([rekor] entry = hashedrekord, api = 1).

The same digest, signature and key as the v2 entry (v2/hashedrekord,
built from the RPM's headers alone; what it refuses is refused here the
same way), in the v0.0.1 shape Rekor v1 takes
(sigstore/rekor pkg/types/hashedrekord/v0.0.1): the key as PEM, the hash
as hex."""

import base64
import json

from cryptography.hazmat.primitives import serialization

from .errors import VerificationError


def build(signed, public_key):
    """The HashedRekord (v2/hashedrekord) of a signed RPM's header signature."""
    from .entry import hashedrekord_entry
    from .v2.hashedrekord import NotLoggableInV2
    try:
        return hashedrekord_entry(signed, public_key)
    except NotLoggableInV2 as e:
        # The reason names Rekor v2, whose entry takes the same values.
        raise NotLoggableInV2('not loggable as a hashedrekord ([rekor] entry = hashedrekord '
                              'takes what Rekor v2 takes): %s' % e) from None


def v1_entry(hr):
    """The proposed hashedrekord v0.0.1 entry of a HashedRekord (sha256 only:
    anything else was refused when it was built)."""
    pem = serialization.load_der_public_key(hr.public_key).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return {'apiVersion': '0.0.1', 'kind': 'hashedrekord', 'spec': {
        'data': {'hash': {'algorithm': 'sha256', 'value': hr.digest.hex()}},
        'signature': {'content': base64.b64encode(hr.signature).decode(),
                      'publicKey': {'content': base64.b64encode(pem).decode()}}}}


def request_body(hr):
    return json.dumps(v1_entry(hr), separators=(',', ':')).encode()


def _der(pem_b64):
    try:
        pem = base64.b64decode(pem_b64, validate=True)
        return serialization.load_pem_public_key(pem).public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    except Exception:
        return None


def verify_hashedrekord_body(body, expected):
    """The logged body (a dict) is our hashedrekord v0.0.1: kind, apiVersion,
    digest, signature and key equal what we sent (expected: the HashedRekord)."""
    if not isinstance(body, dict):
        raise VerificationError('entry body is not an object')
    if (body.get('kind'), body.get('apiVersion')) != ('hashedrekord', '0.0.1'):
        raise VerificationError('body is %s %s, not hashedrekord 0.0.1'
                                % (body.get('kind'), body.get('apiVersion')))
    spec = body.get('spec') if isinstance(body.get('spec'), dict) else {}
    data = spec.get('data') if isinstance(spec.get('data'), dict) else {}
    digest = data.get('hash') if isinstance(data.get('hash'), dict) else {}
    if (digest.get('algorithm'), digest.get('value')) != ('sha256', expected.digest.hex()):
        raise VerificationError('body records digest %s:%s, we sent sha256:%s' % (
            digest.get('algorithm'), digest.get('value'), expected.digest.hex()))
    signature = spec.get('signature') if isinstance(spec.get('signature'), dict) else {}
    try:
        content = base64.b64decode(signature.get('content') or '', validate=True)
    except Exception:
        content = None
    if content != expected.signature:
        raise VerificationError('body records another signature than the one we sent')
    key = signature.get('publicKey') if isinstance(signature.get('publicKey'), dict) else {}
    if _der(key.get('content') or '') != expected.public_key:
        raise VerificationError('body records another public key than the one we sent')
