"""koji-rekor verify-rpm: checking a package against the log."""

import base64
import binascii
import os
import urllib.parse
from dataclasses import dataclass, field

import koji

from . import config as defaults
from .config import check_cli_url, check_url, load_config, Settings
from .display import counted, format_time, short_reason, text
from .errors import (
    failure_cause,
    KojiUnavailable,
    RekorLogError,
    SourceGone,
    UsageError,
    VerificationError,
)
from .keysource import find_log_key
from .koji_client import hub_url
from .logkey import log_key_id
from .offline import entry_file_parts, load_verify_file
from .offline_v2 import v2_document, v2_log_keys
from .openpgp import armored_blocks, openpgp_fingerprint, openpgp_primary_key
from .rekor.client_v1 import RekorClient, RETRIEVE_BATCH
from .rekor.models import claimed_sha256
from .rpmsig import (
    check_key_signed_rpm,
    expected_from_header,
    RPM_LOCK,
    sha256_of,
    signed_rpm_from_file,
)
from .safefs import parse_json
from .verify import verify_log_entry, verify_rpm_body

# The most entries checked for one package: a log answering thousands for
# one hash is lying or attacked, and each would cost a fetch.
MAX_ENTRIES_PER_PACKAGE = 50

# Status of a package -> exit status.
PACKAGE_STATUS = {'logged': 0, 'not found': 1, 'untrusted key': 1, 'not verified': 1,
                  'not checked': 2}


@dataclass
class TrustedKey:
    name: str  # the file it came from, or gpg-pubkey-<version>-<release>
    armored: bytes
    primary: bytes
    fingerprint: str


def add_trusted_keys(data, name, keys):
    """Append the keys armored in data; returns how many."""
    found = 0
    for block in armored_blocks(data):
        primary = openpgp_primary_key(block)
        if primary:
            keys.append(TrustedKey(name, block, primary, openpgp_fingerprint(block)))
            found += 1
    return found


def read_file_bytes(path):
    try:
        with open(path, 'rb') as fo:
            return fo.read()
    except OSError as e:
        raise UsageError('cannot read %s: %s' % (path, e.strerror or e))


def trusted_keys(args):
    """The keys the user trusts: --key files, every key file in --keys, and
    with --rpmdb the gpg-pubkey packages of an rpm database."""
    keys = []
    for path in args.key or ():
        if not add_trusted_keys(read_file_bytes(path), path, keys):
            raise UsageError('%s holds no ASCII-armored OpenPGP public key' % path)
    if args.keys:
        if not os.path.isdir(args.keys):
            raise UsageError('no such directory: %s' % args.keys)
        found = 0
        for name in sorted(os.listdir(args.keys)):
            path = os.path.join(args.keys, name)
            if os.path.isfile(path):  # other files (a README) are not keys
                found += add_trusted_keys(read_file_bytes(path), path, keys)
        if not found:
            raise UsageError('%s holds no ASCII-armored OpenPGP public key' % args.keys)
    if args.rpmdb:
        if not rpmdb_keys(args.root, args.dbpath, keys):
            raise UsageError('the rpm database of %s holds no gpg-pubkey'
                             % (args.dbpath or args.root or '/'))
    if not keys:
        raise UsageError('no trusted keys: pass --key FILE, --keys DIR or --rpmdb')
    return keys

# The files that hold an rpm database: sqlite, ndb, bdb.
RPMDB_FILES = ('rpmdb.sqlite', 'Packages.db', 'Packages')


def rpmdb_keys(root, dbpath, keys):
    """The keys rpm (and so dnf) trusts: the gpg-pubkey packages of the rpm
    database, each holding its armored key as its description."""
    import rpm
    with RPM_LOCK:
        if dbpath:
            rpm.addMacro('_dbpath', os.path.abspath(dbpath))
        try:
            # rpm creates a database where there is none: look first.
            where = os.path.join(root or '/', rpm.expandMacro('%{_dbpath}').lstrip('/'))
            if not any(os.path.isfile(os.path.join(where, name)) for name in RPMDB_FILES):
                raise UsageError('no rpm database in %s' % where)
            ts = rpm.TransactionSet(root or '/')
            try:
                found = 0
                for hdr in ts.dbMatch('name', 'gpg-pubkey'):
                    description = hdr[rpm.RPMTAG_DESCRIPTION]
                    if isinstance(description, str):
                        description = description.encode()
                    found += add_trusted_keys(description or b'', 'gpg-pubkey-%s-%s' % (
                        text(hdr[rpm.RPMTAG_VERSION]), text(hdr[rpm.RPMTAG_RELEASE])), keys)
                return found
            except rpm.error as e:
                raise UsageError('cannot read the rpm database of %s: %s'
                                 % (dbpath or root or '/', e))
            finally:
                ts.closeDB()
        finally:
            if dbpath:
                rpm.delMacro('_dbpath')


