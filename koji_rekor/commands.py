"""The koji-rekor commands: each takes its parsed arguments, calls the library, and reports."""

import json
import os
import sys
import threading

import koji

from . import LOG
from .backfill import (
    backfill,
    BACKFILL_COUNTS,
    backfill_summary,
    signature_json,
    signatures_to_log,
)
from .config import cli_settings, default_topdir, load_config, Settings
from .delivery import upload_signed_rpm
from .display import display_url, emit, escape, utc
from .doctor import run_doctor
from .errors import CannotCheck, SignatureSourceError, UsageError, VerificationError
from .keysource import find_log_key
from .koji_client import hub_url
from .logkey import load_log_key, log_key_id
from .monitor.report import format_report, notify
from .monitor.scan import monitor_log
from .monitor.state import ack_command, acknowledge, monitor_home
from .monitor.v2 import monitor_v2
from .monitor.watchlist import read_watchlist, Watchlist
from .offline import (
    check_receipt_rpm,
    entry_file_parts,
    load_verify_file,
    receipt_files,
    verify_entry_file,
    verify_settings,
)
from .offline_v2 import v2_document, verify_v2_file
from .outbox import (
    outbox_dir,
    outbox_left,
    outbox_line,
    outbox_records,
    REJECTED_STATE,
    STATES,
    requeue_rejected,
)
from .progress import Progress
from .rekor import make_client
from .rekor.client_v1 import RekorClient
from .rpmsig import read_public_key, signed_rpm_from_file
from .safefs import logs_dir, write_atomic
from .state import state_dir
from .verify_rpm import (
    format_package,
    offline_entry,
    online_log_key,
    PACKAGE_STATUS,
    trusted_keys,
    verify_rpm_settings,
    verify_rpms,
    VerifyRpmContext,
)
from .worker import drain_outbox, summary_line, V2_JOBS


def cmd_verify_rpm(args):
    settings = verify_rpm_settings(args)
    keys = trusted_keys(args)
    context = VerifyRpmContext(args, settings, keys)
    if args.receipt:
        context.receipts = [offline_entry(args, settings, path) for path in args.receipt]
        checks = verify_rpms(context, args.rpm)
    else:
        if settings is None:  # the public log, as no file or flag names another
            settings = Settings(origin=args.origin)
        if settings.api == 2:
            if not (settings.topurl and hub_url(settings)):
                raise CannotCheck('cannot check against %s: a Rekor v2 log has no search: pass '
                                  '--receipt FILE (the receipt kept under the topdir\'s '
                                  'rekor-logs/, or a TransparencyLogEntry), or set [koji] '
                                  'server and topurl to ask the hub' % display_url(settings.url))
            context.settings, context.hub_receipts = settings, True
            return verify_rpm_result(args, verify_rpms(context, args.rpm))
        context.settings = settings
        context.log_key = online_log_key(args, settings)
        context.client = make_client(settings)
        try:
            checks = verify_rpms(context, args.rpm)
        finally:
            context.client.close()
    return verify_rpm_result(args, checks)


def verify_rpm_result(args, checks):
    status = max(PACKAGE_STATUS[c.status] for c in checks)
    if 1 in (PACKAGE_STATUS[c.status] for c in checks):
        status = 1  # a package that failed outweighs one that could not be checked
    return emit(args, status, {'packages': [c.as_json() for c in checks]},
                ''.join(format_package(c) for c in checks))


def cmd_retry(args):
    import signal
    settings = load_config(args.config)
    topdir = args.topdir or default_topdir()
    if not os.path.isdir(topdir):
        raise UsageError('no such topdir: %s' % topdir)
    koji.pathinfo.topdir = topdir
    if args.jobs is None:
        args.jobs = V2_JOBS if settings.api == 2 else 1
    if not args.watch:
        counts = drain_outbox(settings, topdir, limit=args.limit, now=args.now, jobs=args.jobs)
        line = summary_line(counts, topdir, settings)
        failed = counts['failed'] or counts['rejected'] or counts['log failing'] \
            or counts['tree head not kept']
        return emit(args, 1 if failed else 0,
                    {'counts': counts, 'left': outbox_left(topdir)[0], 'summary': line}, line)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    LOG.info('rekor_log: watching %s every %ss', outbox_dir(topdir), settings.poll_interval)
    while not stop.is_set():
        counts = drain_outbox(settings, topdir, limit=args.limit, now=args.now, watch=True,
                              jobs=args.jobs)
        if any(counts[k] for k in ('logged', 'already in the log', 'failed', 'rejected',
                                   'rolled back', 'tree head not kept')):
            LOG.info('rekor_log: %s', summary_line(counts, topdir, settings))
        stop.wait(settings.poll_interval)
    return 0


