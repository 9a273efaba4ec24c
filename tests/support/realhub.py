"""A real Koji hub (../shared/koji-hub) loading the plugin from this tree,
for the tests that need Koji itself: `koji import`, `koji import-sig`, the
hub's own callbacks, and the monitor asking the hub.

The harness is a shared machine resource (`hub.sh up` writes
/etc/koji-hub/plugins/rekor_log.conf), so the fixture holds an exclusive
lock on LOCK_FILE for its whole life: another test session waits for it
instead of clashing. Use it module-scoped, in few tests: the first `up` on
a machine installs PostgreSQL and may take minutes.
"""

import fcntl
import os
import shlex
import shutil
import subprocess
import tempfile

import pytest

from tests.support.common import ROOT, SHARED

HARNESS = os.path.join(SHARED, 'koji-hub')
LOCK_FILE = '/tmp/koji-rekor-realhub.lock'
UP_TIMEOUT = 1800      # a first `up` installs packages
CALL_TIMEOUT = 300


def read_env(path):
    """KEY=VALUE lines as the harness writes them (shell-quoted values)."""
    env = {}
    with open(path) as fo:
        for line in fo:
            name, sep, value = line.strip().partition('=')
            if sep and name.isidentifier():
                words = shlex.split(value)
                env[name] = words[0] if len(words) == 1 else ' '.join(words)
    return env


class RealHub:
    def __init__(self, workdir, env, rpms):
        self.workdir = workdir
        self.env = env      # HUB_URL, KOJI, TOPDIR, ... (see the harness README)
        self.rpms = rpms    # SRPM, RPM, SIGNED_RPM, SIGNED_RPM_V3, SIGKEY, PUBKEY, ...

    @property
    def url(self):
        return self.env['HUB_URL']

    @property
    def topdir(self):
        return self.env['TOPDIR']

    def koji(self, *args, check=True):
        """The koji CLI as admin; the CompletedProcess."""
        done = subprocess.run(shlex.split(self.env['KOJI']) + [str(a) for a in args],
                              capture_output=True, text=True, timeout=CALL_TIMEOUT,
                              stdin=subprocess.DEVNULL)
        if check and done.returncode != 0:
            raise AssertionError('koji %s failed (%d): %s%s\nhub log:\n%s' % (
                ' '.join(map(str, args)), done.returncode, done.stdout, done.stderr,
                self.logs()))
        return done

    def logs(self, lines=60):
        return harness('hub.sh', 'logs', self.workdir, 'hub', lines, check=False).stdout


def harness(script, *args, check=True, timeout=CALL_TIMEOUT):
    """Run one of the harness's scripts (hub.sh, make_rpms.sh)."""
    done = subprocess.run([os.path.join(HARNESS, script)] + [str(a) for a in args],
                          capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)
    if check and done.returncode != 0:
        raise RuntimeError('%s %s failed (%d):\n%s%s' % (
            script, ' '.join(map(str, args)), done.returncode, done.stdout[-3000:],
            done.stderr[-3000:]))
    return done


def real_hub(write_conf):
    """A generator for a module-scoped fixture: make the harness's RPMs,
    let write_conf(workdir, rpms) write the plugin's configuration, bring the
    hub up with it, yield a RealHub, and always bring it down."""
    if not os.path.isdir(HARNESS):
        pytest.skip('../shared/koji-hub is absent')
    lock = open(LOCK_FILE, 'a')
    try:
        fcntl.lockf(lock, fcntl.LOCK_EX)   # another session's hub first
        workdir = tempfile.mkdtemp(prefix='koji-rekor-hub.', dir='/tmp')
        os.chmod(workdir, 0o755)            # the postgres user reaches workdir/pg
        up = False
        try:
            harness('make_rpms.sh', workdir, timeout=UP_TIMEOUT)
            rpms = read_env(os.path.join(workdir, 'rpms.env'))
            conf = write_conf(workdir, rpms)
            up = True
            harness('hub.sh', 'up', workdir, ROOT, 'rekor_log', '--plugin-conf', conf,
                    timeout=UP_TIMEOUT)
            yield RealHub(workdir, read_env(os.path.join(workdir, 'env')), rpms)
        finally:
            if up:
                harness('hub.sh', 'down', workdir, check=False)
            shutil.rmtree(workdir, ignore_errors=True)
    finally:
        lock.close()   # releases the lock
