"""koji-rekor backfill: log the signatures Koji stored before the plugin."""

import os
from dataclasses import dataclass

import koji

from . import LOG
from .delivery import log_outcome, log_signature, write_receipt
from .errors import failure_cause, RekorLogError, SignatureSourceError
from .outbox import COMMITTED, outbox_dir, record_name, UNCOMMITTED
from .progress import run_bounded
from .receipts import receipt_path
from .rpmsig import nvra_of, public_key_file
from .worker import WorkerPass


# ---------------------------------------------------------------------------
# Backfill: koji-rekor backfill
#
# Signatures Koji imported before the plugin was enabled (or while it was
# off) are in the sigcache only. Each one without a receipt is logged
# exactly as the plugin logs it; a rerun skips what has receipts.
# ---------------------------------------------------------------------------

SIGHDR_SUFFIX = '.rpm.sig'

BACKFILL_COUNTS = ('logged', 'already in the log', 'failed', 'unknown key',
                   'skipped', 'queued', 'ignored', 'tree head not kept')


@dataclass
class StoredSignature:
    """A signature header in the sigcache, and the dicts Koji would hand the
    plugin for it, as far as the path tells them."""
    build: dict
    rpminfo: dict
    sigkey: str
    path: str

    @property
    def nvra(self):
        return nvra_of(self.rpminfo)


def stored_signatures(topdir):
    """(path, StoredSignature, None) for every signature header in every
    volume's sigcache, once per RPM and sigkey, and (path, None, reason)
    for files not where Koji would keep them; generated one at a time, so
    that memory stays flat however many there are.

    Other volumes come first: Koji links a build on another volume from the
    default one, and the build is then named with its own volume.
    """
    import glob
    seen = set()
    pattern = os.path.join('*', '*', '*', 'data', 'sigcache', '*', '*', '*' + SIGHDR_SUFFIX)
    for volume, packages in volume_packages(topdir):
        for path in sorted(glob.iglob(os.path.join(glob.escape(packages), pattern))):
            try:
                signature = stored_signature(volume, packages, path)
            except ValueError as e:
                yield path, None, str(e)
                continue
            identity = '%s.%s' % (signature.nvra, signature.sigkey)
            if identity not in seen:
                seen.add(identity)
                yield path, signature, None


def volume_packages(topdir):
    """(volume name, packages directory): vol/<name>/packages for each other
    volume, then the default volume's."""
    voldir = os.path.join(topdir, 'vol')
    names = sorted(n for n in os.listdir(voldir) if not n.startswith('.')) \
        if os.path.isdir(voldir) else []
    return [(name, os.path.join(voldir, name, 'packages')) for name in names] \
        + [('DEFAULT', os.path.join(topdir, 'packages'))]


def stored_signature(volume, packages, path):
    """The build and rpm of a sigcache file from its path:
    <packages>/N/V/R/data/sigcache/<sigkey>/<arch>/<rpm nvra>.rpm.sig. The
    RPM's name comes from the file (a subpackage's is not the build's), and
    koji.pathinfo must give back this very path."""
    name, version, release, _, _, sigkey, arch, filename = \
        os.path.relpath(path, packages).split(os.sep)
    try:
        parsed = koji.parse_NVRA(filename[:-len('.sig')])
    except koji.GenericError:
        raise ValueError('not <name>-<version>-<release>.<arch>%s' % SIGHDR_SUFFIX)
    build = {'name': name, 'version': version, 'release': release, 'volume_name': volume}
    rpminfo = {'name': parsed['name'], 'version': parsed['version'],
               'release': parsed['release'], 'arch': parsed['arch'], 'epoch': None}
    try:
        record_name(rpminfo, sigkey)  # names its receipt can be built from
    except RekorLogError as e:
        raise ValueError(str(e))
    expected = os.path.join(koji.pathinfo.build(build), koji.pathinfo.sighdr(rpminfo, sigkey))
    if os.path.normpath(expected) != os.path.normpath(path):
        raise ValueError('not where Koji keeps it (koji.pathinfo gives %s)' % expected)
    return StoredSignature(build, rpminfo, sigkey, path)


