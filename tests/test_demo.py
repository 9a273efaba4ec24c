"""The README's second command, `make demo` (tests/demo.py), runs end to end:
a signature imported, logged, its receipt verified again by koji-rekor."""

import os
import subprocess
import sys

from conftest import ROOT


def test_the_demo_logs_a_signature_and_verifies_its_receipt(tmp_path):
    done = subprocess.run([sys.executable, os.path.join(ROOT, 'tests', 'demo.py'),
                           '--keep', str(tmp_path / 'demo')],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    last = done.stdout.strip().splitlines()[-1]
    assert last.startswith('OK ') and 'log index 0' in last, last
