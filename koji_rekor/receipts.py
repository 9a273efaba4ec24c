"""Receipts: where they live, how they are named, what they hold."""

import os
import re
from dataclasses import dataclass

from .display import display_url
from .errors import BadRecord
from .rpmsig import nvra_of
from .safefs import logs_dir, parse_json, read_file_at, RECEIPT_DIR
from .verify import VerifiedEntry


# ---------------------------------------------------------------------------
# Receipts
# ---------------------------------------------------------------------------


def receipt_parts(rpminfo, sigkey):
    """(directories under rekor-logs/, file name) of a receipt, from parts
    checked against Koji's naming rules."""
    check_rpm_naming(rpminfo)
    check_sigkey(sigkey)
    return ((rpminfo['name'], rpminfo['version'], rpminfo['release'], rpminfo['arch']),
            '%s.%s.json' % (nvra_of(rpminfo), sigkey))


def receipt_path(topdir, rpminfo, sigkey):
    dirs, name = receipt_parts(rpminfo, sigkey)
    return os.path.join(topdir, RECEIPT_DIR, *dirs, name)


def read_receipt(topdir, rpminfo, sigkey):
    """A receipt as it lies on the shared disk (input, to be verified before
    anything believes it), read without following links; None if absent."""
    dirs, name = receipt_parts(rpminfo, sigkey)
    try:
        with logs_dir(topdir, dirs, create=False) as fd:
            data = read_file_at(fd, name)
    except FileNotFoundError:
        return None
    return parse_json(data, name) if data is not None else None


def make_receipt(settings, nvra, sigkey, sha256, entry_id, entry):
    return {'rekor_url': display_url(settings.url), 'nvra': nvra, 'sigkey': sigkey, 'sha256': sha256,
            'log_entry': {entry_id: entry}}

# Koji's naming rules (koji.check_NVRA, and what rpm allows in a name): a
# part is never empty, never '.' or '..', never holds '/'; version and
# release hold no '-', arch no '.'.
NAME_RE = re.compile(r'^[A-Za-z0-9_+][A-Za-z0-9._+-]*$')

VERSION_RE = re.compile(r'^[A-Za-z0-9_+~^][A-Za-z0-9._+~^]*$')

ARCH_RE = re.compile(r'^[A-Za-z0-9_]+$')

SIGKEY_RE = re.compile(r'^[0-9a-f]{8,40}$')

MAX_PART = 255


def check_rpm_naming(rpminfo):
    if not isinstance(rpminfo, dict):
        raise BadRecord('rpm is not an object')
    for field_name, pattern in (('name', NAME_RE), ('version', VERSION_RE),
                                ('release', VERSION_RE), ('arch', ARCH_RE)):
        value = rpminfo.get(field_name)
        if not isinstance(value, str) or len(value) > MAX_PART or not pattern.match(value):
            raise BadRecord('rpm %s %r is not a valid RPM %s' % (field_name, value, field_name))


def check_sigkey(sigkey):
    if not isinstance(sigkey, str) or not SIGKEY_RE.match(sigkey):
        raise BadRecord('sigkey %r is not lowercase hex' % (sigkey,))


@dataclass
class Outcome:
    receipt: dict
    verified: VerifiedEntry
    created: bool
