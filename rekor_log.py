# Koji hub plugin: record every RPM signature Koji imports in a Sigstore
# Rekor transparency log, verify what the log answers, and keep a receipt.
#
# Enable in /etc/koji-hub/hub.conf with "Plugins = rekor_log"; configure in
# /etc/koji-hub/plugins/rekor_log.conf. The same module is the `koji-rekor`
# command line (python -m rekor_log).
#
# SPDX-License-Identifier: LGPL-2.1-only

import argparse
import base64
import binascii
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import sys
import tempfile
import threading
import time
import urllib.parse
from dataclasses import dataclass, field

import koji
from koji.plugin import callback, ignore_error

__version__ = '0.1.0'

CONFIG_FILE = '/etc/koji-hub/plugins/rekor_log.conf'
CONFIG = None
LOG = logging.getLogger('koji.plugin.rekor_log')

DEFAULT_URL = 'https://rekor.sigstore.dev'
HUB_CONFIG_FILE = '/etc/koji-hub/hub.conf'
KOJI_CLIENT_CONFIG = '/etc/koji.conf'
DEFAULT_TOPDIR = '/mnt/koji'
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


class RekorUnavailable(RekorLogError):
    """Rekor could not be reached or answered with a server error."""


class VerificationError(RekorLogError):
    """Something the log returned does not verify."""


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

    @property
    def origin_host(self):
        """The host a checkpoint's origin must name."""
        return self.origin or urllib.parse.urlsplit(self.url).hostname


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
]

BOOLEANS = {'1': True, 'yes': True, 'true': True, 'on': True,
            '0': False, 'no': False, 'false': False, 'off': False}


def get_config():
    """The plugin's settings, read once per process as Koji's plugins do."""
    global CONFIG
    if CONFIG is None:
        CONFIG = load_config(CONFIG_FILE)
    return CONFIG


def load_config(path):
    """Read and check a configuration file; a missing file means defaults."""
    parser = koji.read_config_files([(path, False)], raw=True)
    settings = Settings()
    for (section, option), (attr, kind) in OPTIONS:
        if parser.has_option(section, option):
            raw = parser.get(section, option).strip()
            setattr(settings, attr, parse_option(section, option, kind, raw))
    check_url(settings)
    if settings.enforce and settings.queue_only:
        raise koji.ConfigurationError('[upload] queue_only: cannot be combined with enforce, '
                                      'which must upload before Koji commits')
    return settings


def parse_option(section, option, kind, raw):
    """Convert one option's text, or raise ConfigurationError naming it."""
    name = '[%s] %s' % (section, option)
    if kind == 'bool':
        if raw.lower() not in BOOLEANS:
            raise koji.ConfigurationError('%s: %r is not a boolean' % (name, raw))
        return BOOLEANS[raw.lower()]
    if kind in ('seconds', 'count'):
        try:
            value = float(raw) if kind == 'seconds' else int(raw)
        except ValueError:
            value = -1
        if value < 0 or (kind == 'seconds' and value == 0):
            raise koji.ConfigurationError('%s: %r is not a valid %s' % (
                name, raw, 'number of seconds' if kind == 'seconds' else 'count'))
        return value
    if kind in ('file', 'pem') and not os.path.isfile(raw):
        raise koji.ConfigurationError('%s: no such file: %s' % (name, raw))
    if kind == 'pem':
        try:
            read_log_key(raw)
        except VerificationError as e:
            raise koji.ConfigurationError('%s: %s: %s' % (name, raw, e))
    if kind == 'dir' and not os.path.isdir(raw):
        raise koji.ConfigurationError('%s: no such directory: %s' % (name, raw))
    return raw


def check_url(settings):
    parts = urllib.parse.urlsplit(settings.url)
    if parts.scheme not in ('https', 'http') or not parts.hostname:
        raise koji.ConfigurationError('[rekor] url: %r is not an http(s) URL' % settings.url)
    if parts.scheme == 'http' and not settings.allow_insecure_http:
        raise koji.ConfigurationError(
            '[rekor] url: %s is plain http; set allow_insecure_http = true to allow it'
            % settings.url)
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
        if self.spliced:
            return koji.spliced_sig_reader(self.path, self.sighdr, bufsize=CHUNK_SIZE)
        return open(self.path, 'rb')

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


def nvra_of(rpminfo):
    return '%(name)s-%(version)s-%(release)s.%(arch)s' % rpminfo


def locate_signed_rpm(build, rpminfo, sigkey):
    """Find the signed RPM as the hub's add_rpm_sig left it."""
    nvra = nvra_of(rpminfo)
    builddir = koji.pathinfo.build(build)
    signed = os.path.join(builddir, koji.pathinfo.signed(rpminfo, sigkey))
    if os.path.isfile(signed):
        return SignedRpm(nvra, sigkey, signed, read_sighdr_of_rpm(signed), spliced=False)
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
        return ts.hdrFromFdno(fd)
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


# ---------------------------------------------------------------------------
# The entry
# ---------------------------------------------------------------------------