def cmd_outbox(args):
    topdir = args.topdir or default_topdir()
    if not os.path.isdir(topdir):
        raise UsageError('no such topdir: %s' % topdir)
    if args.requeue:
        names = args.requeue
        if names == ['all']:
            names = [item['name'] for item in outbox_records(topdir)
                     if item['state'] == REJECTED_STATE.cli]
        lines = []
        for name in names:
            requeue_rejected(topdir, name)
            lines.append('requeued %s' % name)
        lines.append('requeued %d; run koji-rekor retry to upload them' % len(names))
        return emit(args, 0, {'requeued': names}, '\n'.join(lines))
    items = list(outbox_records(topdir))
    counts = {state.cli: sum(1 for i in items if i['state'] == state.cli) for state in STATES}
    lines = [outbox_line(item) for item in items]
    lines.append(', '.join('%s %d' % item for item in counts.items()))
    return emit(args, 0, {'outbox': outbox_dir(topdir), 'counts': counts, 'records': items},
                '\n'.join(lines))


def cmd_monitor(args):
    topdir = os.path.abspath(args.topdir or default_topdir())
    if not os.path.isdir(topdir):
        raise UsageError('no such topdir: %s' % topdir)
    if args.ack:
        ids = acknowledge(monitor_home(load_config(args.config)), args.ack, args.reason)
        reason = ' '.join(args.reason.split())
        return emit(args, 0, {'acknowledged': ids, 'reason': reason},
                    '\n'.join('acknowledged %s: %s' % (uuid, reason) for uuid in ids))
    if args.reason:
        raise UsageError('--reason goes with --ack UUID')
    settings = load_config(args.config)
    koji.pathinfo.topdir = topdir
    watchlist = read_watchlist(args.watchlist) if args.watchlist else Watchlist()
    if settings.api == 2 and (args.start_index is not None or args.history):
        raise UsageError('--start-index and --history are for Rekor v1 logs: a v2 shard is '
                         'read from its start, then from where the last run stopped')
    progress = Progress()
    try:
        if settings.api == 2:
            report = monitor_v2(settings, topdir, watchlist, progress)
        else:
            report = monitor_log(settings, topdir, watchlist, progress, args.start_index,
                                 args.history)
    finally:
        progress.clear()
    if report.findings and settings.notify_command:
        notify(settings, report)
    if args.json:
        sys.stdout.write(json.dumps(report.as_json(), indent=2, sort_keys=True) + '\n')
    else:
        sys.stdout.write(format_report(report))
    return report.status


def cmd_backfill(args):
    settings = load_config(args.config)
    topdir = os.path.abspath(args.topdir or default_topdir())
    if not os.path.isdir(topdir):
        raise UsageError('no such topdir: %s' % topdir)
    koji.pathinfo.topdir = topdir
    if not settings.record_log_info:
        LOG.warning('rekor_log: [upload] record_log_info is off: no receipts are written, so '
                    'a rerun sends every signature again')
    counts = dict.fromkeys(BACKFILL_COUNTS, 0)
    # With --json the lists are gathered for the one JSON object; otherwise
    # each line is printed as it comes, and what is to log is kept as
    # (volume, path) only: memory stays flat.
    data = {'ignored': [], 'unknown_key': [], 'would_log': [], 'failed': []}

    def report(kind, line, item):
        if args.json:
            data[kind].append(item)
        else:
            print(line)

    todo = []
    for signature in signatures_to_log(settings, topdir, counts, report):
        if args.dry_run:
            report('would_log', 'would log %s sigkey %s (%s)' % (
                signature.nvra, signature.sigkey, signature.path), signature_json(signature))
        todo.append((signature.build['volume_name'], signature.path))
    if args.dry_run:
        del data['failed']
        data.update(counts=counts, summary=backfill_summary(counts, would_log=len(todo)))
        return emit(args, 0, data, data['summary'])
    del data['would_log']
    failed = backfill(settings, topdir, todo, args.jobs, counts, Progress(), report)
    data.update(counts=counts, summary=backfill_summary(counts))
    return emit(args, 1 if failed or counts['tree head not kept'] else 0, data, data['summary'])


