"""The outbox under rekor-logs/@outbox: records, their states, claims."""

import contextlib
import dataclasses
import errno
import fcntl
import json
import os
import re
import time

from . import LOG
from .display import format_age
from .errors import BadRecord, failure_cause, RekorLogError, UnsafePath, UsageError
from .receipts import check_rpm_naming, check_sigkey, MAX_PART, NAME_RE, VERSION_RE
from .rpmsig import nvra_of
from .safefs import (
    check_part,
    logs_dir,
    open_logs_dir,
    open_subdir,
    parse_json,
    read_file_at,
    read_regular_file,
    RECEIPT_DIR,
    thread_lock,
    write_file_at,
)


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

# The set-aside folders under @outbox.
REJECTED_FOLDER = 'rejected'

ROLLED_BACK_FOLDER = 'rolled-back'


@dataclasses.dataclass(frozen=True)
class State:
    """One state of a record: where its file is, and what users are told.
    hub: the word of the rekorLogStatus hub call; cli: of koji-rekor outbox."""
    name: str
    folder: str   # under @outbox; '' for the outbox itself
    ending: str
    hub: str
    cli: str

    @property
    def set_aside(self):
        return bool(self.folder)


COMMITTED_STATE = State('committed', '', COMMITTED, 'queued', 'pending')
UNCOMMITTED_STATE = State('uncommitted', '', UNCOMMITTED, 'queued', 'uncommitted')
REJECTED_STATE = State('rejected', REJECTED_FOLDER, COMMITTED, 'rejected', 'rejected')
ROLLED_BACK_STATE = State('rolled_back', ROLLED_BACK_FOLDER, COMMITTED, 'rolled back',
                          'rolled-back')

# The one state table of the outbox, in the order a signature is looked for.
STATES = (COMMITTED_STATE, UNCOMMITTED_STATE, REJECTED_STATE, ROLLED_BACK_STATE)

# Per-record retry delays of the worker: doubled per attempt, capped.
OUTBOX_BACKOFF = 60

OUTBOX_BACKOFF_MAX = 6 * 3600


def next_attempt(attempts, about_the_log, now):
    """When a record that failed its attempts-th time is due again: at once
    (0: as soon as the log answers) when the log failed, else after a
    per-record backoff doubled per attempt and capped."""
    if about_the_log:
        return 0
    return int(now) + min(OUTBOX_BACKOFF * 2 ** min(attempts - 1, 30), OUTBOX_BACKOFF_MAX)

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


def is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclasses.dataclass(frozen=True)
class Record:
    """A checked outbox record (check_record's rules), as the plugin wrote it."""
    nvra: str
    sigkey: str
    sighash: object
    build: dict
    rpm: dict
    queued: object
    attempts: int
    next_attempt: object
    last_error: object
    receipt: object
    set_aside: object = None

    @classmethod
    def from_json(cls, data, name):
        """data: a parsed record; name: its file name. Raises BadRecord."""
        check_record(data, name)
        return cls(**{f.name: data.get(f.name) for f in dataclasses.fields(cls)})

    def view(self):
        return view(dataclasses.asdict(self))


@dataclasses.dataclass(frozen=True)
class RecordView:
    """What a record says for display (the hub call and koji-rekor outbox),
    read as input: a field not of its type is None."""
    nvra: object = None
    sigkey: object = None
    attempts: object = None
    last_error: object = None
    next_attempt: object = None
    queued: object = None        # a time, int or float
    reason: object = None        # why it was set aside
    set_aside_time: object = None


def view(record):
    """The one reader of a record's display fields, any JSON value in."""
    record = record if isinstance(record, dict) else {}

    def typed(name, kind):
        value = record.get(name)
        return value if isinstance(value, kind) and not isinstance(value, bool) else None
    aside = record.get('set_aside') if isinstance(record.get('set_aside'), dict) else {}
    return RecordView(
        nvra=typed('nvra', str), sigkey=typed('sigkey', str), attempts=typed('attempts', int),
        last_error=typed('last_error', str), next_attempt=typed('next_attempt', int),
        queued=record['queued'] if is_number(record.get('queued')) else None,
        reason=aside['reason'] if isinstance(aside.get('reason'), str) else None,
        set_aside_time=aside['time'] if isinstance(aside.get('time'), int) else None)


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
        with subdir(out, REJECTED_FOLDER) as aside:
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


def outbox_left(topdir):
    """Records still queued (committed or not) and the soonest attempt; a
    file that does not read as a record counts, with no time."""
    left, soonest = 0, None
    with contextlib.suppress(FileNotFoundError), \
            logs_dir(topdir, (OUTBOX_DIR,), create=False) as out:
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


# ---------------------------------------------------------------------------
# Seeing the outbox: koji-rekor outbox
# ---------------------------------------------------------------------------

def outbox_records(topdir, now=None):
    """One dict per record in the outbox and its set-aside folders. A record
    is input: one that cannot be read is listed with the cause."""
    now = time.time() if now is None else now
    for state in STATES:
        for name in list_outbox(topdir, state.folder or None):
            if not name.endswith(state.ending) or name.startswith('.'):
                continue
            yield outbox_entry(topdir, state, name, now)


def outbox_entry(topdir, state, name, now):
    parts = (OUTBOX_DIR,) + ((state.folder,) if state.folder else ())
    item = {'state': state.cli, 'name': name[:-len(state.ending)],
            'path': os.path.join(outbox_dir(topdir), state.folder, name), 'nvra': None,
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
    seen = view(record)
    item.update(nvra=seen.nvra, sigkey=seen.sigkey, attempts=seen.attempts,
                last_error=seen.last_error, next_attempt=seen.next_attempt, reason=seen.reason)
    item['age'] = max(0, int(now - (mtime if seen.queued is None else seen.queued)))
    return item


CLI_SET_ASIDE = tuple(state.cli for state in STATES if state.set_aside)


def outbox_line(item):
    parts = ['age %s' % ('?' if item['age'] is None else format_age(item['age']))]
    if item['attempts'] is not None:
        parts.append('%d attempt%s' % (item['attempts'], '' if item['attempts'] == 1 else 's'))
    if item['state'] == COMMITTED_STATE.cli and item['next_attempt']:
        parts.append('next attempt %s' % time.strftime('%Y-%m-%d %H:%M:%S UTC',
                                                        time.gmtime(item['next_attempt'])))
    if item['last_error']:
        parts.append('last error: %s' % item['last_error'])
    if item['reason'] and item['reason'] != item['last_error']:
        parts.append('set aside: %s' % item['reason'] if item['state'] in
                     CLI_SET_ASIDE else item['reason'])
    return '%-11s %s: %s' % (item['state'], item['name'], '; '.join(parts))


def requeue_rejected(topdir, name):
    """Move a rejected record back into the outbox, due now; the admin has
    fixed its cause. Refuses when the outbox already holds that signature."""
    file_name = name + COMMITTED
    where = os.path.join(outbox_dir(topdir), REJECTED_FOLDER)
    try:
        check_part(file_name)
        with logs_dir(topdir, (OUTBOX_DIR,), create=False) as out, \
                subdir(out, REJECTED_FOLDER, create=False) as aside:
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