@dataclass
class PackageCheck:
    """What verify-rpm found for one file."""
    file: str
    sha256: str = None
    nvra: str = None
    status: str = 'not checked'
    reason: str = None
    entry_id: str = None
    log_index: int = None
    integrated_time: int = None
    time_signed: bool = None
    fingerprint: str = None
    trusted_key: str = None
    log_key: str = None  # where the log's key came from (find_log_key)
    entries: list = field(default_factory=list)  # every entry looked at, and its outcome
    notes: list = field(default_factory=list)

    def as_json(self):
        data = dict(vars(self))
        data['logged'] = self.status == 'logged'
        return data


def verify_rpm_settings(args):
    """--config, else the hub's file when this user can read it (as verify
    reads it), else none: a package user has none, and the defaults are the
    public log with its built-in key (None: no file named a log)."""
    path = args.config
    if path is None and os.access(defaults.CONFIG_FILE, os.R_OK):
        path = defaults.CONFIG_FILE
    if path is None and not args.url:
        return None
    settings = load_config(path) if path else Settings()
    if args.url:
        settings.url = args.url
        check_cli_url(settings, args)
    check_url(settings)
    if args.origin:
        settings.origin = args.origin
    return settings


def online_log_key(args, settings):
    """(key, where from) as find_log_key finds it; never a key fetched
    from the log being checked."""
    return find_log_key(args, settings)


def offline_entry(args, settings, path):
    """A receipt (or raw entry) file with the log key and origin to check it
    by, as `verify` does: the checkpoint must name --origin, the configured
    origin, the host of the receipt's rekor_url, or that of the log."""
    data = load_verify_file(path)
    if v2_document(data):
        return path, None, data, None, None  # Rekor v2: check_v2_entry_for_file
    receipt, entry_id, entry = entry_file_parts(path, data)
    log_key, source = find_log_key(args, settings, receipt, entry, path)
    origin = args.origin or (settings.origin if settings else None)
    if origin is None and receipt:
        origin = urllib.parse.urlsplit(str(receipt.get('rekor_url', ''))).hostname
    if origin is None and settings:
        # A raw entry names no log: the configured one (--url, else the
        # public log). None would check no origin at all.
        origin = settings.origin_host
    return path, entry_id, entry, (log_key, source), origin


def hash_file(path):
    """(sha256, None), or (None, the reason the file cannot be read)."""
    try:
        with open(path, 'rb') as fo:
            return sha256_of(fo), None
    except OSError as e:
        return None, 'cannot read %s: %s' % (path, e.strerror or e)


def check_entry_for_file(check, signed, entry_id, entry, log_key, origin, keys):
    """Verify one entry found for this file; returns its outcome, a dict
    whose 'outcome' is 'trusted', 'untrusted key', 'failed' or 'other'."""
    outcome = {'entry_id': entry_id}
    try:
        verified = verify_log_entry(entry_id, entry, log_key, origin, require_set=False)
    except VerificationError as e:
        return dict(outcome, outcome='failed', reason=str(e))
    outcome.update(log_index=verified.log_index, integrated_time=verified.integrated_time,
                   time_signed=verified.signed_time, notes=verified.notes)
    body = verified.logged
    if body.kind != 'rpm':
        return dict(outcome, outcome='other', reason='a %s entry, not rpm' % body.kind)
    if body.sha256 != check.sha256:
        return dict(outcome, outcome='failed', reason=(
            'the entry logs sha256 %s, this file has %s: it is not the file that was logged'
            % (body.sha256, check.sha256)))
    armored = body.public_key
    primary = openpgp_primary_key(armored)
    outcome['fingerprint'] = openpgp_fingerprint(armored)
    trusted = next((k for k in keys if primary and k.primary == primary), None)
    # rpm checks the file's signature with the user's own copy of the key
    # when they trust it, else with the key the log recorded.
    key, key_name = (trusted.armored, trusted.name) if trusted else (armored, 'the logged key')
    try:
        with RPM_LOCK:
            hdr = check_key_signed_rpm(signed, key, key_name)
        verify_rpm_body(body, expected_from_header(hdr, check.sha256, key))
    except (RekorLogError, VerificationError) as e:
        return dict(outcome, outcome='failed', reason=str(e))
    if not trusted:
        return dict(outcome, outcome='untrusted key', reason=(
            'logged with key %s, which is not one of the trusted keys'
            % (outcome['fingerprint'] or 'of unknown fingerprint')))
    return dict(outcome, outcome='trusted', trusted_key=trusted.name)