def signatures_to_log(settings, topdir, counts, report):
    """The stored signatures to log: those with neither a receipt nor a
    record in the outbox (the worker logs those) whose public key we have.
    report(kind, line, item) tells why others are ignored or have no key."""
    for path, signature, reason in stored_signatures(topdir):
        if signature is None:
            counts['ignored'] += 1
            report('ignored', 'ignored %s: %s' % (path, reason), {'path': path, 'reason': reason})
        elif os.path.exists(receipt_path(topdir, signature.rpminfo, signature.sigkey)):
            counts['skipped'] += 1
        elif queued_in_outbox(topdir, signature):
            counts['queued'] += 1
        else:
            try:
                public_key_file(settings.signing, signature.sigkey)
            except SignatureSourceError as e:
                counts['unknown key'] += 1
                report('unknown_key', 'unknown key %s: %s (%s): %s' % (
                    signature.sigkey, signature.nvra, signature.path, e),
                    dict(signature_json(signature), reason=str(e)))
                continue
            yield signature


def queued_in_outbox(topdir, signature):
    stem = os.path.join(outbox_dir(topdir), record_name(signature.rpminfo, signature.sigkey))
    return os.path.exists(stem + COMMITTED) or os.path.exists(stem + UNCOMMITTED)


def backfill(settings, topdir, todo, jobs, counts, progress, report):
    """Log each signature (todo: (volume, sigcache path) of each) with at
    most jobs at a time and a bounded number in flight, as one pass of the
    worker does; returns the number that failed."""
    packages = dict(volume_packages(topdir))
    work = WorkerPass(settings, topdir)
    done = [0]

    def log_one(item):
        volume, path = item
        signature = stored_signature(volume, packages[volume], path)
        outcome = log_signature(settings, signature.build, signature.rpminfo, signature.sigkey,
                                topdir, **work.shared())
        write_receipt(settings, topdir, signature.rpminfo, signature.sigkey, outcome.receipt)
        return signature, outcome

    def count(item, future):
        done[0] += 1
        progress.clear()
        try:
            signature, outcome = future.result()
        except Exception as e:
            cause = failure_cause(e)
            counts['failed'] += 1
            signature = stored_signature(item[0], packages[item[0]], item[1])
            report('failed', 'failed %s sigkey %s: %s' % (signature.nvra, signature.sigkey, cause),
                   dict(signature_json(signature), cause=cause))
            LOG.error('rekor_log: failed %s sigkey %s: %s', signature.nvra, signature.sigkey,
                      cause, exc_info=None if isinstance(e, RekorLogError) else e)
        else:
            counts['logged' if outcome.created else 'already in the log'] += 1
            log_outcome(signature.nvra, signature.sigkey, outcome)
        progress.update('backfill: %d/%d signatures (%s)' % (
            done[0], len(todo), ', '.join('%s %d' % (k, counts[k]) for k in BACKFILL_COUNTS[:3])),
            done=done[0] == len(todo))

    try:
        run_bounded(jobs, todo, log_one, count)
    finally:
        work.close(counts)
    return counts['failed']


def backfill_summary(counts, would_log=None):
    """The last line of a backfill; would_log: what a dry run would log."""
    if would_log is None:
        parts = ['logged %d' % counts['logged'],
                 'already in the log %d' % counts['already in the log'],
                 'failed %d' % counts['failed']]
    else:
        parts = ['would log %d' % would_log]
    parts += ['unknown key %d' % counts['unknown key'],
              'skipped %d (receipt exists)' % counts['skipped']]
    if counts['queued']:
        parts.append('queued %d (in the outbox, for the worker)' % counts['queued'])
    if counts['ignored']:
        parts.append('ignored %d (not laid out as Koji does)' % counts['ignored'])
    if counts['tree head not kept']:
        parts.append('tree head not kept %d' % counts['tree head not kept'])
    return ', '.join(parts)


def signature_json(signature):
    return {'nvra': signature.nvra, 'sigkey': signature.sigkey, 'path': signature.path}
