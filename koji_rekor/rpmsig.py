"""The signed RPM: finding it, its signature header, the key that signed it."""

import contextlib
import hashlib
import io
import os
import threading
from dataclasses import dataclass

import koji

from .display import text
from .errors import BreaksRekorRule, SignatureSourceError, SourceGone
from .openpgp import openpgp_fingerprints, signature_issuer

# Bytes read from the RPM at a time: a multiple of 3 so that each chunk
# base64-encodes on its own, small enough to keep memory flat.
CHUNK_SIZE = 3 * 128 * 1024


# ---------------------------------------------------------------------------
# Locating the signed RPM and its public key
# ---------------------------------------------------------------------------


@dataclass
class SignedRpm:
    """One signed RPM, read as a stream: a signed copy on disk, or Koji's
    unsigned RPM with the signature header from the sigcache spliced in."""
    nvra: str
    sigkey: str
    path: str
    sighdr: bytes
    spliced: bool

    def open(self):
        """The signed RPM as an unbuffered stream: readinto() fills the
        caller's buffer straight from the file."""
        if self.spliced:
            return SplicedRpm(self.path, self.sighdr)
        return open(self.path, 'rb', buffering=0)

    def size(self):
        start, old_size = koji.find_rpm_sighdr(self.path)
        return os.path.getsize(self.path) - old_size + len(self.sighdr)

    def header_blob(self):
        """Lead, signature header and main header: all rpm needs to check
        a header signature, without the payload."""
        start, old_size = koji.find_rpm_sighdr(self.path)
        main_size = koji.rpm_hdr_size(self.path, start + old_size)
        with open(self.path, 'rb') as fo:
            lead = fo.read(start)
            fo.seek(start + old_size)
            main = fo.read(main_size)
        return lead + self.sighdr + main


class SplicedRpm(io.RawIOBase):
    """Koji's unsigned RPM with a signature header spliced in, as a raw
    stream. koji.spliced_sig_reader reads the same bytes but copies every
    chunk three times on its way (slices and a BufferedReader); this reads
    the payload straight into the caller's buffer."""

    def __init__(self, path, sighdr):
        super().__init__()
        start, old_size = koji.find_rpm_sighdr(path)
        self.fo = open(path, 'rb', buffering=0)
        try:
            lead = self.fo.read(start)
            self.fo.seek(start + old_size)
        except BaseException:
            self.fo.close()
            raise
        self.head = memoryview(lead + sighdr)  # lead and header: a few KB

    def readable(self):
        return True

    def readinto(self, buffer):
        if self.head:
            count = min(len(buffer), len(self.head))
            buffer[:count] = self.head[:count]
            self.head = self.head[count:]
            return count
        return self.fo.readinto(buffer)

    def close(self):
        self.fo.close()
        super().close()


def read_chunks(fo):
    """A stream's bytes as views of one reused buffer of CHUNK_SIZE, each
    full but the last, so each but the last base64-encodes on its own. A
    view is good only until the next one is asked for. (hashlib.file_digest
    does the like for hashing alone, from Python 3.11 on.)"""
    buffer = memoryview(bytearray(CHUNK_SIZE))
    while True:
        filled = 0
        while filled < CHUNK_SIZE:
            count = fo.readinto(buffer[filled:])
            if not count:
                break
            filled += count
        if filled:
            yield buffer[:filled]
        if filled < CHUNK_SIZE:
            return


def nvra_of(rpminfo):
    return '%(name)s-%(version)s-%(release)s.%(arch)s' % rpminfo


def locate_signed_rpm(build, rpminfo, sigkey):
    """Find the signed RPM as the hub's add_rpm_sig left it."""
    nvra = nvra_of(rpminfo)
    builddir = koji.pathinfo.build(build)
    signed = os.path.join(builddir, koji.pathinfo.signed(rpminfo, sigkey))
    if os.path.isfile(signed):
        sighdr = read_sighdr_of_rpm(signed)
        check_sighdr(sighdr, signed, sigkey)
        return SignedRpm(nvra, sigkey, signed, sighdr, spliced=False)
    unsigned = os.path.join(builddir, koji.pathinfo.rpm(rpminfo))
    sigpath = os.path.join(builddir, koji.pathinfo.sighdr(rpminfo, sigkey))
    if not os.path.isfile(unsigned):
        raise SourceGone('RPM file missing: %s' % unsigned)
    try:
        with open(sigpath, 'rb') as fo:
            sighdr = fo.read()
    except OSError as e:
        raise SourceGone('signature header unreadable: %s: %s'
                                   % (sigpath, e.strerror or e))
    check_sighdr(sighdr, sigpath, sigkey)
    return SignedRpm(nvra, sigkey, unsigned, sighdr, spliced=True)