def cmd_doctor(args):
    checkup, topdir = run_doctor(args.config, args.topdir)
    return emit(args, checkup.status, {'config': args.config, 'topdir': topdir,
                                       'checks': checkup.checks}, checkup.text())


def cmd_upload(args):
    settings = cli_settings(args)
    if args.ack is not None and not args.ack.strip():
        raise UsageError('--ack REASON: say why this package is logged by hand')
    state = topdir = None
    # The tree heads seen before live under the topdir; without --topdir
    # nothing is written under any rekor-logs/ (--ack writes the monitor's
    # own [monitor] state_dir).
    if args.topdir:
        topdir = args.topdir
        if not os.path.isdir(topdir):
            raise UsageError('no such topdir: %s' % topdir)
        state = state_dir(topdir)
    signed = signed_rpm_from_file(args.rpm)
    try:
        read_public_key(args.key)
    except SignatureSourceError as e:  # an unusable --key: could not run
        raise UsageError(str(e))
    outcome = upload_signed_rpm(settings, signed, args.key, state)
    receipt = json.dumps(outcome.receipt, indent=2, sort_keys=True) + '\n'
    if args.receipt:
        write_atomic(args.receipt, receipt.encode())
    line = '%s %s: log index %d, uuid %s' % (
        'logged' if outcome.created else 'already in the log', signed.nvra,
        outcome.verified.log_index, outcome.verified.uuid)
    # Logged by hand, not by Koji: the monitor reports it until acknowledged.
    if args.ack is not None:
        acknowledge(monitor_home(settings), [outcome.verified.uuid], args.ack)
        ack_line = 'acknowledged for koji-rekor monitor: %s' % ' '.join(args.ack.split())
    else:
        ack_line = ('koji-rekor monitor reports this entry until it is acknowledged: %s'
                    % ack_command(outcome.verified.uuid))
    if args.json:
        return emit(args, 0, {
            'nvra': signed.nvra, 'sigkey': signed.sigkey, 'created': outcome.created,
            'log_index': outcome.verified.log_index, 'uuid': outcome.verified.uuid,
            'receipt_file': args.receipt, 'receipt': outcome.receipt,
            'acknowledged': args.ack is not None,
            'acknowledge': None if args.ack is not None else ack_command(outcome.verified.uuid)},
            None)
    if not args.receipt:
        sys.stdout.write(receipt)
    print(line, file=sys.stderr)
    print(ack_line, file=sys.stderr)
    return 0


def cmd_verify(args):
    settings = verify_settings(args)
    if len(args.files) > 1 or os.path.isdir(args.files[0]):
        return verify_many(args, settings)
    data = load_verify_file(args.files[0])
    if v2_document(data):
        checked = verify_v2_file(args, settings, args.files[0], data)
        return emit(args, 0, checked['json'], '\n'.join(checked['lines']))
    receipt, entry_id, entry = entry_file_parts(args.files[0], data)
    key, key_source = find_log_key(args, settings, receipt, entry, args.files[0])
    verified = verify_entry_file(args, settings, receipt, entry_id, entry, key)
    if args.rpm:
        check_receipt_rpm(args.rpm, receipt, verified)
    unsigned = '' if verified.signed_time else ' (unsigned)'
    lines = ['OK %s: log index %d%s (tree %s, index %d of %d), integrated %s%s, origin %r' % (
        verified.uuid, verified.log_index, unsigned, verified.tree_id, verified.tree_index,
        verified.tree_size, utc(verified.integrated_time),
        unsigned, verified.checkpoint.origin)]
    lines = [escape(lines[0])] + ['note: %s' % escape(note) for note in verified.notes]
    lines += ['log key: %s' % escape(key_source)]
    return emit(args, 0, {
        'file': args.files[0], 'log_key': key_source,
        'entry_id': verified.entry_id, 'uuid': verified.uuid,
        'log_index': verified.log_index, 'tree_id': verified.tree_id,
        'tree_index': verified.tree_index, 'tree_size': verified.tree_size,
        'integrated_time': verified.integrated_time, 'signed_time': verified.signed_time,
        'origin': verified.checkpoint.origin, 'rpm': args.rpm, 'notes': verified.notes},
        '\n'.join(lines))


