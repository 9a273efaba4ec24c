"""Rekor v2 ("rekor-tiles"): the hashedrekord entry built from an RPM's
header, the v2 write client, signed-note checkpoints, C2SP tlog-tiles,
Sigstore trust files and TransparencyLogEntry checks.

Pure functions over bytes and parsed data; the only I/O is the client's
and a fetch callable that callers pass in.
"""
