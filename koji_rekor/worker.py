"""The worker: koji-rekor retry drains the outbox."""

import contextlib
import os
import threading
import time
from dataclasses import dataclass, field

from . import LOG
from .delivery import deliver
from .display import counted
from .errors import BadRecord, failure_cause, RekorLogError, VerificationError
from .koji_client import signature_in_koji
from .logkey import log_key_id
from .merkle import left_subtrees, prefix_roots
from .outbox import (
    REJECTED_FOLDER,
    ROLLED_BACK_FOLDER,
    claimed,
    COMMIT_GRACE,
    COMMITTED,
    list_outbox,
    mark_committed,
    outbox_dir,
    outbox_left,
    set_aside,
    UNCOMMITTED,
)
from .progress import run_bounded, ThreadClients
from .rekor import make_client
from .safefs import locked_at, logs_dir
from .state import (
    check_consistency,
    checkpoint_parts,
    checkpoint_path,
    clear_outage,
    prove_consistency,
    read_outage,
    read_tree_head,
    record_outage,
    resolve_log_key,
    state_dir,
    topdir_of_state,
)
from .v2log import v2_error, v2_shards


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
            set_aside(path, record, ROLLED_BACK_FOLDER, 'Koji has no such signature: the import '
                      'that queued it was rolled back')
            LOG.warning('rekor_log: rolled back %s sigkey %s: Koji has no such signature, '
                        'set aside in rolled-back/', record['nvra'], record['sigkey'])
            counts['rolled back'] += 1


def probe_log(settings, topdir, watch, now):
    """Whether the log can be used in this pass. After a recorded outage the
    log is probed (GET /api/v1/log): by --watch only when the outage's
    backoff allows, by a single pass (cron, an admin) always. True when the
    log answers, no outage is recorded, or with --now."""
    outage = read_outage(settings, topdir)
    if outage is None or now:  # --now tries the records themselves
        return True
    if watch and time.time() < outage.next_probe:
        return False
    if outage.closed:
        # Its other endpoints still answer: only an entry tells whether it
        # takes entries again, and the first 501 ends the pass.
        return True
    client = v2_probe_client(settings) if settings.api == 2 else make_client(settings)
    try:
        client.checkpoint()
    except RekorLogError as e:
        record_outage(settings, topdir, failure_cause(e))
        LOG.error('rekor_log: the log is still failing: %s', failure_cause(e))
        return False
    finally:
        client.close()
    clear_outage(topdir)
    LOG.info('rekor_log: the log answers again after %s: every record waiting for '
             'it is due', counted(outage.failures, 'failure'))
    return True


def v2_probe_client(settings):
    """A client for the first shard a v2 upload writes to, to probe it."""
    try:
        url = v2_shards(settings)[0]
    except Exception as e:
        raise v2_error(e)
    return make_client(settings, url, api=2, connect_timeout=min(settings.timeout, 10.0),
                       retries=0, backoff=1.0)

DRAIN_COUNTS = ('logged', 'already in the log', 'failed', 'rejected', 'waiting', 'busy',
                'unconfirmed', 'rolled back', 'log failing', 'tree head not kept')


def is_due(record, now, log_failing, force=False):
    """Whether this pass tries a (checked) record: never while the log is
    failing; else when its next attempt has come, or at once with --now
    (force)."""
    if log_failing:
        return False
    return force or record['next_attempt'] <= now


def due(records, now, log_failing, force=False):
    """The records of a pass to try now (is_due), in their order."""
    return [record for record in records if is_due(record, now, log_failing, force)]


