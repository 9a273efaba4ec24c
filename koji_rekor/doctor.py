"""koji-rekor doctor: checking an installation."""

import os
from dataclasses import dataclass, field

import koji

from . import config as defaults
from .checkpoint import verify_checkpoint
from .config import load_config, Settings
from .display import format_age, utc
from .doctor_v2 import check_v2_log, check_v2_signing_keys
from .errors import failure_cause, RekorLogError, SignatureSourceError, VerificationError
from .logkey import load_log_key, log_key_id, LogKeys
from .openpgp import (
    binding_can_sign,
    dearmor,
    strict_packets,
    OPENPGP_PUBLIC_KEY,
    OPENPGP_PUBLIC_SUBKEY,
    OPENPGP_SIGNATURE,
    v4_short_id,
)
from .outbox import COMMITTED, outbox_dir, REJECTED_FOLDER, ROLLED_BACK_FOLDER, UNCOMMITTED
from .privileges import unreadable_by
from .rekor import make_client
from .rekor.models import TreeHead
from .rpmsig import read_public_key
from .safefs import RECEIPT_DIR
from .state import behind_reason, known_log_key, read_behind, read_outage, state_dir
from .worker import age


# ---------------------------------------------------------------------------
# Checking an installation: koji-rekor doctor
#
# Each check is one line: ok, warn (worth a look, not broken), FAIL (the hub
# would fail or lose something), or skip (could not be checked because an
# earlier check failed). Nothing is written anywhere.
# ---------------------------------------------------------------------------


@dataclass
class Checkup:
    checks: list = field(default_factory=list)

    def add(self, status, check, detail):
        self.checks.append({'status': status, 'check': check, 'detail': detail})

    @property
    def status(self):
        """1 when a check FAILs; warnings and skips alone are 0 (2, doctor
        could not run, is main's, for what stops it before any check)."""
        return 1 if any(c['status'] == 'fail' for c in self.checks) else 0

    def failed(self, check):
        return any(c['check'] == check and c['status'] == 'fail' for c in self.checks)

    def text(self):
        return ''.join('%-4s %s: %s\n' % ('FAIL' if c['status'] == 'fail' else c['status'],
                                           c['check'], c['detail']) for c in self.checks)


def run_doctor(config_file, topdir=None):
    """Every check of an installation, in the order a signature needs them.
    topdir: --topdir, or None for the hub's KojiDir (or Koji's default)."""
    checkup = Checkup()
    hub = read_hub_config()
    try:
        settings = load_config(config_file)
    except koji.ConfigurationError as e:
        checkup.add('fail', 'configuration', str(e))  # names the file and the option
        settings = None
        hub_user = configured_hub_user(config_file)
    else:
        hub_user = settings.hub_user
        hidden = unreadable_by(hub_user, config_file)
        if hidden:
            checkup.add('fail', 'configuration', '%s: %s, so the hub fails every signature '
                        'import on it' % (config_file, hidden))
        else:
            checkup.add('ok', 'configuration', '%s (log %s, %s)' % (
                config_file, settings.url, 'queue_only' if settings.queue_only else
                'enforce' if settings.enforce else 'upload after commit'))
    check_hub_config(checkup, hub, hub_user)
    if settings is None:
        for check in ('signing keys', 'log', 'selinux'):
            checkup.add('skip', check, 'needs a configuration the hub accepts')
    if topdir is None:
        topdir, why = hub['topdir'], hub['topdir_why']
    else:
        why = '--topdir'
    check_topdir(checkup, hub_user, topdir, why)
    if settings is not None:
        check_signing_keys(checkup, settings)
        if settings.api == 2:
            check_v2_signing_keys(checkup, settings)
            check_v2_log(checkup, settings)
        else:
            check_log(checkup, settings, None if checkup.failed('topdir') else topdir)
        check_selinux(checkup, settings)
    if checkup.failed('topdir'):
        for check in ('rekor-logs', 'outbox'):
            checkup.add('skip', check, 'needs the topdir')
        return checkup, topdir
    check_receipt_dir(checkup, hub_user, topdir)
    if checkup.failed('rekor-logs'):
        checkup.add('skip', 'outbox', 'needs rekor-logs/')
    else:
        summarise_outbox(checkup, topdir)
    return checkup, topdir


