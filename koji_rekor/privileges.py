"""Running as the hub's user: the privilege switch and what root does before it."""

import os

from . import LOG
from .config import default_topdir, load_config, PUBLIC_REKOR_KEY
from .display import counted, escape
from .errors import UsageError
from .logkey import load_log_key
from .monitor.state import monitor_home
from .safefs import RECEIPT_DIR


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
    if args.command == 'upload' and args.ack is not None and SWITCHED:
        # Root became the hub's user, who must not write the monitor's
        # memory: said before anything is sent.
        raise UsageError(
            "upload --ack with --topdir, started as root: the upload runs as the hub's user, "
            "who may not write the monitor's state_dir; upload without --ack, then "
            'acknowledge the uuid it prints with koji-rekor monitor --ack UUID --reason REASON '
            '(or upload without --topdir)')

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
    from .logkey import signature_is_valid
    signature_is_valid(load_log_key(PUBLIC_REKOR_KEY), b'\x30\x06\x02\x01\x01\x02\x01\x01', b'')
