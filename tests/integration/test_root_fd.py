"""Root under rekor-logs/: the hub's user owns that tree, so every path
string there can change between two system calls. Commands started as root
act only on what they opened (directory file descriptors, no links
followed); these tests swap a directory for a link at the worst moment,
woken by inotify rather than by luck or sleeps."""

import ctypes
import ctypes.util
import os
import pwd
import select
import shutil
import subprocess
import sys
import tempfile
import threading

import pytest

from tests.support.common import ROOT

IN_CLOSE_NOWRITE = 0x10
IN_CLOEXEC = 0o2000000
AT_FDCWD = -100
RENAME_EXCHANGE = 2
WAIT = 120


def unprivileged():
    for name in ('nobody', 'daemon'):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            pass
    return None


needs_root = pytest.mark.skipif(os.geteuid() != 0 or unprivileged() is None,
                                reason='needs root and an unprivileged user (nobody)')

libc = ctypes.CDLL(ctypes.util.find_library('c'), use_errno=True)


def exchange(a, b):
    """Swap two names in one system call (renameat2 RENAME_EXCHANGE): the
    hub's user can do it to anything in the directories it owns."""
    if libc.renameat2(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE):
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), a)


class SwapWhenListed(threading.Thread):
    """Waits (inotify) until someone has listed `directory` and closed it,
    then swaps it with `other` (a link to the victim directory)."""

    def __init__(self, directory, other):
        super().__init__(daemon=True)
        self.directory, self.other = directory, other
        self.fd = libc.inotify_init1(IN_CLOEXEC)
        assert self.fd >= 0
        assert libc.inotify_add_watch(self.fd, os.fsencode(directory), IN_CLOSE_NOWRITE) >= 0
        self.swapped = threading.Event()

    def run(self):
        try:
            ready, _, _ = select.select([self.fd], [], [], WAIT)
            if ready:
                os.read(self.fd, 4096)
                exchange(self.directory, self.other)
                self.swapped.set()
        finally:
            os.close(self.fd)


@pytest.fixture
def shared_dir():
    """A directory the unprivileged user can reach (pytest's are private to root)."""
    path = tempfile.mkdtemp(prefix='koji-rekor-fd-')
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path)


NAMES = ['f%04d' % i for i in range(2000)]


def plant(shared_dir, hub):
    """rekor-logs/ owned by the hub's user with a root-owned directory `a`
    (an older version's leftovers) whose names match root's files in a
    victim directory outside the topdir."""
    topdir = os.path.join(shared_dir, 'koji')
    logs = os.path.join(topdir, 'rekor-logs')
    victim = os.path.join(shared_dir, 'victim')
    os.makedirs(os.path.join(logs, 'a'))
    os.mkdir(victim)
    for name in NAMES:
        open(os.path.join(logs, 'a', name), 'w').close()
        with open(os.path.join(victim, name), 'w') as fo:
            fo.write('root only\n')
        os.chmod(os.path.join(victim, name), 0o600)
    os.symlink(victim, os.path.join(logs, 'swap'))
    os.chown(topdir, hub.pw_uid, hub.pw_gid)
    os.chown(logs, hub.pw_uid, hub.pw_gid)
    return topdir, logs, victim


def config(shared_dir, rekor, log_key_file, hub):
    shutil.copy(str(log_key_file), os.path.join(shared_dir, 'log.pub'))
    os.chmod(os.path.join(shared_dir, 'log.pub'), 0o644)
    conf = os.path.join(shared_dir, 'rekor_log.conf')
    with open(conf, 'w') as fo:
        fo.write('[rekor]\nurl = %s\nallow_insecure_http = true\nlog_public_key = %s\n'
                 '[upload]\nhub_user = %s\n[monitor]\nstate_dir = %s\n'
                 % (rekor.url, os.path.join(shared_dir, 'log.pub'), hub.pw_name,
                    os.path.join(shared_dir, 'monitor-state')))
    os.chmod(conf, 0o644)
    return conf


ROOT_COMMANDS = {
    'retry': ['retry'],
    'backfill': ['backfill'],
    'monitor': ['monitor'],
    'upload --topdir': ['upload', '/nonexistent/signed.rpm', '--key', '/nonexistent/key.asc'],
}