def configured_hub_user(path):
    """[upload] hub_user as a file the hub refuses still says it: the
    checks of who can read what then ask about the right user."""
    from .config import parse_config_file
    try:
        value = parse_config_file(path).get('upload', 'hub_user', fallback='')
    except Exception:  # any file doctor already reported as broken
        value = ''
    return value.strip() or Settings.hub_user

# The hub's own defaults (kojixmlrpc.load_config).
HUB_PLUGIN_PATH = '/usr/lib/koji-hub-plugins'


def read_hub_config():
    """What hub.conf (and hub.conf.d/*.conf) says that matters here, and
    the files read: {'files', 'error', 'options', 'topdir', 'topdir_why'}."""
    import glob
    files = sorted(glob.glob(os.path.join(defaults.HUB_CONFIG_DIR, '*.conf')))
    hub = {'files': [], 'error': None, 'options': None}
    if os.path.exists(defaults.HUB_CONFIG_FILE):
        files.append(defaults.HUB_CONFIG_FILE)
    unreadable = [f for f in files if not os.access(f, os.R_OK)]
    if unreadable:  # configparser would skip it silently
        hub['error'] = '%s: cannot read it' % ', '.join(unreadable)
    elif files:
        try:
            parser = koji.read_config_files([defaults.HUB_CONFIG_DIR, (defaults.HUB_CONFIG_FILE, False)],
                                            raw=True)
        except Exception as e:  # not an ini file
            hub['error'] = '%s: %s' % (', '.join(files), failure_cause(e))
        else:
            hub['files'] = files
            hub['options'] = {k: parser.get('hub', k) for k in ('KojiDir', 'Plugins',
                                                                'PluginPath')
                              if parser.has_option('hub', k)}
    options = hub['options'] or {}
    if options.get('KojiDir'):
        hub['topdir'] = options['KojiDir']
        hub['topdir_why'] = 'KojiDir in %s' % kojidir_file(files)
    else:
        hub['topdir'] = defaults.DEFAULT_TOPDIR
        hub['topdir_why'] = "Koji's default: %s" % (
            'no KojiDir in %s' % ', '.join(files) if hub['options'] is not None else
            '%s cannot be read' % defaults.HUB_CONFIG_FILE if hub['error'] else
            '%s does not exist' % defaults.HUB_CONFIG_FILE)
    return hub


def kojidir_file(files):
    """The file whose KojiDir the hub uses: the last that sets it."""
    import configparser
    for path in reversed(files):
        parser = configparser.RawConfigParser()
        try:
            parser.read(path)
        except configparser.Error:
            continue
        if parser.has_option('hub', 'KojiDir'):
            return path
    return ', '.join(files)


def check_hub_config(checkup, hub, hub_user):
    """hub.conf must load the plugin (Plugins) from a directory (PluginPath)
    where the hub's user can read rekor_log.py."""
    if hub['error']:
        checkup.add('fail', 'hub.conf', hub['error'])
        checkup.add('skip', 'plugin', 'needs a readable hub.conf')
        return
    if hub['options'] is None:
        checkup.add('warn', 'hub.conf', '%s does not exist: not a hub host? Plugins and '
                    'PluginPath not checked' % defaults.HUB_CONFIG_FILE)
        checkup.add('skip', 'plugin', 'needs hub.conf')
        return
    read = ', '.join(hub['files'])
    plugins = hub['options'].get('Plugins', '').split()
    if 'rekor_log' not in plugins:
        checkup.add('fail', 'hub.conf', '%s: Plugins = %s does not include rekor_log: the hub '
                    'never loads the plugin; add rekor_log to Plugins' % (
                        read, ' '.join(plugins) or '(empty)'))
    else:
        checkup.add('ok', 'hub.conf', '%s: Plugins includes rekor_log' % read)
    path = hub['options'].get('PluginPath', HUB_PLUGIN_PATH)
    where = [os.path.join(d, 'rekor_log.py') for d in path.split(':') if d]
    found = [f for f in where if os.path.isfile(f)]
    if not found:
        checkup.add('fail', 'plugin', 'no rekor_log.py in PluginPath %s%s: copy it there' % (
            path, '' if 'PluginPath' in hub['options'] else " (Koji's default)"))
        return
    hidden = unreadable_by(hub_user, found[0])
    if hidden:
        checkup.add('fail', 'plugin', '%s: %s, so the hub cannot load it' % (found[0], hidden))
    else:
        checkup.add('ok', 'plugin', found[0])