class EntryBody:
    """The JSON of a proposed rpm entry, produced chunk by chunk.

    requests sends an iterable with a length as a Content-Length body, so
    the RPM is read, hashed and base64-encoded a chunk at a time: memory
    stays flat whatever the RPM's size. Rekor's schema is fixed and small,
    so the JSON around the two base64 strings is written by hand.
    """

    def __init__(self, signed, public_key):
        self.signed = signed
        self.rpm_size = signed.size()
        self.prefix = b'{"kind":"rpm","apiVersion":"0.0.1","spec":{"package":{"content":"'
        self.suffix = (b'"},"publicKey":{"content":"' + base64.b64encode(public_key) + b'"}}}')
        self.sha256 = None

    def __len__(self):
        return len(self.prefix) + 4 * ((self.rpm_size + 2) // 3) + len(self.suffix)

    def __iter__(self):
        digest = hashlib.sha256()
        sent = 0
        yield self.prefix
        with self.signed.open() as fo:
            pending = b''
            while True:
                data = fo.read(CHUNK_SIZE)
                if not data:
                    break
                digest.update(data)
                sent += len(data)
                data = pending + data
                cut = len(data) - len(data) % 3
                pending = data[cut:]
                yield base64.b64encode(data[:cut])
            yield base64.b64encode(pending)
        if sent != self.rpm_size:
            # The file changed under us: the Content-Length already sent is
            # wrong, so abort the request rather than send a corrupt entry.
            raise SourceGone('%s changed while it was being sent (%d bytes, expected %d)'
                                       % (self.signed.nvra, sent, self.rpm_size))
        self.sha256 = digest.hexdigest()
        yield self.suffix


# ---------------------------------------------------------------------------
# The Rekor client
# ---------------------------------------------------------------------------

class RekorClient:
    """Rekor v1's REST API: one requests session, bounded retries."""

    def __init__(self, settings):
        import requests  # imported on first use: the hub pays only when it logs
        self.requests = requests
        self.settings = settings
        self.url = settings.url
        self.session = requests.Session()
        self.session.verify = settings.ca_bundle or True
        self.session.headers['User-Agent'] = 'koji-rekor/%s' % __version__

    def close(self):
        self.session.close()

    def with_retries(self, what, attempt):
        """Run attempt(); retry transient failures with doubling delays,
        within (retries + 1) attempts and a bounded total time."""
        settings = self.settings
        deadline = time.monotonic() + (settings.retries + 1) * settings.timeout \
            + settings.backoff * (2 ** settings.retries)
        delay = settings.backoff
        for number in range(settings.retries + 1):
            try:
                return attempt()
            except RekorUnavailable as e:
                last = e
                if number == settings.retries or time.monotonic() + delay > deadline:
                    break
                LOG.debug('rekor_log: %s failed (%s), retrying in %.1fs', what, e, delay)
                time.sleep(delay)
                delay *= 2
        raise RekorUnavailable('%s (after %d attempts)' % (last, number + 1))

    def request(self, method, path_or_url, **kws):
        url = urllib.parse.urljoin(self.url + '/', path_or_url)
        try:
            return self.session.request(method, url, timeout=self.settings.timeout,
                                        allow_redirects=False, **kws)
        except self.requests.Timeout:
            raise RekorUnavailable('Rekor at %s timed out after %ss' % (self.url, self.settings.timeout))
        except self.requests.ConnectionError as e:
            raise RekorUnavailable('cannot reach Rekor at %s: %s' % (self.url, short_reason(e)))
        except self.requests.RequestException as e:
            raise RekorUnavailable('request to Rekor at %s failed: %s' % (self.url, short_reason(e)))

    def create_entry(self, body):
        """POST a proposed entry; returns (entry_id, entry, created)."""
        def attempt():
            response = self.request('POST', ENTRIES_PATH, data=body, headers={
                'Content-Type': 'application/json', 'Accept': 'application/json'})
            if response.status_code == 201:
                return single_entry(response) + (True,)
            if response.status_code == 409:
                location = response.headers.get('Location')
                if not location:
                    raise RekorUnavailable('Rekor answered 409 without a Location header')
                return self.get_entry(location) + (False,)
            raise_for_status(response, body)
        return self.with_retries('upload', attempt)

    def get_entry(self, location):
        """GET one entry by its URL path (as in a Location header)."""
        def attempt():
            response = self.request('GET', location, headers={'Accept': 'application/json'})
            if response.status_code == 200:
                return single_entry(response)
            raise_for_status(response)
        return self.with_retries('fetch of %s' % location, attempt)

    def log_public_key(self):
        def attempt():
            response = self.request('GET', PUBLIC_KEY_PATH)
            if response.status_code == 200:
                return response.content
            raise_for_status(response)
        return self.with_retries('fetch of the log key', attempt)

    def json_answer(self, what, method, path, valid, **kws):
        """A 200 answer's JSON, retried like any request, or
        RekorUnavailable when it is not what valid() accepts."""
        def attempt():
            response = self.request(method, path, headers={'Accept': 'application/json'}, **kws)
            if response.status_code == 200:
                data = json_of(response)
                if not valid(data):
                    raise RekorUnavailable('malformed %s from Rekor' % what)
                return data
            raise_for_status(response)
        return self.with_retries(what, attempt)

    def consistency_proof(self, first_size, last_size, tree_id):
        return self.json_answer('consistency proof', 'GET', PROOF_PATH, is_object, params={
            'firstSize': first_size, 'lastSize': last_size, 'treeID': tree_id})

    def log_info(self):
        """The active tree's signed head, and those of inactive shards."""
        return self.json_answer('log info', 'GET', LOG_INFO_PATH, is_object)

    def search_index(self, query):
        """The entry IDs (or bare UUIDs) Rekor's index has for a query."""
        return self.json_answer(
            'index search answer', 'POST', INDEX_PATH,
            lambda found: isinstance(found, list) and all(isinstance(i, str) for i in found),
            json=query)

    def retrieve_entries(self, entry_ids):
        """[(entryID, entry)] for at most RETRIEVE_BATCH IDs; Rekor leaves
        out the ones it does not have."""
        found = self.json_answer(
            'entries', 'POST', RETRIEVE_PATH,
            lambda found: isinstance(found, list) and all(
                is_object(e) and all(is_object(v) for v in e.values()) for e in found),
            json={'entryUUIDs': entry_ids})
        return [item for entries in found for item in entries.items()]


def is_object(value):
    return isinstance(value, dict)


def short_reason(exc):
    """The innermost reason of a requests/urllib3 error, on one line."""
    reason = exc
    while reason.__context__ is not None and not isinstance(reason, OSError):
        reason = reason.__context__
    text = str(reason.args[-1] if isinstance(reason, OSError) and reason.args else reason)
    return ' '.join(text.split())


def json_of(response):
    try:
        return response.json()
    except ValueError:
        raise RekorUnavailable('malformed reply from Rekor (HTTP %d, not JSON)'
                               % response.status_code)


def single_entry(response):
    """A Rekor answer is {entryID: LogEntry} with exactly one entry."""
    data = json_of(response)
    if not isinstance(data, dict) or len(data) != 1:
        raise RekorUnavailable('malformed reply from Rekor: not a single log entry')
    (entry_id, entry), = data.items()
    if not isinstance(entry, dict):
        raise RekorUnavailable('malformed reply from Rekor: entry is not an object')
    return entry_id, entry


def rekor_message(response):
    try:
        message = response.json().get('message')
    except (ValueError, AttributeError):
        message = None
    return ' '.join((message or response.reason or '').split())


def raise_for_status(response, body=None):
    """Turn a Rekor error answer into the matching error."""
    status, message = response.status_code, rekor_message(response)
    if status >= 500 or status == 429:
        raise RekorUnavailable('Rekor answered %d: %s' % (status, message))
    if status == 413:
        size = ' (request of %d bytes)' % len(body) if body is not None else ''
        raise RekorRejected('Rekor refused the upload as too large%s: %s' % (size, message))
    if any(text in message for text in NO_USABLE_SIGNATURE):
        raise RekorRejected(
            'Rekor found no signature it can check (%s): this Rekor needs a header+payload '
            'signature (rpmsign --rpmv3) or must be version 1.5.4 or newer for header-only '
            'signatures' % message)
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


def load_log_key(pem):
    from cryptography.hazmat.primitives.serialization import load_pem_public_key
    try:
        return load_pem_public_key(pem)
    except (ValueError, TypeError) as e:
        raise VerificationError('not a PEM public key: %s' % e)


def read_log_key(path):
    with open(path, 'rb') as fo:
        return load_log_key(fo.read())


def log_key_id(key):
    """SHA-256 of the DER SubjectPublicKeyInfo: Rekor's logID, and (first
    4 bytes) the key hint of its checkpoint signatures."""
    from cryptography.hazmat.primitives import serialization
    der = key.public_bytes(serialization.Encoding.DER,
                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).digest()


def signature_is_valid(key, signature, data):
    """ECDSA keys sign SHA-256 digests; Ed25519 keys sign the data."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
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
    text: str = ''


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
    return Checkpoint(lines[0], size, root, lines[3:], text), signatures


def verify_checkpoint(note, key, origin_host, tree_id):
    """The checkpoint is signed by the log key and names the expected log."""
    checkpoint, signatures = parse_checkpoint(note)
    hint = log_key_id(key)[:4]
    if not any(h == hint and signature_is_valid(key, sig, checkpoint.text.encode())
               for _, h, sig in signatures):
        raise VerificationError('checkpoint: no valid signature by the log key')
    host, sep, tree = checkpoint.origin.rpartition(' - ')
    if not sep or tree != str(tree_id):
        raise VerificationError('checkpoint: origin %r is not tree %s'
                                % (checkpoint.origin, tree_id))
    if origin_host is not None and host != origin_host:
        raise VerificationError('checkpoint: origin %r is not log %s'
                                % (checkpoint.origin, origin_host))
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
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in fields):
        raise VerificationError('entry has non-integer indexes or time')
    entry_tree, uuid = split_entry_id(entry_id)
    leaf = hash_leaf(body_bytes)
    if leaf.hex() != uuid:
        raise VerificationError('entry UUID %s is not the hash of its body' % uuid)
    if entry_tree is not None:
        tree_id = entry_tree
    if log_key_id(key).hex() != str(entry.get('logID', '')).lower():
        raise VerificationError('logID %s is not the log key' % entry.get('logID'))
    if root_from_inclusion_proof(proof['logIndex'], proof['treeSize'], leaf, hashes) != root:
        raise VerificationError('inclusion proof does not lead to root hash %s' % proof['rootHash'])
    verified = VerifiedEntry(entry_id, uuid, tree_id, entry['logIndex'], proof['logIndex'],
                             proof['treeSize'], root, entry['integratedTime'],
                             decode_body(body_bytes))
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
    except ValueError:
        raise VerificationError('entry body is not JSON')
    if not isinstance(body, dict):
        raise VerificationError('entry body is not an object')
    return body


def openpgp_primary_key(armored):
    """The primary public-key packet (RFC 4880, section 5.5.2) of an armored
    key: the same key Rekor re-armored compares equal here.

    Written by hand because none of the project's dependencies parses
    OpenPGP; only the armor (RFC 4880, section 6.2) and packet framing
    (section 4.2) are read.
    """
    lines = armored.decode('ascii', 'replace').replace('\r', '').split('\n')
    try:
        start = lines.index('', next(i for i, l in enumerate(lines) if l.startswith('-----BEGIN')))
        data = base64.b64decode(''.join(
            line for line in lines[start + 1:]
            if line and not line.startswith(('=', '-----'))))
    except (StopIteration, ValueError, binascii.Error):
        return None
    if len(data) < 2 or not data[0] & 0x80:
        return None
    first = data[0]
    if first & 0x40:
        tag, length_octet = first & 0x3f, data[1]
        if length_octet < 192:
            offset, length = 2, length_octet
        elif length_octet < 224:
            offset, length = 3, ((length_octet - 192) << 8) + data[2] + 192
        else:
            offset, length = 6, int.from_bytes(data[2:6], 'big')
    else:
        tag, kind = (first >> 2) & 0x0f, first & 0x03
        width = {0: 1, 1: 2, 2: 4}.get(kind)
        if width is None:
            return None
        offset, length = 1 + width, int.from_bytes(data[1:1 + width], 'big')
    return data[offset:offset + length] if tag == 6 else None


def openpgp_fingerprint(armored):
    """The fingerprint of an armored key's primary key, as 40 upper-case hex
    digits: RFC 4880, section 12.2, SHA-1 over 0x99, the two-octet length
    and the body of the public-key packet. None unless it is a version 4
    key, the only version whose fingerprint is defined so."""
    body = openpgp_primary_key(armored)
    if not body or body[0] != 4 or len(body) > 0xffff:
        return None
    return hashlib.sha1(b'\x99' + len(body).to_bytes(2, 'big') + body).hexdigest().upper()


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


def verify_rpm_body(body, expected):
    """The log recorded our package, our key and our NEVRA."""
    if body.get('kind') != 'rpm' or body.get('apiVersion') != '0.0.1':
        raise VerificationError('body is %s %s, not rpm 0.0.1'
                                % (body.get('kind'), body.get('apiVersion')))
    spec = body.get('spec') or {}
    package = spec.get('package') or {}
    digest = package.get('hash') or {}
    if digest.get('algorithm') != 'sha256' or digest.get('value') != expected.sha256:
        raise VerificationError('body records package %s:%s, we sent sha256:%s' % (
            digest.get('algorithm'), digest.get('value'), expected.sha256))
    headers = package.get('headers') or {}
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
        logged_key = base64.b64decode((spec.get('publicKey') or {}).get('content') or '')
    except binascii.Error:
        logged_key = b''
    ours = openpgp_primary_key(expected.public_key)
    if ours is None or openpgp_primary_key(logged_key) != ours:
        raise VerificationError('body records another public key than the one we sent')


# ---------------------------------------------------------------------------
# Log keys and checkpoints kept under <topdir>/rekor-logs/@state
# ---------------------------------------------------------------------------

def state_dir(topdir):
    return os.path.join(topdir, RECEIPT_DIR, STATE_DIR)


def resolve_log_key(settings, client, state):
    """The log key to trust: configured, shipped for the public instance, or
    pinned on first use under the state directory."""
    if settings.log_public_key:
        return read_log_key(settings.log_public_key)
    parts = urllib.parse.urlsplit(settings.url)
    if parts.hostname == PUBLIC_REKOR_HOST:
        return load_log_key(PUBLIC_REKOR_KEY)
    pinned = None
    if state:
        pinned = os.path.join(state, 'keys', '%s.pem' % parts.netloc.replace(':', '_'))
        if os.path.isfile(pinned):
            return read_log_key(pinned)
    pem = client.log_public_key()
    key = load_log_key(pem)
    LOG.warning('rekor_log: trusting the log key of %s on first use (logID %s)%s; set '
                '[rekor] log_public_key to pin it explicitly', settings.url,
                log_key_id(key).hex(), ', pinned in %s' % pinned if pinned else '')
    if pinned:
        write_atomic(pinned, pem)
    return key


# fcntl locks belong to a process, not a thread: the threads of one process
# (koji-rekor backfill --jobs) also take a lock of their own per path.
THREAD_LOCKS = {}
THREAD_LOCKS_GUARD = threading.Lock()


def thread_lock(path):
    with THREAD_LOCKS_GUARD:
        return THREAD_LOCKS.setdefault(path, threading.Lock())


@contextlib.contextmanager
def locked(path):
    """An exclusive POSIX lock on path + '.lock' (fcntl locks work on the
    NFS a topdir usually lives on), shared by every hub and worker."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with thread_lock(path):
        fd = os.open(path + '.lock', os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)


def checkpoint_dir(state, key):
    return os.path.join(state, 'checkpoints', log_key_id(key).hex())


def checkpoint_path(state, key, tree_id):
    return os.path.join(checkpoint_dir(state, key), '%d.json' % tree_id)


def saved_tree_head(state, key, tree_id):
    """(size, root hash) of the newest tree head kept for a tree, or None."""
    saved = read_json(checkpoint_path(state, key, tree_id))
    if saved is None:
        return None
    return saved['size'], bytes.fromhex(saved['root_hash'])


def check_consistency(client, state, key, tree_id, size, root_hash, checkpoint_text):
    """Prove that this tree head of the log extends (or is extended by) the
    newest one seen before, then keep the newer one. The plugin checks the
    tree head of each entry, the monitor the log's own."""
    path = checkpoint_path(state, key, tree_id)
    new = (size, root_hash)
    with locked(path):
        saved = read_json(path)
        if saved is not None:
            old = (saved['size'], bytes.fromhex(saved['root_hash']))
            (small, large) = sorted([old, new])
            proof = []
            if small[0] != large[0] and small[0] > 0:
                answer = client.consistency_proof(small[0], large[0], tree_id)
                if str(answer.get('rootHash', '')).lower() != large[1].hex():
                    raise VerificationError('split view: Rekor gives root %s for size %d, '
                                            'its checkpoint signed %s' % (
                                                answer.get('rootHash'), large[0], large[1].hex()))
                proof = [unhex(h, 'consistency proof hash') for h in answer.get('hashes') or []]
            try:
                verify_consistency(small[0], large[0], small[1], large[1], proof)
            except VerificationError as e:
                raise VerificationError('split view: the log is not consistent with the '
                                        'tree head seen before (%s)' % e)
            if new[0] <= old[0]:
                return
        write_atomic(path, json.dumps({
            'size': size, 'root_hash': root_hash.hex(), 'checkpoint': checkpoint_text},
            indent=1).encode())


def read_json(path):
    try:
        with open(path, 'rb') as fo:
            return json.load(fo)
    except FileNotFoundError:
        return None


# ---------------------------------------------------------------------------
# Receipts
# ---------------------------------------------------------------------------

def receipt_path(topdir, rpminfo, sigkey):
    return os.path.join(
        topdir, RECEIPT_DIR, rpminfo['name'], rpminfo['version'], rpminfo['release'],
        rpminfo['arch'], '%s.%s.json' % (nvra_of(rpminfo), sigkey))


def make_receipt(settings, nvra, sigkey, sha256, entry_id, entry):
    return {'rekor_url': settings.url, 'nvra': nvra, 'sigkey': sigkey, 'sha256': sha256,
            'log_entry': {entry_id: entry}}


def write_atomic(path, data):
    """Write a whole file or nothing: a temporary file in the same
    directory, fsynced, then renamed over the target."""
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix='.%s.' % os.path.basename(path))
    try:
        with os.fdopen(fd, 'wb') as fo:
            fo.write(data)
            fo.flush()
            os.fsync(fo.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_directory(directory)


def fsync_directory(directory):
    """Make a rename or creation in directory survive a crash."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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


def upload_signed_rpm(settings, signed, key_path, state=None):
    """Check, upload and verify one signed RPM; returns the Outcome.

    Nothing is sent unless the key verifies the RPM locally, and nothing is
    returned unless everything the log answered verifies.
    """
    public_key = read_public_key(key_path)
    with RPM_LOCK:
        hdr = check_key_signed_rpm(signed, public_key, key_path)
    client = RekorClient(settings)
    try:
        key = resolve_log_key(settings, client, state)
        body = EntryBody(signed, public_key)
        entry_id, entry, created = client.create_entry(body)
        if body.sha256 is None:
            # 409 without our body being read to the end cannot happen with
            # Rekor, which reads it all; hash the RPM to check the entry.
            with signed.open() as fo:
                body.sha256 = sha256_of(fo)
        verified = verify_log_entry(entry_id, entry, key, settings.origin_host)
        verify_rpm_body(verified.body, expected_from_header(hdr, body.sha256, public_key))
        if state:
            check_consistency(client, state, key, verified.tree_id, verified.tree_size,
                              verified.root_hash, verified.checkpoint.text)
    finally:
        client.close()
    receipt = make_receipt(settings, signed.nvra, signed.sigkey, body.sha256, entry_id, entry)
    return Outcome(receipt, verified, created)


def sha256_of(fo):
    """Hex SHA-256 of a stream, read a chunk at a time."""
    digest = hashlib.sha256()
    for chunk in iter(lambda: fo.read(CHUNK_SIZE), b''):
        digest.update(chunk)
    return digest.hexdigest()


def log_signature(settings, build, rpminfo, sigkey, topdir):
    """Upload and verify one signature Koji stored; returns the Outcome."""
    signed = locate_signed_rpm(build, rpminfo, sigkey)
    key_path = public_key_file(settings, sigkey)
    return upload_signed_rpm(settings, signed, key_path, state_dir(topdir))


def write_receipt(settings, topdir, rpminfo, sigkey, receipt):
    if settings.record_log_info:
        path = receipt_path(topdir, rpminfo, sigkey)
        write_atomic(path, json.dumps(receipt, indent=2, sort_keys=True).encode())


def log_outcome(nvra, sigkey, outcome):
    verified = outcome.verified
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


def record_name(rpminfo, sigkey):
    return '%s.%s' % (nvra_of(rpminfo), sigkey)


def new_record(build, rpminfo, sigkey, sighash):
    return {'nvra': nvra_of(rpminfo), 'sigkey': sigkey, 'sighash': sighash,
            'build': {k: build.get(k) for k in BUILD_FIELDS},
            'rpm': {k: rpminfo.get(k) for k in RPM_FIELDS},
            'queued': int(time.time()), 'attempts': 0, 'next_attempt': 0,
            'last_error': None, 'receipt': None}


def write_record(path, record):
    write_atomic(path, json.dumps(record, indent=1, sort_keys=True).encode())


def queue_signature(topdir, record):
    """Record a signature durably, before Koji commits it."""
    path = os.path.join(outbox_dir(topdir), record_name(record['rpm'], record['sigkey'])
                        + UNCOMMITTED)
    write_record(path, record)
    return path


def mark_committed(uncommitted_path):
    """Koji committed the signature: the record becomes the worker's."""
    path = uncommitted_path[:-len(UNCOMMITTED)] + COMMITTED
    os.replace(uncommitted_path, path)
    fsync_directory(os.path.dirname(path))
    return path


def set_aside(path, record, folder, reason):
    """Move a record out of the queue, with the reason, to be looked at.

    The rename comes first: if a hub committed the record meanwhile, the
    rename fails and the record stays where the hub put it.
    """
    target = os.path.join(os.path.dirname(path), folder,
                          os.path.basename(path).replace(UNCOMMITTED, COMMITTED))
    os.makedirs(os.path.dirname(target), exist_ok=True)
    os.rename(path, target)
    record['set_aside'] = {'reason': reason, 'time': int(time.time())}
    write_record(target, record)


@contextlib.contextmanager
def claimed(path):
    """Hold a record against every other hub process and worker; yields the
    record, or None when it is gone or another process holds it.

    The lock is on the record file itself, and the path is checked to still
    name the locked file, since updates replace the file.
    """
    in_process = thread_lock(path)
    if not in_process.acquire(blocking=False):
        yield None
        return
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        in_process.release()
        yield None
        return
    try:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            yield None
            return
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        yield read_locked_record(fd) if same else None
    finally:
        os.close(fd)
        in_process.release()


def read_locked_record(fd):
    """Read a record through the descriptor that holds its lock: closing any
    other descriptor of the file would drop this process's POSIX locks."""
    chunks, offset = [], 0
    while True:
        chunk = os.pread(fd, 65536, offset)
        if not chunk:
            break
        chunks.append(chunk)
        offset += len(chunk)
    try:
        return json.loads(b''.join(chunks))
    except ValueError:
        return None


def deliver(settings, topdir, path, record):
    """Finish one committed record: upload it unless the receipt is already
    in it, write the receipt, remove the record. On failure, keep the record
    with its attempt count and cause, or set it aside for good."""
    nvra, sigkey = record['nvra'], record['sigkey']
    try:
        if record.get('receipt'):
            write_receipt(settings, topdir, record['rpm'], sigkey, record['receipt'])
        else:
            outcome = log_signature(settings, record['build'], record['rpm'], sigkey, topdir)
            write_receipt(settings, topdir, record['rpm'], sigkey, outcome.receipt)
            log_outcome(nvra, sigkey, outcome)
    except Exception as e:
        cause = failure_cause(e)
        if getattr(e, 'permanent', False):
            set_aside(path, record, 'rejected', cause)
            LOG.error('rekor_log: failed %s sigkey %s (for good, set aside in rejected/): %s',
                      nvra, sigkey, cause)
            return 'rejected'
        record['attempts'] += 1
        record['last_error'] = cause
        record['next_attempt'] = int(time.time()) + min(
            OUTBOX_BACKOFF * 2 ** (record['attempts'] - 1), OUTBOX_BACKOFF_MAX)
        write_record(path, record)
        LOG.error('rekor_log: failed %s sigkey %s (attempt %d, kept in the outbox): %s',
                  nvra, sigkey, record['attempts'], cause)
        return 'failed'
    with contextlib.suppress(FileNotFoundError):  # set aside by an admin meanwhile
        os.unlink(path)
    return 'logged'


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
    settings = get_config()
    topdir = koji.pathinfo.topdir
    record = new_record(build, rpminfo, sigkey, kws.get('sighash'))
    try:
        path = queue_signature(topdir, record)
    except OSError as e:
        report_failure(settings, nvra, sigkey, RekorLogError(
            'cannot queue it in %s: %s' % (outbox_dir(topdir), e.strerror or e)))
        return
    if settings.enforce:
        try:
            outcome = log_signature(settings, build, rpminfo, sigkey, topdir)
        except Exception as e:
            os.unlink(path)
            report_failure(settings, nvra, sigkey, e)  # raises: Koji rolls back
        log_outcome(nvra, sigkey, outcome)
        record['receipt'] = outcome.receipt
        write_record(path, record)
    pending = pending_records()
    if path not in pending:  # the same signature twice in one multicall
        pending.append(path)


def reclaim_rolled_back(uncommitted):
    """A worker judged this request dead (it outlived COMMIT_GRACE) and set
    its record aside as rolled back; Koji has now committed it: take it back."""
    name = os.path.basename(uncommitted)[:-len(UNCOMMITTED)] + COMMITTED
    outbox = os.path.dirname(uncommitted)
    try:
        os.rename(os.path.join(outbox, 'rolled-back', name), os.path.join(outbox, name))
    except FileNotFoundError:
        return None
    LOG.warning('rekor_log: %s was set aside as rolled back, but Koji committed it: queued again',
                name)
    return os.path.join(outbox, name)


def pending_records():
    """The records queued in this hub request (Koji's request context)."""
    from koji.context import context
    if not hasattr(context, 'rekor_log_pending'):
        context.rekor_log_pending = []
    return context.rekor_log_pending


@callback('postCommit')
@ignore_error
def signatures_committed(cbtype, *args, **kws):
    paths = pending_records()
    if not paths:
        return
    settings = get_config()
    topdir = koji.pathinfo.topdir
    while paths:
        uncommitted = paths.pop(0)
        try:
            path = mark_committed(uncommitted)
        except FileNotFoundError:
            path = reclaim_rolled_back(uncommitted)
            if path is None:
                LOG.error('rekor_log: cannot commit %s: the record is gone', uncommitted)
                continue
        if settings.queue_only:
            LOG.info('rekor_log: queued %s sigkey %s for the worker', *record_identity(path))
            continue
        with claimed(path) as record:
            if record is not None:
                deliver(settings, topdir, path, record)


def report_failure(settings, nvra, sigkey, exc):
    """Log the cause on one line; under enforce, fail the hub call so Koji
    rolls the signature back."""
    cause = failure_cause(exc)
    LOG.error('rekor_log: failed %s sigkey %s%s: %s', nvra, sigkey,
              ' (enforce: the import is rolled back)' if settings.enforce else '', cause,
              exc_info=None if isinstance(exc, RekorLogError) else exc)
    if settings.enforce:
        raise koji.CallbackError('Rekor upload of %s (sigkey %s) failed: %s'
                                 % (nvra, sigkey, cause))


# ---------------------------------------------------------------------------
# The worker: koji-rekor retry
# ---------------------------------------------------------------------------

def hub_url(settings):
    """The hub to ask about uncommitted records: [koji] server, else the
    server of the Koji client configuration on this host."""
    if settings.hub_url:
        return settings.hub_url
    parser = koji.read_config_files([(KOJI_CLIENT_CONFIG, False)], raw=True)
    if parser.has_option('koji', 'server'):
        return parser.get('koji', 'server')
    return None


def signature_in_koji(settings, record):
    """True or False when the hub says whether Koji holds the signature;
    None when it cannot be asked."""
    url = hub_url(settings)
    if not url:
        return None
    session = koji.ClientSession(url, opts={
        'timeout': settings.timeout, 'max_retries': settings.retries,
        'retry_interval': settings.backoff, 'anon_retry': True})
    try:
        return bool(session.queryRPMSigs(rpm_id=record['rpm']['id'], sigkey=record['sigkey']))
    except Exception as e:
        LOG.warning('rekor_log: cannot ask the hub at %s about %s: %s',
                    url, record['nvra'], failure_cause(e))
        return None
    finally:
        session.logout()


def resolve_uncommitted(settings, path, counts):
    """A record left uncommitted by a hub request that died or rolled back:
    commit it if Koji has the signature, set it aside if Koji has not."""
    with claimed(path) as record:
        if record is None:
            return
        known = signature_in_koji(settings, record)
        if known is None:
            counts['unconfirmed'] += 1
        elif known:
            with contextlib.suppress(FileNotFoundError):  # the hub committed it meanwhile
                mark_committed(path)
        else:
            set_aside(path, record, 'rolled-back', 'Koji has no such signature: the import '
                      'that queued it was rolled back')
            LOG.warning('rekor_log: rolled back %s sigkey %s: Koji has no such signature, '
                        'set aside in rolled-back/', record['nvra'], record['sigkey'])
            counts['rolled back'] += 1


def drain_outbox(settings, topdir, limit=None, now=False):
    """One pass over the outbox; returns counts of what happened."""
    counts = dict.fromkeys(('logged', 'failed', 'rejected', 'waiting', 'busy',
                            'unconfirmed', 'rolled back'), 0)
    outbox = outbox_dir(topdir)
    names = sorted(os.listdir(outbox)) if os.path.isdir(outbox) else []
    for name in names:
        path = os.path.join(outbox, name)
        if name.endswith(UNCOMMITTED) and age(path) > COMMIT_GRACE:
            resolve_uncommitted(settings, path, counts)
    done = 0
    for name in sorted(os.listdir(outbox)) if os.path.isdir(outbox) else []:
        if not name.endswith(COMMITTED) or name.startswith('.'):
            continue
        if limit is not None and done >= limit:
            break
        path = os.path.join(outbox, name)
        with claimed(path) as record:
            if record is None:
                counts['busy'] += 1
            elif not now and record['next_attempt'] > time.time():
                counts['waiting'] += 1
            else:
                counts[deliver(settings, topdir, path, record)] += 1
                done += 1
    return counts


def age(path):
    """Seconds since a record was written; 0 once a hub has moved it."""
    try:
        return time.time() - os.path.getmtime(path)
    except FileNotFoundError:
        return 0


def outbox_left(topdir):
    """Records still queued (committed or not) and the soonest attempt."""
    outbox = outbox_dir(topdir)
    left, soonest = 0, None
    for name in os.listdir(outbox) if os.path.isdir(outbox) else []:
        if name.endswith((COMMITTED, UNCOMMITTED)) and not name.startswith('.'):
            left += 1
            record = read_json(os.path.join(outbox, name)) or {}
            due = record.get('next_attempt') or 0
            soonest = due if soonest is None else min(soonest, due)
    return left, soonest


def summary_line(counts, topdir):
    left, soonest = outbox_left(topdir)
    rejected = os.path.join(outbox_dir(topdir), 'rejected')
    aside = len(os.listdir(rejected)) if os.path.isdir(rejected) else 0
    parts = ['%s %d' % (k, v) for k, v in counts.items() if v]
    line = '%s; %d left in the outbox' % (', '.join(parts) or 'nothing to do', left)
    if left and soonest:
        line += ' (next attempt %s)' % time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(soonest))
    if aside:
        line += '; %d set aside in %s' % (aside, rejected)
    return line


