"""What the benchmarks share: the checkout and the cache, inputs made once,
the local log in its own process, children started as modules of this
package, CPU counters, and the note of the machine the numbers come from."""

import json
import os
import platform
import select
import shutil
import subprocess
import sys
import time

from tests.support.common import ROOT

# Inputs are cached here between runs (.gitignore'd).
CACHE = os.path.join(ROOT, 'bench', '.cache')
MiB = 1024 * 1024
# A log started on a seeded state of 10,000 entries needs a while to load it.
SERVER_START_SECONDS = 60
TICK = os.sysconf('SC_CLK_TCK')


# ---------------------------------------------------------------------------
# Sizes and values
# ---------------------------------------------------------------------------

def parse_size(text):
    """'64K', '200M', '1G' or a number of bytes."""
    units = {'K': 1024, 'M': MiB, 'G': 1024 * MiB}
    text = text.strip().upper()
    return int(float(text[:-1]) * units[text[-1]]) if text[-1] in units else int(text)


def human(nbytes):
    for unit, size in (('GB', 1024 * MiB), ('MB', MiB), ('KB', 1024)):
        if nbytes >= size:
            return '%g %s' % (round(nbytes / size, 1), unit)
    return '%d B' % nbytes


def json_safe(value):
    """A Koji build or rpm dict (dates and all) as JSON can keep it."""
    from koji.util import encode_datetime_recurse
    return encode_datetime_recurse(value)


def machine_note():
    cpu = platform.processor() or platform.machine()
    try:
        with open('/proc/cpuinfo') as fo:
            cpu = next(l.split(':', 1)[1].strip() for l in fo if l.startswith('model name'))
    except (OSError, StopIteration):
        pass
    mem = os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / (1024 ** 3)
    return '%s, %d cores, %.0f GiB RAM, Python %s, %s' % (
        cpu, os.cpu_count(), mem, platform.python_version(), platform.platform())


# ---------------------------------------------------------------------------
# Inputs made once
# ---------------------------------------------------------------------------

def ready_file(base):
    return os.path.join(base, 'ready.json')


def prepared(base, make):
    """The inputs in directory base, made by make(base) -> a dict JSON can
    keep on the first run and read back from base/ready.json on later ones.
    Whatever an interrupted run left in base is thrown away first."""
    done = ready_file(base)
    if os.path.exists(done):
        with open(done) as fo:
            return json.load(fo)
    shutil.rmtree(base, ignore_errors=True)
    os.makedirs(base)
    info = make(base)
    # written whole or not at all: a run killed here makes everything again
    with open(done + '.tmp', 'w') as fo:
        json.dump(info, fo)
    os.replace(done + '.tmp', done)
    return info


# ---------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------

def child_command(module, *args):
    """A child process running a module of the checkout, e.g. bench.upload;
    start it with cwd=ROOT (python3 -m looks for the module there)."""
    return [sys.executable, '-m', module] + [str(a) for a in args]


def process_cpu(pid):
    """CPU seconds of a process and of its children it waited for (the
    log's rpmkeys)."""
    with open('/proc/%d/stat' % pid) as fo:
        fields = fo.read().rsplit(')', 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / TICK


class LocalRekor:
    """The local log (tests/support/rekor_server.py) in its own process on
    127.0.0.1, fresh or serving a saved state_dir; its public key in
    workdir/rekor.pub. busy: other clients append this many entries a
    second, as on a live log."""

    def __init__(self, workdir, state_dir=None, busy=0.0):
        self.key = os.path.join(workdir, 'rekor.pub')
        cmd = child_command('tests.support.rekor_server', '--port', '0', '--key-out', self.key,
                            '--busy', str(busy))
        if state_dir:
            cmd += ['--state-dir', state_dir]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, cwd=ROOT)
        line = self._first_line(time.monotonic() + SERVER_START_SECONDS)
        if 'listening on' not in line:
            self.stop()
            raise SystemExit('bench: the local Rekor did not start: %r' % line)
        self.url = line.rsplit(' ', 1)[1].strip()

    def _first_line(self, deadline):
        """Its first line of output, waited for until deadline at most."""
        fd, out = self.proc.stdout.fileno(), b''
        while b'\n' not in out:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                break
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            out += chunk
        return out.decode(errors='replace').split('\n', 1)[0]

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=30)
        self.proc.stdout.close()
