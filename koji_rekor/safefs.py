"""Files under <topdir>/rekor-logs: directory descriptors, no links followed."""

import contextlib
import errno
import fcntl
import json
import os
import stat
import threading
import weakref

from .errors import UnsafePath

RECEIPT_DIR = 'rekor-logs'

# '@' cannot appear in an RPM name, so this never collides with a receipt
# directory <name>/ beside it.
STATE_DIR = '@state'

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
# Process-wide on purpose: it stands in for the fcntl lock among the threads
# of the one process that fcntl cannot tell apart, so it must be shared by
# every thread of that process, whatever object each thread works through.
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