def drain_outbox(settings, topdir, limit=None, now=False, watch=False, jobs=1):
    """One pass over the outbox, jobs records at a time; returns counts of
    what happened. A file that is not a valid record is set aside in
    rejected/ and counted as rejected: it never stops the pass."""
    counts = dict.fromkeys(DRAIN_COUNTS, 0)
    log_up = [probe_log(settings, topdir, watch, now)]  # shared by the threads
    counts['log failing'] = 0 if log_up[0] else 1
    outbox = outbox_dir(topdir)
    for name in list_outbox(topdir):
        path = os.path.join(outbox, name)
        if name.endswith(UNCOMMITTED) and not name.startswith('.') \
                and age(path) > COMMIT_GRACE:
            try:
                resolve_uncommitted(settings, path, counts)
            except BadRecord:
                counts['rejected'] += 1
    names = [name for name in list_outbox(topdir) if name.endswith(COMMITTED)
             and not name.startswith('.')]
    work = WorkerPass(settings, topdir, limit)

    def deliver_due(name):
        path = os.path.join(outbox, name)
        try:
            with claimed(path) as record:
                if record is None:
                    return 'busy'
                if not is_due(record, time.time(), not log_up[0], force=now):
                    return 'waiting'
                if not work.take_one():
                    return None
                result = deliver(settings, topdir, path, record, **work.shared())
                if result == 'failed' and read_outage(settings, topdir) is not None:
                    log_up[0] = False  # the log failed: the rest wait for it
                return result
        except BadRecord:
            return 'rejected'

    def count(name, future):
        outcome = future.result()
        if outcome:
            counts[outcome] += 1

    try:
        run_bounded(jobs, names, deliver_due, count)
    finally:
        work.close(counts)
    if not log_up[0]:
        counts['log failing'] = 1
    return counts


class WorkerPass:
    """What the threads of one pass of the worker share: a Rekor client per
    thread for the whole pass (its connection, and TLS, reused), the log
    key, and the tree heads proved consistent, kept on disk once at the
    end of the pass."""

    def __init__(self, settings, topdir, limit=None):
        self.settings = settings
        self.state = state_dir(topdir)
        self.heads = TreeHeads(self.state)
        self.left = limit
        self.clients = ThreadClients(lambda: make_client(settings))
        self.client = self.clients.get
        self.guard = threading.Lock()
        self.log_key = None

    def take_one(self):
        """Whether one more record may be uploaded within --limit."""
        with self.guard:
            if self.left is None:
                return True
            if self.left <= 0:
                return False
            self.left -= 1
            return True

    def shared(self):
        """The keyword arguments of deliver() for this thread."""
        if self.settings.api == 2:
            return {}  # a v2 upload verifies on its own (rekor_log.upload_v2)
        client = self.client()
        with self.guard:
            if self.log_key is None:
                try:
                    self.log_key = resolve_log_key(self.settings, client, self.state)
                except RekorLogError:
                    pass  # each upload tries again, and fails with the cause
        return {'client': client, 'log_key': self.log_key, 'heads': self.heads}

    def close(self, counts):
        try:
            if self.heads.trees:
                counts['tree head not kept'] += self.heads.save(self.client())
        finally:
            self.clients.close()

# Tree heads a pass remembers per tree; beyond this the smallest are
# dropped, which costs at most a consistency proof, never a check.
KEPT_HEADS = 4096


@dataclass
class KnownTree:
    """One tree of the log as a pass has seen it."""
    key: object
    tree_id: int
    saved: tuple                 # (size, root) kept on disk when the pass began, or None
    newest: tuple = None         # (size, root, checkpoint note) of the largest head
    heads: dict = field(default_factory=dict)  # size -> root: one history, all proved
    lock: threading.Lock = field(default_factory=threading.Lock)


