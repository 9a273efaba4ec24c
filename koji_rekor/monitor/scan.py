"""Scanning the log by index, checking each entry and tree head."""

import base64
import re
import time
from dataclasses import dataclass, field

from .. import LOG
from ..config import Settings
from ..display import counted, display_url, utc
from ..errors import KojiUnavailable, RekorLogError, VerificationError
from ..keysource import log_key_source
from ..logkey import log_key_id
from .heads import check_tree_heads, prove_consistent, tree_of
from .keyed import check_pem_keyed_entry
from .koji_view import KojiView
from .report import collect_findings, flag, Report
from .state import (
    monitor_home,
    read_acks,
    read_state_file,
    SAVE_INTERVAL,
    SCAN_JOBS,
    state_locked,
    valid_scan_state,
    write_state_file,
)
from .watchlist import our_keys
from ..openpgp import openpgp_emails, openpgp_fingerprints
from ..progress import ThreadClients
from ..rekor import make_client
from ..rekor.client_v1 import RETRIEVE_BATCH, RETRIEVE_PATH
from ..rekor.models import body_public_keys
from ..state import resolve_log_key, state_dir
from ..verify import verify_log_entry


@dataclass
class LogView:
    """What one monitor run holds of the log, handed down its checks."""
    client: object  # a LogClient (rekor.make_client)
    settings: Settings
    state: str
    key: object  # the log key
    report: Report
    heads: dict = field(default_factory=dict)  # (tree, size, root) -> proved consistent
    tree_keys: dict = field(default_factory=dict)  # tree ID -> the key its head verified with
    skipped: set = field(default_factory=set)      # inactive trees signed by a key not ours
    shards: list = field(default_factory=list)  # (tree ID, signed size or None), oldest first
    fetcher: object = None                      # the scan's Fetcher


def monitor_log(settings, topdir, watchlist, progress, start_index=None, history=False):
    """Check the log's trees, then read every entry added since the last
    run, and account for each one made with our keys."""
    report = Report(display_url(settings.url), topdir, progress)
    keys = our_keys(settings, watchlist, report)
    # Its memory (positions, findings, acknowledgements, tree heads, the
    # log's key) is in [monitor] state_dir, never under the shared topdir:
    # whoever writes there could otherwise silence a finding.
    home = monitor_home(settings)
    state = state_dir(home)
    client = make_client(settings, api=1)  # the index scan is v1's (monitor/v2.py: tiles)
    try:
        try:
            log_key = resolve_log_key(settings, client, state)
        except RekorLogError as e:
            report.not_checked('the log key of %s: %s' % (display_url(settings.url), e))
            return report
        report.log_id = log_key_id(log_key).hex()
        report.log_key = log_key_source(settings, state)
        scan_name = '%s.json' % report.log_id
        with state_locked(home, scan_name):
            scan = Scan(home, scan_name, read_state_file(home, scan_name, valid_scan_state))
            view = LogView(client, settings, state, log_key, report, fetcher=Fetcher(settings))
            view.topdir = topdir  # the hub's tree heads there: evidence to add, never memory
            koji_view = KojiView(settings, topdir)
            koji_view.home = home  # the monitor's own state: never under the topdir
            try:
                try:
                    check_tree_heads(view)
                except RekorLogError as e:
                    report.not_checked('the tree heads of %s: %s' % (display_url(settings.url), e))
                    report.not_checked('the entries added since log index %s, since the log '
                                       'does not answer' % (scan.data['next_index'] or 0))
                else:
                    # A first run looks up, through the index, the entries made with
                    # our keys before it (a key stolen before the monitor was set up);
                    # until that search has finished once, each run does it again.
                    first = scan.first and start_index is None
                    if first:
                        scan.data['history'] = 'pending'
                    scan_log(view, keys, koji_view, scan, start_index)
                    if history or first or scan.data.get('history') == 'pending':
                        unchecked = len(report.unchecked)
                        LOG.info('rekor_log: looking up the entries the index lists for our '
                                 'keys, before log index %s', scan.data['next_index'])
                        look_back(view, keys, koji_view, scan)
                        if len(report.unchecked) == unchecked:
                            scan.data.pop('history', None)
                            scan.data.pop('history_after', None)
            finally:
                scan.save()
                koji_view.close()
                view.fetcher.close()
            collect_findings(report, scan, read_acks(home))
    finally:
        client.close()
    return report


