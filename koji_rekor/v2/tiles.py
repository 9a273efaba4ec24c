"""C2SP tlog-tiles: paths, tiles and entry bundles, and RFC 6962 proofs
built from them.

Spec: https://c2sp.org/tlog-tiles. Tiles are 256 hashes wide; the tile at
level L holds the hashes of tree level 8*L; the rightmost tile of a level is
partial (`.p/<W>`) until it fills, and may disappear once the full one
exists, so a reader falls back to the full tile (tlog-tiles, "Partial
tiles"). Rekor v2 (sigstore/rekor-tiles, on transparency-dev/tessera)
serves these paths as static files at the shard's root.

Proofs follow RFC 6962 section 2.1.1 (PATH) and 2.1.2 (PROOF/SUBPROOF);
their results are checked by the RFC 9162 verifiers in rekor_log.py.

I/O only through `fetch(path) -> bytes or None` (None: the file does not
exist); a small LRU keeps memory bounded at any tree size.

Written by hand: no Python library reads tlog-tiles (the Go ones are
transparency-dev/tessera's client and golang.org/x/mod/sumdb/tlog).
"""

from __future__ import annotations

import hashlib
import struct
from collections import OrderedDict
from typing import Callable, List, Optional, Tuple
from ..errors import VerificationError
from ..merkle import hash_children, hash_leaf, root_from_inclusion_proof, verify_consistency


TILE_WIDTH = 256
TILE_HEIGHT = 8                     # log2(TILE_WIDTH): tree levels per tile level
HASH_SIZE = 32
MAX_ENTRY = 0xFFFF                  # a bundle length prefix is a uint16

Fetch = Callable[[str], Optional[bytes]]


class TileError(VerificationError):
    """A tile or entry bundle that is absent, malformed or inconsistent."""


def index_path(n: int) -> str:
    """tlog-tiles: N as 3-digit groups, all but the last prefixed `x`
    (1234067 -> x001/x234/067)."""
    if n < 0:
        raise ValueError('negative tile index %d' % n)
    groups = ['%03d' % (n % 1000)]
    n //= 1000
    while n:
        groups.append('x%03d' % (n % 1000))
        n //= 1000
    return '/'.join(reversed(groups))


def _suffix(width: Optional[int]) -> str:
    if width is None or width == TILE_WIDTH:
        return ''
    if not 1 <= width < TILE_WIDTH:
        raise ValueError('tile width %d is not in 1..256' % width)
    return '.p/%d' % width


def tile_path(level: int, index: int, width: Optional[int] = None) -> str:
    """`tile/<L>/<N>[.p/<W>]`"""
    if not 0 <= level <= 63:
        raise ValueError('tile level %d is not in 0..63' % level)
    return 'tile/%d/%s%s' % (level, index_path(index), _suffix(width))


def entries_path(index: int, width: Optional[int] = None) -> str:
    """`tile/entries/<N>[.p/<W>]`"""
    return 'tile/entries/%s%s' % (index_path(index), _suffix(width))


def parse_hash_tile(data: bytes, width: int) -> Tuple[bytes, ...]:
    """The first `width` hashes of a tile: a partial tile has exactly
    width hashes, a full one 256."""
    if len(data) % HASH_SIZE or not width <= len(data) // HASH_SIZE <= TILE_WIDTH:
        raise TileError('tile of %d bytes cannot hold %d hashes' % (len(data), width))
    return tuple(data[i:i + HASH_SIZE] for i in range(0, width * HASH_SIZE, HASH_SIZE))


def parse_entry_bundle(data: bytes) -> Tuple[bytes, ...]:
    """tlog-tiles entry bundle: each entry a big-endian uint16 length and
    that many bytes, back to back, nothing after the last."""
    out = []
    pos = 0
    while pos < len(data):
        if pos + 2 > len(data) or len(out) >= TILE_WIDTH:
            raise TileError('entry bundle is malformed at byte %d' % pos)
        (n,) = struct.unpack_from('>H', data, pos)
        pos += 2
        if pos + n > len(data):
            raise TileError('entry bundle entry %d runs past the end' % len(out))
        out.append(data[pos:pos + n])
        pos += n
    return tuple(out)


