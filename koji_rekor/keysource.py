"""Where a log's key comes from, the one way every command that verifies finds it."""

import urllib.parse

from .config import PUBLIC_REKOR_HOST, PUBLIC_REKOR_KEY
from .display import display_url
from .errors import CannotCheck, UsageError, VerificationError
from .logkey import load_log_key, log_key_id, read_log_key

BUILT_IN_KEY = 'built into koji-rekor for %s' % PUBLIC_REKOR_HOST


def find_log_key(args, settings, receipt=None, entry=None, path=None):
    """(key, where it came from) for every command that verifies (verify,
    verify-rpm; monitor and the hub add their pinned key, known_log_key):
    --log-key, else the configured key when the configuration is for the
    log in question, else the built-in key when that log is the public one.
    The log in question is --url, else the one a receipt names, else the
    configured one; with nothing naming a log, an entry of the public log
    (by its logID) is checked with the built-in key. A receipt only names
    its log: it never supplies the key."""
    from .display import same_origin
    if getattr(args, 'log_key', None):
        try:
            return read_log_key(args.log_key), '--log-key %s' % args.log_key
        except OSError as e:
            raise UsageError('cannot read %s: %s' % (args.log_key, e.strerror))
        except VerificationError as e:
            raise UsageError('%s: %s' % (args.log_key, e))
    named = receipt.get('rekor_url') if isinstance(receipt, dict) else None
    named = named if isinstance(named, str) and urllib.parse.urlsplit(named).hostname else None
    if getattr(args, 'url', None) or entry is None:
        url = settings.url
    else:
        url = named or (settings.url if settings else None)
    if settings and settings.log_public_key and (url is None or same_origin(url, settings.url)):
        return read_log_key(settings.log_public_key), '[rekor] log_public_key %s (%s)' % (
            settings.log_public_key, settings.config_file)
    public = load_log_key(PUBLIC_REKOR_KEY)
    if url and urllib.parse.urlsplit(url).hostname == PUBLIC_REKOR_HOST:
        return public, BUILT_IN_KEY
    if url is None and str(entry.get('logID', '')).lower() == log_key_id(public).hex():
        return public, BUILT_IN_KEY
    advice = 'pass --log-key, or --config with [rekor] log_public_key'
    if url is None:
        raise CannotCheck('cannot check %s: no key for logID %s: %s' % (
            path, entry.get('logID'), advice))
    if path and url == named and not getattr(args, 'url', None):
        raise CannotCheck('cannot check %s: no key for the log it names, %s: %s' % (
            path, display_url(url), advice))
    raise CannotCheck('cannot check%s: no key for the log %s: %s' % (
        ' %s' % path if path else '', display_url(url), advice))


def log_key_source(settings, state):
    """Where the monitor's (and the hub's) key comes from, in
    known_log_key's order: configured, built in, else pinned under state."""
    if settings.log_public_key:
        return '[rekor] log_public_key %s (%s)' % (settings.log_public_key,
                                                   settings.config_file)
    if urllib.parse.urlsplit(settings.url).hostname == PUBLIC_REKOR_HOST:
        return BUILT_IN_KEY
    return 'pinned on first use under %s' % state
