# Koji hub plugin: record every RPM signature Koji imports in a Sigstore
# Rekor transparency log, verify what the log answers, and keep a receipt.
#
# Enable in /etc/koji-hub/hub.conf with "Plugins = rekor_log"; configure in
# /etc/koji-hub/plugins/rekor_log.conf. What only admins run (the worker,
# monitor, backfill, the `koji-rekor` command) is in koji_rekor.py, which the
# hub never loads.
#
# SPDX-License-Identifier: LGPL-2.1-only

import base64
import binascii
import contextlib
import datetime
import errno
import fcntl
import hashlib
import io
import json
import logging
import math
import os
import queue
import re
import socket
import ssl
import stat
import threading
import time
import urllib.parse
import weakref
from dataclasses import dataclass, field

import koji
from koji.plugin import callback, export, ignore_error

__version__ = '0.1.0'

CONFIG_FILE = '/etc/koji-hub/plugins/rekor_log.conf'
CONFIG = None
LOG = logging.getLogger('koji.plugin.rekor_log')

DEFAULT_URL = 'https://rekor.sigstore.dev'
KOJI_CLIENT_CONFIG = '/etc/koji.conf'
RECEIPT_DIR = 'rekor-logs'
# '@' cannot appear in an RPM name, so this never collides with a receipt
# directory <name>/ beside it.
STATE_DIR = '@state'
ENTRIES_PATH = '/api/v1/log/entries'
PUBLIC_KEY_PATH = '/api/v1/log/publicKey'
PROOF_PATH = '/api/v1/log/proof'
LOG_INFO_PATH = '/api/v1/log'
INDEX_PATH = '/api/v1/index/retrieve'
RETRIEVE_PATH = '/api/v1/log/entries/retrieve'
# Rekor's maxSearchQueries: the most entries one retrieve request may name.
RETRIEVE_BATCH = 10

# Bytes read from the RPM at a time: a multiple of 3 so that each chunk
# base64-encodes on its own, small enough to keep memory flat.
CHUNK_SIZE = 3 * 128 * 1024
# Encoded chunks the reader thread keeps ready ahead of the socket: enough
# to keep the socket busy while the next one is encoded, few enough to keep
# memory flat (4/3 CHUNK_SIZE each).
QUEUE_CHUNKS = 4
# How long stopping an upload waits for its reader thread's read in progress.
READER_STOP_SECONDS = 5.0

# Rekor's messages when it finds no signature it can check; older Rekor only
# checks the legacy header+payload signature.
NO_USABLE_SIGNATURE = ('Package signature not found', 'no supported PGP signature')

# The public-good instance's log key (rekor.sigstore.dev), as published in the
# Sigstore trusted root; used when that URL is configured with no key.
PUBLIC_REKOR_HOST = 'rekor.sigstore.dev'
PUBLIC_REKOR_KEY = b"""-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE2G2Y+2tabdTV5BcGiBIx0a9fAFwr
kBbmLSGtks4L3qX6yYY0zufBnhC8Ur/iy55GhWP/9A/bY2LhC30M9+RYtw==
-----END PUBLIC KEY-----
"""


# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------

class RekorLogError(Exception):
    """A signature could not be logged; str() is a one-line cause.

    permanent: trying again cannot help, so a queued record is moved aside.
    """
    permanent = False


class SignatureSourceError(RekorLogError):
    """The public key for a signature is missing or does not match."""


class SourceGone(SignatureSourceError):
    """The signed RPM or its signature header is missing or corrupt."""
    permanent = True


class RekorRejected(RekorLogError):
    """Rekor refused the entry for good (4xx)."""
    permanent = True


class BreaksRekorRule(RekorLogError):
    """The RPM breaks a rule of Rekor's rpm type, so Rekor would refuse it:
    found before anything is sent."""
    permanent = True


class RekorUnavailable(RekorLogError):
    """Rekor could not be reached or answered with a server error.

    The log's failure, not the record's: the record waits for the log
    (see the log's outage state). at_once: not worth retrying within the
    same upload."""
    about_the_log = True

    def __init__(self, message, at_once=False):
        super().__init__(message)
        self.at_once = at_once


class LogBehind(RekorUnavailable):
    """The log has not caught up with itself: the instance that answered
    is behind the one that signed a tree head (Rekor's 400 "the tree size
    requested(N) was greater than what is currently observable(M)"), or an
    entry is queued but not integrated (409, then 404 for it). Retried
    with backoff; then the record waits for the next pass. Neither an
    outage of the log nor a refusal of the record, nor a finding."""
    about_the_log = False
    next_pass = True


class RekorMisconfigured(RekorUnavailable):
    """The log answered as no Rekor at that URL would (a redirect, refused
    credentials, no entries API): a configuration problem. The record is
    kept and waits like for an unavailable log; retrying now cannot help."""

    def __init__(self, message):
        super().__init__(message, at_once=True)


class VerificationError(RekorLogError):
    """Something the log returned does not verify."""


class LogClosed(RekorUnavailable):
    """The log answers 501 for its entries: an operator turned the
    endpoint off (Rekor's --enabled_api_endpoints; Sigstore turns the v1
    write path off). The log's state, not the record's: records are kept,
    and status and doctor say that this log no longer takes entries."""
    closed = True

    def __init__(self, message):
        super().__init__(message, at_once=True)


class BadRecord(RekorLogError):
    """An outbox record that is not one the plugin writes: set aside."""
    permanent = True


# ---------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------

@dataclass
class Settings:
    url: str = DEFAULT_URL
    log_public_key: str = None
    origin: str = None
    timeout: float = 30.0
    retries: int = 3
    backoff: float = 1.0
    ca_bundle: str = None
    allow_insecure_http: bool = False
    public_key_dir: str = None
    public_key_path: str = None
    enforce: bool = False
    record_log_info: bool = True
    queue_only: bool = False
    hub_url: str = None
    poll_interval: float = 30.0
    min_rate: float = 1024 * 1024
    trust_on_first_use: bool = False
    hub_budget: float = 10.0
    hub_user: str = 'apache'
    notify_command: str = None
    # The monitor's memory, off the shared topdir; and whom it runs as when
    # started as root (None: root).
    monitor_state_dir: str = '/var/lib/koji-rekor'
    monitor_user: str = None
    topurl: str = None
    # Which Rekor API the log speaks (1, or 2: rekor-tiles), the v1 entry
    # kind, and the Sigstore trust files that may name logs and their keys.
    api: int = 1
    entry: str = 'rpm'
    trusted_root: str = None
    signing_config: str = None
    # Set by load_config: the file it read, and whether that is the original
    # plugin's (a [config] section naming neither a url nor a key elsewhere).
    config_file: str = None
    legacy: bool = False

    @property
    def origin_host(self):
        """The host a checkpoint's origin must name, or the hosts it may
        name (a frozenset): [rekor] origin may list several, comma or space
        separated, as a private log's replicas each sign with their own
        host name when rekor_server.hostname is not set (Rekor's default is
        os.Hostname(), a pod's name on Kubernetes)."""
        names = (self.origin or '').replace(',', ' ').split()
        if len(names) > 1:
            return frozenset(names)
        return names[0] if names else urllib.parse.urlsplit(self.url).hostname


# (section, option) -> (attribute, kind). The [config] section is the
# original plugin's; the newer sections win when both set an option.
OPTIONS = [
    (('config', 'rekor_server_url'), ('url', 'str')),
    (('config', 'public_key_path'), ('public_key_path', 'file')),
    (('config', 'enforce_rekor_upload'), ('enforce', 'bool')),
    (('config', 'record_log_info'), ('record_log_info', 'bool')),
    (('rekor', 'url'), ('url', 'str')),
    (('rekor', 'log_public_key'), ('log_public_key', 'pem')),
    (('rekor', 'origin'), ('origin', 'str')),
    (('rekor', 'timeout'), ('timeout', 'seconds')),
    (('rekor', 'retries'), ('retries', 'count')),
    (('rekor', 'backoff'), ('backoff', 'seconds')),
    (('rekor', 'ca_bundle'), ('ca_bundle', 'file')),
    (('rekor', 'allow_insecure_http'), ('allow_insecure_http', 'bool')),
    (('signing', 'public_key_dir'), ('public_key_dir', 'dir')),
    (('signing', 'public_key_path'), ('public_key_path', 'file')),
    (('upload', 'enforce'), ('enforce', 'bool')),
    (('upload', 'record_log_info'), ('record_log_info', 'bool')),
    (('upload', 'queue_only'), ('queue_only', 'bool')),
    (('koji', 'server'), ('hub_url', 'str')),
    (('upload', 'poll_interval'), ('poll_interval', 'seconds')),
    (('rekor', 'min_rate'), ('min_rate', 'rate')),
    (('rekor', 'trust_on_first_use'), ('trust_on_first_use', 'bool')),
    (('upload', 'hub_budget'), ('hub_budget', 'seconds')),
    (('upload', 'hub_user'), ('hub_user', 'str')),
    (('monitor', 'notify_command'), ('notify_command', 'str')),
    (('monitor', 'state_dir'), ('monitor_state_dir', 'str')),
    (('monitor', 'user'), ('monitor_user', 'str')),
    (('koji', 'topurl'), ('topurl', 'str')),
    (('rekor', 'api'), ('api', 'api')),
    (('rekor', 'entry'), ('entry', 'entry')),
    (('rekor', 'trusted_root'), ('trusted_root', 'file')),
    (('rekor', 'signing_config'), ('signing_config', 'file')),
]

# The values of the options that take one of a few words.
CHOICES = {'api': {'1': 1, '2': 2}, 'entry': {'rpm': 'rpm', 'hashedrekord': 'hashedrekord'}}

BOOLEANS = {'1': True, 'yes': True, 'true': True, 'on': True,
            '0': False, 'no': False, 'false': False, 'off': False}

# The largest value that makes sense for each numeric option: a typo such as
# retries = 5000 or timeout = 1e9 would hold a signature import for days.
LIMITS = {'timeout': 3600, 'retries': 20, 'backoff': 600, 'poll_interval': 86400,
          'min_rate': 1 << 40, 'hub_budget': 3600}


def get_config():
    """The plugin's settings, read once per process as Koji's plugins do."""
    global CONFIG
    if CONFIG is None:
        CONFIG = load_config(CONFIG_FILE)
    return CONFIG


def read_config_file(path):
    """The parsed file, strictly: it must exist and parse, with no unknown
    section or option, no duplicate, and a section header first."""
    parser = parse_config_file(path)
    known = {}
    for (section, option), _ in OPTIONS:
        known.setdefault(section, set()).add(option)
    for section in parser.sections():
        if section not in known:
            raise koji.ConfigurationError('%s: unknown section [%s] (known: %s)' % (
                path, section, ', '.join(sorted(known))))
        for option in parser.options(section):
            if option not in known[section]:
                raise koji.ConfigurationError('%s: unknown option [%s] %s' % (
                    path, section, option))
    return parser


def parse_config_file(path):
    """The file as configparser reads it, names unchecked: what a broken
    file still says about enforce and hub_user."""
    import configparser
    if not os.path.isfile(path):
        raise koji.ConfigurationError('%s: no such configuration file' % path)
    parser = configparser.RawConfigParser(strict=True)
    try:
        with open(path, encoding='utf-8') as fo:
            parser.read_file(fo, source=path)
    except OSError as e:
        raise koji.ConfigurationError('%s: cannot read it: %s' % (path, e.strerror or e))
    except UnicodeDecodeError:
        raise koji.ConfigurationError('%s: not UTF-8 text' % path)
    except configparser.MissingSectionHeaderError as e:
        raise koji.ConfigurationError('%s: line %d: no [section] header before it'
                                      % (path, e.lineno))
    except configparser.DuplicateSectionError as e:
        raise koji.ConfigurationError('%s: line %s: section [%s] appears twice'
                                      % (path, e.lineno, e.section))
    except configparser.DuplicateOptionError as e:
        raise koji.ConfigurationError('%s: line %s: [%s] %s appears twice'
                                      % (path, e.lineno, e.section, e.option))
    except configparser.Error as e:
        raise koji.ConfigurationError('%s: %s' % (path, ' '.join(str(e).split())))
    return parser


def load_config(path):
    """Read and check a configuration file, or raise ConfigurationError
    naming the file and the option."""
    parser = read_config_file(path)
    settings = Settings()
    for (section, option), (attr, kind) in OPTIONS:
        if parser.has_option(section, option):
            raw = parser.get(section, option).strip()
            try:
                setattr(settings, attr, parse_option(section, option, kind, raw))
            except koji.ConfigurationError as e:
                raise koji.ConfigurationError('%s: %s' % (path, e))
    # The original plugin's file cannot name a log key or allow http: it
    # keeps working as it did, trusting the log's key on first use.
    settings.legacy = parser.has_section('config') and not any(
        parser.has_option('rekor', option) for option in ('url', 'log_public_key'))
    if settings.legacy and parser.has_option('config', 'rekor_server_url') \
            and not parser.has_option('rekor', 'allow_insecure_http') \
            and settings.url.lower().startswith('http://'):
        LOG.warning('rekor_log: %s: [config] rekor_server_url %s is plain http, as the original '
                    'plugin allowed; use https, or set [rekor] url and allow_insecure_http',
                    path, display_url(settings.url))
        settings.allow_insecure_http = True
    try:
        check_url(settings)
    except koji.ConfigurationError as e:
        raise koji.ConfigurationError('%s: %s' % (path, e))
    if settings.api == 2 and settings.entry != 'hashedrekord' and parser.has_option('rekor', 'entry'):
        raise koji.ConfigurationError('%s: [rekor] entry: Rekor v2 (api = 2) takes hashedrekord '
                                      'entries only, not %s' % (path, settings.entry))
    if settings.api == 2:
        settings.entry = 'hashedrekord'
    if settings.enforce and settings.queue_only:
        raise koji.ConfigurationError('%s: [upload] queue_only: cannot be combined with enforce, '
                                      'which must upload before Koji commits' % path)
    settings.config_file = path
    return settings


def enforce_explicitly_off(path):
    """True only when the file parses and sets enforce to false: a file
    that does not load fails the import unless the admin said not to. The
    same for a bad value and an unknown name (README: Configuration): only a
    misspelt section or enforce itself leaves enforce unsaid."""
    try:
        parser = parse_config_file(path)
        for section, option in (('upload', 'enforce'), ('config', 'enforce_rekor_upload')):
            if parser.has_option(section, option):
                return BOOLEANS.get(parser.get(section, option).strip().lower()) is False
    except koji.ConfigurationError:
        pass
    return False


def parse_option(section, option, kind, raw):
    """Convert one option's text, or raise ConfigurationError naming it."""
    name = '[%s] %s' % (section, option)
    if kind == 'bool':
        if raw.lower() not in BOOLEANS:
            raise koji.ConfigurationError('%s: %r is not a boolean' % (name, raw))
        return BOOLEANS[raw.lower()]
    if kind in ('seconds', 'count', 'rate'):
        try:
            value = int(raw) if kind == 'count' else float(raw)
        except ValueError:
            value = -1
        if not math.isfinite(value) or value < 0 or (kind != 'count' and value == 0):
            raise koji.ConfigurationError('%s: %r is not a valid %s' % (name, raw, {
                'seconds': 'number of seconds', 'count': 'count',
                'rate': 'rate in bytes a second'}[kind]))
        limit = LIMITS.get(option)
        if limit is not None and value > limit:
            raise koji.ConfigurationError('%s: %r is more than the most that makes sense (%s)'
                                          % (name, raw, limit))
        return value
    if kind in CHOICES:
        if raw.lower() not in CHOICES[kind]:
            raise koji.ConfigurationError('%s: %r is not one of %s' % (
                name, raw, ', '.join(sorted(CHOICES[kind]))))
        return CHOICES[kind][raw.lower()]
    if not raw:
        raise koji.ConfigurationError('%s: empty' % name)
    if kind in ('file', 'pem') and not os.path.isfile(raw):
        raise koji.ConfigurationError('%s: no such file: %s' % (name, raw))
    if kind == 'pem':
        try:
            read_log_key(raw)
        except (OSError, VerificationError) as e:
            raise koji.ConfigurationError('%s: %s: %s' % (name, raw, e))
    if kind == 'dir' and not os.path.isdir(raw):
        raise koji.ConfigurationError('%s: no such directory: %s' % (name, raw))
    return raw


def check_url(settings):
    parts = urllib.parse.urlsplit(settings.url)
    try:
        parts.port
    except ValueError:
        raise koji.ConfigurationError('[rekor] url: %r has a bad port'
                                      % display_url(settings.url))
    if parts.scheme not in ('https', 'http') or not parts.hostname:
        raise koji.ConfigurationError('[rekor] url: %r is not an http(s) URL'
                                      % display_url(settings.url))
    if parts.scheme == 'http' and not settings.allow_insecure_http:
        raise koji.ConfigurationError(
            '[rekor] url: %s is plain http; set allow_insecure_http = true to allow it'
            % display_url(settings.url))
    settings.url = settings.url.rstrip('/')


# ---------------------------------------------------------------------------
# Locating the signed RPM and its public key
# ---------------------------------------------------------------------------

@dataclass
class SignedRpm:
    """One signed RPM, read as a stream: a signed copy on disk, or Koji's
    unsigned RPM with the signature header from the sigcache spliced in."""
    nvra: str
    sigkey: str
    path: str
    sighdr: bytes
    spliced: bool

    def open(self):
        """The signed RPM as an unbuffered stream: readinto() fills the
        caller's buffer straight from the file."""
        if self.spliced:
            return SplicedRpm(self.path, self.sighdr)
        return open(self.path, 'rb', buffering=0)

    def size(self):
        start, old_size = koji.find_rpm_sighdr(self.path)
        return os.path.getsize(self.path) - old_size + len(self.sighdr)

    def header_blob(self):
        """Lead, signature header and main header: all rpm needs to check
        a header signature, without the payload."""
        start, old_size = koji.find_rpm_sighdr(self.path)
        main_size = koji.rpm_hdr_size(self.path, start + old_size)
        with open(self.path, 'rb') as fo:
            lead = fo.read(start)
            fo.seek(start + old_size)
            main = fo.read(main_size)
        return lead + self.sighdr + main


