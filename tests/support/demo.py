#!/usr/bin/env python3
"""The main job, end to end, on this machine only.

A throwaway key signs a freshly built RPM; the signature is laid out in a
Koji topdir exactly as the hub's add_rpm_sig leaves it; the plugin, loaded
by Koji's own plugin loader, is fired with postRPMSign against a local
Rekor-compatible log on 127.0.0.1; the receipt is shown and checked again
offline with `koji-rekor verify`.

    python3 -m tests.support.demo [--keep DIR]

Its files stay (in --keep DIR, else a new directory under $TMPDIR, named at
the end), so that the command it prints works after it ends.
"""

import argparse
import base64
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile

import koji
import koji.plugin
from koji.context import context

from tests.support import hubsim, rpmfactory
from tests.support.common import ROOT
from tests.support.rekor_server import RekorServer


def step(text):
    print('\n== %s' % text, flush=True)


def run(work):
    step('A signing key and a signed RPM')
    key = rpmfactory.generate_key(os.path.join(work, 'gnupg'), algo='rsa', name='Demo Signing Key')
    try:
        unsigned = rpmfactory.build_rpm(os.path.join(work, 'build'), name='hello', version='2.0')
        signed = rpmfactory.sign_rpm(unsigned, os.path.join(work, 'hello-signed.rpm'), key)
    finally:
        rpmfactory.stop_gpg_agent(key.gnupghome)
    print('key %s (Koji sigkey %s), %s' % (key.fingerprint, key.sigkey, os.path.basename(signed)))

    step('Koji imports the signature (koji import-sig -> addRPMSig)')
    topdir = os.path.join(work, 'koji')
    imported = rpmfactory.koji_import_signature(topdir, unsigned, signed)
    for path in (imported.unsigned_path, imported.sighdr_path):
        print(os.path.relpath(path, topdir))

    with RekorServer() as rekor:
        step('A local Rekor-compatible log at %s' % rekor.url)
        key_dir = os.path.join(work, 'rekor-keys')
        os.makedirs(key_dir)
        shutil.copy(key.path, os.path.join(key_dir, key.sigkey + '.asc'))
        log_key = os.path.join(work, 'rekor.pub')
        with open(log_key, 'wb') as fo:
            fo.write(rekor.log.public_key_pem)
        conf = os.path.join(work, 'rekor_log.conf')
        with open(conf, 'w') as fo:
            fo.write('[rekor]\nurl = %s\nallow_insecure_http = true\nlog_public_key = %s\n'
                     '[signing]\npublic_key_dir = %s\n' % (rekor.url, log_key, key_dir))
        print(open(conf).read().rstrip())

        step('The hub fires postRPMSign inside its transaction: the signature is queued')
        koji.pathinfo.topdir = topdir
        hubsim.load_plugin(conf)
        koji.plugin.run_callbacks('postRPMSign', sigkey=imported.sigkey,
                                  sighash=imported.sighash, build=imported.build,
                                  rpm=imported.rpm)
        outbox = os.path.join(topdir, 'rekor-logs', '@outbox')
        print('outbox: %s' % ', '.join(sorted(os.listdir(outbox))))

        step('Koji commits and fires postCommit: the plugin uploads, verifies, writes the receipt')
        koji.plugin.run_callbacks('postCommit')
        context._threadclear()
        print('outbox: %s' % (', '.join(sorted(os.listdir(outbox))) or 'empty'))

    step('The receipt')
    receipt_path = os.path.join(topdir, 'rekor-logs', 'hello', '2.0', '1', 'noarch',
                                'hello-2.0-1.noarch.%s.json' % key.sigkey)
    print(os.path.relpath(receipt_path, topdir))
    with open(receipt_path) as fo:
        receipt = json.load(fo)
    (entry_id, entry), = receipt['log_entry'].items()
    body = json.loads(base64.b64decode(entry['body']))
    key = body['spec']['publicKey']['content']
    body['spec']['publicKey']['content'] = key[:40] + '... (%d characters)' % len(key)
    shown = dict(receipt, log_entry={entry_id: dict(entry, body=body)})
    print('(the body is shown decoded; the receipt holds it as Rekor returned it, in base64)')
    print(json.dumps(shown, indent=2))

    step('Anyone can check it again, offline: koji-rekor verify')
    args = ['verify', receipt_path, '--rpm', signed, '--log-key', log_key, '--config', conf]
    # Whole paths: the command works from anywhere, after the demo ends.
    print('$ koji-rekor %s' % ' '.join(shlex.quote(a) for a in args))
    status = subprocess.run([sys.executable, '-m', 'koji_rekor'] + args, cwd=ROOT,
                            timeout=60).returncode
    print('\nThe demo\'s files are in %s (remove it when done); the command above works '
          'until then.' % work)
    return status


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--keep', metavar='DIR',
                        help='work in this directory (default: a new one under $TMPDIR); '
                             'it is kept either way')
    args = parser.parse_args()
    logging_setup()
    if args.keep:
        os.makedirs(args.keep, exist_ok=True)
        return run(os.path.abspath(args.keep))
    return run(tempfile.mkdtemp(prefix='koji-rekor-demo-'))


def logging_setup():
    import logging
    logging.basicConfig(level=logging.INFO, format='%(name)s %(levelname)s: %(message)s')


if __name__ == '__main__':
    sys.exit(main())
