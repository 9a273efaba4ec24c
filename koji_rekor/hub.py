"""The hub side: the bodies of the plugin's callbacks, over a Settings."""

import os
import time

import koji

from . import LOG
from .config import enforce_explicitly_off
from .delivery import (
    body_size,
    deliver,
    enforce_bound,
    log_outcome,
    log_signature,
    record_identity,
)
from .display import counted, seconds
from .errors import BadRecord, failure_cause, RekorLogError
from .outbox import (
    ROLLED_BACK_FOLDER,
    claimed,
    committed_name,
    mark_committed,
    new_record,
    OUTBOX_DIR,
    outbox_dir,
    outbox_location,
    queue_signature,
    remove_record,
    subdir,
    write_record,
)
from .rpmsig import locate_signed_rpm, nvra_of
from .safefs import logs_dir
from .state import read_outage

# ---------------------------------------------------------------------------
# Callbacks
#
# postRPMSign runs inside Koji's transaction, postCommit after it commits
# (never after a rollback). Without enforce, the upload waits for the
# commit; with enforce, it happens in postRPMSign so a failure rolls the
# signature back, and the receipt is written at commit.
# ---------------------------------------------------------------------------


def rpm_signed(kws, settings_of, config_file):
    """postRPMSign: queue the signature, then (under enforce) log it before
    Koji commits. settings_of() gives the settings or raises
    ConfigurationError; config_file is the file it reads."""
    sigkey, rpminfo, build = kws.get('sigkey'), kws['rpm'], kws['build']
    nvra = nvra_of(rpminfo)
    if not sigkey:
        LOG.debug('rekor_log: %s imported without a signature, nothing to log', nvra)
        return
    if rpminfo.get('external_repo_id'):
        LOG.debug('rekor_log: %s is from external repo %s, not logged',
                  nvra, rpminfo.get('external_repo_name'))
        return
    topdir = koji.pathinfo.topdir
    record = new_record(build, rpminfo, sigkey, kws.get('sighash'))
    # Queued first: even a configuration error loses no signature.
    try:
        path, queue_error = queue_signature(topdir, record), None
    except (OSError, RekorLogError) as e:
        path, queue_error = None, e
    settings = config_for_import(nvra, sigkey, path, settings_of, config_file)
    if settings is None:
        return
    if queue_error is not None:
        report_failure(settings, nvra, sigkey, RekorLogError('cannot queue it in %s: %s' % (
            outbox_dir(topdir), getattr(queue_error, 'strerror', None) or queue_error)))
        return
    if settings.enforce:
        try:
            signed = locate_signed_rpm(build, rpminfo, sigkey)
            # A hashedrekord sends the header signature, not the package.
            bound = enforce_bound(settings, 0 if settings.entry == 'hashedrekord'
                                  else signed.size())
            outcome = log_signature(settings, build, rpminfo, sigkey, topdir,
                                    time.monotonic() + bound,
                                    'no answer within the %s enforce allows' % seconds(bound),
                                    kws.get('sighash'))
        except Exception as e:
            remove_record(path)
            report_failure(settings, nvra, sigkey, e)  # raises: Koji rolls back
        log_outcome(nvra, sigkey, outcome)
        record['receipt'] = outcome.receipt
        write_record(path, record)
        verified_receipts()[path] = outcome.receipt
    add_pending(path)


def config_for_import(nvra, sigkey, path, settings_of, config_file):
    """The settings; on a configuration error, fail the import (Koji rolls
    back, the queued record goes) unless the file parses and sets enforce to
    false, in which case the signature waits in the outbox (None)."""
    try:
        return settings_of()
    except koji.ConfigurationError as e:
        if path is not None and enforce_explicitly_off(config_file):
            LOG.error('rekor_log: failed %s sigkey %s (kept in the outbox): configuration: %s',
                      nvra, sigkey, e)
            add_pending(path)
            return None
        if path is not None:
            remove_record(path)
        LOG.error('rekor_log: failed %s sigkey %s (the import fails): configuration: %s',
                  nvra, sigkey, e)
        # from None: Koji formats the traceback into the fault and the hub
        # log; the message holds the cause, one traceback is enough.
        raise koji.CallbackError('Rekor upload of %s (sigkey %s) failed: configuration: %s'
                                 % (nvra, sigkey, e)) from None


def add_pending(path):
    pending = pending_records()
    if path not in pending:  # the same signature twice in one multicall
        pending.append(path)


def reclaim_rolled_back(uncommitted):
    """A worker judged this request dead (it outlived COMMIT_GRACE) and set
    its record aside as rolled back; Koji has now committed it: take it back."""
    topdir, name = outbox_location(uncommitted)
    name = committed_name(name)
    try:
        with logs_dir(topdir, (OUTBOX_DIR,), create=False) as out, \
                subdir(out, ROLLED_BACK_FOLDER, create=False) as aside:
            os.rename(name, name, src_dir_fd=aside, dst_dir_fd=out)
    except FileNotFoundError:
        return None
    LOG.warning('rekor_log: %s was set aside as rolled back, but Koji committed it: queued again',
                name)
    return os.path.join(os.path.dirname(uncommitted), name)


def request_context(attr, factory):
    from koji.context import context
    if not hasattr(context, attr):
        setattr(context, attr, factory())
    return getattr(context, attr)