# ---------------------------------------------------------------------------
# Progress on stderr
# ---------------------------------------------------------------------------

# Without a terminal, a progress line at most this often (and at the end),
# so that cron mail or a journal gets a few lines, not thousands.
PROGRESS_INTERVAL = 5.0


class Progress:
    """One progress line on stderr: rewritten in place on a terminal,
    otherwise printed now and then."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.shown = False
        self.last = None

    def update(self, text, done=False):
        """Show text; done ends this line of progress (always printed)."""
        now = time.monotonic()
        if self.tty:
            self.stream.write('\r%s\x1b[K%s' % (text, '\n' if done else ''))
            self.shown = not done
        elif done or self.last is None or now - self.last >= PROGRESS_INTERVAL:
            self.stream.write(text + '\n')
            self.last = None if done else now
        self.stream.flush()

    def clear(self):
        """Make room on a terminal for a line that is not progress."""
        if self.shown:
            self.stream.write('\r\x1b[K')
            self.stream.flush()
            self.shown = False


# ---------------------------------------------------------------------------
# Watching the log: koji-rekor monitor
#
# For cron or a timer, two questions answered from what the log signs: has
# each tree of the log only grown since the tree heads seen before (by the
# plugin or an earlier run)? And does the log hold entries made with our
# signing keys that this Koji did not make? What could not be checked is
# reported as such, never taken for good news.
# ---------------------------------------------------------------------------

# The watchlist is shaped after rekor-monitor's: monitoredValues holding
# lists; these are the ones that mean something for OpenPGP-signed RPMs.
WATCHLIST_TOP = 'monitoredValues'
WATCHLIST_LISTS = ('fingerprints', 'keys')
YAML_NULL = 'tag:yaml.org,2002:null'


@dataclass
class Watchlist:
    fingerprints: list = field(default_factory=list)  # 40 upper-case hex digits each
    keys: list = field(default_factory=list)          # paths of armored public keys


def read_watchlist(path):
    """Read and check a watchlist; a fault is a UsageError naming its line.

    PyYAML's safe loader composes the file into nodes, which are read
    directly: they know their line, and a fingerprint stays the text it
    was written as (constructed, 0123... would be an octal number).
    """
    try:
        import yaml  # only a watchlist needs it
    except ImportError:
        raise UsageError('reading a watchlist needs PyYAML (python3-pyyaml)')
    try:
        with open(path, 'rb') as fo:
            root = yaml.compose(fo.read(), Loader=yaml.SafeLoader)
    except OSError as e:
        raise UsageError('cannot read watchlist %s: %s' % (path, e.strerror))
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        raise UsageError('%s: line %s: not valid YAML: %s' % (
            path, mark.line + 1 if mark else '?', e.problem or e.context))
    except yaml.YAMLError as e:
        raise UsageError('%s: not valid YAML: %s' % (path, ' '.join(str(e).split())))
    watchlist = Watchlist()
    for _, values in yaml_mapping(root, path, 'the watchlist', (WATCHLIST_TOP,)):
        for name, items in yaml_mapping(values, path, WATCHLIST_TOP, WATCHLIST_LISTS):
            for item in yaml_sequence(items, path, name):
                if name == 'fingerprints':
                    watchlist.fingerprints.append(watchlist_fingerprint(item, path))
                else:
                    watchlist.keys.append(watchlist_key_file(item, path))
    return watchlist


def watchlist_error(path, node, message):
    return UsageError('%s: line %d: %s' % (path, node.start_mark.line + 1, message))


def yaml_mapping(node, path, what, known):
    """(key, value node) of a mapping node with only known keys; an empty
    value is an empty mapping."""
    import yaml
    if node is None or node.tag == YAML_NULL:
        return []
    if not isinstance(node, yaml.MappingNode):
        raise watchlist_error(path, node, '%s must be a mapping' % what)
    pairs = []
    for key, value in node.value:
        if not isinstance(key, yaml.ScalarNode) or key.value not in known:
            raise watchlist_error(path, key, 'unknown key %r in %s (known: %s)' % (
                getattr(key, 'value', key.tag), what, ', '.join(known)))
        pairs.append((key.value, value))
    return pairs


def yaml_sequence(node, path, what):
    """The scalar nodes of a list; an empty value is an empty list."""
    import yaml
    if node.tag == YAML_NULL:
        return []
    if not isinstance(node, yaml.SequenceNode):
        raise watchlist_error(path, node, '%s must be a list' % what)
    for item in node.value:
        if not isinstance(item, yaml.ScalarNode) or not item.value.strip():
            raise watchlist_error(path, item, 'each item of %s must be text' % what)
    return node.value


def watchlist_fingerprint(node, path):
    """A v4 fingerprint as GnuPG prints it (groups of four, any case, an
    optional 0x) as 40 upper-case hex digits."""
    text = ''.join(node.value.split())
    if text[:2].lower() == '0x':
        text = text[2:]
    try:
        if len(text) != 40:
            raise ValueError
        bytes.fromhex(text)
    except ValueError:
        raise watchlist_error(path, node, 'fingerprint %r is not 40 hex digits (the fingerprint '
                              'of a version 4 OpenPGP key)' % node.value)
    return text.upper()


def watchlist_key_file(node, path):
    """A key file, relative to the watchlist's directory unless absolute."""
    key_path = os.path.join(os.path.dirname(os.path.abspath(path)), node.value)
    if not os.path.isfile(key_path):
        raise watchlist_error(path, node, 'no such key file: %s' % key_path)
    return key_path


