"""koji-rekor monitor for Rekor v2 shards: checkpoints, tiles and entry bundles."""

import json
import time

from ..display import display_url
from ..errors import KojiUnavailable, RekorLogError, VerificationError
from ..rekor import make_client
from .keyed import account_keyed_entry, entry_key_forms
from .koji_view import KojiView
from .report import collect_findings, Report
from .scan import Scan, SCAN_COUNTS
from .state import (
    monitor_home,
    read_acks,
    read_state_file,
    state_locked,
    v2_scan_name,
    valid_v2_scan_state,
)
from .watchlist import our_keys

# --- Rekor v2: reading a shard's tiles --------------------------------------
# A v2 log (rekor-tiles) has no entry API to read from: the monitor reads its
# static files (C2SP tlog-tiles). Each shard has its own position and last
# checkpoint; entries are read one entry bundle at a time, each bundle's
# level-0 tile checked against the signed root by one inclusion proof (its
# first leaf's proof covers every other leaf of the tree), so memory and
# requests stay bounded at any log size.

V2_TILE_CACHE = 8   # tiles kept while scanning: one bundle, its path up


def monitor_shards(settings, report):
    """The LogKeys of the v2 shards to watch: every v2 shard of the
    signing config, keyed from the trusted root (or [rekor] url's key);
    else every log of the trusted root that serves a checkpoint; else
    [rekor] url with log_public_key."""
    from ..v2 import trust
    logs = []
    try:
        if settings.trusted_root:
            with open(settings.trusted_root, 'rb') as fo:
                logs = list(trust.parse_trusted_root(fo.read()).logs)
        if settings.log_public_key and settings.url:
            with open(settings.log_public_key, 'rb') as fo:
                own = trust.log_key(settings.origin or trust.origin_of(settings.url), fo.read(),
                                    base_url=settings.url.rstrip('/'))
            logs = [own] + [lk for lk in logs if lk.origin != own.origin]
        if settings.signing_config:
            with open(settings.signing_config, 'rb') as fo:
                config = trust.parse_signing_config(fo.read())
            shards = []
            for shard in config.rekor:
                if shard.major_api_version != 2:
                    continue
                match = [lk for lk in logs if lk.origin == trust.origin_of(shard.url)]
                if match:
                    shards.append(match[0])
                else:
                    report.not_checked('v2 shard %s: no key for it in the trusted root or '
                                       '[rekor] log_public_key' % display_url(shard.url))
            return shards
    except OSError as e:
        report.not_checked('the Rekor v2 trust files: %s: %s' % (e.filename, e.strerror))
        return []
    except ValueError as e:
        report.not_checked('the Rekor v2 trust files: %s' % e)
        return []
    if not logs:
        report.not_checked('no Rekor v2 shard to watch: set [rekor] url and log_public_key, '
                           'or trusted_root')
    return logs


def v2_may_be_v1(settings, log):
    """A trusted root's log, named neither by a signing config nor by
    [rekor] url, may be a Rekor v1 log (a TrustedRoot does not say)."""
    from ..v2 import trust
    return not settings.signing_config and not (
        settings.url and trust.origin_of(settings.url) == log.origin)


def v2_client(settings, url):
    return make_client(settings, url, api=2, read_timeout=max(settings.timeout, 30.0))


def monitor_v2(settings, topdir, watchlist, progress):
    """koji-rekor monitor for api = 2: each shard's checkpoint verified and
    proved consistent with the one seen before, then its entries read from
    the tiles, from where the last run stopped."""
    report = Report(display_url(settings.url or ''), topdir, progress)
    keys = our_keys(settings, watchlist, report)
    if keys.fingerprints and not keys.der:
        report.not_checked('none of our keys has a form a Rekor v2 entry can name (RSA, '
                           'ECDSA or Ed25519 key files)')
    home = monitor_home(settings)
    koji_view = KojiView(settings, topdir)
    koji_view.home = home  # the monitor's own state: never under the topdir
    try:
        for log in monitor_shards(settings, report):
            scan_v2_shard(settings, home, log, keys, koji_view, report)
    finally:
        koji_view.close()
    return report


