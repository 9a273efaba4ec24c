# Koji command-line plugin of koji-rekor: `koji rekor-status BUILD|NVRA...`
# prints, for every RPM of each build (or each RPM named), whether each of
# its signatures is in the Rekor log, as the hub's rekor_log plugin reports
# it (the hub call rekorLogStatus). It needs only the koji client.
#
# Install as koji_cli_plugins/rekor_cli.py in Python's site-packages, or in
# ~/.koji/plugins/, or in a directory named by `plugin_paths` in the koji
# client's configuration (or `koji --plugin-paths`).
#
# SPDX-License-Identifier: LGPL-2.1-only

import json
import sys
import time
from optparse import OptionParser

import koji
from koji.plugin import export_cli
from koji_cli.lib import ensure_connection

# Exit 0 when every signature is logged (an RPM without any has nothing to
# log), 1 when one is not, 2 when the command could not check: the
# contract of `koji-rekor`.
GOOD = ('logged', 'unsigned')
COLUMNS = ('nvra', 'sigkey', 'status', 'log_index', 'time', 'detail')
HEADINGS = ('NVRA', 'SIGKEY', 'STATUS', 'LOG INDEX', 'TIME', 'DETAIL')


def find_rpms(session, arg):
    """The RPMs an argument names: an RPM's N-V-R.A, a build's N-V-R or ID,
    or an RPM ID written rpm:ID. None when the hub knows none."""
    if arg.startswith('rpm:'):
        rpminfo = session.getRPM(arg[4:])
        return [rpminfo] if rpminfo else None
    try:
        koji.parse_NVRA(arg)
    except koji.GenericError:
        pass
    else:
        rpminfo = session.getRPM(arg)
        if rpminfo:
            return [rpminfo]
    build = session.getBuild(int(arg) if arg.isdigit() else arg)
    if not build:
        return None
    return sorted(session.listRPMs(buildID=build['id']),
                  key=lambda r: (r['name'], r['arch']))


def detail_of(status):
    if status['status'] == 'logged':
        return 'entry %s' % status.get('entry_id')
    if status['status'] == 'queued':
        detail = 'attempts %s' % status.get('attempts', '?')
        if not status.get('committed', True):
            detail += ', not yet committed'
        if status.get('last_error'):
            detail += ', last error: %s' % status['last_error']
        return detail
    return status.get('reason') or ''


def row_of(status):
    when = status.get('integrated_time') or status.get('time')
    return {'nvra': status['nvra'], 'sigkey': status['sigkey'], 'status': status['status'],
            'log_index': '' if status.get('log_index') is None else str(status['log_index']),
            'time': time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(when)) if when else '',
            'detail': detail_of(status)}


def print_table(rows):
    widths = [max([len(h)] + [len(r[c]) for r in rows]) for c, h in zip(COLUMNS, HEADINGS)]
    for values in [HEADINGS] + [tuple(r[c] for c in COLUMNS) for r in rows]:
        print('  '.join(v.ljust(w) for v, w in zip(values[:-1], widths)) + '  ' + values[-1])


@export_cli
def anon_handle_rekor_status(goptions, session, args):
    "[info] Show whether the signatures of builds or RPMs are in the Rekor log"
    usage = 'usage: %prog rekor-status [options] BUILD|NVRA|rpm:ID [...]'
    parser = OptionParser(usage=usage)
    parser.add_option('--json', action='store_true', help='print the statuses as JSON')
    options, args = parser.parse_args(args)
    if not args:
        parser.error('name at least one build or RPM')
    ensure_connection(session, goptions)
    rpms, missing = [], []
    for arg in args:
        found = find_rpms(session, arg)
        if found is None:
            missing.append(arg)
        rpms += found or []
    try:
        with session.multicall(strict=True) as m:
            calls = [m.rekorLogStatus(rpminfo['id']) for rpminfo in rpms]
    except koji.GenericError as e:
        print('rekor-status: the hub did not answer rekorLogStatus (is its rekor_log plugin '
              'enabled?): %s' % e, file=sys.stderr)
        return 2
    statuses = []
    for rpminfo, call in zip(rpms, calls):
        statuses += call.result or [{
            'rpm_id': rpminfo['id'], 'sigkey': '', 'status': 'unsigned',
            'nvra': '%(name)s-%(version)s-%(release)s.%(arch)s' % rpminfo,
            'reason': 'no signature to log'}]
    if options.json:
        print(json.dumps(statuses, indent=2, sort_keys=True))
    elif statuses:
        print_table([row_of(s) for s in statuses])
    for arg in missing:
        print('rekor-status: no such build or RPM: %s' % arg, file=sys.stderr)
    if any(s['status'] not in GOOD for s in statuses):
        return 1
    return 2 if missing else 0