def _tile_width(count: int, tile_index: int) -> int:
    """How many of a level's `count` complete nodes fall in that tile."""
    return min(TILE_WIDTH, count - tile_index * TILE_WIDTH)


def _split(n: int) -> int:
    """RFC 6962 section 2.1: the largest power of two smaller than n (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


class TileReader:
    """Node hashes, entries and proofs of the tree of `size` leaves, read
    through `fetch`. Only tiles of that tree are fetched (widths follow from
    the size). At most `cache_tiles` tiles and `cache_bytes` bytes are held
    (the newest one always): an entry bundle can be 16 MiB, a hash tile 8 KiB."""

    def __init__(self, fetch: Fetch, size: int, cache_tiles: int = 16,
                 cache_bytes: int = 4 << 20):
        if size < 0:
            raise ValueError('negative tree size')
        self.fetch = fetch
        self.size = size
        self._cache: 'OrderedDict[Tuple, Tuple[bytes, ...]]' = OrderedDict()
        self._cache_tiles = max(1, cache_tiles)
        self._cache_limit = cache_bytes
        self._cache_bytes = 0
        self.fetches = 0                # tiles asked for, for tests and benchmarks

    def _get(self, kind, index: int, width: int):
        key = (kind, index, width)
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        if kind == 'entries':
            paths = [entries_path(index, width)]
            if width < TILE_WIDTH:
                paths.append(entries_path(index))
        else:
            paths = [tile_path(kind, index, width)]
            if width < TILE_WIDTH:
                paths.append(tile_path(kind, index))
        for path in paths:
            self.fetches += 1
            data = self.fetch(path)
            if data is not None:
                break
        else:
            raise TileError('%s is absent (and so is the full tile)' % paths[0]
                            if len(paths) > 1 else '%s is absent' % paths[0])
        if kind == 'entries':
            entries = parse_entry_bundle(data)
            if len(entries) < width:
                raise TileError('%s holds %d entries, not %d' % (path, len(entries), width))
            value = entries[:width]
        else:
            value = parse_hash_tile(data, width)
        self._cache[key] = value
        self._cache_bytes += sum(map(len, value))
        while len(self._cache) > 1 and (len(self._cache) > self._cache_tiles
                                        or self._cache_bytes > self._cache_limit):
            _, old = self._cache.popitem(last=False)
            self._cache_bytes -= sum(map(len, old))
        return value

    def entry(self, index: int) -> bytes:
        """The logged bytes of leaf `index`, from its entry bundle."""
        if not 0 <= index < self.size:
            raise TileError('entry %d is not in a tree of size %d' % (index, self.size))
        t = index // TILE_WIDTH
        return self._get('entries', t, _tile_width(self.size, t))[index % TILE_WIDTH]

    def checked_entry(self, index: int) -> bytes:
        """entry(), after checking that its leaf hash is the one in the
        level-0 tile: bytes that a proof from these tiles covers."""
        data = self.entry(index)
        if hash_leaf(data) != self.node(0, index):
            raise TileError('entry %d does not hash to its leaf in the tiles' % index)
        return data

    def node(self, level: int, index: int) -> bytes:
        """The hash of the perfect subtree of 2**level leaves starting at
        leaf index * 2**level, which must be complete in this tree."""
        if (index + 1) << level > self.size:
            raise TileError('node %d/%d is not complete in a tree of size %d'
                            % (level, index, self.size))
        tile_level, rest = divmod(level, TILE_HEIGHT)
        base_level = tile_level * TILE_HEIGHT
        # The node's 2**rest descendants at the tile's level, all in one tile.
        first = index << rest
        t = first // TILE_WIDTH
        count = self.size >> base_level
        hashes = self._get(tile_level, t, _tile_width(count, t))
        row = list(hashes[first % TILE_WIDTH:first % TILE_WIDTH + (1 << rest)])
        while len(row) > 1:
            row = [hash_children(row[i], row[i + 1]) for i in range(0, len(row), 2)]
        return row[0]

    def subtree(self, lo: int, hi: int) -> bytes:
        """RFC 6962 MTH of leaves [lo, hi): perfect aligned subtrees come
        from tiles, the ragged right edge is combined from them."""
        n = hi - lo
        if n <= 0:
            raise TileError('empty subtree')
        if n & (n - 1) == 0 and lo % n == 0:
            return self.node(n.bit_length() - 1, lo // n)
        k = _split(n)
        return hash_children(self.subtree(lo, lo + k), self.subtree(lo + k, hi))

    def root(self) -> bytes:
        """RFC 6962 MTH(D[size]); the empty tree's is SHA-256 of nothing."""
        if self.size == 0:
            return hashlib.sha256(b'').digest()
        return self.subtree(0, self.size)

    def inclusion_proof(self, index: int) -> List[bytes]:
        """RFC 6962 section 2.1.1 PATH(index, D[size]), leaf side first."""
        if not 0 <= index < self.size:
            raise TileError('entry %d is not in a tree of size %d' % (index, self.size))
        proof: List[bytes] = []
        lo, hi = 0, self.size
        siblings = []
        while hi - lo > 1:
            k = _split(hi - lo)
            if index < lo + k:
                siblings.append((lo + k, hi))
                hi = lo + k
            else:
                siblings.append((lo, lo + k))
                lo = lo + k
        for a, b in reversed(siblings):
            proof.append(self.subtree(a, b))
        return proof

    def consistency_proof(self, old_size: int) -> List[bytes]:
        """RFC 6962 section 2.1.2 PROOF(old_size, D[size])."""
        if not 0 <= old_size <= self.size:
            raise TileError('cannot prove size %d from a tree of size %d'
                            % (old_size, self.size))
        if old_size in (0, self.size):
            return []
        # SUBPROOF(m, D[lo:hi], b), unrolled: the path goes down, the hashes
        # come out leaf side first.
        out = []
        m, lo, hi, whole = old_size, 0, self.size, True
        while True:
            n = hi - lo
            if m == n:
                if not whole:
                    out.append(self.subtree(lo, hi))
                break
            k = _split(n)
            if m <= k:
                out.append(self.subtree(lo + k, hi))
                hi = lo + k
            else:
                out.append(self.subtree(lo, lo + k))
                m, lo, whole = m - k, lo + k, False
        return list(reversed(out))


def prove_inclusion(fetch: Fetch, checkpoint, index: int) -> Tuple[bytes, List[bytes]]:
    """Entry `index` and its inclusion proof in the tree of a checkpoint
    that the caller has verified, from tiles, and checked to lead to that
    checkpoint's root (RFC 9162 section 2.1.3.2): what a 409 answer or a
    monitor needs. Tiles that disagree with the signed root raise."""
    reader = TileReader(fetch, checkpoint.size)
    body = reader.checked_entry(index)
    proof = reader.inclusion_proof(index)
    if root_from_inclusion_proof(index, checkpoint.size, hash_leaf(body), proof) \
            != checkpoint.root_hash:
        raise TileError('tiles for entry %d do not lead to the root of checkpoint size %d'
                        % (index, checkpoint.size))
    return body, proof


def prove_consistency(fetch: Fetch, old, new) -> List[bytes]:
    """A consistency proof from checkpoint `old` to checkpoint `new` (both
    verified by the caller), from the tiles of `new`, checked (RFC 9162
    section 2.1.4.2). A log that forked or rewrote its past raises."""
    proof = TileReader(fetch, new.size).consistency_proof(old.size)
    verify_consistency(old.size, new.size, old.root_hash, new.root_hash, proof)
    return proof