def scan_v2_shard(settings, home, log, keys, koji_view, report):
    """home: where the monitor keeps its state ([monitor] state_dir)."""
    from ..v2 import note
    shown = display_url(log.base_url)
    name = v2_scan_name(log.log_id)
    with state_locked(home, name):
        scan = Scan(home, name, read_state_file(home, name, valid_v2_scan_state))
        client = v2_client(settings, log.base_url)
        try:
            try:
                raw = client.get('/checkpoint', V2_MAX_READ)
            except RekorLogError as e:
                report.not_checked('the checkpoint of %s: %s' % (shown, e))
                return
            if raw is None and v2_may_be_v1(settings, log):
                report.note('%s (trusted root) has no /checkpoint: not a Rekor v2 log, '
                            'skipped' % shown)
                return
            if raw is None:
                report.not_checked('the checkpoint of %s: the shard has no /checkpoint (is it '
                                   'a Rekor v2 shard?)' % shown)
                return
            try:
                checkpoint = note.verify_checkpoint(raw, log.note_key, log.origin)
            except VerificationError as e:
                report.finding('bad tree head', '%s: its checkpoint does not verify: %s'
                               % (shown, e))
                return

            def fetch(path):
                return client.get('/' + path, V2_MAX_READ)

            tree = {'tree_id': log.origin, 'active': True, 'size': checkpoint.size,
                    'root_hash': checkpoint.root_hash.hex(), 'size_before': None,
                    'status': 'not checked'}
            report.trees.append(tree)
            if not v2_consistent(log, scan, checkpoint, fetch, report, tree):
                return
            scan_v2_entries(log, scan, checkpoint, fetch, keys, koji_view, report)
        finally:
            scan.save()
            client.close()
        collect_findings(report, scan, read_acks(home))

V2_MAX_READ = 256 * (2 + 0xffff)   # an entry bundle at most (tlog-tiles)


def v2_consistent(log, scan, checkpoint, fetch, report, tree):
    """The new checkpoint against the one seen last: a shrunk tree or a
    failed consistency proof (from tiles) is a split view, and the kept
    checkpoint stays where it was (it never moves backwards)."""
    from ..v2 import note, tiles
    before = None
    if scan.data.get('checkpoint'):
        try:
            before = note.verify_checkpoint(scan.data['checkpoint'].encode(), log.note_key,
                                            log.origin)
        except VerificationError as e:
            report.not_checked('%s: the kept checkpoint does not verify (%s); it is replaced'
                               % (display_url(log.base_url), e))
    if before is not None:
        tree['size_before'] = before.size
        old, new = (before, checkpoint) if before.size <= checkpoint.size else (checkpoint, before)
        try:
            tiles.prove_consistency(fetch, old, new)
        except tiles.TileError as e:
            if 'absent' not in str(e):
                return v2_split_view(log, before, checkpoint, e, report, tree)
            report.not_checked('%s: consistency with the checkpoint seen before: %s'
                               % (display_url(log.base_url), e))
            return False
        except VerificationError as e:
            return v2_split_view(log, before, checkpoint, e, report, tree)
        except RekorLogError as e:
            report.not_checked('%s: consistency with the checkpoint seen before: %s'
                               % (display_url(log.base_url), e))
            return False
        if checkpoint.size < before.size:
            tree['status'] = 'older'
            report.note('%s serves checkpoint size %d, older than size %d seen before (and '
                        'consistent with it); nothing new is read'
                        % (display_url(log.base_url), checkpoint.size, before.size))
            return False
    tree['status'] = ('first seen' if before is None else 'unchanged'
                      if before.size == checkpoint.size else 'grew')
    scan.data['checkpoint'] = checkpoint.raw.decode()
    return True


def v2_split_view(log, before, checkpoint, error, report, tree):
    tree['status'] = 'inconsistent'
    report.finding('split view', '%s: split view: its checkpoint of size %d is not consistent '
                   'with the one of size %d seen before: %s' % (
                       display_url(log.base_url), checkpoint.size, before.size, error))
    return False


