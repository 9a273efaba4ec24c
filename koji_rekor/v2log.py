"""Logging a signature to a Rekor v2 shard: its key, the upload, the receipt, the checkpoints kept."""

import base64
import datetime
import json
import os
import re

from . import LOG
from .display import display_url
from .entry import make_entry
from .errors import (
    failure_cause,
    RekorLogError,
    RekorMisconfigured,
    RekorRejected,
    VerificationError,
)
from .receipts import Outcome, read_receipt
from .rpmsig import locate_signed_rpm, nvra_of, public_key_file, read_public_key
from .safefs import (
    check_part,
    locked_at,
    logs_dir,
    parse_json,
    read_file_at,
    STATE_DIR,
    write_file_at,
)
from .state import CHECKPOINTS_DIR, state_dir, topdir_of_state


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
    from .v2 import note
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
    from .v2 import tiles
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
    from .v2 import trust
    return settings.origin or trust.origin_of(url)


def v2_trusted_logs(settings):
    """The v2 logs of [rekor] trusted_root, or None when it is not set."""
    if not settings.trusted_root:
        return None
    from .v2 import trust
    try:
        with open(settings.trusted_root, 'rb') as fo:
            return trust.parse_trusted_root(fo.read(1 << 22))
    except (OSError, trust.TrustError) as e:
        raise RekorMisconfigured('[rekor] trusted_root %s: %s'
                                 % (settings.trusted_root, getattr(e, 'strerror', None) or e))


def v2_log_key(settings, url, trusted=None):
    """The checkpoint key of the shard at url: [rekor] log_public_key (with
    its origin), else the trusted_root log whose origin is that shard's."""
    from .v2 import trust
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
    from .v2 import trust
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
    from .v2 import client as v2client, entry as v2entry
    signed = locate_signed_rpm(build, rpminfo, sigkey)
    armored = read_public_key(public_key_file(settings.signing, sigkey))
    entry = make_entry('hashedrekord', signed, armored)
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
    from .v2 import client as v2client, entry as v2entry
    kept = record['receipt']
    build, rpminfo, sigkey = record['build'], record['rpm'], record['sigkey']
    urls = [u for u in v2_shards(settings) if display_url(u) == kept.get('rekor_url')]
    if not urls:
        raise VerificationError('the receipt kept in the record names a shard the '
                                'configuration does not (%r)' % kept.get('rekor_url'))
    signed = locate_signed_rpm(build, rpminfo, sigkey)
    armored = read_public_key(public_key_file(settings.signing, sigkey))
    body = make_entry('hashedrekord', signed, armored).canonical_body()
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
    """The v2 receipt (docs/admin-guide.md: Receipts); a v1 receipt of the same signature
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