def check_topdir(checkup, hub_user, topdir, why):
    """The topdir must be a directory the hub's user can enter: without it
    no signature reaches the outbox."""
    import stat
    try:
        info = os.stat(topdir)
    except FileNotFoundError:
        checkup.add('fail', 'topdir', '%s (%s) does not exist: mount it, or give --topdir / '
                    'set KojiDir' % (topdir, why))
        return
    except OSError as e:
        checkup.add('fail', 'topdir', '%s (%s): cannot read it: %s' % (topdir, why, e.strerror))
        return
    if not stat.S_ISDIR(info.st_mode):
        checkup.add('fail', 'topdir', '%s (%s) is not a directory' % (topdir, why))
        return
    hidden = unreadable_by(hub_user, topdir)
    if hidden:
        checkup.add('fail', 'topdir', '%s (%s): %s' % (topdir, why, hidden))
    else:
        checkup.add('ok', 'topdir', '%s (%s)' % (topdir, why))


def key_file_problem(path, data):
    """Why the plugin cannot use this key file, or None; and the short IDs
    that may name it (the primary key's and each signing subkey's)."""
    packets = None
    binary = dearmor(data)
    if binary is not None:
        try:
            packets = strict_packets(binary)
        except (ValueError, IndexError) as e:
            return 'not a readable OpenPGP key: %s' % e, set()
    if not packets:
        return 'not an ASCII-armored OpenPGP public key', set()
    primaries = [body for tag, body in packets if tag == OPENPGP_PUBLIC_KEY]
    if len(primaries) != 1:
        return 'holds %d primary keys, not one' % len(primaries), set()
    ids = {v4_short_id(primaries[0])} - {None}
    for number, (tag, body) in enumerate(packets):
        if tag == OPENPGP_PUBLIC_SUBKEY and v4_short_id(body):
            bindings = [b for t, b in packets[number + 1:number + 2] if t == OPENPGP_SIGNATURE]
            if bindings and binding_can_sign(bindings[0]):
                ids.add(v4_short_id(body))
    if not ids:
        return 'not a version 4 key, whose short ID Koji would name', set()
    import rpm
    try:
        rpm.pubkey(data)
    except (ValueError, TypeError, rpm.error) as e:
        return 'rpm cannot use it: %s' % e, ids
    return None, ids


def check_signing_keys(checkup, settings):
    """Every file of public_key_dir, and public_key_path, as the plugin will
    read them: <sigkey>.asc, one primary key, named by its short ID or a
    signing subkey's."""
    found = False
    directory = settings.public_key_dir
    for name in sorted(os.listdir(directory)) if directory else []:
        path = os.path.join(directory, name)
        if name.startswith('.') or not os.path.isfile(path):
            continue
        found = True
        check = 'key %s' % path
        if not name.endswith('.asc'):
            checkup.add('warn', check, 'never read: the plugin reads only <sigkey>.asc')
            continue
        try:
            data = read_public_key(path)
        except SignatureSourceError as e:
            checkup.add('fail', check, str(e))
            continue
        problem, ids = key_file_problem(path, data)
        problem = problem or unreadable_by(settings.hub_user, path)
        stem = name[:-len('.asc')]
        if problem:
            checkup.add('fail', check, problem)
        elif stem not in ids:
            checkup.add('fail', check, 'named %s, but signatures by this key have sigkey %s: '
                        'rename it to %s' % (name, ' or '.join(sorted(ids)),
                                             ' or '.join('%s.asc' % i for i in sorted(ids))))
        else:
            checkup.add('ok', check, 'sigkey %s' % stem)
    if settings.public_key_path:
        found = True
        check = 'key %s' % settings.public_key_path
        try:
            problem, ids = key_file_problem(settings.public_key_path,
                                            read_public_key(settings.public_key_path))
        except SignatureSourceError as e:
            problem, ids = str(e), set()
        problem = problem or unreadable_by(settings.hub_user, settings.public_key_path)
        checkup.add('fail' if problem else 'ok', check, problem or
                    'public_key_path, for every sigkey without its own file (this one signs '
                    'as %s)' % ' or '.join(sorted(ids)))
    if not found:
        checkup.add('fail', 'signing keys', 'no public keys (%s): every signature would fail'
                    % ('%s is empty' % directory if directory else
                       'set [signing] public_key_dir'))


