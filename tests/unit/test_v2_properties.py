"""Property tests of the koji_rekor.v2 parsers: whatever arrives, the answer is a
model or a one-line error of the module's own type, never another exception;
and proofs built from tiles verify for any tree size and index."""

import base64
import json

from hypothesis import HealthCheck, given, settings, strategies as st
from cryptography.hazmat.primitives.asymmetric import ed25519

from koji_rekor.v2 import entry, note, tiles, trust
from koji_rekor.merkle import hash_children, hash_leaf, root_from_inclusion_proof, verify_consistency

SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])
KEY = note.note_key('log.example', ed25519.Ed25519PrivateKey.generate().public_key())
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner,
                                                                 max_size=4),
    max_leaves=20)


def one_line(exc):
    assert '\n' not in str(exc)


@SETTINGS
@given(st.binary(max_size=400) | st.text(max_size=400).map(str.encode))
def test_note_parser_total(raw):
    try:
        note.verify_checkpoint(raw, KEY)
    except note.NoteError as e:
        one_line(e)


@SETTINGS
@given(st.lists(st.sampled_from(['log.example', '7', '0', '01', '', 'x y',
                                 base64.b64encode(b'\0' * 32).decode(), '\u2014 log.example AAAAAAAA',
                                 '\u2014 log.example ' + base64.b64encode(KEY.key_id + b'x' * 64).decode(),
                                 '\u2014 w AAAAAAAA', '\u2014', 'ext']), max_size=8))
def test_note_parser_total_on_plausible_lines(lines):
    try:
        note.verify_checkpoint('\n'.join(lines) + '\n', KEY)
    except note.NoteError as e:
        one_line(e)


@SETTINGS
@given(JSON)
def test_entry_and_trust_parsers_total(obj):
    for parse, err in ((entry.parse_entry, entry.EntryError),
                       (entry.entry_from_bundle, entry.EntryError),
                       (trust.parse_trusted_root, trust.TrustError),
                       (trust.parse_signing_config, trust.TrustError)):
        try:
            parse(json.dumps(obj))
        except err as e:
            one_line(e)


@SETTINGS
@given(st.binary(max_size=600))
def test_entry_bundle_parser_total(data):
    try:
        out = tiles.parse_entry_bundle(data)
    except tiles.TileError as e:
        one_line(e)
    else:
        assert b''.join(len(e).to_bytes(2, 'big') + e for e in out) == data


def mth(leaves):
    if len(leaves) == 1:
        return leaves[0]
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    return hash_children(mth(leaves[:k]), mth(leaves[k:]))


@SETTINGS
@given(st.integers(1, 2100), st.data())
def test_proofs_from_tiles_for_any_size(size, data):
    leaves = [hash_leaf(b'%d' % i) for i in range(size)]
    files = {}
    level, L = leaves, 0
    while level:
        for t in range(0, len(level), 256):
            chunk = level[t:t + 256]
            files[tiles.tile_path(L, t // 256, len(chunk))] = b''.join(chunk)
        for _ in range(8):
            level = [hash_children(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        L += 1
    reader = tiles.TileReader(files.get, size)
    root = mth(leaves)
    assert reader.root() == root
    i = data.draw(st.integers(0, size - 1))
    assert root_from_inclusion_proof(i, size, leaves[i], reader.inclusion_proof(i)) == root
    m = data.draw(st.integers(0, size))
    old = mth(leaves[:m]) if m else None
    if m:
        verify_consistency(m, size, old, root, reader.consistency_proof(m))
    else:
        assert reader.consistency_proof(0) == []