@needs_root
@pytest.mark.parametrize('command', sorted(ROOT_COMMANDS))
def test_a_directory_swapped_for_a_link_while_root_gives_back(shared_dir, rekor, log_key_file,
                                                              command):
    """The hub's user waits until root has listed rekor-logs/a, swaps `a`
    for a link to a directory of root's files: root must not chown them."""
    hub = unprivileged()
    topdir, logs, victim = plant(shared_dir, hub)
    conf = config(shared_dir, rekor, log_key_file, hub)
    attacker = SwapWhenListed(os.path.join(logs, 'a'), os.path.join(logs, 'swap'))
    attacker.start()
    subprocess.run([sys.executable, '-m', 'koji_rekor'] + ROOT_COMMANDS[command]
                   + ['--config', conf, '--topdir', topdir],
                   cwd=ROOT, capture_output=True, text=True, timeout=WAIT)
    if command == 'monitor':
        # It writes nothing under rekor-logs/ and gives nothing back: `a` is never listed.
        os.close(os.open(os.path.join(logs, 'a'), os.O_RDONLY))
    attacker.join(WAIT)
    assert attacker.swapped.is_set()
    given = [n for n in NAMES if os.lstat(os.path.join(victim, n)).st_uid != 0]
    assert given == []
    if command == 'monitor':
        return
    # What root left inside the tree did go back to the hub's user.
    real = os.path.join(logs, 'swap')
    assert os.lstat(real).st_uid == hub.pw_uid
    assert {os.lstat(os.path.join(real, n)).st_uid for n in NAMES} == {hub.pw_uid}


@needs_root
def test_links_fifos_and_hard_links_are_left_alone(shared_dir, rekor, log_key_file):
    """Only regular files with one link and directories are given back: a
    hard link to a root file outside the tree, a link, a FIFO stay as they
    are, and the pass does not block on the FIFO."""
    hub = unprivileged()
    topdir, logs, victim = plant(shared_dir, hub)
    conf = config(shared_dir, rekor, log_key_file, hub)
    os.link(os.path.join(victim, NAMES[0]), os.path.join(logs, 'hard'))
    os.mkfifo(os.path.join(logs, 'fifo'))
    os.symlink(os.path.join(victim, NAMES[1]), os.path.join(logs, 'link'))
    done = subprocess.run([sys.executable, '-m', 'koji_rekor', 'retry', '--config', conf,
                           '--topdir', topdir],
                          cwd=ROOT, capture_output=True, text=True, timeout=WAIT)
    assert done.returncode == 0, done.stderr
    assert os.lstat(os.path.join(victim, NAMES[0])).st_uid == 0
    assert os.lstat(os.path.join(victim, NAMES[1])).st_uid == 0
    assert os.lstat(os.path.join(logs, 'fifo')).st_uid == 0
    assert os.lstat(os.path.join(logs, 'a', NAMES[2])).st_uid == hub.pw_uid


def owners(path):
    found = set()
    for directory, dirs, files in os.walk(path):
        for name in [directory] + [os.path.join(directory, n) for n in dirs + files]:
            found.add(os.lstat(name).st_uid)
    return found


@needs_root
def test_requeue_and_ack_as_root_leave_nothing_the_hub_cannot_write(shared_dir, rekor,
                                                                    log_key_file):
    """outbox --requeue and monitor --ack run as the hub's user too: root
    left root-owned records and state, and every later worker pass (as the
    hub's user) then stopped on them."""
    hub = unprivileged()
    topdir = os.path.join(shared_dir, 'koji')
    logs = os.path.join(topdir, 'rekor-logs')
    rejected = os.path.join(logs, '@outbox', 'rejected')
    os.makedirs(rejected)
    with open(os.path.join(rejected, 'foo-1-1.noarch.abcd1234.json'), 'w') as fo:
        fo.write('{"set_aside": "rejected"}\n')
    for directory, dirs, files in os.walk(topdir):
        for name in [directory] + [os.path.join(directory, n) for n in dirs + files]:
            os.lchown(name, hub.pw_uid, hub.pw_gid)
    conf = config(shared_dir, rekor, log_key_file, hub)
    for argv in (['outbox', '--requeue', 'foo-1-1.noarch.abcd1234'],
                 ['monitor', '--ack', 'ab' * 32, '--reason', 'logged by hand']):
        done = subprocess.run([sys.executable, '-m', 'koji_rekor'] + argv
                              + ['--config', conf, '--topdir', topdir],
                              cwd=ROOT, capture_output=True, text=True, timeout=WAIT)
        assert done.returncode == 0, done.stderr
        assert owners(logs) == {hub.pw_uid}, argv
    assert os.path.exists(os.path.join(logs, '@outbox', 'foo-1-1.noarch.abcd1234.json'))


def test_an_import_the_hub_user_cannot_read_is_one_line_naming_the_installation():
    import koji_rekor.cli
    import koji_rekor.privileges
    koji_rekor.privileges.SWITCHED.append('nobody')
    try:
        line = koji_rekor.cli.error_line(ModuleNotFoundError("No module named 'glob'", name='glob'))
    finally:
        koji_rekor.privileges.SWITCHED.pop()
    assert line == ("cannot import glob as the hub's user nobody, who cannot read the Python "
                    'installation %s: install koji-rekor where that user can read it'
                    % sys.prefix)