@dataclass
class WatchedKey:
    """One of our signing keys, with every file it was read from."""
    armored: bytes
    primary: bytes  # the public-key packet: the key's identity
    fingerprint: str
    files: list = field(default_factory=list)

    @property
    def name(self):
        """Koji's sigkey: the last 8 hex digits of a v4 key's fingerprint."""
        if self.fingerprint:
            return self.fingerprint[-8:].lower()
        return os.path.basename(self.files[0])


@dataclass
class Report:
    """What the monitor checked and found. Exit status: 1 on findings, else
    2 if something could not be checked, else 0."""
    url: str
    topdir: str
    progress: Progress
    log_id: str = None
    trees: list = field(default_factory=list)
    receipts: int = None
    keys: list = field(default_factory=list)
    watchlist: list = field(default_factory=list)
    findings: list = field(default_factory=list)
    unchecked: list = field(default_factory=list)
    notes: list = field(default_factory=list)

    def finding(self, kind, message):
        self.findings.append({'kind': kind, 'message': message})
        self.progress.clear()
        LOG.error('rekor_log: finding: %s', message)

    def not_checked(self, message):
        self.unchecked.append(message)
        self.progress.clear()
        LOG.warning('rekor_log: not checked: %s', message)

    def note(self, message):
        self.notes.append(message)

    @property
    def status(self):
        return 1 if self.findings else 2 if self.unchecked else 0

    def as_json(self):
        return {'rekor_url': self.url, 'log_id': self.log_id, 'topdir': self.topdir,
                'trees': self.trees, 'receipts': self.receipts, 'keys': self.keys,
                'watchlist': self.watchlist, 'findings': self.findings,
                'not_checked': self.unchecked, 'notes': self.notes, 'exit_status': self.status}