def check_v2_entry_for_file(context, check, name, data):
    """A Rekor v2 receipt (or bare entry) checked for this RPM file, as
    check_entry_for_file does a v1 entry: the entry verifies with the v2
    log's key (found as verify finds it), and its body is the hashedrekord
    this file's header signature makes with one of the trusted keys."""
    from .v2 import entry as v2entry
    from .v2 import hashedrekord
    outcome = {'receipt': name, 'entry_id': None}
    kind = v2_document(data)
    receipt = data if kind == 'receipt' else None
    if kind == 'bundle':
        return dict(outcome, outcome='other', reason='a Sigstore bundle, not an RPM receipt')
    try:
        tle = v2entry.parse_entry(receipt.get('transparency_log_entry') if receipt else data)
        keys, source = v2_log_keys(context.args, context.settings, receipt, name)
    except v2entry.EntryError as e:
        return dict(outcome, outcome='failed', reason=str(e))
    except UsageError as e:
        return dict(outcome, outcome='cannot check', reason=str(e))
    outcome['log_key'] = source
    if not any(k.log_id == tle.log_id for k in keys):
        return dict(outcome, outcome='cannot check', reason=(
            'cannot check %s: no key for its log (logId %s) in %s'
            % (name, base64.b64encode(tle.log_id).decode(), source)))
    body, trusted, problems = None, None, []
    for key in context.keys:
        try:
            body = hashedrekord.from_rpm_file(check.file, key.armored).canonical_body()
        except RekorLogError as e:
            problems.append(str(e))
            continue
        trusted = key
        break
    try:
        if receipt is not None:
            try:
                sent = base64.b64decode(receipt.get('body') or '', validate=True)
            except (binascii.Error, TypeError):
                raise v2entry.EntryError('receipt: body is not base64')
            if sent != tle.body:
                raise v2entry.EntryError('the logged body is not the one the receipt records')
        verified = v2entry.verify_entry(tle, tle.body, keys)
    except v2entry.EntryError as e:
        return dict(outcome, outcome='failed', reason=str(e))
    outcome.update(entry_id='%s index %d' % (verified.log.origin, tle.log_index),
                   log_index=tle.log_index, integrated_time=None, time_signed=False,
                   notes=['Rekor v2: an entry carries no time'])
    if trusted is None:
        return dict(outcome, outcome='untrusted key', reason=(
            'no trusted key makes this file\'s header signature%s'
            % (' (%s)' % problems[0] if problems else '')))
    if body != tle.body:
        return dict(outcome, outcome='failed', reason=(
            'the entry logs another signature than this file\'s header signature'))
    return dict(outcome, outcome='trusted', trusted_key=trusted.name,
                fingerprint=trusted.fingerprint)


def conclude(check, outcomes, missing_reason):
    """A package's status from the outcomes of its entries: logged when one
    verified with a trusted key, else the most telling failure."""
    check.entries = outcomes
    for wanted, status in (('trusted', 'logged'), ('untrusted key', 'untrusted key'),
                           ('failed', 'not verified'), ('cannot check', 'not checked')):
        chosen = next((o for o in outcomes if o['outcome'] == wanted), None)
        if chosen:
            check.status = status
            check.reason = chosen.get('reason')
            for name in ('entry_id', 'log_index', 'integrated_time', 'time_signed',
                         'fingerprint', 'trusted_key', 'log_key'):
                setattr(check, name, chosen.get(name))
            check.notes += chosen.get('notes') or []
            if status == 'logged' and any(o['outcome'] == 'failed' for o in outcomes):
                check.notes.append('another entry for this file does not verify')
            return
    check.status, check.reason = 'not found', missing_reason