class SplicedRpm(io.RawIOBase):
    """Koji's unsigned RPM with a signature header spliced in, as a raw
    stream. koji.spliced_sig_reader reads the same bytes but copies every
    chunk three times on its way (slices and a BufferedReader); this reads
    the payload straight into the caller's buffer."""

    def __init__(self, path, sighdr):
        super().__init__()
        start, old_size = koji.find_rpm_sighdr(path)
        self.fo = open(path, 'rb', buffering=0)
        try:
            lead = self.fo.read(start)
            self.fo.seek(start + old_size)
        except BaseException:
            self.fo.close()
            raise
        self.head = memoryview(lead + sighdr)  # lead and header: a few KB

    def readable(self):
        return True

    def readinto(self, buffer):
        if self.head:
            count = min(len(buffer), len(self.head))
            buffer[:count] = self.head[:count]
            self.head = self.head[count:]
            return count
        return self.fo.readinto(buffer)

    def close(self):
        self.fo.close()
        super().close()


def read_chunks(fo):
    """A stream's bytes as views of one reused buffer of CHUNK_SIZE, each
    full but the last, so each but the last base64-encodes on its own. A
    view is good only until the next one is asked for. (hashlib.file_digest
    does the like for hashing alone, from Python 3.11 on.)"""
    buffer = memoryview(bytearray(CHUNK_SIZE))
    while True:
        filled = 0
        while filled < CHUNK_SIZE:
            count = fo.readinto(buffer[filled:])
            if not count:
                break
            filled += count
        if filled:
            yield buffer[:filled]
        if filled < CHUNK_SIZE:
            return


def nvra_of(rpminfo):
    return '%(name)s-%(version)s-%(release)s.%(arch)s' % rpminfo


def locate_signed_rpm(build, rpminfo, sigkey):
    """Find the signed RPM as the hub's add_rpm_sig left it."""
    nvra = nvra_of(rpminfo)
    builddir = koji.pathinfo.build(build)
    signed = os.path.join(builddir, koji.pathinfo.signed(rpminfo, sigkey))
    if os.path.isfile(signed):
        sighdr = read_sighdr_of_rpm(signed)
        check_sighdr(sighdr, signed, sigkey)
        return SignedRpm(nvra, sigkey, signed, sighdr, spliced=False)
    unsigned = os.path.join(builddir, koji.pathinfo.rpm(rpminfo))
    sigpath = os.path.join(builddir, koji.pathinfo.sighdr(rpminfo, sigkey))
    if not os.path.isfile(unsigned):
        raise SourceGone('RPM file missing: %s' % unsigned)
    try:
        with open(sigpath, 'rb') as fo:
            sighdr = fo.read()
    except OSError as e:
        raise SourceGone('signature header unreadable: %s: %s'
                                   % (sigpath, e.strerror or e))
    check_sighdr(sighdr, sigpath, sigkey)
    return SignedRpm(nvra, sigkey, unsigned, sighdr, spliced=True)


def signed_rpm_from_file(path):
    """An RPM file signed elsewhere (the `upload` command)."""
    if not os.path.isfile(path):
        raise SourceGone('RPM file missing: %s' % path)
    sighdr = read_sighdr_of_rpm(path)
    sigkey = sighdr_key(sighdr, path)
    if not sigkey:
        if koji.RawHeader(sighdr).get(RPMTAG_OPENPGP):
            try:
                legacy_signatures(sighdr)
            except BreaksRekorRule as e:
                raise BreaksRekorRule('%s cannot be logged: %s' % (path, e))
        raise SourceGone('%s is not signed' % path)
    try:
        # src_arch: a source RPM's arch is 'src', as Koji names it.
        nvra = nvra_of(koji.get_header_fields(path, ['name', 'version', 'release', 'arch'],
                                              src_arch=True))
    except Exception as e:
        raise SourceGone('not a readable RPM: %s: %s' % (path, e))
    return SignedRpm(nvra, sigkey, path, sighdr, spliced=False)


def read_sighdr_of_rpm(path):
    try:
        return koji.rip_rpm_sighdr(path)
    except Exception as e:
        raise SourceGone('not a readable RPM: %s: %s' % (path, e))


def sighdr_key(sighdr, where):
    try:
        return koji.get_sighdr_key(sighdr)
    except Exception as e:
        raise SourceGone('corrupt signature header %s: %s' % (where, e))


def check_sighdr(sighdr, where, sigkey):
    """The signature header must parse and carry a signature by sigkey."""
    if sighdr[:3] != koji.RPM_HEADER_MAGIC:
        raise SourceGone('corrupt signature header %s: bad magic' % where)
    found = sighdr_key(sighdr, where)
    if found != sigkey:
        raise SourceGone('signature header %s is signed by %s, not %s'
                                   % (where, found or 'nobody', sigkey))


def public_key_file(settings, sigkey):
    """The armored public key for a sigkey: <public_key_dir>/<sigkey>.asc,
    else the single public_key_path of the original plugin."""
    tried = []
    if settings.public_key_dir:
        path = os.path.join(settings.public_key_dir, '%s.asc' % sigkey.lower())
        if os.path.isfile(path):
            return path
        tried.append(path)
    if settings.public_key_path:
        return settings.public_key_path
    raise SignatureSourceError('no public key for sigkey %s (%s)' % (
        sigkey, 'no %s' % tried[0] if tried else
        'set [signing] public_key_dir or public_key_path'))


def read_public_key(path):
    try:
        with open(path, 'rb') as fo:
            data = fo.read()
    except OSError as e:
        raise SignatureSourceError('cannot read public key %s: %s' % (path, e.strerror))
    if b'-----BEGIN PGP PUBLIC KEY BLOCK-----' not in data:
        raise SignatureSourceError('%s is not an ASCII-armored OpenPGP public key' % path)
    return data


def check_key_signed_rpm(signed, key, key_path):
    """Check with rpm itself that the key verifies the RPM's header
    signature, before anything is sent. Returns the RPM's main header.

    rpm verifies a header read from a file descriptor against the keyring
    of the transaction set; a memfd holding only the headers avoids both a
    temporary file and reading the payload.
    """
    import rpm  # only needed here; keeps the module importable without it

    check_rekor_signature_rules(signed, key)
    rawhdr = koji.RawHeader(signed.sighdr)
    if not (rawhdr.get(koji.RPM_SIGTAG_RSA) or rawhdr.get(koji.RPM_SIGTAG_DSA)):
        raise SourceGone('%s has no header signature by %s to check'
                                   % (signed.nvra, signed.sigkey))
    try:
        pubkey = rpm.pubkey(key)
    except (ValueError, TypeError, rpm.error) as e:
        raise SignatureSourceError('rpm cannot use public key %s: %s' % (key_path, e))
    keyring = rpm.keyring()
    keyring.addKey(pubkey)
    ts = rpm.TransactionSet()
    ts.setKeyring(keyring)
    fd = os.memfd_create('rekor_log:%s' % signed.nvra)
    try:
        os.write(fd, signed.header_blob())
        os.lseek(fd, 0, os.SEEK_SET)
        with rpm_messages_captured(rpm):
            hdr = ts.hdrFromFdno(fd)
    except rpm.error as e:
        if 'public key not available' in str(e):
            raise SignatureSourceError('public key %s does not verify %s signed by %s'
                                       % (key_path, signed.nvra, signed.sigkey))
        raise SignatureSourceError('signature of %s by %s does not verify with %s: %s'
                                   % (signed.nvra, signed.sigkey, key_path, e))
    except koji.GenericError as e:
        raise SourceGone('not a readable RPM: %s: %s' % (signed.path, e))
    finally:
        os.close(fd)
        ts.closeDB()
    return hdr


@contextlib.contextmanager
def rpm_messages_captured(rpm):
    """Keep rpm's own warnings ("warning: /memfd:... (deleted): ... NOKEY")
    off the terminal and the hub's log: the caller reports the one cause.
    rpm's Python binding cannot give its log back to stderr once redirected
    (setLogFile(None) raises; each file leaks a FILE), so its level is raised
    for the call and set back to rpm's default; callers hold RPM_LOCK."""
    rpm.setVerbosity(rpm.RPMLOG_ERR)
    try:
        yield
    finally:
        rpm.setVerbosity(rpm.RPMLOG_NOTICE)  # rpmlog.c's default mask


def check_rekor_signature_rules(signed, key):
    """Rekor 1.5.4's two signature rules, checked before anything is sent:
    it reads only the legacy signature tags (not rpm 6's RPMTAG_OPENPGP),
    and every signature there must be by the submitted key, where rpm is
    content with one. When none is by the key, the key is what is wrong,
    which rpm's own check then reports."""
    try:
        found = legacy_signatures(signed.sighdr)
    except BreaksRekorRule as e:
        raise BreaksRekorRule('%s cannot be logged: %s' % (signed.nvra, e))
    ours = openpgp_fingerprints(key)
    strangers = [(what, issuer) for what, issuer in found if not signed_by(issuer, ours)]
    if strangers and len(strangers) < len(found):
        raise BreaksRekorRule('%s cannot be logged: %s'
                              % (signed.nvra, not_by_key_message(*strangers[0])))



# The signature tags Rekor 1.5.4 checks (go-rpmutils: the header-only RSA
# and DSA tags, then the header+payload PGP and GPG tags), in its order.
LEGACY_SIGNATURE_TAGS = ((koji.RPM_SIGTAG_RSA, 'RSA header signature'),
                         (koji.RPM_SIGTAG_DSA, 'DSA header signature'),
                         (koji.RPM_SIGTAG_PGP, 'header+payload PGP signature'),
                         (koji.RPM_SIGTAG_GPG, 'header+payload GPG signature'))
RPMTAG_OPENPGP = 278  # rpm 6's signature tag, which Rekor does not read


def signature_issuer(blob):
    """(key ID, fingerprint) an OpenPGP signature packet names as its issuer
    (16 and 40 upper-case hex digits, either may be None), or None when the
    blob is not a signature packet. Version 3 (RFC 4880, 5.2.2) carries the
    key ID in place; version 4 (5.2.3) in its issuer (16) or issuer
    fingerprint (33) subpacket."""
    packets = openpgp_packets(blob)
    if len(packets) != 1 or packets[0][0] != PGP_TAG_SIGNATURE or not packets[0][1]:
        return None
    sig = packets[0][1]
    if sig[0] == 3 and len(sig) >= 15:
        return sig[7:15].hex().upper(), None
    if sig[0] != 4 or len(sig) < 6:
        return None
    key_id = fingerprint = None
    pos, areas = 4, []
    for _ in range(2):
        size = int.from_bytes(sig[pos:pos + 2], 'big')
        areas.append(sig[pos + 2:pos + 2 + size])
        pos += 2 + size
    for area in areas:
        at = 0
        while at < len(area):
            first = area[at]
            if first < 192:
                size, at = first, at + 1
            elif first < 255 and at + 1 < len(area):
                size, at = ((first - 192) << 8) + area[at + 1] + 192, at + 2
            else:
                size, at = int.from_bytes(area[at + 1:at + 5], 'big'), at + 5
            if size == 0 or at + size > len(area):
                break
            kind, value = area[at] & 0x7f, area[at + 1:at + size]
            if kind == 16 and len(value) == 8:
                key_id = value.hex().upper()
            elif kind == 33 and len(value) == 21 and value[0] == 4:
                fingerprint = value[1:].hex().upper()
            at += size
    return key_id, fingerprint


def legacy_signatures(sighdr):
    """[(what, (key ID, fingerprint))] of the signatures Rekor reads, in its
    order; BreaksRekorRule when one of them is not a signature it can read."""
    try:
        rawhdr = koji.RawHeader(sighdr)
    except Exception as e:
        raise SourceGone('corrupt signature header: %s' % e)
    found = []
    for tag, what in LEGACY_SIGNATURE_TAGS:
        blob = rawhdr.get(tag)
        if blob:
            issuer = signature_issuer(blob)
            if issuer is None:
                raise BreaksRekorRule('its %s is not a signature Rekor can read (no supported '
                                      'PGP signature packet found)' % what)
            found.append((what, issuer))
    if not found and rawhdr.get(RPMTAG_OPENPGP):
        raise BreaksRekorRule(
            'its only signature is in RPMTAG_OPENPGP (rpm 6), which Rekor does not read (no '
            'supported PGP signature found in RPM): sign it with rpmsign --rpmv4 too')
    if not found:
        raise BreaksRekorRule('it has no signature (no supported PGP signature found in RPM)')
    return found


def signed_by(issuer, fingerprints):
    """Whether a signature's issuer is one of these keys, as go-rpmutils
    looks it up: by key ID, or by fingerprint when that is all it names."""
    key_id, fingerprint = issuer
    if key_id:
        return any(fp.endswith(key_id) for fp in fingerprints)
    return fingerprint in fingerprints


def not_by_key_message(what, issuer):
    """Rekor 1.5.4's refusal of a signature by another key, with ours."""
    key_id, fingerprint = issuer
    rekor = ('keyid %s not found' % key_id.lower().lstrip('0').rjust(8, '0') if key_id
             else 'key with fingerprint %s not found' % fingerprint.lower())
    return ('its %s is by key %s, not by the key sent, and Rekor checks every signature with '
            'that key alone (%s): remove that signature or log the RPM with its key'
            % (what, key_id or fingerprint, rekor))


# ---------------------------------------------------------------------------
# The entry
# ---------------------------------------------------------------------------

class EntryBody:
    """The JSON of a proposed rpm entry, produced chunk by chunk.

    requests sends an iterable with a length as a Content-Length body, so
    the RPM is read, hashed and base64-encoded a chunk at a time: memory
    stays flat whatever the RPM's size. That work runs in a BodyEncoder
    thread a few chunks ahead of the socket, so it overlaps with sending
    (hashlib and socket writes release the GIL). Rekor's schema is fixed
    and small, so the JSON around the two base64 strings is written by hand.

    Each iteration (a retried request iterates again) reads the RPM anew;
    close() stops the reader of an iteration left unfinished.
    """

    def __init__(self, signed, public_key, stall_timeout=30.0):
        self.signed = signed
        self.rpm_size = signed.size()
        self.stall_timeout = stall_timeout
        self.prefix = b'{"kind":"rpm","apiVersion":"0.0.1","spec":{"package":{"content":"'
        self.suffix = (b'"},"publicKey":{"content":"' + base64.b64encode(public_key) + b'"}}}')
        self.sha256 = None
        self.encoder = None

    def __len__(self):
        return len(self.prefix) + 4 * ((self.rpm_size + 2) // 3) + len(self.suffix)

    def __iter__(self):
        self.close()
        encoder = self.encoder = BodyEncoder(self.signed, self.rpm_size, self.stall_timeout)
        try:
            yield self.prefix
            yield from encoder.chunks()
        finally:
            encoder.stop()
        self.sha256 = encoder.sha256
        yield self.suffix

    def close(self):
        if self.encoder is not None:
            self.encoder.stop()


class BodyEncoder:
    """Reads, hashes and base64-encodes an RPM in a thread of its own into
    a queue of at most QUEUE_CHUNKS encoded chunks, which chunks() yields.

    The thread ends when the RPM is read, when stop() is called, or when no
    one has taken a chunk for stall_timeout (a request abandoned without
    stop()); a read error or an RPM whose size changed is raised by chunks().
    """

    DONE = object()

    def __init__(self, signed, rpm_size, stall_timeout):
        self.signed = signed
        self.rpm_size = rpm_size
        self.stall_timeout = stall_timeout
        self.queue = queue.Queue(QUEUE_CHUNKS)
        self.stopped = threading.Event()
        self.sha256 = None
        self.thread = threading.Thread(target=self.run, daemon=True,
                                       name='rekor_log body of %s' % signed.nvra)
        self.thread.start()

    def run(self):
        try:
            self.encode()
        except SignatureSourceError as e:
            self.put(e)
        except FileNotFoundError:
            self.put(SourceGone('RPM file missing: %s' % self.signed.path))
        except OSError as e:
            self.put(SignatureSourceError('cannot read %s: %s' % (
                self.signed.path, e.strerror or e)))
        except Exception as e:  # koji's header parsing: the RPM is corrupt
            self.put(SourceGone('not a readable RPM: %s: %s' % (self.signed.path, e)))

    def encode(self):
        digest = hashlib.sha256()
        read = 0
        with self.signed.open() as fo:
            for chunk in read_chunks(fo):
                read += len(chunk)
                if read > self.rpm_size:
                    break
                digest.update(chunk)
                if not self.put(binascii.b2a_base64(chunk, newline=False)):
                    return
        if read != self.rpm_size:
            # The file changed under us: the Content-Length already sent is
            # wrong, so end the request before its end rather than send a
            # corrupt entry.
            raise SourceGone('%s changed while it was being sent (%s%d bytes, expected %d)' % (
                self.signed.nvra, 'over ' if read > self.rpm_size else '', read, self.rpm_size))
        self.sha256 = digest.hexdigest()
        self.put(self.DONE)

    def put(self, item):
        """Queue item; False once the consumer has stopped or stalled."""
        try:
            self.queue.put(item, timeout=self.stall_timeout)
        except queue.Full:
            LOG.debug('rekor_log: nothing took the body of %s for %gs, reader stops',
                      self.signed.nvra, self.stall_timeout)
            return False
        return not self.stopped.is_set()

    def chunks(self):
        while True:
            try:
                item = self.queue.get(timeout=self.stall_timeout)
            except queue.Empty:
                raise SignatureSourceError('reading %s stalled for %gs'
                                           % (self.signed.path, self.stall_timeout))
            if item is self.DONE:
                return
            if isinstance(item, Exception):
                raise item
            yield item

    def stop(self):
        """End the thread: once stopped is set it puts at most one more item,
        which the emptied queue has room for. The wait is for the read in
        progress; a file system that hangs it keeps the (daemon) thread until
        the read returns, not the caller."""
        self.stopped.set()
        with contextlib.suppress(queue.Empty):
            while True:
                self.queue.get_nowait()
        self.thread.join(min(self.stall_timeout, READER_STOP_SECONDS))


# ---------------------------------------------------------------------------
# The Rekor client
#
# Every request is bounded in total, whatever the server does: requests and
# urllib3 bound each socket operation only, so a server dripping a byte at a
# time, or reading the upload a byte at a time, could hold a request for
# ever. A watchdog shuts the request's socket down at its deadline. Every
# answer is read up to a size cap.
# ---------------------------------------------------------------------------

# Rekor's JSON answers are a few KiB (an rpm entry's body holds hashes, the
# header's NEVRA and the key, never the RPM); a log key is well under 64 KiB.
MAX_JSON_ANSWER = 4 * 1024 * 1024
MAX_KEY_ANSWER = 64 * 1024
# Statuses that mean "the log cannot take it now": retried, and the record
# waits for the log.
TRANSIENT_STATUSES = (408, 425, 429)
# Rekor's lastSizeGreaterThanKnown (pkg/api/error.go), after its number.
LAGGING_INSTANCE = 'was greater than what is currently observable'


def display_url(url):
    """The URL without credentials: for receipts, log lines and file names."""
    parts = urllib.parse.urlsplit(url)
    if '@' not in parts.netloc:
        return url
    return urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rsplit('@', 1)[1]))