def signed_rpm_from_file(path):
    """An RPM file signed elsewhere (the `upload` command)."""
    if not os.path.isfile(path):
        raise SourceGone('RPM file missing: %s' % path)
    sighdr = read_sighdr_of_rpm(path)
    sigkey = sighdr_key(sighdr, path)
    if not sigkey:
        if koji.RawHeader(sighdr).get(RPMTAG_OPENPGP):
            try:
                legacy_signatures(sighdr)
            except BreaksRekorRule as e:
                raise BreaksRekorRule('%s cannot be logged: %s' % (path, e))
        raise SourceGone('%s is not signed' % path)
    try:
        # src_arch: a source RPM's arch is 'src', as Koji names it.
        nvra = nvra_of(koji.get_header_fields(path, ['name', 'version', 'release', 'arch'],
                                              src_arch=True))
    except Exception as e:
        raise SourceGone('not a readable RPM: %s: %s' % (path, e))
    return SignedRpm(nvra, sigkey, path, sighdr, spliced=False)


def read_sighdr_of_rpm(path):
    try:
        return koji.rip_rpm_sighdr(path)
    except Exception as e:
        raise SourceGone('not a readable RPM: %s: %s' % (path, e))


def sighdr_key(sighdr, where):
    try:
        return koji.get_sighdr_key(sighdr)
    except Exception as e:
        raise SourceGone('corrupt signature header %s: %s' % (where, e))


def check_sighdr(sighdr, where, sigkey):
    """The signature header must parse and carry a signature by sigkey."""
    if sighdr[:3] != koji.RPM_HEADER_MAGIC:
        raise SourceGone('corrupt signature header %s: bad magic' % where)
    found = sighdr_key(sighdr, where)
    if found != sigkey:
        raise SourceGone('signature header %s is signed by %s, not %s'
                                   % (where, found or 'nobody', sigkey))


def public_key_file(signing, sigkey):
    """The armored public key for a sigkey: <public_key_dir>/<sigkey>.asc,
    else the single public_key_path of the original plugin. signing: the
    settings' signing keys group (config.SigningOptions)."""
    tried = []
    if signing.public_key_dir:
        path = os.path.join(signing.public_key_dir, '%s.asc' % sigkey.lower())
        if os.path.isfile(path):
            return path
        tried.append(path)
    if signing.public_key_path:
        return signing.public_key_path
    raise SignatureSourceError('no public key for sigkey %s (%s)' % (
        sigkey, 'no %s' % tried[0] if tried else
        'set [signing] public_key_dir or public_key_path'))


def read_public_key(path):
    try:
        with open(path, 'rb') as fo:
            data = fo.read()
    except OSError as e:
        raise SignatureSourceError('cannot read public key %s: %s' % (path, e.strerror))
    if b'-----BEGIN PGP PUBLIC KEY BLOCK-----' not in data:
        raise SignatureSourceError('%s is not an ASCII-armored OpenPGP public key' % path)
    return data


def check_key_signed_rpm(signed, key, key_path):
    """Check with rpm itself that the key verifies the RPM's header
    signature, before anything is sent. Returns the RPM's main header.

    rpm verifies a header read from a file descriptor against the keyring
    of the transaction set; a memfd holding only the headers avoids both a
    temporary file and reading the payload.
    """
    import rpm  # only needed here; keeps the module importable without it

    check_rekor_signature_rules(signed, key)
    rawhdr = koji.RawHeader(signed.sighdr)
    if not (rawhdr.get(koji.RPM_SIGTAG_RSA) or rawhdr.get(koji.RPM_SIGTAG_DSA)):
        raise SourceGone('%s has no header signature by %s to check'
                                   % (signed.nvra, signed.sigkey))
    try:
        pubkey = rpm.pubkey(key)
    except (ValueError, TypeError, rpm.error) as e:
        raise SignatureSourceError('rpm cannot use public key %s: %s' % (key_path, e))
    keyring = rpm.keyring()
    keyring.addKey(pubkey)
    ts = rpm.TransactionSet()
    ts.setKeyring(keyring)
    fd = os.memfd_create('rekor_log:%s' % signed.nvra)
    try:
        os.write(fd, signed.header_blob())
        os.lseek(fd, 0, os.SEEK_SET)
        with rpm_messages_captured(rpm):
            hdr = ts.hdrFromFdno(fd)
    except rpm.error as e:
        if 'public key not available' in str(e):
            raise SignatureSourceError('public key %s does not verify %s signed by %s'
                                       % (key_path, signed.nvra, signed.sigkey))
        raise SignatureSourceError('signature of %s by %s does not verify with %s: %s'
                                   % (signed.nvra, signed.sigkey, key_path, e))
    except koji.GenericError as e:
        raise SourceGone('not a readable RPM: %s: %s' % (signed.path, e))
    finally:
        os.close(fd)
        ts.closeDB()
    return hdr


@contextlib.contextmanager
def rpm_messages_captured(rpm):
    """Keep rpm's own warnings ("warning: /memfd:... (deleted): ... NOKEY")
    off the terminal and the hub's log: the caller reports the one cause.
    rpm's Python binding cannot give its log back to stderr once redirected
    (setLogFile(None) raises; each file leaks a FILE), so its level is raised
    for the call and set back to rpm's default; callers hold RPM_LOCK."""
    rpm.setVerbosity(rpm.RPMLOG_ERR)
    try:
        yield
    finally:
        rpm.setVerbosity(rpm.RPMLOG_NOTICE)  # rpmlog.c's default mask