@dataclass
class LogView:
    """What one monitor run holds of the log, handed down its checks."""
    client: RekorClient
    settings: Settings
    state: str
    key: object  # the log key
    report: Report
    heads: dict = field(default_factory=dict)  # (tree, size, root) -> proved consistent


def monitor_log(settings, topdir, watchlist, progress):
    """Check the log's trees, then the entries of each of our keys."""
    report = Report(settings.url, topdir, progress)
    keys = watched_keys(settings, watchlist, report)
    match_fingerprints(watchlist, keys, report)
    state = state_dir(topdir)
    client = RekorClient(settings)
    try:
        try:
            log_key = resolve_log_key(settings, client, state)
        except RekorLogError as e:
            report.not_checked('the log key of %s: %s' % (settings.url, e))
            return report
        report.log_id = log_key_id(log_key).hex()
        view = LogView(client, settings, state, log_key, report)
        try:
            check_tree_heads(view)
        except RekorLogError as e:
            report.not_checked('the tree heads of %s: %s' % (settings.url, e))
            if keys:
                report.not_checked('the entries of our %d keys, since the log does not answer'
                                   % len(keys))
            return report
        if keys:
            receipts = receipt_hashes(topdir, report)
            for key in keys:
                try:
                    check_key_entries(view, key, receipts)
                except RekorLogError as e:
                    report.not_checked('the entries of key %s: %s' % (key.name, e))
    finally:
        client.close()
    return report


def watched_keys(settings, watchlist, report):
    """Each *.asc of public_key_dir, public_key_path and the watchlist's key
    files, once per primary key."""
    import glob
    paths = []
    if settings.public_key_dir:
        paths += sorted(glob.glob(os.path.join(glob.escape(settings.public_key_dir), '*.asc')))
    if settings.public_key_path:
        paths.append(settings.public_key_path)
    keys = {}
    for path in paths + watchlist.keys:
        try:
            armored = read_public_key(path)
        except SignatureSourceError as e:
            report.not_checked(str(e))
            continue
        primary = openpgp_primary_key(armored)
        if primary is None:
            report.not_checked('%s holds no OpenPGP public key' % path)
            continue
        key = keys.setdefault(primary, WatchedKey(armored, primary, openpgp_fingerprint(armored)))
        if path not in key.files:
            key.files.append(path)
    return list(keys.values())


def match_fingerprints(watchlist, keys, report):
    """Rekor's index is searched by key, never by fingerprint: a watched
    fingerprint is checked only if one of the keys we have is its key."""
    ours = {key.fingerprint: key for key in keys if key.fingerprint}
    for fingerprint in watchlist.fingerprints:
        key = ours.get(fingerprint)
        report.watchlist.append({'fingerprint': fingerprint, 'key': key.name if key else None,
                                 'files': key.files if key else []})
        if key is None:
            report.not_checked(
                'fingerprint %s: no public key for it, so the log cannot be searched for it; '
                "add its armored public key to the watchlist's keys or to public_key_dir"
                % fingerprint)


def check_tree_heads(view):
    """Verify the signed head of the active tree and of each inactive shard
    and prove it consistent with the one kept; notice any tree seen before
    that the log no longer lists. Only the signed checkpoint counts: the
    treeSize and rootHash beside it are unsigned."""
    info = view.client.log_info()
    shards = [(info, True)] + [(shard, False) for shard in info.get('inactiveShards') or []]
    listed = set()
    for shard, active in shards:
        tree_id, note = tree_head_fields(shard)
        listed.add(tree_id)
        try:
            checkpoint = verify_checkpoint(note, view.key, view.settings.origin_host, tree_id)
        except VerificationError as e:
            view.report.finding('bad tree head', 'tree %d: its signed tree head does not verify: %s'
                                % (tree_id, e))
            continue
        check_tree_head(view, tree_id, checkpoint, active)
    for tree_id, size in kept_tree_heads(view.state, view.key):
        if tree_id not in listed:
            view.report.finding('tree missing', 'tree %d, seen before at size %d, is not listed by '
                                'the log any more, neither active nor inactive' % (tree_id, size))