def same_origin(url, other):
    a, b = urllib.parse.urlsplit(url), urllib.parse.urlsplit(other)
    return (a.scheme, a.hostname, a.port) == (b.scheme, b.hostname, b.port)


def seconds(value):
    return '%g s' % round(value, 1)


class Watchdog:
    """Cuts the requests of one client at their deadline by shutting down
    the sockets of the connections the client's session opened."""

    def __init__(self):
        import weakref
        self.connections = weakref.WeakSet()
        self.lock = threading.Lock()
        self.cut = False

    def add(self, connection):
        with self.lock:
            self.connections.add(connection)

    @contextlib.contextmanager
    def deadline(self, remaining):
        self.cut = False
        timer = threading.Timer(max(remaining, 0), self.cut_now)
        timer.daemon = True
        timer.start()
        try:
            yield
        finally:
            timer.cancel()

    def cut_now(self):
        self.cut = True
        with self.lock:
            connections = list(self.connections)
        for connection in connections:
            sock = getattr(connection, 'sock', None)
            if sock is not None:
                with contextlib.suppress(OSError):
                    # socket.socket's own shutdown: an SSLSocket's would also
                    # tear down its TLS state under the reading thread.
                    socket.socket.shutdown(sock, socket.SHUT_RDWR)


def watched_adapter(requests, watchdog):
    """A requests adapter whose connections (direct or through a proxy)
    register with the watchdog when they connect."""
    from urllib3 import connection, connectionpool

    def tracked(base):
        def connect(self):
            base.connect(self)
            watchdog.add(self)
        return type('Watched' + base.__name__, (base,), {'connect': connect})

    pools = {
        'http': type('WatchedHTTPConnectionPool', (connectionpool.HTTPConnectionPool,),
                     {'ConnectionCls': tracked(connection.HTTPConnection)}),
        'https': type('WatchedHTTPSConnectionPool', (connectionpool.HTTPSConnectionPool,),
                      {'ConnectionCls': tracked(connection.HTTPSConnection)}),
    }

    class Adapter(requests.adapters.HTTPAdapter):
        def init_poolmanager(self, *args, **kws):
            super().init_poolmanager(*args, **kws)
            self.poolmanager.pool_classes_by_scheme = pools

        def proxy_manager_for(self, proxy, **kws):
            manager = super().proxy_manager_for(proxy, **kws)
            if hasattr(manager, 'pool_classes_by_scheme'):
                manager.pool_classes_by_scheme = pools
            return manager

    return Adapter(max_retries=0)


class DeadlinePassed(Exception):
    """The watchdog cut a request at its deadline."""


def is_timeout(exc):
    from urllib3.exceptions import NewConnectionError, TimeoutError as Urllib3Timeout
    import requests
    inner = innermost(exc)
    return isinstance(inner, TimeoutError) or (
        isinstance(exc, requests.Timeout) or isinstance(inner, Urllib3Timeout)) and not (
        isinstance(inner, NewConnectionError))


def urllib3_error():
    from urllib3.exceptions import HTTPError
    return HTTPError


@dataclass
class Answer:
    """A status, headers and a body read whole up to a cap."""
    status: int
    reason: str
    headers: dict
    content: bytes
    url: str

    def json(self):
        try:
            return json.loads(self.content)
        except (ValueError, RecursionError):
            raise RekorUnavailable('malformed reply from Rekor (HTTP %d, not JSON)' % self.status)


