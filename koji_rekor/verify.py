"""Verifying a log entry: inclusion proof, checkpoint, SET, and its body."""

import base64
import binascii
import json
from dataclasses import dataclass, field

from .checkpoint import canonical_json, Checkpoint, pick_log_key, unhex, verify_checkpoint
from .errors import VerificationError
from .logkey import log_key_id, signature_is_valid
from .merkle import hash_leaf, root_from_inclusion_proof
from .openpgp import openpgp_primary_key
from .rekor.models import RpmEntryBody


def verify_set(entry, key):
    """The signed entry timestamp covers body, integratedTime, logID and the
    global logIndex."""
    payload = canonical_json({k: entry[k] for k in
                              ('body', 'integratedTime', 'logID', 'logIndex')})
    try:
        signature = base64.b64decode(entry['verification']['signedEntryTimestamp'], validate=True)
    except (ValueError, TypeError):
        raise VerificationError('signed entry timestamp: not base64')
    if not signature_is_valid(key, signature, payload):
        raise VerificationError('signed entry timestamp: does not verify with the log key')


def split_entry_id(entry_id):
    """An entryID is the 16-hex tree ID then the 64-hex UUID; a bare UUID
    has no tree ID."""
    entry_id = entry_id.lower()
    if len(entry_id) == 80:
        tree, uuid = entry_id[:16], entry_id[16:]
    elif len(entry_id) == 64:
        tree, uuid = None, entry_id
    else:
        raise VerificationError('entry ID %r has the wrong length' % entry_id)
    try:
        tree_id = int(tree, 16) if tree else None
        bytes.fromhex(uuid)
    except ValueError:
        raise VerificationError('entry ID %r is not hex' % entry_id)
    return tree_id, uuid


@dataclass
class VerifiedEntry:
    """What a verified entry proves, for logs and receipts."""
    entry_id: str
    uuid: str
    tree_id: int
    log_index: int
    tree_index: int
    tree_size: int
    root_hash: bytes
    integrated_time: int
    body: dict
    checkpoint: Checkpoint = None
    notes: list = field(default_factory=list)
    signed_time: bool = True  # integratedTime and logIndex are under the SET
    key: object = None        # the log key that signed it (one of several, maybe)
    # The body parsed once, here at the boundary: the checks downstream read
    # this model; body stays the logged JSON, as receipts keep it.
    logged: RpmEntryBody = None

    def __post_init__(self):
        if self.logged is None:
            self.logged = RpmEntryBody.from_dict(self.body)

# The largest index, size or time (in seconds) an entry may name: a log of
# 2**53 entries, or the year 285 million, is not one this plugin can meet.
MAX_INTEGER = 1 << 53


def verify_log_entry(entry_id, entry, key, origin_host=None, require_set=True, tree_id=None):
    """Check everything about one Rekor entry that the log signs; raise
    VerificationError naming the first check that fails."""
    try:
        body_bytes = base64.b64decode(entry['body'], validate=True)
        proof = entry['verification']['inclusionProof']
        fields = (entry['integratedTime'], entry['logIndex'], proof['logIndex'],
                  proof['treeSize'])
        hashes = [unhex(h, 'inclusion proof hash') for h in proof['hashes']]
        root = unhex(proof['rootHash'], 'root hash')
    except (KeyError, TypeError, ValueError):
        raise VerificationError('entry is missing fields or malformed')
    if not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < MAX_INTEGER
               for v in fields):
        raise VerificationError('entry has indexes or a time that are not whole numbers in range')
    entry_tree, uuid = split_entry_id(entry_id)
    leaf = hash_leaf(body_bytes)
    if leaf.hex() != uuid:
        raise VerificationError('entry UUID %s is not the hash of its body' % uuid)
    if entry_tree is not None:
        tree_id = entry_tree
    key = pick_log_key(key, log_id=entry.get('logID', ''))
    if log_key_id(key).hex() != str(entry.get('logID', '')).lower():
        raise VerificationError('logID %s is not the log key' % entry.get('logID'))
    if root_from_inclusion_proof(proof['logIndex'], proof['treeSize'], leaf, hashes) != root:
        raise VerificationError('inclusion proof does not lead to root hash %s' % proof['rootHash'])
    verified = VerifiedEntry(entry_id, uuid, tree_id, entry['logIndex'], proof['logIndex'],
                             proof['treeSize'], root, entry['integratedTime'],
                             decode_body(body_bytes), key=key)
    note = proof.get('checkpoint')
    if not note:
        raise VerificationError('no checkpoint: nothing signs the root hash')
    if tree_id is None:
        raise VerificationError('no tree ID to check the checkpoint origin against')
    checkpoint = verify_checkpoint(note, key, origin_host, tree_id)
    if (checkpoint.size, checkpoint.root_hash) != (proof['treeSize'], root):
        raise VerificationError('checkpoint is for size %d root %s, proof for size %d root %s'
                                % (checkpoint.size, checkpoint.root_hash.hex(),
                                   proof['treeSize'], root.hex()))
    verified.checkpoint = checkpoint
    if entry['verification'].get('signedEntryTimestamp'):
        verify_set(entry, key)
    elif require_set:
        raise VerificationError('no signed entry timestamp')
    else:
        verified.signed_time = False
        verified.notes.append('no signed entry timestamp: the checkpoint signs the body and its '
                              'place in the tree, but nothing signs integratedTime or the '
                              'global log index shown')
    return verified