def tree_head_fields(shard):
    try:
        return int(shard['treeID']), shard['signedTreeHead']
    except (KeyError, TypeError, ValueError):
        raise RekorUnavailable('malformed log info from Rekor: a tree without a treeID '
                               'or signedTreeHead')


def check_tree_head(view, tree_id, checkpoint, active):
    """A signed tree head against the one kept for its tree: a tree that
    shrank, or one not provably consistent with it, is a finding."""
    before = saved_tree_head(view.state, view.key, tree_id)
    tree = {'tree_id': str(tree_id), 'active': active, 'size': checkpoint.size,
            'root_hash': checkpoint.root_hash.hex(), 'size_before': before and before[0]}
    view.report.trees.append(tree)
    if before and before[0] > checkpoint.size:
        tree['status'] = 'shrank'
        view.heads[(tree_id, checkpoint.size, checkpoint.root_hash)] = False
        try:
            check_consistency(view.client, view.state, view.key, tree_id, checkpoint.size,
                              checkpoint.root_hash, checkpoint.text)
            how = 'an older view, which the log still proves the newer one extends'
        except (VerificationError, RekorRejected) as e:
            how = 'and the log cannot prove it consistent with the one seen before: %s' % e
        view.report.finding('tree shrank', 'tree %d shrank: the log signs size %d now, size %d '
                            'was seen before (%s)' % (tree_id, checkpoint.size, before[0], how))
        return
    tree['status'] = ('first seen' if before is None else 'unchanged'
                      if before == (checkpoint.size, checkpoint.root_hash) else 'grew')
    if not prove_consistent(view, tree_id, checkpoint):
        tree['status'] = 'inconsistent'


def prove_consistent(view, tree_id, checkpoint):
    """check_consistency once per tree head and run; a failure is a split
    view, whether the proof fails or the log refuses to give one."""
    head = (tree_id, checkpoint.size, checkpoint.root_hash)
    if head not in view.heads:
        try:
            check_consistency(view.client, view.state, view.key, tree_id, checkpoint.size,
                              checkpoint.root_hash, checkpoint.text)
            view.heads[head] = True
        except VerificationError as e:
            view.heads[head] = False
            view.report.finding('split view', 'tree %d: %s' % (tree_id, e))
        except RekorRejected as e:
            view.heads[head] = False
            view.report.finding('split view', 'tree %d: split view: the log refuses to prove its '
                                'tree of size %d consistent with the tree head seen before: %s'
                                % (tree_id, checkpoint.size, e))
    return view.heads[head]


def kept_tree_heads(state, key):
    """(tree ID, size) of every tree head kept for the log."""
    directory = checkpoint_dir(state, key)
    heads = []
    for name in sorted(os.listdir(directory)) if os.path.isdir(directory) else []:
        stem, _, suffix = name.partition('.')
        if suffix == 'json' and stem.isdigit():
            heads.append((int(stem), saved_tree_head(state, key, int(stem))[0]))
    return heads


def receipt_hashes(topdir, report):
    """The sha256 of every RPM with a receipt under <topdir>/rekor-logs."""
    hashes, unreadable = set(), 0
    for directory, subdirs, files in os.walk(os.path.join(topdir, RECEIPT_DIR)):
        subdirs[:] = [d for d in subdirs if not d.startswith(('@', '.'))]
        for name in files:
            if name.endswith('.json') and not name.startswith('.'):
                try:
                    hashes.add(read_json(os.path.join(directory, name))['sha256'])
                except (OSError, ValueError, KeyError, TypeError):
                    unreadable += 1
    report.receipts = len(hashes)
    if unreadable:
        report.note('%d receipts under %s could not be read; an entry of theirs would be '
                    'reported as having none' % (unreadable, os.path.join(topdir, RECEIPT_DIR)))
    return hashes


ENTRY_COUNTS = ('entries', 'rpm_with_receipt', 'rpm_without_receipt', 'other_kind',
                'unverified', 'not_returned', 'other_key')


def check_key_entries(view, key, receipts):
    """Every entry the log's index lists for one of our keys, fetched a
    batch at a time and verified; each one this Koji did not make is a
    finding."""
    found = view.client.search_index({'publicKey': {
        'format': 'pgp', 'content': base64.b64encode(key.armored).decode()}})
    ids = list(dict.fromkeys(entry_id.lower() for entry_id in found))
    counts = dict.fromkeys(ENTRY_COUNTS, 0)
    counts['entries'] = len(ids)
    view.report.keys.append({'key': key.name, 'fingerprint': key.fingerprint,
                             'files': key.files, 'counts': counts})
    returned = set()
    if not ids:
        view.report.progress.update('checked 0/0 entries for key %s' % key.name, done=True)
    for start in range(0, len(ids), RETRIEVE_BATCH):
        for entry_id, entry in view.client.retrieve_entries(ids[start:start + RETRIEVE_BATCH]):
            if entry_id.lower() not in returned:
                returned.add(entry_id.lower())
                check_key_entry(view, key, entry_id, entry, receipts, counts)
        done = min(start + RETRIEVE_BATCH, len(ids))
        view.report.progress.update('checked %d/%d entries for key %s' % (done, len(ids), key.name),
                                    done=done == len(ids))
    uuids = {entry_id[-64:] for entry_id in returned}
    counts['not_returned'] = sum(1 for i in ids if i not in returned and i not in uuids)
    if counts['not_returned']:
        view.report.note('key %s: the index lists %d entries the log did not return (the index '
                         'is not part of what the log signs)' % (key.name, counts['not_returned']))
    if counts['other_key']:
        view.report.note('key %s: the index lists %d entries made with another key'
                         % (key.name, counts['other_key']))


def check_key_entry(view, key, entry_id, entry, receipts, counts):
    try:
        verified = verify_log_entry(entry_id, entry, view.key, view.settings.origin_host)
    except VerificationError as e:
        counts['unverified'] += 1
        view.report.finding('unverified entry', 'key %s: entry %s does not verify: %s'
                            % (key.name, entry_id, e))
        return
    prove_consistent(view, verified.tree_id, verified.checkpoint)
    body = verified.body
    logged_keys = body_public_keys(body)
    if logged_keys and key.primary not in logged_keys:
        counts['other_key'] += 1
        return
    where = 'entry %s (log index %d, integrated %s)' % (
        verified.entry_id, verified.log_index,
        time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(verified.integrated_time)))
    if body.get('kind') != 'rpm':
        counts['other_kind'] += 1
        view.report.finding('other kind', 'key %s: %s %s is made with our key; this Koji makes '
                            'only rpm entries' % (key.name, body.get('kind'), where))
        return
    package = (body.get('spec') or {}).get('package') or {}
    sha256 = (package.get('hash') or {}).get('value')
    if sha256 in receipts:
        counts['rpm_with_receipt'] += 1
        return
    counts['rpm_without_receipt'] += 1
    view.report.finding('rpm without receipt', 'key %s: rpm %s logs %s sha256:%s, which has no '
                        'receipt under %s: an RPM signed with our key that this Koji did not log'
                        % (key.name, where, logged_nvra(package), sha256,
                           os.path.join(view.report.topdir, RECEIPT_DIR)))


def body_public_keys(body):
    """The OpenPGP primary keys an entry body names: spec.publicKey (rpm,
    alpine) or spec.signature.publicKey (rekord)."""
    spec = body.get('spec') if isinstance(body.get('spec'), dict) else {}
    signature = spec.get('signature') if isinstance(spec.get('signature'), dict) else {}
    keys = []
    for holder in (spec.get('publicKey'), signature.get('publicKey')):
        if isinstance(holder, dict) and isinstance(holder.get('content'), str):
            try:
                primary = openpgp_primary_key(base64.b64decode(holder['content'], validate=True))
            except binascii.Error:
                primary = None
            if primary:
                keys.append(primary)
    return keys


def logged_nvra(package):
    headers = package.get('headers') or {}
    return '%s-%s-%s.%s' % tuple(headers.get(name, '?') for name in
                                 ('Name', 'Version', 'Release', 'Architecture'))


TREE_STATUS = {'first seen': 'first seen', 'unchanged': 'unchanged since seen before',
               'grew': 'grew from size %(size_before)s, proved consistent',
               'shrank': 'SHRANK from size %(size_before)s',
               'inconsistent': 'NOT consistent with the tree head seen before'}