class RekorClient:
    """Rekor v1's REST API: one requests session (use one client per
    thread), bounded retries, every request bounded in time and size.

    deadline: a time.monotonic() by which everything this client does must
    end (the hub's budget, enforce's bound); spent names it in the cause.
    """

    def __init__(self, settings, deadline=None, spent=None):
        import requests  # imported on first use: the hub pays only when it logs
        self.requests = requests
        self.settings = settings
        self.url = settings.url
        self.shown_url = display_url(settings.url)
        self.deadline = deadline
        self.spent = spent
        self.watchdog = Watchdog()
        self.session = requests.Session()
        adapter = watched_adapter(requests, self.watchdog)
        self.session.mount('https://', adapter)
        self.session.mount('http://', adapter)
        # Given with every request: a session's verify loses to
        # REQUESTS_CA_BUNDLE, a request's does not. Proxies still come from
        # the environment.
        self.verify = settings.ca_bundle or True
        self.session.headers['User-Agent'] = 'koji-rekor/%s' % __version__
        # Decompressed answers could outgrow the size cap on the wire.
        self.session.headers['Accept-Encoding'] = 'identity'

    def close(self):
        self.session.close()

    def remaining(self):
        return None if self.deadline is None else self.deadline - time.monotonic()

    def out_of_time(self):
        return RekorUnavailable('Rekor at %s: %s' % (self.shown_url, self.spent or 'out of time'))

    def with_retries(self, what, attempt):
        """Run attempt(); retry transient failures with doubling delays,
        within (retries + 1) attempts and the client's deadline."""
        settings = self.settings
        delay = settings.backoff
        attempts = 0
        while True:
            attempts += 1
            try:
                return attempt()
            except RekorUnavailable as e:
                last = e
            remaining = self.remaining()
            if last.at_once or attempts > settings.retries or (
                    remaining is not None and remaining < delay + 0.1):
                break
            LOG.debug('rekor_log: %s failed (%s), retrying in %.1fs', what, last, delay)
            time.sleep(delay)
            delay *= 2
        if attempts == 1:
            raise last
        raise type(last)('%s (after %d attempts)' % (last, attempts))

    def request(self, method, path_or_url, cap=MAX_JSON_ANSWER, sent=0, reader=None, **kws):
        """One request, read whole (up to cap bytes) within its deadline:
        timeout, plus the time to send `sent` bytes at min_rate. reader:
        reads a 200 answer as a stream instead (its content is what it
        returns)."""
        url = urllib.parse.urljoin(self.url + '/', path_or_url)
        settings = self.settings
        allowed = settings.timeout + sent / settings.min_rate
        budget = self.remaining()
        by_budget = budget is not None and budget < allowed
        limit = budget if by_budget else allowed
        if limit <= 0:
            raise self.out_of_time()
        # Connecting and each send may stall for timeout; the answer may take
        # the whole deadline (the log checks the whole RPM before answering).
        wait = min(settings.timeout, limit)
        try:
            with self.watchdog.deadline(limit):
                try:
                    response = self.session.request(
                        method, url, timeout=(wait, limit), allow_redirects=False, stream=True,
                        verify=self.verify, **kws)
                    with contextlib.closing(response):
                        content = (reader(self.chunks(response)) if reader is not None
                                   and response.status_code == 200
                                   else self.read_capped(response, cap))
                        return Answer(response.status_code, response.reason or '',
                                      response.headers, content, url)
                except Exception:
                    if self.watchdog.cut:
                        raise DeadlinePassed
                    raise
        except DeadlinePassed:
            if by_budget:
                raise self.out_of_time()
            raise RekorUnavailable('Rekor at %s timed out after %s' % (
                self.shown_url, seconds(limit)))
        except (self.requests.RequestException, urllib3_error(), OSError) as e:
            if is_timeout(e):
                raise RekorUnavailable('Rekor at %s timed out after %s' % (
                    self.shown_url, seconds(limit if isinstance(e, self.requests.ReadTimeout)
                                         else wait)))
            raise RekorUnavailable('cannot reach Rekor at %s: %s' % (
                self.shown_url, short_reason(e)))

    @staticmethod
    def chunks(response):
        while True:
            chunk = response.raw.read(65536, decode_content=True)
            if not chunk:
                return
            yield chunk

    def read_capped(self, response, cap):
        chunks, size = [], 0
        while True:
            chunk = response.raw.read(65536, decode_content=True)
            if not chunk:
                return b''.join(chunks)
            size += len(chunk)
            if size > cap:
                raise RekorUnavailable('Rekor at %s sent an answer larger than %d KiB' % (
                    self.shown_url, cap // 1024), at_once=True)
            chunks.append(chunk)

    def create_entry(self, body):
        """POST a proposed entry; returns (entry_id, entry, created).

        A 409 names the entry already logged; it is fetched in the same
        attempt, so one set of retries covers both requests."""
        def attempt():
            answer = self.request('POST', ENTRIES_PATH, data=body, sent=len(body), headers={
                'Content-Type': 'application/json', 'Accept': 'application/json'})
            if answer.status == 201:
                return single_entry(answer) + (True,)
            if answer.status == 409:
                return self.fetch_entry(self.conflict_location(answer), queued=True) + (False,)
            raise_for_status(answer, body)
        return self.with_retries('upload', attempt)

    def conflict_location(self, answer):
        """Where a 409 says the entry is: only an entry of this log."""
        location = answer.headers.get('Location')
        if not location:
            raise RekorUnavailable('Rekor answered 409 without a Location header')
        url = urllib.parse.urljoin(answer.url, location)
        path = urllib.parse.urlsplit(url).path
        base = urllib.parse.urlsplit(self.url).path.rstrip('/')
        if not same_origin(url, self.url) or not path.startswith(base + ENTRIES_PATH + '/'):
            raise RekorMisconfigured('Rekor answered 409 with a Location outside its entries: %s'
                                     % text_excerpt(display_url(location)))
        return url

    def fetch_entry(self, location, queued=False):
        """GET an entry; queued: a 409 named it, so a 404 means that it is
        still in Trillian's queue, which deduplicates before integrating
        (pkg/trillianclient AddLeaf in sigstore/rekor)."""
        answer = self.request('GET', location, headers={'Accept': 'application/json'})
        if answer.status == 200:
            return single_entry(answer)
        if queued and answer.status == 404:
            raise LogBehind('Rekor has the entry queued but not yet in the log (409, then 404 '
                            'for %s)' % urllib.parse.urlsplit(answer.url).path)
        raise_for_status(answer)

    def get_entry(self, location):
        """GET one entry by its URL path (as in a Location header)."""
        return self.with_retries('fetch of %s' % location, lambda: self.fetch_entry(location))

    def log_public_key(self):
        def attempt():
            answer = self.request('GET', PUBLIC_KEY_PATH, cap=MAX_KEY_ANSWER)
            if answer.status == 200:
                return answer.content
            raise_for_status(answer)
        return self.with_retries('fetch of the log key', attempt)

    def json_answer(self, what, method, path, valid, **kws):
        """A 200 answer's JSON, retried like any request, or
        RekorUnavailable when it is not what valid() accepts."""
        def attempt():
            answer = self.request(method, path, headers={'Accept': 'application/json'}, **kws)
            if answer.status == 200:
                data = answer.json()
                if not valid(data):
                    raise RekorUnavailable('malformed %s from Rekor' % what)
                return data
            raise_for_status(answer)
        return self.with_retries(what, attempt)

    def consistency_proof(self, first_size, last_size, tree_id):
        return self.json_answer('consistency proof', 'GET', PROOF_PATH, is_object, params={
            'firstSize': first_size, 'lastSize': last_size, 'treeID': tree_id})

    def log_info(self):
        """The active tree's signed head, and those of inactive shards."""
        return self.json_answer('log info', 'GET', LOG_INFO_PATH, is_object)

    def search_index(self, query):
        """The entry IDs (or bare UUIDs) Rekor's index has for a query.
        Rekor puts no limit on this answer (about 83 bytes an entry: 4 MiB
        at 50,000 entries of one key), so it is read as a stream, an ID at
        a time (read_id_array), never held whole: memory grows with the
        IDs kept, not with the answer."""
        def attempt():
            answer = self.request('POST', INDEX_PATH, headers={'Accept': 'application/json'},
                                  reader=read_id_array, json=query)
            if answer.status == 200:
                return answer.content
            raise_for_status(answer)
        return self.with_retries('index search answer', attempt)

    def retrieve_entries(self, entry_ids):
        """[(entryID, entry)] for at most RETRIEVE_BATCH IDs; Rekor leaves
        out the ones it does not have."""
        found = self.json_answer(
            'entries', 'POST', RETRIEVE_PATH,
            lambda found: isinstance(found, list) and all(
                is_object(e) and all(is_object(v) for v in e.values()) for e in found),
            json={'entryUUIDs': entry_ids})
        return [item for entries in found for item in entries.items()]


def counted(number, one, many=None):
    """'1 signature', '2 signatures': a count with its noun agreeing."""
    return '%d %s' % (number, one if number == 1 else many or one + 's')


def is_object(value):
    return isinstance(value, dict)


# An entry ID is 80 hex digits, a UUID 64: an array item longer than this is
# no ID, and is refused before it is read whole.
MAX_ID_CHARS = 128
ID_ARRAY_TOKEN = re.compile(rb'[ \t\r\n]*(?:([\[\],])|"([0-9a-fA-F]{0,%d})")' % MAX_ID_CHARS)


def read_id_array(chunks):
    """The strings of a JSON array of hex strings (the index search's
    answer), parsed as the chunks arrive, keeping only an unfinished token
    between chunks. Hand-written: the standard json module reads only
    whole documents, and this array is flat and its items hex, so a token
    pattern and four states read it in bounded memory without a
    streaming-JSON dependency on the hub."""
    ids, state, rest = [], 'start', b''   # start, item, after, end
    for chunk in chunks:
        data, pos = rest + chunk, 0
        while True:
            match = ID_ARRAY_TOKEN.match(data, pos)
            if match is None:
                break
            mark, item = match.groups()
            if item is not None and state == 'item':
                ids.append(item.decode('ascii'))
                state = 'after'
            elif (state, mark) in (('start', b'['), ('after', b',')):
                state = 'item'
            elif mark == b']' and (state == 'after' or (state == 'item' and not ids)):
                state = 'end'
            else:
                raise RekorUnavailable('malformed index search answer from Rekor')
            pos = match.end()
        rest = data[pos:]
        if len(rest) > MAX_ID_CHARS + 64 or (state == 'end' and rest.strip()):
            raise RekorUnavailable('malformed index search answer from Rekor: an item that is '
                                   'not an entry ID')
    if state != 'end' or rest.strip():
        raise RekorUnavailable('malformed index search answer from Rekor: it ends early')
    return ids


def short_reason(exc):
    """A failed request's cause in a few words (connection refused, cannot
    resolve host, TLS: certificate verify failed: ...), found by walking the
    chain of errors requests and urllib3 wrap around the socket's."""
    chain, todo = [], [exc]
    while todo and len(chain) < 20:
        error = todo.pop(0)
        if not isinstance(error, BaseException) or any(error is e for e in chain):
            continue
        chain.append(error)
        todo += [error.__cause__, error.__context__, getattr(error, 'reason', None)]
        todo += list(error.args)
    for error in chain:
        if isinstance(error, ssl.SSLCertVerificationError):
            detail = getattr(error, 'verify_message', None)
            return 'TLS: certificate verify failed' + (': %s' % detail if detail else '')
    for error in chain:
        if isinstance(error, ssl.SSLError):
            reason = getattr(error, 'reason', None) or type(error).__name__
            return 'TLS: %s' % reason.lower().replace('_', ' ')
        if isinstance(error, socket.gaierror):
            return 'cannot resolve host'
    # The socket's own error, beneath what requests and urllib3 wrap it in.
    for error in chain:
        if isinstance(error, OSError) and not type(error).__module__.startswith(
                ('requests', 'urllib3')):
            text = error.strerror[:1].lower() + error.strerror[1:] if error.strerror \
                else str(error)
            return ' '.join(text.split())
    text = ' '.join(str(chain[-1]).split())
    return text if len(text) <= 120 else text[:117] + '...'


def innermost(exc):
    """The error at the bottom of a chain of wrapped errors."""
    seen = set()
    while exc.__context__ is not None and id(exc) not in seen:
        seen.add(id(exc))
        exc = exc.__context__
    return exc


def utc(when):
    """A Unix time as UTC text, or what it is when no calendar has it."""
    try:
        return time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(when))
    except (OverflowError, ValueError, OSError, TypeError):
        return 'time %r (out of range)' % (when,)


def escape(value):
    """Untrusted text (names from the topdir, the log's answers, records,
    receipts) as it may reach a terminal, a log line or --json text: every
    character that is not printable (control characters, so ANSI escape
    sequences, line breaks; also backslashes, so that an escape cannot be
    forged) is shown as a Python escape."""
    text = str(value)
    if text.isprintable() and '\\' not in text:
        return text
    return ''.join(c if c.isprintable() and c != '\\' else c.encode('unicode_escape').decode()
                   for c in text)


def text_excerpt(value, limit=200):
    """A server's text on one short line."""
    text = ' '.join(''.join(c if c.isprintable() else ' ' for c in str(value)).split())
    return text if len(text) <= limit else text[:limit] + '...'


def single_entry(answer):
    """A Rekor answer is {entryID: LogEntry} with exactly one entry."""
    data = answer.json()
    if not isinstance(data, dict) or len(data) != 1:
        raise RekorUnavailable('malformed reply from Rekor: not a single log entry')
    (entry_id, entry), = data.items()
    if not isinstance(entry, dict):
        raise RekorUnavailable('malformed reply from Rekor: entry is not an object')
    return entry_id, entry


def rekor_message(answer):
    """Rekor's error message, or the status's reason when it sent none."""
    try:
        message = json.loads(answer.content).get('message')
    except (ValueError, AttributeError, RecursionError):
        message = None
    if not isinstance(message, str):
        message = answer.reason
    return text_excerpt(message or '')


def raise_for_status(answer, body=None):
    """Turn a Rekor error answer into the matching error: the log's
    trouble (kept, retried), a configuration problem (kept), or a refusal
    of this entry (set aside)."""
    status, message = answer.status, rekor_message(answer)
    if status == 400 and LAGGING_INSTANCE in message:
        # Several instances serve one log; this one has not seen the tree
        # head another signed (GetLogProofHandler, sigstore/rekor
        # pkg/api/tlog.go): it will, so this is no refusal.
        raise LogBehind('a Rekor instance is behind the log: %s' % message)
    if status == 501:
        raise LogClosed('Rekor answered 501 for %s: %s; this log no longer takes entries '
                        '(point [rekor] url at one that does)'
                        % (urllib.parse.urlsplit(answer.url).path, message))
    if status >= 500 or status in TRANSIENT_STATUSES:
        raise RekorUnavailable('Rekor answered %d: %s' % (status, message))
    if 300 <= status < 400 or status in (401, 403, 404):
        where = urllib.parse.urlsplit(answer.url).path
        raise RekorMisconfigured('Rekor answered %d for %s: %s (check [rekor] url and '
                                 'credentials)' % (status, where, message))
    if status == 413:
        size = ' (request of %d bytes)' % len(body) if body is not None else ''
        raise RekorRejected('Rekor refused the upload as too large%s: %s' % (size, message))
    if any(text in message for text in NO_USABLE_SIGNATURE):
        raise RekorRejected(
            'Rekor found no signature it can check (%s): this Rekor needs a header+payload '
            'signature (rpmsign --rpmv3) or must be version 1.5.4 or newer for header-only '
            'signatures' % message)
    if status < 400:
        raise RekorUnavailable('Rekor answered %d, which is not an answer of its API'
                               % status)
    raise RekorRejected('Rekor answered %d: %s' % (status, message))


# ---------------------------------------------------------------------------
# Verification
#
# Everything the log returns is checked before a receipt is written:
# the entry UUID, the Merkle inclusion proof (RFC 9162, section 2.1.3.2),
# the checkpoint (a signed note, as Rekor and the Go sumdb write it), the
# signed entry timestamp, the log ID, and the body itself.
# ---------------------------------------------------------------------------

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


PEM_PUBLIC_KEY = re.compile(rb'-----BEGIN PUBLIC KEY-----.*?-----END PUBLIC KEY-----', re.S)


class LogKeys(tuple):
    """Several keys of one log: a private Rekor may sign each shard (tree)
    with its own key (its sharding configuration's pemPubKey). Each entry
    is verified with the key its logID names, each tree head with the key
    its signature's key hint names (pick_log_key)."""


class UnknownLogKey(VerificationError):
    """Signed by a key that is none of those configured for the log."""


def load_log_key(pem):
    """The log key of a PEM file, or LogKeys when it holds several."""
    from cryptography.hazmat.primitives.serialization import load_pem_public_key
    blocks = PEM_PUBLIC_KEY.findall(pem) if isinstance(pem, bytes) else []
    try:
        if len(blocks) > 1:
            return LogKeys(load_pem_public_key(block) for block in blocks)
        return load_pem_public_key(pem)
    except (ValueError, TypeError):
        # One cause in the user's terms, not cryptography's message (which
        # cites its FAQ and a byte offset).
        if b'-----BEGIN PGP ' in pem:
            raise VerificationError("an OpenPGP key, not a log key: the log's PEM public key "
                                    'is wanted (koji-rekor log-key prints it)')
        if b'PRIVATE KEY-----' in pem:
            raise VerificationError("a private key: the log's PEM public key is wanted")
        raise VerificationError('not a PEM public key (-----BEGIN PUBLIC KEY-----)')


def pick_log_key(key, log_id=None, note=None):
    """The key of a LogKeys that signed this: the one whose logID (sha256 of
    its DER) is log_id, or whose key hint a signature of the checkpoint
    note carries. A single key is returned as it is: its checks say more."""
    if not isinstance(key, LogKeys):
        return key
    if log_id is not None:
        for one in key:
            if log_key_id(one).hex() == str(log_id).lower():
                return one
        raise UnknownLogKey('logID %s is none of the %d configured log keys' % (log_id, len(key)))
    try:
        hints = {hint for _, hint, _ in parse_checkpoint(note)[1]}
    except VerificationError:
        hints = set()
    for one in key:
        if log_key_id(one)[:4] in hints:
            return one
    raise UnknownLogKey('checkpoint: signed by none of the %d configured log keys' % len(key))


def read_log_key(path):
    with open(path, 'rb') as fo:
        return load_log_key(fo.read())


def log_key_id(key):
    """SHA-256 of the DER SubjectPublicKeyInfo: Rekor's logID, and (first
    4 bytes) the key hint of its checkpoint signatures."""
    from cryptography.hazmat.primitives import serialization
    if isinstance(key, LogKeys):
        # Several keys (one per shard): the name of the set, for the
        # monitor's state file; each tree head is kept under its own key's.
        return hashlib.sha256(b''.join(sorted(log_key_id(one) for one in key))).digest()
    der = key.public_bytes(serialization.Encoding.DER,
                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).digest()


def signature_is_valid(key, signature, data):
    """ECDSA keys sign SHA-256 digests, RSA keys PKCS #1 v1.5 over SHA-256
    (sigstore's signer for RSA, which private Rekors may use); Ed25519
    keys sign the data."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
        elif isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
        elif isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, data)
        else:
            raise VerificationError('unsupported log key type %s' % type(key).__name__)
    except InvalidSignature:
        return False
    return True


@dataclass
class Checkpoint:
    origin: str
    size: int
    root_hash: bytes
    other: list = field(default_factory=list)
    text: str = ''   # what the signatures sign
    note: str = ''   # the whole signed note, signatures included


def parse_checkpoint(note):
    """Split a signed note into its text and signature lines, and the text
    into origin, size, root hash and any further lines (the checkpoint
    format of Rekor and transparency-dev)."""
    if not isinstance(note, str):
        raise VerificationError('checkpoint: not text')
    text, sep, sigs = note.partition('\n\n')
    if not sep:
        raise VerificationError('checkpoint: no signature block')
    text += '\n'
    lines = text.split('\n')[:-1]
    if len(lines) < 3:
        raise VerificationError('checkpoint: fewer than three lines')
    try:
        size = int(lines[1])
        root = base64.b64decode(lines[2], validate=True)
    except ValueError:
        raise VerificationError('checkpoint: malformed size or root hash')
    signatures = []
    for line in sigs.split('\n'):
        if not line:
            continue
        parts = line.split(' ')
        if len(parts) != 3 or parts[0] != '\u2014':
            raise VerificationError('checkpoint: malformed signature line')
        try:
            raw = base64.b64decode(parts[2], validate=True)
        except ValueError:
            raise VerificationError('checkpoint: malformed signature')
        signatures.append((parts[1], raw[:4], raw[4:]))
    return Checkpoint(lines[0], size, root, lines[3:], text, note), signatures


def verify_checkpoint(note, key, origin_host, tree_id):
    """The checkpoint is signed by the log key and names the expected log."""
    key = pick_log_key(key, note=note)
    checkpoint, signatures = parse_checkpoint(note)
    hint = log_key_id(key)[:4]
    if not any(h == hint and signature_is_valid(key, sig, checkpoint.text.encode())
               for _, h, sig in signatures):
        # No signature even names the key: another key signed it (a shard
        # of its own, or a forgery; the monitor tells which by the tree).
        error = VerificationError if any(h == hint for _, h, _ in signatures) else UnknownLogKey
        raise error('checkpoint: no valid signature by the log key')
    host, sep, tree = checkpoint.origin.rpartition(' - ')
    if not sep or tree != str(tree_id):
        raise VerificationError('checkpoint: origin %r is not tree %s'
                                % (checkpoint.origin, tree_id))
    allowed = {origin_host} if isinstance(origin_host, str) else set(origin_host or ())
    if origin_host is not None and host not in allowed:
        raise VerificationError('checkpoint: origin %r is not log %s'
                                % (checkpoint.origin, ' or '.join(sorted(allowed))))
    return checkpoint


def canonical_json(value):
    """RFC 8785 for the SET payload: its values are only integers and ASCII
    strings, for which sorted keys and no whitespace are the whole rule."""
    return json.dumps(value, sort_keys=True, separators=(',', ':'), ensure_ascii=True).encode()


def verify_set(entry, key):
    """The signed entry timestamp covers body, integratedTime, logID and the
    global logIndex."""
    payload = canonical_json({k: entry[k] for k in
                              ('body', 'integratedTime', 'logID', 'logIndex')})
    try:
        signature = base64.b64decode(entry['verification']['signedEntryTimestamp'], validate=True)
    except (ValueError, TypeError):
        raise VerificationError('signed entry timestamp: not base64')
    if not signature_is_valid(key, signature, payload):
        raise VerificationError('signed entry timestamp: does not verify with the log key')


def split_entry_id(entry_id):
    """An entryID is the 16-hex tree ID then the 64-hex UUID; a bare UUID
    has no tree ID."""
    entry_id = entry_id.lower()
    if len(entry_id) == 80:
        tree, uuid = entry_id[:16], entry_id[16:]
    elif len(entry_id) == 64:
        tree, uuid = None, entry_id
    else:
        raise VerificationError('entry ID %r has the wrong length' % entry_id)
    try:
        tree_id = int(tree, 16) if tree else None
        bytes.fromhex(uuid)
    except ValueError:
        raise VerificationError('entry ID %r is not hex' % entry_id)
    return tree_id, uuid


def unhex(value, what):
    try:
        return bytes.fromhex(value)
    except (ValueError, TypeError):
        raise VerificationError('%s is not hex' % what)


@dataclass
class VerifiedEntry:
    """What a verified entry proves, for logs and receipts."""
    entry_id: str
    uuid: str
    tree_id: int
    log_index: int
    tree_index: int
    tree_size: int
    root_hash: bytes
    integrated_time: int
    body: dict
    checkpoint: Checkpoint = None
    notes: list = field(default_factory=list)
    signed_time: bool = True  # integratedTime and logIndex are under the SET
    key: object = None        # the log key that signed it (one of several, maybe)


# The largest index, size or time (in seconds) an entry may name: a log of
# 2**53 entries, or the year 285 million, is not one this plugin can meet.
MAX_INTEGER = 1 << 53


def verify_log_entry(entry_id, entry, key, origin_host=None, require_set=True, tree_id=None):
    """Check everything about one Rekor entry that the log signs; raise
    VerificationError naming the first check that fails."""
    try:
        body_bytes = base64.b64decode(entry['body'], validate=True)
        proof = entry['verification']['inclusionProof']
        fields = (entry['integratedTime'], entry['logIndex'], proof['logIndex'],
                  proof['treeSize'])
        hashes = [unhex(h, 'inclusion proof hash') for h in proof['hashes']]
        root = unhex(proof['rootHash'], 'root hash')
    except (KeyError, TypeError, ValueError):
        raise VerificationError('entry is missing fields or malformed')
    if not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < MAX_INTEGER
               for v in fields):
        raise VerificationError('entry has indexes or a time that are not whole numbers in range')
    entry_tree, uuid = split_entry_id(entry_id)
    leaf = hash_leaf(body_bytes)
    if leaf.hex() != uuid:
        raise VerificationError('entry UUID %s is not the hash of its body' % uuid)
    if entry_tree is not None:
        tree_id = entry_tree
    key = pick_log_key(key, log_id=entry.get('logID', ''))
    if log_key_id(key).hex() != str(entry.get('logID', '')).lower():
        raise VerificationError('logID %s is not the log key' % entry.get('logID'))
    if root_from_inclusion_proof(proof['logIndex'], proof['treeSize'], leaf, hashes) != root:
        raise VerificationError('inclusion proof does not lead to root hash %s' % proof['rootHash'])
    verified = VerifiedEntry(entry_id, uuid, tree_id, entry['logIndex'], proof['logIndex'],
                             proof['treeSize'], root, entry['integratedTime'],
                             decode_body(body_bytes), key=key)
    note = proof.get('checkpoint')
    if not note:
        raise VerificationError('no checkpoint: nothing signs the root hash')
    if tree_id is None:
        raise VerificationError('no tree ID to check the checkpoint origin against')
    checkpoint = verify_checkpoint(note, key, origin_host, tree_id)
    if (checkpoint.size, checkpoint.root_hash) != (proof['treeSize'], root):
        raise VerificationError('checkpoint is for size %d root %s, proof for size %d root %s'
                                % (checkpoint.size, checkpoint.root_hash.hex(),
                                   proof['treeSize'], root.hex()))
    verified.checkpoint = checkpoint
    if entry['verification'].get('signedEntryTimestamp'):
        verify_set(entry, key)
    elif require_set:
        raise VerificationError('no signed entry timestamp')
    else:
        verified.signed_time = False
        verified.notes.append('no signed entry timestamp: the checkpoint signs the body and its '
                              'place in the tree, but nothing signs integratedTime or the '
                              'global log index shown')
    return verified


def decode_body(body_bytes):
    try:
        body = json.loads(body_bytes)
    except (ValueError, RecursionError):
        raise VerificationError('entry body is not JSON')
    if not isinstance(body, dict):
        raise VerificationError('entry body is not an object')
    return body


def openpgp_packets(data):
    """The packets [(tag, body)] of an OpenPGP key, armored (RFC 4880,
    section 6.2; several blocks are joined) or binary, split by their
    framing (section 4.2); [] when it is neither.

    Written by hand because none of the project's dependencies parses
    OpenPGP; only the armor and the packet framing are read here.
    """
    if data.lstrip().startswith(b'-----BEGIN'):
        binary = b''
        lines = data.decode('ascii', 'replace').replace('\r', '').split('\n')
        inside = header = False
        for line in lines:
            if line.startswith('-----BEGIN'):
                inside = header = True
                body = []
            elif line.startswith('-----END') and inside:
                inside = False
                try:
                    binary += base64.b64decode(''.join(body))
                except (ValueError, binascii.Error):
                    return []
            elif inside and header:
                header = bool(line.strip())  # armor headers end at the empty line
            elif inside and line and not line.startswith('='):
                body.append(line.strip())
        data = binary
    packets, pos = [], 0
    while pos < len(data):
        first = data[pos]
        if not first & 0x80:
            return packets if packets else []
        try:
            if first & 0x40:
                tag, octet = first & 0x3f, data[pos + 1]
                if octet < 192:
                    pos, length = pos + 2, octet
                elif octet < 224:
                    pos, length = pos + 3, ((octet - 192) << 8) + data[pos + 2] + 192
                elif octet == 255:
                    pos, length = pos + 6, int.from_bytes(data[pos + 2:pos + 6], 'big')
                else:
                    return packets  # partial lengths never occur in keys
            else:
                tag, width = (first >> 2) & 0x0f, {0: 1, 1: 2, 2: 4}.get(first & 0x03)
                if width is None:
                    return packets
                length = int.from_bytes(data[pos + 1:pos + 1 + width], 'big')
                pos += 1 + width
        except IndexError:
            return packets
        packets.append((tag, data[pos:pos + length]))
        pos += length
    return packets


PGP_TAG_SIGNATURE, PGP_TAG_PUBLIC_KEY, PGP_TAG_USER_ID, PGP_TAG_PUBLIC_SUBKEY = 2, 6, 13, 14


def openpgp_primary_key(armored):
    """The primary public-key packet (RFC 4880, section 5.5.2) of a key:
    the same key Rekor re-armored compares equal here."""
    packets = openpgp_packets(armored)
    if not packets or packets[0][0] != PGP_TAG_PUBLIC_KEY:
        return None
    return packets[0][1]


def key_packet_fingerprint(body):
    """RFC 4880, section 12.2: a version 4 key's fingerprint is SHA-1 over
    0x99, the two-octet length and the key packet's body; 40 upper-case hex
    digits, or None for another version."""
    if not body or body[0] != 4 or len(body) > 0xffff:
        return None
    return hashlib.sha1(b'\x99' + len(body).to_bytes(2, 'big') + body).hexdigest().upper()


def openpgp_fingerprint(armored):
    """The fingerprint of a key's primary key (None unless version 4)."""
    return key_packet_fingerprint(openpgp_primary_key(armored))


def openpgp_fingerprints(armored):
    """The v4 fingerprints of the primary key and every subkey: what
    identifies a key whatever user IDs or signatures travel with it."""
    return [fp for fp in (key_packet_fingerprint(body) for tag, body in openpgp_packets(armored)
                          if tag in (PGP_TAG_PUBLIC_KEY, PGP_TAG_PUBLIC_SUBKEY)) if fp]


def openpgp_emails(armored):
    """The e-mail addresses of a key's user IDs ("Name <address>"), lower case."""
    found = []
    for tag, body in openpgp_packets(armored):
        if tag == PGP_TAG_USER_ID:
            match = re.search(r'<([^<>@\s]+@[^<>\s]+)>', body.decode('utf-8', 'replace'))
            if match:
                found.append(match.group(1).lower())
    return found


@dataclass
class Expected:
    """What the body of our entry must say."""
    sha256: str
    name: str
    version: str
    release: str
    epoch: object
    arch: str
    sigmd5: str
    public_key: bytes
    source: bool = False


def expected_from_header(hdr, sha256, public_key):
    import rpm
    return Expected(
        sha256=sha256, name=text(hdr[rpm.RPMTAG_NAME]), version=text(hdr[rpm.RPMTAG_VERSION]),
        release=text(hdr[rpm.RPMTAG_RELEASE]), epoch=hdr[rpm.RPMTAG_EPOCH],
        arch=text(hdr[rpm.RPMTAG_ARCH]), sigmd5=(hdr[rpm.RPMTAG_SIGMD5] or b'').hex(),
        public_key=public_key, source=not hdr[rpm.RPMTAG_SOURCERPM])


def text(value):
    return value.decode('utf-8', 'replace') if isinstance(value, bytes) else str(value)


def member(value, name):
    """value[name] when value is an object holding an object there, else {}:
    a body is what the log says, any shape."""
    inner = value.get(name) if isinstance(value, dict) else None
    return inner if isinstance(inner, dict) else {}


def verify_rpm_body(body, expected):
    """The log recorded our package, our key and our NEVRA."""
    if body.get('kind') != 'rpm' or body.get('apiVersion') != '0.0.1':
        raise VerificationError('body is %s %s, not rpm 0.0.1'
                                % (body.get('kind'), body.get('apiVersion')))
    spec = member(body, 'spec')
    package = member(spec, 'package')
    digest = member(package, 'hash')
    if digest.get('algorithm') != 'sha256' or digest.get('value') != expected.sha256:
        raise VerificationError('body records package %s:%s, we sent sha256:%s' % (
            digest.get('algorithm'), digest.get('value'), expected.sha256))
    headers = member(package, 'headers')
    epoch = '' if expected.epoch is None else str(expected.epoch)
    wanted = {'Name': [expected.name], 'Version': [expected.version],
              'Release': [expected.release], 'Epoch': [epoch] if epoch else ['', '0'],
              'Architecture': [expected.arch, 'src'] if expected.source else [expected.arch]}
    for header, allowed in wanted.items():
        if headers.get(header) not in allowed:
            raise VerificationError('body records %s %r, the RPM has %r'
                                    % (header, headers.get(header), allowed[0]))
    if 'RPMSIGTAG_MD5' in headers and headers['RPMSIGTAG_MD5'] != expected.sigmd5:
        raise VerificationError('body records RPMSIGTAG_MD5 %s, the RPM has %s'
                                % (headers['RPMSIGTAG_MD5'], expected.sigmd5))
    try:
        logged_key = base64.b64decode(member(spec, 'publicKey').get('content') or '')
    except (binascii.Error, TypeError, ValueError):
        logged_key = b''
    ours = openpgp_primary_key(expected.public_key)
    if ours is None or openpgp_primary_key(logged_key) != ours:
        raise VerificationError('body records another public key than the one we sent')


# ---------------------------------------------------------------------------
# Files under <topdir>/rekor-logs
#
# The topdir is shared storage that others write too (often NFS): what is
# read from it is input, not truth, and nothing is ever written outside
# rekor-logs/. Every open, mkdir, rename and lock below it goes through a
# directory descriptor opened without following links (O_NOFOLLOW), and
# every name is one component checked here, so a planted symlink or a
# name holding '../' is an error, never a way to write elsewhere.
# ---------------------------------------------------------------------------

class UnsafePath(RekorLogError):
    """A path under rekor-logs/ is a link, or not what it should be."""


DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# Records, receipts, pins and saved tree heads are a few KiB.
MAX_FILE = 4 * 1024 * 1024


def check_part(part):
    """One path component, which cannot climb or descend."""
    if not isinstance(part, str) or part in ('', '.', '..') or '/' in part or '\0' in part:
        raise UnsafePath('unsafe path component %r' % (part,))
    return part


def open_subdir(dirfd, part, create=True, where=None):
    """A descriptor of the subdirectory part of dirfd, opened without
    following a link and created when missing (if create)."""
    try:
        try:
            return os.open(check_part(part), DIR_FLAGS, dir_fd=dirfd)
        except FileNotFoundError:
            if not create:
                raise
            with contextlib.suppress(FileExistsError):
                os.mkdir(part, dir_fd=dirfd)
            return os.open(part, DIR_FLAGS, dir_fd=dirfd)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENOTDIR):
            raise UnsafePath('%s is a symlink or not a directory: not followed'
                             % (where or part))
        raise


