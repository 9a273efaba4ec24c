"""Models of what a Rekor log answers, parsed once at the boundary: entry
bodies (rpm, rekord, hashedrekord), tree heads, v1 receipts.

A body is what the log says, any shape: the parsers never raise on a field
of the wrong type, they record it as absent, so the checks compare models
(sigstore-python's habit: build the expected body, parse the actual one,
compare) instead of walking dicts in each reader."""

import base64
import binascii
import json
from dataclasses import dataclass

from ..errors import RekorUnavailable, VerificationError

NEVRA_HEADERS = ('Name', 'Epoch', 'Version', 'Release', 'Architecture')


def member(value, name):
    """value[name] when value is an object holding an object there, else {}:
    a body is what the log says, any shape."""
    inner = value.get(name) if isinstance(value, dict) else None
    return inner if isinstance(inner, dict) else {}


def _text(value):
    return value if isinstance(value, str) else None


def _b64(content, validate=True):
    """Decoded base64 text, b'' when absent or not base64."""
    try:
        return base64.b64decode(content or '', validate=validate)
    except (binascii.Error, TypeError, ValueError):
        return b''


@dataclass(frozen=True)
class EntryBody:
    """An entry body of any kind: its kind, API version and, for the kinds
    this project reads, the fields it checks. headers are the rpm package's
    headers as (name, value) pairs in the log's order."""
    kind: object = None
    api_version: object = None
    hash_algorithm: object = None
    hash_value: object = None
    headers: tuple = None        # None: no headers object; () an empty one
    public_key_text: str = None  # spec.publicKey.content (rpm)
    signature_format: object = None
    signature_key_text: str = None  # spec.signature.publicKey.content (rekord)
    data_hash: tuple = (None, None)  # spec.data.hash (rekord, hashedrekord)
    signature_content: object = None  # spec.signature.content (rekord, hashedrekord)

    @classmethod
    def from_bytes(cls, raw):
        """Parse a body as the log serves it (JSON); VerificationError with
        a one-line cause when it is not a JSON object."""
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError):
            raise VerificationError('entry body is not JSON')
        if not isinstance(body, dict):
            raise VerificationError('entry body is not an object')
        return cls.from_dict(body)

    @classmethod
    def from_entry(cls, entry):
        """The body of a v1 log entry (base64 in entry['body']), or None
        when there is none to read: unverified, only to pick receipts."""
        try:
            return cls.from_bytes(base64.b64decode(entry['body']))
        except (KeyError, TypeError, ValueError, VerificationError):
            return None

    @classmethod
    def from_dict(cls, body):
        if isinstance(body, EntryBody):
            return body
        body = body if isinstance(body, dict) else {}
        spec = member(body, 'spec')
        package = member(spec, 'package')
        digest = member(package, 'hash')
        data_hash = member(member(spec, 'data'), 'hash')
        headers = package.get('headers') if isinstance(package.get('headers'), dict) else None
        signature = member(spec, 'signature')
        return cls(kind=body.get('kind'), api_version=body.get('apiVersion'),
                   hash_algorithm=digest.get('algorithm'), hash_value=digest.get('value'),
                   data_hash=(data_hash.get('algorithm'), data_hash.get('value')),
                   headers=None if headers is None else tuple(headers.items()),
                   public_key_text=_text(member(spec, 'publicKey').get('content')),
                   signature_format=signature.get('format'),
                   signature_key_text=_text(member(signature, 'publicKey').get('content')),
                   signature_content=signature.get('content'))

    def header(self, name, default=None):
        return dict(self.headers or ()).get(name, default)

    @property
    def sha256(self):
        """The package sha256 the body names, as logged (unverified)."""
        return self.hash_value

    @property
    def md5(self):
        return self.header('RPMSIGTAG_MD5')

    @property
    def nevra(self):
        """(name, epoch, version, release, arch) as text, '' when absent."""
        return tuple(str(self.header(name) or '') for name in NEVRA_HEADERS)

    @property
    def nvra(self):
        return '%s-%s-%s.%s' % tuple(self.header(name, '?') for name in
                                     ('Name', 'Version', 'Release', 'Architecture'))

    @property
    def public_key(self):
        """spec.publicKey as bytes (strict base64), b'' when absent."""
        return _b64(self.public_key_text)

    @property
    def public_keys(self):
        """The OpenPGP keys the body names: spec.publicKey (rpm) or
        spec.signature.publicKey (rekord, pgp format only)."""
        holders = [self.public_key_text]
        if self.signature_format in (None, 'pgp'):
            holders.append(self.signature_key_text)
        keys = []
        for content in holders:
            if content is not None:
                try:
                    keys.append(base64.b64decode(content, validate=True))
                except binascii.Error:
                    pass
        return keys

    @property
    def fingerprints(self):
        from ..openpgp import openpgp_fingerprints
        return [fp for armored in self.public_keys for fp in openpgp_fingerprints(armored)]