class Scan:
    """How far the log was read, entries left to check, findings kept."""

    def __init__(self, topdir, name, data):
        self.topdir, self.name = topdir, name
        self.first = data is None
        # None until the first run knows where the log ends: a run that
        # cannot tell saves nothing, so the next one is a first run too.
        self.data = data or {'next_index': None}
        self.data.setdefault('pending', [])
        self.data.setdefault('findings', {})
        self.saved = time.monotonic()

    def save(self):
        if self.data['next_index'] is None:
            return
        write_state_file(self.topdir, self.name, self.data)
        self.saved = time.monotonic()

    def save_now_and_then(self):
        if time.monotonic() - self.saved >= SAVE_INTERVAL:
            self.save()

    def keep_finding(self, uuid, kind, message):
        self.data['findings'].setdefault(uuid, {'kind': kind, 'message': message,
                                                'first_seen': int(time.time())})


def scan_log(view, keys, koji_view, scan, start_index):
    """Read every entry from the last scanned index to the end of the
    signed trees, RETRIEVE_BATCH per request, SCAN_JOBS requests in flight,
    and record how far it got as it goes."""
    report = view.report
    if None in [size for _, size in view.shards]:
        report.not_checked('the entries of a tree whose signed tree head does not verify')
        return
    end = sum(size for _, size in view.shards)
    if start_index is not None:
        scan.data['next_index'] = start_index
    elif scan.first:
        scan.data['next_index'] = end
        report.note('first run: reading the log from its current end, log index %d, and '
                    "before it what Rekor's index lists for our keys (best-effort); "
                    '--start-index N reads from N instead' % end)
    start = scan.data['next_index']
    pending = sorted(set(scan.data['pending']))
    scan.data['pending'] = []
    counts = dict.fromkeys(SCAN_COUNTS, 0)
    report.scan = {'from': start, 'to': max(start, end), 'counts': counts}
    if start > end:
        # a tree that shrank or vanished, each already a finding of its own
        report.note('the log signs %d entries in all, fewer than the %d already read; '
                    'nothing new is read' % (end, start))
        scan.data['next_index'] = start
        return
    began = time.monotonic()
    if pending:
        check_indexes(view, keys, koji_view, scan, pending, counts)
    total = end - start
    step = RETRIEVE_BATCH * SCAN_JOBS
    for window in range(start, end, step):
        indexes = list(range(window, min(window + step, end)))
        check_indexes(view, keys, koji_view, scan, indexes, counts)
        scan.data['next_index'] = indexes[-1] + 1
        scan.save_now_and_then()
        report.progress.update('read %d/%d entries from log index %d'
                               % (indexes[-1] + 1 - start, total, start),
                               done=indexes[-1] + 1 == end)
    report.scan['seconds'] = round(time.monotonic() - began, 3)
    if scan.data['pending']:
        report.not_checked('%s left to check next run (log indexes %s)'
                           % (counted(len(scan.data['pending']), 'entry is', 'entries are'),
                                            ', '.join(map(str, scan.data['pending'][:10]))))

HISTORY_ID = re.compile('[0-9a-f]{1,80}')   # an entry UUID (with its tree ID)

SCAN_COUNTS = ('read', 'ours', 'accounted', 'findings', 'unchecked')


def check_indexes(view, keys, koji_view, scan, indexes, counts):
    """Fetch these log indexes, a batch per request with several in flight,
    and check each entry in index order."""
    batches = [indexes[i:i + RETRIEVE_BATCH] for i in range(0, len(indexes), RETRIEVE_BATCH)]
    answers = list(view.fetcher.pool.map(lambda batch: fetch_indexes(view, batch), batches))
    for batch, (entries, error) in zip(batches, answers):
        for index in batch:
            found = entries.get(index)
            if found is None:
                counts['unchecked'] += 1
                scan.data['pending'].append(index)
                if error is None:
                    view.report.note('the log did not return log index %d, below the size it '
                                     'signs; asked again next run' % index)
                continue
            counts['read'] += 1
            check_entry(view, keys, koji_view, scan, index, *found, counts)
        if error is not None:
            view.report.not_checked('log indexes %d-%d: %s' % (batch[0], batch[-1], error))


class Fetcher:
    """SCAN_JOBS threads for the whole scan, each with its own RekorClient
    (a requests session keeps its connection alive between requests)."""

    def __init__(self, settings):
        import concurrent.futures
        self.settings = settings
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=SCAN_JOBS)
        self.clients = ThreadClients(lambda: make_client(settings, api=1))
        self.client = self.clients.get

    def close(self):
        self.pool.shutdown(wait=True)
        self.clients.close()


