"""The monitor's watchlist and our keys."""

import os
from dataclasses import dataclass, field

from ..errors import RekorLogError, SignatureSourceError, UsageError
from ..openpgp import openpgp_fingerprints
from ..rpmsig import read_public_key


# ---------------------------------------------------------------------------
# Watching the log: koji-rekor monitor
#
# For cron or a timer, two questions answered from what the log signs: has
# each tree of the log only grown since the tree heads seen before (by the
# plugin or an earlier run)? And does the log hold entries made with our
# signing keys that this Koji did not make? What could not be checked is
# reported as such, never taken for good news.
# ---------------------------------------------------------------------------

# The watchlist is shaped after rekor-monitor's: monitoredValues holding
# lists; these are the ones that mean something for OpenPGP-signed RPMs.
WATCHLIST_TOP = 'monitoredValues'

WATCHLIST_LISTS = ('fingerprints', 'keys', 'subjects')

YAML_NULL = 'tag:yaml.org,2002:null'


@dataclass
class Watchlist:
    fingerprints: list = field(default_factory=list)  # 40 upper-case hex digits each
    keys: list = field(default_factory=list)          # paths of armored public keys
    subjects: list = field(default_factory=list)      # e-mail addresses in user IDs


def read_watchlist(path):
    """Read and check a watchlist; a fault is a UsageError naming its line.

    PyYAML's safe loader composes the file into nodes, which are read
    directly: they know their line, and a fingerprint stays the text it
    was written as (constructed, 0123... would be an octal number).
    """
    try:
        import yaml  # only a watchlist needs it
    except ImportError:
        raise UsageError('reading a watchlist needs PyYAML (python3-pyyaml)')
    try:
        with open(path, 'rb') as fo:
            root = yaml.compose(fo.read(), Loader=yaml.SafeLoader)
    except OSError as e:
        raise UsageError('cannot read watchlist %s: %s' % (path, e.strerror))
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        raise UsageError('%s: line %s: not valid YAML: %s' % (
            path, mark.line + 1 if mark else '?', e.problem or e.context))
    except yaml.YAMLError as e:
        raise UsageError('%s: not valid YAML: %s' % (path, ' '.join(str(e).split())))
    watchlist = Watchlist()
    for _, values in yaml_mapping(root, path, 'the watchlist', (WATCHLIST_TOP,)):
        for name, items in yaml_mapping(values, path, WATCHLIST_TOP, WATCHLIST_LISTS):
            for item in yaml_sequence(items, path, name):
                if name == 'fingerprints':
                    watchlist.fingerprints.append(watchlist_fingerprint(item, path))
                elif name == 'subjects':
                    watchlist.subjects.append(watchlist_subject(item, path))
                else:
                    watchlist.keys.append(watchlist_key_file(item, path))
    return watchlist


def watchlist_error(path, node, message):
    return UsageError('%s: line %d: %s' % (path, node.start_mark.line + 1, message))


def yaml_mapping(node, path, what, known):
    """(key, value node) of a mapping node with only known keys; an empty
    value is an empty mapping."""
    import yaml
    if node is None or node.tag == YAML_NULL:
        return []
    if not isinstance(node, yaml.MappingNode):
        raise watchlist_error(path, node, '%s must be a mapping' % what)
    pairs = []
    for key, value in node.value:
        if not isinstance(key, yaml.ScalarNode) or key.value not in known:
            raise watchlist_error(path, key, 'unknown key %r in %s (known: %s)' % (
                getattr(key, 'value', key.tag), what, ', '.join(known)))
        pairs.append((key.value, value))
    return pairs


def yaml_sequence(node, path, what):
    """The scalar nodes of a list; an empty value is an empty list."""
    import yaml
    if node.tag == YAML_NULL:
        return []
    if not isinstance(node, yaml.SequenceNode):
        raise watchlist_error(path, node, '%s must be a list' % what)
    for item in node.value:
        if not isinstance(item, yaml.ScalarNode) or not item.value.strip():
            raise watchlist_error(path, item, 'each item of %s must be text' % what)
    return node.value


def watchlist_fingerprint(node, path):
    """A v4 fingerprint as GnuPG prints it (groups of four, any case, an
    optional 0x) as 40 upper-case hex digits."""
    text = ''.join(node.value.split())
    if text[:2].lower() == '0x':
        text = text[2:]
    try:
        if len(text) != 40:
            raise ValueError
        bytes.fromhex(text)
    except ValueError:
        raise watchlist_error(path, node, 'fingerprint %r is not 40 hex digits (the fingerprint '
                              'of a version 4 OpenPGP key)' % node.value)
    return text.upper()


