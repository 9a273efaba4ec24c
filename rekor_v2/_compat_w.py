"""The one place the write side of Rekor v2 reaches into rekor_log.py.

rekor_log.py is still a single module (a later step splits it into a
package); everything rekor_v2's write side needs from it is imported here
and only here, so that the split changes one file.
"""

import rekor_log
from rekor_log import (
    DeadlinePassed,
    RekorLogError,
    RekorMisconfigured,
    RekorRejected,
    RekorUnavailable,
    SignatureSourceError,
    SourceGone,
    VerificationError,
    Watchdog,
    display_url,
    is_timeout,
    key_packet_fingerprint,
    openpgp_packets,
    short_reason,
    signature_issuer,
    text_excerpt,
    urllib3_error,
    watched_adapter,
)

__version__ = rekor_log.__version__

# OpenPGP packet tags (RFC 4880, section 4.3).
PGP_TAG_SIGNATURE = rekor_log.PGP_TAG_SIGNATURE
PGP_TAG_PUBLIC_KEY = rekor_log.PGP_TAG_PUBLIC_KEY
PGP_TAG_PUBLIC_SUBKEY = rekor_log.PGP_TAG_PUBLIC_SUBKEY

__all__ = ['DeadlinePassed', 'RekorLogError', 'RekorMisconfigured', 'RekorRejected',
           'RekorUnavailable', 'SignatureSourceError', 'SourceGone', 'VerificationError',
           'Watchdog', 'display_url', 'is_timeout', 'key_packet_fingerprint', 'openpgp_packets',
           'short_reason', 'signature_issuer', 'text_excerpt', 'urllib3_error',
           'watched_adapter', '__version__', 'PGP_TAG_SIGNATURE', 'PGP_TAG_PUBLIC_KEY',
           'PGP_TAG_PUBLIC_SUBKEY']