def fetch_indexes(view, batch):
    """{log index: (entry ID, entry)} for one batch, and the error if any."""
    try:
        found = view.fetcher.client().json_answer(
            'entries', 'POST', RETRIEVE_PATH,
            lambda found: isinstance(found, list) and all(
                isinstance(e, dict) and all(isinstance(v, dict) for v in e.values())
                for e in found),
            json={'logIndexes': batch})
    except RekorLogError as e:
        return {}, str(e)
    entries = {}
    for item in found:
        for entry_id, entry in item.items():
            index = entry.get('logIndex')
            if index in batch and index not in entries:
                entries[index] = (entry_id, entry)
    return entries, None


def check_entry(view, keys, koji_view, scan, index, entry_id, entry, counts):
    """Verify one entry (UUID, inclusion proof, checkpoint, SET, its global
    index), then account for it if it was made with one of our keys."""
    report = view.report
    if tree_of(entry_id) in view.skipped:
        counts['unchecked'] += 1   # its tree's key is not configured (reported once)
        return
    try:
        verified = verify_log_entry(entry_id, entry, view.key, view.settings.origin_host)
    except VerificationError as e:
        counts['findings'] += 1
        message = 'log index %d: entry %s does not verify: %s' % (index, entry_id, e)
        report.finding('unverified entry', message, entry_id[-64:].lower())
        scan.keep_finding(entry_id[-64:].lower(), 'unverified entry', message)
        return
    # The log signs the global index and proves the tree index: together
    # they must place the entry where it was asked for, or the entry really
    # there is never read.
    misplaced = placement_finding(verified, shard_offset(view, verified.tree_id), index)
    if misplaced:
        counts['findings'] += 1
        flag(view, scan, verified, misplaced.kind, misplaced.message)
        return
    # The tree head the entry comes with must be one history with those
    # held, or the entry may be in a fork shown to this monitor alone.
    view.tree_keys.setdefault(verified.tree_id, verified.key)
    proved = prove_consistent(view, verified.tree_id, verified.checkpoint)
    if proved is None:
        counts['unchecked'] += 1
        scan.data['pending'].append(index)
        report.not_checked('log index %d: entry %s comes with a tree head not proved '
                           'consistent yet: read again next run' % (index, verified.entry_id))
        return
    if not proved:
        # Its tree head is a split view finding already (prove_consistent).
        counts['unchecked'] += 1
        report.not_checked('log index %d: entry %s comes with a tree head of size %d that is '
                           'not one history with the one held: not taken as the log\'s'
                           % (index, verified.entry_id, verified.checkpoint.size))
        return
    seen = classify_entry(verified, keys)
    if not seen.ours:
        check_pem_keyed_entry(view, keys, koji_view, scan, index, verified, counts)
        return
    counts['ours'] += 1
    if seen.finding:
        counts['findings'] += 1
        flag(view, scan, verified, seen.finding.kind, seen.finding.message)
        return
    where = seen.where
    try:
        outcome = koji_view.account(verified, list(seen.fingerprints), where)
    except KojiUnavailable as e:
        counts['unchecked'] += 1
        scan.data['pending'].append(index)
        report.not_checked('%s: Koji cannot be asked: %s' % (where, e))
        return
    if outcome is None:
        counts['accounted'] += 1
        return
    counts['findings'] += 1
    flag(view, scan, verified, *outcome)


@dataclass(frozen=True)
class Finding:
    kind: str      # the report's kind: 'unverified entry', 'our identity', 'other kind'
    message: str


@dataclass(frozen=True)
class Classified:
    """What a verified entry is to this Koji: ours (made with one of our
    keys, or claiming one of our identities), the finding it makes if any,
    the OpenPGP fingerprints it was made with, and where it is, in words."""
    ours: bool
    finding: object = None
    fingerprints: tuple = ()
    where: str = ''


def placement_finding(verified, offset, index):
    """A Finding when the entry the log answered for a global index is not
    where it proves to be (offset: the global index of its tree's first
    entry, None for a tree the log does not list); else None."""
    if offset is None or offset + verified.tree_index != index:
        return Finding('unverified entry', 'log index %d: the log answered with entry %s, '
                       'which it proves at index %d of tree %s' % (
                           index, verified.entry_id, verified.tree_index, verified.tree_id))
    return None