def entries_from_index(client, sha256):
    """[(entryID, entry)] the log's index lists for a hash, and a note on
    what it lists but the log did not return."""
    ids = list(dict.fromkeys(i.lower() for i in client.search_index(
        {'hash': 'sha256:%s' % sha256})))
    notes = []
    if len(ids) > MAX_ENTRIES_PER_PACKAGE:
        notes.append('the index lists %d entries; the first %d were checked'
                     % (len(ids), MAX_ENTRIES_PER_PACKAGE))
        ids = ids[:MAX_ENTRIES_PER_PACKAGE]
    found, seen = [], set()
    for start in range(0, len(ids), RETRIEVE_BATCH):
        for entry_id, entry in client.retrieve_entries(ids[start:start + RETRIEVE_BATCH]):
            if entry_id.lower()[-64:] not in seen:
                seen.add(entry_id.lower()[-64:])
                found.append((entry_id, entry))
    missing = sum(1 for i in ids if i[-64:] not in seen)
    if missing:
        notes.append('the index lists %s the log did not return'
                     % counted(missing, 'entry', 'entries'))
    return found, notes


def check_package(check, context):
    """Fill in check (its sha256 known) for one RPM file."""
    try:
        signed = signed_rpm_from_file(check.file)
    except SourceGone as e:
        check.reason = str(e)
        if str(e).endswith(' is not signed'):
            check.status = 'not verified'
        return
    check.nvra = signed.nvra
    if context.hub_receipts:
        try:
            name, data = hub_v2_receipt(context.settings, signed)
        except KojiUnavailable as e:
            check.reason = str(e)   # not checked: exit 2
            return
        except LookupError as e:
            check.status, check.reason = 'not found', str(e)
            return
        conclude(check, [check_v2_entry_for_file(context, check, name, data)], None)
        return
    if context.receipts is not None:
        # The receipts that name this file's hash; if none does, all of
        # them, so that each says why it is not this file's.
        receipts = [r for r in context.receipts if claimed_sha256(r[2]) == check.sha256]
        outcomes = []
        for name, entry_id, entry, found_key, origin in receipts or context.receipts:
            if found_key is None:
                outcomes.append(check_v2_entry_for_file(context, check, name, entry))
                continue
            log_key, source = found_key
            logged_by = str(entry.get('logID', '')).lower() if isinstance(entry, dict) else ''
            if logged_by != log_key_id(log_key).hex():
                # A key for another log says nothing about the package.
                outcomes.append({'entry_id': entry_id, 'receipt': name, 'log_key': source,
                                 'outcome': 'cannot check', 'reason': (
                                     'cannot check %s: its entry is from the log with logID '
                                     '%s, the log key (%s) is logID %s' % (
                                         name, logged_by or '(none)', source,
                                         log_key_id(log_key).hex()))})
                continue
            outcome = check_entry_for_file(check, signed, entry_id, entry, log_key, origin,
                                           context.keys)
            outcomes.append(dict(outcome, receipt=name, log_key=source))
        conclude(check, outcomes, 'no receipt given logs it')
        return
    try:
        found, notes = entries_from_index(context.client, check.sha256)
    except RekorLogError as e:
        check.reason = str(e)
        return
    check.notes += notes
    outcomes = [dict(check_entry_for_file(check, signed, entry_id, entry, context.log_key[0],
                                          context.settings.origin_host, context.keys),
                     log_key=context.log_key[1])
                for entry_id, entry in found]
    conclude(check, outcomes, "not found in the log's index (the index is best-effort: "
                              'this does not prove it absent from the log)')


