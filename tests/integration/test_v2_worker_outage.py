"""The worker and a Rekor v2 shard after an outage: `koji-rekor retry`
records the shard's failure (503), a later pass probes its /checkpoint,
clears the outage and delivers everything waiting."""

import json
import os
import subprocess
import sys

from tests.support.common import ROOT
from tests.integration.test_v2_hub import (  # noqa: F401 - fixtures
    configure_v2, receipt_of, v2_key_dir, v2_rpms, v2log)

PROCESS_TIMEOUT = 60


def retry(hub, topdir, *args):
    return subprocess.run([sys.executable, '-m', 'koji_rekor', 'retry', '--config',
                           str(hub.conf_path), '--topdir', str(topdir)] + list(args),
                          cwd=ROOT, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=PROCESS_TIMEOUT)


def outage_file(topdir):
    return os.path.join(str(topdir), 'rekor-logs', '@state', 'outage.json')


def test_a_v2_shard_failing_then_back_is_probed_and_drained(
        hub, tmp_path, topdir, v2log, v2_key_dir, koji_import, v2_rpms):
    configure_v2(hub, tmp_path, v2log, v2_key_dir, 'queue_only = true')
    imports = [koji_import(v2_rpms[name]) for name in ('rsa', 'other')]
    for imported in imports:
        hub.sign(imported)
    assert len(hub.outbox()) == 2 and v2log.requests == []
    v2log.unavailable = -1                      # every POST: 503
    failed = retry(hub, topdir)
    assert failed.returncode != 0 and 'Traceback' not in failed.stderr, failed.stderr
    outage = json.load(open(outage_file(topdir)))
    assert outage['failures'] >= 1 and outage['url'] == v2log.url
    assert len(hub.outbox()) == 2
    assert all(receipt_of(topdir, imported) is None for imported in imports)
    # The shard is back; a later pass (no --now) probes its checkpoint first.
    v2log.unavailable = 0
    probes = v2log.count('GET', '/checkpoint')
    done = retry(hub, topdir)
    assert done.returncode == 0, done.stdout + done.stderr
    assert 'Traceback' not in done.stderr and 'the log answers again' in done.stderr
    assert v2log.count('GET', '/checkpoint', 200) > probes
    assert not os.path.exists(outage_file(topdir))
    assert hub.outbox() == []
    assert all(receipt_of(topdir, imported)['rekor_api'] == 2 for imported in imports)