def open_logs_dir(topdir, parts=(), create=True):
    """A descriptor of <topdir>/rekor-logs/<parts...>, each component opened
    without following a link and created when missing (if create)."""
    fd = os.open(topdir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    where = topdir
    try:
        for part in (RECEIPT_DIR,) + tuple(parts):
            where = os.path.join(where, str(part))
            child = open_subdir(fd, part, create, where)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextlib.contextmanager
def logs_dir(topdir, parts=(), create=True):
    fd = open_logs_dir(topdir, parts, create)
    try:
        yield fd
    finally:
        os.close(fd)


def write_file_at(dirfd, name, data):
    """Write a whole file or nothing: a new temporary file in the same
    directory, written and fsynced, then renamed over name (a link there is
    replaced, never followed), then the directory fsynced."""
    check_part(name)
    tmp = '.%s.%s.tmp' % (name, os.urandom(4).hex())
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o644, dir_fd=dirfd)
    try:
        try:
            os.fchmod(fd, 0o644)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, name, src_dir_fd=dirfd, dst_dir_fd=dirfd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dirfd)
        raise
    os.fsync(dirfd)


def create_file_at(dirfd, name, data):
    """Write a file once: False, leaving it alone, if name already exists."""
    check_part(name)
    tmp = '.%s.%s.tmp' % (name, os.urandom(4).hex())
    write_file_at(dirfd, tmp, data)
    try:
        os.link(tmp, name, src_dir_fd=dirfd, dst_dir_fd=dirfd, follow_symlinks=False)
        return True
    except FileExistsError:
        return False
    finally:
        os.unlink(tmp, dir_fd=dirfd)
        os.fsync(dirfd)


def read_file_at(dirfd, name, limit=MAX_FILE):
    """A regular file's bytes, or None when it does not exist."""
    check_part(name)
    try:
        # O_NONBLOCK: a FIFO planted here must not hang the reader.
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                     dir_fd=dirfd)
    except FileNotFoundError:
        return None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise UnsafePath('%s is a symlink: not followed' % name)
        raise
    try:
        return read_regular_file(fd, name, limit)
    finally:
        os.close(fd)


def read_regular_file(fd, name, limit=MAX_FILE):
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        raise UnsafePath('%s is not a regular file' % name)
    chunks, offset = [], 0
    while offset <= limit:
        chunk = os.pread(fd, 65536, offset)
        if not chunk:
            return b''.join(chunks)
        chunks.append(chunk)
        offset += len(chunk)
    raise UnsafePath('%s is larger than %d bytes' % (name, limit))


def parse_json(data, what):
    """JSON from the topdir or a file: a clean error for anything else,
    nesting too deep for Python included."""
    try:
        return json.loads(data)
    except (ValueError, RecursionError):
        raise UnsafePath('%s is not JSON' % what)


def read_json(path):
    """A JSON file anywhere (not under rekor-logs/); None when missing."""
    # Only a regular file, no link followed, and no wait: a FIFO or a device
    # planted where a receipt is expected would hold the reader forever.
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY
                     | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise UnsafePath('%s is a symlink: not followed' % path)
        raise
    with open(fd, 'rb') as fo:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UnsafePath('%s is not a regular file (a FIFO, device or directory): not read'
                             % path)
        data = fo.read(MAX_FILE + 1)
    if len(data) > MAX_FILE:
        raise UnsafePath('%s is larger than %d bytes' % (path, MAX_FILE))
    return parse_json(data, path)


def write_atomic(path, data):
    """Write a file the admin named (not under rekor-logs/) whole or not at all."""
    directory = os.path.dirname(os.path.abspath(path))
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        write_file_at(fd, os.path.basename(path), data)
    finally:
        os.close(fd)


# fcntl locks belong to a process, not a thread: the threads of one process
# (koji-rekor backfill and retry --jobs) also take a lock of their own per
# path. Weak values: a lock lives while a thread uses it, so a worker that
# runs for months does not keep one for every record it ever saw.
THREAD_LOCKS = weakref.WeakValueDictionary()
THREAD_LOCKS_GUARD = threading.Lock()


def thread_lock(path):
    with THREAD_LOCKS_GUARD:
        return THREAD_LOCKS.setdefault(path, threading.Lock())


@contextlib.contextmanager
def locked_at(dirfd, name, key):
    """An exclusive POSIX lock on <name>.lock in dirfd (fcntl locks work on
    the NFS a topdir usually lives on), shared by every hub and worker;
    key names it for the threads of this process."""
    with thread_lock(key):
        fd = os.open(check_part(name + '.lock'),
                     os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=dirfd)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)


# ---------------------------------------------------------------------------
# Log keys and checkpoints kept under <topdir>/rekor-logs/@state
#
# Trust anchors do not live on the shared disk: a log's key comes from the
# configuration (log_public_key, or the key shipped for rekor.sigstore.dev).
# A key pinned on first use (only with trust_on_first_use, or the original
# plugin's file) is written once and never replaced; one that changes is
# reported, not followed. A saved tree head is a signed note, verified with
# the log key each time it is read.
# ---------------------------------------------------------------------------

KEYS_DIR = 'keys'
CHECKPOINTS_DIR = 'checkpoints'
# The pins this process read or wrote: a pin changed on disk since is
# reported, not followed.
PINS_SEEN = {}


def state_dir(topdir):
    return os.path.join(topdir, RECEIPT_DIR, STATE_DIR)


def topdir_of_state(state):
    """The topdir of <topdir>/rekor-logs/@state."""
    return os.path.dirname(os.path.dirname(state))


def pin_name(url):
    """The pin's file name: the log's host and port, never its credentials."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname + (':%d' % parts.port if parts.port else '')
    return check_part('%s.pem' % host.replace(':', '_'))


def known_log_key(settings, state):
    """The log key trusted without asking the log: configured, shipped for
    the public instance, or pinned under the state directory; (the key or
    None, where a pinned key is or would be)."""
    if settings.log_public_key:
        return read_log_key(settings.log_public_key), None
    if urllib.parse.urlsplit(settings.url).hostname == PUBLIC_REKOR_HOST:
        return load_log_key(PUBLIC_REKOR_KEY), None
    if not state:
        return None, None
    name = pin_name(settings.url)
    where = os.path.join(state, KEYS_DIR, name)
    try:
        with logs_dir(topdir_of_state(state), (STATE_DIR, KEYS_DIR), create=False) as fd:
            pinned = read_file_at(fd, name, limit=64 * 1024)
    except FileNotFoundError:
        pinned = None
    return (pinned_key(where, pinned) if pinned is not None else None), where


def resolve_log_key(settings, client, state):
    """The log key to trust: configured, shipped for the public instance, or
    pinned on first use under the state directory where allowed."""
    key, where = known_log_key(settings, state)
    if key is not None:
        return key
    name = pin_name(settings.url)
    if not (settings.trust_on_first_use or settings.legacy):
        raise RekorLogError('no log key for %s: set [rekor] log_public_key (koji-rekor '
                            'log-key prints the key the log serves), or trust_on_first_use = true'
                            % display_url(settings.url))
    pem = client.log_public_key()
    key = load_log_key(pem)
    LOG.warning('rekor_log: trusting the log key of %s on first use (logID %s)%s; set '
                '[rekor] log_public_key to pin it explicitly', display_url(settings.url),
                log_key_id(key).hex(), ', pinned in %s' % where if where else '')
    if state:
        with logs_dir(topdir_of_state(state), (STATE_DIR, KEYS_DIR)) as fd:
            if not create_file_at(fd, name, pem):
                # Another process pinned one first: that one stands.
                return pinned_key(where, read_file_at(fd, name, limit=64 * 1024) or b'')
        PINS_SEEN[where] = pem
    return key


def pinned_key(where, pem):
    """A pinned key as read from disk, unless it changed since this process
    first read or wrote it."""
    seen = PINS_SEEN.setdefault(where, pem)
    if seen != pem:
        raise VerificationError('the pinned log key %s changed on disk since this process '
                                'read it (logID %s, now %s): not followed' % (
                                    where, log_key_id(load_log_key(seen)).hex(),
                                    describe_key(pem)))
    try:
        return load_log_key(pem)
    except VerificationError as e:
        raise VerificationError('pinned log key %s: %s' % (where, e))


def describe_key(pem):
    try:
        return log_key_id(load_log_key(pem)).hex()
    except VerificationError:
        return 'not a key'


def checkpoint_dir(state, key):
    return os.path.join(state, CHECKPOINTS_DIR, log_key_id(key).hex())


def checkpoint_parts(key):
    return (STATE_DIR, CHECKPOINTS_DIR, log_key_id(key).hex())


def checkpoint_path(state, key, tree_id):
    return os.path.join(checkpoint_dir(state, key), '%d.json' % tree_id)


def saved_tree_head(state, key, tree_id):
    """(size, root hash) of the newest tree head kept for a tree, or None."""
    with logs_dir(topdir_of_state(state), checkpoint_parts(key)) as fd:
        return read_tree_head(fd, key, tree_id)


def read_tree_head(dirfd, key, tree_id):
    """The saved tree head of a tree, verified as the signed note it is; one
    that does not verify is reported as tampering and ignored."""
    name = '%d.json' % tree_id
    saved = None
    try:
        data = read_file_at(dirfd, name)
        if data is None:
            return None
        saved = parse_json(data, name)
        checkpoint = verify_checkpoint(saved['checkpoint'], key, None, tree_id)
        if (saved['size'], saved['root_hash']) != (checkpoint.size, checkpoint.root_hash.hex()):
            raise VerificationError('its size or root is not the one its checkpoint signs')
    except (RekorLogError, KeyError, TypeError) as e:
        if isinstance(saved, dict) and isinstance(saved.get('checkpoint'), str) \
                and '\n\n' not in saved['checkpoint']:
            LOG.warning('rekor_log: the saved tree head %s of tree %s was kept by an older '
                        'version, without its signature: replaced by the next one', name, tree_id)
            return None
        LOG.error('rekor_log: tampering: the saved tree head %s of tree %s does not verify '
                  'with the log key (%s): ignored', name, tree_id, failure_cause(e))
        return None
    return checkpoint.size, checkpoint.root_hash


def check_consistency(client, state, key, tree_id, size, root_hash, checkpoint_note,
                      proven=None):
    """Prove that this tree head of the log extends (or is extended by) the
    newest one seen before, then keep the newer one. The plugin checks the
    tree head of each entry, the monitor the log's own, a worker's pass the
    newest of its own (proven: {size: root} of the heads it has proved one
    history with this one)."""
    new = (size, root_hash)
    name = '%d.json' % tree_id
    with logs_dir(topdir_of_state(state), checkpoint_parts(key)) as fd, \
            locked_at(fd, name, checkpoint_path(state, key, tree_id)):
        old = read_tree_head(fd, key, tree_id)
        if old is not None:
            if proven is None or proven.get(old[0]) != old[1]:
                prove_consistency(client, tree_id, old, new)
            if new[0] <= old[0]:
                return
        write_file_at(fd, name, json.dumps({
            'size': size, 'root_hash': root_hash.hex(), 'checkpoint': checkpoint_note},
            indent=1).encode())


def prove_consistency(client, tree_id, old, new):
    """Prove with the log's consistency proof that two verified tree heads
    (size, root hash) of one tree are one history: the smaller is a prefix
    of the larger."""
    (small, large) = sorted([old, new])
    proof = []
    if small[0] != large[0] and small[0] > 0:
        answer = client.consistency_proof(small[0], large[0], tree_id)
        # The answer's rootHash is not compared: it is the root of the log's
        # latest tree (the signed log root Trillian returns beside the
        # proof; GetLogProofHandler, sigstore/rekor pkg/api/tlog.go), which
        # on a live log is larger than both heads, and it is not signed.
        # The proof is checked against the two roots the log signed and we
        # hold (RFC 9162, section 2.1.4.2): nothing else is compared.
        hashes = answer.get('hashes') or []
        if not isinstance(hashes, list):
            raise VerificationError('split view: malformed consistency proof')
        proof = [unhex(h, 'consistency proof hash') for h in hashes]
    try:
        verify_consistency(small[0], large[0], small[1], large[1], proof)
    except VerificationError as e:
        raise VerificationError('split view: the log is not consistent with the '
                                'tree head seen before (%s)' % e)


# Rekor v2 shards: the newest checkpoint seen from each, under
# @state/checkpoints/v2-<logId hex>/<origin>.json, a signed note verified
# with the shard's key each time it is read. It never moves backwards: a
# newer checkpoint replaces it only once a consistency proof built from the
# shard's tiles ties the two (an older one is proved a prefix of it).

def v2_checkpoint_parts(log):
    return (STATE_DIR, CHECKPOINTS_DIR, 'v2-%s' % log.log_id.hex())


def v2_checkpoint_name(log):
    return check_part('%s.json' % re.sub(r'[^A-Za-z0-9._-]', '_', log.origin))


def read_v2_checkpoint(dirfd, log):
    """The saved checkpoint of a shard, verified with its key; one that does
    not verify is reported as tampering and ignored."""
    from rekor_v2 import note
    name = v2_checkpoint_name(log)
    try:
        data = read_file_at(dirfd, name)
        if data is None:
            return None
        saved = parse_json(data, name)
        return note.verify_checkpoint(saved['checkpoint'], log.note_key, log.origin)
    except (RekorLogError, KeyError, TypeError, ValueError) as e:
        LOG.error('rekor_log: tampering: the saved checkpoint %s of %s does not verify with '
                  'the log key (%s): ignored', name, log.origin, failure_cause(e))
        return None


def check_v2_consistency(fetch, state, log, checkpoint):
    """Prove that a verified checkpoint of a v2 shard and the newest one kept
    for it are one history (RFC 9162 2.1.4.2, the proof built from tiles),
    then keep the newer one. fetch reads the shard's static files."""
    from rekor_v2 import tiles
    name = v2_checkpoint_name(log)
    with logs_dir(topdir_of_state(state), v2_checkpoint_parts(log)) as fd, \
            locked_at(fd, name, os.path.join(state, *v2_checkpoint_parts(log)[1:], name)):
        old = read_v2_checkpoint(fd, log)
        if old is not None and (old.size, old.root_hash) != (checkpoint.size,
                                                              checkpoint.root_hash):
            small, large = sorted((old, checkpoint), key=lambda c: c.size)
            try:
                tiles.prove_consistency(fetch, small, large)
            except Exception as e:
                ours = v2_error(e)  # rekor_v2 raises rekor_log's classes
                if not isinstance(ours, VerificationError):
                    raise ours from None
                raise VerificationError('split view: Rekor v2 shard %s is not consistent with '
                                        'the checkpoint seen before (size %d): %s' % (
                                            log.origin, old.size, ours)) from None
        if old is None or checkpoint.size > old.size:
            write_file_at(fd, name, json.dumps({
                'origin': log.origin, 'size': checkpoint.size,
                'root_hash': checkpoint.root_hash.hex(),
                'checkpoint': checkpoint.raw.decode('utf-8')}, indent=1).encode())


