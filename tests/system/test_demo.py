"""The README's second command, `make demo` (tests/support/demo.py), runs end to end:
a signature imported, logged, its receipt verified again by koji-rekor."""

import os
import pathlib
import shlex
import shutil
import subprocess
import sys
import tempfile

import pytest

from tests.support.common import ROOT


def test_the_demo_logs_a_signature_and_verifies_its_receipt(tmp_path):
    done = subprocess.run([sys.executable, '-m', 'tests.support.demo',
                           '--keep', str(tmp_path / 'demo')],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    verified, = [line for line in done.stdout.splitlines() if line.startswith('OK ')]
    assert 'log index 0' in verified, verified


@pytest.fixture
def short_tmp():
    """A short TMPDIR: gpg-agent's socket path must fit in sun_path."""
    path = tempfile.mkdtemp(prefix='krd-', dir='/tmp')
    yield pathlib.Path(path)
    shutil.rmtree(path, ignore_errors=True)


def test_the_command_the_demo_prints_works_after_it_ends(short_tmp):
    # Without --keep, as `make demo` runs it: the directory stays, named.
    tmp_path = short_tmp
    done = subprocess.run([sys.executable, '-m', 'tests.support.demo'],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          stdin=subprocess.DEVNULL, env=dict(os.environ, TMPDIR=str(tmp_path)))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    printed, = [line for line in done.stdout.splitlines() if line.startswith('$ koji-rekor ')]
    again = subprocess.run([sys.executable, '-m', 'koji_rekor'] + shlex.split(printed)[2:],
                           cwd=str(tmp_path), capture_output=True, text=True, timeout=120,
                           stdin=subprocess.DEVNULL,
                           env=dict(os.environ, PYTHONPATH=ROOT))
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout.startswith('OK ')
    work, = [str(p) for p in tmp_path.iterdir() if p.name.startswith('koji-rekor-demo-')]
    assert "The demo's files are in %s" % work in done.stdout