def check_rekor_signature_rules(signed, key):
    """Rekor 1.5.4's two signature rules, checked before anything is sent:
    it reads only the legacy signature tags (not rpm 6's RPMTAG_OPENPGP),
    and every signature there must be by the submitted key, where rpm is
    content with one. When none is by the key, the key is what is wrong,
    which rpm's own check then reports."""
    try:
        found = legacy_signatures(signed.sighdr)
    except BreaksRekorRule as e:
        raise BreaksRekorRule('%s cannot be logged: %s' % (signed.nvra, e))
    ours = openpgp_fingerprints(key)
    strangers = [(what, issuer) for what, issuer in found if not signed_by(issuer, ours)]
    if strangers and len(strangers) < len(found):
        raise BreaksRekorRule('%s cannot be logged: %s'
                              % (signed.nvra, not_by_key_message(*strangers[0])))

# The signature tags Rekor 1.5.4 checks (go-rpmutils: the header-only RSA
# and DSA tags, then the header+payload PGP and GPG tags), in its order.
LEGACY_SIGNATURE_TAGS = ((koji.RPM_SIGTAG_RSA, 'RSA header signature'),
                         (koji.RPM_SIGTAG_DSA, 'DSA header signature'),
                         (koji.RPM_SIGTAG_PGP, 'header+payload PGP signature'),
                         (koji.RPM_SIGTAG_GPG, 'header+payload GPG signature'))

RPMTAG_OPENPGP = 278  # rpm 6's signature tag, which Rekor does not read


def legacy_signatures(sighdr):
    """[(what, (key ID, fingerprint))] of the signatures Rekor reads, in its
    order; BreaksRekorRule when one of them is not a signature it can read."""
    try:
        rawhdr = koji.RawHeader(sighdr)
    except Exception as e:
        raise SourceGone('corrupt signature header: %s' % e)
    found = []
    for tag, what in LEGACY_SIGNATURE_TAGS:
        blob = rawhdr.get(tag)
        if blob:
            issuer = signature_issuer(blob)
            if issuer is None:
                raise BreaksRekorRule('its %s is not a signature Rekor can read (no supported '
                                      'PGP signature packet found)' % what)
            found.append((what, issuer))
    if not found and rawhdr.get(RPMTAG_OPENPGP):
        raise BreaksRekorRule(
            'its only signature is in RPMTAG_OPENPGP (rpm 6), which Rekor does not read (no '
            'supported PGP signature found in RPM): sign it with rpmsign --rpmv4 too')
    if not found:
        raise BreaksRekorRule('it has no signature (no supported PGP signature found in RPM)')
    return found


def signed_by(issuer, fingerprints):
    """Whether a signature's issuer is one of these keys, as go-rpmutils
    looks it up: by key ID, or by fingerprint when that is all it names."""
    key_id, fingerprint = issuer
    if key_id:
        return any(fp.endswith(key_id) for fp in fingerprints)
    return fingerprint in fingerprints


def not_by_key_message(what, issuer):
    """Rekor 1.5.4's refusal of a signature by another key, with ours."""
    key_id, fingerprint = issuer
    rekor = ('keyid %s not found' % key_id.lower().lstrip('0').rjust(8, '0') if key_id
             else 'key with fingerprint %s not found' % fingerprint.lower())
    return ('its %s is by key %s, not by the key sent, and Rekor checks every signature with '
            'that key alone (%s): remove that signature or log the RPM with its key'
            % (what, key_id or fingerprint, rekor))


@dataclass
class Expected:
    """What the body of our entry must say."""
    sha256: str
    name: str
    version: str
    release: str
    epoch: object
    arch: str
    sigmd5: str
    public_key: bytes
    source: bool = False


def expected_from_header(hdr, sha256, public_key):
    import rpm
    return Expected(
        sha256=sha256, name=text(hdr[rpm.RPMTAG_NAME]), version=text(hdr[rpm.RPMTAG_VERSION]),
        release=text(hdr[rpm.RPMTAG_RELEASE]), epoch=hdr[rpm.RPMTAG_EPOCH],
        arch=text(hdr[rpm.RPMTAG_ARCH]), sigmd5=(hdr[rpm.RPMTAG_SIGMD5] or b'').hex(),
        public_key=public_key, source=not hdr[rpm.RPMTAG_SOURCERPM])

# librpm keeps process-wide state (macros, its log), so the threads of
# koji-rekor backfill --jobs check one RPM at a time; a check reads only the
# headers, so this costs them nothing. Process-wide on purpose: what it
# guards (librpm's state) is process-wide, so a lock per object would not
# exclude two threads that hold different objects.
RPM_LOCK = threading.Lock()


def sha256_of(fo):
    """Hex SHA-256 of a binary stream, read a chunk at a time into one
    buffer."""
    digest = hashlib.sha256()
    for chunk in read_chunks(fo):
        digest.update(chunk)
    return digest.hexdigest()