# The log's outage, in @state/outage.json. Backoff belongs to the log, not
# to each record: while the log fails, hubs leave their signatures to the
# worker and the worker only probes the log, less and less often; once the
# log answers, every record that failed because of the log is due at once.
# The file is shared-disk input: anything malformed, or about another log,
# is no outage, and a probe is never put off by more than LOG_BACKOFF_MAX.
OUTAGE_FILE = 'outage.json'
LOG_BACKOFF = 30
LOG_BACKOFF_MAX = 600


@dataclass
class Outage:
    since: float
    failures: int
    next_probe: float
    last_error: str
    closed: bool = False     # the log answers 501 for entries: it takes none any more


def read_outage(settings, topdir):
    """The configured log's recorded outage, or None."""
    try:
        with logs_dir(topdir, (STATE_DIR,), create=False) as fd:
            data = parse_json(read_file_at(fd, OUTAGE_FILE, limit=64 * 1024) or b'null',
                              OUTAGE_FILE)
    except (OSError, RekorLogError):
        return None
    if not isinstance(data, dict) or data.get('url') != display_url(settings.url):
        return None
    since, failures = data.get('since'), data.get('failures')
    next_probe, last_error = data.get('next_probe'), data.get('last_error')
    numbers = (since, next_probe)
    if not (all(isinstance(v, (int, float)) and not isinstance(v, bool)
                and 0 <= v < 1e11 for v in numbers)
            and isinstance(failures, int) and not isinstance(failures, bool)
            and 0 < failures < 1e6 and isinstance(last_error, str)):
        return None
    return Outage(since, failures, min(next_probe, time.time() + LOG_BACKOFF_MAX),
                  text_excerpt(last_error, 300), data.get('closed') is True)


def record_outage(settings, topdir, cause, closed=False):
    """The log failed (again): put off its next probe. closed: it answered
    501 for entries, so it takes none any more until an operator says so."""
    old = read_outage(settings, topdir)
    now = time.time()
    failures = old.failures + 1 if old else 1
    try:
        with logs_dir(topdir, (STATE_DIR,)) as fd:
            write_file_at(fd, OUTAGE_FILE, json.dumps({
            'url': display_url(settings.url), 'since': old.since if old else now,
            'failures': failures, 'last_error': cause, 'closed': bool(closed),
                'next_probe': now + min(LOG_BACKOFF * 2 ** min(failures - 1, 20),
                                        LOG_BACKOFF_MAX),
            }, indent=1).encode())
    except (OSError, RekorLogError) as e:
        LOG.warning('rekor_log: cannot record the outage of %s: %s',
                    display_url(settings.url), getattr(e, 'strerror', None) or e)


def clear_outage(topdir):
    """The log answered: every record waiting for it is due."""
    # A planted link makes no outage to clear: read_outage ignores it too.
    with contextlib.suppress(FileNotFoundError, UnsafePath), \
            logs_dir(topdir, (STATE_DIR,), create=False) as fd:
        os.unlink(OUTAGE_FILE, dir_fd=fd)


# ---------------------------------------------------------------------------
# Receipts
# ---------------------------------------------------------------------------

def receipt_parts(rpminfo, sigkey):
    """(directories under rekor-logs/, file name) of a receipt, from parts
    checked against Koji's naming rules."""
    check_rpm_naming(rpminfo)
    check_sigkey(sigkey)
    return ((rpminfo['name'], rpminfo['version'], rpminfo['release'], rpminfo['arch']),
            '%s.%s.json' % (nvra_of(rpminfo), sigkey))


def receipt_path(topdir, rpminfo, sigkey):
    dirs, name = receipt_parts(rpminfo, sigkey)
    return os.path.join(topdir, RECEIPT_DIR, *dirs, name)


def read_receipt(topdir, rpminfo, sigkey):
    """A receipt as it lies on the shared disk (input, to be verified before
    anything believes it), read without following links; None if absent."""
    dirs, name = receipt_parts(rpminfo, sigkey)
    try:
        with logs_dir(topdir, dirs, create=False) as fd:
            data = read_file_at(fd, name)
    except FileNotFoundError:
        return None
    return parse_json(data, name) if data is not None else None


def make_receipt(settings, nvra, sigkey, sha256, entry_id, entry):
    return {'rekor_url': display_url(settings.url), 'nvra': nvra, 'sigkey': sigkey, 'sha256': sha256,
            'log_entry': {entry_id: entry}}


# Koji's naming rules (koji.check_NVRA, and what rpm allows in a name): a
# part is never empty, never '.' or '..', never holds '/'; version and
# release hold no '-', arch no '.'.
NAME_RE = re.compile(r'^[A-Za-z0-9_+][A-Za-z0-9._+-]*$')
VERSION_RE = re.compile(r'^[A-Za-z0-9_+~^][A-Za-z0-9._+~^]*$')
ARCH_RE = re.compile(r'^[A-Za-z0-9_]+$')
SIGKEY_RE = re.compile(r'^[0-9a-f]{8,40}$')
MAX_PART = 255


def check_rpm_naming(rpminfo):
    if not isinstance(rpminfo, dict):
        raise BadRecord('rpm is not an object')
    for field_name, pattern in (('name', NAME_RE), ('version', VERSION_RE),
                                ('release', VERSION_RE), ('arch', ARCH_RE)):
        value = rpminfo.get(field_name)
        if not isinstance(value, str) or len(value) > MAX_PART or not pattern.match(value):
            raise BadRecord('rpm %s %r is not a valid RPM %s' % (field_name, value, field_name))


def check_sigkey(sigkey):
    if not isinstance(sigkey, str) or not SIGKEY_RE.match(sigkey):
        raise BadRecord('sigkey %r is not lowercase hex' % (sigkey,))


# ---------------------------------------------------------------------------
# Logging one signature
# ---------------------------------------------------------------------------

# librpm keeps process-wide state (macros, its log), so the threads of
# koji-rekor backfill --jobs check one RPM at a time; a check reads only the
# headers, so this costs them nothing.
RPM_LOCK = threading.Lock()


@dataclass
class Outcome:
    receipt: dict
    verified: VerifiedEntry
    created: bool


def upload_signed_rpm(settings, signed, key_path, state=None, deadline=None, spent=None,
                      client=None, log_key=None, heads=None):
    """Check, upload and verify one signed RPM; returns the Outcome.

    Nothing is sent unless the key verifies the RPM locally, and nothing is
    returned unless everything the log answered verifies. deadline and
    spent bound the whole exchange with the log (see RekorClient). A
    worker's pass hands in its thread's client, the log key and heads, the
    tree heads it has proved consistent (heads.check), instead of one of
    each per upload.
    """
    public_key = read_public_key(key_path)
    with RPM_LOCK:
        hdr = check_key_signed_rpm(signed, public_key, key_path)
    own_client = client is None
    if own_client:
        client = RekorClient(settings, deadline, spent)
    try:
        key = log_key or resolve_log_key(settings, client, state)
        body = EntryBody(signed, public_key, stall_timeout=2 * settings.timeout)
        try:
            entry_id, entry, created = client.create_entry(body)
        finally:
            body.close()
        if body.sha256 is None:
            # 409 without our body being read to the end cannot happen with
            # Rekor, which reads it all; hash the RPM to check the entry.
            with signed.open() as fo:
                body.sha256 = sha256_of(fo)
        verified = verify_our_entry(settings, client, state, key, entry_id, entry,
                                    expected_from_header(hdr, body.sha256, public_key), heads)
    finally:
        if own_client:
            client.close()
    receipt = make_receipt(settings, signed.nvra, signed.sigkey, body.sha256, entry_id, entry)
    return Outcome(receipt, verified, created)


def verify_our_entry(settings, client, state, key, entry_id, entry, expected, heads=None):
    """Everything about an entry of our RPM: what the log signs, that the
    body records our package, and the tree head's consistency (proved by a
    worker's pass, heads, when there is one)."""
    verified = verify_log_entry(entry_id, entry, key, settings.origin_host)
    verify_rpm_body(verified.body, expected)
    key = verified.key   # the key of the entry's own tree, when the log has several
    if heads is not None:
        heads.check(client, key, verified, entry)
    elif state:
        check_consistency(client, state, key, verified.tree_id, verified.tree_size,
                          verified.root_hash, verified.checkpoint.note)
    return verified


def reverify_receipt(settings, record, topdir):
    """The receipt a record keeps (an enforced upload whose hub request died
    before the commit), rebuilt from its entry once that is verified again
    with the configured log key and the RPM's recomputed sha256; a record
    is input, so nothing of it is written as it stands. Returns the Outcome."""
    if record['receipt'].get('rekor_api') == 2:
        try:
            return reverify_v2_receipt(settings, record, topdir)
        except Exception as e:
            converted = v2_error(e)
            if converted is e:
                raise
            raise converted from None
    entries = record['receipt'].get('log_entry')
    if not isinstance(entries, dict) or len(entries) != 1:
        raise VerificationError('the receipt kept in the record holds no single entry')
    (entry_id, entry), = entries.items()
    if not isinstance(entry, dict):
        raise VerificationError('the receipt kept in the record holds no single entry')
    signed = locate_signed_rpm(record['build'], record['rpm'], record['sigkey'])
    key_path = public_key_file(settings, record['sigkey'])
    public_key = read_public_key(key_path)
    with RPM_LOCK:
        hdr = check_key_signed_rpm(signed, public_key, key_path)
    with signed.open() as fo:
        sha256 = sha256_of(fo)
    client = RekorClient(settings)
    try:
        key = resolve_log_key(settings, client, state_dir(topdir))
        verified = verify_our_entry(settings, client, state_dir(topdir), key, entry_id, entry,
                                    expected_from_header(hdr, sha256, public_key))
    finally:
        client.close()
    receipt = make_receipt(settings, signed.nvra, signed.sigkey, sha256, entry_id, entry)
    return Outcome(receipt, verified, False)


def sha256_of(fo):
    """Hex SHA-256 of a binary stream, read a chunk at a time into one
    buffer."""
    digest = hashlib.sha256()
    for chunk in read_chunks(fo):
        digest.update(chunk)
    return digest.hexdigest()


def log_signature(settings, build, rpminfo, sigkey, topdir, deadline=None, spent=None,
                  sighash=None, **shared):
    """Upload and verify one signature Koji stored; returns the Outcome.
    shared: what a worker's pass shares (see upload_signed_rpm)."""
    if settings.api == 2:
        return log_signature_v2(settings, build, rpminfo, sigkey, topdir, deadline, spent,
                                sighash)
    signed = locate_signed_rpm(build, rpminfo, sigkey)
    key_path = public_key_file(settings, sigkey)
    return upload_signed_rpm(settings, signed, key_path, state_dir(topdir), deadline, spent,
                             **shared)


# Rekor v2 (rekor-tiles): the header signature as a hashedrekord v0.0.2,
# built from the RPM's headers alone (rekor_v2.hashedrekord; the payload is
# never read), written to the shard the configuration names, and everything
# it answers verified (rekor_v2.entry) before a receipt is written. The
# write blocks until the shard publishes its next checkpoint.
V2_WRITE_TIMEOUT = 60.0      # rekor-tiles cuts every request at 60 s (grpcconfig.go)


def v2_error(exc):
    """exc as this module's error class. rekor_v2 raises the classes of the
    module imported as rekor_log, and Koji's plugin loader loads this file
    under another name, so they are other class objects: the same cause and
    the same permanent/about_the_log, in the class of the same name here."""
    if isinstance(exc, RekorLogError) or not isinstance(exc, Exception):
        return exc
    for cls in type(exc).__mro__:
        ours = globals().get(cls.__name__)
        if isinstance(ours, type) and issubclass(ours, RekorLogError) and cls is not ours:
            new = RekorLogError.__new__(ours)
            Exception.__init__(new, str(exc))
            new.permanent = getattr(exc, 'permanent', ours.permanent)
            new.at_once = getattr(exc, 'at_once', False)
            if getattr(exc, 'about_the_log', False):
                new.about_the_log = True
            return new
    if isinstance(exc, ValueError):  # rekor_v2.trust.TrustError: a trust file
        return RekorMisconfigured(str(exc))
    return exc


def v2_origin(settings, url):
    """The origin line of a v2 shard's checkpoints: [rekor] origin, else the
    URL without its scheme (rekor-tiles names its log so)."""
    from rekor_v2 import trust
    return settings.origin or trust.origin_of(url)


def v2_trusted_logs(settings):
    """The v2 logs of [rekor] trusted_root, or None when it is not set."""
    if not settings.trusted_root:
        return None
    from rekor_v2 import trust
    try:
        with open(settings.trusted_root, 'rb') as fo:
            return trust.parse_trusted_root(fo.read(1 << 22))
    except (OSError, trust.TrustError) as e:
        raise RekorMisconfigured('[rekor] trusted_root %s: %s'
                                 % (settings.trusted_root, getattr(e, 'strerror', None) or e))


def v2_log_key(settings, url, trusted=None):
    """The checkpoint key of the shard at url: [rekor] log_public_key (with
    its origin), else the trusted_root log whose origin is that shard's."""
    from rekor_v2 import trust
    origin = v2_origin(settings, url)
    if settings.log_public_key:
        try:
            with open(settings.log_public_key, 'rb') as fo:
                return trust.log_key(origin, fo.read(64 * 1024), base_url=url)
        except (OSError, trust.TrustError) as e:
            raise RekorMisconfigured('[rekor] log_public_key %s: %s' % (
                settings.log_public_key, getattr(e, 'strerror', None) or e))
    for log in (trusted.logs if trusted else ()):
        if log.origin == origin:
            return log
    raise RekorMisconfigured('no log key for Rekor v2 shard %s: set [rekor] log_public_key, or '
                             'a trusted_root that lists it' % display_url(url))


def v2_shards(settings, now=None):
    """The shard URLs to write to, in order: [rekor] signing_config's v2
    shards valid now, newest first (the next one when a shard answers 405),
    else [rekor] url."""
    if not settings.signing_config:
        return [settings.url]
    from rekor_v2 import trust
    try:
        with open(settings.signing_config, 'rb') as fo:
            config = trust.parse_signing_config(fo.read(1 << 22))
    except (OSError, trust.TrustError) as e:
        raise RekorMisconfigured('[rekor] signing_config %s: %s'
                                 % (settings.signing_config, getattr(e, 'strerror', None) or e))
    now = now or datetime.datetime.now(datetime.timezone.utc)
    shards = trust.select_shards(config, now)
    if not shards:
        raise RekorMisconfigured('[rekor] signing_config %s lists no Rekor v2 shard valid now'
                                 % settings.signing_config)
    return [shard.url for shard in shards]


def log_signature_v2(settings, build, rpminfo, sigkey, topdir, deadline=None, spent=None,
                     sighash=None):
    """log_signature for [rekor] api = 2; returns the Outcome."""
    try:
        return upload_v2(settings, build, rpminfo, sigkey, topdir, deadline, spent, sighash)
    except Exception as e:
        converted = v2_error(e)
        if converted is e:
            raise
        raise converted from None