# The rpm kind is the one this project writes; the name says what callers
# expect, and RpmEntryBody.from_bytes is the one place a body is parsed.
RpmEntryBody = EntryBody


@dataclass(frozen=True)
class TreeHead:
    """One tree a log answers for: its tree ID and signed note (the v1
    log info's treeID/signedTreeHead), and size and root hash once read."""
    tree_id: int
    note: str
    size: int = None
    root_hash: str = None

    @classmethod
    def from_log_info(cls, shard):
        """One shard of GET /api/v1/log (the active tree or an inactive
        shard); RekorUnavailable when it lacks a tree ID or signed head."""
        try:
            tree_id, note = int(shard['treeID']), shard['signedTreeHead']
        except (KeyError, TypeError, ValueError):
            raise RekorUnavailable('malformed log info from Rekor: a tree without a treeID '
                                   'or signedTreeHead')
        size = shard.get('treeSize')
        root = shard.get('rootHash')
        return cls(tree_id, note, size if isinstance(size, int) else None,
                   root if isinstance(root, str) else None)

    def __iter__(self):
        # tree_id, note = TreeHead...: the callers that want only those two
        return iter((self.tree_id, self.note))


RECEIPT_TEXT = ('nvra', 'sigkey', 'sha256', 'rekor_url')


@dataclass(frozen=True)
class Receipt:
    """What a v1 receipt claims about its entry (nvra, sigkey, sha256,
    rekor_url) and the entries it holds; the claims are checked against the
    logged body (offline.check_receipt_body). Unknown fields are kept."""
    nvra: str = None
    sigkey: str = None
    sha256: str = None
    rekor_url: str = None
    raw: tuple = ()

    @classmethod
    def from_json(cls, data):
        """data: a dict (already read JSON) or JSON text; VerificationError
        when a claimed field is not text."""
        if isinstance(data, Receipt):
            return data
        if isinstance(data, (str, bytes)):
            try:
                data = json.loads(data)
            except (ValueError, RecursionError):
                raise VerificationError('receipt is not JSON')
        if not isinstance(data, dict):
            raise VerificationError('receipt is not an object')
        for name in RECEIPT_TEXT:
            if data.get(name) is not None and not isinstance(data.get(name), str):
                raise VerificationError('receipt: %s is not text' % name)
        return cls(*(data.get(name) for name in RECEIPT_TEXT), raw=tuple(data.items()))

    def to_json(self):
        data = dict(self.raw)
        data.update({name: getattr(self, name) for name in RECEIPT_TEXT
                     if getattr(self, name) is not None})
        return data

    @property
    def claims(self):
        return bool(self.nvra or self.sigkey or self.sha256)


# Readers kept for their callers; each is one model attribute now.

def logged_body(verified):
    """A verified entry's parsed body (verify.VerifiedEntry.logged), or
    its body parsed now for what holds only the JSON."""
    logged = getattr(verified, 'logged', None)
    return logged if logged is not None else EntryBody.from_dict(verified.body)


def body_public_keys(body):
    return EntryBody.from_dict(body).public_keys


def logged_nevra(package):
    return EntryBody.from_dict({'spec': {'package': package}}).nevra


def logged_nvra(package):
    return EntryBody.from_dict({'spec': {'package': package}}).nvra


def tree_head_fields(shard):
    return tuple(TreeHead.from_log_info(shard))


def claimed_sha256(entry):
    """The package sha256 an entry's body names, unverified: only to pick
    which receipts to verify for a file."""
    body = EntryBody.from_entry(entry)
    return None if body is None else body.sha256


def logged_public_key(body):
    return EntryBody.from_dict(body).public_key
