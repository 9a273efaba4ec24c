"""The monitor's report, its findings and the notify command."""

import json
from dataclasses import dataclass, field

from .. import LOG
from .state import ack_command
from ..progress import Progress


@dataclass
class Report:
    """What the monitor checked and found. Exit status: 1 on findings not
    yet acknowledged, else 2 if something could not be checked, else 0."""
    url: str
    topdir: str
    progress: Progress
    log_id: str = None
    log_key: str = None  # where the log's key came from
    trees: list = field(default_factory=list)
    scan: dict = field(default_factory=dict)
    history: dict = None
    keys: list = field(default_factory=list)
    watchlist: list = field(default_factory=list)
    findings: list = field(default_factory=list)
    unchecked: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    acknowledged: int = 0

    def finding(self, kind, message, finding_id=None):
        """A finding; with an ID (an entry's UUID) it is kept until acknowledged."""
        self.findings.append({'id': finding_id, 'kind': kind, 'message': message, 'new': True})
        self.progress.clear()
        LOG.error('rekor_log: finding: %s', message)

    def not_checked(self, message):
        self.unchecked.append(message)
        self.progress.clear()
        LOG.warning('rekor_log: not checked: %s', message)

    def note(self, message):
        self.notes.append(message)

    @property
    def status(self):
        return 1 if self.findings else 2 if self.unchecked else 0

    def as_json(self):
        return {'rekor_url': self.url, 'log_id': self.log_id, 'log_key': self.log_key,
                'topdir': self.topdir,
                'trees': self.trees, 'scan': self.scan, 'history': self.history,
                'keys': self.keys, 'subjects': self.watchlist, 'findings': self.findings,
                'acknowledged': self.acknowledged, 'not_checked': self.unchecked,
                'notes': self.notes, 'exit_status': self.status}


def collect_findings(report, scan, acks):
    """Every finding kept and not acknowledged is in every run's report."""
    new = {f['id'] for f in report.findings if f['id']}
    report.findings = [f for f in report.findings if not f['id'] or f['id'] not in acks]
    for uuid, kept in sorted(scan.data['findings'].items()):
        if uuid in acks:
            report.acknowledged += 1
        elif uuid not in new:
            report.findings.append({'id': uuid, 'kind': kept.get('kind'), 'message':
                                    kept['message'], 'new': False,
                                    'first_seen': kept.get('first_seen')})
    for finding in report.findings:
        if finding['id']:
            finding['acknowledge'] = ack_command(finding['id'])


def flag(view, scan, verified, kind, message):
    view.report.finding(kind, message, verified.uuid)
    scan.keep_finding(verified.uuid, kind, message)

NOTIFY_TIMEOUT = 120


def notify(settings, report):
    """[monitor] notify_command, with the JSON report on its standard input."""
    import shlex
    import subprocess
    command = shlex.split(settings.notify_command)
    try:
        done = subprocess.run(command, input=json.dumps(report.as_json(), indent=2).encode(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              timeout=NOTIFY_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        problem = str(e)
    else:
        if done.returncode == 0:
            return
        problem = 'exit status %d: %s' % (done.returncode,
                                          ' '.join(done.stderr.decode('utf-8', 'replace')
                                                   .split())[:300])
    report.not_checked('[monitor] notify_command %r failed (%s): nobody was told of the '
                       'findings' % (settings.notify_command, problem))

TREE_STATUS = {'first seen': 'first seen', 'unchanged': 'unchanged since seen before',
               'grew': 'grew from size %(size_before)s, proved consistent',
               'shrank': 'SHRANK from size %(size_before)s',
               'inconsistent': 'NOT consistent with the tree head seen before',
               'older': 'older than size %(size_before)s seen before, proved consistent with '
                        'it (a cached checkpoint?)',
               'not checked': 'NOT CHECKED: the log did not prove it consistent this run'}


def format_report(report):
    lines = ['Rekor log %s (logID %s%s)' % (report.url, report.log_id or 'unknown',
                                            '; log key: %s' % report.log_key
                                            if report.log_key else '')]
    for tree in report.trees:
        lines.append('  tree %s (%s): size %d, root %s: %s' % (
            tree['tree_id'], 'active' if tree['active'] else 'inactive', tree['size'],
            tree['root_hash'], TREE_STATUS[tree['status']] % tree))
    lines.append('Keys: %d fingerprints (primary keys and subkeys)%s' % (
        len(report.keys), ', subjects %s' % ', '.join(report.watchlist)
        if report.watchlist else ''))
    for name, part in (('Scan', report.scan), ('History (best-effort)', report.history)):
        if part:
            counts = part['counts']
            span = ('log indexes %d to %d' % (part['from'], part['to'] - 1)
                    if 'from' in part and part['to'] > part['from'] else
                    'nothing new' if 'from' in part else
                    '%d entries listed, before log index %d' % (part['listed'], part['before']))
            lines.append('%s: %s: read %d, made with our keys %d, accounted for by Koji %d'
                         % (name, span, counts['read'], counts['ours'], counts['accounted']))
    if report.acknowledged:
        lines.append('Acknowledged findings: %d' % report.acknowledged)
    for title, items in (('Notes', report.notes), ('Not checked', report.unchecked)):
        if items:
            lines.append('%s:' % title)
            lines += ['  - %s' % item for item in items]
    if report.findings:
        lines.append('FINDINGS:')
    for finding in report.findings:
        lines.append('  - [%s%s] %s' % (finding['kind'], '' if finding.get('new', True)
                                        else ', reported before', finding['message']))
        if finding.get('acknowledge'):
            lines.append('    acknowledge: %s' % finding['acknowledge'])
    if report.findings:
        result = '%d finding%s' % (len(report.findings), 's' if len(report.findings) > 1 else '')
    elif report.unchecked:
        result = 'nothing found, but not everything could be checked'
    else:
        result = 'OK, nothing found'
    lines.append('Result: %s (exit %d)' % (result, report.status))
    return '\n'.join(lines) + '\n'
