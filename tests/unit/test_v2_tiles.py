"""koji_rekor.v2.tiles: tlog-tiles paths and RFC 6962 proofs built from tiles,
checked with rekor_log's RFC 9162 verifiers against the real tile log and
against bigger logs laid out the same way."""

import glob
import hashlib
import os
import random

import pytest

from koji_rekor.v2 import note, tiles
from koji_rekor.merkle import hash_children, hash_leaf, root_from_inclusion_proof, verify_consistency

from tests.support.common import ROOT  # noqa: E402
REAL = os.path.join(os.path.dirname(ROOT), 'shared', 'rekor-v2-real')
TILES = os.path.join(REAL, 'tiles', 'log')
VKEY = 'example.com/log/testdata+33d7b496+AeHTu4Q3hEIMHNqc6fASMsq3rKNx280NI+oO5xCFkkSx'
# build_log.sh's words, misspellings included.
WORDS = ['one', 'two', 'three', 'four', 'five', 'six', 'seven', 'eit', 'nain', 'ten',
         'ileven', 'twelf', 'threeten', 'fourten', 'fivten']

needs_real = pytest.mark.skipif(not os.path.isdir(REAL), reason='no ../shared/rekor-v2-real')


def dir_fetch(base, log=None):
    def fetch(path):
        if log is not None:
            log.append(path)
        full = os.path.join(base, path)
        if not os.path.isfile(full):
            return None
        with open(full, 'rb') as fo:
            return fo.read()
    return fetch


def test_paths():
    assert tiles.index_path(0) == '000'
    assert tiles.index_path(1234067) == 'x001/x234/067'
    assert tiles.index_path(1000) == 'x001/000'
    assert tiles.tile_path(0, 5, 3) == 'tile/0/005.p/3'
    assert tiles.tile_path(1, 1234067) == 'tile/1/x001/x234/067'
    assert tiles.tile_path(2, 7, 256) == 'tile/2/007'
    assert tiles.entries_path(1234067, 17) == 'tile/entries/x001/x234/067.p/17'
    with pytest.raises(ValueError):
        tiles.tile_path(0, 0, 0)


def test_entry_bundle_parsing():
    assert tiles.parse_entry_bundle(b'\x00\x03one\x00\x00\x00\x01x') == (b'one', b'', b'x')
    for bad in (b'\x00', b'\x00\x05abc', b'\x00\x01a\x00'):
        with pytest.raises(tiles.TileError):
            tiles.parse_entry_bundle(bad)


def verified_checkpoints():
    key = note.parse_vkey(VKEY)
    cps = [note.verify_checkpoint(open(p, 'rb').read(), key)
           for p in glob.glob(os.path.join(TILES, 'checkpoint.*'))]
    return sorted(cps, key=lambda c: c.size)


@needs_real
def test_real_log_roots_entries_and_inclusion_proofs():
    cps = verified_checkpoints()
    assert [c.size for c in cps] == list(range(16))
    fetch = dir_fetch(TILES)
    checked = 0
    for cp in cps:
        reader = tiles.TileReader(fetch, cp.size)
        assert reader.root() == cp.root_hash
        for i in range(cp.size):
            entry = reader.checked_entry(i)
            assert entry == WORDS[i].encode()
            proof = reader.inclusion_proof(i)
            assert root_from_inclusion_proof(i, cp.size, hash_leaf(entry), proof) \
                == cp.root_hash
            checked += 1
    assert checked == sum(range(16))


@needs_real
def test_real_log_consistency_between_every_pair():
    cps = verified_checkpoints()
    fetch = dir_fetch(TILES)
    pairs = 0
    for new in cps:
        reader = tiles.TileReader(fetch, new.size)
        for old in cps[:new.size + 1]:
            proof = reader.consistency_proof(old.size)
            verify_consistency(old.size, new.size, old.root_hash, new.root_hash, proof)
            pairs += 1
    assert pairs == 136


@needs_real
def test_real_log_lying_tiles_are_caught():
    real = dir_fetch(TILES)

    def lying(path):
        data = real(path)
        if path.startswith('tile/entries/') and data:
            return data.replace(b'three', b'thre3')
        return data
    reader = tiles.TileReader(lying, 15)
    with pytest.raises(tiles.TileError, match='does not hash'):
        reader.checked_entry(2)
    reader = tiles.TileReader(lambda p: None, 15)
    with pytest.raises(tiles.TileError, match='absent'):
        reader.inclusion_proof(3)
    with pytest.raises(tiles.TileError):
        tiles.TileReader(real, 15).inclusion_proof(15)


