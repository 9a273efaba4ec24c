"""The koji-rekor command line: parser, commands, exit codes."""

import argparse
import contextlib
import json
import logging
import sys

import koji

from . import config as defaults
from . import __version__, LOG
from .commands import (
    cmd_backfill,
    cmd_doctor,
    cmd_log_key,
    cmd_monitor,
    cmd_outbox,
    cmd_retry,
    cmd_upload,
    cmd_verify,
    cmd_verify_rpm,
)
from .config import DEFAULT_URL, TOPDIR_HELP
from .display import escape
from .errors import (
    failure_cause,
    RekorLogError,
    RekorUnavailable,
    SourceGone,
    UnsafePath,
    UsageError,
    VerificationError,
)
from .privileges import switch_for, SWITCHED
from .worker import V2_JOBS


def positive_int(text):
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError('%r is not a positive whole number' % text)
    return value


def nonnegative_int(text):
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError('%r is not a whole number >= 0' % text)
    return value


class HelpFormatter(argparse.HelpFormatter):
    """--help with each option's default, as ArgumentDefaultsHelpFormatter
    gives it, but not for options without one (None, False) nor where the
    help already names it."""

    def _get_help_string(self, action):
        text = action.help or ''
        if action.default in (None, False, argparse.SUPPRESS) or 'default' in text or \
                action.nargs in (argparse.ZERO_OR_MORE, argparse.ONE_OR_MORE) or \
                not action.option_strings:
            return text
        return text + ' (default: %(default)s)'

CONTRACT = ('exit status: 0 success; 1 %s; 2 could not run (bad arguments, a missing or '
            'unreadable file, a bad configuration, %s). One line on stderr says why; --json '
            'prints one JSON object with exit_status.')

# name -> (what it does, what exit 1 means, what else exit 2 covers); the
# docs/admin-guide.md's "One contract for every subcommand", per command.
COMMAND_DOCS = {
    'upload': ('Log one RPM that is already signed: rpm checks that --key signed it, then it is '
               'sent to the log, the answer verified, and the receipt written (or printed).',
               'the local signature check failed, or the log refused the entry',
               'a log that cannot be reached'),
    'verify': ('Verify receipts written by the plugin, or Rekor entries, offline: UUID, '
               'inclusion proof, checkpoint, signed entry timestamp, logID; with --rpm, that the '
               'RPM is the one logged. The log key: --log-key, else the configuration\'s for '
               'that log, else the built-in key of rekor.sigstore.dev; a receipt names its log, '
               'never the key. Rekor v2 receipts (and the v1 receipt one carries), bare '
               'TransparencyLogEntry files and Sigstore bundles: the key from --log-key and '
               '--origin, else --trusted-root, else [rekor] trusted_root or an api = 2 '
               'log_public_key.',
               'a receipt or entry does not verify',
               'a file that cannot be read, no key for the log an entry names'),
    'verify-rpm': ('Check RPM files against the log: each must be logged (found by its sha256 in '
                   "the log's index, or in --receipt) with a key you trust, and verify as the "
                   'plugin verifies its own entries. The log key is found as for verify.',
                   'a package is not found, not verified, or logged with a key you do not trust',
                   'a package that could not be checked, no key for the log, a Rekor v2 log '
                   'without --receipt or the hub (v2 has no search)'),
    'retry': ('Upload what the outbox holds: the signatures the hub queued (queue_only, '
              'failures, the hub budget spent). For cron, or --watch as a service.',
              'signatures are left unlogged', 'a log that cannot be reached'),
    'outbox': ('List the records waiting or set aside in the outbox (<topdir>/rekor-logs/'
               '@outbox); --requeue moves rejected ones back, due now.',
               'not used', 'a record that cannot be requeued'),
    'monitor': ("Check the log's consistency, and that every entry made with our keys is a "
                'signature Koji made; for a timer or cron.',
                'findings not yet acknowledged', 'something could not be checked'),
    'log-key': ("Print the key the log serves, and the one pinned for it on first use, with "
                'their logIDs, to set as [rekor] log_public_key.',
                'the log serves another key than the pinned one', 'a log that cannot be reached'),
    'backfill': ('Log the signatures in the topdir that have no receipt (imported before the '
                 'plugin was enabled, or while it was off), as the plugin logs them.',
                 'signatures are left unlogged', 'a log that cannot be reached'),
    'doctor': ('Check this installation, one line per check (ok, warn, FAIL, skip): the '
               'configuration, hub.conf and the plugin file, the topdir (named, with why), the '
               'signing keys, the log and its key, SELinux, rekor-logs/ and the outbox, and '
               "what the hub's user can read; with api = 2, each key loggable in Rekor v2, "
               'the trust files valid now and the shard\'s checkpoint. Writes nothing.',
               'a check FAILs (warnings and skips alone exit 0)', 'doctor itself could not run'),
}