def decode_body(body_bytes):
    try:
        body = json.loads(body_bytes)
    except (ValueError, RecursionError):
        raise VerificationError('entry body is not JSON')
    if not isinstance(body, dict):
        raise VerificationError('entry body is not an object')
    return body


def verify_rpm_body(body, expected):
    """The log recorded our package, our key and our NEVRA: the logged body
    (a dict or an RpmEntryBody) parsed once, then compared field by field
    with what we sent, naming the first that differs."""
    logged = RpmEntryBody.from_dict(body)
    if (logged.kind, logged.api_version) != ('rpm', '0.0.1'):
        raise VerificationError('body is %s %s, not rpm 0.0.1' % (logged.kind, logged.api_version))
    if (logged.hash_algorithm, logged.hash_value) != ('sha256', expected.sha256):
        raise VerificationError('body records package %s:%s, we sent sha256:%s' % (
            logged.hash_algorithm, logged.hash_value, expected.sha256))
    epoch = '' if expected.epoch is None else str(expected.epoch)
    wanted = {'Name': [expected.name], 'Version': [expected.version],
              'Release': [expected.release], 'Epoch': [epoch] if epoch else ['', '0'],
              'Architecture': [expected.arch, 'src'] if expected.source else [expected.arch]}
    for header, allowed in wanted.items():
        if logged.header(header) not in allowed:
            raise VerificationError('body records %s %r, the RPM has %r'
                                    % (header, logged.header(header), allowed[0]))
    if 'RPMSIGTAG_MD5' in dict(logged.headers or ()) and logged.md5 != expected.sigmd5:
        raise VerificationError('body records RPMSIGTAG_MD5 %s, the RPM has %s'
                                % (logged.md5, expected.sigmd5))
    # Lenient base64 here, as before the models: the key is compared by its
    # primary key packet, so stray characters cannot make another key match.
    logged_key = loose_b64(logged.public_key_text)
    ours = openpgp_primary_key(expected.public_key)
    if ours is None or openpgp_primary_key(logged_key) != ours:
        raise VerificationError('body records another public key than the one we sent')


def loose_b64(content):
    try:
        return base64.b64decode(content or '')
    except (binascii.Error, TypeError, ValueError):
        return b''


# The body check for each entry kind this project writes: a new kind (for
# example a hashedrekord) registers its check here beside rpm.
BODY_CHECKS = {'rpm': verify_rpm_body}


def _hashedrekord_check(body, expected):
    from .v1hashedrekord import verify_hashedrekord_body
    return verify_hashedrekord_body(body, expected)


BODY_CHECKS['hashedrekord'] = _hashedrekord_check


def check_body(body, expected, kind='rpm'):
    """Check a logged body against what we sent, with the check for the
    kind we sent."""
    return BODY_CHECKS[kind](body, expected)
