"""The one door from rekor_v2 into the v1 code: the RFC 6962/9162 Merkle
functions and the verification error live in rekor_log.py today. When the
code becomes a package, only these imports change."""

from rekor_log import (  # noqa: F401  (re-exported)
    VerificationError,
    hash_children,
    hash_leaf,
    root_from_inclusion_proof,
    verify_consistency,
)

__all__ = ['VerificationError', 'hash_children', 'hash_leaf',
           'root_from_inclusion_proof', 'verify_consistency']