def pending_records():
    """The records queued in this hub request (Koji's request context)."""
    return request_context('rekor_log_pending', list)


def verified_receipts():
    """Receipts built in this hub request from entries just verified."""
    return request_context('rekor_log_receipts', dict)


def signatures_committed(settings_of):
    """postCommit: the request's records are committed; log them within the
    hub budget and leave the rest to the worker."""
    paths = pending_records()
    if not paths:
        return
    receipts = verified_receipts()
    topdir = koji.pathinfo.topdir
    committed = []
    while paths:
        uncommitted = paths.pop(0)
        try:
            path = mark_committed(uncommitted)
        except FileNotFoundError:
            path = reclaim_rolled_back(uncommitted)
            if path is None:
                LOG.error('rekor_log: cannot commit %s: the record is gone', uncommitted)
                continue
        except (OSError, RekorLogError) as e:
            LOG.error('rekor_log: cannot commit %s: %s', uncommitted, failure_cause(e))
            continue
        committed.append((path, receipts.pop(uncommitted, None)))
    try:
        settings = settings_of()
    except koji.ConfigurationError as e:
        LOG.error('rekor_log: %s in the outbox: configuration: %s',
                  counted(len(committed), 'signature waits', 'signatures wait'), e)
        return
    # Without enforce, the log gets hub_budget seconds of this request in
    # all (a Rekor v2 shard at most V2_HUB_HOLD); what does not finish
    # within it is the worker's.
    budget = min(settings.hub_budget, V2_HUB_HOLD) if settings.api == 2 else settings.hub_budget
    deadline = time.monotonic() + budget
    spent = 'the hub budget of %s is spent; left for the worker' % seconds(budget)
    for path, receipt in committed:
        if settings.queue_only:
            LOG.info('rekor_log: queued %s sigkey %s for the worker', *record_identity(path))
            continue
        try:
            with claimed(path) as record:
                if record is None:
                    continue
                reason = None if record.get('receipt') else worker_reason(
                    settings, topdir, record, deadline)
                if reason:
                    LOG.info('rekor_log: left %s sigkey %s for the worker: %s',
                             record['nvra'], record['sigkey'], reason)
                else:
                    deliver(settings, topdir, path, record, receipt, deadline, spent)
        except BadRecord:
            continue  # set aside and logged

# A Rekor v2 write blocks until the shard publishes its next checkpoint
# (rekor-tiles: tessera's publication awaiter; about a second in production,
# a few under load). Without enforce the hub holds a request for v2 at most
# V2_HUB_HOLD seconds, and leaves the upload to the worker when less than
# V2_CHECKPOINT_WAIT is left of that.
V2_HUB_HOLD = 10.0

V2_CHECKPOINT_WAIT = 5.0


def worker_reason(settings, topdir, record, deadline):
    """Why the hub leaves a record to the worker without trying, or None
    (why_leave_to_worker over the facts: the RPM's size, the outage)."""
    left = deadline - time.monotonic()
    size = outage = None
    if left > 0:
        if settings.api == 1 and settings.entry == 'hashedrekord':
            size = 0  # the header signature is sent, not the package
        elif settings.api != 2:
            try:
                size = locate_signed_rpm(record['build'], record['rpm'], record['sigkey']).size()
            except (RekorLogError, OSError, KeyError, TypeError):
                size = 0  # deliver() reports it
        outage = read_outage(settings, topdir)
    return why_leave_to_worker(left, size, settings.min_rate, outage, time.time(),
                               settings.hub_budget, v2=settings.api == 2)


def why_leave_to_worker(budget_left, rpm_size, min_rate, outage, now, hub_budget, v2=False):
    """Why the hub leaves a record to the worker without trying, or None:
    the budget is spent, the RPM cannot be sent within what is left of it
    at min_rate (v1), a v2 checkpoint wait does not fit in it, or the log
    is failing (outage: state.Outage or None)."""
    if budget_left <= 0:
        return 'the hub budget of %s is spent' % seconds(hub_budget)
    if v2:
        if budget_left < V2_CHECKPOINT_WAIT:
            return 'a Rekor v2 upload waits for the next checkpoint (up to %s), more than ' \
                'the %s left of the hub budget' % (seconds(V2_CHECKPOINT_WAIT), seconds(budget_left))
    else:
        size = rpm_size or 0
        if body_size(size) / min_rate > budget_left:
            return 'an RPM of %d MiB cannot be sent within the hub budget of %s at [rekor] ' \
                'min_rate' % (size // (1024 * 1024), seconds(hub_budget))
        if outage and outage.closed:
            return 'the log no longer takes entries (%s)' % outage.last_error
    if outage and now < outage.next_probe:
        return 'the log is failing (%s)' % outage.last_error
    return None


def report_failure(settings, nvra, sigkey, exc):
    """Log the cause on one line; under enforce, fail the hub call so Koji
    rolls the signature back."""
    cause = failure_cause(exc)
    LOG.error('rekor_log: failed %s sigkey %s%s: %s', nvra, sigkey,
              ' (enforce: the import is rolled back)' if settings.enforce else '', cause,
              exc_info=None if isinstance(exc, RekorLogError) else exc)
    if settings.enforce:
        raise koji.CallbackError('Rekor upload of %s (sigkey %s) failed: %s'
                                 % (nvra, sigkey, cause)) from None  # as config_for_import
