"""RFC 6962 / RFC 9162 Merkle tree proofs: inclusion and consistency (pure)."""

import hashlib

from .errors import VerificationError


def hash_leaf(data):
    """RFC 9162, section 2.1.1: the hash of a leaf."""
    return hashlib.sha256(b'\x00' + data).digest()


def hash_children(left, right):
    """RFC 9162, section 2.1.1: the hash of an interior node."""
    return hashlib.sha256(b'\x01' + left + right).digest()


def shift_past_right_edge(fn, sn):
    """RFC 9162, sections 2.1.3.2 (step 4.b.ii) and 2.1.4.2 (step 6.b.iii):
    if LSB(fn) is not set, right-shift fn and sn equally until LSB(fn) is
    set or fn is 0."""
    while not fn & 1 and fn != 0:
        fn >>= 1
        sn >>= 1
    return fn, sn


def root_from_inclusion_proof(index, size, leaf_hash, proof):
    """RFC 9162, section 2.1.3.2: the root a leaf's inclusion proof leads to."""
    if index < 0:
        raise VerificationError('inclusion proof: negative index %d' % index)
    if index >= size:
        raise VerificationError('inclusion proof: index %d is not below tree size %d'
                                % (index, size))
    fn, sn = index, size - 1
    r = leaf_hash
    for p in proof:
        if sn == 0:
            raise VerificationError('inclusion proof: too many hashes')
        if fn & 1 or fn == sn:
            r = hash_children(p, r)
            fn, sn = shift_past_right_edge(fn, sn)
        else:
            r = hash_children(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise VerificationError('inclusion proof: too few hashes')
    return r


def left_subtrees(index, size, proof):
    """The hashes of a leaf's inclusion proof (RFC 9162, section 2.1.3.2)
    that lie left of its path, bottom-up: the perfect subtrees that make up
    the tree's first `index` leaves, which later leaves never change."""
    fn, sn = index, size - 1
    left = []
    for p in proof:
        if fn & 1 or fn == sn:
            left.append(p)
            fn, sn = shift_past_right_edge(fn, sn)
        fn >>= 1
        sn >>= 1
    return left


def prefix_roots(index, leaf_hash, left):
    """{size: root} of the trees of the first `index` and `index + 1`
    leaves (RFC 9162, section 2.1.1), from left_subtrees() of a proof that
    verified: tree heads that the verified one provably extends."""
    roots = {}
    if left:
        root = left[0]
        for p in left[1:]:
            root = hash_children(p, root)
        roots[index] = root
    root = leaf_hash
    for p in left:
        root = hash_children(p, root)
    roots[index + 1] = root
    return roots


def verify_consistency(first_size, second_size, first_root, second_root, proof):
    """RFC 9162, section 2.1.4.2: the tree of second_size extends the tree
    of first_size."""
    if first_size > second_size:
        raise VerificationError('consistency: tree shrank from %d to %d'
                                % (first_size, second_size))
    if first_size == second_size:
        if proof or first_root != second_root:
            raise VerificationError('consistency: two roots for tree size %d' % first_size)
        return
    if first_size == 0:
        # Every tree extends the empty one, and nothing proves it.
        if proof:
            raise VerificationError('consistency: a proof from the empty tree must be empty')
        return
    if not proof:
        raise VerificationError('consistency: empty proof')
    if first_size & (first_size - 1) == 0:
        proof = [first_root] + list(proof)
    fn, sn = first_size - 1, second_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = proof[0]
    for c in proof[1:]:
        if sn == 0:
            raise VerificationError('consistency: too many hashes')
        if fn & 1 or fn == sn:
            fr = hash_children(c, fr)
            sr = hash_children(c, sr)
            fn, sn = shift_past_right_edge(fn, sn)
        else:
            sr = hash_children(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0 or fr != first_root or sr != second_root:
        raise VerificationError('consistency: proof from size %d to %d does not verify'
                                % (first_size, second_size))