# --- the log --------------------------------------------------------------

def trusted_log_key(settings, topdir):
    """(key, where) the plugin would trust without asking the log: the
    configured key, the shipped one for the public instance, or one pinned
    before (resolve_log_key's order); (None, None) before the first use."""
    key, pinned = known_log_key(settings, state_dir(topdir) if topdir else None)
    if key is None:
        return None, None
    return key, pinned or settings.log_public_key or 'the key built into koji-rekor'


def check_log(checkup, settings, topdir):
    """Reach the log; its key must be the trusted one and its signed tree
    head must verify with it. One attempt per request: an admin waits for
    the answer, and reruns the check."""
    for option in ('log_public_key', 'ca_bundle'):
        path = getattr(settings, option)
        hidden = path and unreadable_by(settings.hub_user, path)
        if hidden:
            checkup.add('fail', 'log', '[rekor] %s %s: %s: every upload would fail' % (
                option, path, hidden))
            return
    client = make_client(settings, retries=0)
    try:
        served = load_log_key(client.log_public_key())
        trusted, where = trusted_log_key(settings, topdir)
        if trusted is None and not (settings.trust_on_first_use or settings.legacy):
            # resolve_log_key refuses every upload then.
            checkup.add('fail', 'log', '%s: no log key configured or pinned, and '
                        'trust_on_first_use is off: every upload would fail; set [rekor] '
                        'log_public_key to the key it serves (logID %s; koji-rekor log-key '
                        'prints it)' % (settings.url, log_key_id(served).hex()))
            return
        if trusted is None:
            checkup.add('warn', 'log', '%s: no log key configured or pinned; the first upload '
                        'will trust logID %s: set [rekor] log_public_key'
                        % (settings.url, log_key_id(served).hex()))
            trusted = served
        elif log_key_id(served) not in [log_key_id(one) for one in (
                trusted if isinstance(trusted, LogKeys) else [trusted])]:
            checkup.add('fail', 'log', '%s serves log key %s, not the trusted %s (%s)' % (
                settings.url, log_key_id(served).hex(), log_key_id(trusted).hex(), where))
            return
        tree_id, note = TreeHead.from_log_info(client.log_info())
        checkpoint = verify_checkpoint(note, trusted, settings.origin_host, tree_id)
        checkup.add('ok', 'log', '%s: signed tree head of tree %d at size %d verifies with '
                    'logID %s' % (settings.url, tree_id, checkpoint.size,
                                  log_key_id(trusted).hex()))
        outage = read_outage(settings, topdir) if topdir else None
        if outage and outage.closed:
            checkup.add('fail', 'log', '%s no longer takes entries (since %s: %s): set '
                        '[rekor] url to a log that does; the outbox keeps every signature '
                        'meanwhile' % (settings.url, utc(outage.since), outage.last_error))
        behind = read_behind(settings, topdir) if topdir else None
        if behind and behind.not_checked:
            checkup.add('warn', 'log', '%s: %s' % (settings.url, behind_reason(behind)))
    except VerificationError as e:
        checkup.add('fail', 'log', '%s: its signed tree head does not verify: %s'
                    % (settings.url, e))
    except RekorLogError as e:
        checkup.add('fail', 'log', str(e))
    finally:
        client.close()