def upload_v2(settings, build, rpminfo, sigkey, topdir, deadline, spent, sighash):
    from rekor_v2 import client as v2client, entry as v2entry, hashedrekord
    signed = locate_signed_rpm(build, rpminfo, sigkey)
    armored = read_public_key(public_key_file(settings, sigkey))
    entry = hashedrekord.from_rpm_file(signed.path, armored,
                                       sighdr=signed.sighdr if signed.spliced else None)
    body = entry.canonical_body()
    trusted = v2_trusted_logs(settings)
    urls = v2_shards(settings)
    state = state_dir(topdir)
    for url in urls:
        log = v2_log_key(settings, url, trusted)
        client_settings = v2client.ClientSettings(
            url, ca_bundle=settings.ca_bundle, connect_timeout=min(settings.timeout, 10.0),
            write_timeout=max(settings.timeout, V2_WRITE_TIMEOUT), read_timeout=settings.timeout,
            retries=settings.retries, backoff=settings.backoff)
        with v2client.V2Client(client_settings, deadline, spent) as client:
            try:
                answer = client.create_entry(entry, log=log)
            except v2client.ShardFrozen as e:
                LOG.warning('rekor_log: %s', e)
                continue
            created = isinstance(answer, v2client.Created)
            # A 201 is verified as it came: one that does not verify is a
            # lie, and the upload fails; never patched up from tiles.
            tle = answer.entry
            verified = v2entry.verify_entry(tle, body, log)
            check_v2_consistency(client.fetch, state, log, verified.checkpoint)
        receipt = make_v2_receipt(topdir, build, rpminfo, sigkey, sighash, url, log, body, tle)
        return Outcome(receipt, verified, created)
    raise RekorRejected('every Rekor v2 shard it may write to is frozen (HTTP 405: this log '
                        'takes no more entries): name a newer shard in [rekor] %s, then requeue'
                        % ('signing_config' if settings.signing_config else 'url'))


def reverify_v2_receipt(settings, record, topdir):
    """reverify_receipt for a v2 receipt: its entry verified again against
    the body built anew from the RPM's headers and the shard's key."""
    from rekor_v2 import client as v2client, entry as v2entry, hashedrekord
    kept = record['receipt']
    build, rpminfo, sigkey = record['build'], record['rpm'], record['sigkey']
    urls = [u for u in v2_shards(settings) if display_url(u) == kept.get('rekor_url')]
    if not urls:
        raise VerificationError('the receipt kept in the record names a shard the '
                                'configuration does not (%r)' % kept.get('rekor_url'))
    signed = locate_signed_rpm(build, rpminfo, sigkey)
    armored = read_public_key(public_key_file(settings, sigkey))
    body = hashedrekord.from_rpm_file(signed.path, armored, sighdr=signed.sighdr
                                      if signed.spliced else None).canonical_body()
    log = v2_log_key(settings, urls[0], v2_trusted_logs(settings))
    tle = kept.get('transparency_log_entry')
    verified = v2entry.verify_entry(tle if isinstance(tle, dict) else {}, body, log)
    with v2client.V2Client(v2client.ClientSettings(
            urls[0], ca_bundle=settings.ca_bundle, read_timeout=settings.timeout,
            retries=settings.retries, backoff=settings.backoff)) as client:
        check_v2_consistency(client.fetch, state_dir(topdir), log, verified.checkpoint)
    receipt = make_v2_receipt(topdir, build, rpminfo, sigkey, record.get('sighash'), urls[0],
                              log, body, tle)
    return Outcome(receipt, verified, False)


def make_v2_receipt(topdir, build, rpminfo, sigkey, sighash, url, log, body, tle):
    """The v2 receipt (README: Receipts); a v1 receipt of the same signature
    already there is kept, unchanged, under rekor_v1."""
    receipt = {'rekor_api': 2, 'rekor_url': display_url(url), 'origin': log.origin,
               'nvra': nvra_of(rpminfo), 'sigkey': sigkey, 'sighash': sighash,
               'build': '%(name)s-%(version)s-%(release)s' % build,
               'body': base64.b64encode(body).decode('ascii'),
               'transparency_log_entry': tle}
    try:
        old = read_receipt(topdir, rpminfo, sigkey)
    except (OSError, RekorLogError) as e:
        LOG.warning('rekor_log: the receipt already there for %s sigkey %s is unreadable (%s): '
                    'replaced', nvra_of(rpminfo), sigkey, failure_cause(e))
        old = None
    if isinstance(old, dict):
        v1 = old if 'rekor_api' not in old else old.get('rekor_v1')
        if isinstance(v1, dict):
            receipt['rekor_v1'] = v1
    return receipt


def body_size(rpm_size):
    """Bytes an upload of an RPM of this size sends (its base64 dominates)."""
    return 4 * ((rpm_size + 2) // 3) + 4096


def enforce_bound(settings, rpm_size):
    """Seconds an upload under enforce may take in all: each attempt has
    timeout plus the time to send the body at min_rate, with the retry
    delays between attempts."""
    per_attempt = settings.timeout + body_size(rpm_size) / settings.min_rate
    return (settings.retries + 1) * per_attempt + settings.backoff * (2 ** settings.retries - 1)


def write_receipt(settings, topdir, rpminfo, sigkey, receipt):
    """Write a receipt just built from a verified entry, under rekor-logs/."""
    if settings.record_log_info:
        dirs, name = receipt_parts(rpminfo, sigkey)
        with logs_dir(topdir, dirs) as fd:
            write_file_at(fd, name, json.dumps(receipt, indent=2, sort_keys=True).encode())


def log_outcome(nvra, sigkey, outcome):
    verified = outcome.verified
    if outcome.receipt.get('rekor_api') == 2:
        LOG.info('rekor_log: %s %s sigkey %s: Rekor v2 %s log index %d',
                 'logged' if outcome.created else 'already in the log', nvra, sigkey,
                 outcome.receipt['origin'], verified.entry.log_index)
        return
    LOG.info('rekor_log: %s %s sigkey %s: log index %d, uuid %s',
             'logged' if outcome.created else 'already in the log', nvra, sigkey,
             verified.log_index, verified.uuid)


# ---------------------------------------------------------------------------
# The outbox: <topdir>/rekor-logs/@outbox
#
# Every signature is recorded here, fsynced, before anything else happens,
# so that no crash or outage can lose it. A record is
#   <nvra>.<sigkey>.uncommitted  while Koji's transaction is open,
#   <nvra>.<sigkey>.json         once Koji committed the signature,
# and is removed when its receipt is written. Records that can never succeed
# are moved to rejected/, those whose transaction was rolled back to
# rolled-back/, each with the reason.
# ---------------------------------------------------------------------------

OUTBOX_DIR = '@outbox'
UNCOMMITTED = '.uncommitted'
COMMITTED = '.json'
# Per-record retry delays of the worker: doubled per attempt, capped.
OUTBOX_BACKOFF = 60
OUTBOX_BACKOFF_MAX = 6 * 3600
# A record still uncommitted after this long belongs to a hub request that
# died or rolled back (hub requests end long before), so the worker asks the
# hub whether the signature exists.
COMMIT_GRACE = 3600

# The fields of Koji's build and rpm dicts a record keeps: enough to find
# the files again (koji.pathinfo) and to name the package.
BUILD_FIELDS = ('id', 'name', 'version', 'release', 'epoch', 'volume_name')
RPM_FIELDS = ('id', 'build_id', 'name', 'version', 'release', 'epoch', 'arch',
              'payloadhash', 'external_repo_id')


def outbox_dir(topdir):
    return os.path.join(topdir, RECEIPT_DIR, OUTBOX_DIR)


def outbox_location(path):
    """(topdir, file name) of a record <topdir>/rekor-logs/@outbox/<name>."""
    outbox, name = os.path.split(path)
    logs, folder = os.path.split(outbox)
    topdir, logs_name = os.path.split(logs)
    if (folder, logs_name) != (OUTBOX_DIR, RECEIPT_DIR):
        raise UnsafePath('%s is not a record in an outbox' % path)
    return topdir, check_part(name)


def record_name(rpminfo, sigkey):
    check_rpm_naming(rpminfo)
    check_sigkey(sigkey)
    return '%s.%s' % (nvra_of(rpminfo), sigkey)


def new_record(build, rpminfo, sigkey, sighash):
    return {'nvra': nvra_of(rpminfo), 'sigkey': sigkey, 'sighash': sighash,
            'build': {k: build.get(k) for k in BUILD_FIELDS},
            'rpm': {k: rpminfo.get(k) for k in RPM_FIELDS},
            'queued': int(time.time()), 'attempts': 0, 'next_attempt': 0,
            'last_error': None, 'receipt': None}


# The latest time a record may name (year 36812): anything larger is not a
# time the plugin wrote.
MAX_TIME = 1 << 40
VOLUME_RE = re.compile(r'^[A-Za-z0-9_+][A-Za-z0-9._+-]*$')


def is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def check_record(record, name):
    """A record is input: the types the plugin writes, an NVRA and arch
    under Koji's naming rules, a lowercase hex sigkey, and a file name
    that is the record's own. Raises BadRecord naming what is wrong."""
    if not isinstance(record, dict):
        raise BadRecord('not a JSON object')
    rpm, build, sigkey = record.get('rpm'), record.get('build'), record.get('sigkey')
    check_rpm_naming(rpm)
    check_sigkey(sigkey)
    if not isinstance(build, dict):
        raise BadRecord('build is not an object')
    for part in ('name', 'version', 'release'):
        value = build.get(part)
        if not isinstance(value, str) or len(value) > MAX_PART or not (
                NAME_RE if part == 'name' else VERSION_RE).match(value):
            raise BadRecord('build %s %r is not a valid %s' % (part, value, part))
    volume = build.get('volume_name')
    if volume is not None and not (isinstance(volume, str) and len(volume) <= MAX_PART
                                   and VOLUME_RE.match(volume)):
        raise BadRecord('build volume_name %r is not a volume name' % (volume,))
    for holder, what, fields in ((build, 'build', ('id', 'epoch')),
                                 (rpm, 'rpm', ('id', 'build_id', 'epoch', 'external_repo_id'))):
        for part in fields:
            if holder.get(part) is not None and not is_int(holder.get(part)):
                raise BadRecord('%s %s %r is not a number' % (what, part, holder.get(part)))
    for part in ('sighash', 'last_error'):
        if record.get(part) is not None and not isinstance(record.get(part), str):
            raise BadRecord('%s is not text' % part)
    if rpm.get('payloadhash') is not None and not isinstance(rpm.get('payloadhash'), str):
        raise BadRecord('rpm payloadhash is not text')
    for part in ('queued', 'next_attempt'):
        value = record.get(part)
        if not (is_int(value) or isinstance(value, float)) or not 0 <= value < MAX_TIME:
            raise BadRecord('%s %r is not a time' % (part, value))
    attempts = record.get('attempts')
    if not is_int(attempts) or not 0 <= attempts < 1 << 20:
        raise BadRecord('attempts %r is not a count' % (attempts,))
    if record.get('receipt') is not None and not isinstance(record.get('receipt'), dict):
        raise BadRecord('receipt is not an object')
    if record.get('nvra') != nvra_of(rpm):
        raise BadRecord('nvra %r is not that of its rpm, %s' % (record.get('nvra'), nvra_of(rpm)))
    stem = record_name(rpm, sigkey)
    if name not in (stem + COMMITTED, stem + UNCOMMITTED):
        raise BadRecord('the file name is not %s%s' % (stem, COMMITTED))
    return record


def record_json(record):
    return json.dumps(record, indent=1, sort_keys=True).encode()


def write_record(path, record):
    topdir, name = outbox_location(path)
    with logs_dir(topdir, (OUTBOX_DIR,)) as out:
        write_file_at(out, name, record_json(record))


def queue_signature(topdir, record):
    """Record a signature durably, before Koji commits it."""
    name = record_name(record['rpm'], record['sigkey']) + UNCOMMITTED
    with logs_dir(topdir, (OUTBOX_DIR,)) as out:
        write_file_at(out, name, record_json(record))
    return os.path.join(outbox_dir(topdir), name)


def committed_name(name):
    return name[:-len(UNCOMMITTED)] + COMMITTED if name.endswith(UNCOMMITTED) else name


def mark_committed(uncommitted_path):
    """Koji committed the signature: the record becomes the worker's."""
    topdir, name = outbox_location(uncommitted_path)
    with logs_dir(topdir, (OUTBOX_DIR,), create=False) as out:
        os.rename(name, committed_name(name), src_dir_fd=out, dst_dir_fd=out)
        os.fsync(out)
    return os.path.join(os.path.dirname(uncommitted_path), committed_name(name))


@contextlib.contextmanager
def subdir(dirfd, part, create=True):
    """A subdirectory of dirfd, opened without following a link."""
    fd = open_subdir(dirfd, part, create)
    try:
        yield fd
    finally:
        os.close(fd)


def set_aside(path, record, folder, reason):
    """Move a record out of the queue, with the reason, to be looked at.

    The rename comes first: if a hub committed the record meanwhile, the
    rename fails and the record stays where the hub put it.
    """
    topdir, name = outbox_location(path)
    with logs_dir(topdir, (OUTBOX_DIR,)) as out, subdir(out, folder) as aside:
        os.rename(name, committed_name(name), src_dir_fd=out, dst_dir_fd=aside)
        record['set_aside'] = {'reason': reason, 'time': int(time.time())}
        write_file_at(aside, committed_name(name), record_json(record))


def set_aside_as_is(out, name, reason):
    """Move what is not a valid record, as it is (a link stays a link, never
    followed), to rejected/, with the reason in <name>.reason."""
    try:
        with subdir(out, 'rejected') as aside:
            os.rename(name, name, src_dir_fd=out, dst_dir_fd=aside)
            write_file_at(aside, name + '.reason', (reason + '\n').encode())
    except (OSError, RekorLogError) as e:
        LOG.error('rekor_log: failed %s (left in the outbox, cannot set it aside: %s): not a '
                  'valid record: %s', name, failure_cause(e), reason)
        return
    LOG.error('rekor_log: failed %s (for good, set aside in rejected/): not a valid record: %s',
              name, reason)


def still_named(dirfd, name, fd):
    """Whether name in dirfd is still the file open as fd: updates replace a
    record's file, so the lock taken on an older one claims nothing."""
    try:
        now = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino)


@contextlib.contextmanager
def claimed(path):
    """Hold a record against every other hub process and worker; yields the
    checked record, or None when it is gone or another process holds it.
    A file that is not a valid record is set aside in rejected/ with the
    reason, and BadRecord raised.

    The lock is on the record file itself, and the name is checked to still
    be the locked file, since updates replace the file.
    """
    topdir, name = outbox_location(path)
    in_process = thread_lock(path)
    if not in_process.acquire(blocking=False):
        yield None
        return
    try:
        try:
            out = open_logs_dir(topdir, (OUTBOX_DIR,), create=False)
        except FileNotFoundError:
            yield None
            return
        try:
            try:
                fd = os.open(name, os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                             dir_fd=out)
            except FileNotFoundError:
                yield None
                return
            except OSError as e:
                if e.errno not in (errno.ELOOP, errno.EISDIR, errno.ENXIO):
                    raise
                reason = 'a symlink or not a regular file: not followed'
                set_aside_as_is(out, name, reason)
                raise BadRecord('%s: %s' % (name, reason))
            try:
                try:
                    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    yield None
                    return
                if not still_named(out, name, fd):
                    yield None
                    return
                held = os.fstat(fd)
                CLAIMS[path] = (held.st_dev, held.st_ino)
                try:
                    # Read through the descriptor that holds the lock: closing
                    # any other one of the file would drop this process's locks.
                    record = check_record(parse_json(read_regular_file(fd, name), name), name)
                except RekorLogError as e:
                    set_aside_as_is(out, name, str(e))
                    raise BadRecord('%s: %s' % (name, e))
                yield record
            finally:
                CLAIMS.pop(path, None)
                os.close(fd)
        finally:
            os.close(out)
    finally:
        in_process.release()


def list_outbox(topdir, folder=None):
    """The file names in the outbox (or one of its folders); [] when none."""
    try:
        with logs_dir(topdir, (OUTBOX_DIR,) + ((folder,) if folder else ()), create=False) as fd:
            return sorted(os.listdir(fd))
    except FileNotFoundError:
        return []


# path -> (st_dev, st_ino) of the record file this process holds in claimed():
# the thread lock makes the holder of an entry its only user.
CLAIMS = {}


def remove_record(path):
    """Remove a record; one claimed (claimed()) only if it is still the file
    claimed: a signature queued again during its upload replaces the file,
    and that newer record must stay for the next pass."""
    topdir, name = outbox_location(path)
    held = CLAIMS.get(path)
    with contextlib.suppress(FileNotFoundError), \
            logs_dir(topdir, (OUTBOX_DIR,), create=False) as out:
        if held is None:
            os.unlink(name, dir_fd=out)
            return
        # Take whatever the name holds now, atomically, then look at it: a
        # stat then an unlink by name would remove a record renamed in between.
        # (A dot name: no worker or listing takes it for a record.)
        aside = '.%s.%s.done' % (name, os.urandom(4).hex())
        os.rename(name, aside, src_dir_fd=out, dst_dir_fd=out)
        try:
            info = os.stat(aside, dir_fd=out, follow_symlinks=False)
            if (info.st_dev, info.st_ino) != held:
                # Queued again meanwhile: put it back, unless a still newer one is there.
                with contextlib.suppress(FileExistsError):
                    os.link(aside, name, src_dir_fd=out, dst_dir_fd=out, follow_symlinks=False)
        finally:
            os.unlink(aside, dir_fd=out)
            os.fsync(out)


