#!/usr/bin/env python3
"""How long a signature import is held by the log, for each state of the log,
with the default hub budget and a small one (enforce off).

For each state (healthy, refusing, slow: answers after --slow seconds,
hanging, dripping: an answer a byte every 50 ms) and each budget, a fresh
Koji topdir gets one signature import of an RPM of --size bytes: postRPMSign
+ postCommit fired as the hub does (Koji's plugin loader, in this process),
timed. The log is the local log (tests/support/rekor_server.py) behind the hostile
front of tests/support/hostile_server.py on 127.0.0.1. Then the log turns healthy and
one plain worker pass (`koji-rekor retry`'s) runs; the table says whether it
delivered the signature. Other options are the plugin's defaults
(timeout 30, retries 3, backoff 1, min_rate 1 MiB/s).

    python3 -m bench.budget [--budgets 10,1] [--size 1M] [--slow 20]
"""

import argparse
import os
import shutil
import sys
import tempfile
import time

import koji_rekor.config
import koji_rekor.receipts
from bench.common import machine_note, parse_size

STATES = ('healthy', 'refusing', 'slow', 'hanging', 'dripping')


def prepare(workdir, size):
    from tests.support import rpmfactory
    key = rpmfactory.generate_key(os.path.join(workdir, 'gnupg'), algo='rsa', name='Bench Key')
    unsigned = rpmfactory.build_rpm(os.path.join(workdir, 'build'), name='budget',
                                    payload_bytes=size)
    signed = rpmfactory.sign_rpm(unsigned, os.path.join(workdir, 'signed.rpm'), key)
    keys = os.path.join(workdir, 'keys')
    os.makedirs(keys)
    shutil.copy(key.path, os.path.join(keys, '%s.asc' % key.sigkey))
    return unsigned, signed, keys, key


def one_run(workdir, number, inputs, rekor, budget, state, slow):
    import koji
    from tests.support import hubsim
    import koji_rekor.worker
    from tests.support import rpmfactory
    from tests.support.hostile_server import HostileServer
    unsigned, signed, keys, key = inputs
    run = os.path.join(workdir, 'run-%d' % number)
    topdir = os.path.join(run, 'koji')
    os.makedirs(topdir)
    koji.pathinfo.topdir = topdir
    imported = rpmfactory.koji_import_signature(topdir, unsigned, signed, build_id=number,
                                                rpm_id=number)
    log_key = os.path.join(run, 'rekor.pub')
    with open(log_key, 'wb') as fo:
        fo.write(rekor.log.public_key_pem)
    with HostileServer(backend=rekor) as front:
        conf = os.path.join(run, 'rekor_log.conf')
        with open(conf, 'w') as fo:
            fo.write('[rekor]\nurl = %s\nallow_insecure_http = true\nlog_public_key = %s\n'
                     '[signing]\npublic_key_dir = %s\n[upload]\nhub_budget = %s\n'
                     % (front.url, log_key, keys, budget))
        module, registered = hubsim.load_plugin(conf)
        try:
            if state == 'refusing':
                front.refuse()
            elif state == 'slow':
                rekor.faults.delay = slow
            elif state == 'hanging':
                front.mode = 'hang'
            elif state == 'dripping':
                front.mode = 'drip'
            start = time.monotonic()
            hubsim.hub_request([imported])
            held = time.monotonic() - start
            in_hub = os.path.exists(koji_rekor.receipts.receipt_path(topdir, imported.rpm, key.sigkey))
            rekor.reset_faults()
            front.mode = 'forward'
            if front.listener is None:
                front.serve()
            counts = koji_rekor.worker.drain_outbox(koji_rekor.config.load_config(conf), topdir)
            delivered = os.path.exists(koji_rekor.receipts.receipt_path(topdir, imported.rpm, key.sigkey))
        finally:
            hubsim.unregister(registered)
    return held, in_hub, delivered, counts


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--budgets', default='10,1')
    parser.add_argument('--size', default='1M')
    parser.add_argument('--slow', type=float, default=20.0)
    args = parser.parse_args()
    from tests.support.rekor_server import RekorServer
    budgets = [float(b) for b in args.budgets.split(',')]
    size = parse_size(args.size)
    print('machine: %s' % machine_note(), flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix='bench-budget-') as workdir, \
            RekorServer() as rekor:
        inputs = prepare(workdir, size)
        number = 0
        for state in STATES:
            for budget in budgets:
                number += 1
                held, in_hub, delivered, counts = one_run(
                    workdir, number, inputs, rekor, budget, state, args.slow)
                rows.append((state, budget, held, in_hub, delivered))
                print('%s, budget %g s: held %.2f s; %s' % (
                    state, budget, held, 'logged in the hub' if in_hub else
                    'left to the worker, which %s' % ('delivered it' if delivered else
                                                      'did NOT deliver it: %s' % counts)),
                      file=sys.stderr, flush=True)
    print()
    print('RPM of %s; enforce off; other options the defaults' % args.size)
    print('| log | %s |' % ' | '.join('held, budget %g s' % b for b in budgets))
    print('|---|%s' % ('---|' * len(budgets)))
    for state in STATES:
        cells = []
        for budget in budgets:
            _, _, held, in_hub, delivered = next(r for r in rows if r[:2] == (state, budget))
            cells.append('%.2f s (%s)' % (held, 'logged' if in_hub else
                                          'worker delivered' if delivered else 'NOT delivered'))
        label = 'slow (answers after %g s)' % args.slow if state == 'slow' else state
        print('| %s | %s |' % (label, ' | '.join(cells)))


if __name__ == '__main__':
    main()