def format_report(report):
    lines = ['Rekor log %s (logID %s)' % (report.url, report.log_id or 'unknown')]
    for tree in report.trees:
        lines.append('  tree %s (%s): size %d, root %s: %s' % (
            tree['tree_id'], 'active' if tree['active'] else 'inactive', tree['size'],
            tree['root_hash'], TREE_STATUS[tree['status']] % tree))
    if report.receipts is not None:
        lines.append('Receipts: %d under %s' % (report.receipts,
                                                os.path.join(report.topdir, RECEIPT_DIR)))
    if report.keys:
        lines.append("Keys (the entries the log's index lists for each):")
    for key in report.keys:
        counts = key['counts']
        detail = ', '.join('%s %d' % (name.replace('_', ' '), counts[name])
                           for name in ENTRY_COUNTS[1:] if counts[name])
        lines.append('  key %s (%s): %d entries%s' % (key['key'], ', '.join(key['files']),
                                                     counts['entries'],
                                                     ': ' + detail if detail else ''))
    if report.watchlist:
        lines.append('Watchlist:')
    for item in report.watchlist:
        lines.append('  fingerprint %s: %s' % (
            item['fingerprint'], 'key %s' % item['key'] if item['key'] else 'NOT CHECKABLE'))
    for title, items in (('Notes', report.notes), ('Not checked', report.unchecked),
                         ('FINDINGS', [f['message'] for f in report.findings])):
        if items:
            lines.append('%s:' % title)
            lines += ['  - %s' % item for item in items]
    if report.findings:
        result = '%d finding%s' % (len(report.findings), 's' if len(report.findings) > 1 else '')
    elif report.unchecked:
        result = 'nothing found, but not everything could be checked'
    else:
        result = 'OK, nothing found'
    lines.append('Result: %s (exit %d)' % (result, report.status))
    return '\n'.join(lines) + '\n'


# ---------------------------------------------------------------------------
# Backfill: koji-rekor backfill
#
# Signatures Koji imported before the plugin was enabled (or while it was
# off) are in the sigcache only. Each one without a receipt is logged
# exactly as the plugin logs it; a rerun skips what has receipts.
# ---------------------------------------------------------------------------

SIGHDR_SUFFIX = '.rpm.sig'
BACKFILL_COUNTS = ('logged', 'already in the log', 'failed', 'unknown key',
                   'skipped', 'queued', 'ignored')


@dataclass
class StoredSignature:
    """A signature header in the sigcache, and the dicts Koji would hand the
    plugin for it, as far as the path tells them."""
    build: dict
    rpminfo: dict
    sigkey: str
    path: str

    @property
    def nvra(self):
        return nvra_of(self.rpminfo)


def stored_signatures(topdir):
    """Every signature header in every volume's sigcache, once per RPM and
    sigkey; and (path, reason) for files not where Koji would keep them.

    Other volumes come first: Koji links a build on another volume from the
    default one, and the build is then named with its own volume.
    """
    import glob
    found, ignored, seen = [], [], set()
    pattern = os.path.join('*', '*', '*', 'data', 'sigcache', '*', '*', '*' + SIGHDR_SUFFIX)
    for volume, packages in volume_packages(topdir):
        for path in sorted(glob.glob(os.path.join(glob.escape(packages), pattern))):
            try:
                signature = stored_signature(volume, packages, path)
            except ValueError as e:
                ignored.append((path, str(e)))
                continue
            identity = (signature.nvra, signature.sigkey)
            if identity not in seen:
                seen.add(identity)
                found.append(signature)
    return sorted(found, key=lambda s: (s.nvra, s.sigkey)), ignored


def volume_packages(topdir):
    """(volume name, packages directory): vol/<name>/packages for each other
    volume, then the default volume's."""
    voldir = os.path.join(topdir, 'vol')
    names = sorted(n for n in os.listdir(voldir) if not n.startswith('.')) \
        if os.path.isdir(voldir) else []
    return [(name, os.path.join(voldir, name, 'packages')) for name in names] \
        + [('DEFAULT', os.path.join(topdir, 'packages'))]


def stored_signature(volume, packages, path):
    """The build and rpm of a sigcache file from its path:
    <packages>/N/V/R/data/sigcache/<sigkey>/<arch>/<rpm nvra>.rpm.sig. The
    RPM's name comes from the file (a subpackage's is not the build's), and
    koji.pathinfo must give back this very path."""
    name, version, release, _, _, sigkey, arch, filename = \
        os.path.relpath(path, packages).split(os.sep)
    try:
        parsed = koji.parse_NVRA(filename[:-len('.sig')])
    except koji.GenericError:
        raise ValueError('not <name>-<version>-<release>.<arch>%s' % SIGHDR_SUFFIX)
    build = {'name': name, 'version': version, 'release': release, 'volume_name': volume}
    rpminfo = {'name': parsed['name'], 'version': parsed['version'],
               'release': parsed['release'], 'arch': parsed['arch'], 'epoch': None}
    expected = os.path.join(koji.pathinfo.build(build), koji.pathinfo.sighdr(rpminfo, sigkey))
    if os.path.normpath(expected) != os.path.normpath(path):
        raise ValueError('not where Koji keeps it (koji.pathinfo gives %s)' % expected)
    return StoredSignature(build, rpminfo, sigkey, path)


def sort_signatures(settings, topdir, signatures, counts):
    """The signatures to log: those with neither a receipt nor a record in
    the outbox (the worker logs those) whose public key we have. Returns
    (to log, [(signature, why the key is unknown)])."""
    todo, unknown = [], []
    for signature in signatures:
        if os.path.exists(receipt_path(topdir, signature.rpminfo, signature.sigkey)):
            counts['skipped'] += 1
        elif queued_in_outbox(topdir, signature):
            counts['queued'] += 1
        else:
            try:
                public_key_file(settings, signature.sigkey)
                todo.append(signature)
            except SignatureSourceError as e:
                counts['unknown key'] += 1
                unknown.append((signature, str(e)))
    return todo, unknown


def queued_in_outbox(topdir, signature):
    stem = os.path.join(outbox_dir(topdir), record_name(signature.rpminfo, signature.sigkey))
    return os.path.exists(stem + COMMITTED) or os.path.exists(stem + UNCOMMITTED)


def backfill_one(settings, topdir, signature):
    """Log one stored signature as the plugin does; runs in a worker thread
    (log_signature makes a RekorClient of its own for each call)."""
    outcome = log_signature(settings, signature.build, signature.rpminfo, signature.sigkey,
                            topdir)
    write_receipt(settings, topdir, signature.rpminfo, signature.sigkey, outcome.receipt)
    return outcome


def backfill(settings, topdir, todo, jobs, counts, progress):
    """Log each signature with at most jobs at a time; returns the failures
    as (signature, cause)."""
    import concurrent.futures
    failures = []
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=jobs)
    futures = {pool.submit(backfill_one, settings, topdir, s): s for s in todo}
    try:
        for done, future in enumerate(concurrent.futures.as_completed(futures), 1):
            signature = futures[future]
            progress.clear()
            try:
                outcome = future.result()
            except Exception as e:
                cause = failure_cause(e)
                counts['failed'] += 1
                failures.append((signature, cause))
                LOG.error('rekor_log: failed %s sigkey %s: %s', signature.nvra, signature.sigkey,
                          cause, exc_info=None if isinstance(e, RekorLogError) else e)
            else:
                counts['logged' if outcome.created else 'already in the log'] += 1
                log_outcome(signature.nvra, signature.sigkey, outcome)
            progress.update('backfill: %d/%d signatures (%s)' % (
                done, len(todo), ', '.join('%s %d' % (k, counts[k]) for k in BACKFILL_COUNTS[:3])),
                done=done == len(todo))
    finally:
        # On an interrupt, what has not started is dropped; a rerun finds it.
        for future in futures:
            future.cancel()
        pool.shutdown(wait=True)
    return failures


def backfill_summary(counts, would_log=None):
    """The last line of a backfill; would_log: what a dry run would log."""
    if would_log is None:
        parts = ['logged %d' % counts['logged'],
                 'already in the log %d' % counts['already in the log'],
                 'failed %d' % counts['failed']]
    else:
        parts = ['would log %d' % would_log]
    parts += ['unknown key %d' % counts['unknown key'],
              'skipped %d (receipt exists)' % counts['skipped']]
    if counts['queued']:
        parts.append('queued %d (in the outbox, for the worker)' % counts['queued'])
    if counts['ignored']:
        parts.append('ignored %d (not laid out as Koji does)' % counts['ignored'])
    return ', '.join(parts)


# ---------------------------------------------------------------------------
# Command line: koji-rekor
# ---------------------------------------------------------------------------

class UsageError(Exception):
    """A command could not even start; exit status 2."""


def default_topdir():
    """KojiDir from the hub's configuration, else Koji's default."""
    parser = koji.read_config_files([(HUB_CONFIG_FILE, False)], raw=True)
    if parser.has_option('hub', 'KojiDir'):
        return parser.get('hub', 'KojiDir')
    return DEFAULT_TOPDIR


def cmd_retry(args):
    import signal
    settings = load_config(args.config)
    topdir = args.topdir or default_topdir()
    if not os.path.isdir(topdir):
        raise UsageError('no such topdir: %s' % topdir)
    koji.pathinfo.topdir = topdir
    if not args.watch:
        counts = drain_outbox(settings, topdir, limit=args.limit, now=args.now)
        print(summary_line(counts, topdir))
        return 1 if counts['failed'] or counts['rejected'] else 0
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    LOG.info('rekor_log: watching %s every %ss', outbox_dir(topdir), settings.poll_interval)
    while not stop.is_set():
        counts = drain_outbox(settings, topdir, limit=args.limit, now=args.now)
        if any(counts[k] for k in ('logged', 'failed', 'rejected', 'rolled back')):
            LOG.info('rekor_log: %s', summary_line(counts, topdir))
        stop.wait(settings.poll_interval)
    return 0


def cmd_monitor(args):
    settings = load_config(args.config)
    topdir = args.topdir or default_topdir()
    if not os.path.isdir(topdir):
        raise UsageError('no such topdir: %s' % topdir)
    watchlist = read_watchlist(args.watchlist) if args.watchlist else Watchlist()
    progress = Progress()
    report = monitor_log(settings, topdir, watchlist, progress)
    progress.clear()
    if args.json:
        sys.stdout.write(json.dumps(report.as_json(), indent=2, sort_keys=True) + '\n')
    else:
        sys.stdout.write(format_report(report))
    return report.status