def document_commands(top, sub):
    """Description, defaults and exit status in every subcommand's --help,
    and the exit statuses of all in the top --help, which the man page
    (argparse-manpage, from this parser) prints as the top's epilog."""
    top.formatter_class = HelpFormatter
    top.epilog = ('Every subcommand has its own --help: what it does, its defaults and its '
                  'exit status. Exit status: 0 success; 2 could not run (bad arguments, a '
                  'missing or unreadable file, a bad configuration, a log that cannot be '
                  'reached where that means nothing could be checked); 1 the thing checked '
                  'failed: %s.' % '; '.join('%s: %s' % (name, doc[1]) for name, doc in
                                             COMMAND_DOCS.items() if doc[1] != 'not used'))
    for name, parser in sub.choices.items():
        what, fails, cannot = COMMAND_DOCS[name]
        parser.description = what
        parser.epilog = CONTRACT % (fails, cannot) if fails != 'not used' else (
            CONTRACT.replace('1 %s; ', '') % cannot)
        parser.formatter_class = HelpFormatter


def build_parser():
    parser = argparse.ArgumentParser(
        prog='koji-rekor', description='Record Koji RPM signatures in a Rekor transparency log.')
    parser.add_argument('--version', action='version', version='%(prog)s ' + __version__)
    parser.add_argument('--debug', action='store_true', help='log debug messages')
    # Its own dest: a subcommand's --json default (False) would overwrite it.
    parser.add_argument('--json', dest='json_first', action='store_true',
                        help='print the result as one JSON object (also after the subcommand)')
    sub = parser.add_subparsers(dest='command', required=True)

    upload = sub.add_parser('upload', help='log an RPM that is already signed')
    upload.add_argument('rpm', help='signed RPM file')
    upload.add_argument('--key', required=True, help='ASCII-armored public key that signed it')
    upload.add_argument('--config', default=defaults.CONFIG_FILE, help='plugin configuration file')
    upload.add_argument('--url', help='Rekor URL (overrides the configuration)')
    upload.add_argument('--allow-insecure-http', action='store_true',
                        help='allow a plain http --url (the file\'s allow_insecure_http '
                             'also does)')
    upload.add_argument('--topdir', help='Koji topdir whose rekor-logs/ keeps the tree heads '
                        'seen before (run as the hub user; default: none)')
    upload.add_argument('--receipt', help='write the receipt here instead of printing it')
    upload.add_argument('--ack', metavar='REASON',
                        help='acknowledge the entry for koji-rekor monitor, which otherwise '
                             'reports a package Koji did not sign until it is acknowledged')
    upload.set_defaults(func=cmd_upload)

    verify = sub.add_parser('verify', help='verify a receipt or Rekor entry offline')
    verify.add_argument('files', nargs='+', metavar='FILE',
                        help='receipt written by the plugin, or a {entryID: entry} JSON; '
                             'several, or directories of receipts, are checked in one go')
    verify.add_argument('--rpm', help='also check that this RPM is the one logged (one FILE)')
    verify.add_argument('--log-key', help="PEM file of the log's public key")
    verify.add_argument('--origin', help='host the checkpoint origin must name')
    verify.add_argument('--trusted-root', metavar='FILE',
                        help='Sigstore TrustedRoot JSON naming the logs and their keys (Rekor v2)')
    verify.add_argument('--key', metavar='FILE',
                        help='armored OpenPGP key of the signer, to compare a Rekor v2 entry '
                             'with --rpm (default: the configured public_key_dir)')
    verify.add_argument('--url', help='the Rekor log the entry must come from')
    verify.add_argument('--config', help='plugin configuration file (default: %s when it '
                        'exists and can be read; none is needed)' % defaults.CONFIG_FILE)
    verify.set_defaults(func=cmd_verify)

    verify_rpm = sub.add_parser(
        'verify-rpm', help='check RPM files against the log: logged, and by a key you trust')
    verify_rpm.add_argument('rpm', nargs='+', help='RPM files')
    verify_rpm.add_argument('--key', action='append', metavar='FILE',
                            help='trust the ASCII-armored public key(s) in FILE (repeatable)')
    verify_rpm.add_argument('--keys', metavar='DIR', help='trust every armored key in DIR')
    verify_rpm.add_argument('--rpmdb', action='store_true',
                            help="trust the rpm database's gpg-pubkey keys, as dnf does")
    verify_rpm.add_argument('--root', help='with --rpmdb: the system root (rpm --root)')
    verify_rpm.add_argument('--dbpath', help='with --rpmdb: the rpm database directory')
    verify_rpm.add_argument('--receipt', action='append', metavar='FILE',
                            help='check against this receipt, offline, instead of searching '
                                 "the log's index (repeatable)")
    verify_rpm.add_argument('--url', help='Rekor URL (default: %s)' % DEFAULT_URL)
    verify_rpm.add_argument('--allow-insecure-http', action='store_true',
                            help='allow a plain http --url')
    verify_rpm.add_argument('--log-key', help="PEM file of the log's public key")
    verify_rpm.add_argument('--origin', help='host the checkpoint origin must name')
    verify_rpm.add_argument('--trusted-root', metavar='FILE',
                            help='Sigstore TrustedRoot JSON naming the logs and their keys '
                                 '(Rekor v2 receipts)')
    verify_rpm.add_argument('--config', help='read the log settings from this plugin '
                                             'configuration file (default: %s when it exists '
                                             'and can be read; none is needed)' % defaults.CONFIG_FILE)
    verify_rpm.add_argument('--json', action='store_true', help='print the results as JSON')
    verify_rpm.set_defaults(func=cmd_verify_rpm)

    retry = sub.add_parser('retry', help='upload what the outbox holds (for cron or a service)')
    retry.add_argument('--config', default=defaults.CONFIG_FILE, help='plugin configuration file')
    retry.add_argument('--topdir', help=TOPDIR_HELP)
    retry.add_argument('--limit', type=int, help='upload at most N records per pass')
    retry.add_argument('--now', action='store_true',
                       help="retry failed records now instead of at their next attempt")
    retry.add_argument('--jobs', type=positive_int, default=None, metavar='N',
                       help='upload N records at a time (default: 1; %d with [rekor] api = 2, '
                       'whose log answers once per checkpoint)' % V2_JOBS)
    retry.add_argument('--watch', action='store_true',
                       help='keep running: a pass every [upload] poll_interval seconds until stopped')
    retry.set_defaults(func=cmd_retry)

    outbox = sub.add_parser('outbox', help='list the records waiting or set aside in the '
                                           'outbox; requeue rejected ones')
    outbox.add_argument('--topdir', help=TOPDIR_HELP)
    outbox.add_argument('--config', default=defaults.CONFIG_FILE,
                        help="plugin configuration file (for [upload] hub_user, the user "
                             '--requeue runs as when started as root)')
    outbox.add_argument('--requeue', nargs='+', metavar='NAME',
                        help='move these rejected records (<nvra>.<sigkey>, as listed; "all" '
                             'for every one) back into the outbox, due now')
    outbox.set_defaults(func=cmd_outbox)

    monitor = sub.add_parser(
        'monitor', help="check the log's consistency and every entry made with our keys "
                        '(for cron or a timer)')
    monitor.add_argument('--config', default=defaults.CONFIG_FILE, help='plugin configuration file')
    monitor.add_argument('--watchlist', metavar='FILE.yaml',
                         help='YAML file of further keys and fingerprints to watch')
    monitor.add_argument('--topdir', help=TOPDIR_HELP)
    monitor.add_argument('--json', action='store_true', help='print the report as JSON')
    monitor.add_argument('--start-index', type=nonnegative_int, metavar='N',
                         help='read the log from log index N (default: where the last run '
                              "stopped; on the first run, the log's current end)")
    monitor.add_argument('--history', action='store_true',
                         help="also look at older entries Rekor's index lists for our keys "
                              '(best-effort: the index can miss entries)')
    monitor.add_argument('--ack', nargs='+', metavar='UUID',
                         help='acknowledge these findings (entry UUIDs) and exit; needs --reason')
    monitor.add_argument('--reason', metavar='TEXT', help='why the acknowledged findings are fine')
    monitor.set_defaults(func=cmd_monitor)

    log_key = sub.add_parser('log-key', help="print the log's key (served and pinned) and its "
                                              'logID, to set as [rekor] log_public_key')
    log_key.add_argument('--config', default=defaults.CONFIG_FILE, help='plugin configuration file')
    log_key.add_argument('--url', help='Rekor URL (overrides the configuration)')
    log_key.add_argument('--allow-insecure-http', action='store_true',
                         help='allow a plain http --url')
    log_key.add_argument('--topdir',
                         help='Koji topdir (default: KojiDir from hub.conf, else /mnt/koji)')
    log_key.set_defaults(func=cmd_log_key)

    backfill = sub.add_parser('backfill',
                              help='log the signatures in the topdir that have no receipt')
    backfill.add_argument('--config', default=defaults.CONFIG_FILE, help='plugin configuration file')
    backfill.add_argument('--topdir', help=TOPDIR_HELP)
    backfill.add_argument('--dry-run', action='store_true',
                          help='list what would be logged, send nothing')
    backfill.add_argument('--jobs', type=positive_int, default=2, metavar='N',
                          help='upload N signatures at a time (default: 2)')
    backfill.set_defaults(func=cmd_backfill)

    doctor = sub.add_parser('doctor', help='check this installation: configuration, keys, '
                                           'the log, the topdir, SELinux, the outbox')
    doctor.add_argument('--config', default=defaults.CONFIG_FILE, help='plugin configuration file')
    doctor.add_argument('--topdir', help=TOPDIR_HELP)
    doctor.set_defaults(func=cmd_doctor)

    add_common_options(sub)
    document_commands(parser, sub)
    return parser


