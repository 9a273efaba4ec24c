"""Readers of what a Rekor log answers: entry bodies, tree heads."""

import base64
import binascii
import json

from ..errors import RekorUnavailable


def member(value, name):
    """value[name] when value is an object holding an object there, else {}:
    a body is what the log says, any shape."""
    inner = value.get(name) if isinstance(value, dict) else None
    return inner if isinstance(inner, dict) else {}


def body_public_keys(body):
    """The OpenPGP keys an entry body names: spec.publicKey (rpm) or
    spec.signature.publicKey (rekord), as armored or binary bytes."""
    spec = body.get('spec') if isinstance(body.get('spec'), dict) else {}
    signature = spec.get('signature') if isinstance(spec.get('signature'), dict) else {}
    if signature and signature.get('format') not in (None, 'pgp'):
        signature = {}
    keys = []
    for holder in (spec.get('publicKey'), signature.get('publicKey')):
        if isinstance(holder, dict) and isinstance(holder.get('content'), str):
            try:
                keys.append(base64.b64decode(holder['content'], validate=True))
            except binascii.Error:
                pass
    return keys


def logged_nevra(package):
    headers = package.get('headers') or {}
    return tuple(str(headers.get(name) or '') for name in
                 ('Name', 'Epoch', 'Version', 'Release', 'Architecture'))


def tree_head_fields(shard):
    try:
        return int(shard['treeID']), shard['signedTreeHead']
    except (KeyError, TypeError, ValueError):
        raise RekorUnavailable('malformed log info from Rekor: a tree without a treeID '
                               'or signedTreeHead')


def claimed_sha256(entry):
    """The package sha256 an entry's body names, unverified: only to pick
    which receipts to verify for a file."""
    try:
        body = json.loads(base64.b64decode(entry['body']))
        return body['spec']['package']['hash']['value']
    except (KeyError, TypeError, ValueError):
        return None


def logged_public_key(body):
    try:
        return base64.b64decode(((body.get('spec') or {}).get('publicKey') or {})
                                .get('content') or '', validate=True)
    except (binascii.Error, AttributeError, TypeError):
        return b''


def logged_nvra(package):
    headers = package.get('headers') or {}
    return '%s-%s-%s.%s' % tuple(headers.get(name, '?') for name in
                                 ('Name', 'Version', 'Release', 'Architecture'))