def scan_v2_entries(log, scan, checkpoint, fetch, keys, koji_view, report):
    """Every entry from the shard's saved position (0 on the first run) to
    the checkpoint's size, bundle by bundle."""
    from ..v2 import tiles
    shown = display_url(log.base_url)
    reader = tiles.TileReader(fetch, checkpoint.size, cache_tiles=V2_TILE_CACHE)
    start = scan.data['next_index'] or 0
    end = checkpoint.size
    counts = dict.fromkeys(SCAN_COUNTS, 0)
    report.scan = {'from': start, 'to': max(start, end), 'counts': counts}
    if scan.first:
        report.note('first run on %s: reading its entries from the start' % shown)
    pending = sorted(i for i in set(scan.data['pending']) if i < min(start, end))
    scan.data['pending'] = []
    began = time.monotonic()
    for index in pending:
        check_v2_index(log, reader, checkpoint, index, keys, koji_view, scan, report, counts)
    index = start
    while index < end:
        stop = min(end, (index // tiles.TILE_WIDTH + 1) * tiles.TILE_WIDTH)
        try:
            check_bundle_tiles(reader, checkpoint, index)
        except VerificationError as e:
            report.finding('split view', '%s: the tiles of entries %d-%d do not lead to its '
                           'signed root: %s' % (shown, index, stop - 1, e))
            return
        except RekorLogError as e:
            report.not_checked('%s: entries %d-%d: %s' % (shown, index, stop - 1, e))
            return
        for at in range(index, stop):
            check_v2_index(log, reader, checkpoint, at, keys, koji_view, scan, report, counts)
        scan.data['next_index'] = index = stop
        scan.save_now_and_then()
        report.progress.update('read %d/%d entries of %s' % (stop - start, end - start, shown),
                               done=stop == end)
    scan.data['next_index'] = max(start, end)
    report.scan['seconds'] = round(time.monotonic() - began, 3)


def check_bundle_tiles(reader, checkpoint, index):
    """The level-0 tile holding leaf `index`, checked once against the
    signed root: the inclusion proof of its first leaf is built from it
    and covers every other leaf (RFC 9162 section 2.1.3.2)."""
    from ..v2 import tiles
    from ..merkle import root_from_inclusion_proof
    first = index - index % tiles.TILE_WIDTH
    checked = reader.__dict__.setdefault('checked_tiles', set())
    if first in checked:
        return
    proof = reader.inclusion_proof(first)
    leaf = reader.node(0, first)
    if root_from_inclusion_proof(first, checkpoint.size, leaf, proof) \
            != checkpoint.root_hash:
        raise tiles.TileError('the tile of entry %d does not lead to the root' % first)
    checked.add(first)


def check_v2_index(log, reader, checkpoint, index, keys, koji_view, scan, report, counts):
    from ..merkle import hash_leaf
    try:
        check_bundle_tiles(reader, checkpoint, index)
        body = reader.checked_entry(index)
    except VerificationError as e:
        counts['findings'] += 1
        report.finding('unverified entry', '%s: entry %d: %s'
                       % (display_url(log.base_url), index, e))
        return
    except RekorLogError as e:
        counts['unchecked'] += 1
        scan.data['pending'].append(index)
        report.not_checked('%s: entry %d: %s' % (display_url(log.base_url), index, e))
        return
    counts['read'] += 1
    try:
        parsed = json.loads(body)
        forms = entry_key_forms(parsed) if isinstance(parsed, dict) else []
    except ValueError:
        forms = []
    if not any(der in keys.der for der, _ in forms):
        return
    counts['ours'] += 1
    uuid = hash_leaf(body).hex()
    where = '%s entry %d (leaf %s)' % (display_url(log.base_url), index, uuid)
    try:
        outcome = account_keyed_entry(keys, koji_view, parsed, forms, where)
    except KojiUnavailable as e:
        counts['unchecked'] += 1
        scan.data['pending'].append(index)
        report.not_checked('%s: Koji cannot be asked: %s' % (where, e))
        return
    if outcome is None:
        counts['accounted'] += 1
        return
    counts['findings'] += 1
    report.finding(outcome[0], outcome[1], uuid)
    scan.keep_finding(uuid, *outcome)