def watchlist_subject(node, path):
    """An e-mail address, as user IDs carry them ("Name <address>")."""
    text = node.value.strip()
    if text.count('@') != 1 or any(c in text for c in ' <>') or text.startswith('@') \
            or text.endswith('@'):
        raise watchlist_error(path, node, 'subject %r is not an e-mail address' % node.value)
    return text.lower()


def watchlist_key_file(node, path):
    """A key file, relative to the watchlist's directory unless absolute."""
    key_path = os.path.join(os.path.dirname(os.path.abspath(path)), node.value)
    if not os.path.isfile(key_path):
        raise watchlist_error(path, node, 'no such key file: %s' % key_path)
    return key_path


@dataclass
class OurKeys:
    """What identifies our signing keys in an entry, whatever encoding,
    user IDs or signatures travel with them (as rekor-monitor matches):
    the v4 fingerprints of primary keys and subkeys, and the watchlist's
    subjects (e-mail addresses in user IDs)."""
    fingerprints: dict = field(default_factory=dict)  # fingerprint -> where it comes from
    subjects: set = field(default_factory=set)
    files: list = field(default_factory=list)         # key files, for --history
    der: dict = field(default_factory=dict)           # DER SubjectPublicKeyInfo -> (sigkey, file)

    def name(self, fingerprint):
        return '%s (%s)' % (fingerprint[-8:].lower(), self.fingerprints[fingerprint])


def our_keys(settings, watchlist, report):
    """Each *.asc of public_key_dir, public_key_path, the watchlist's key
    files and fingerprints, and its subjects."""
    import glob
    paths = []
    if settings.public_key_dir:
        paths += sorted(glob.glob(os.path.join(glob.escape(settings.public_key_dir), '*.asc')))
    if settings.public_key_path:
        paths.append(settings.public_key_path)
    keys = OurKeys(subjects={s.lower() for s in watchlist.subjects})
    for path in paths + watchlist.keys:
        try:
            armored = read_public_key(path)
        except SignatureSourceError as e:
            report.not_checked(str(e))
            continue
        fingerprints = openpgp_fingerprints(armored)
        if not fingerprints:
            report.not_checked('%s holds no version 4 OpenPGP public key' % path)
            continue
        keys.files.append((path, armored))
        for fingerprint in fingerprints:
            keys.fingerprints.setdefault(fingerprint, os.path.basename(path))
        try:
            for der, sigkey in der_public_keys(armored):
                keys.der.setdefault(der, (sigkey, os.path.basename(path)))
        except ImportError as e:   # an installation without the Rekor v2 modules
            report.not_checked('entries naming our key %s as DER or PEM (hashedrekord, dsse): '
                               '%s' % (path, e))
    for fingerprint in watchlist.fingerprints:
        keys.fingerprints.setdefault(fingerprint, 'watchlist')
    report.keys = [{'fingerprint': fp, 'from': source}
                   for fp, source in sorted(keys.fingerprints.items())]
    report.watchlist = sorted(keys.subjects)
    return keys


def der_public_keys(armored):
    """(DER SubjectPublicKeyInfo, sigkey) of each RSA, ECDSA and Ed25519
    key and subkey of an OpenPGP key: the form hashedrekord (v1: PEM of it)
    and Rekor v2 entries carry a key in, so that an entry made with our key
    outside OpenPGP is still known as ours."""
    from ..v2 import hashedrekord
    found = []
    for packet in hashedrekord.key_packets(armored):
        sigkey = packet.key_id[-8:].lower()
        try:
            der, _ = hashedrekord.der_public_key(packet)
        except hashedrekord.NotLoggableInV2:
            der = ed25519_der(packet)   # v2 cannot take it in a hashedrekord, dsse can
        except RekorLogError:
            der = None
        if der:
            found.append((der, sigkey))
    return found

# RFC 8410: Ed25519's OpenPGP curve OID (RFC 4880bis 9.2) and the prefix of a
# 32-byte key's DER SubjectPublicKeyInfo.
ED25519_OID = bytes.fromhex('2b06010401da470f01')

ED25519_SPKI = bytes.fromhex('302a300506032b6570032100')


def ed25519_der(packet):
    """The DER key of an OpenPGP EdDSA (legacy, algorithm 22) Ed25519 key
    packet: the MPI holds 0x40 and the 32-byte point; None for anything else."""
    body = packet.body
    if packet.version != 4 or packet.algorithm != 22 or len(body) < 7:
        return None
    size = body[6]
    oid, rest = bytes(body[7:7 + size]), bytes(body[7 + size:])
    if oid != ED25519_OID or len(rest) != 2 + 33 or rest[2] != 0x40:
        return None
    return ED25519_SPKI + rest[3:]
