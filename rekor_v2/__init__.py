"""Rekor v2 ("rekor-tiles") read and verify side: signed-note checkpoints,
C2SP tlog-tiles, Sigstore trust files and TransparencyLogEntry checks.

Standalone modules with relative imports only, so that the package can move
under koji_rekor/ unchanged. Pure functions over bytes and parsed data; the
only I/O is through a fetch callable that callers pass in.
"""