def hub_v2_receipt(settings, signed):
    """(URL, receipt) of a signature logged in Rekor v2, as the hub keeps
    it: rekorLogStatus says whether Koji logged this file's signature, and
    the receipt is read from [koji] topurl at the path its headers make.
    Both are input: check_v2_entry_for_file verifies the receipt against
    the log's key and this file. LookupError when the hub has none;
    KojiUnavailable when it cannot be asked or read."""
    import requests
    from .receipts import receipt_parts
    url = hub_url(settings)
    session = koji.ClientSession(url, opts={
        'timeout': settings.timeout, 'max_retries': settings.retries,
        'retry_interval': settings.backoff, 'anon_retry': True})
    try:
        answer = session.rekorLogStatus(signed.nvra)
    except koji.GenericError as e:
        raise LookupError('the hub at %s: %s' % (url, failure_cause(e)))
    except Exception as e:
        raise KojiUnavailable('cannot ask the hub at %s: %s' % (url, failure_cause(e)))
    mine = [a for a in answer if isinstance(a, dict) and a.get('sigkey') == signed.sigkey] \
        if isinstance(answer, list) else []
    if not mine:
        raise LookupError('the hub at %s holds no signature of %s by sigkey %s'
                          % (url, signed.nvra, signed.sigkey))
    if mine[0].get('status') != 'logged':
        raise LookupError('the hub says %s: %s' % (str(mine[0].get('status'))[:40],
                                                   str(mine[0].get('reason') or '')[:200]))
    fields = koji.get_header_fields(signed.path, ['name', 'version', 'release', 'arch'],
                                    src_arch=True)
    dirs, name = receipt_parts(fields, signed.sigkey)
    where = '%s/rekor-logs/%s' % (settings.topurl.rstrip('/'), '/'.join(
        urllib.parse.quote(part) for part in dirs + (name,)))
    try:
        with requests.get(where, timeout=settings.timeout, allow_redirects=False, stream=True,
                          verify=settings.ca_bundle or True) as response:
            if response.status_code != 200:
                raise KojiUnavailable('%s: HTTP %d' % (where, response.status_code))
            data = response.raw.read(MAX_RECEIPT + 1, decode_content=True)
    except requests.RequestException as e:
        raise KojiUnavailable('cannot read %s: %s' % (where, short_reason(e)))
    if len(data) > MAX_RECEIPT:
        raise KojiUnavailable('%s is larger than %d bytes' % (where, MAX_RECEIPT))
    try:
        return where, parse_json(data, where)
    except RekorLogError as e:
        raise KojiUnavailable(str(e))

MAX_RECEIPT = 4 * 1024 * 1024  # a receipt is a few KiB


@dataclass
class VerifyRpmContext:
    args: object
    settings: Settings
    keys: list
    receipts: list = None  # [(file, entryID, entry, log key, origin)] when offline
    client: RekorClient = None
    log_key: object = None
    hub_receipts: bool = False  # Rekor v2: each file's receipt as the hub keeps it


def verify_rpms(context, paths):
    """Check every file; hashing runs ahead of the log's answers, in a
    small pool (hashlib releases the GIL), so many RPMs cost about the time
    of hashing them."""
    from concurrent.futures import ThreadPoolExecutor
    checks = []
    with ThreadPoolExecutor(max_workers=2) as pool:
        for path, (sha256, error) in zip(paths, pool.map(hash_file, paths)):
            check = PackageCheck(path, sha256)
            checks.append(check)
            if error:
                check.reason = error
                continue
            check_package(check, context)
    return checks


def format_package(check):
    name = check.file + (' (%s)' % check.nvra if check.nvra else '')
    if check.status == 'logged':
        line = ('logged %s: log index %d, integrated %s, signed by %s (trusted: %s), entry %s'
                % (name, check.log_index, 'at no recorded time (Rekor v2)'
                   if check.integrated_time is None else
                   format_time(check.integrated_time, check.time_signed),
                   check.fingerprint, check.trusted_key, check.entry_id))
    elif check.status == 'untrusted key':
        line = 'NOT TRUSTED %s: %s (log index %d, integrated %s, entry %s)' % (
            name, check.reason, check.log_index, 'at no recorded time (Rekor v2)'
            if check.integrated_time is None else
            format_time(check.integrated_time, check.time_signed), check.entry_id)
    else:
        line = '%s %s: %s' % (check.status.upper(), name, check.reason)
    return '\n'.join([line] + ['  note: %s' % n for n in check.notes] + (
        ['  log key: %s' % check.log_key] if check.log_key else [])) + '\n'