def deliver(settings, topdir, path, record, verified_receipt=None, deadline=None,
            spent=None, **shared):
    """Finish one committed record: upload it, write the receipt, remove the
    record. On failure, keep the record with its attempt count and cause,
    or set it aside for good. A failure of the log makes the record wait for
    the log (due as soon as it answers); one of the record's own backs off
    per record.

    A receipt kept in a record is never written as it stands: only one this
    process built from an entry it just verified (verified_receipt, under
    enforce), or one rebuilt from the kept entry after verifying it again.
    """
    nvra, sigkey = record['nvra'], record['sigkey']
    result = 'logged'
    try:
        if verified_receipt is not None and record.get('receipt') == verified_receipt:
            receipt = verified_receipt
        else:
            if record.get('receipt'):
                outcome = reverify_receipt(settings, record, topdir)
            else:
                outcome = log_signature(settings, record['build'], record['rpm'], sigkey,
                                        topdir, deadline, spent, record.get('sighash'),
                                        **shared)
                clear_outage(topdir)
                if not outcome.created:
                    result = 'already in the log'
            receipt = outcome.receipt
            log_outcome(nvra, sigkey, outcome)
        write_receipt(settings, topdir, record['rpm'], sigkey, receipt)
    except Exception as e:
        cause = failure_cause(e)
        if getattr(e, 'permanent', False):
            try:
                set_aside(path, record, 'rejected', cause)
            except (OSError, RekorLogError) as aside:
                # Kept, then: a record is never lost.
                cause = '%s; cannot set it aside: %s' % (cause, failure_cause(aside))
            else:
                LOG.error('rekor_log: failed %s sigkey %s (for good, set aside in rejected/): %s',
                          nvra, sigkey, cause)
                return 'rejected'
        record['attempts'] += 1
        record['last_error'] = cause
        if getattr(e, 'next_pass', False):
            record['next_attempt'] = 0   # the log catches up with itself: no outage
        elif getattr(e, 'about_the_log', False):
            record['next_attempt'] = 0
            record_outage(settings, topdir, cause, getattr(e, 'closed', False))
        else:
            record['next_attempt'] = int(time.time()) + min(
                OUTBOX_BACKOFF * 2 ** min(record['attempts'] - 1, 30), OUTBOX_BACKOFF_MAX)
        write_record(path, record)
        LOG.error('rekor_log: failed %s sigkey %s (attempt %d, kept in the outbox): %s',
                  nvra, sigkey, record['attempts'], cause)
        return 'failed'
    # The receipt is durable; the removal need not be: a record that comes
    # back after a crash meets 409 and ends in the same receipt.
    remove_record(path)  # (or already set aside by an admin meanwhile)
    return result


def record_identity(path):
    """(nvra, sigkey) from a record's file name <nvra>.<sigkey>.json."""
    stem = os.path.basename(path).rsplit('.', 1)[0]
    return tuple(stem.rsplit('.', 1))


def failure_cause(exc):
    if isinstance(exc, RekorLogError):
        return str(exc)
    return 'unexpected %s: %s' % (type(exc).__name__, exc)


# ---------------------------------------------------------------------------
# Callbacks
#
# postRPMSign runs inside Koji's transaction, postCommit after it commits
# (never after a rollback). Without enforce, the upload waits for the
# commit; with enforce, it happens in postRPMSign so a failure rolls the
# signature back, and the receipt is written at commit.
# ---------------------------------------------------------------------------

@callback('postRPMSign')
def rpm_signed(cbtype, *args, **kws):
    sigkey, rpminfo, build = kws.get('sigkey'), kws['rpm'], kws['build']
    nvra = nvra_of(rpminfo)
    if not sigkey:
        LOG.debug('rekor_log: %s imported without a signature, nothing to log', nvra)
        return
    if rpminfo.get('external_repo_id'):
        LOG.debug('rekor_log: %s is from external repo %s, not logged',
                  nvra, rpminfo.get('external_repo_name'))
        return
    topdir = koji.pathinfo.topdir
    record = new_record(build, rpminfo, sigkey, kws.get('sighash'))
    # Queued first: even a configuration error loses no signature.
    try:
        path, queue_error = queue_signature(topdir, record), None
    except (OSError, RekorLogError) as e:
        path, queue_error = None, e
    settings = config_for_import(nvra, sigkey, path)
    if settings is None:
        return
    if queue_error is not None:
        report_failure(settings, nvra, sigkey, RekorLogError('cannot queue it in %s: %s' % (
            outbox_dir(topdir), getattr(queue_error, 'strerror', None) or queue_error)))
        return
    if settings.enforce:
        try:
            signed = locate_signed_rpm(build, rpminfo, sigkey)
            bound = enforce_bound(settings, signed.size())
            outcome = log_signature(settings, build, rpminfo, sigkey, topdir,
                                    time.monotonic() + bound,
                                    'no answer within the %s enforce allows' % seconds(bound),
                                    kws.get('sighash'))
        except Exception as e:
            remove_record(path)
            report_failure(settings, nvra, sigkey, e)  # raises: Koji rolls back
        log_outcome(nvra, sigkey, outcome)
        record['receipt'] = outcome.receipt
        write_record(path, record)
        verified_receipts()[path] = outcome.receipt
    add_pending(path)


def config_for_import(nvra, sigkey, path):
    """The settings; on a configuration error, fail the import (Koji rolls
    back, the queued record goes) unless the file parses and sets enforce to
    false, in which case the signature waits in the outbox (None)."""
    try:
        return get_config()
    except koji.ConfigurationError as e:
        if path is not None and enforce_explicitly_off(CONFIG_FILE):
            LOG.error('rekor_log: failed %s sigkey %s (kept in the outbox): configuration: %s',
                      nvra, sigkey, e)
            add_pending(path)
            return None
        if path is not None:
            remove_record(path)
        LOG.error('rekor_log: failed %s sigkey %s (the import fails): configuration: %s',
                  nvra, sigkey, e)
        # from None: Koji formats the traceback into the fault and the hub
        # log; the message holds the cause, one traceback is enough.
        raise koji.CallbackError('Rekor upload of %s (sigkey %s) failed: configuration: %s'
                                 % (nvra, sigkey, e)) from None


def add_pending(path):
    pending = pending_records()
    if path not in pending:  # the same signature twice in one multicall
        pending.append(path)


def reclaim_rolled_back(uncommitted):
    """A worker judged this request dead (it outlived COMMIT_GRACE) and set
    its record aside as rolled back; Koji has now committed it: take it back."""
    topdir, name = outbox_location(uncommitted)
    name = committed_name(name)
    try:
        with logs_dir(topdir, (OUTBOX_DIR,), create=False) as out, \
                subdir(out, 'rolled-back', create=False) as aside:
            os.rename(name, name, src_dir_fd=aside, dst_dir_fd=out)
    except FileNotFoundError:
        return None
    LOG.warning('rekor_log: %s was set aside as rolled back, but Koji committed it: queued again',
                name)
    return os.path.join(os.path.dirname(uncommitted), name)


def request_context(attr, factory):
    from koji.context import context
    if not hasattr(context, attr):
        setattr(context, attr, factory())
    return getattr(context, attr)


def pending_records():
    """The records queued in this hub request (Koji's request context)."""
    return request_context('rekor_log_pending', list)


def verified_receipts():
    """Receipts built in this hub request from entries just verified."""
    return request_context('rekor_log_receipts', dict)


@callback('postCommit')
@ignore_error
def signatures_committed(cbtype, *args, **kws):
    paths = pending_records()
    if not paths:
        return
    receipts = verified_receipts()
    topdir = koji.pathinfo.topdir
    committed = []
    while paths:
        uncommitted = paths.pop(0)
        try:
            path = mark_committed(uncommitted)
        except FileNotFoundError:
            path = reclaim_rolled_back(uncommitted)
            if path is None:
                LOG.error('rekor_log: cannot commit %s: the record is gone', uncommitted)
                continue
        except (OSError, RekorLogError) as e:
            LOG.error('rekor_log: cannot commit %s: %s', uncommitted, failure_cause(e))
            continue
        committed.append((path, receipts.pop(uncommitted, None)))
    try:
        settings = get_config()
    except koji.ConfigurationError as e:
        LOG.error('rekor_log: %s in the outbox: configuration: %s',
                  counted(len(committed), 'signature waits', 'signatures wait'), e)
        return
    # Without enforce, the log gets hub_budget seconds of this request in
    # all (a Rekor v2 shard at most V2_HUB_HOLD); what does not finish
    # within it is the worker's.
    budget = min(settings.hub_budget, V2_HUB_HOLD) if settings.api == 2 else settings.hub_budget
    deadline = time.monotonic() + budget
    spent = 'the hub budget of %s is spent; left for the worker' % seconds(budget)
    for path, receipt in committed:
        if settings.queue_only:
            LOG.info('rekor_log: queued %s sigkey %s for the worker', *record_identity(path))
            continue
        try:
            with claimed(path) as record:
                if record is None:
                    continue
                reason = None if record.get('receipt') else worker_reason(
                    settings, topdir, record, deadline)
                if reason:
                    LOG.info('rekor_log: left %s sigkey %s for the worker: %s',
                             record['nvra'], record['sigkey'], reason)
                else:
                    deliver(settings, topdir, path, record, receipt, deadline, spent)
        except BadRecord:
            continue  # set aside and logged


# A Rekor v2 write blocks until the shard publishes its next checkpoint
# (rekor-tiles: tessera's publication awaiter; about a second in production,
# a few under load). Without enforce the hub holds a request for v2 at most
# V2_HUB_HOLD seconds, and leaves the upload to the worker when less than
# V2_CHECKPOINT_WAIT is left of that.
V2_HUB_HOLD = 10.0
V2_CHECKPOINT_WAIT = 5.0


def worker_reason(settings, topdir, record, deadline):
    """Why the hub leaves a record to the worker without trying, or None:
    the budget is spent, the RPM cannot be sent within what is left of it
    at min_rate (v1), a v2 checkpoint wait does not fit in it, or the log
    is failing."""
    left = deadline - time.monotonic()
    if left <= 0:
        return 'the hub budget of %s is spent' % seconds(settings.hub_budget)
    if settings.api == 2:
        if left < V2_CHECKPOINT_WAIT:
            return 'a Rekor v2 upload waits for the next checkpoint (up to %s), more than ' \
                'the %s left of the hub budget' % (seconds(V2_CHECKPOINT_WAIT), seconds(left))
        outage = read_outage(settings, topdir)
        if outage and time.time() < outage.next_probe:
            return 'the log is failing (%s)' % outage.last_error
        return None
    try:
        size = locate_signed_rpm(record['build'], record['rpm'], record['sigkey']).size()
    except (RekorLogError, OSError, KeyError, TypeError):
        size = 0  # deliver() reports it
    if body_size(size) / settings.min_rate > left:
        return 'an RPM of %d MiB cannot be sent within the hub budget of %s at [rekor] ' \
            'min_rate' % (size // (1024 * 1024), seconds(settings.hub_budget))
    outage = read_outage(settings, topdir)
    if outage and outage.closed:
        return 'the log no longer takes entries (%s)' % outage.last_error
    if outage and time.time() < outage.next_probe:
        return 'the log is failing (%s)' % outage.last_error


def report_failure(settings, nvra, sigkey, exc):
    """Log the cause on one line; under enforce, fail the hub call so Koji
    rolls the signature back."""
    cause = failure_cause(exc)
    LOG.error('rekor_log: failed %s sigkey %s%s: %s', nvra, sigkey,
              ' (enforce: the import is rolled back)' if settings.enforce else '', cause,
              exc_info=None if isinstance(exc, RekorLogError) else exc)
    if settings.enforce:
        raise koji.CallbackError('Rekor upload of %s (sigkey %s) failed: %s'
                                 % (nvra, sigkey, cause)) from None  # as config_for_import


# ---------------------------------------------------------------------------
# Hub call: rekorLogStatus
#
# Read-only: what became of each signature of an RPM, from its receipt and
# the outbox. A receipt counts as logged only once it verifies offline
# (log key, inclusion proof, checkpoint, SET, and the body against that
# signature's signed copy of the RPM); one that does not is reported so.
# ---------------------------------------------------------------------------

@export
def rekorLogStatus(rpm):
    """Per signature of an RPM (its ID or N-V-R.A): logged, queued, set
    aside (rejected or rolled back), unverified or not logged."""
    # kojihub exists only inside the hub, which has loaded it by the time
    # a call runs; importing it here keeps this module usable elsewhere.
    import kojihub
    rpminfo = kojihub.get_rpm(rpm, strict=True)
    sigkeys = sorted({sig['sigkey'] for sig in kojihub.query_rpm_sigs(rpm_id=rpminfo['id'])
                      if sig['sigkey']})  # '' is an unsigned header, not a signature
    if rpminfo.get('external_repo_id'):
        return [signature_status(rpminfo, sigkey, 'not logged', reason=(
            'from external repo %s: the plugin logs only what this Koji signs'
            % rpminfo.get('external_repo_name'))) for sigkey in sigkeys]
    settings = get_config()
    build = kojihub.get_build(rpminfo['build_id'], strict=True)
    return [status_of_signature(settings, koji.pathinfo.topdir, build, rpminfo, sigkey)
            for sigkey in sigkeys]


def signature_status(rpminfo, sigkey, status, **fields):
    return dict(fields, rpm_id=rpminfo['id'], nvra=nvra_of(rpminfo), sigkey=sigkey,
                status=status)


def status_of_signature(settings, topdir, build, rpminfo, sigkey):
    path = receipt_path(topdir, rpminfo, sigkey)
    try:
        receipt = read_receipt(topdir, rpminfo, sigkey)
    except RekorLogError as e:  # a link, not a file, not JSON: not believed
        receipt, unreadable = None, e
    else:
        unreadable = None
    if receipt is not None or unreadable:
        try:
            if unreadable:
                raise unreadable
            return signature_status(rpminfo, sigkey, 'logged', **check_receipt(
                settings, topdir, build, rpminfo, sigkey, path, receipt))
        except Exception as e:
            return signature_status(rpminfo, sigkey, 'unverified', receipt=path,
                                    reason='the receipt does not verify: %s' % failure_cause(e))
    name = record_name(rpminfo, sigkey)
    for status, folder, suffix in (('queued', None, COMMITTED), ('queued', None, UNCOMMITTED),
                                   ('rejected', 'rejected', COMMITTED),
                                   ('rolled back', 'rolled-back', COMMITTED)):
        record_path = os.path.join(outbox_dir(topdir), folder or '', name + suffix)
        try:
            record = read_outbox_file(topdir, folder, name + suffix)
        except RekorLogError as e:
            return signature_status(rpminfo, sigkey, status, record=record_path,
                                    reason='the record is unreadable: %s' % e)
        if record is not None:
            return signature_status(rpminfo, sigkey, status, record=record_path,
                                    **record_fields(record, status, suffix))
    return signature_status(rpminfo, sigkey, 'not logged', reason=(
        'no receipt and nothing in the outbox' if settings.record_log_info else
        '[upload] record_log_info is off: no receipts are kept'))


def read_outbox_file(topdir, folder, name):
    """A record of the outbox (or of one of its folders), parsed, read
    without following links; None when absent."""
    try:
        with logs_dir(topdir, (OUTBOX_DIR,) + ((folder,) if folder else ()),
                      create=False) as fd:
            data = read_file_at(fd, name)
    except FileNotFoundError:
        return None
    return parse_json(data, name) if data is not None else None


def check_receipt(settings, topdir, build, rpminfo, sigkey, path, receipt):
    """Verify a receipt offline against the signed RPM Koji holds for this
    signature; returns what it proves."""
    if isinstance(receipt, dict) and receipt.get('rekor_api') == 2:
        try:
            return check_v2_receipt(settings, build, rpminfo, sigkey, path, receipt)
        except Exception as e:
            raise v2_error(e) from None
    entries = receipt.get('log_entry') if isinstance(receipt, dict) else None
    if not isinstance(entries, dict) or len(entries) != 1:
        raise VerificationError('%s holds no single Rekor entry' % path)
    (entry_id, entry), = entries.items()
    key, _ = known_log_key(settings, state_dir(topdir))
    if key is None:
        raise VerificationError('no log key for %s to check it with' % display_url(settings.url))
    verified = verify_log_entry(entry_id, entry, key, settings.origin_host)
    signed = locate_signed_rpm(build, rpminfo, sigkey)
    with signed.open() as fo:
        sha256 = sha256_of(fo)
    key_path = public_key_file(settings, sigkey)
    public_key = read_public_key(key_path)
    with RPM_LOCK:
        hdr = check_key_signed_rpm(signed, public_key, key_path)
    verify_rpm_body(verified.body, expected_from_header(hdr, sha256, public_key))
    return {'entry_id': verified.entry_id, 'log_index': verified.log_index,
            'integrated_time': verified.integrated_time, 'receipt': path}


def check_v2_receipt(settings, build, rpminfo, sigkey, path, receipt):
    """check_receipt for a v2 receipt: its entry verifies with the key of
    the shard it names (one the configuration knows), and its body is the
    hashedrekord built anew from the signature Koji holds."""
    from rekor_v2 import entry as v2entry, hashedrekord
    urls = [u for u in v2_shards(settings) if display_url(u) == receipt.get('rekor_url')]
    if not urls:
        raise VerificationError('%s names a Rekor v2 shard the configuration does not (%r)'
                                % (path, receipt.get('rekor_url')))
    signed = locate_signed_rpm(build, rpminfo, sigkey)
    armored = read_public_key(public_key_file(settings, sigkey))
    body = hashedrekord.from_rpm_file(signed.path, armored, sighdr=signed.sighdr
                                      if signed.spliced else None).canonical_body()
    if receipt.get('body') != base64.b64encode(body).decode('ascii'):
        raise VerificationError('%s: its body is not the entry of this signature' % path)
    tle = receipt.get('transparency_log_entry')
    verified = v2entry.verify_entry(tle if isinstance(tle, dict) else {}, body,
                                    v2_log_key(settings, urls[0], v2_trusted_logs(settings)))
    return {'entry_id': None, 'log_index': verified.entry.log_index, 'integrated_time': None,
            'receipt': path, 'rekor_api': 2}


def record_fields(record, status, suffix):
    """What an outbox record says, read as input: only fields of the
    expected types are passed on."""
    record = record if isinstance(record, dict) else {}
    fields = {}
    if status == 'queued':
        fields['committed'] = suffix == COMMITTED
        for name, kind in (('attempts', int), ('last_error', str), ('next_attempt', int),
                           ('queued', int)):
            if isinstance(record.get(name), kind) and not isinstance(record.get(name), bool):
                fields[name] = record[name]
    else:
        aside = record.get('set_aside') if isinstance(record.get('set_aside'), dict) else {}
        if isinstance(aside.get('reason'), str):
            fields['reason'] = aside['reason']
        if isinstance(aside.get('time'), int):
            fields['time'] = aside['time']
    return fields