def classify_entry(verified, keys):
    """Classify a verified entry by its keys (keys: the watchlist's
    fingerprints, subjects and names): not ours; ours but a finding (made
    with another key under our identity, or not an rpm entry); or ours and
    for Koji to account for."""
    logged = body_public_keys(verified.body)
    fingerprints = {fp for armored in logged for fp in openpgp_fingerprints(armored)}
    ours = sorted(fingerprints & set(keys.fingerprints))
    subjects = sorted({e for armored in logged for e in openpgp_emails(armored)}
                      & keys.subjects)
    if not ours and not subjects:
        return Classified(False, fingerprints=tuple(sorted(fingerprints)))
    where = 'log index %d, entry %s (integrated %s)' % (
        verified.log_index, verified.uuid, utc(verified.integrated_time))
    finding = None
    if not ours:
        finding = Finding('our identity', '%s: made with key %s, not one of ours, whose user '
                          'ID claims %s' % (where, ', '.join(sorted(fingerprints)) or '?',
                                            ', '.join(subjects)))
    elif verified.body.get('kind') != 'rpm':
        finding = Finding('other kind', '%s: a %s entry made with our key %s; this Koji makes '
                          'only rpm entries' % (where, verified.body.get('kind'),
                                                keys.name(ours[0])))
    return Classified(True, finding, tuple(sorted(fingerprints)), where)


def shard_offset(view, tree_id):
    """The global log index of a tree's first entry (the sizes of the
    shards before it), or None for a tree the log does not list."""
    offset = 0
    for shard, size in view.shards:
        if shard == tree_id:
            return offset
        offset += size or 0
    return None


def look_back(view, keys, koji_view, scan):
    """--history: the entries Rekor's index lists for our key files and
    subjects, older than where the scan started. Best-effort: the index is
    not part of what the log signs, keys it by the hash of its own
    re-encoding of the key block, and is written after the upload is
    answered, so it can miss entries."""
    report = view.report
    queries = [{'publicKey': {'format': 'pgp', 'content': base64.b64encode(armored).decode()}}
               for _, armored in keys.files]
    queries += [{'email': subject} for subject in sorted(keys.subjects)]
    ids = []
    for query in queries:
        try:
            ids += [i.lower() for i in view.client.search_index(query)]
        except RekorLogError as e:
            report.not_checked('--history: the index search failed: %s' % e)
    # In a stable order (the index answers a set), so that an interrupted
    # search resumes after the last entry it checked (history_after, kept
    # with the scan position) instead of starting over.
    ids = sorted(set(ids))
    after = scan.data.get('history_after')
    if isinstance(after, str) and HISTORY_ID.fullmatch(after):
        skipped = len(ids)
        ids = [i for i in ids if i > after]
        skipped -= len(ids)
    else:
        skipped = 0
    start = report.scan.get('from', scan.data['next_index'])
    counts = dict.fromkeys(SCAN_COUNTS, 0)
    report.history = {'listed': len(ids) + skipped, 'resumed_after': skipped,
                      'before': start, 'counts': counts,
                      'note': "best-effort: Rekor's index can miss entries (it keys a key by "
                              "the hash of its own re-encoding and is written after the upload "
                              "is answered)"}
    advancing = True   # the position never moves past an entry not checked
    for at in range(0, len(ids), RETRIEVE_BATCH):
        report.progress.update('history: %d/%d entries the index lists for our keys'
                               % (skipped + at, skipped + len(ids)))
        try:
            entries = view.client.retrieve_entries(ids[at:at + RETRIEVE_BATCH])
        except RekorLogError as e:
            report.not_checked('--history: entries %s: %s' % (', '.join(ids[at:at + 3]), e))
            advancing = False
            continue
        unchecked = counts['unchecked']
        for entry_id, entry in entries:
            index = entry.get('logIndex') if isinstance(entry, dict) else None
            if isinstance(index, int) and index < start:
                counts['read'] += 1
                check_entry(view, keys, koji_view, scan, index, entry_id, entry, counts)
        advancing = advancing and counts['unchecked'] == unchecked
        if advancing:
            scan.data['history_after'] = ids[min(at + RETRIEVE_BATCH, len(ids)) - 1]
            scan.save_now_and_then()
    report.progress.update('history: %d/%d entries the index lists for our keys'
                           % (skipped + len(ids), skipped + len(ids)), done=True)