def add_common_options(sub):
    """--debug and --json on every subcommand, including those added by
    others, so the contract does not depend on each command remembering.
    SUPPRESS keeps a --debug given before the subcommand."""
    for parser in sub.choices.values():
        for flag, kws in (('--debug', dict(action='store_true', default=argparse.SUPPRESS,
                                           help='log debug messages')),
                          ('--json', dict(action='store_true',
                                          help='print the result as one JSON object'))):
            with contextlib.suppress(argparse.ArgumentError):  # the command has its own
                parser.add_argument(flag, **kws)


def exit_status_of(exc):
    """The command-line contract: 1 when the thing checked failed (a
    verification, a local signature check, Rekor refusing the entry); 2 when
    the command could not run (arguments, files, configuration, a log that
    cannot be reached, anything unexpected)."""
    if isinstance(exc, (UsageError, koji.ConfigurationError, SourceGone, RekorUnavailable,
                        UnsafePath, OSError)):
        return 2
    if isinstance(exc, RekorLogError):
        return 1
    return 2


def error_line(exc):
    """One short line for what stopped a command."""
    if isinstance(exc, ImportError) and SWITCHED:
        return ('cannot import %s as the hub\'s user %s, who cannot read the Python '
                'installation %s: install koji-rekor where that user can read it'
                % (exc.name, SWITCHED[-1], sys.prefix))
    if isinstance(exc, VerificationError):
        return 'verification failed: %s' % exc
    if isinstance(exc, (RekorLogError, UsageError, koji.ConfigurationError)):
        return str(exc)
    if isinstance(exc, OSError) and exc.strerror:
        return '%s: %s' % (exc.filename, exc.strerror) if exc.filename else exc.strerror
    return failure_cause(exc)


class EscapingFormatter(logging.Formatter):
    """Log lines carry names and answers from the topdir and the log: each
    line is escaped (a traceback keeps its line breaks)."""

    def formatMessage(self, record):
        return escape(super().formatMessage(record))


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.json_first:
        args.json = True
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO,
                        format='%(levelname)s: %(message)s')
    for handler in logging.getLogger().handlers:
        handler.setFormatter(EscapingFormatter('%(levelname)s: %(message)s'))
    try:
        switch_for(args)
        return args.func(args)
    except KeyboardInterrupt:
        return 130
    except Exception as e:
        status, line = exit_status_of(e), error_line(e)
        if args.debug and not isinstance(e, (RekorLogError, UsageError,
                                             koji.ConfigurationError)):
            LOG.exception('rekor_log: %s', line)
        print('koji-rekor: %s' % escape(line), file=sys.stderr)
        if getattr(args, 'json', False):
            sys.stdout.write(json.dumps({'error': line, 'exit_status': status}, indent=2,
                                        sort_keys=True) + '\n')
        return status

