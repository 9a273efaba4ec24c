"""Log keys and tree heads kept under rekor-logs/@state, and the outage state."""

import contextlib
import json
import os
import time
import urllib.parse
from dataclasses import dataclass

from . import LOG
from .checkpoint import unhex, verify_checkpoint
from .config import PUBLIC_REKOR_HOST, PUBLIC_REKOR_KEY
from .display import display_url, text_excerpt, utc
from .errors import failure_cause, RekorLogError, UnsafePath, VerificationError
from .logkey import load_log_key, log_key_id, read_log_key
from .merkle import verify_consistency
from .safefs import (
    check_part,
    create_file_at,
    locked_at,
    logs_dir,
    parse_json,
    read_file_at,
    RECEIPT_DIR,
    STATE_DIR,
    write_file_at,
)


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
# reported, not followed. Process-wide on purpose (issue 21 keeps it): the
# check is "changed since this process saw it", across every request of a
# hub process and every thread of a worker; held by one client or settings
# object, a new client would take a swapped pin as the first one seen.
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
    remove_state_file(topdir, OUTAGE_FILE)


def remove_state_file(topdir, name):
    """Remove a file of rekor-logs/@state if it is there. A planted link
    makes nothing to remove: its readers ignore it too."""
    with contextlib.suppress(FileNotFoundError, UnsafePath), \
            logs_dir(topdir, (STATE_DIR,), create=False) as fd:
        os.unlink(name, dir_fd=fd)


# A log that keeps refusing consistency proofs (an instance behind the
# others: LogBehind) is no outage and refuses no record, so the records wait
# for the next pass; past PROOFS_REFUSED_BOUND refusals in a row, status and
# doctor say that its entries are not checked instead of retrying silently.
BEHIND_FILE = 'behind.json'
PROOFS_REFUSED_BOUND = 5


@dataclass
class Behind:
    since: float
    refusals: int
    last_error: str

    @property
    def not_checked(self):
        return self.refusals >= PROOFS_REFUSED_BOUND


def read_behind(settings, topdir):
    """The configured log's run of refused consistency proofs, or None.
    Read as input (another process, or anyone, may have written it)."""
    try:
        with logs_dir(topdir, (STATE_DIR,), create=False) as fd:
            data = parse_json(read_file_at(fd, BEHIND_FILE, limit=64 * 1024) or b'null',
                              BEHIND_FILE)
    except (OSError, RekorLogError):
        return None
    if not isinstance(data, dict) or data.get('url') != display_url(settings.url):
        return None
    since, refusals, last_error = data.get('since'), data.get('refusals'), data.get('last_error')
    if not (isinstance(since, (int, float)) and not isinstance(since, bool)
            and 0 <= since < 1e11 and isinstance(refusals, int)
            and not isinstance(refusals, bool) and 0 < refusals < 1e6
            and isinstance(last_error, str)):
        return None
    return Behind(since, refusals, text_excerpt(last_error, 300))


def behind_reason(behind):
    """What status and doctor say of a log past PROOFS_REFUSED_BOUND."""
    return ('not checked: the log has refused %d consistency proofs in a row since %s (last: '
            '%s); its entries cannot be checked against the tree head kept, so signatures '
            'wait in the outbox until it proves one' % (
                behind.refusals, utc(behind.since),
                behind.last_error))


def record_behind(settings, topdir, cause):
    """The log refused a consistency proof (again), after the client's retries."""
    old = read_behind(settings, topdir)
    try:
        with logs_dir(topdir, (STATE_DIR,)) as fd:
            write_file_at(fd, BEHIND_FILE, json.dumps({
                'url': display_url(settings.url), 'since': old.since if old else time.time(),
                'refusals': old.refusals + 1 if old else 1, 'last_error': cause,
            }, indent=1).encode())
    except (OSError, RekorLogError) as e:
        LOG.warning('rekor_log: cannot record the refused proofs of %s: %s',
                    display_url(settings.url), getattr(e, 'strerror', None) or e)


def clear_behind(topdir):
    """An entry was verified with the log's consistency: the run is over."""
    remove_state_file(topdir, BEHIND_FILE)