# A bigger log, laid out as tessera writes it: full tiles, and a partial
# rightmost tile per level for each published size.

def mth(leaves):
    if len(leaves) == 1:
        return leaves[0]
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    return hash_children(mth(leaves[:k]), mth(leaves[k:]))


def write_tiles(files, entries, size, partial=True):
    level = [hash_leaf(e) for e in entries[:size]]
    L = 0
    while level:
        for t in range(0, len(level), 256):
            chunk = level[t:t + 256]
            if len(chunk) == 256:
                files[tiles.tile_path(L, t // 256)] = b''.join(chunk)
            elif partial:
                files[tiles.tile_path(L, t // 256, len(chunk))] = b''.join(chunk)
        for _ in range(8):
            level = [hash_children(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        L += 1
    for t in range(0, size, 256):
        chunk = entries[t:min(t + 256, size)]
        bundle = b''.join(len(e).to_bytes(2, 'big') + e for e in chunk)
        if len(chunk) == 256:
            files[tiles.entries_path(t // 256)] = bundle
        elif partial:
            files[tiles.entries_path(t // 256, len(chunk))] = bundle


def test_big_log_proofs_levels_and_full_tile_fallback():
    rnd = random.Random(22)
    n = 65536 + 300          # reaches tile level 2
    entries = [b'entry %d' % i for i in range(n)]
    leaves = [hash_leaf(e) for e in entries]
    small = 256 * 3 + 17
    files = {}
    write_tiles(files, entries, small)
    write_tiles(files, entries, n)
    # The small tree's partial level-0 tile has gone (its full tile exists):
    del files[tiles.tile_path(0, 3, 17)]
    del files[tiles.entries_path(3, 17)]
    log = []

    def fetch(path):
        log.append(path)
        return files.get(path)
    small_root = mth(leaves[:small])
    big_root = mth(leaves)
    r_small = tiles.TileReader(fetch, small, cache_tiles=4)
    assert r_small.root() == small_root
    assert r_small.checked_entry(small - 1) == entries[small - 1]
    assert tiles.tile_path(0, 3) in log and tiles.entries_path(3) in log
    r_big = tiles.TileReader(fetch, n, cache_tiles=4)
    assert r_big.root() == big_root
    assert len(r_big._cache) <= 4
    for i in [0, 1, 255, 256, small - 1, 65535, 65536, n - 1] + \
            [rnd.randrange(n) for _ in range(20)]:
        proof = r_big.inclusion_proof(i)
        assert root_from_inclusion_proof(i, n, leaves[i], proof) == big_root
    for m in [1, 2, 255, 256, 257, small, 65536, n - 1, n] + \
            [rnd.randrange(1, n) for _ in range(10)]:
        verify_consistency(m, n, mth(leaves[:m]), big_root, r_big.consistency_proof(m))
    # A proof from the small tree to the big one, and a wrong old root fails.
    with pytest.raises(Exception):
        verify_consistency(small, n, hashlib.sha256(b'x').digest(), big_root,
                           r_big.consistency_proof(small))


@needs_real
def test_prove_helpers_check_against_signed_checkpoints():
    cps = verified_checkpoints()
    fetch = dir_fetch(TILES)
    for cp in cps[1:]:
        for i in range(cp.size):
            body, proof = tiles.prove_inclusion(fetch, cp, i)
            assert body == WORDS[i].encode()
    for old in cps:
        assert isinstance(tiles.prove_consistency(fetch, old, cps[-1]), list)
    # A checkpoint whose root the tiles do not match: a forked log.
    import dataclasses
    forked = dataclasses.replace(cps[7], root_hash=hashlib.sha256(b'fork').digest())
    with pytest.raises(tiles.TileError, match='do not lead'):
        tiles.prove_inclusion(fetch, forked, 3)
    with pytest.raises(tiles.VerificationError):
        tiles.prove_consistency(fetch, forked, cps[-1])
    with pytest.raises(tiles.VerificationError):
        tiles.prove_consistency(fetch, cps[3], forked)


def test_cache_is_bounded_in_bytes():
    big = b'x' * 60000
    entries = [big] * 600
    files = {}
    write_tiles(files, entries, 600)
    reader = tiles.TileReader(files.get, 600, cache_bytes=1 << 20)
    for i in (0, 300, 599, 1):
        assert reader.entry(i) == big
        assert reader._cache_bytes <= 16 * 1024 * 1024 + 8192
    # each bundle is ~15 MiB: only the newest is kept, so entry 1 was re-read
    assert len(reader._cache) == 1
    assert reader.fetches == 4
