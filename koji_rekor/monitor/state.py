"""The monitor's own state: scan positions, acknowledgements."""

import contextlib
import json
import os
import time

from ..errors import RekorLogError, UsageError
from ..safefs import locked_at, logs_dir, parse_json, read_file_at, STATE_DIR, write_file_at
from ..state import state_dir

MONITOR_DIR = 'monitor'

ACKS_FILE = 'acknowledged.json'

SAVE_INTERVAL = 2.0       # seconds between saves of the scan position

SCAN_JOBS = 4             # retrieve requests in flight

MONITOR_PARTS = (STATE_DIR, MONITOR_DIR)


def monitor_home(settings):
    """[monitor] state_dir, created 0700 if missing. Inside, the state is
    laid out as under a topdir (rekor-logs/@state/...), so that the same
    link-refusing readers and writers keep it."""
    home = settings.monitor_state_dir
    try:
        os.makedirs(home, 0o700, exist_ok=True)
    except OSError as e:
        raise UsageError('cannot create the monitor\'s state directory %s ([monitor] '
                         'state_dir): %s' % (home, e.strerror or e))
    return home


def monitor_dir(topdir):
    return os.path.join(state_dir(topdir), MONITOR_DIR)


def read_state_file(topdir, name, check):
    """A monitor state file, read without following links; None if absent."""
    path = os.path.join(monitor_dir(topdir), name)
    try:
        with logs_dir(topdir, MONITOR_PARTS, create=False) as fd:
            data = read_file_at(fd, name)
        data = parse_json(data, path) if data is not None else None
    except FileNotFoundError:
        return None
    except (OSError, RekorLogError) as e:
        raise UsageError('cannot read the monitor state %s: %s'
                         % (path, getattr(e, 'strerror', None) or e))
    if data is not None and not check(data):
        raise UsageError('%s is not a monitor state file (remove it to start over)' % path)
    return data


def write_state_file(topdir, name, data):
    with logs_dir(topdir, MONITOR_PARTS) as fd:
        write_file_at(fd, name, json.dumps(data, indent=1, sort_keys=True).encode())


@contextlib.contextmanager
def state_locked(topdir, name):
    """The monitor's lock on one state file, shared with other hosts."""
    with logs_dir(topdir, MONITOR_PARTS) as fd, \
            locked_at(fd, name, os.path.join(monitor_dir(topdir), name)):
        yield


def valid_scan_state(data):
    return (isinstance(data, dict) and isinstance(data.get('next_index'), int)
            and data['next_index'] >= 0
            and all(isinstance(i, int) for i in data.get('pending', []))
            and isinstance(data.get('findings', {}), dict)
            and all(isinstance(f, dict) and isinstance(f.get('message'), str)
                    for f in data.get('findings', {}).values()))


def valid_acks(data):
    return isinstance(data, dict) and all(
        isinstance(v, dict) and isinstance(v.get('reason'), str) for v in data.values())


def read_acks(topdir):
    return read_state_file(topdir, ACKS_FILE, valid_acks) or {}

# Rekor v2: one scan state per shard (named by its log id), with the last
# checkpoint seen there, and the digest index of the signatures Koji recorded.
# Small functions, so that where the state lives can change in one place.
DIGESTS_FILE = 'v2-digests.json'


def v2_scan_name(log_id):
    return 'v2-%s.json' % log_id.hex()


def valid_v2_scan_state(data):
    return valid_scan_state(data) and isinstance(data.get('checkpoint', ''), str)


def valid_digests(data):
    """{sigkey: {"<rpm id>/<sighash>": [digest, sha256 of the signature,
    sha256 of the DER key, NVRA] or null (a signature no hashedrekord holds)}}"""
    return isinstance(data, dict) and all(
        isinstance(sigs, dict) and all(
            v is None or (isinstance(v, list) and len(v) == 4 and all(isinstance(x, str)
                                                                       for x in v))
            for v in sigs.values())
        for sigs in data.values())


def read_digests(topdir):
    return read_state_file(topdir, DIGESTS_FILE, valid_digests) or {}


def write_digests(topdir, data):
    with state_locked(topdir, DIGESTS_FILE):
        write_state_file(topdir, DIGESTS_FILE, data)


def finding_id(text):
    """An entry's UUID from a UUID or an entry ID (tree ID + UUID)."""
    text = text.strip().lower()
    if len(text) in (64, 80) and all(c in '0123456789abcdef' for c in text):
        return text[-64:]
    raise UsageError('%r is not an entry UUID (64 hex digits) or entry ID (80)' % text)


def acknowledge(topdir, ids, reason, by=None):
    """Record that an admin looked at these findings; kept with who, when, why."""
    if not reason or not reason.strip():
        raise UsageError('--reason TEXT is required: say why the finding is fine')
    ids = [finding_id(i) for i in ids]
    with state_locked(topdir, ACKS_FILE):
        acks = read_acks(topdir)
        for uuid in ids:
            acks[uuid] = {'reason': ' '.join(reason.split()), 'by': by or user_name(),
                          'at': int(time.time())}
        write_state_file(topdir, ACKS_FILE, acks)
    return ids


def user_name():
    import getpass
    try:
        return getpass.getuser()
    except Exception:  # no name for this uid: the time and reason still say enough
        return 'uid %d' % os.getuid()


def ack_command(uuid):
    return "koji-rekor monitor --ack %s --reason 'TEXT'" % uuid
