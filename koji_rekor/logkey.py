"""The log's public key: loading it, its ID, checking a signature with it."""

import hashlib
import re

from .errors import VerificationError

PEM_PUBLIC_KEY = re.compile(rb'-----BEGIN PUBLIC KEY-----.*?-----END PUBLIC KEY-----', re.S)


class LogKeys(tuple):
    """Several keys of one log: a private Rekor may sign each shard (tree)
    with its own key (its sharding configuration's pemPubKey). Each entry
    is verified with the key its logID names, each tree head with the key
    its signature's key hint names (pick_log_key)."""


class UnknownLogKey(VerificationError):
    """Signed by a key that is none of those configured for the log."""


def load_log_key(pem):
    """The log key of a PEM file, or LogKeys when it holds several."""
    from cryptography.hazmat.primitives.serialization import load_pem_public_key
    blocks = PEM_PUBLIC_KEY.findall(pem) if isinstance(pem, bytes) else []
    try:
        if len(blocks) > 1:
            return LogKeys(load_pem_public_key(block) for block in blocks)
        return load_pem_public_key(pem)
    except (ValueError, TypeError):
        # One cause in the user's terms, not cryptography's message (which
        # cites its FAQ and a byte offset).
        if b'-----BEGIN PGP ' in pem:
            raise VerificationError("an OpenPGP key, not a log key: the log's PEM public key "
                                    'is wanted (koji-rekor log-key prints it)')
        if b'PRIVATE KEY-----' in pem:
            raise VerificationError("a private key: the log's PEM public key is wanted")
        raise VerificationError('not a PEM public key (-----BEGIN PUBLIC KEY-----)')


def read_log_key(path):
    with open(path, 'rb') as fo:
        return load_log_key(fo.read())


def log_key_id(key):
    """SHA-256 of the DER SubjectPublicKeyInfo: Rekor's logID, and (first
    4 bytes) the key hint of its checkpoint signatures."""
    from cryptography.hazmat.primitives import serialization
    if isinstance(key, LogKeys):
        # Several keys (one per shard): the name of the set, for the
        # monitor's state file; each tree head is kept under its own key's.
        return hashlib.sha256(b''.join(sorted(log_key_id(one) for one in key))).digest()
    der = key.public_bytes(serialization.Encoding.DER,
                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).digest()


def signature_is_valid(key, signature, data):
    """ECDSA keys sign SHA-256 digests, RSA keys PKCS #1 v1.5 over SHA-256
    (sigstore's signer for RSA, which private Rekors may use); Ed25519
    keys sign the data."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
        elif isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
        elif isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, data)
        else:
            raise VerificationError('unsupported log key type %s' % type(key).__name__)
    except InvalidSignature:
        return False
    return True
