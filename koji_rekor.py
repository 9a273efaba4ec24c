#!/usr/bin/python3
# koji-rekor: the admin's command line of the rekor_log hub plugin (upload,
# verify, retry, monitor, backfill). The hub never loads this module; it
# imports the plugin module for everything the two share, as Koji's CLI
# plugins sit beside their hub plugins.
#
# SPDX-License-Identifier: LGPL-2.1-only

import argparse
import base64
import binascii
import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import sys
import threading
import time
import urllib.parse
from dataclasses import dataclass, field

import koji

from rekor_log import (
    __version__, BadRecord, check_consistency, check_key_signed_rpm, check_part, check_url,
    checkpoint_dir, checkpoint_parts, checkpoint_path, CHUNK_SIZE, claimed, clear_outage,
    COMMIT_GRACE, COMMITTED, CONFIG_FILE, DEFAULT_URL, deliver, display_url, escape,
    expected_from_header, failure_cause, known_log_key, KOJI_CLIENT_CONFIG, left_subtrees,
    list_outbox, load_config, load_log_key, locate_signed_rpm, locked_at, LOG, LogBehind,
    log_key_id, LogKeys, log_outcome, log_signature, logs_dir, mark_committed, member, nvra_of,
    openpgp_emails, openpgp_fingerprint, openpgp_fingerprints, openpgp_primary_key, OUTBOX_DIR,
    outbox_dir, parse_json, pick_log_key, prefix_roots, prove_consistency, public_key_file,
    PUBLIC_REKOR_HOST, PUBLIC_REKOR_KEY, read_file_at, read_json, read_log_key, read_outage, read_public_key,
    read_receipt, read_tree_head, RECEIPT_DIR, receipt_path, record_json, record_name,
    record_outage, RekorClient, RekorLogError, RekorRejected, RekorUnavailable,
    resolve_log_key, RETRIEVE_BATCH, RETRIEVE_PATH, RPM_LOCK, saved_tree_head, set_aside,
    Settings, sha256_of, short_reason, SignatureSourceError, signed_rpm_from_file,
    SourceGone, split_entry_id, STATE_DIR, state_dir, subdir, text, topdir_of_state, UNCOMMITTED,
    UnknownLogKey, UnsafePath, upload_signed_rpm, utc, VerificationError, verify_checkpoint,
    verify_log_entry, verify_rpm_body, write_atomic, write_file_at, write_receipt,
)
from rekor_log import counted  # noqa: E402 (apart from the list above: merges)
from rekor_log import v2_error, v2_shards  # noqa: E402 (Rekor v2)

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
    client = v2_probe_client(settings) if settings.api == 2 else RekorClient(settings)
    try:
        client.read_checkpoint() if settings.api == 2 else client.log_info()
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
    from rekor_v2 import client as v2client
    try:
        url = v2_shards(settings)[0]
    except Exception as e:
        raise v2_error(e)
    return v2client.V2Client(v2client.ClientSettings(
        url, ca_bundle=settings.ca_bundle, connect_timeout=min(settings.timeout, 10.0),
        read_timeout=settings.timeout, retries=0))


DRAIN_COUNTS = ('logged', 'already in the log', 'failed', 'rejected', 'waiting', 'busy',
                'unconfirmed', 'rolled back', 'log failing', 'tree head not kept')


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
                if not log_up[0] or (not now and record['next_attempt'] > time.time()):
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


def run_bounded(jobs, items, work, done):
    """work(item) for each item on jobs threads, and done(item, future) in
    this thread as each finishes. At most 2 * jobs items are in flight, so
    memory stays flat however many items there are."""
    import concurrent.futures
    pending = {}
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=jobs)

    def finish(return_when):
        finished, _ = concurrent.futures.wait(pending, return_when=return_when)
        for future in finished:
            done(pending.pop(future), future)

    try:
        for item in items:
            if len(pending) >= 2 * jobs:
                finish(concurrent.futures.FIRST_COMPLETED)
            pending[pool.submit(work, item)] = item
        while pending:
            finish(concurrent.futures.FIRST_COMPLETED)
    finally:
        # On an interrupt, what has not started is dropped; a rerun finds it.
        for future in pending:
            future.cancel()
        pool.shutdown(wait=True)


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
        self.local = threading.local()
        self.clients = []
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

    def client(self):
        client = getattr(self.local, 'client', None)
        if client is None:
            client = self.local.client = RekorClient(self.settings)
            with self.guard:
                self.clients.append(client)
        return client

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
            for client in self.clients:
                client.close()


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


def outbox_left(topdir):
    """Records still queued (committed or not) and the soonest attempt; a
    file that does not read as a record counts, with no time."""
    left, soonest = 0, None
    with contextlib.suppress(FileNotFoundError), \
            logs_dir(topdir, ('@outbox',), create=False) as out:
        for name in sorted(os.listdir(out)):
            if name.endswith((COMMITTED, UNCOMMITTED)) and not name.startswith('.'):
                left += 1
                try:
                    due = (read_record_at(out, name) or {}).get('next_attempt')
                except (OSError, RekorLogError):
                    due = None
                if isinstance(due, (int, float)) and not isinstance(due, bool) and due:
                    soonest = due if soonest is None else min(soonest, due)
    return left, soonest


def read_record_at(out, name):
    data = read_file_at(out, name)
    record = parse_json(data, name) if data is not None else None
    return record if isinstance(record, dict) else None