def verify_many(args, settings):
    """Verify every receipt named or under the directories named, in this
    process: a line for each, then a summary. Exit 1 if one failed, else 2
    if one could not be read, else 0."""
    if args.rpm:
        raise UsageError('--rpm checks one receipt, not several')
    counts = dict.fromkeys(('verified', 'failed', 'unreadable'), 0)
    results = []  # only with --json: the one JSON object holds them all

    def result(path, status, line, cause=None, source=None):
        counts[status] += 1
        if args.json:
            results.append({'path': path, 'status': status, 'cause': cause,
                            'log_key': source})
        else:
            print(line)

    for path in receipt_files(args.files):
        try:
            data = load_verify_file(path)
            if v2_document(data):
                source = verify_v2_file(args, settings, path, data)['json']['log_key']
                result(path, 'verified', 'OK %s (Rekor v2; log key: %s)' % (path, source),
                       source=source)
                continue
            receipt, entry_id, entry = entry_file_parts(path, data)
            key, source = find_log_key(args, settings, receipt, entry, path)
            verify_entry_file(args, settings, receipt, entry_id, entry, key)
        except VerificationError as e:
            result(path, 'failed', 'FAILED %s: %s' % (escape(path), escape(e)), str(e))
        except UsageError as e:
            result(path, 'unreadable', 'UNREADABLE %s: %s' % (escape(path), escape(e)), str(e))
        else:
            result(path, 'verified', 'OK %s (log key: %s)' % (escape(path), escape(source)),
                   source=source)
    if not any(counts.values()):
        raise UsageError('no receipts in %s' % ', '.join(args.files))
    summary = ', '.join('%s %d' % item for item in counts.items())
    return emit(args, 1 if counts['failed'] else 2 if counts['unreadable'] else 0,
                {'files': results, 'counts': counts, 'summary': summary}, summary)


def cmd_log_key(args):
    """Print the key the log serves, and the one pinned for it on first use,
    with their logIDs, for the admin to install as [rekor] log_public_key."""
    from .state import pin_name
    from .safefs import read_file_at
    settings = cli_settings(args)
    topdir = args.topdir or default_topdir()
    pinned = None
    try:
        with logs_dir(topdir, ('@state', 'keys'), create=False) as fd:
            pinned = read_file_at(fd, pin_name(settings.url), limit=64 * 1024)
    except FileNotFoundError:
        pass
    client = RekorClient(settings)
    try:
        served = client.log_public_key()
    finally:
        client.close()
    keys = [('served by %s' % settings.url, served)]
    if pinned is not None:
        keys.append(('pinned in %s' % os.path.join(state_dir(topdir), 'keys',
                                                   pin_name(settings.url)), pinned))
    found = [{'where': where, 'log_id': log_key_id(load_log_key(pem)).hex(),
              'pem': pem.decode('ascii', 'replace')} for where, pem in keys]
    differ = len({key['log_id'] for key in found}) > 1
    if differ:
        print('koji-rekor: the log serves another key than the one pinned', file=sys.stderr)
    return emit(args, 1 if differ else 0, {'url': settings.url, 'keys': found},
                ''.join('# %(where)s: logID %(log_id)s\n%(pem)s' % key for key in found))