def check_selinux(checkup, settings):
    """httpd may open network connections only with httpd_can_network_connect."""
    import shutil
    import subprocess
    if settings.queue_only:
        checkup.add('ok', 'selinux', 'queue_only: httpd does not reach the log, the worker does')
        return
    getsebool = shutil.which('getsebool')
    if not getsebool:
        checkup.add('ok', 'selinux', 'no getsebool: SELinux is not in the way')
        return
    try:
        done = subprocess.run([getsebool, 'httpd_can_network_connect'], capture_output=True,
                              text=True, timeout=10, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as e:
        checkup.add('skip', 'selinux', 'getsebool failed: %s' % e)
        return
    answer = ' '.join((done.stdout + done.stderr).split())
    if 'disabled' in answer:
        checkup.add('ok', 'selinux', 'SELinux is disabled')
    elif answer.endswith('--> on'):
        checkup.add('ok', 'selinux', 'httpd_can_network_connect is on')
    elif answer.endswith('--> off'):
        checkup.add('fail', 'selinux', 'httpd_can_network_connect is off: SELinux stops httpd '
                    'reaching %s; setsebool -P httpd_can_network_connect 1' % settings.url)
    else:
        checkup.add('skip', 'selinux', 'getsebool answered %r' % answer)


# --- the topdir ----------------------------------------------------------

def check_receipt_dir(checkup, hub_user, topdir):
    """rekor-logs/ must exist and belong to the user httpd runs as, which
    writes the outbox, receipts and state there."""
    import pwd
    path = os.path.join(topdir, RECEIPT_DIR)
    try:
        user = pwd.getpwnam(hub_user)
    except KeyError:
        checkup.add('fail', 'rekor-logs', 'no user %s on this host ([upload] hub_user)' % hub_user)
        return
    try:
        info = os.stat(path)
    except FileNotFoundError as e:
        checkup.add('fail', 'rekor-logs', '%s: %s; create it: mkdir -p %s && chown %s: %s' % (
            path, e.strerror, path, hub_user, path))
        return
    except OSError as e:
        checkup.add('fail', 'rekor-logs', '%s: cannot read it: %s' % (path, e.strerror))
        return
    import stat
    if not stat.S_ISDIR(info.st_mode):
        checkup.add('fail', 'rekor-logs', '%s is not a directory' % path)
    elif info.st_uid != user.pw_uid:
        try:
            owner = pwd.getpwuid(info.st_uid).pw_name
        except KeyError:
            owner = 'uid %d' % info.st_uid
        checkup.add('fail', 'rekor-logs', '%s belongs to %s, not the hub user %s: chown -R %s: %s'
                    % (path, owner, hub_user, hub_user, path))
    elif not info.st_mode & stat.S_IWUSR:
        checkup.add('fail', 'rekor-logs', '%s is not writable by its owner %s' % (path, hub_user))
    else:
        checkup.add('ok', 'rekor-logs', '%s belongs to %s' % (path, hub_user))


def summarise_outbox(checkup, topdir):
    """How many records wait, the oldest, and those set aside; by their
    file names and times only, so a corrupt record cannot stop the check."""
    outbox = outbox_dir(topdir)
    if not os.path.isdir(outbox):
        checkup.add('ok', 'outbox', 'empty (%s does not exist yet)' % outbox)
        return

    def records(directory):
        try:
            return [os.path.join(directory, n) for n in os.listdir(directory)
                    if n.endswith((COMMITTED, UNCOMMITTED)) and not n.startswith('.')]
        except OSError:
            return []
    queued = records(outbox)
    aside = {folder: len(records(os.path.join(outbox, folder)))
             for folder in (REJECTED_FOLDER, ROLLED_BACK_FOLDER)}
    parts = ['%d queued' % len(queued)]
    ages = [age(path) for path in queued]
    if ages:
        parts[0] += ' (oldest %s)' % format_age(max(ages))
    parts += ['%d in %s/' % (n, folder) for folder, n in aside.items() if n]
    detail = '%s: %s' % (outbox, ', '.join(parts))
    if aside[REJECTED_FOLDER]:
        checkup.add('warn', 'outbox', detail + '; look at rejected/, move each record back '
                    'once fixed')
    else:
        checkup.add('ok', 'outbox', detail)