def cmd_backfill(args):
    settings = load_config(args.config)
    topdir = os.path.abspath(args.topdir or default_topdir())
    if not os.path.isdir(topdir):
        raise UsageError('no such topdir: %s' % topdir)
    koji.pathinfo.topdir = topdir
    if not settings.record_log_info:
        LOG.warning('rekor_log: [upload] record_log_info is off: no receipts are written, so '
                    'a rerun sends every signature again')
    counts = dict.fromkeys(BACKFILL_COUNTS, 0)
    signatures, ignored = stored_signatures(topdir)
    counts['ignored'] = len(ignored)
    todo, unknown = sort_signatures(settings, topdir, signatures, counts)
    for path, reason in ignored:
        print('ignored %s: %s' % (path, reason))
    for signature, reason in unknown:
        print('unknown key %s: %s (%s): %s' % (signature.sigkey, signature.nvra,
                                               signature.path, reason))
    if args.dry_run:
        for signature in todo:
            print('would log %s sigkey %s (%s)' % (signature.nvra, signature.sigkey,
                                                   signature.path))
        print(backfill_summary(counts, would_log=len(todo)))
        return 0
    if todo:
        # Trust the log key once, before the workers, not once per thread.
        client = RekorClient(settings)
        try:
            resolve_log_key(settings, client, state_dir(topdir))
        finally:
            client.close()
    failures = backfill(settings, topdir, todo, args.jobs, counts, Progress())
    for signature, cause in failures:
        print('failed %s sigkey %s: %s' % (signature.nvra, signature.sigkey, cause))
    print(backfill_summary(counts))
    return 1 if failures else 0


def positive_int(text):
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError('%r is not a positive whole number' % text)
    return value


def cli_settings(args):
    settings = load_config(args.config)
    if getattr(args, 'url', None):
        settings.url = args.url
        check_url(settings)
    return settings


def cmd_upload(args):
    settings = cli_settings(args)
    signed = signed_rpm_from_file(args.rpm)
    topdir = args.topdir or default_topdir()
    state = state_dir(topdir) if os.path.isdir(topdir) else None
    outcome = upload_signed_rpm(settings, signed, args.key, state)
    data = json.dumps(outcome.receipt, indent=2, sort_keys=True) + '\n'
    if args.receipt:
        write_atomic(args.receipt, data.encode())
    else:
        sys.stdout.write(data)
    print('%s %s: log index %d, uuid %s' % (
        'logged' if outcome.created else 'already in the log', signed.nvra,
        outcome.verified.log_index, outcome.verified.uuid), file=sys.stderr)
    return 0


def load_entry_file(path):
    """A receipt the plugin wrote, or a raw {entryID: LogEntry}."""
    try:
        with open(path, 'rb') as fo:
            data = json.load(fo)
    except OSError as e:
        raise UsageError('cannot read %s: %s' % (path, e.strerror))
    except ValueError:
        raise UsageError('%s is not JSON' % path)
    receipt = data if isinstance(data, dict) and 'log_entry' in data else None
    entries = receipt['log_entry'] if receipt else data
    if not isinstance(entries, dict) or len(entries) != 1:
        raise UsageError('%s holds no single Rekor entry' % path)
    (entry_id, entry), = entries.items()
    if not isinstance(entry, dict):
        raise UsageError('%s holds no single Rekor entry' % path)
    return receipt, entry_id, entry


def verify_key_for(args, settings, receipt, entry):
    """The log key for an offline verify: --log-key, the configured one, or
    the shipped public-instance key when the entry's logID is its."""
    if args.log_key:
        try:
            return read_log_key(args.log_key)
        except OSError as e:
            raise UsageError('cannot read %s: %s' % (args.log_key, e.strerror))
        except VerificationError as e:
            raise UsageError('%s: %s' % (args.log_key, e))
    if settings.log_public_key:
        return read_log_key(settings.log_public_key)
    public = load_log_key(PUBLIC_REKOR_KEY)
    if str(entry.get('logID', '')).lower() == log_key_id(public).hex():
        return public
    raise UsageError('no log key for logID %s: pass --log-key' % entry.get('logID'))


def cmd_verify(args):
    settings = load_config(args.config)
    receipt, entry_id, entry = load_entry_file(args.file)
    key = verify_key_for(args, settings, receipt, entry)
    origin = args.origin
    if origin is None and receipt:
        origin = urllib.parse.urlsplit(receipt.get('rekor_url', '')).hostname
    verified = verify_log_entry(entry_id, entry, key, origin, require_set=False)
    if args.rpm:
        check_receipt_rpm(args.rpm, receipt, verified)
    unsigned = '' if verified.signed_time else ' (unsigned)'
    print('OK %s: log index %d%s (tree %s, index %d of %d), integrated %s%s, origin %r' % (
        verified.uuid, verified.log_index, unsigned, verified.tree_id, verified.tree_index,
        verified.tree_size, time.strftime('%Y-%m-%d %H:%M:%S UTC',
                                          time.gmtime(verified.integrated_time)),
        unsigned, verified.checkpoint.origin))
    for note in verified.notes:
        print('note: %s' % note)
    return 0


def check_receipt_rpm(path, receipt, verified):
    """The RPM file is the one the rpm entry logged."""
    if verified.body.get('kind') != 'rpm':
        raise UsageError('--rpm needs an rpm entry, this is %s' % verified.body.get('kind'))
    if not os.path.isfile(path):
        raise UsageError('no such file: %s' % path)
    with open(path, 'rb') as fo:
        sha256 = sha256_of(fo)
    logged = ((verified.body.get('spec') or {}).get('package') or {}).get('hash') or {}
    if logged.get('value') != sha256:
        raise VerificationError('%s has sha256 %s, the entry logged %s'
                                % (path, sha256, logged.get('value')))
    if receipt and receipt.get('sha256') not in (None, sha256):
        raise VerificationError('receipt records sha256 %s, %s has %s'
                                % (receipt.get('sha256'), path, sha256))


def build_parser():
    parser = argparse.ArgumentParser(
        prog='koji-rekor', description='Record Koji RPM signatures in a Rekor transparency log.')
    parser.add_argument('--version', action='version', version='%(prog)s ' + __version__)
    parser.add_argument('--debug', action='store_true', help='log debug messages')
    sub = parser.add_subparsers(dest='command', required=True)

    upload = sub.add_parser('upload', help='log an RPM that is already signed')
    upload.add_argument('rpm', help='signed RPM file')
    upload.add_argument('--key', required=True, help='ASCII-armored public key that signed it')
    upload.add_argument('--config', default=CONFIG_FILE, help='plugin configuration file')
    upload.add_argument('--url', help='Rekor URL (overrides the configuration)')
    upload.add_argument('--topdir', help='Koji topdir holding rekor-logs/ (default: KojiDir)')
    upload.add_argument('--receipt', help='write the receipt here instead of printing it')
    upload.set_defaults(func=cmd_upload)

    verify = sub.add_parser('verify', help='verify a receipt or Rekor entry offline')
    verify.add_argument('file', help='receipt written by the plugin, or a {entryID: entry} JSON')
    verify.add_argument('--rpm', help='also check that this RPM is the one logged')
    verify.add_argument('--log-key', help="PEM file of the log's public key")
    verify.add_argument('--origin', help='host the checkpoint origin must name')
    verify.add_argument('--config', default=CONFIG_FILE, help='plugin configuration file')
    verify.set_defaults(func=cmd_verify)

    retry = sub.add_parser('retry', help='upload what the outbox holds (for cron or a service)')
    retry.add_argument('--config', default=CONFIG_FILE, help='plugin configuration file')
    retry.add_argument('--topdir', help='Koji topdir (default: KojiDir from hub.conf, else /mnt/koji)')
    retry.add_argument('--limit', type=int, help='upload at most N records per pass')
    retry.add_argument('--now', action='store_true',
                       help="retry failed records now instead of at their next attempt")
    retry.add_argument('--watch', action='store_true',
                       help='keep running: a pass every [upload] poll_interval seconds until stopped')
    retry.set_defaults(func=cmd_retry)

    monitor = sub.add_parser(
        'monitor', help="check the log's consistency and every entry made with our keys "
                        '(for cron or a timer)')
    monitor.add_argument('--config', default=CONFIG_FILE, help='plugin configuration file')
    monitor.add_argument('--watchlist', metavar='FILE.yaml',
                         help='YAML file of further keys and fingerprints to watch')
    monitor.add_argument('--topdir',
                         help='Koji topdir (default: KojiDir from hub.conf, else /mnt/koji)')
    monitor.add_argument('--json', action='store_true', help='print the report as JSON')
    monitor.set_defaults(func=cmd_monitor)

    backfill = sub.add_parser('backfill',
                              help='log the signatures in the topdir that have no receipt')
    backfill.add_argument('--config', default=CONFIG_FILE, help='plugin configuration file')
    backfill.add_argument('--topdir',
                          help='Koji topdir (default: KojiDir from hub.conf, else /mnt/koji)')
    backfill.add_argument('--dry-run', action='store_true',
                          help='list what would be logged, send nothing')
    backfill.add_argument('--jobs', type=positive_int, default=2, metavar='N',
                          help='upload N signatures at a time (default: 2)')
    backfill.set_defaults(func=cmd_backfill)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO,
                        format='%(levelname)s: %(message)s')
    try:
        return args.func(args)
    except VerificationError as e:
        print('koji-rekor: verification failed: %s' % e, file=sys.stderr)
        return 1
    except RekorLogError as e:
        print('koji-rekor: %s' % e, file=sys.stderr)
        return 1
    except (UsageError, koji.ConfigurationError) as e:
        print('koji-rekor: %s' % e, file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == '__main__':
    sys.exit(main())