class TreeHeads:
    """The tree heads a pass of the worker has proved to be one history.

    The inclusion proof of an entry at index i also gives the roots of the
    tree's first i and i + 1 leaves (prefix_roots), heads that the
    entry's verified head provably extends. A new head that is larger than
    the newest one is proved from those when one of them has the newest
    one's size (as when this worker's uploads follow each other), and with
    the log's consistency proof (RFC 9162, section 2.1.4) otherwise; a
    smaller one with the consistency proof to the newest. Each head is
    proved once per pass: never once per signature. Every head so proved
    is a prefix of the newest one, so they are all one history. The newest
    is kept on disk at the end of the pass; a crash before that only means
    that the next pass proves from an older head.
    """

    def __init__(self, state):
        self.state = state
        self.trees = {}
        self.guard = threading.Lock()

    def tree(self, key, tree_id):
        with self.guard:
            ident = (log_key_id(key), tree_id)
            known = self.trees.get(ident)
            if known is None:
                # Read under the lock, as check_consistency does: a state
                # that cannot be locked (a planted link) fails the record
                # now, not after its receipt was written.
                with logs_dir(topdir_of_state(self.state), checkpoint_parts(key)) as fd, \
                        locked_at(fd, '%d.json' % tree_id,
                                  checkpoint_path(self.state, key, tree_id)):
                    saved = read_tree_head(fd, key, tree_id)
                known = self.trees[ident] = KnownTree(key, tree_id, saved)
                if saved:
                    known.newest = saved + (None,)
                    known.heads[saved[0]] = saved[1]
            return known

    def check(self, client, key, verified, entry):
        """Called by upload_signed_rpm for each verified entry."""
        known = self.tree(key, verified.tree_id)
        head = (verified.tree_size, verified.root_hash)
        proof = entry['verification']['inclusionProof']  # verified with the entry
        prefixes = prefix_roots(verified.tree_index, bytes.fromhex(verified.uuid), left_subtrees(
            verified.tree_index, verified.tree_size, [bytes.fromhex(h) for h in proof['hashes']]))
        with known.lock:
            if known.heads.get(head[0]) != head[1]:
                self.prove(client, known, head, prefixes)
            for size, root in sorted(prefixes.items()) + [head]:
                if known.heads.setdefault(size, root) != root:
                    raise VerificationError(
                        'split view: the log showed two roots for tree size %d: %s and %s'
                        % (size, known.heads[size].hex(), root.hex()))
            if known.newest is None or head[0] > known.newest[0]:
                known.newest = head + (verified.checkpoint.note,)
            if len(known.heads) > 2 * KEPT_HEADS:
                for size in sorted(known.heads)[:-KEPT_HEADS]:
                    del known.heads[size]

    @staticmethod
    def prove(client, known, head, prefixes):
        """Prove a head not seen before one history with the newest."""
        if known.newest is None:
            return
        newest = known.newest[:2]
        if head[0] > newest[0] and newest[0] in prefixes:
            if prefixes[newest[0]] != newest[1]:
                raise VerificationError(
                    'split view: the log is not consistent with the tree head seen before '
                    '(its tree of size %d has root %s, not %s)' % (
                        newest[0], prefixes[newest[0]].hex(), newest[1].hex()))
            return
        prove_consistency(client, known.tree_id, newest, head)

    def save(self, client):
        """Keep the newest head of each tree; returns how many could not be
        kept (another process kept a head that is not one history with it)."""
        failed = 0
        for known in self.trees.values():
            if known.newest is None or known.newest[:2] == known.saved:
                continue
            try:
                # Another hub or worker may have kept a newer head meanwhile:
                # proved against it unless it is one of ours.
                check_consistency(client, self.state, known.key, known.tree_id,
                                  *known.newest, proven=known.heads)
            except (RekorLogError, OSError) as e:
                LOG.error('rekor_log: cannot keep the tree head of tree %s: %s',
                          known.tree_id, failure_cause(e))
                failed += 1
        return failed


def age(path):
    """Seconds since a record was written; 0 once a hub has moved it."""
    try:
        return time.time() - os.lstat(path).st_mtime
    except FileNotFoundError:
        return 0


def summary_line(counts, topdir, settings=None):
    left, soonest = outbox_left(topdir)
    rejected = os.path.join(outbox_dir(topdir), REJECTED_FOLDER)
    try:
        aside = sum(1 for name in list_outbox(topdir, REJECTED_FOLDER)
                    if not name.startswith('.') and not name.endswith('.reason'))
    except RekorLogError:  # a link there: the pass already said so
        aside = 0
    parts = ['%s %d' % (k, v) for k, v in counts.items() if v and k != 'log failing']
    line = '%s; %d left in the outbox' % (', '.join(parts) or 'nothing to do', left)
    if left and soonest:
        line += ' (next attempt %s)' % time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(soonest))
    if aside:
        line += '; %d set aside in %s' % (aside, rejected)
    outage = read_outage(settings, topdir) if settings else None
    if outage and outage.closed:
        line += '; the log no longer takes entries since %s (%s): set [rekor] url to a log ' \
            'that does' % (time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(outage.since)),
                           outage.last_error)
    elif outage:
        line += '; the log has been failing since %s (%s), next probe %s' % (
            time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(outage.since)),
            outage.last_error,
            time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(outage.next_probe)))
    return line

# A v2 upload waits for the shard's next checkpoint (about a second), so
# the worker's throughput is how many it has in flight: 16 drain 200
# signatures in about 13 s where one at a time takes 200 (bench/).
V2_JOBS = 16
