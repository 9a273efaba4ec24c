"""koji-rekor verify: checking receipts and entries offline."""

import os
import urllib.parse

from . import config as defaults
from .config import check_url, load_config, PUBLIC_REKOR_HOST, PUBLIC_REKOR_KEY, Settings
from .errors import RekorLogError, UsageError, VerificationError
from .keysource import find_log_key
from .logkey import load_log_key, log_key_id, LogKeys
from .openpgp import openpgp_fingerprints
from .rekor.models import Receipt, RpmEntryBody
from .rpmsig import sha256_of
from .safefs import read_json
from .verify import verify_log_entry


def load_entry_file(path):
    """A receipt the plugin wrote, or a raw {entryID: LogEntry}."""
    return entry_file_parts(path, load_verify_file(path))


def load_verify_file(path):
    """The JSON of a file to verify, whatever it holds."""
    try:
        data = read_json(path)
    except OSError as e:
        raise UsageError('cannot read %s: %s' % (path, e.strerror))
    except RekorLogError as e:
        raise UsageError(str(e))
    if data is None:
        raise UsageError('cannot read %s: No such file or directory' % path)
    return data


def entry_file_parts(path, data):
    """(receipt or None, entryID, entry) of a v1 receipt or {entryID: entry}."""
    receipt = data if isinstance(data, dict) and 'log_entry' in data else None
    entries = receipt['log_entry'] if receipt else data
    if not isinstance(entries, dict) or len(entries) != 1:
        raise UsageError('%s holds no single Rekor entry' % path)
    (entry_id, entry), = entries.items()
    if not isinstance(entry, dict):
        raise UsageError('%s holds no single Rekor entry' % path)
    return receipt, entry_id, entry


def verify_settings(args):
    """The configuration of a read-only check: --config (which must exist),
    else the hub's file when this user can read it, else none (None)."""
    path = args.config
    if path is None and os.access(defaults.CONFIG_FILE, os.R_OK):
        path = defaults.CONFIG_FILE
    settings = load_config(path) if path else None
    if args.url:
        settings = settings or Settings()
        settings.url = args.url
        settings.allow_insecure_http = True  # the caller named it; nothing is sent
        check_url(settings)
    return settings


def verify_key_for(args, settings, receipt, entry, path=None):
    return find_log_key(args, settings, receipt, entry, path)[0]


def verify_origin_for(args, settings, receipt, key):
    """The host the checkpoint must name: --origin, the configured log (or
    --url), the receipt's rekor_url, or rekor.sigstore.dev for its key."""
    if args.origin:
        return args.origin
    if settings:
        return settings.origin_host
    url = receipt.get('rekor_url') if receipt else None
    if isinstance(url, str) and urllib.parse.urlsplit(url).hostname:
        return urllib.parse.urlsplit(url).hostname
    if not isinstance(key, LogKeys) and log_key_id(key) == log_key_id(
            load_log_key(PUBLIC_REKOR_KEY)):
        return PUBLIC_REKOR_HOST
    raise UsageError('no origin to check the checkpoint against: pass --origin or --url')


def check_receipt_body(receipt, body):
    """The receipt's own nvra, sigkey and sha256 are what the entry logged:
    the receipt and the body are each parsed once, then compared."""
    receipt = Receipt.from_json(receipt)
    if not receipt.claims:
        return
    logged = RpmEntryBody.from_dict(body)
    if (logged.kind, logged.api_version) == ('hashedrekord', '0.0.1'):
        # [rekor] entry = hashedrekord: the body names a digest, a signature
        # and a key, no package; the receipt then claims no sha256. Its NEVRA
        # and sigkey are checked against the RPM by rekorLogStatus.
        if receipt.sha256:
            raise VerificationError('receipt records sha256 %s, the entry is a hashedrekord'
                                    % receipt.sha256)
        return
    if logged.kind != 'rpm':
        raise VerificationError('receipt names an RPM, the entry is %s' % logged.kind)
    if receipt.sha256 and receipt.sha256 != logged.sha256:
        raise VerificationError('receipt records sha256 %s, the entry logged %s'
                                % (receipt.sha256, logged.sha256))
    if receipt.nvra:
        name, _, arch = receipt.nvra.rpartition('.')
        if receipt.nvra != logged.nvra and not (
                arch == 'src' and logged.nvra.rpartition('.')[0] == name and logged.headers):
            raise VerificationError('receipt records %s, the entry logged %s'
                                    % (receipt.nvra, logged.nvra))
    if receipt.sigkey:
        if not any(fingerprint.endswith(receipt.sigkey.upper())
                   for fingerprint in openpgp_fingerprints(logged.public_key)):
            raise VerificationError('receipt records sigkey %s, the entry logged another key'
                                    % receipt.sigkey)


def verify_entry_file(args, settings, receipt, entry_id, entry, key):
    origin = verify_origin_for(args, settings, receipt, key)
    verified = verify_log_entry(entry_id, entry, key, origin, require_set=False)
    if receipt:
        check_receipt_body(receipt, verified.logged)
    return verified

# Rekor v2 (rekor-tiles): receipts, bare TransparencyLogEntry files and
# Sigstore bundles, checked offline with rekor_v2 (imported lazily: the
# package split moves it).

SIGSTORE_BUNDLE = 'application/vnd.dev.sigstore.bundle'


def receipt_files(paths):
    """The files named, and every *.json under the directories named, but
    for the plugin's own @outbox and @state and temporary dot files."""
    for path in paths:
        if not os.path.isdir(path):
            yield path
            continue
        for directory, subdirs, files in os.walk(path):
            subdirs[:] = sorted(d for d in subdirs if not d.startswith(('@', '.')))
            for name in sorted(files):
                if name.endswith('.json') and not name.startswith('.'):
                    yield os.path.join(directory, name)


def check_receipt_rpm(path, receipt, verified):
    """The RPM file is the one the rpm entry logged."""
    logged = verified.logged
    if logged.kind != 'rpm':
        raise UsageError('--rpm needs an rpm entry, this is %s' % logged.kind)
    if not os.path.isfile(path):
        raise UsageError('no such file: %s' % path)
    with open(path, 'rb') as fo:
        sha256 = sha256_of(fo)
    if logged.sha256 != sha256:
        raise VerificationError('%s has sha256 %s, the entry logged %s'
                                % (path, sha256, logged.sha256))
    if receipt and receipt.get('sha256') not in (None, sha256):
        raise VerificationError('receipt records sha256 %s, %s has %s'
                                % (receipt.get('sha256'), path, sha256))
