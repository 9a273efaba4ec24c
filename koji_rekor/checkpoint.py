"""Signed tree heads: checkpoints (signed notes) and canonical JSON."""

import base64
import json
from dataclasses import dataclass, field

from .errors import VerificationError
from .logkey import log_key_id, LogKeys, signature_is_valid, UnknownLogKey


def pick_log_key(key, log_id=None, note=None):
    """The key of a LogKeys that signed this: the one whose logID (sha256 of
    its DER) is log_id, or whose key hint a signature of the checkpoint
    note carries. A single key is returned as it is: its checks say more."""
    if not isinstance(key, LogKeys):
        return key
    if log_id is not None:
        for one in key:
            if log_key_id(one).hex() == str(log_id).lower():
                return one
        raise UnknownLogKey('logID %s is none of the %d configured log keys' % (log_id, len(key)))
    try:
        hints = {hint for _, hint, _ in parse_checkpoint(note)[1]}
    except VerificationError:
        hints = set()
    for one in key:
        if log_key_id(one)[:4] in hints:
            return one
    raise UnknownLogKey('checkpoint: signed by none of the %d configured log keys' % len(key))


@dataclass
class Checkpoint:
    origin: str
    size: int
    root_hash: bytes
    other: list = field(default_factory=list)
    text: str = ''   # what the signatures sign
    note: str = ''   # the whole signed note, signatures included


def parse_checkpoint(note):
    """Split a signed note into its text and signature lines, and the text
    into origin, size, root hash and any further lines (the checkpoint
    format of Rekor and transparency-dev)."""
    if not isinstance(note, str):
        raise VerificationError('checkpoint: not text')
    text, sep, sigs = note.partition('\n\n')
    if not sep:
        raise VerificationError('checkpoint: no signature block')
    text += '\n'
    lines = text.split('\n')[:-1]
    if len(lines) < 3:
        raise VerificationError('checkpoint: fewer than three lines')
    try:
        size = int(lines[1])
        root = base64.b64decode(lines[2], validate=True)
    except ValueError:
        raise VerificationError('checkpoint: malformed size or root hash')
    signatures = []
    for line in sigs.split('\n'):
        if not line:
            continue
        parts = line.split(' ')
        if len(parts) != 3 or parts[0] != '\u2014':
            raise VerificationError('checkpoint: malformed signature line')
        try:
            raw = base64.b64decode(parts[2], validate=True)
        except ValueError:
            raise VerificationError('checkpoint: malformed signature')
        signatures.append((parts[1], raw[:4], raw[4:]))
    return Checkpoint(lines[0], size, root, lines[3:], text, note), signatures


def verify_checkpoint(note, key, origin_host, tree_id):
    """The checkpoint is signed by the log key and names the expected log."""
    key = pick_log_key(key, note=note)
    checkpoint, signatures = parse_checkpoint(note)
    hint = log_key_id(key)[:4]
    if not any(h == hint and signature_is_valid(key, sig, checkpoint.text.encode())
               for _, h, sig in signatures):
        # No signature even names the key: another key signed it (a shard
        # of its own, or a forgery; the monitor tells which by the tree).
        error = VerificationError if any(h == hint for _, h, _ in signatures) else UnknownLogKey
        raise error('checkpoint: no valid signature by the log key')
    host, sep, tree = checkpoint.origin.rpartition(' - ')
    if not sep or tree != str(tree_id):
        raise VerificationError('checkpoint: origin %r is not tree %s'
                                % (checkpoint.origin, tree_id))
    allowed = {origin_host} if isinstance(origin_host, str) else set(origin_host or ())
    if origin_host is not None and host not in allowed:
        raise VerificationError('checkpoint: origin %r is not log %s'
                                % (checkpoint.origin, ' or '.join(sorted(allowed))))
    return checkpoint


def canonical_json(value):
    """RFC 8785 for the SET payload: its values are only integers and ASCII
    strings, for which sorted keys and no whitespace are the whole rule."""
    return json.dumps(value, sort_keys=True, separators=(',', ':'), ensure_ascii=True).encode()


def unhex(value, what):
    try:
        return bytes.fromhex(value)
    except (ValueError, TypeError):
        raise VerificationError('%s is not hex' % what)