@needs_root
def test_the_monitor_keeps_root_unless_told_and_its_state_private(shared_dir, rekor,
                                                                   log_key_file):
    """Started as root, the monitor stays root (the hub's user is whom it
    watches) and creates its state_dir 0700; [monitor] user names another."""
    hub = unprivileged()
    topdir = os.path.join(shared_dir, 'koji')
    os.makedirs(os.path.join(topdir, 'rekor-logs'))
    os.chown(os.path.join(topdir, 'rekor-logs'), hub.pw_uid, hub.pw_gid)
    conf = config(shared_dir, rekor, log_key_file, hub)
    state = os.path.join(shared_dir, 'monitor-state')
    argv = [sys.executable, '-m', 'koji_rekor', 'monitor', '--config', conf, '--topdir', topdir]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=WAIT)
    assert done.returncode == 0, done.stderr
    info = os.stat(state)
    assert (info.st_uid, info.st_mode & 0o777) == (0, 0o700)
    assert owners(state) == {0}
    assert os.listdir(os.path.join(topdir, 'rekor-logs')) == []
    shutil.rmtree(state)
    with open(conf, 'a') as fo:
        fo.write('user = %s\n' % hub.pw_name)
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=WAIT)
    assert done.returncode == 0, done.stderr
    assert owners(state) == {hub.pw_uid}


@needs_root
def test_the_monitor_becomes_its_user_not_the_hubs(shared_dir, rekor, log_key_file):
    """[monitor] user names someone else than the hub's user: started as
    root, the monitor runs as that user (everything it writes is that
    user's), its existing root-owned state_dir is given to that user, and
    it writes nothing under rekor-logs/."""
    hub = pwd.getpwnam('daemon')
    watcher = pwd.getpwnam('nobody')
    topdir = os.path.join(shared_dir, 'koji')
    os.makedirs(os.path.join(topdir, 'rekor-logs'))
    os.chown(os.path.join(topdir, 'rekor-logs'), hub.pw_uid, hub.pw_gid)
    conf = config(shared_dir, rekor, log_key_file, hub)
    with open(conf, 'a') as fo:
        fo.write('user = %s\n' % watcher.pw_name)
    state = os.path.join(shared_dir, 'monitor-state')
    os.mkdir(state, 0o700)     # made by the package (StateDirectory=), root's
    done = subprocess.run([sys.executable, '-m', 'koji_rekor', 'monitor', '--config', conf,
                           '--topdir', topdir],
                          cwd=ROOT, capture_output=True, text=True, timeout=WAIT)
    assert done.returncode == 0, done.stderr
    info = os.stat(state)
    assert (info.st_uid, info.st_mode & 0o777) == (watcher.pw_uid, 0o700)
    assert len(owners(state)) == 1 and len(os.listdir(state)) > 0
    assert owners(state) == {watcher.pw_uid}
    assert os.listdir(os.path.join(topdir, 'rekor-logs')) == []


@needs_root
def test_upload_with_topdir_and_ack_as_root(shared_dir, rekor, log_key_file, keys,
                                            signed_rpms):
    """upload --topdir runs as the hub's user, who may not write the
    monitor's state_dir: --ack there is refused up front with one line
    saying what to do, before anything is sent; without --topdir, root
    keeps the acknowledgement in the state_dir."""
    hub = unprivileged()
    topdir = os.path.join(shared_dir, 'koji')
    os.makedirs(os.path.join(topdir, 'rekor-logs'))
    os.chown(os.path.join(topdir, 'rekor-logs'), hub.pw_uid, hub.pw_gid)
    conf = config(shared_dir, rekor, log_key_file, hub)
    rpm = os.path.join(shared_dir, 'signed.rpm')
    key = os.path.join(shared_dir, 'key.asc')
    shutil.copy(signed_rpms[('rsa', 'header')], rpm)
    shutil.copy(keys['rsa'].path, key)
    os.chmod(rpm, 0o644)
    os.chmod(key, 0o644)
    argv = [sys.executable, '-m', 'koji_rekor', 'upload', rpm, '--key', key, '--config', conf,
            '--ack', 'logged by hand']
    done = subprocess.run(argv + ['--topdir', topdir], cwd=ROOT, capture_output=True,
                          text=True, timeout=WAIT)
    assert done.returncode == 2, done.stdout + done.stderr
    (line,) = done.stderr.splitlines()
    assert 'upload --ack' in line and 'koji-rekor monitor --ack' in line, line
    assert rekor.count('POST', '/api/v1/log/entries') == 0
    state = os.path.join(shared_dir, 'monitor-state')
    assert not os.path.exists(state) or owners(state) == {0}
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=WAIT)
    assert done.returncode == 0, done.stderr
    assert 'acknowledged for koji-rekor monitor: logged by hand' in done.stderr
    assert owners(state) == {0}