def summary_line(counts, topdir, settings=None):
    left, soonest = outbox_left(topdir)
    rejected = os.path.join(outbox_dir(topdir), 'rejected')
    try:
        aside = sum(1 for name in list_outbox(topdir, 'rejected')
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


# ---------------------------------------------------------------------------
# Seeing the outbox: koji-rekor outbox
# ---------------------------------------------------------------------------

# (state, folder under @outbox, file name ending) of every kind of record
OUTBOX_STATES = (('pending', '', COMMITTED), ('uncommitted', '', UNCOMMITTED),
                 ('rejected', 'rejected', COMMITTED), ('rolled-back', 'rolled-back', COMMITTED))


def outbox_records(topdir, now=None):
    """One dict per record in the outbox and its set-aside folders. A record
    is input: one that cannot be read is listed with the cause."""
    now = time.time() if now is None else now
    for state, folder, ending in OUTBOX_STATES:
        for name in list_outbox(topdir, folder or None):
            if not name.endswith(ending) or name.startswith('.'):
                continue
            yield outbox_entry(topdir, state, folder, name, ending, now)


def outbox_entry(topdir, state, folder, name, ending, now):
    parts = (OUTBOX_DIR,) + ((folder,) if folder else ())
    item = {'state': state, 'name': name[:-len(ending)],
            'path': os.path.join(outbox_dir(topdir), folder, name), 'nvra': None,
            'sigkey': None, 'age': None, 'attempts': None, 'last_error': None,
            'next_attempt': None, 'reason': None}
    try:
        with logs_dir(topdir, parts, create=False) as fd:
            record = parse_json(read_file_at(fd, name) or b'null', 'record %s' % name)
            mtime = os.stat(name, dir_fd=fd, follow_symlinks=False).st_mtime
        if not isinstance(record, dict):
            raise ValueError('not a JSON object')
    except (OSError, ValueError, RekorLogError) as e:
        item['reason'] = 'unreadable record: %s' % (getattr(e, 'strerror', None) or e)
        return item
    queued = record.get('queued')
    if not isinstance(queued, (int, float)) or isinstance(queued, bool):
        queued = mtime
    item.update({k: record.get(k) if isinstance(record.get(k), t) else None for k, t in (
        ('nvra', str), ('sigkey', str), ('attempts', int), ('last_error', str),
        ('next_attempt', int))})
    item['age'] = max(0, int(now - queued))
    aside = record.get('set_aside')
    if isinstance(aside, dict) and isinstance(aside.get('reason'), str):
        item['reason'] = aside['reason']
    return item


def outbox_line(item):
    parts = ['age %s' % ('?' if item['age'] is None else format_age(item['age']))]
    if item['attempts'] is not None:
        parts.append('%d attempt%s' % (item['attempts'], '' if item['attempts'] == 1 else 's'))
    if item['state'] == 'pending' and item['next_attempt']:
        parts.append('next attempt %s' % time.strftime('%Y-%m-%d %H:%M:%S UTC',
                                                        time.gmtime(item['next_attempt'])))
    if item['last_error']:
        parts.append('last error: %s' % item['last_error'])
    if item['reason'] and item['reason'] != item['last_error']:
        parts.append('set aside: %s' % item['reason'] if item['state'] in
                     ('rejected', 'rolled-back') else item['reason'])
    return '%-11s %s: %s' % (item['state'], item['name'], '; '.join(parts))


def requeue_rejected(topdir, name):
    """Move a rejected record back into the outbox, due now; the admin has
    fixed its cause. Refuses when the outbox already holds that signature."""
    file_name = name + COMMITTED
    where = os.path.join(outbox_dir(topdir), 'rejected')
    try:
        check_part(file_name)
        with logs_dir(topdir, (OUTBOX_DIR,), create=False) as out, \
                subdir(out, 'rejected', create=False) as aside:
            data = read_file_at(aside, file_name)
            if data is None:
                raise UsageError('no rejected record %s in %s' % (name, where))
            record = parse_json(data, 'record %s' % file_name)
            if not isinstance(record, dict):
                raise UsageError('%s in %s is not a record' % (name, where))
            for queued in (file_name, name + UNCOMMITTED):
                if read_file_at(out, queued) is not None:
                    raise UsageError('%s is already queued again in %s' % (name, outbox_dir(topdir)))
            record.pop('set_aside', None)
            record['next_attempt'] = 0
            write_file_at(aside, file_name, record_json(record))
            # A link cannot replace a record a hub queued meanwhile; then the
            # rejected one goes.
            try:
                os.link(file_name, file_name, src_dir_fd=aside, dst_dir_fd=out,
                        follow_symlinks=False)
            except FileExistsError:
                raise UsageError('%s is already queued again in %s' % (name, outbox_dir(topdir)))
            os.unlink(file_name, dir_fd=aside)
            os.fsync(out)
    except UnsafePath:
        raise UsageError('no rejected record %s in %s' % (name, where))
    except FileNotFoundError:
        raise UsageError('no rejected record %s in %s' % (name, where))


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
WATCHLIST_LISTS = ('fingerprints', 'keys', 'subjects')
YAML_NULL = 'tag:yaml.org,2002:null'


@dataclass
class Watchlist:
    fingerprints: list = field(default_factory=list)  # 40 upper-case hex digits each
    keys: list = field(default_factory=list)          # paths of armored public keys
    subjects: list = field(default_factory=list)      # e-mail addresses in user IDs


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
                elif name == 'subjects':
                    watchlist.subjects.append(watchlist_subject(item, path))
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


def watchlist_subject(node, path):
    """An e-mail address, as user IDs carry them ("Name <address>")."""
    text = node.value.strip()
    if text.count('@') != 1 or any(c in text for c in ' <>') or text.startswith('@') \
            or text.endswith('@'):
        raise watchlist_error(path, node, 'subject %r is not an e-mail address' % node.value)
    return text.lower()


def watchlist_key_file(node, path):
    """A key file, relative to the watchlist's directory unless absolute."""
    key_path = os.path.join(os.path.dirname(os.path.abspath(path)), node.value)
    if not os.path.isfile(key_path):
        raise watchlist_error(path, node, 'no such key file: %s' % key_path)
    return key_path


@dataclass
class OurKeys:
    """What identifies our signing keys in an entry, whatever encoding,
    user IDs or signatures travel with them (as rekor-monitor matches):
    the v4 fingerprints of primary keys and subkeys, and the watchlist's
    subjects (e-mail addresses in user IDs)."""
    fingerprints: dict = field(default_factory=dict)  # fingerprint -> where it comes from
    subjects: set = field(default_factory=set)
    files: list = field(default_factory=list)         # key files, for --history
    der: dict = field(default_factory=dict)           # DER SubjectPublicKeyInfo -> (sigkey, file)

    def name(self, fingerprint):
        return '%s (%s)' % (fingerprint[-8:].lower(), self.fingerprints[fingerprint])


def our_keys(settings, watchlist, report):
    """Each *.asc of public_key_dir, public_key_path, the watchlist's key
    files and fingerprints, and its subjects."""
    import glob
    paths = []
    if settings.public_key_dir:
        paths += sorted(glob.glob(os.path.join(glob.escape(settings.public_key_dir), '*.asc')))
    if settings.public_key_path:
        paths.append(settings.public_key_path)
    keys = OurKeys(subjects={s.lower() for s in watchlist.subjects})
    for path in paths + watchlist.keys:
        try:
            armored = read_public_key(path)
        except SignatureSourceError as e:
            report.not_checked(str(e))
            continue
        fingerprints = openpgp_fingerprints(armored)
        if not fingerprints:
            report.not_checked('%s holds no version 4 OpenPGP public key' % path)
            continue
        keys.files.append((path, armored))
        for fingerprint in fingerprints:
            keys.fingerprints.setdefault(fingerprint, os.path.basename(path))
        try:
            for der, sigkey in der_public_keys(armored):
                keys.der.setdefault(der, (sigkey, os.path.basename(path)))
        except ImportError as e:   # an installation without the Rekor v2 modules
            report.not_checked('entries naming our key %s as DER or PEM (hashedrekord, dsse): '
                               '%s' % (path, e))
    for fingerprint in watchlist.fingerprints:
        keys.fingerprints.setdefault(fingerprint, 'watchlist')
    report.keys = [{'fingerprint': fp, 'from': source}
                   for fp, source in sorted(keys.fingerprints.items())]
    report.watchlist = sorted(keys.subjects)
    return keys


def der_public_keys(armored):
    """(DER SubjectPublicKeyInfo, sigkey) of each RSA, ECDSA and Ed25519
    key and subkey of an OpenPGP key: the form hashedrekord (v1: PEM of it)
    and Rekor v2 entries carry a key in, so that an entry made with our key
    outside OpenPGP is still known as ours."""
    from rekor_v2 import hashedrekord
    found = []
    for packet in hashedrekord.key_packets(armored):
        sigkey = packet.key_id[-8:].lower()
        try:
            der, _ = hashedrekord.der_public_key(packet)
        except hashedrekord.NotLoggableInV2:
            der = ed25519_der(packet)   # v2 cannot take it in a hashedrekord, dsse can
        except RekorLogError:
            der = None
        if der:
            found.append((der, sigkey))
    return found


# RFC 8410: Ed25519's OpenPGP curve OID (RFC 4880bis 9.2) and the prefix of a
# 32-byte key's DER SubjectPublicKeyInfo.
ED25519_OID = bytes.fromhex('2b06010401da470f01')
ED25519_SPKI = bytes.fromhex('302a300506032b6570032100')


def ed25519_der(packet):
    """The DER key of an OpenPGP EdDSA (legacy, algorithm 22) Ed25519 key
    packet: the MPI holds 0x40 and the 32-byte point; None for anything else."""
    body = packet.body
    if packet.version != 4 or packet.algorithm != 22 or len(body) < 7:
        return None
    size = body[6]
    oid, rest = bytes(body[7:7 + size]), bytes(body[7 + size:])
    if oid != ED25519_OID or len(rest) != 2 + 33 or rest[2] != 0x40:
        return None
    return ED25519_SPKI + rest[3:]


@dataclass
class Report:
    """What the monitor checked and found. Exit status: 1 on findings not
    yet acknowledged, else 2 if something could not be checked, else 0."""
    url: str
    topdir: str
    progress: Progress
    log_id: str = None
    log_key: str = None  # where the log's key came from
    trees: list = field(default_factory=list)
    scan: dict = field(default_factory=dict)
    history: dict = None
    keys: list = field(default_factory=list)
    watchlist: list = field(default_factory=list)
    findings: list = field(default_factory=list)
    unchecked: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    acknowledged: int = 0

    def finding(self, kind, message, finding_id=None):
        """A finding; with an ID (an entry's UUID) it is kept until acknowledged."""
        self.findings.append({'id': finding_id, 'kind': kind, 'message': message, 'new': True})
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
        return {'rekor_url': self.url, 'log_id': self.log_id, 'log_key': self.log_key,
                'topdir': self.topdir,
                'trees': self.trees, 'scan': self.scan, 'history': self.history,
                'keys': self.keys, 'subjects': self.watchlist, 'findings': self.findings,
                'acknowledged': self.acknowledged, 'not_checked': self.unchecked,
                'notes': self.notes, 'exit_status': self.status}


@dataclass
class LogView:
    """What one monitor run holds of the log, handed down its checks."""
    client: RekorClient
    settings: Settings
    state: str
    key: object  # the log key
    report: Report
    heads: dict = field(default_factory=dict)  # (tree, size, root) -> proved consistent
    tree_keys: dict = field(default_factory=dict)  # tree ID -> the key its head verified with
    skipped: set = field(default_factory=set)      # inactive trees signed by a key not ours
    shards: list = field(default_factory=list)  # (tree ID, signed size or None), oldest first
    fetcher: object = None                      # the scan's Fetcher


# ---------------------------------------------------------------------------
# The monitor's own state: how far it scanned, findings until acknowledged,
# and acknowledgements, under rekor-logs/@state/monitor/ (nothing a receipt
# or the plugin writes). It is input like anything in the topdir: a file
# that is not what the monitor writes stops the run (exit 2).
# ---------------------------------------------------------------------------

MONITOR_DIR = 'monitor'
ACKS_FILE = 'acknowledged.json'
SAVE_INTERVAL = 2.0       # seconds between saves of the scan position
SCAN_JOBS = 4             # retrieve requests in flight


MONITOR_PARTS = (STATE_DIR, MONITOR_DIR)


def monitor_home(settings):
    """[monitor] state_dir, created 0700 if missing. Inside, the state is
    laid out as under a topdir (rekor-logs/@state/...), so that the same
    link-refusing readers and writers keep it."""
    home = settings.monitor_state_dir
    try:
        os.makedirs(home, 0o700, exist_ok=True)
    except OSError as e:
        raise UsageError('cannot create the monitor\'s state directory %s ([monitor] '
                         'state_dir): %s' % (home, e.strerror or e))
    return home


def monitor_dir(topdir):
    return os.path.join(state_dir(topdir), MONITOR_DIR)


def read_state_file(topdir, name, check):
    """A monitor state file, read without following links; None if absent."""
    path = os.path.join(monitor_dir(topdir), name)
    try:
        with logs_dir(topdir, MONITOR_PARTS, create=False) as fd:
            data = read_file_at(fd, name)
        data = parse_json(data, path) if data is not None else None
    except FileNotFoundError:
        return None
    except (OSError, RekorLogError) as e:
        raise UsageError('cannot read the monitor state %s: %s'
                         % (path, getattr(e, 'strerror', None) or e))
    if data is not None and not check(data):
        raise UsageError('%s is not a monitor state file (remove it to start over)' % path)
    return data


def write_state_file(topdir, name, data):
    with logs_dir(topdir, MONITOR_PARTS) as fd:
        write_file_at(fd, name, json.dumps(data, indent=1, sort_keys=True).encode())


@contextlib.contextmanager
def state_locked(topdir, name):
    """The monitor's lock on one state file, shared with other hosts."""
    with logs_dir(topdir, MONITOR_PARTS) as fd, \
            locked_at(fd, name, os.path.join(monitor_dir(topdir), name)):
        yield


def valid_scan_state(data):
    return (isinstance(data, dict) and isinstance(data.get('next_index'), int)
            and data['next_index'] >= 0
            and all(isinstance(i, int) for i in data.get('pending', []))
            and isinstance(data.get('findings', {}), dict)
            and all(isinstance(f, dict) and isinstance(f.get('message'), str)
                    for f in data.get('findings', {}).values()))


def valid_acks(data):
    return isinstance(data, dict) and all(
        isinstance(v, dict) and isinstance(v.get('reason'), str) for v in data.values())


def read_acks(topdir):
    return read_state_file(topdir, ACKS_FILE, valid_acks) or {}


# Rekor v2: one scan state per shard (named by its log id), with the last
# checkpoint seen there, and the digest index of the signatures Koji recorded.
# Small functions, so that where the state lives can change in one place.
DIGESTS_FILE = 'v2-digests.json'


def v2_scan_name(log_id):
    return 'v2-%s.json' % log_id.hex()


def valid_v2_scan_state(data):
    return valid_scan_state(data) and isinstance(data.get('checkpoint', ''), str)


def valid_digests(data):
    """{sigkey: {"<rpm id>/<sighash>": [digest, sha256 of the signature,
    sha256 of the DER key, NVRA] or null (a signature no hashedrekord holds)}}"""
    return isinstance(data, dict) and all(
        isinstance(sigs, dict) and all(
            v is None or (isinstance(v, list) and len(v) == 4 and all(isinstance(x, str)
                                                                       for x in v))
            for v in sigs.values())
        for sigs in data.values())


def read_digests(topdir):
    return read_state_file(topdir, DIGESTS_FILE, valid_digests) or {}


def write_digests(topdir, data):
    with state_locked(topdir, DIGESTS_FILE):
        write_state_file(topdir, DIGESTS_FILE, data)


def finding_id(text):
    """An entry's UUID from a UUID or an entry ID (tree ID + UUID)."""
    text = text.strip().lower()
    if len(text) in (64, 80) and all(c in '0123456789abcdef' for c in text):
        return text[-64:]
    raise UsageError('%r is not an entry UUID (64 hex digits) or entry ID (80)' % text)


def acknowledge(topdir, ids, reason, by=None):
    """Record that an admin looked at these findings; kept with who, when, why."""
    if not reason or not reason.strip():
        raise UsageError('--reason TEXT is required: say why the finding is fine')
    ids = [finding_id(i) for i in ids]
    with state_locked(topdir, ACKS_FILE):
        acks = read_acks(topdir)
        for uuid in ids:
            acks[uuid] = {'reason': ' '.join(reason.split()), 'by': by or user_name(),
                          'at': int(time.time())}
        write_state_file(topdir, ACKS_FILE, acks)
    return ids


def user_name():
    import getpass
    try:
        return getpass.getuser()
    except Exception:  # no name for this uid: the time and reason still say enough
        return 'uid %d' % os.getuid()


def ack_command(uuid):
    return "koji-rekor monitor --ack %s --reason 'TEXT'" % uuid


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
    client = RekorClient(settings)
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


def collect_findings(report, scan, acks):
    """Every finding kept and not acknowledged is in every run's report."""
    new = {f['id'] for f in report.findings if f['id']}
    report.findings = [f for f in report.findings if not f['id'] or f['id'] not in acks]
    for uuid, kept in sorted(scan.data['findings'].items()):
        if uuid in acks:
            report.acknowledged += 1
        elif uuid not in new:
            report.findings.append({'id': uuid, 'kind': kept.get('kind'), 'message':
                                    kept['message'], 'new': False,
                                    'first_seen': kept.get('first_seen')})
    for finding in report.findings:
        if finding['id']:
            finding['acknowledge'] = ack_command(finding['id'])


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
        self.local = threading.local()
        self.clients = []
        self.lock = threading.Lock()

    def client(self):
        client = getattr(self.local, 'client', None)
        if client is None:
            client = self.local.client = RekorClient(self.settings)
            with self.lock:
                self.clients.append(client)
        return client

    def close(self):
        self.pool.shutdown(wait=True)
        for client in self.clients:
            client.close()


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
    offset = shard_offset(view, verified.tree_id)
    if offset is None or offset + verified.tree_index != index:
        counts['findings'] += 1
        flag(view, scan, verified, 'unverified entry', 'log index %d: the log answered with '
             'entry %s, which it proves at index %d of tree %s' % (
                 index, verified.entry_id, verified.tree_index, verified.tree_id))
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
    logged = body_public_keys(verified.body)
    fingerprints = {fp for armored in logged for fp in openpgp_fingerprints(armored)}
    ours = sorted(fingerprints & set(keys.fingerprints))
    subjects = sorted({e for armored in logged for e in openpgp_emails(armored)}
                      & keys.subjects)
    if not ours and not subjects:
        check_pem_keyed_entry(view, keys, koji_view, scan, index, verified, counts)
        return
    counts['ours'] += 1
    where = 'log index %d, entry %s (integrated %s)' % (
        verified.log_index, verified.uuid,
        utc(verified.integrated_time))
    if not ours:
        counts['findings'] += 1
        flag(view, scan, verified, 'our identity',
             '%s: made with key %s, not one of ours, whose user ID claims %s'
             % (where, ', '.join(sorted(fingerprints)) or '?', ', '.join(subjects)))
        return
    kind = verified.body.get('kind')
    if kind != 'rpm':
        counts['findings'] += 1
        flag(view, scan, verified, 'other kind', '%s: a %s entry made with our key %s; this '
             'Koji makes only rpm entries' % (where, kind, keys.name(ours[0])))
        return
    try:
        outcome = koji_view.account(verified, sorted(fingerprints), where)
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


def check_pem_keyed_entry(view, keys, koji_view, scan, index, verified, counts):
    """A v1 entry naming one of our keys as PEM (hashedrekord v0.0.1) or
    inside an X.509 certificate: accounted for like a v2 hashedrekord."""
    forms = pem_key_forms(verified.body)
    if not any(der in keys.der for der, _ in forms):
        return
    counts['ours'] += 1
    where = 'log index %d, entry %s (integrated %s)' % (
        verified.log_index, verified.uuid, utc(verified.integrated_time))
    try:
        outcome = account_keyed_entry(keys, koji_view, verified.body, forms, where)
    except KojiUnavailable as e:
        counts['unchecked'] += 1
        scan.data['pending'].append(index)
        view.report.not_checked('%s: Koji cannot be asked: %s' % (where, e))
        return
    if outcome is None:
        counts['accounted'] += 1
        return
    counts['findings'] += 1
    flag(view, scan, verified, *outcome)


def shard_offset(view, tree_id):
    """The global log index of a tree's first entry (the sizes of the
    shards before it), or None for a tree the log does not list."""
    offset = 0
    for shard, size in view.shards:
        if shard == tree_id:
            return offset
        offset += size or 0
    return None


def flag(view, scan, verified, kind, message):
    view.report.finding(kind, message, verified.uuid)
    scan.keep_finding(verified.uuid, kind, message)


def body_public_keys(body):
    """The OpenPGP keys an entry body names: spec.publicKey (rpm) or
    spec.signature.publicKey (rekord), as armored or binary bytes."""
    spec = body.get('spec') if isinstance(body.get('spec'), dict) else {}
    signature = spec.get('signature') if isinstance(spec.get('signature'), dict) else {}
    if signature and signature.get('format') not in (None, 'pgp'):
        signature = {}
    keys = []
    for holder in (spec.get('publicKey'), signature.get('publicKey')):
        if isinstance(holder, dict) and isinstance(holder.get('content'), str):
            try:
                keys.append(base64.b64decode(holder['content'], validate=True))
            except binascii.Error:
                pass
    return keys


def logged_nevra(package):
    headers = package.get('headers') or {}
    return tuple(str(headers.get(name) or '') for name in
                 ('Name', 'Epoch', 'Version', 'Release', 'Architecture'))


def check_tree_heads(view):
    """Verify the signed head of the active tree and of each inactive shard
    and prove it consistent with the one kept; notice any tree seen before
    that the log no longer lists. Only the signed checkpoint counts: the
    treeSize and rootHash beside it are unsigned."""
    info = view.client.log_info()
    if not isinstance(info.get('inactiveShards') or [], list):
        raise RekorUnavailable('malformed log info from Rekor: inactiveShards is not a list')
    # Global log indexes run through the inactive shards, oldest first, then
    # the active tree.
    shards = [(shard, False) for shard in info.get('inactiveShards') or []] + [(info, True)]
    listed = set()
    for shard, active in shards:
        tree_id, note = tree_head_fields(shard)
        listed.add(tree_id)
        try:
            checkpoint = verify_checkpoint(note, view.key, view.settings.origin_host, tree_id)
        except UnknownLogKey as e:
            if active:
                view.shards.append((tree_id, None))
                view.report.finding('bad tree head', 'tree %d: its signed tree head does not '
                                    'verify: %s' % (tree_id, e))
                continue
            # An inactive shard signed by a key not configured (a private
            # log's shards may each have their own): reported and skipped;
            # its unsigned size only places the trees after it.
            view.shards.append((tree_id, unsigned_size(shard)))
            view.skipped.add(tree_id)
            view.report.not_checked('tree %d: %s; set [rekor] log_public_key to a file holding '
                                    'its key too: its entries are skipped' % (tree_id, e))
            continue
        except VerificationError as e:
            view.shards.append((tree_id, None))
            view.report.finding('bad tree head', 'tree %d: its signed tree head does not verify: %s'
                                % (tree_id, e))
            continue
        view.shards.append((tree_id, checkpoint.size))
        view.tree_keys[tree_id] = pick_log_key(view.key, note=note)
        check_tree_head(view, tree_id, checkpoint, active)
    for tree_id, size in kept_tree_heads(view.state, view.key):
        if tree_id not in listed:
            view.report.finding('tree missing', 'tree %d, seen before at size %d, is not listed by '
                                'the log any more, neither active nor inactive' % (tree_id, size))


def unsigned_size(shard):
    size = shard.get('treeSize')
    return size if isinstance(size, int) and not isinstance(size, bool) and size >= 0 else None


def tree_of(entry_id):
    try:
        return split_entry_id(entry_id)[0]
    except VerificationError:
        return None


def tree_key(view, tree_id):
    """The log key of a tree: the one its signed head verified with."""
    return view.tree_keys.get(tree_id) or pick_log_key(view.key)


def tree_head_fields(shard):
    try:
        return int(shard['treeID']), shard['signedTreeHead']
    except (KeyError, TypeError, ValueError):
        raise RekorUnavailable('malformed log info from Rekor: a tree without a treeID '
                               'or signedTreeHead')


def check_tree_head(view, tree_id, checkpoint, active):
    """A signed tree head against the one kept for its tree: a tree that
    shrank, or one not provably consistent with it, is a finding."""
    before = saved_tree_head(view.state, tree_key(view, tree_id), tree_id)
    tree = {'tree_id': str(tree_id), 'active': active, 'size': checkpoint.size,
            'root_hash': checkpoint.root_hash.hex(), 'size_before': before and before[0]}
    view.report.trees.append(tree)
    if before and before[0] > checkpoint.size:
        tree['status'] = 'shrank'
        view.heads[(tree_id, checkpoint.size, checkpoint.root_hash)] = False
        try:
            check_consistency(view.client, view.state, tree_key(view, tree_id), tree_id,
                              checkpoint.size, checkpoint.root_hash, checkpoint.note)
            how = 'an older view, which the log still proves the newer one extends'
        except (VerificationError, RekorRejected, LogBehind) as e:
            # LogBehind: after its retries, still an instance that cannot
            # see the size it signed before; a shrink all the same.
            how = 'and the log cannot prove it consistent with the one seen before: %s' % e
        view.report.finding('tree shrank', 'tree %d shrank: the log signs size %d now, size %d '
                            'was seen before (%s)' % (tree_id, checkpoint.size, before[0], how))
        return
    tree['status'] = ('first seen' if before is None else 'unchanged'
                      if before == (checkpoint.size, checkpoint.root_hash) else 'grew')
    proved = prove_consistent(view, tree_id, checkpoint)
    if proved is None:
        tree['status'] = 'not checked'
    elif not proved:
        tree['status'] = 'inconsistent'
    check_hub_tree_head(view, tree_id, checkpoint)


def check_hub_tree_head(view, tree_id, checkpoint):
    """The tree head the hub kept under the topdir may only add evidence: one
    the log signed that does not fit this one is a finding; it is read (with
    its signature verified), never written, never the monitor's memory."""
    topdir = getattr(view, 'topdir', None)
    if topdir is None:
        return
    try:
        with logs_dir(topdir, checkpoint_parts(view.key), create=False) as fd:
            hub = read_tree_head(fd, view.key, tree_id)
    except (OSError, RekorLogError):  # none kept there, or not readable: no evidence
        return
    if hub is None or hub == (checkpoint.size, checkpoint.root_hash):
        return
    try:
        prove_consistency(view.client, tree_id, hub, (checkpoint.size, checkpoint.root_hash))
    except (VerificationError, RekorRejected) as e:
        view.report.finding('split view', 'tree %d: the tree head of size %d the hub kept, '
                            'signed by the log, does not fit the one it signs now (size %d): %s'
                            % (tree_id, hub[0], checkpoint.size, e))
    except RekorLogError as e:
        view.report.not_checked('tree %d: the tree head the hub kept: %s' % (tree_id, e))


def prove_consistent(view, tree_id, checkpoint):
    """check_consistency once per tree head and run; a failure is a split
    view, whether the proof fails or the log refuses to give one. None:
    not checked, an instance behind the log refused the proof after its
    retries (it catches up; the next run proves it)."""
    head = (tree_id, checkpoint.size, checkpoint.root_hash)
    if head not in view.heads:
        try:
            check_consistency(view.client, view.state, tree_key(view, tree_id), tree_id,
                              checkpoint.size, checkpoint.root_hash, checkpoint.note)
            view.heads[head] = True
        except LogBehind as e:
            view.heads[head] = None
            view.report.not_checked('tree %d: the tree head of size %d is not proved consistent '
                                    'with the one seen before: %s' % (tree_id, checkpoint.size, e))
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
    if isinstance(key, LogKeys):
        return [head for one in key for head in kept_tree_heads(state, one)]
    directory = checkpoint_dir(state, key)
    heads = []
    for name in sorted(os.listdir(directory)) if os.path.isdir(directory) else []:
        stem, _, suffix = name.partition('.')
        if suffix == 'json' and stem.isdigit():
            saved = saved_tree_head(state, key, int(stem))
            if saved is not None:  # one that does not verify is ignored (and logged)
                heads.append((int(stem), saved[0]))
    return heads


class KojiUnavailable(Exception):
    """Koji could not be asked, or its copy of a package not read."""


class KojiView:
    """Koji is the truth about what it signed: the hub, asked with anonymous
    read calls, says which signatures exist; the hash of Koji's signed copy
    is computed as the plugin computes it, from the topdir (read-only) or
    from [koji] topurl. Hashes are kept for the run only, by signature (RPM,
    sigkey and the header's hash the hub records): one kept in the topdir
    could be planted, and an entry is new only once anyway."""

    def __init__(self, settings, topdir):
        self.settings = settings
        self.topdir = topdir
        self.hashes = {}
        self.session = None
        self.down = None
        self.url = settings.hub_url
        self.lock = threading.Lock()

    def close(self):
        if self.session is not None:
            self.session.logout()

    def call(self, method, *args, **kws):
        if self.url is None:
            self.url = hub_url(self.settings)
        if not self.url:
            raise KojiUnavailable('no hub to ask: set [koji] server')
        if self.down:   # asked once in vain this run: the rest waits for the next
            raise KojiUnavailable(self.down)
        with self.lock:
            if self.session is None:
                self.session = koji.ClientSession(self.url, opts={
                    'timeout': self.settings.timeout, 'max_retries': self.settings.retries,
                    'retry_interval': self.settings.backoff, 'anon_retry': True})
            try:
                return getattr(self.session, method)(*args, **kws)
            except koji.GenericError as e:   # the hub's own answer
                raise KojiUnavailable('%s at %s failed: %s' % (method, self.url, e))
            except Exception as e:
                self.down = '%s at %s failed: %s' % (method, self.url, short_reason(e))
                raise KojiUnavailable(self.down)

    def account(self, verified, fingerprints, where):
        """None when Koji has this RPM signed by this key and the logged
        hash is that of its signed copy; else (kind, message)."""
        package = (verified.body.get('spec') or {}).get('package') or {}
        name, epoch, version, release, arch = logged_nevra(package)
        sha256 = str((package.get('hash') or {}).get('value') or '').lower()
        sigkeys = sorted({fp[-8:].lower() for fp in fingerprints})
        what = '%s: rpm %s-%s:%s-%s.%s sha256:%s signed with our key %s' % (
            where, name, epoch or '0', version, release, arch, sha256, '/'.join(sigkeys))
        # A source RPM's header names the arch it was built on, which Rekor
        # stores; Koji files it as src. The first answer that is not an
        # account is the finding.
        outcomes = []
        for candidate in dict.fromkeys((arch, 'src')):
            rpminfo = self.call('getRPM', '%s-%s-%s.%s' % (name, version, release, candidate))
            if rpminfo and str(rpminfo.get('epoch') or 0) == (epoch or '0'):
                outcome = self.account_rpm(rpminfo, sigkeys, sha256, verified.uuid, what)
                if outcome is None:
                    return None
                outcomes.append(outcome)
        if outcomes:
            return outcomes[0]
        return ('not in Koji', '%s: Koji has no such RPM, so this Koji did not sign it (a '
                'stolen key, or an RPM logged by hand)' % what)

    def account_rpm(self, rpminfo, sigkeys, sha256, uuid, what):
        signatures = self.call('queryRPMSigs', rpm_id=rpminfo['id'])
        ours = [s for s in signatures or [] if str(s.get('sigkey', '')).lower() in sigkeys]
        if not ours:
            if self.receipt_names(rpminfo, sigkeys, uuid):
                return ('signature deleted in Koji', '%s: Koji no longer has this signature '
                        '(a receipt shows this Koji logged it; deleteRPMSig leaves the log '
                        'entry behind)' % what)
            return ('not signed in Koji', '%s: Koji has this RPM but no signature of it by '
                    'this key, so this Koji did not sign it (a stolen key?)' % what)
        for signature in ours:
            if self.signed_sha256(rpminfo, signature) == sha256:
                return None
        return ('other bytes', '%s: Koji signed %s with this key, but its signed copy has '
                'another sha256, so the logged package is not the one Koji signed'
                % (what, nvra_of(rpminfo)))

    def receipt_names(self, rpminfo, sigkeys, uuid):
        """Whether a receipt records this entry for this RPM: it only tells a
        deleted signature from one never made, it never accounts for one."""
        for sigkey in sigkeys:
            try:
                receipt = read_receipt(self.topdir, rpminfo, sigkey)
                if any(i.lower()[-64:] == uuid for i in receipt['log_entry']):
                    return True
            except (OSError, RekorLogError, KeyError, TypeError, AttributeError):
                continue
        return False

    def signed_sha256(self, rpminfo, signature):
        cache = '%s %s %s' % (rpminfo['id'], signature['sigkey'], signature.get('sighash'))
        if cache not in self.hashes:
            build = self.call('getBuild', rpminfo['build_id'])
            if not build:
                raise KojiUnavailable('Koji has no build %s for %s'
                                      % (rpminfo['build_id'], nvra_of(rpminfo)))
            self.hashes[cache] = self.copy_sha256(build, rpminfo, signature)
        return self.hashes[cache]

    def copy_sha256(self, build, rpminfo, signature):
        sigkey = signature['sigkey']
        try:
            signed = locate_signed_rpm(build, rpminfo, sigkey)
        except RekorLogError as e:
            if not self.settings.topurl:
                raise KojiUnavailable("cannot read Koji's signed copy of %s by %s from the "
                                      'topdir (%s), and [koji] topurl is not set'
                                      % (nvra_of(rpminfo), sigkey, e))
            return topurl_sha256(self.settings, build, rpminfo, sigkey, signature.get('sighash'))
        if signature.get('sighash') and \
                hashlib.md5(signed.sighdr).hexdigest() != signature['sighash']:  # noqa: S324
            raise KojiUnavailable('the signature header of %s by %s in the topdir is not the '
                                  'one Koji recorded' % (nvra_of(rpminfo), sigkey))
        with signed.open() as fo:
            return sha256_of(fo)


# Bounds on what [koji] topurl serves: a signature header is a few KiB
# (Koji's own sigcache files), and the whole fetch of one copy has a deadline
# besides requests' per-read timeout, which a server dripping bytes never trips.
TOPURL_MAX_SIGHDR = 1024 * 1024
TOPURL_DEADLINE = 1800.0
RPM_HEADER_MAGIC = b'\x8e\xad\xe8\x01'


def topurl_sha256(settings, build, rpminfo, sigkey, sighash):
    """The sha256 of Koji's signed copy read over HTTP from [koji] topurl:
    the signed copy if Koji wrote one, else the unsigned RPM with the
    signature header from the sigcache put in place of its own, streamed
    (it costs one download of the RPM per new signature). As strict as the
    mounted topdir: the signature header must be the one Koji recorded
    (its sighash), whichever way it comes."""
    import requests
    pathinfo = koji.PathInfo(topdir=settings.topurl.rstrip('/'))
    base = pathinfo.build(build)
    where = '%s by %s at %s' % (nvra_of(rpminfo), sigkey, base)
    deadline = time.monotonic() + TOPURL_DEADLINE
    session = requests.Session()
    session.verify = settings.ca_bundle or True

    def get(path):
        try:
            response = session.get('%s/%s' % (base, path), stream=True,
                                   timeout=settings.timeout, allow_redirects=False)
        except requests.RequestException as e:
            raise KojiUnavailable('cannot read %s/%s: %s' % (base, path, short_reason(e)))
        if response.status_code not in (200, 404):
            raise KojiUnavailable('%s/%s: HTTP %d' % (base, path, response.status_code))
        return response if response.status_code == 200 else None

    def read(stream, size):
        data = stream.read(size)
        if time.monotonic() > deadline:
            raise KojiUnavailable('reading %s took longer than %d s' % (where, TOPURL_DEADLINE))
        return data

    def header(stream):
        """The signature header as Koji rips it (padded to 8 bytes), bounded."""
        intro = read(stream, 16)
        if len(intro) != 16 or intro[:4] != RPM_HEADER_MAGIC:
            raise KojiUnavailable('no RPM signature header in the copy of %s' % where)
        count, size = int.from_bytes(intro[8:12], 'big'), int.from_bytes(intro[12:16], 'big')
        length = 16 * count + size
        length += -(16 + length) % 8
        if length > TOPURL_MAX_SIGHDR:
            raise KojiUnavailable('the signature header of %s is too large (%d bytes)'
                                  % (where, length))
        rest = read(stream, length)
        if len(rest) != length:
            raise KojiUnavailable('the copy of %s ends inside its signature header' % where)
        return intro + rest

    def recorded(sighdr):
        return sighash and hashlib.md5(sighdr).hexdigest() == sighash  # noqa: S324

    digest = hashlib.sha256()
    try:
        response = get(pathinfo.signed(rpminfo, sigkey))
        if response is not None:
            stream = response.raw
            lead = read(stream, 96)
            sighdr = header(stream)
            if not recorded(sighdr):
                raise KojiUnavailable('the signature header of the signed copy of %s is not '
                                      'the one Koji recorded' % where)
            digest.update(lead + sighdr)
        else:
            response = get(pathinfo.sighdr(rpminfo, sigkey))
            sighdr = read(response.raw, TOPURL_MAX_SIGHDR + 1) if response is not None else None
            if not sighdr or not recorded(sighdr):
                raise KojiUnavailable('no signature header of %s matches the one Koji '
                                      'recorded' % where)
            response = get(pathinfo.rpm(rpminfo))
            if response is None:
                raise KojiUnavailable('no %s/%s' % (base, pathinfo.rpm(rpminfo)))
            stream = response.raw
            lead = read(stream, 96)
            header(stream)  # the unsigned RPM's own, replaced
            digest.update(lead + sighdr)
        for chunk in iter(lambda: read(stream, CHUNK_SIZE), b''):
            digest.update(chunk)
        return digest.hexdigest()
    except requests.RequestException as e:
        raise KojiUnavailable('reading %s from %s failed: %s' % (nvra_of(rpminfo), base,
                                                                   short_reason(e)))
    finally:
        session.close()


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
    ids = list(dict.fromkeys(ids))
    start = report.scan.get('from', scan.data['next_index'])
    counts = dict.fromkeys(SCAN_COUNTS, 0)
    report.history = {'listed': len(ids), 'before': start, 'counts': counts,
                      'note': "best-effort: Rekor's index can miss entries (it keys a key by "
                              "the hash of its own re-encoding and is written after the upload "
                              "is answered)"}
    for at in range(0, len(ids), RETRIEVE_BATCH):
        try:
            entries = view.client.retrieve_entries(ids[at:at + RETRIEVE_BATCH])
        except RekorLogError as e:
            report.not_checked('--history: entries %s: %s' % (', '.join(ids[at:at + 3]), e))
            continue
        for entry_id, entry in entries:
            index = entry.get('logIndex') if isinstance(entry, dict) else None
            if isinstance(index, int) and index < start:
                counts['read'] += 1
                check_entry(view, keys, koji_view, scan, index, entry_id, entry, counts)


# --- Rekor v2: reading a shard's tiles --------------------------------------
# A v2 log (rekor-tiles) has no entry API to read from: the monitor reads its
# static files (C2SP tlog-tiles). Each shard has its own position and last
# checkpoint; entries are read one entry bundle at a time, each bundle's
# level-0 tile checked against the signed root by one inclusion proof (its
# first leaf's proof covers every other leaf of the tree), so memory and
# requests stay bounded at any log size.

V2_TILE_CACHE = 8   # tiles kept while scanning: one bundle, its path up


class DigestIndex:
    """Which hashedrekord entries Koji made: for each of our sigkeys, the
    digest, signature and key of every signature Koji recorded, built from
    the signature header Koji recorded (its md5 is Koji's sighash) and the
    RPM's header. Kept in the monitor's state only as a lookup aid: a hit
    is derived again from Koji before it accounts for anything, so a
    planted index silences nothing."""

    def __init__(self, topdir, koji_view, keys):
        self.topdir, self.koji, self.keys = topdir, koji_view, keys
        self.data = read_digests(topdir)
        self.refreshed = {}   # sigkey -> signatures that could not be indexed

    def account(self, digest, signature, der, where):
        """None when Koji recorded this signature; else (kind, message)."""
        sigkey, source = self.keys.der[der]
        what = '%s: a hashedrekord of digest %s made with our key %s (%s)' % (
            where, digest.hex(), sigkey, source)
        wanted = [digest.hex(), hashlib.sha256(signature).hexdigest(),
                  hashlib.sha256(der).hexdigest()]
        for attempt in range(2):
            for name, value in sorted(self.data.get(sigkey, {}).items()):
                if value and value[0] == wanted[0]:
                    try:
                        again = self.derive(sigkey, name)  # Koji, not the state, decides
                    except (RekorLogError, KojiUnavailable, ValueError):
                        continue        # not what Koji holds: the refresh drops it
                    if again and again[:3] == wanted:
                        return None
                    if again and again[0] == wanted[0]:
                        return ('other signature', '%s: Koji signed %s with this digest, but '
                                'the logged signature or key is not the one Koji recorded'
                                % (what, again[3]))
            if attempt or sigkey in self.refreshed:
                break
            self.refresh(sigkey)
        if self.refreshed.get(sigkey):
            raise KojiUnavailable('%d signatures by %s could not be indexed (%s)' % (
                len(self.refreshed[sigkey]), sigkey, self.refreshed[sigkey][0]))
        return ('not signed in Koji', '%s: Koji recorded no signature with this digest by '
                'this key, so this Koji did not sign it (a stolen key?)' % what)

    def refresh(self, sigkey):
        """Index the signatures by sigkey that Koji lists and the index lacks."""
        listed = self.koji.call('queryRPMSigs', sigkey=sigkey) or []
        known = self.data.setdefault(sigkey, {})
        names = {'%s/%s' % (s.get('rpm_id'), s.get('sighash')) for s in listed}
        for name in [n for n in known if n not in names]:
            del known[name]                       # deleted in Koji (or planted)
        failed = []
        for name in sorted(names - set(known)):
            try:
                known[name] = self.derive(sigkey, name)
            except (RekorLogError, KojiUnavailable) as e:
                failed.append('%s: %s' % (name, e))
        self.refreshed[sigkey] = failed
        write_digests(self.topdir, self.data)

    def derive(self, sigkey, name):
        """[digest, sha256(signature), sha256(DER key), NVRA] of the
        signature Koji recorded as name ("rpm id/sighash"), or None when
        no hashedrekord can hold it."""
        from rekor_v2 import hashedrekord
        rpm_id, _, sighash = name.partition('/')
        rpminfo = self.koji.call('getRPM', int(rpm_id))
        build = rpminfo and self.koji.call('getBuild', rpminfo['build_id'])
        if not build:
            raise KojiUnavailable('Koji has no RPM %s or its build' % rpm_id)
        signed = locate_signed_rpm(build, rpminfo, sigkey)
        if hashlib.md5(signed.sighdr).hexdigest() != sighash:  # noqa: S324
            raise KojiUnavailable('the signature header of %s by %s in the topdir is not the '
                                  'one Koji recorded' % (nvra_of(rpminfo), sigkey))
        sighdr, main = hashedrekord.read_headers(signed.path, signed.sighdr)
        problem = None
        for _, armored in self.keys.files:
            try:
                entry = hashedrekord.from_headers(sighdr, main, armored)
            except hashedrekord.NotLoggableInV2:
                return None
            except RekorLogError as e:
                problem = e
                continue
            return [entry.digest.hex(), hashlib.sha256(entry.signature).hexdigest(),
                    hashlib.sha256(entry.public_key).hexdigest(), nvra_of(rpminfo)]
        raise KojiUnavailable('%s by %s: %s' % (nvra_of(rpminfo), sigkey, problem))


def digest_index(koji_view, keys):
    """One DigestIndex a run, kept with the run's KojiView."""
    if getattr(koji_view, 'digests', None) is None:
        koji_view.digests = DigestIndex(koji_view.home, koji_view, keys)
    return koji_view.digests


def entry_key_forms(body):
    """(DER key, 'key' or 'certificate') of every verifier a Rekor v2 entry
    names (hashedrekord v0.0.2: spec.hashedRekordV002.signature; dsse
    v0.0.2: spec.dsseV002.signatures[]), protojson names."""
    spec = body.get('spec') if isinstance(body.get('spec'), dict) else {}
    found = []
    for inner in spec.values():
        if not isinstance(inner, dict):
            continue
        sigs = inner.get('signatures') if isinstance(inner.get('signatures'), list) else []
        sigs = sigs + [inner.get('signature')]
        for sig in sigs[:64]:
            verifier = sig.get('verifier') if isinstance(sig, dict) else None
            if isinstance(verifier, dict):
                found += verifier_keys(verifier)
    return found


def verifier_keys(verifier):
    """(DER key, form) of a sigstore PublicKey or X509Certificate."""
    out = []
    for field_name, form in (('publicKey', 'key'), ('x509Certificate', 'certificate')):
        holder = verifier.get(field_name)
        raw = holder.get('rawBytes') if isinstance(holder, dict) else None
        if isinstance(raw, str):
            try:
                data = base64.b64decode(raw, validate=True)
            except binascii.Error:
                continue
            der = data if form == 'key' else certificate_key(data)
            if der:
                out.append((der, form))
    return out


def certificate_key(data):
    """The DER SubjectPublicKeyInfo of a DER or PEM X.509 certificate."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    try:
        cert = (x509.load_pem_x509_certificate(data) if data.lstrip().startswith(b'-----')
                else x509.load_der_x509_certificate(data))
        return cert.public_key().public_bytes(serialization.Encoding.DER,
                                              serialization.PublicFormat.SubjectPublicKeyInfo)
    except Exception:  # noqa: BLE001 - not a certificate we can read: not our key
        return None


def pem_key_forms(body):
    """(DER key, form) of the PEM key or certificate a v1 entry names
    (hashedrekord v0.0.1, rekord x509: spec.signature.publicKey.content)."""
    from cryptography.hazmat.primitives import serialization
    spec = body.get('spec') if isinstance(body.get('spec'), dict) else {}
    signature = spec.get('signature') if isinstance(spec.get('signature'), dict) else {}
    holder = signature.get('publicKey')
    try:
        data = base64.b64decode(holder['content'], validate=True)
    except (TypeError, KeyError, binascii.Error):
        return []
    if b'CERTIFICATE' in data[:100]:
        der = certificate_key(data)
        return [(der, 'certificate')] if der else []
    try:
        key = serialization.load_pem_public_key(data)
    except Exception:  # noqa: BLE001 - not a PEM key: nothing of ours
        return []
    return [(key.public_bytes(serialization.Encoding.DER,
                              serialization.PublicFormat.SubjectPublicKeyInfo), 'key')]


def account_keyed_entry(keys, koji_view, body, forms, where):
    """An entry made with one of our DER keys: None when it is a
    hashedrekord of a signature Koji recorded, else (kind, message). Raises
    KojiUnavailable when Koji cannot tell."""
    mine = [(der, form) for der, form in forms if der in keys.der]
    kind, version = body.get('kind'), body.get('apiVersion')
    sigkey, source = keys.der[mine[0][0]]
    if kind != 'hashedrekord' or any(form != 'key' for _, form in mine):
        return ('other kind', '%s: a %s %s entry made with our key %s (%s, as %s); this Koji '
                'makes only hashedrekord entries with a bare key' % (
                    where, kind, version, sigkey, source,
                    ' and '.join(sorted({form for _, form in mine}))))
    try:
        digest, signature = hashedrekord_values(body)
    except (KeyError, TypeError, ValueError, binascii.Error):
        return ('other kind', '%s: a malformed hashedrekord entry made with our key %s'
                % (where, sigkey))
    return digest_index(koji_view, keys).account(digest, signature, mine[0][0], where)


def hashedrekord_values(body):
    """(digest, signature) of a hashedrekord v0.0.2 (v2) or v0.0.1 (v1)."""
    spec = body['spec']
    if 'hashedRekordV002' in spec:
        inner = spec['hashedRekordV002']
        return (base64.b64decode(inner['data']['digest'], validate=True),
                base64.b64decode(inner['signature']['content'], validate=True))
    return (bytes.fromhex(spec['data']['hash']['value']),
            base64.b64decode(spec['signature']['content'], validate=True))


def monitor_shards(settings, report):
    """The LogKeys of the v2 shards to watch: every v2 shard of the
    signing config, keyed from the trusted root (or [rekor] url's key);
    else every log of the trusted root that serves a checkpoint; else
    [rekor] url with log_public_key."""
    from rekor_v2 import trust
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
    from rekor_v2 import trust
    return not settings.signing_config and not (
        settings.url and trust.origin_of(settings.url) == log.origin)


def v2_client(settings, url):
    from rekor_v2.client import ClientSettings, V2Client
    return V2Client(ClientSettings(url, ca_bundle=settings.ca_bundle,
                                   connect_timeout=settings.timeout,
                                   read_timeout=max(settings.timeout, 30.0),
                                   retries=settings.retries, backoff=settings.backoff))


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
    from rekor_v2 import note
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
    from rekor_v2 import note, tiles
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
    from rekor_v2 import tiles
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
    from rekor_v2 import tiles
    from rekor_log import root_from_inclusion_proof
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
    from rekor_log import hash_leaf
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


NOTIFY_TIMEOUT = 120


def notify(settings, report):
    """[monitor] notify_command, with the JSON report on its standard input."""
    import shlex
    import subprocess
    command = shlex.split(settings.notify_command)
    try:
        done = subprocess.run(command, input=json.dumps(report.as_json(), indent=2).encode(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              timeout=NOTIFY_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        problem = str(e)
    else:
        if done.returncode == 0:
            return
        problem = 'exit status %d: %s' % (done.returncode,
                                          ' '.join(done.stderr.decode('utf-8', 'replace')
                                                   .split())[:300])
    report.not_checked('[monitor] notify_command %r failed (%s): nobody was told of the '
                       'findings' % (settings.notify_command, problem))


TREE_STATUS = {'first seen': 'first seen', 'unchanged': 'unchanged since seen before',
               'grew': 'grew from size %(size_before)s, proved consistent',
               'shrank': 'SHRANK from size %(size_before)s',
               'inconsistent': 'NOT consistent with the tree head seen before',
               'older': 'older than size %(size_before)s seen before, proved consistent with '
                        'it (a cached checkpoint?)',
               'not checked': 'NOT CHECKED: the log did not prove it consistent this run'}


def format_report(report):
    lines = ['Rekor log %s (logID %s%s)' % (report.url, report.log_id or 'unknown',
                                            '; log key: %s' % report.log_key
                                            if report.log_key else '')]
    for tree in report.trees:
        lines.append('  tree %s (%s): size %d, root %s: %s' % (
            tree['tree_id'], 'active' if tree['active'] else 'inactive', tree['size'],
            tree['root_hash'], TREE_STATUS[tree['status']] % tree))
    lines.append('Keys: %d fingerprints (primary keys and subkeys)%s' % (
        len(report.keys), ', subjects %s' % ', '.join(report.watchlist)
        if report.watchlist else ''))
    for name, part in (('Scan', report.scan), ('History (best-effort)', report.history)):
        if part:
            counts = part['counts']
            span = ('log indexes %d to %d' % (part['from'], part['to'] - 1)
                    if 'from' in part and part['to'] > part['from'] else
                    'nothing new' if 'from' in part else
                    '%d entries listed, before log index %d' % (part['listed'], part['before']))
            lines.append('%s: %s: read %d, made with our keys %d, accounted for by Koji %d'
                         % (name, span, counts['read'], counts['ours'], counts['accounted']))
    if report.acknowledged:
        lines.append('Acknowledged findings: %d' % report.acknowledged)
    for title, items in (('Notes', report.notes), ('Not checked', report.unchecked)):
        if items:
            lines.append('%s:' % title)
            lines += ['  - %s' % item for item in items]
    if report.findings:
        lines.append('FINDINGS:')
    for finding in report.findings:
        lines.append('  - [%s%s] %s' % (finding['kind'], '' if finding.get('new', True)
                                        else ', reported before', finding['message']))
        if finding.get('acknowledge'):
            lines.append('    acknowledge: %s' % finding['acknowledge'])
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
                   'skipped', 'queued', 'ignored', 'tree head not kept')


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
    """(path, StoredSignature, None) for every signature header in every
    volume's sigcache, once per RPM and sigkey, and (path, None, reason)
    for files not where Koji would keep them; generated one at a time, so
    that memory stays flat however many there are.

    Other volumes come first: Koji links a build on another volume from the
    default one, and the build is then named with its own volume.
    """
    import glob
    seen = set()
    pattern = os.path.join('*', '*', '*', 'data', 'sigcache', '*', '*', '*' + SIGHDR_SUFFIX)
    for volume, packages in volume_packages(topdir):
        for path in sorted(glob.iglob(os.path.join(glob.escape(packages), pattern))):
            try:
                signature = stored_signature(volume, packages, path)
            except ValueError as e:
                yield path, None, str(e)
                continue
            identity = '%s.%s' % (signature.nvra, signature.sigkey)
            if identity not in seen:
                seen.add(identity)
                yield path, signature, None


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
    try:
        record_name(rpminfo, sigkey)  # names its receipt can be built from
    except RekorLogError as e:
        raise ValueError(str(e))
    expected = os.path.join(koji.pathinfo.build(build), koji.pathinfo.sighdr(rpminfo, sigkey))
    if os.path.normpath(expected) != os.path.normpath(path):
        raise ValueError('not where Koji keeps it (koji.pathinfo gives %s)' % expected)
    return StoredSignature(build, rpminfo, sigkey, path)


def signatures_to_log(settings, topdir, counts, report):
    """The stored signatures to log: those with neither a receipt nor a
    record in the outbox (the worker logs those) whose public key we have.
    report(kind, line, item) tells why others are ignored or have no key."""
    for path, signature, reason in stored_signatures(topdir):
        if signature is None:
            counts['ignored'] += 1
            report('ignored', 'ignored %s: %s' % (path, reason), {'path': path, 'reason': reason})
        elif os.path.exists(receipt_path(topdir, signature.rpminfo, signature.sigkey)):
            counts['skipped'] += 1
        elif queued_in_outbox(topdir, signature):
            counts['queued'] += 1
        else:
            try:
                public_key_file(settings, signature.sigkey)
            except SignatureSourceError as e:
                counts['unknown key'] += 1
                report('unknown_key', 'unknown key %s: %s (%s): %s' % (
                    signature.sigkey, signature.nvra, signature.path, e),
                    dict(signature_json(signature), reason=str(e)))
                continue
            yield signature


def queued_in_outbox(topdir, signature):
    stem = os.path.join(outbox_dir(topdir), record_name(signature.rpminfo, signature.sigkey))
    return os.path.exists(stem + COMMITTED) or os.path.exists(stem + UNCOMMITTED)


def backfill(settings, topdir, todo, jobs, counts, progress, report):
    """Log each signature (todo: (volume, sigcache path) of each) with at
    most jobs at a time and a bounded number in flight, as one pass of the
    worker does; returns the number that failed."""
    packages = dict(volume_packages(topdir))
    work = WorkerPass(settings, topdir)
    done = [0]

    def log_one(item):
        volume, path = item
        signature = stored_signature(volume, packages[volume], path)
        outcome = log_signature(settings, signature.build, signature.rpminfo, signature.sigkey,
                                topdir, **work.shared())
        write_receipt(settings, topdir, signature.rpminfo, signature.sigkey, outcome.receipt)
        return signature, outcome

    def count(item, future):
        done[0] += 1
        progress.clear()
        try:
            signature, outcome = future.result()
        except Exception as e:
            cause = failure_cause(e)
            counts['failed'] += 1
            signature = stored_signature(item[0], packages[item[0]], item[1])
            report('failed', 'failed %s sigkey %s: %s' % (signature.nvra, signature.sigkey, cause),
                   dict(signature_json(signature), cause=cause))
            LOG.error('rekor_log: failed %s sigkey %s: %s', signature.nvra, signature.sigkey,
                      cause, exc_info=None if isinstance(e, RekorLogError) else e)
        else:
            counts['logged' if outcome.created else 'already in the log'] += 1
            log_outcome(signature.nvra, signature.sigkey, outcome)
        progress.update('backfill: %d/%d signatures (%s)' % (
            done[0], len(todo), ', '.join('%s %d' % (k, counts[k]) for k in BACKFILL_COUNTS[:3])),
            done=done[0] == len(todo))

    try:
        run_bounded(jobs, todo, log_one, count)
    finally:
        work.close(counts)
    return counts['failed']


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
    if counts['tree head not kept']:
        parts.append('tree head not kept %d' % counts['tree head not kept'])
    return ', '.join(parts)


# ---------------------------------------------------------------------------
# Checking a package against the log: koji-rekor verify-rpm
#
# For package users, from an RPM file and nothing of Koji's: the log's
# index is searched by the file's sha256 (or receipts are given), each
# entry found is verified as the plugin verifies its own (UUID, inclusion
# proof, checkpoint, SET, logID, and the body against this very file: hash,
# NEVRA, key, with rpm checking the file's signature by that key), and its
# key must be one the user trusts. The index is not part of what the log
# signs: a package it does not return is "not found", never "absent".
# ---------------------------------------------------------------------------

ARMOR_BEGIN = b'-----BEGIN PGP PUBLIC KEY BLOCK-----'
ARMOR_END = b'-----END PGP PUBLIC KEY BLOCK-----'
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


def armored_blocks(data):
    """Each armored public key block in data: a key file, or a gpg-pubkey
    package's description, may hold several."""
    blocks, start = [], data.find(ARMOR_BEGIN)
    while start >= 0:
        end = data.find(ARMOR_END, start)
        if end < 0:
            break
        end += len(ARMOR_END)
        blocks.append(data[start:end] + b'\n')
        start = data.find(ARMOR_BEGIN, end)
    return blocks


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
    if path is None and os.access(CONFIG_FILE, os.R_OK):
        path = CONFIG_FILE
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


def claimed_sha256(entry):
    """The package sha256 an entry's body names, unverified: only to pick
    which receipts to verify for a file."""
    try:
        body = json.loads(base64.b64decode(entry['body']))
        return body['spec']['package']['hash']['value']
    except (KeyError, TypeError, ValueError):
        return None


def hash_file(path):
    """(sha256, None), or (None, the reason the file cannot be read)."""
    try:
        with open(path, 'rb') as fo:
            return sha256_of(fo), None
    except OSError as e:
        return None, 'cannot read %s: %s' % (path, e.strerror or e)


def logged_public_key(body):
    try:
        return base64.b64decode(((body.get('spec') or {}).get('publicKey') or {})
                                .get('content') or '', validate=True)
    except (binascii.Error, AttributeError, TypeError):
        return b''


def check_entry_for_file(check, signed, entry_id, entry, log_key, origin, keys):
    """Verify one entry found for this file; returns its outcome, a dict
    whose 'outcome' is 'trusted', 'untrusted key', 'failed' or 'other'."""
    outcome = {'entry_id': entry_id}
    try:
        verified = verify_log_entry(entry_id, entry, log_key, origin, require_set=False)
    except VerificationError as e:
        return dict(outcome, outcome='failed', reason=str(e))
    body = verified.body
    outcome.update(log_index=verified.log_index, integrated_time=verified.integrated_time,
                   time_signed=verified.signed_time, notes=verified.notes)
    if body.get('kind') != 'rpm':
        return dict(outcome, outcome='other', reason='a %s entry, not rpm' % body.get('kind'))
    logged = (((body.get('spec') or {}).get('package') or {}).get('hash') or {}).get('value')
    if logged != check.sha256:
        return dict(outcome, outcome='failed', reason=(
            'the entry logs sha256 %s, this file has %s: it is not the file that was logged'
            % (logged, check.sha256)))
    armored = logged_public_key(body)
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
    from rekor_v2 import entry as v2entry
    from rekor_v2 import hashedrekord
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
    from rekor_log import receipt_parts
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


def format_time(seconds, signed):
    return time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(seconds)) + (
        '' if signed else ' (unsigned: no signed entry timestamp)')


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


def cmd_verify_rpm(args):
    settings = verify_rpm_settings(args)
    keys = trusted_keys(args)
    context = VerifyRpmContext(args, settings, keys)
    if args.receipt:
        context.receipts = [offline_entry(args, settings, path) for path in args.receipt]
        checks = verify_rpms(context, args.rpm)
    else:
        if settings is None:  # the public log, as no file or flag names another
            settings = Settings(origin=args.origin)
        if settings.api == 2:
            if not (settings.topurl and hub_url(settings)):
                raise CannotCheck('cannot check against %s: a Rekor v2 log has no search: pass '
                                  '--receipt FILE (the receipt kept under the topdir\'s '
                                  'rekor-logs/, or a TransparencyLogEntry), or set [koji] '
                                  'server and topurl to ask the hub' % display_url(settings.url))
            context.settings, context.hub_receipts = settings, True
            return verify_rpm_result(args, verify_rpms(context, args.rpm))
        context.settings = settings
        context.log_key = online_log_key(args, settings)
        context.client = RekorClient(settings)
        try:
            checks = verify_rpms(context, args.rpm)
        finally:
            context.client.close()
    return verify_rpm_result(args, checks)


def verify_rpm_result(args, checks):
    status = max(PACKAGE_STATUS[c.status] for c in checks)
    if 1 in (PACKAGE_STATUS[c.status] for c in checks):
        status = 1  # a package that failed outweighs one that could not be checked
    return emit(args, status, {'packages': [c.as_json() for c in checks]},
                ''.join(format_package(c) for c in checks))


# ---------------------------------------------------------------------------
# Checking an installation: koji-rekor doctor
#
# Each check is one line: ok, warn (worth a look, not broken), FAIL (the hub
# would fail or lose something), or skip (could not be checked because an
# earlier check failed). Nothing is written anywhere.
# ---------------------------------------------------------------------------

@dataclass
class Checkup:
    checks: list = field(default_factory=list)

    def add(self, status, check, detail):
        self.checks.append({'status': status, 'check': check, 'detail': detail})

    @property
    def status(self):
        """1 when a check FAILs; warnings and skips alone are 0 (2, doctor
        could not run, is main's, for what stops it before any check)."""
        return 1 if any(c['status'] == 'fail' for c in self.checks) else 0

    def failed(self, check):
        return any(c['check'] == check and c['status'] == 'fail' for c in self.checks)

    def text(self):
        return ''.join('%-4s %s: %s\n' % ('FAIL' if c['status'] == 'fail' else c['status'],
                                           c['check'], c['detail']) for c in self.checks)


def run_doctor(config_file, topdir=None):
    """Every check of an installation, in the order a signature needs them.
    topdir: --topdir, or None for the hub's KojiDir (or Koji's default)."""
    checkup = Checkup()
    hub = read_hub_config()
    try:
        settings = load_config(config_file)
    except koji.ConfigurationError as e:
        checkup.add('fail', 'configuration', str(e))  # names the file and the option
        settings = None
        hub_user = configured_hub_user(config_file)
    else:
        hub_user = settings.hub_user
        hidden = unreadable_by(hub_user, config_file)
        if hidden:
            checkup.add('fail', 'configuration', '%s: %s, so the hub fails every signature '
                        'import on it' % (config_file, hidden))
        else:
            checkup.add('ok', 'configuration', '%s (log %s, %s)' % (
                config_file, settings.url, 'queue_only' if settings.queue_only else
                'enforce' if settings.enforce else 'upload after commit'))
    check_hub_config(checkup, hub, hub_user)
    if settings is None:
        for check in ('signing keys', 'log', 'selinux'):
            checkup.add('skip', check, 'needs a configuration the hub accepts')
    if topdir is None:
        topdir, why = hub['topdir'], hub['topdir_why']
    else:
        why = '--topdir'
    check_topdir(checkup, hub_user, topdir, why)
    if settings is not None:
        check_signing_keys(checkup, settings)
        if settings.api == 2:
            check_v2_signing_keys(checkup, settings)
            check_v2_log(checkup, settings)
        else:
            check_log(checkup, settings, None if checkup.failed('topdir') else topdir)
        check_selinux(checkup, settings)
    if checkup.failed('topdir'):
        for check in ('rekor-logs', 'outbox'):
            checkup.add('skip', check, 'needs the topdir')
        return checkup, topdir
    check_receipt_dir(checkup, hub_user, topdir)
    if checkup.failed('rekor-logs'):
        checkup.add('skip', 'outbox', 'needs rekor-logs/')
    else:
        summarise_outbox(checkup, topdir)
    return checkup, topdir


def configured_hub_user(path):
    """[upload] hub_user as a file the hub refuses still says it: the
    checks of who can read what then ask about the right user."""
    from rekor_log import parse_config_file
    try:
        value = parse_config_file(path).get('upload', 'hub_user', fallback='')
    except Exception:  # any file doctor already reported as broken
        value = ''
    return value.strip() or Settings.hub_user


# The hub's own defaults (kojixmlrpc.load_config).
HUB_PLUGIN_PATH = '/usr/lib/koji-hub-plugins'


def read_hub_config():
    """What hub.conf (and hub.conf.d/*.conf) says that matters here, and
    the files read: {'files', 'error', 'options', 'topdir', 'topdir_why'}."""
    import glob
    files = sorted(glob.glob(os.path.join(HUB_CONFIG_DIR, '*.conf')))
    hub = {'files': [], 'error': None, 'options': None}
    if os.path.exists(HUB_CONFIG_FILE):
        files.append(HUB_CONFIG_FILE)
    unreadable = [f for f in files if not os.access(f, os.R_OK)]
    if unreadable:  # configparser would skip it silently
        hub['error'] = '%s: cannot read it' % ', '.join(unreadable)
    elif files:
        try:
            parser = koji.read_config_files([HUB_CONFIG_DIR, (HUB_CONFIG_FILE, False)],
                                            raw=True)
        except Exception as e:  # not an ini file
            hub['error'] = '%s: %s' % (', '.join(files), failure_cause(e))
        else:
            hub['files'] = files
            hub['options'] = {k: parser.get('hub', k) for k in ('KojiDir', 'Plugins',
                                                                'PluginPath')
                              if parser.has_option('hub', k)}
    options = hub['options'] or {}
    if options.get('KojiDir'):
        hub['topdir'] = options['KojiDir']
        hub['topdir_why'] = 'KojiDir in %s' % kojidir_file(files)
    else:
        hub['topdir'] = DEFAULT_TOPDIR
        hub['topdir_why'] = "Koji's default: %s" % (
            'no KojiDir in %s' % ', '.join(files) if hub['options'] is not None else
            '%s cannot be read' % HUB_CONFIG_FILE if hub['error'] else
            '%s does not exist' % HUB_CONFIG_FILE)
    return hub


def kojidir_file(files):
    """The file whose KojiDir the hub uses: the last that sets it."""
    import configparser
    for path in reversed(files):
        parser = configparser.RawConfigParser()
        try:
            parser.read(path)
        except configparser.Error:
            continue
        if parser.has_option('hub', 'KojiDir'):
            return path
    return ', '.join(files)


def check_hub_config(checkup, hub, hub_user):
    """hub.conf must load the plugin (Plugins) from a directory (PluginPath)
    where the hub's user can read rekor_log.py."""
    if hub['error']:
        checkup.add('fail', 'hub.conf', hub['error'])
        checkup.add('skip', 'plugin', 'needs a readable hub.conf')
        return
    if hub['options'] is None:
        checkup.add('warn', 'hub.conf', '%s does not exist: not a hub host? Plugins and '
                    'PluginPath not checked' % HUB_CONFIG_FILE)
        checkup.add('skip', 'plugin', 'needs hub.conf')
        return
    read = ', '.join(hub['files'])
    plugins = hub['options'].get('Plugins', '').split()
    if 'rekor_log' not in plugins:
        checkup.add('fail', 'hub.conf', '%s: Plugins = %s does not include rekor_log: the hub '
                    'never loads the plugin; add rekor_log to Plugins' % (
                        read, ' '.join(plugins) or '(empty)'))
    else:
        checkup.add('ok', 'hub.conf', '%s: Plugins includes rekor_log' % read)
    path = hub['options'].get('PluginPath', HUB_PLUGIN_PATH)
    where = [os.path.join(d, 'rekor_log.py') for d in path.split(':') if d]
    found = [f for f in where if os.path.isfile(f)]
    if not found:
        checkup.add('fail', 'plugin', 'no rekor_log.py in PluginPath %s%s: copy it there' % (
            path, '' if 'PluginPath' in hub['options'] else " (Koji's default)"))
        return
    hidden = unreadable_by(hub_user, found[0])
    if hidden:
        checkup.add('fail', 'plugin', '%s: %s, so the hub cannot load it' % (found[0], hidden))
    else:
        checkup.add('ok', 'plugin', found[0])


def check_topdir(checkup, hub_user, topdir, why):
    """The topdir must be a directory the hub's user can enter: without it
    no signature reaches the outbox."""
    import stat
    try:
        info = os.stat(topdir)
    except FileNotFoundError:
        checkup.add('fail', 'topdir', '%s (%s) does not exist: mount it, or give --topdir / '
                    'set KojiDir' % (topdir, why))
        return
    except OSError as e:
        checkup.add('fail', 'topdir', '%s (%s): cannot read it: %s' % (topdir, why, e.strerror))
        return
    if not stat.S_ISDIR(info.st_mode):
        checkup.add('fail', 'topdir', '%s (%s) is not a directory' % (topdir, why))
        return
    hidden = unreadable_by(hub_user, topdir)
    if hidden:
        checkup.add('fail', 'topdir', '%s (%s): %s' % (topdir, why, hidden))
    else:
        checkup.add('ok', 'topdir', '%s (%s)' % (topdir, why))


def unreadable_by(username, path):
    """Why the hub's user cannot read an existing file, or None (also when
    either is unknown here: other checks report that)."""
    import grp
    import pwd
    import stat
    try:
        user = pwd.getpwnam(username)
        info = os.stat(path)
    except (KeyError, OSError):
        return None
    if user.pw_uid == 0:
        return None
    groups = set(os.getgrouplist(user.pw_name, user.pw_gid))
    # A directory is read by listing and entering it: r and x.
    need = 5 if stat.S_ISDIR(info.st_mode) else 4
    if info.st_uid == user.pw_uid:
        allowed = (info.st_mode >> 6) & need == need
    elif info.st_gid in groups:
        allowed = (info.st_mode >> 3) & need == need
    else:
        allowed = info.st_mode & need == need
    if allowed:
        return None
    try:
        group = grp.getgrgid(info.st_gid).gr_name
    except KeyError:
        group = str(info.st_gid)
    return 'not readable by the hub user %s (mode %o, %s:%s)' % (
        username, stat.S_IMODE(info.st_mode), pwd_name(info.st_uid), group)


def pwd_name(uid):
    import pwd
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


# --- signing keys --------------------------------------------------------

OPENPGP_PUBLIC_KEY, OPENPGP_PUBLIC_SUBKEY, OPENPGP_SIGNATURE = 6, 14, 2
SUBKEY_BINDING = 0x18
KEY_FLAGS_SUBPACKET, CAN_SIGN = 27, 0x02


def dearmor(armored):
    """The packets of an ASCII-armored OpenPGP block (RFC 4880, 6.2), or None."""
    lines = armored.decode('ascii', 'replace').replace('\r', '').split('\n')
    try:
        begin = next(i for i, l in enumerate(lines) if l.startswith('-----BEGIN PGP PUBLIC KEY'))
        start = lines.index('', begin)
        return base64.b64decode(''.join(l for l in lines[start + 1:]
                                        if l and not l.startswith(('=', '-----'))))
    except (StopIteration, ValueError, binascii.Error):
        return None


def openpgp_packets(data):
    """[(tag, body)] of a binary OpenPGP stream (RFC 4880, 4.2); ValueError
    when it is cut short or uses partial lengths, which keys never do."""
    packets, pos = [], 0
    while pos < len(data):
        first = data[pos]
        if not first & 0x80:
            raise ValueError('not an OpenPGP packet at byte %d' % pos)
        if first & 0x40:
            tag, octet = first & 0x3f, data[pos + 1]
            if octet < 192:
                head, length = 2, octet
            elif octet < 224:
                head, length = 3, ((octet - 192) << 8) + data[pos + 2] + 192
            elif octet == 255:
                head, length = 6, int.from_bytes(data[pos + 2:pos + 6], 'big')
            else:
                raise ValueError('partial body length')
        else:
            tag, width = (first >> 2) & 0x0f, {0: 1, 1: 2, 2: 4}.get(first & 3)
            if width is None:
                raise ValueError('indeterminate length')
            head, length = 1 + width, int.from_bytes(data[pos + 1:pos + 1 + width], 'big')
        if pos + head + length > len(data):
            raise ValueError('packet cut short')
        packets.append((tag, data[pos + head:pos + head + length]))
        pos += head + length
    return packets


def v4_short_id(body):
    """Koji's sigkey for a key packet: the last 8 hex digits of its v4
    fingerprint (RFC 4880, 12.2), lower case; None for other versions."""
    if not body or body[0] != 4:
        return None
    return hashlib.sha1(b'\x99' + len(body).to_bytes(2, 'big') + body).hexdigest()[-8:]


def binding_can_sign(signature):
    """Whether a v4 subkey binding signature's hashed key flags (RFC 4880,
    5.2.3.21) allow signing; a binding without key flags allows it."""
    if len(signature) < 6 or signature[0] != 4 or signature[1] != SUBKEY_BINDING:
        return None
    hashed = signature[6:6 + int.from_bytes(signature[4:6], 'big')]
    pos = 0
    while pos < len(hashed):
        octet = hashed[pos]
        if octet < 192:
            head, length = 1, octet
        elif octet < 255:
            head, length = 2, ((octet - 192) << 8) + hashed[pos + 1] + 192
        else:
            head, length = 5, int.from_bytes(hashed[pos + 1:pos + 5], 'big')
        kind = hashed[pos + head] & 0x7f if pos + head < len(hashed) else None
        if kind == KEY_FLAGS_SUBPACKET:
            return bool(hashed[pos + head + 1] & CAN_SIGN) if length > 1 else False
        pos += head + length
    return True


def key_file_problem(path, data):
    """Why the plugin cannot use this key file, or None; and the short IDs
    that may name it (the primary key's and each signing subkey's)."""
    packets = None
    binary = dearmor(data)
    if binary is not None:
        try:
            packets = openpgp_packets(binary)
        except (ValueError, IndexError) as e:
            return 'not a readable OpenPGP key: %s' % e, set()
    if not packets:
        return 'not an ASCII-armored OpenPGP public key', set()
    primaries = [body for tag, body in packets if tag == OPENPGP_PUBLIC_KEY]
    if len(primaries) != 1:
        return 'holds %d primary keys, not one' % len(primaries), set()
    ids = {v4_short_id(primaries[0])} - {None}
    for number, (tag, body) in enumerate(packets):
        if tag == OPENPGP_PUBLIC_SUBKEY and v4_short_id(body):
            bindings = [b for t, b in packets[number + 1:number + 2] if t == OPENPGP_SIGNATURE]
            if bindings and binding_can_sign(bindings[0]):
                ids.add(v4_short_id(body))
    if not ids:
        return 'not a version 4 key, whose short ID Koji would name', set()
    import rpm
    try:
        rpm.pubkey(data)
    except (ValueError, TypeError, rpm.error) as e:
        return 'rpm cannot use it: %s' % e, ids
    return None, ids


def check_signing_keys(checkup, settings):
    """Every file of public_key_dir, and public_key_path, as the plugin will
    read them: <sigkey>.asc, one primary key, named by its short ID or a
    signing subkey's."""
    found = False
    directory = settings.public_key_dir
    for name in sorted(os.listdir(directory)) if directory else []:
        path = os.path.join(directory, name)
        if name.startswith('.') or not os.path.isfile(path):
            continue
        found = True
        check = 'key %s' % path
        if not name.endswith('.asc'):
            checkup.add('warn', check, 'never read: the plugin reads only <sigkey>.asc')
            continue
        try:
            data = read_public_key(path)
        except SignatureSourceError as e:
            checkup.add('fail', check, str(e))
            continue
        problem, ids = key_file_problem(path, data)
        problem = problem or unreadable_by(settings.hub_user, path)
        stem = name[:-len('.asc')]
        if problem:
            checkup.add('fail', check, problem)
        elif stem not in ids:
            checkup.add('fail', check, 'named %s, but signatures by this key have sigkey %s: '
                        'rename it to %s' % (name, ' or '.join(sorted(ids)),
                                             ' or '.join('%s.asc' % i for i in sorted(ids))))
        else:
            checkup.add('ok', check, 'sigkey %s' % stem)
    if settings.public_key_path:
        found = True
        check = 'key %s' % settings.public_key_path
        try:
            problem, ids = key_file_problem(settings.public_key_path,
                                            read_public_key(settings.public_key_path))
        except SignatureSourceError as e:
            problem, ids = str(e), set()
        problem = problem or unreadable_by(settings.hub_user, settings.public_key_path)
        checkup.add('fail' if problem else 'ok', check, problem or
                    'public_key_path, for every sigkey without its own file (this one signs '
                    'as %s)' % ' or '.join(sorted(ids)))
    if not found:
        checkup.add('fail', 'signing keys', 'no public keys (%s): every signature would fail'
                    % ('%s is empty' % directory if directory else
                       'set [signing] public_key_dir'))


def v2_key_problem(armored, sigkey=None):
    """Why Rekor v2 cannot log signatures by this key, or None, and the
    keyDetails it would log them as: the (sub)key named sigkey, or (without
    one, public_key_path) every signing (sub)key. v2 takes RSA 2048, 3072,
    4096 and ECDSA P-256, P-384, P-521 (rekor-tiles' allowed key types)."""
    from rekor_v2 import hashedrekord
    try:
        packets = hashedrekord.key_packets(armored)
    except (RekorLogError, ValueError, IndexError) as e:
        return 'not a readable OpenPGP key: %s' % e, []
    encrypt_only = (2, 16, 18)  # RSA encrypt-only, Elgamal, ECDH: never sign
    if sigkey:
        packets = [p for p in packets if p.key_id.lower().endswith(sigkey.lower())]
    packets = [p for p in packets if p.algorithm not in encrypt_only]
    if not packets:
        return 'no signing key %s in it' % (sigkey or ''), []
    problems, details = [], []
    for packet in packets:
        name = packet.key_id[-8:].lower()
        try:
            _, public = hashedrekord.der_public_key(packet)
        except RekorLogError as e:
            problems.append('%s: %s' % (name, str(e).replace('its header signature is',
                                                               'it signs with')))
            continue
        if packet.algorithm == hashedrekord.PK_ECDSA:
            details.append(next(v[2] for v in hashedrekord.CURVES.values() if v[0] == {
                'secp256r1': 'P-256', 'secp384r1': 'P-384',
                'secp521r1': 'P-521'}[public.curve.name]))
        elif (public.key_size + 7) // 8 * 8 not in hashedrekord.RSA_SIZES:
            problems.append('%s: RSA-%d; Rekor v2 takes RSA keys of 2048, 3072 or 4096 bits '
                            'only' % (name, public.key_size))
        else:
            details.append('PKIX_RSA_PKCS1V15_%d_SHA256' % ((public.key_size + 7) // 8 * 8))
    return '; '.join(problems) or None, details


def check_v2_signing_keys(checkup, settings):
    """With api = 2, each signing key must be one Rekor v2 can log."""
    files = []
    directory = settings.public_key_dir
    for name in sorted(os.listdir(directory)) if directory else []:
        path = os.path.join(directory, name)
        if name.endswith('.asc') and not name.startswith('.') and os.path.isfile(path):
            files.append((path, name[:-len('.asc')]))
    if settings.public_key_path:
        files.append((settings.public_key_path, None))
    for path, sigkey in files:
        check = 'v2 key %s' % path
        try:
            problem, details = v2_key_problem(read_public_key(path), sigkey)
        except RekorLogError as e:
            checkup.add('skip', check, str(e))  # the key check above says why
            continue
        if problem:
            checkup.add('fail', check, 'Rekor v2 cannot log its signatures: %s' % problem)
        else:
            checkup.add('ok', check, 'loggable in Rekor v2 as %s%s' % (
                ', '.join(sorted(set(details))),
                ' (RSA signatures must use SHA-256: rpmsign --define "_gpg_digest_algo '
                'sha256")' if any('RSA' in d for d in details) else ''))


# --- the log --------------------------------------------------------------

def trusted_log_key(settings, topdir):
    """(key, where) the plugin would trust without asking the log: the
    configured key, the shipped one for the public instance, or one pinned
    before (resolve_log_key's order); (None, None) before the first use."""
    key, pinned = known_log_key(settings, state_dir(topdir) if topdir else None)
    if key is None:
        return None, None
    return key, pinned or settings.log_public_key or 'the key built into koji-rekor'


def check_log(checkup, settings, topdir):
    """Reach the log; its key must be the trusted one and its signed tree
    head must verify with it. One attempt per request: an admin waits for
    the answer, and reruns the check."""
    for option in ('log_public_key', 'ca_bundle'):
        path = getattr(settings, option)
        hidden = path and unreadable_by(settings.hub_user, path)
        if hidden:
            checkup.add('fail', 'log', '[rekor] %s %s: %s: every upload would fail' % (
                option, path, hidden))
            return
    client = RekorClient(dataclasses.replace(settings, retries=0))
    try:
        served = load_log_key(client.log_public_key())
        trusted, where = trusted_log_key(settings, topdir)
        if trusted is None and not (settings.trust_on_first_use or settings.legacy):
            # resolve_log_key refuses every upload then.
            checkup.add('fail', 'log', '%s: no log key configured or pinned, and '
                        'trust_on_first_use is off: every upload would fail; set [rekor] '
                        'log_public_key to the key it serves (logID %s; koji-rekor log-key '
                        'prints it)' % (settings.url, log_key_id(served).hex()))
            return
        if trusted is None:
            checkup.add('warn', 'log', '%s: no log key configured or pinned; the first upload '
                        'will trust logID %s: set [rekor] log_public_key'
                        % (settings.url, log_key_id(served).hex()))
            trusted = served
        elif log_key_id(served) not in [log_key_id(one) for one in (
                trusted if isinstance(trusted, LogKeys) else [trusted])]:
            checkup.add('fail', 'log', '%s serves log key %s, not the trusted %s (%s)' % (
                settings.url, log_key_id(served).hex(), log_key_id(trusted).hex(), where))
            return
        tree_id, note = tree_head_fields(client.log_info())
        checkpoint = verify_checkpoint(note, trusted, settings.origin_host, tree_id)
        checkup.add('ok', 'log', '%s: signed tree head of tree %d at size %d verifies with '
                    'logID %s' % (settings.url, tree_id, checkpoint.size,
                                  log_key_id(trusted).hex()))
        outage = read_outage(settings, topdir) if topdir else None
        if outage and outage.closed:
            checkup.add('fail', 'log', '%s no longer takes entries (since %s: %s): set '
                        '[rekor] url to a log that does; the outbox keeps every signature '
                        'meanwhile' % (settings.url, utc(outage.since), outage.last_error))
    except VerificationError as e:
        checkup.add('fail', 'log', '%s: its signed tree head does not verify: %s'
                    % (settings.url, e))
    except RekorLogError as e:
        checkup.add('fail', 'log', str(e))
    finally:
        client.close()


V2_WARN_DAYS = 30  # warn when the newest shard stops taking entries this soon


def load_trust_file(path, parse):
    from rekor_log import MAX_FILE
    with open(path, 'rb') as fo:
        return parse(fo.read(MAX_FILE))


def check_v2_trust_files(checkup, settings, now=None):
    """[rekor] trusted_root and signing_config parse, list a log (shard)
    valid now, and the newest does not end within V2_WARN_DAYS days.
    Returns (TrustedRoot or None, the shards to write to, newest first)."""
    from datetime import datetime, timedelta, timezone
    from rekor_v2 import trust
    now = now or datetime.now(timezone.utc)
    soon = now + timedelta(days=V2_WARN_DAYS)

    def ending(valid):
        return valid.end is not None and valid.end <= soon

    root, shards = None, None
    for option, parse in (('trusted_root', trust.parse_trusted_root),
                          ('signing_config', trust.parse_signing_config)):
        path = getattr(settings, option)
        if not path:
            continue
        check = option
        try:
            parsed = load_trust_file(path, parse)
        except OSError as e:
            checkup.add('fail', check, '[rekor] %s %s: cannot read it: %s'
                        % (option, path, e.strerror))
            continue
        except trust.TrustError as e:
            checkup.add('fail', check, '[rekor] %s %s: %s' % (option, path, e))
            continue
        if option == 'trusted_root':
            root = parsed
            valid = sorted((log for log in parsed.logs if log.valid.contains(now)),
                           key=lambda log: log.valid.start or now, reverse=True)
            names = [log.base_url for log in valid]
            extra = ('; keys it cannot verify: %s' % ', '.join(parsed.unsupported)
                     if parsed.unsupported else '')
        else:
            valid = trust.select_shards(parsed, now)
            shards = valid
            names = [shard.url for shard in valid]
            extra = ''
        if not valid:
            checkup.add('fail', check, '%s lists no %s valid now' % (
                path, 'log' if option == 'trusted_root' else 'Rekor v2 shard'))
        elif ending(valid[0].valid):
            checkup.add('warn', check, '%s: the newest, %s, is valid only until %s: update '
                        'the file (Sigstore publishes the next shard)%s' % (
                            path, names[0], valid[0].valid.end.strftime('%Y-%m-%d'), extra))
        else:
            checkup.add('ok', check, '%s: valid now: %s%s' % (path, ', '.join(names), extra))
    return root, shards


def check_v2_log(checkup, settings):
    """With api = 2: the trust files, then the shard the hub writes to
    (signing_config's newest valid one, else url): reachable, and its
    /checkpoint verifies with the configured key and origin."""
    from rekor_v2 import note, trust
    from rekor_v2.client import ClientSettings, V2Client
    root, shards = check_v2_trust_files(checkup, settings)
    url = shards[0].url if shards else settings.url.rstrip('/')
    try:
        # [rekor] origin is url's; another shard's origin is its URL's.
        origin = (url == settings.url.rstrip('/') and settings.origin) or trust.origin_of(url)
    except trust.TrustError as e:
        checkup.add('fail', 'log', str(e))
        return
    log, where = None, None
    try:
        if settings.log_public_key and url == settings.url.rstrip('/'):
            hidden = unreadable_by(settings.hub_user, settings.log_public_key)
            if hidden:
                checkup.add('fail', 'log', '[rekor] log_public_key %s: %s: every upload would '
                            'fail' % (settings.log_public_key, hidden))
                return
            log = load_trust_file(settings.log_public_key,
                                  lambda pem: trust.log_key(origin, pem))
            where = '[rekor] log_public_key %s' % settings.log_public_key
        elif root is not None:
            log = next((k for k in root.logs if k.origin == origin), None)
            where = '[rekor] trusted_root %s' % settings.trusted_root
    except OSError as e:
        checkup.add('fail', 'log', 'cannot read %s: %s' % (settings.log_public_key, e.strerror))
        return
    except trust.TrustError as e:
        checkup.add('fail', 'log', '[rekor] log_public_key %s: %s' % (settings.log_public_key, e))
        return
    if log is None:
        checkup.add('fail', 'log', '%s: no key for this Rekor v2 shard (origin %s): set [rekor] '
                    'log_public_key, or trusted_root to a TrustedRoot that lists it'
                    % (display_url(url), origin))
        return
    client = V2Client(ClientSettings(url, ca_bundle=settings.ca_bundle, retries=0,
                                     connect_timeout=settings.timeout,
                                     read_timeout=settings.timeout))
    try:
        raw = client.read_checkpoint()
        checkpoint = note.verify_checkpoint(raw, log.note_key, origin)
    except note.NoteError as e:
        checkup.add('fail', 'log', '%s: its checkpoint does not verify with %s and origin %s: '
                    '%s' % (display_url(url), where, origin, e))
    except RekorLogError as e:
        checkup.add('fail', 'log', str(e))
    else:
        checkup.add('ok', 'log', '%s (Rekor v2): checkpoint of size %d verifies with %s, '
                    'origin %s' % (display_url(url), checkpoint.size, where, origin))
    finally:
        client.close()


def check_selinux(checkup, settings):
    """httpd may open network connections only with httpd_can_network_connect."""
    import shutil
    import subprocess
    if settings.queue_only:
        checkup.add('ok', 'selinux', 'queue_only: httpd does not reach the log, the worker does')
        return
    getsebool = shutil.which('getsebool')
    if not getsebool:
        checkup.add('ok', 'selinux', 'no getsebool: SELinux is not in the way')
        return
    try:
        done = subprocess.run([getsebool, 'httpd_can_network_connect'], capture_output=True,
                              text=True, timeout=10, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as e:
        checkup.add('skip', 'selinux', 'getsebool failed: %s' % e)
        return
    answer = ' '.join((done.stdout + done.stderr).split())
    if 'disabled' in answer:
        checkup.add('ok', 'selinux', 'SELinux is disabled')
    elif answer.endswith('--> on'):
        checkup.add('ok', 'selinux', 'httpd_can_network_connect is on')
    elif answer.endswith('--> off'):
        checkup.add('fail', 'selinux', 'httpd_can_network_connect is off: SELinux stops httpd '
                    'reaching %s; setsebool -P httpd_can_network_connect 1' % settings.url)
    else:
        checkup.add('skip', 'selinux', 'getsebool answered %r' % answer)


# --- the topdir ----------------------------------------------------------

def check_receipt_dir(checkup, hub_user, topdir):
    """rekor-logs/ must exist and belong to the user httpd runs as, which
    writes the outbox, receipts and state there."""
    import pwd
    path = os.path.join(topdir, RECEIPT_DIR)
    try:
        user = pwd.getpwnam(hub_user)
    except KeyError:
        checkup.add('fail', 'rekor-logs', 'no user %s on this host ([upload] hub_user)' % hub_user)
        return
    try:
        info = os.stat(path)
    except FileNotFoundError as e:
        checkup.add('fail', 'rekor-logs', '%s: %s; create it: mkdir -p %s && chown %s: %s' % (
            path, e.strerror, path, hub_user, path))
        return
    except OSError as e:
        checkup.add('fail', 'rekor-logs', '%s: cannot read it: %s' % (path, e.strerror))
        return
    import stat
    if not stat.S_ISDIR(info.st_mode):
        checkup.add('fail', 'rekor-logs', '%s is not a directory' % path)
    elif info.st_uid != user.pw_uid:
        try:
            owner = pwd.getpwuid(info.st_uid).pw_name
        except KeyError:
            owner = 'uid %d' % info.st_uid
        checkup.add('fail', 'rekor-logs', '%s belongs to %s, not the hub user %s: chown -R %s: %s'
                    % (path, owner, hub_user, hub_user, path))
    elif not info.st_mode & stat.S_IWUSR:
        checkup.add('fail', 'rekor-logs', '%s is not writable by its owner %s' % (path, hub_user))
    else:
        checkup.add('ok', 'rekor-logs', '%s belongs to %s' % (path, hub_user))


def summarise_outbox(checkup, topdir):
    """How many records wait, the oldest, and those set aside; by their
    file names and times only, so a corrupt record cannot stop the check."""
    outbox = outbox_dir(topdir)
    if not os.path.isdir(outbox):
        checkup.add('ok', 'outbox', 'empty (%s does not exist yet)' % outbox)
        return

    def records(directory):
        try:
            return [os.path.join(directory, n) for n in os.listdir(directory)
                    if n.endswith((COMMITTED, UNCOMMITTED)) and not n.startswith('.')]
        except OSError:
            return []
    queued = records(outbox)
    aside = {folder: len(records(os.path.join(outbox, folder)))
             for folder in ('rejected', 'rolled-back')}
    parts = ['%d queued' % len(queued)]
    ages = [age(path) for path in queued]
    if ages:
        parts[0] += ' (oldest %s)' % format_age(max(ages))
    parts += ['%d in %s/' % (n, folder) for folder, n in aside.items() if n]
    detail = '%s: %s' % (outbox, ', '.join(parts))
    if aside['rejected']:
        checkup.add('warn', 'outbox', detail + '; look at rejected/, move each record back '
                    'once fixed')
    else:
        checkup.add('ok', 'outbox', detail)


def format_age(seconds):
    for unit, size in (('d', 86400), ('h', 3600), ('min', 60)):
        if seconds >= size:
            return '%d %s' % (seconds // size, unit)
    return '%d s' % seconds


# ---------------------------------------------------------------------------
# Command line: koji-rekor
# ---------------------------------------------------------------------------

class UsageError(Exception):
    """A command could not even start; exit status 2."""


# Where the hub reads its options (kojixmlrpc.load_config): every *.conf of
# hub.conf.d, then hub.conf, the later winning. An httpd that moves them
# (koji.hub.ConfigFile, koji.hub.ConfigDir) needs --topdir.
HUB_CONFIG_FILE = '/etc/koji-hub/hub.conf'
HUB_CONFIG_DIR = '/etc/koji-hub/hub.conf.d'
DEFAULT_TOPDIR = '/mnt/koji'
TOPDIR_HELP = ('Koji topdir holding rekor-logs/ (default: KojiDir as the hub reads it from '
               '%s and %s/*.conf, else %s)' % (HUB_CONFIG_FILE, HUB_CONFIG_DIR, DEFAULT_TOPDIR))


def default_topdir():
    """KojiDir as the hub finds it, else Koji's default."""
    parser = koji.read_config_files([HUB_CONFIG_DIR, (HUB_CONFIG_FILE, False)], raw=True)
    if parser.has_option('hub', 'KojiDir'):
        return parser.get('hub', 'KojiDir')
    return DEFAULT_TOPDIR


# The one place that decides which commands run as the hub's user: those
# that may write under rekor-logs/. main() switches before the command runs,
# so that no command can forget to.
WRITES_UNDER_LOGS = {
    'retry': lambda args: True,
    'backfill': lambda args: True,
    'outbox': lambda args: bool(args.requeue),
    'upload': lambda args: bool(args.topdir),
}


def switch_for(args):
    """Started as root, become the hub's user before a command that writes
    under rekor-logs/ (WRITES_UNDER_LOGS); nothing otherwise."""
    if args.command == 'monitor':
        # It writes only its own state_dir: root stays root unless told.
        return become_monitor_user(load_config(args.config))
    decide = WRITES_UNDER_LOGS.get(args.command)
    if decide is None or not decide(args):
        return
    topdir = args.topdir or default_topdir()
    if not os.path.isdir(topdir):
        return  # the command says so, in its own words
    # Only root needs hub_user, and only when rekor-logs/ does not say whom
    # to become (missing, or root's): the configuration is read then.
    become_hub_user(lambda: load_config(args.config), topdir)


# Whom a command became (become_hub_user), for the one line an import that
# fails afterwards gets.
SWITCHED = []


def become_monitor_user(settings):
    """Started as root with [monitor] user set, become that user, owner of
    a state_dir it is given when it is new or root's."""
    import pwd
    if os.geteuid() != 0 or not settings.monitor_user:
        return
    try:
        user = pwd.getpwnam(settings.monitor_user)
    except KeyError:
        raise UsageError('no such user: %s ([monitor] user)' % settings.monitor_user)
    home = monitor_home(settings)
    fd = os.open(home, WALK_DIR_FLAGS)
    try:
        if os.fstat(fd).st_uid == 0:
            os.fchown(fd, user.pw_uid, user.pw_gid)
    finally:
        os.close(fd)
    switch_user(user.pw_name, user.pw_uid, user.pw_gid)


def switch_user(name, uid, gid):
    """The switch itself, after loading what the new user may not read."""
    preload()
    if name:
        os.initgroups(name, gid)
    else:
        os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
    SWITCHED.append(name or uid)


def become_hub_user(settings, topdir):
    """Commands that write under rekor-logs/ run as the hub's user, so that
    nothing they leave there keeps the hub from writing: started as root,
    become the owner of rekor-logs/ (or [upload] hub_user when it does not
    exist yet, or root owns it), before touching anything, and create it as
    that user."""
    import pwd
    import stat
    logs = os.path.join(topdir, RECEIPT_DIR)
    try:
        info = os.lstat(logs)
    except FileNotFoundError:
        info = None
    if info is not None and not stat.S_ISDIR(info.st_mode):
        raise UsageError('%s is a symlink or not a directory: not followed' % logs)
    if os.geteuid() == 0:
        if info is not None and info.st_uid != 0:
            uid, gid = info.st_uid, info.st_gid
            try:
                user = pwd.getpwuid(uid)
                name, gid = user.pw_name, user.pw_gid
            except KeyError:
                name = None
        else:
            settings = settings() if callable(settings) else settings
            try:
                user = pwd.getpwnam(settings.hub_user)
            except KeyError:
                raise UsageError('no such user: %s (the hub\'s user, [upload] hub_user), who '
                                 'must own %s' % (settings.hub_user, logs))
            uid, gid, name = user.pw_uid, user.pw_gid, user.pw_name
        if uid != 0:
            give_back(logs, uid, gid)
            switch_user(name, uid, gid)
            LOG.debug('rekor_log: running as uid %d, the owner of %s', uid, logs)
    if info is None:
        try:
            os.mkdir(logs)
        except FileExistsError:
            pass
        except OSError as e:
            raise UsageError('cannot create %s: %s' % (logs, e.strerror))


def give_back(logs, uid, gid):
    """What root left under rekor-logs/ (an older version, an admin's run)
    goes back to the hub's user, so that the hub can write there again.
    The hub's user owns the tree and can swap any name in it at any moment,
    so root works from file descriptors only: each directory is opened
    without following a link (O_NOFOLLOW | O_DIRECTORY), each file is
    opened by name relative to it and changed through its own descriptor.
    Only directories and regular files with one link are touched; links,
    FIFOs, devices and hard links (perhaps to a file outside the tree) are
    left alone."""
    try:
        top = os.open(logs, WALK_DIR_FLAGS)
    except OSError:  # missing, a link, not a directory: nothing to give back
        return
    fixed = give_back_fd(top, uid, gid, MAX_DEPTH)
    if fixed:
        LOG.warning('rekor_log: %s under %s belonged to root; given back '
                    'to uid %d, the hub\'s user',
                    counted(fixed, 'file or directory', 'files and directories'),
                    escape(logs), uid)


# os.fwalk would do, but it opens each directory without O_NONBLOCK or
# O_DIRECTORY: a directory swapped for a FIFO between its stat and its open
# would hold root up. Hence this small walk of our own.
WALK_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
WALK_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
MAX_DEPTH = 16  # rekor-logs/ is a few levels deep; a deeper tree is not ours


def give_back_fd(dirfd, uid, gid, depth):
    """Give back the directory open as dirfd and what it holds; closes dirfd."""
    import stat
    fixed = 0
    try:
        if os.fstat(dirfd).st_uid == 0:
            os.fchown(dirfd, uid, gid)
            fixed += 1
        subdirs = []
        with os.scandir(dirfd) as entries:
            for entry in entries:
                try:
                    info = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if stat.S_ISDIR(info.st_mode):
                    subdirs.append(entry.name)
                elif stat.S_ISREG(info.st_mode) and info.st_nlink == 1 and info.st_uid == 0:
                    fixed += give_back_file(dirfd, entry.name, info, uid, gid)
        for name in subdirs if depth > 0 else ():
            try:
                child = os.open(name, WALK_DIR_FLAGS, dir_fd=dirfd)
            except OSError:  # gone, or swapped for a link or something else
                continue
            fixed += give_back_fd(child, uid, gid, depth - 1)
    except OSError:  # gone meanwhile, or a root_squash NFS: nothing to do
        pass
    finally:
        os.close(dirfd)
    return fixed


def give_back_file(dirfd, name, seen, uid, gid):
    import stat
    try:
        fd = os.open(name, WALK_FILE_FLAGS, dir_fd=dirfd)
    except OSError:
        return 0
    try:
        info = os.fstat(fd)
        # Still the file listed, still regular with one link.
        if (info.st_dev, info.st_ino) != (seen.st_dev, seen.st_ino) \
                or not stat.S_ISREG(info.st_mode) or info.st_nlink != 1 or info.st_uid != 0:
            return 0
        os.fchown(fd, uid, gid)
        return 1
    except OSError:
        return 0
    finally:
        os.close(fd)


def preload():
    """Import what is otherwise imported on first use, while the files can
    still be read: the hub's user may not reach root's Python environment."""
    for module in ('encodings.idna', 'cryptography.exceptions', 'cryptography.hazmat.backends',
                   'cryptography.hazmat.backends.openssl',
                   'cryptography.hazmat.primitives.asymmetric.ec',
                   'cryptography.hazmat.primitives.asymmetric.ed25519',
                   'cryptography.hazmat.primitives.serialization', 'requests',
                   'requests.adapters', 'urllib3.util.ssl_', 'rpm', 'yaml', 'json.decoder',
                   'concurrent.futures.thread', 'signal',
                   # imported lazily by the commands (keep in step with them)
                   'getpass', 'glob', 'grp', 'pwd', 'shlex', 'shutil', 'stat', 'subprocess'):
        __import__(module)
    # A check of a bad signature loads the rest of cryptography's backend.
    from rekor_log import signature_is_valid
    signature_is_valid(load_log_key(PUBLIC_REKOR_KEY), b'\x30\x06\x02\x01\x01\x02\x01\x01', b'')


# A v2 upload waits for the shard's next checkpoint (about a second), so
# the worker's throughput is how many it has in flight: 16 drain 200
# signatures in about 13 s where one at a time takes 200 (bench/).
V2_JOBS = 16


def cmd_retry(args):
    import signal
    settings = load_config(args.config)
    topdir = args.topdir or default_topdir()
    if not os.path.isdir(topdir):
        raise UsageError('no such topdir: %s' % topdir)
    koji.pathinfo.topdir = topdir
    if args.jobs is None:
        args.jobs = V2_JOBS if settings.api == 2 else 1
    if not args.watch:
        counts = drain_outbox(settings, topdir, limit=args.limit, now=args.now, jobs=args.jobs)
        line = summary_line(counts, topdir, settings)
        failed = counts['failed'] or counts['rejected'] or counts['log failing'] \
            or counts['tree head not kept']
        return emit(args, 1 if failed else 0,
                    {'counts': counts, 'left': outbox_left(topdir)[0], 'summary': line}, line)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    LOG.info('rekor_log: watching %s every %ss', outbox_dir(topdir), settings.poll_interval)
    while not stop.is_set():
        counts = drain_outbox(settings, topdir, limit=args.limit, now=args.now, watch=True,
                              jobs=args.jobs)
        if any(counts[k] for k in ('logged', 'already in the log', 'failed', 'rejected',
                                   'rolled back', 'tree head not kept')):
            LOG.info('rekor_log: %s', summary_line(counts, topdir, settings))
        stop.wait(settings.poll_interval)
    return 0


def cmd_outbox(args):
    topdir = args.topdir or default_topdir()
    if not os.path.isdir(topdir):
        raise UsageError('no such topdir: %s' % topdir)
    if args.requeue:
        names = args.requeue
        if names == ['all']:
            names = [item['name'] for item in outbox_records(topdir)
                     if item['state'] == 'rejected']
        lines = []
        for name in names:
            requeue_rejected(topdir, name)
            lines.append('requeued %s' % name)
        lines.append('requeued %d; run koji-rekor retry to upload them' % len(names))
        return emit(args, 0, {'requeued': names}, '\n'.join(lines))
    items = list(outbox_records(topdir))
    counts = {state: sum(1 for i in items if i['state'] == state)
              for state, _, _ in OUTBOX_STATES}
    lines = [outbox_line(item) for item in items]
    lines.append(', '.join('%s %d' % item for item in counts.items()))
    return emit(args, 0, {'outbox': outbox_dir(topdir), 'counts': counts, 'records': items},
                '\n'.join(lines))


def cmd_monitor(args):
    topdir = os.path.abspath(args.topdir or default_topdir())
    if not os.path.isdir(topdir):
        raise UsageError('no such topdir: %s' % topdir)
    if args.ack:
        ids = acknowledge(monitor_home(load_config(args.config)), args.ack, args.reason)
        reason = ' '.join(args.reason.split())
        return emit(args, 0, {'acknowledged': ids, 'reason': reason},
                    '\n'.join('acknowledged %s: %s' % (uuid, reason) for uuid in ids))
    if args.reason:
        raise UsageError('--reason goes with --ack UUID')
    settings = load_config(args.config)
    koji.pathinfo.topdir = topdir
    watchlist = read_watchlist(args.watchlist) if args.watchlist else Watchlist()
    if settings.api == 2 and (args.start_index is not None or args.history):
        raise UsageError('--start-index and --history are for Rekor v1 logs: a v2 shard is '
                         'read from its start, then from where the last run stopped')
    progress = Progress()
    try:
        if settings.api == 2:
            report = monitor_v2(settings, topdir, watchlist, progress)
        else:
            report = monitor_log(settings, topdir, watchlist, progress, args.start_index,
                                 args.history)
    finally:
        progress.clear()
    if report.findings and settings.notify_command:
        notify(settings, report)
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
    # With --json the lists are gathered for the one JSON object; otherwise
    # each line is printed as it comes, and what is to log is kept as
    # (volume, path) only: memory stays flat.
    data = {'ignored': [], 'unknown_key': [], 'would_log': [], 'failed': []}

    def report(kind, line, item):
        if args.json:
            data[kind].append(item)
        else:
            print(line)

    todo = []
    for signature in signatures_to_log(settings, topdir, counts, report):
        if args.dry_run:
            report('would_log', 'would log %s sigkey %s (%s)' % (
                signature.nvra, signature.sigkey, signature.path), signature_json(signature))
        todo.append((signature.build['volume_name'], signature.path))
    if args.dry_run:
        del data['failed']
        data.update(counts=counts, summary=backfill_summary(counts, would_log=len(todo)))
        return emit(args, 0, data, data['summary'])
    del data['would_log']
    failed = backfill(settings, topdir, todo, args.jobs, counts, Progress(), report)
    data.update(counts=counts, summary=backfill_summary(counts))
    return emit(args, 1 if failed or counts['tree head not kept'] else 0, data, data['summary'])


def signature_json(signature):
    return {'nvra': signature.nvra, 'sigkey': signature.sigkey, 'path': signature.path}


def cmd_doctor(args):
    checkup, topdir = run_doctor(args.config, args.topdir)
    return emit(args, checkup.status, {'config': args.config, 'topdir': topdir,
                                       'checks': checkup.checks}, checkup.text())


def positive_int(text):
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError('%r is not a positive whole number' % text)
    return value


def nonnegative_int(text):
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError('%r is not a whole number >= 0' % text)
    return value


def cli_settings(args):
    settings = load_config(args.config)
    if getattr(args, 'url', None):
        settings.url = args.url
        check_cli_url(settings, args)
    return settings


def check_cli_url(settings, args):
    """check_url for a --url the user typed: the message names the flags,
    not the file's options."""
    if getattr(args, 'allow_insecure_http', False):
        settings.allow_insecure_http = True
    try:
        check_url(settings)
    except koji.ConfigurationError as e:
        if urllib.parse.urlsplit(args.url).scheme == 'http' and \
                not settings.allow_insecure_http:
            raise UsageError('--url %s is plain http: pass --allow-insecure-http to allow it'
                             % display_url(args.url))
        raise UsageError(str(e).replace('[rekor] url:', '--url', 1))


def cmd_upload(args):
    settings = cli_settings(args)
    if args.ack is not None and not args.ack.strip():
        raise UsageError('--ack REASON: say why this package is logged by hand')
    state = topdir = None
    # The tree heads seen before live under the topdir; without --topdir
    # nothing is written under any rekor-logs/ (--ack writes the monitor's
    # own [monitor] state_dir).
    if args.topdir:
        topdir = args.topdir
        if not os.path.isdir(topdir):
            raise UsageError('no such topdir: %s' % topdir)
        state = state_dir(topdir)
    signed = signed_rpm_from_file(args.rpm)
    try:
        read_public_key(args.key)
    except SignatureSourceError as e:  # an unusable --key: could not run
        raise UsageError(str(e))
    outcome = upload_signed_rpm(settings, signed, args.key, state)
    receipt = json.dumps(outcome.receipt, indent=2, sort_keys=True) + '\n'
    if args.receipt:
        write_atomic(args.receipt, receipt.encode())
    line = '%s %s: log index %d, uuid %s' % (
        'logged' if outcome.created else 'already in the log', signed.nvra,
        outcome.verified.log_index, outcome.verified.uuid)
    # Logged by hand, not by Koji: the monitor reports it until acknowledged.
    if args.ack is not None:
        acknowledge(monitor_home(settings), [outcome.verified.uuid], args.ack)
        ack_line = 'acknowledged for koji-rekor monitor: %s' % ' '.join(args.ack.split())
    else:
        ack_line = ('koji-rekor monitor reports this entry until it is acknowledged: %s'
                    % ack_command(outcome.verified.uuid))
    if args.json:
        return emit(args, 0, {
            'nvra': signed.nvra, 'sigkey': signed.sigkey, 'created': outcome.created,
            'log_index': outcome.verified.log_index, 'uuid': outcome.verified.uuid,
            'receipt_file': args.receipt, 'receipt': outcome.receipt,
            'acknowledged': args.ack is not None,
            'acknowledge': None if args.ack is not None else ack_command(outcome.verified.uuid)},
            None)
    if not args.receipt:
        sys.stdout.write(receipt)
    print(line, file=sys.stderr)
    print(ack_line, file=sys.stderr)
    return 0


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
    if path is None and os.access(CONFIG_FILE, os.R_OK):
        path = CONFIG_FILE
    settings = load_config(path) if path else None
    if args.url:
        settings = settings or Settings()
        settings.url = args.url
        settings.allow_insecure_http = True  # the caller named it; nothing is sent
        check_url(settings)
    return settings


class CannotCheck(UsageError):
    """No key for the log in question: nothing was judged (exit 2)."""


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
    from rekor_log import same_origin
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


def cmd_verify(args):
    settings = verify_settings(args)
    if len(args.files) > 1 or os.path.isdir(args.files[0]):
        return verify_many(args, settings)
    data = load_verify_file(args.files[0])
    if v2_document(data):
        checked = verify_v2_file(args, settings, args.files[0], data)
        return emit(args, 0, checked['json'], '\n'.join(checked['lines']))
    receipt, entry_id, entry = entry_file_parts(args.files[0], data)
    key, key_source = find_log_key(args, settings, receipt, entry, args.files[0])
    verified = verify_entry_file(args, settings, receipt, entry_id, entry, key)
    if args.rpm:
        check_receipt_rpm(args.rpm, receipt, verified)
    unsigned = '' if verified.signed_time else ' (unsigned)'
    lines = ['OK %s: log index %d%s (tree %s, index %d of %d), integrated %s%s, origin %r' % (
        verified.uuid, verified.log_index, unsigned, verified.tree_id, verified.tree_index,
        verified.tree_size, utc(verified.integrated_time),
        unsigned, verified.checkpoint.origin)]
    lines = [escape(lines[0])] + ['note: %s' % escape(note) for note in verified.notes]
    lines += ['log key: %s' % escape(key_source)]
    return emit(args, 0, {
        'file': args.files[0], 'log_key': key_source,
        'entry_id': verified.entry_id, 'uuid': verified.uuid,
        'log_index': verified.log_index, 'tree_id': verified.tree_id,
        'tree_index': verified.tree_index, 'tree_size': verified.tree_size,
        'integrated_time': verified.integrated_time, 'signed_time': verified.signed_time,
        'origin': verified.checkpoint.origin, 'rpm': args.rpm, 'notes': verified.notes},
        '\n'.join(lines))


def check_receipt_body(receipt, body):
    """The receipt's own nvra, sigkey and sha256 are what the entry logged."""
    for name in ('nvra', 'sigkey', 'sha256', 'rekor_url'):
        if receipt.get(name) is not None and not isinstance(receipt.get(name), str):
            raise VerificationError('receipt: %s is not text' % name)
    if not any(receipt.get(name) for name in ('nvra', 'sigkey', 'sha256')):
        return
    if body.get('kind') != 'rpm':
        raise VerificationError('receipt names an RPM, the entry is %s' % body.get('kind'))
    spec = body.get('spec') if isinstance(body.get('spec'), dict) else {}
    package = spec.get('package') if isinstance(spec.get('package'), dict) else {}
    digest = package.get('hash') if isinstance(package.get('hash'), dict) else {}
    if receipt.get('sha256') and receipt['sha256'] != digest.get('value'):
        raise VerificationError('receipt records sha256 %s, the entry logged %s'
                                % (receipt['sha256'], digest.get('value')))
    if receipt.get('nvra'):
        headers = package.get('headers') if isinstance(package.get('headers'), dict) else {}
        logged = logged_nvra(package)
        name, _, arch = receipt['nvra'].rpartition('.')
        if receipt['nvra'] != logged and not (
                arch == 'src' and logged.rpartition('.')[0] == name and headers):
            raise VerificationError('receipt records %s, the entry logged %s'
                                    % (receipt['nvra'], logged))
    if receipt.get('sigkey'):
        holder = spec.get('publicKey') if isinstance(spec.get('publicKey'), dict) else {}
        try:
            armored = base64.b64decode(holder.get('content') or '', validate=True)
        except (binascii.Error, TypeError):
            armored = b''
        if not any(fingerprint.endswith(receipt['sigkey'].upper())
                   for fingerprint in openpgp_fingerprints(armored)):
            raise VerificationError('receipt records sigkey %s, the entry logged another key'
                                    % receipt['sigkey'])


def logged_nvra(package):
    headers = package.get('headers') or {}
    return '%s-%s-%s.%s' % tuple(headers.get(name, '?') for name in
                                 ('Name', 'Version', 'Release', 'Architecture'))


def verify_entry_file(args, settings, receipt, entry_id, entry, key):
    origin = verify_origin_for(args, settings, receipt, key)
    verified = verify_log_entry(entry_id, entry, key, origin, require_set=False)
    if receipt:
        check_receipt_body(receipt, verified.body)
    return verified


# Rekor v2 (rekor-tiles): receipts, bare TransparencyLogEntry files and
# Sigstore bundles, checked offline with rekor_v2 (imported lazily: the
# package split moves it).

SIGSTORE_BUNDLE = 'application/vnd.dev.sigstore.bundle'


def v2_document(data):
    """What a file to verify holds when it is Rekor v2: 'receipt' (the
    plugin's, "rekor_api": 2), 'bundle' (a Sigstore bundle) or 'entry' (a
    bare TransparencyLogEntry); None for a v1 receipt or entry."""
    if not isinstance(data, dict):
        return None
    if 'rekor_api' in data:
        if data['rekor_api'] == 2:
            return 'receipt'
        if data['rekor_api'] != 1 or isinstance(data['rekor_api'], bool):
            raise UsageError('receipt: rekor_api %r is neither 1 nor 2'
                             % (str(data['rekor_api'])[:20],))
        return None
    if isinstance(data.get('mediaType'), str) and data['mediaType'].startswith(SIGSTORE_BUNDLE):
        return 'bundle'
    if 'kindVersion' in data and 'canonicalizedBody' in data:
        return 'entry'
    return None


def v2_log_keys(args, settings, receipt, path):
    """(keys, where they came from) for a v2 entry, the one way verify
    finds keys: --log-key (its origin --origin, else the configured one,
    else the receipt's), else --trusted-root, else the configuration
    ([rekor] trusted_root, and log_public_key when api = 2). Never from the
    file being checked: a receipt at most names the origin."""
    from rekor_log import MAX_FILE
    from rekor_v2 import trust

    def trusted_root(name, where):
        try:
            with open(name, 'rb') as fo:
                return trust.parse_trusted_root(fo.read(MAX_FILE)).logs
        except OSError as e:
            raise UsageError('cannot read %s: %s' % (name, e.strerror))
        except trust.TrustError as e:
            raise UsageError('%s %s: %s' % (where, name, e))

    def pem_key(name, origin, where):
        try:
            with open(name, 'rb') as fo:
                return trust.log_key(origin, fo.read(MAX_FILE))
        except OSError as e:
            raise UsageError('cannot read %s: %s' % (name, e.strerror))
        except trust.TrustError as e:
            raise UsageError('%s %s: %s' % (where, name, e))

    configured = settings if settings and settings.api == 2 else None
    # A v2 shard's origin is its URL without the scheme (port and path kept).
    configured_origin = configured and (configured.origin or trust.origin_of(configured.url))
    if getattr(args, 'log_key', None):
        origin = args.origin or configured_origin or (
            receipt.get('origin') if receipt and isinstance(receipt.get('origin'), str)
            else None)
        if not origin:
            raise CannotCheck('cannot check %s: no origin for --log-key: pass --origin' % path)
        return (pem_key(args.log_key, origin, '--log-key'),), \
            '--log-key %s, origin %s' % (args.log_key, origin)
    if getattr(args, 'trusted_root', None):
        return trusted_root(args.trusted_root, '--trusted-root'), \
            '--trusted-root %s' % args.trusted_root
    keys, sources = (), []
    if settings and settings.trusted_root:
        keys += trusted_root(settings.trusted_root, '[rekor] trusted_root')
        sources.append('[rekor] trusted_root %s' % settings.trusted_root)
    if configured and configured.log_public_key:
        keys += (pem_key(configured.log_public_key, configured_origin,
                         '[rekor] log_public_key'),)
        sources.append('[rekor] log_public_key %s, origin %s' % (
            configured.log_public_key, configured_origin))
    if not keys:
        raise CannotCheck('cannot check %s: no key for Rekor v2 logs: pass --trusted-root, or '
                          '--log-key and --origin, or --config with [rekor] trusted_root or '
                          'api = 2 and log_public_key' % path)
    return keys, '%s (%s)' % (' and '.join(sources), settings.config_file)


def v2_signing_key(args, settings, sigkey):
    """The armored OpenPGP key for sigkey when one is at hand: --key, else
    the plugin's public_key_dir/public_key_path; else None."""
    from rekor_log import SignatureSourceError, public_key_file, read_public_key
    try:
        if getattr(args, 'key', None):
            return read_public_key(args.key)
        if settings and sigkey and (settings.public_key_dir or settings.public_key_path):
            return read_public_key(public_key_file(settings, sigkey))
    except SignatureSourceError as e:
        if getattr(args, 'key', None):
            raise UsageError(str(e))
    return None


def v2_body_key(body):
    """The DER key (or certificate) a hashedrekord v0.0.2 body names."""
    try:
        verifier = json.loads(body)['spec']['hashedRekordV002']['signature']['verifier']
        holder = verifier.get('publicKey') or verifier.get('x509Certificate')
        return base64.b64decode(holder['rawBytes'], validate=True)
    except (ValueError, TypeError, KeyError, AttributeError, binascii.Error):
        raise VerificationError('the logged body is not a hashedrekord v0.0.2 entry')


def check_v2_receipt_key(receipt, body, armored):
    """The body's key is the (sub)key Koji knows for the receipt's sigkey."""
    from rekor_v2 import hashedrekord
    sigkey = receipt.get('sigkey') or ''
    ders = []
    for packet in hashedrekord.key_packets(armored):
        if packet.key_id.lower().endswith(sigkey.lower()):
            try:
                ders.append(hashedrekord.der_public_key(packet)[0])
            except RekorLogError:
                continue
    if v2_body_key(body) not in ders:
        raise VerificationError('receipt records sigkey %s, the entry logged another key'
                                % sigkey)


def v2_body_from_rpm(args, settings, path, sigkey):
    """The canonical hashedrekord body built from an RPM's headers."""
    from rekor_v2 import hashedrekord
    if not os.path.isfile(path):
        raise UsageError('no such file: %s' % path)
    if not sigkey:
        try:
            sighdr, _ = hashedrekord.read_headers(path)
            blob = (hashedrekord.header_bin(sighdr, hashedrekord.SIGTAG_RSA)
                    or hashedrekord.header_bin(sighdr, hashedrekord.SIGTAG_DSA))
            key_id, fingerprint = hashedrekord.parse_signature(blob).issuer
            sigkey = (fingerprint or key_id or '')[-8:].lower()
        except (RekorLogError, ValueError, TypeError, IndexError) as e:
            raise UsageError('%s: cannot read its header signature: %s' % (path, e))
    armored = v2_signing_key(args, settings, sigkey)
    if armored is None:
        raise CannotCheck('cannot check %s against a Rekor v2 entry: no public key for sigkey '
                          '%s: pass --key, or --config with [signing] public_key_dir'
                          % (path, sigkey))
    try:
        return hashedrekord.from_rpm_file(path, armored).canonical_body()
    except RekorLogError as e:
        raise UsageError(str(e))


def v2_bundle_body(bundle, logged):
    """The hashedrekord v0.0.2 body a Sigstore bundle's message signature
    makes, rebuilt from the bundle (digest, signature, certificate), not
    taken from its entry. A bundle with a public key holds only a hint: the
    key is the logged one (said in the notes)."""
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
    from rekor_v2 import hashedrekord
    ms = bundle.get('messageSignature')
    if not isinstance(ms, dict):
        raise UsageError('the bundle holds no messageSignature (a DSSE envelope is no '
                         'hashedrekord entry)')
    material = bundle.get('verificationMaterial') or {}
    digest = ms.get('messageDigest') if isinstance(ms.get('messageDigest'), dict) else {}
    holder = material.get('certificate') or (
        (material.get('x509CertificateChain') or {}).get('certificates') or [None])[0]
    notes = []
    if isinstance(holder, dict) and isinstance(holder.get('rawBytes'), str):
        try:
            key = x509.load_der_x509_certificate(
                base64.b64decode(holder['rawBytes'], validate=True)).public_key()
        except (ValueError, binascii.Error) as e:
            raise VerificationError('the bundle certificate is unreadable: %s' % e)
        verifier = {'x509Certificate': {'rawBytes': holder['rawBytes']}}
    elif isinstance(material.get('publicKey'), dict):
        # The bundle holds a hint, not the key: the logged verifier stands
        # (the signature and digest are still the bundle's own).
        v2_body_key(logged)
        verifier = dict(json.loads(logged)['spec']['hashedRekordV002']['signature']['verifier'])
        notes.append('the bundle names its key by hint only: the logged key was taken')
        key = details = None
    else:
        raise UsageError('the bundle has no certificate or public key')
    if key is None:
        details = verifier.pop('keyDetails', None)
    elif isinstance(key, ec.EllipticCurvePublicKey):
        details = {'secp256r1': 'PKIX_ECDSA_P256_SHA_256', 'secp384r1': 'PKIX_ECDSA_P384_SHA_384',
                   'secp521r1': 'PKIX_ECDSA_P521_SHA_512'}.get(key.curve.name)
    elif isinstance(key, rsa.RSAPublicKey):
        details = 'PKIX_RSA_PKCS1V15_%d_SHA256' % key.key_size
    elif isinstance(key, ed25519.Ed25519PublicKey):
        details = 'PKIX_ED25519'
    else:
        details = None
    if not details:
        raise UsageError('the bundle key is of a type Rekor v2 does not log')
    verifier['keyDetails'] = details
    return hashedrekord.jcs({'apiVersion': '0.0.2', 'kind': 'hashedrekord', 'spec': {
        'hashedRekordV002': {
            'data': {'algorithm': digest.get('algorithm'), 'digest': digest.get('digest')},
            'signature': {'content': ms.get('signature'), 'verifier': verifier}}}}), notes


def verify_v2_file(args, settings, path, data):
    """Check a Rekor v2 receipt, bundle or entry offline (and the v1
    receipt a v2 receipt carries). Returns {'lines', 'json'}; raises
    VerificationError (not verified), CannotCheck or UsageError."""
    from rekor_v2 import entry as v2entry
    kind = v2_document(data)
    receipt = data if kind == 'receipt' else None
    notes, rpm_body = [], None
    try:
        if kind == 'bundle':
            tle = v2entry.entry_from_bundle(data)
            expected, notes = v2_bundle_body(data, tle.body)
        else:
            tle = v2entry.parse_entry(receipt.get('transparency_log_entry')
                                      if receipt else data)
            expected = tle.body
    except v2entry.EntryError as e:
        raise VerificationError(str(e))
    if receipt:
        for name in ('nvra', 'sigkey', 'sighash', 'build', 'rekor_url', 'origin', 'body'):
            if receipt.get(name) is not None and not isinstance(receipt.get(name), str):
                raise VerificationError('receipt: %s is not text' % name)
        try:
            expected = base64.b64decode(receipt.get('body') or '', validate=True)
        except binascii.Error:
            raise VerificationError('receipt: body is not base64')
    elif kind == 'entry':
        notes.append('a bare entry: its body was compared with nothing%s'
                     % (' but --rpm' if args.rpm else ''))
    keys, source = v2_log_keys(args, settings, receipt, path)
    if not any(k.log_id == tle.log_id for k in keys):
        raise CannotCheck('cannot check %s: no key for its log (logId %s) in %s' % (
            path, base64.b64encode(tle.log_id).decode(), source))
    try:
        verified = v2entry.verify_entry(tle, expected, keys)
    except v2entry.EntryError as e:
        raise VerificationError(str(e))
    if receipt and receipt.get('origin') not in (None, verified.log.origin):
        raise VerificationError('receipt records origin %s, the entry is from %s'
                                % (receipt['origin'], verified.log.origin))
    sigkey = receipt.get('sigkey') if receipt else None
    if receipt and sigkey:
        armored = v2_signing_key(args, settings, sigkey)
        if armored is not None:
            check_v2_receipt_key(receipt, verified.entry.body, armored)
        else:
            notes.append('no key for sigkey %s at hand: the logged key was not compared '
                         'with it' % sigkey)
    if args.rpm:
        rpm_body = v2_body_from_rpm(args, settings, args.rpm, sigkey)
        if rpm_body != verified.entry.body:
            raise VerificationError('%s: its header signature is not the logged hashedrekord'
                                    % args.rpm)
    what = ' of %s sigkey %s' % (receipt.get('nvra'), sigkey) if receipt else ''
    lines = ['OK %s: Rekor v2 %s%s, log index %d of tree %d, origin %r' % (
        path, {'receipt': 'receipt', 'bundle': 'bundle entry', 'entry': 'entry'}[kind], what,
        verified.entry.log_index, verified.checkpoint.size, verified.log.origin)]
    result = {'file': path, 'rekor_api': 2, 'document': kind, 'log_key': source,
              'log_index': verified.entry.log_index, 'tree_size': verified.checkpoint.size,
              'origin': verified.log.origin, 'rpm': args.rpm, 'notes': notes,
              'nvra': receipt.get('nvra') if receipt else None, 'sigkey': sigkey}
    if receipt and 'rekor_v1' in receipt:
        result['rekor_v1'], more = verify_v1_part(args, settings, path, receipt)
        lines += more
    lines += ['note: %s' % note for note in notes]
    lines += ['log key: %s' % source]
    return {'lines': lines, 'json': result}


def verify_v1_part(args, settings, path, receipt):
    """The v1 receipt a v2 receipt carries (a signature logged in both
    during a move): checked as a v1 receipt, for the same signature.
    --log-key/--origin/--url name the v2 log; the v1 part's key is the
    configured one of an api = 1 configuration, else the built-in one."""
    old = receipt['rekor_v1']
    if not isinstance(old, dict) or 'log_entry' not in old:
        raise VerificationError('receipt: rekor_v1 is not a v1 receipt')
    for name in ('nvra', 'sigkey'):
        if old.get(name) and receipt.get(name) and old[name] != receipt[name]:
            raise VerificationError('receipt: its rekor_v1 part records %s %s, not %s'
                                    % (name, old[name], receipt[name]))
    v1args = argparse.Namespace(**dict(vars(args), log_key=None, origin=None, url=None))
    v1settings = settings if settings and settings.api == 1 else None
    v1receipt, entry_id, entry = entry_file_parts(path, old)
    key, source = find_log_key(v1args, v1settings, v1receipt, entry, path)
    verified = verify_entry_file(v1args, v1settings, v1receipt, entry_id, entry, key)
    if args.rpm:
        check_receipt_rpm(args.rpm, v1receipt, verified)
    return ({'uuid': verified.uuid, 'log_index': verified.log_index, 'log_key': source},
            ['OK its rekor_v1 part: %s, log index %d (log key: %s)'
             % (verified.uuid, verified.log_index, source)])


def verify_many(args, settings):
    """Verify every receipt named or under the directories named, in this
    process: a line for each, then a summary. Exit 1 if one failed, else 2
    if one could not be read, else 0."""
    if args.rpm:
        raise UsageError('--rpm checks one receipt, not several')
    counts = dict.fromkeys(('verified', 'failed', 'unreadable'), 0)
    results = []  # only with --json: the one JSON object holds them all

    def result(path, status, line, cause=None, source=None):
        counts[status] += 1
        if args.json:
            results.append({'path': path, 'status': status, 'cause': cause,
                            'log_key': source})
        else:
            print(line)

    for path in receipt_files(args.files):
        try:
            data = load_verify_file(path)
            if v2_document(data):
                source = verify_v2_file(args, settings, path, data)['json']['log_key']
                result(path, 'verified', 'OK %s (Rekor v2; log key: %s)' % (path, source),
                       source=source)
                continue
            receipt, entry_id, entry = entry_file_parts(path, data)
            key, source = find_log_key(args, settings, receipt, entry, path)
            verify_entry_file(args, settings, receipt, entry_id, entry, key)
        except VerificationError as e:
            result(path, 'failed', 'FAILED %s: %s' % (escape(path), escape(e)), str(e))
        except UsageError as e:
            result(path, 'unreadable', 'UNREADABLE %s: %s' % (escape(path), escape(e)), str(e))
        else:
            result(path, 'verified', 'OK %s (log key: %s)' % (escape(path), escape(source)),
                   source=source)
    if not any(counts.values()):
        raise UsageError('no receipts in %s' % ', '.join(args.files))
    summary = ', '.join('%s %d' % item for item in counts.items())
    return emit(args, 1 if counts['failed'] else 2 if counts['unreadable'] else 0,
                {'files': results, 'counts': counts, 'summary': summary}, summary)


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
    if verified.body.get('kind') != 'rpm':
        raise UsageError('--rpm needs an rpm entry, this is %s' % verified.body.get('kind'))
    if not os.path.isfile(path):
        raise UsageError('no such file: %s' % path)
    with open(path, 'rb') as fo:
        sha256 = sha256_of(fo)
    logged = member(member(member(verified.body, 'spec'), 'package'), 'hash')
    if logged.get('value') != sha256:
        raise VerificationError('%s has sha256 %s, the entry logged %s'
                                % (path, sha256, logged.get('value')))
    if receipt and receipt.get('sha256') not in (None, sha256):
        raise VerificationError('receipt records sha256 %s, %s has %s'
                                % (receipt.get('sha256'), path, sha256))


def cmd_log_key(args):
    """Print the key the log serves, and the one pinned for it on first use,
    with their logIDs, for the admin to install as [rekor] log_public_key."""
    from rekor_log import pin_name, read_file_at
    settings = cli_settings(args)
    topdir = args.topdir or default_topdir()
    pinned = None
    try:
        with logs_dir(topdir, ('@state', 'keys'), create=False) as fd:
            pinned = read_file_at(fd, pin_name(settings.url), limit=64 * 1024)
    except FileNotFoundError:
        pass
    client = RekorClient(settings)
    try:
        served = client.log_public_key()
    finally:
        client.close()
    keys = [('served by %s' % settings.url, served)]
    if pinned is not None:
        keys.append(('pinned in %s' % os.path.join(state_dir(topdir), 'keys',
                                                   pin_name(settings.url)), pinned))
    found = [{'where': where, 'log_id': log_key_id(load_log_key(pem)).hex(),
              'pem': pem.decode('ascii', 'replace')} for where, pem in keys]
    differ = len({key['log_id'] for key in found}) > 1
    if differ:
        print('koji-rekor: the log serves another key than the one pinned', file=sys.stderr)
    return emit(args, 1 if differ else 0, {'url': settings.url, 'keys': found},
                ''.join('# %(where)s: logID %(log_id)s\n%(pem)s' % key for key in found))


class HelpFormatter(argparse.HelpFormatter):
    """--help with each option's default, as ArgumentDefaultsHelpFormatter
    gives it, but not for options without one (None, False) nor where the
    help already names it."""

    def _get_help_string(self, action):
        text = action.help or ''
        if action.default in (None, False, argparse.SUPPRESS) or 'default' in text or \
                action.nargs in (argparse.ZERO_OR_MORE, argparse.ONE_OR_MORE) or \
                not action.option_strings:
            return text
        return text + ' (default: %(default)s)'


CONTRACT = ('exit status: 0 success; 1 %s; 2 could not run (bad arguments, a missing or '
            'unreadable file, a bad configuration, %s). One line on stderr says why; --json '
            'prints one JSON object with exit_status.')

# name -> (what it does, what exit 1 means, what else exit 2 covers); the
# README's "One contract for every subcommand", per command.
COMMAND_DOCS = {
    'upload': ('Log one RPM that is already signed: rpm checks that --key signed it, then it is '
               'sent to the log, the answer verified, and the receipt written (or printed).',
               'the local signature check failed, or the log refused the entry',
               'a log that cannot be reached'),
    'verify': ('Verify receipts written by the plugin, or Rekor entries, offline: UUID, '
               'inclusion proof, checkpoint, signed entry timestamp, logID; with --rpm, that the '
               'RPM is the one logged. The log key: --log-key, else the configuration\'s for '
               'that log, else the built-in key of rekor.sigstore.dev; a receipt names its log, '
               'never the key. Rekor v2 receipts (and the v1 receipt one carries), bare '
               'TransparencyLogEntry files and Sigstore bundles: the key from --log-key and '
               '--origin, else --trusted-root, else [rekor] trusted_root or an api = 2 '
               'log_public_key.',
               'a receipt or entry does not verify',
               'a file that cannot be read, no key for the log an entry names'),
    'verify-rpm': ('Check RPM files against the log: each must be logged (found by its sha256 in '
                   "the log's index, or in --receipt) with a key you trust, and verify as the "
                   'plugin verifies its own entries. The log key is found as for verify.',
                   'a package is not found, not verified, or logged with a key you do not trust',
                   'a package that could not be checked, no key for the log, a Rekor v2 log '
                   'without --receipt or the hub (v2 has no search)'),
    'retry': ('Upload what the outbox holds: the signatures the hub queued (queue_only, '
              'failures, the hub budget spent). For cron, or --watch as a service.',
              'signatures are left unlogged', 'a log that cannot be reached'),
    'outbox': ('List the records waiting or set aside in the outbox (<topdir>/rekor-logs/'
               '@outbox); --requeue moves rejected ones back, due now.',
               'not used', 'a record that cannot be requeued'),
    'monitor': ("Check the log's consistency, and that every entry made with our keys is a "
                'signature Koji made; for a timer or cron.',
                'findings not yet acknowledged', 'something could not be checked'),
    'log-key': ("Print the key the log serves, and the one pinned for it on first use, with "
                'their logIDs, to set as [rekor] log_public_key.',
                'the log serves another key than the pinned one', 'a log that cannot be reached'),
    'backfill': ('Log the signatures in the topdir that have no receipt (imported before the '
                 'plugin was enabled, or while it was off), as the plugin logs them.',
                 'signatures are left unlogged', 'a log that cannot be reached'),
    'doctor': ('Check this installation, one line per check (ok, warn, FAIL, skip): the '
               'configuration, hub.conf and the plugin file, the topdir (named, with why), the '
               'signing keys, the log and its key, SELinux, rekor-logs/ and the outbox, and '
               "what the hub's user can read; with api = 2, each key loggable in Rekor v2, "
               'the trust files valid now and the shard\'s checkpoint. Writes nothing.',
               'a check FAILs (warnings and skips alone exit 0)', 'doctor itself could not run'),
}


def document_commands(top, sub):
    """Description, defaults and exit status in every subcommand's --help,
    and the exit statuses of all in the top --help, which the man page
    (argparse-manpage, from this parser) prints as the top's epilog."""
    top.formatter_class = HelpFormatter
    top.epilog = ('Every subcommand has its own --help: what it does, its defaults and its '
                  'exit status. Exit status: 0 success; 2 could not run (bad arguments, a '
                  'missing or unreadable file, a bad configuration, a log that cannot be '
                  'reached where that means nothing could be checked); 1 the thing checked '
                  'failed: %s.' % '; '.join('%s: %s' % (name, doc[1]) for name, doc in
                                             COMMAND_DOCS.items() if doc[1] != 'not used'))
    for name, parser in sub.choices.items():
        what, fails, cannot = COMMAND_DOCS[name]
        parser.description = what
        parser.epilog = CONTRACT % (fails, cannot) if fails != 'not used' else (
            CONTRACT.replace('1 %s; ', '') % cannot)
        parser.formatter_class = HelpFormatter


def build_parser():
    parser = argparse.ArgumentParser(
        prog='koji-rekor', description='Record Koji RPM signatures in a Rekor transparency log.')
    parser.add_argument('--version', action='version', version='%(prog)s ' + __version__)
    parser.add_argument('--debug', action='store_true', help='log debug messages')
    # Its own dest: a subcommand's --json default (False) would overwrite it.
    parser.add_argument('--json', dest='json_first', action='store_true',
                        help='print the result as one JSON object (also after the subcommand)')
    sub = parser.add_subparsers(dest='command', required=True)

    upload = sub.add_parser('upload', help='log an RPM that is already signed')
    upload.add_argument('rpm', help='signed RPM file')
    upload.add_argument('--key', required=True, help='ASCII-armored public key that signed it')
    upload.add_argument('--config', default=CONFIG_FILE, help='plugin configuration file')
    upload.add_argument('--url', help='Rekor URL (overrides the configuration)')
    upload.add_argument('--allow-insecure-http', action='store_true',
                        help='allow a plain http --url (the file\'s allow_insecure_http '
                             'also does)')
    upload.add_argument('--topdir', help='Koji topdir whose rekor-logs/ keeps the tree heads '
                        'seen before (run as the hub user; default: none)')
    upload.add_argument('--receipt', help='write the receipt here instead of printing it')
    upload.add_argument('--ack', metavar='REASON',
                        help='acknowledge the entry for koji-rekor monitor, which otherwise '
                             'reports a package Koji did not sign until it is acknowledged')
    upload.set_defaults(func=cmd_upload)

    verify = sub.add_parser('verify', help='verify a receipt or Rekor entry offline')
    verify.add_argument('files', nargs='+', metavar='FILE',
                        help='receipt written by the plugin, or a {entryID: entry} JSON; '
                             'several, or directories of receipts, are checked in one go')
    verify.add_argument('--rpm', help='also check that this RPM is the one logged (one FILE)')
    verify.add_argument('--log-key', help="PEM file of the log's public key")
    verify.add_argument('--origin', help='host the checkpoint origin must name')
    verify.add_argument('--trusted-root', metavar='FILE',
                        help='Sigstore TrustedRoot JSON naming the logs and their keys (Rekor v2)')
    verify.add_argument('--key', metavar='FILE',
                        help='armored OpenPGP key of the signer, to compare a Rekor v2 entry '
                             'with --rpm (default: the configured public_key_dir)')
    verify.add_argument('--url', help='the Rekor log the entry must come from')
    verify.add_argument('--config', help='plugin configuration file (default: %s when it '
                        'exists and can be read; none is needed)' % CONFIG_FILE)
    verify.set_defaults(func=cmd_verify)

    verify_rpm = sub.add_parser(
        'verify-rpm', help='check RPM files against the log: logged, and by a key you trust')
    verify_rpm.add_argument('rpm', nargs='+', help='RPM files')
    verify_rpm.add_argument('--key', action='append', metavar='FILE',
                            help='trust the ASCII-armored public key(s) in FILE (repeatable)')
    verify_rpm.add_argument('--keys', metavar='DIR', help='trust every armored key in DIR')
    verify_rpm.add_argument('--rpmdb', action='store_true',
                            help="trust the rpm database's gpg-pubkey keys, as dnf does")
    verify_rpm.add_argument('--root', help='with --rpmdb: the system root (rpm --root)')
    verify_rpm.add_argument('--dbpath', help='with --rpmdb: the rpm database directory')
    verify_rpm.add_argument('--receipt', action='append', metavar='FILE',
                            help='check against this receipt, offline, instead of searching '
                                 "the log's index (repeatable)")
    verify_rpm.add_argument('--url', help='Rekor URL (default: %s)' % DEFAULT_URL)
    verify_rpm.add_argument('--allow-insecure-http', action='store_true',
                            help='allow a plain http --url')
    verify_rpm.add_argument('--log-key', help="PEM file of the log's public key")
    verify_rpm.add_argument('--origin', help='host the checkpoint origin must name')
    verify_rpm.add_argument('--trusted-root', metavar='FILE',
                            help='Sigstore TrustedRoot JSON naming the logs and their keys '
                                 '(Rekor v2 receipts)')
    verify_rpm.add_argument('--config', help='read the log settings from this plugin '
                                             'configuration file (default: %s when it exists '
                                             'and can be read; none is needed)' % CONFIG_FILE)
    verify_rpm.add_argument('--json', action='store_true', help='print the results as JSON')
    verify_rpm.set_defaults(func=cmd_verify_rpm)

    retry = sub.add_parser('retry', help='upload what the outbox holds (for cron or a service)')
    retry.add_argument('--config', default=CONFIG_FILE, help='plugin configuration file')
    retry.add_argument('--topdir', help=TOPDIR_HELP)
    retry.add_argument('--limit', type=int, help='upload at most N records per pass')
    retry.add_argument('--now', action='store_true',
                       help="retry failed records now instead of at their next attempt")
    retry.add_argument('--jobs', type=positive_int, default=None, metavar='N',
                       help='upload N records at a time (default: 1; %d with [rekor] api = 2, '
                       'whose log answers once per checkpoint)' % V2_JOBS)
    retry.add_argument('--watch', action='store_true',
                       help='keep running: a pass every [upload] poll_interval seconds until stopped')
    retry.set_defaults(func=cmd_retry)

    outbox = sub.add_parser('outbox', help='list the records waiting or set aside in the '
                                           'outbox; requeue rejected ones')
    outbox.add_argument('--topdir', help=TOPDIR_HELP)
    outbox.add_argument('--config', default=CONFIG_FILE,
                        help="plugin configuration file (for [upload] hub_user, the user "
                             '--requeue runs as when started as root)')
    outbox.add_argument('--requeue', nargs='+', metavar='NAME',
                        help='move these rejected records (<nvra>.<sigkey>, as listed; "all" '
                             'for every one) back into the outbox, due now')
    outbox.set_defaults(func=cmd_outbox)

    monitor = sub.add_parser(
        'monitor', help="check the log's consistency and every entry made with our keys "
                        '(for cron or a timer)')
    monitor.add_argument('--config', default=CONFIG_FILE, help='plugin configuration file')
    monitor.add_argument('--watchlist', metavar='FILE.yaml',
                         help='YAML file of further keys and fingerprints to watch')
    monitor.add_argument('--topdir', help=TOPDIR_HELP)
    monitor.add_argument('--json', action='store_true', help='print the report as JSON')
    monitor.add_argument('--start-index', type=nonnegative_int, metavar='N',
                         help='read the log from log index N (default: where the last run '
                              "stopped; on the first run, the log's current end)")
    monitor.add_argument('--history', action='store_true',
                         help="also look at older entries Rekor's index lists for our keys "
                              '(best-effort: the index can miss entries)')
    monitor.add_argument('--ack', nargs='+', metavar='UUID',
                         help='acknowledge these findings (entry UUIDs) and exit; needs --reason')
    monitor.add_argument('--reason', metavar='TEXT', help='why the acknowledged findings are fine')
    monitor.set_defaults(func=cmd_monitor)

    log_key = sub.add_parser('log-key', help="print the log's key (served and pinned) and its "
                                              'logID, to set as [rekor] log_public_key')
    log_key.add_argument('--config', default=CONFIG_FILE, help='plugin configuration file')
    log_key.add_argument('--url', help='Rekor URL (overrides the configuration)')
    log_key.add_argument('--allow-insecure-http', action='store_true',
                         help='allow a plain http --url')
    log_key.add_argument('--topdir',
                         help='Koji topdir (default: KojiDir from hub.conf, else /mnt/koji)')
    log_key.set_defaults(func=cmd_log_key)

    backfill = sub.add_parser('backfill',
                              help='log the signatures in the topdir that have no receipt')
    backfill.add_argument('--config', default=CONFIG_FILE, help='plugin configuration file')
    backfill.add_argument('--topdir', help=TOPDIR_HELP)
    backfill.add_argument('--dry-run', action='store_true',
                          help='list what would be logged, send nothing')
    backfill.add_argument('--jobs', type=positive_int, default=2, metavar='N',
                          help='upload N signatures at a time (default: 2)')
    backfill.set_defaults(func=cmd_backfill)

    doctor = sub.add_parser('doctor', help='check this installation: configuration, keys, '
                                           'the log, the topdir, SELinux, the outbox')
    doctor.add_argument('--config', default=CONFIG_FILE, help='plugin configuration file')
    doctor.add_argument('--topdir', help=TOPDIR_HELP)
    doctor.set_defaults(func=cmd_doctor)

    add_common_options(sub)
    document_commands(parser, sub)
    return parser


def add_common_options(sub):
    """--debug and --json on every subcommand, including those added by
    others, so the contract does not depend on each command remembering.
    SUPPRESS keeps a --debug given before the subcommand."""
    for parser in sub.choices.values():
        for flag, kws in (('--debug', dict(action='store_true', default=argparse.SUPPRESS,
                                           help='log debug messages')),
                          ('--json', dict(action='store_true',
                                          help='print the result as one JSON object'))):
            with contextlib.suppress(argparse.ArgumentError):  # the command has its own
                parser.add_argument(flag, **kws)


def emit(args, status, data, text):
    """Print a command's result, as JSON with --json (with its exit status),
    else as text; returns the exit status."""
    if getattr(args, 'json', False):
        sys.stdout.write(json.dumps(dict(data, exit_status=status), indent=2, sort_keys=True)
                         + '\n')
    elif text:
        sys.stdout.write(text if text.endswith('\n') else text + '\n')
    return status


def exit_status_of(exc):
    """The command-line contract: 1 when the thing checked failed (a
    verification, a local signature check, Rekor refusing the entry); 2 when
    the command could not run (arguments, files, configuration, a log that
    cannot be reached, anything unexpected)."""
    if isinstance(exc, (UsageError, koji.ConfigurationError, SourceGone, RekorUnavailable,
                        UnsafePath, OSError)):
        return 2
    if isinstance(exc, RekorLogError):
        return 1
    return 2


def error_line(exc):
    """One short line for what stopped a command."""
    if isinstance(exc, ImportError) and SWITCHED:
        return ('cannot import %s as the hub\'s user %s, who cannot read the Python '
                'installation %s: install koji-rekor where that user can read it'
                % (exc.name, SWITCHED[-1], sys.prefix))
    if isinstance(exc, VerificationError):
        return 'verification failed: %s' % exc
    if isinstance(exc, (RekorLogError, UsageError, koji.ConfigurationError)):
        return str(exc)
    if isinstance(exc, OSError) and exc.strerror:
        return '%s: %s' % (exc.filename, exc.strerror) if exc.filename else exc.strerror
    return failure_cause(exc)


class EscapingFormatter(logging.Formatter):
    """Log lines carry names and answers from the topdir and the log: each
    line is escaped (a traceback keeps its line breaks)."""

    def formatMessage(self, record):
        return escape(super().formatMessage(record))


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.json_first:
        args.json = True
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO,
                        format='%(levelname)s: %(message)s')
    for handler in logging.getLogger().handlers:
        handler.setFormatter(EscapingFormatter('%(levelname)s: %(message)s'))
    try:
        switch_for(args)
        return args.func(args)
    except KeyboardInterrupt:
        return 130
    except Exception as e:
        status, line = exit_status_of(e), error_line(e)
        if args.debug and not isinstance(e, (RekorLogError, UsageError,
                                             koji.ConfigurationError)):
            LOG.exception('rekor_log: %s', line)
        print('koji-rekor: %s' % escape(line), file=sys.stderr)
        if getattr(args, 'json', False):
            sys.stdout.write(json.dumps({'error': line, 'exit_status': status}, indent=2,
                                        sort_keys=True) + '\n')
        return status


if __name__ == '__main__':
    sys.exit(main())
