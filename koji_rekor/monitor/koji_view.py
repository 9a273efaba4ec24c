"""What Koji holds, as the monitor asks it (Koji is the truth)."""

import hashlib
import threading
import time

import koji

from ..display import short_reason
from ..errors import KojiUnavailable, RekorLogError
from ..koji_client import hub_url
from ..receipts import read_receipt
from ..rekor.models import logged_body
from ..rpmsig import CHUNK_SIZE, locate_signed_rpm, nvra_of, sha256_of


class KojiView:
    """Koji is the truth about what it signed: the hub, asked with anonymous
    read calls, says which signatures exist; the hash of Koji's signed copy
    is computed as the plugin computes it, from the topdir (read-only) or
    from [koji] topurl. Hashes are kept for the run only, by signature (RPM,
    sigkey and the header's hash the hub records): one kept in the topdir
    could be planted, and an entry is new only once anyway."""

    def __init__(self, settings, topdir):
        self.settings = settings
        self.topdir = topdir
        self.hashes = {}
        self.session = None
        self.down = None
        self.url = settings.hub_url
        self.lock = threading.Lock()

    def close(self):
        if self.session is not None:
            self.session.logout()

    def call(self, method, *args, **kws):
        if self.url is None:
            self.url = hub_url(self.settings)
        if not self.url:
            raise KojiUnavailable('no hub to ask: set [koji] server')
        if self.down:   # asked once in vain this run: the rest waits for the next
            raise KojiUnavailable(self.down)
        with self.lock:
            if self.session is None:
                self.session = koji.ClientSession(self.url, opts={
                    'timeout': self.settings.timeout, 'max_retries': self.settings.retries,
                    'retry_interval': self.settings.backoff, 'anon_retry': True})
            try:
                return getattr(self.session, method)(*args, **kws)
            except koji.GenericError as e:   # the hub's own answer
                raise KojiUnavailable('%s at %s failed: %s' % (method, self.url, e))
            except Exception as e:
                self.down = '%s at %s failed: %s' % (method, self.url, short_reason(e))
                raise KojiUnavailable(self.down)

    def account(self, verified, fingerprints, where):
        """None when Koji has this RPM signed by this key and the logged
        hash is that of its signed copy; else (kind, message)."""
        logged = logged_body(verified)
        name, epoch, version, release, arch = logged.nevra
        sha256 = str(logged.sha256 or '').lower()
        sigkeys = sorted({fp[-8:].lower() for fp in fingerprints})
        what = '%s: rpm %s-%s:%s-%s.%s sha256:%s signed with our key %s' % (
            where, name, epoch or '0', version, release, arch, sha256, '/'.join(sigkeys))
        # A source RPM's header names the arch it was built on, which Rekor
        # stores; Koji files it as src. The first answer that is not an
        # account is the finding.
        outcomes = []
        for candidate in dict.fromkeys((arch, 'src')):
            rpminfo = self.call('getRPM', '%s-%s-%s.%s' % (name, version, release, candidate))
            if rpminfo and str(rpminfo.get('epoch') or 0) == (epoch or '0'):
                outcome = self.account_rpm(rpminfo, sigkeys, sha256, verified.uuid, what)
                if outcome is None:
                    return None
                outcomes.append(outcome)
        if outcomes:
            return outcomes[0]
        return ('not in Koji', '%s: Koji has no such RPM, so this Koji did not sign it (a '
                'stolen key, or an RPM logged by hand)' % what)

    def account_rpm(self, rpminfo, sigkeys, sha256, uuid, what):
        signatures = self.call('queryRPMSigs', rpm_id=rpminfo['id'])
        ours = [s for s in signatures or [] if str(s.get('sigkey', '')).lower() in sigkeys]
        if not ours:
            if self.receipt_names(rpminfo, sigkeys, uuid):
                return ('signature deleted in Koji', '%s: Koji no longer has this signature '
                        '(a receipt shows this Koji logged it; deleteRPMSig leaves the log '
                        'entry behind)' % what)
            return ('not signed in Koji', '%s: Koji has this RPM but no signature of it by '
                    'this key, so this Koji did not sign it (a stolen key?)' % what)
        for signature in ours:
            if self.signed_sha256(rpminfo, signature) == sha256:
                return None
        return ('other bytes', '%s: Koji signed %s with this key, but its signed copy has '
                'another sha256, so the logged package is not the one Koji signed'
                % (what, nvra_of(rpminfo)))

    def receipt_names(self, rpminfo, sigkeys, uuid):
        """Whether a receipt records this entry for this RPM: it only tells a
        deleted signature from one never made, it never accounts for one."""
        for sigkey in sigkeys:
            try:
                receipt = read_receipt(self.topdir, rpminfo, sigkey)
                if any(i.lower()[-64:] == uuid for i in receipt['log_entry']):
                    return True
            except (OSError, RekorLogError, KeyError, TypeError, AttributeError):
                continue
        return False

    def signed_sha256(self, rpminfo, signature):
        cache = '%s %s %s' % (rpminfo['id'], signature['sigkey'], signature.get('sighash'))
        if cache not in self.hashes:
            build = self.call('getBuild', rpminfo['build_id'])
            if not build:
                raise KojiUnavailable('Koji has no build %s for %s'
                                      % (rpminfo['build_id'], nvra_of(rpminfo)))
            self.hashes[cache] = self.copy_sha256(build, rpminfo, signature)
        return self.hashes[cache]

    def copy_sha256(self, build, rpminfo, signature):
        sigkey = signature['sigkey']
        try:
            signed = locate_signed_rpm(build, rpminfo, sigkey)
        except RekorLogError as e:
            if not self.settings.topurl:
                raise KojiUnavailable("cannot read Koji's signed copy of %s by %s from the "
                                      'topdir (%s), and [koji] topurl is not set'
                                      % (nvra_of(rpminfo), sigkey, e))
            return topurl_sha256(self.settings, build, rpminfo, sigkey, signature.get('sighash'))
        if signature.get('sighash') and \
                hashlib.md5(signed.sighdr).hexdigest() != signature['sighash']:  # noqa: S324
            raise KojiUnavailable('the signature header of %s by %s in the topdir is not the '
                                  'one Koji recorded' % (nvra_of(rpminfo), sigkey))
        with signed.open() as fo:
            return sha256_of(fo)

# Bounds on what [koji] topurl serves: a signature header is a few KiB
# (Koji's own sigcache files), and the whole fetch of one copy has a deadline
# besides requests' per-read timeout, which a server dripping bytes never trips.
TOPURL_MAX_SIGHDR = 1024 * 1024

TOPURL_DEADLINE = 1800.0

RPM_HEADER_MAGIC = b'\x8e\xad\xe8\x01'


def topurl_sha256(settings, build, rpminfo, sigkey, sighash):
    """The sha256 of Koji's signed copy read over HTTP from [koji] topurl:
    the signed copy if Koji wrote one, else the unsigned RPM with the
    signature header from the sigcache put in place of its own, streamed
    (it costs one download of the RPM per new signature). As strict as the
    mounted topdir: the signature header must be the one Koji recorded
    (its sighash), whichever way it comes."""
    import requests
    pathinfo = koji.PathInfo(topdir=settings.topurl.rstrip('/'))
    base = pathinfo.build(build)
    where = '%s by %s at %s' % (nvra_of(rpminfo), sigkey, base)
    deadline = time.monotonic() + TOPURL_DEADLINE
    session = requests.Session()
    session.verify = settings.ca_bundle or True

    def get(path):
        try:
            response = session.get('%s/%s' % (base, path), stream=True,
                                   timeout=settings.timeout, allow_redirects=False)
        except requests.RequestException as e:
            raise KojiUnavailable('cannot read %s/%s: %s' % (base, path, short_reason(e)))
        if response.status_code not in (200, 404):
            raise KojiUnavailable('%s/%s: HTTP %d' % (base, path, response.status_code))
        return response if response.status_code == 200 else None

    def read(stream, size):
        data = stream.read(size)
        if time.monotonic() > deadline:
            raise KojiUnavailable('reading %s took longer than %d s' % (where, TOPURL_DEADLINE))
        return data

    def header(stream):
        """The signature header as Koji rips it (padded to 8 bytes), bounded."""
        intro = read(stream, 16)
        if len(intro) != 16 or intro[:4] != RPM_HEADER_MAGIC:
            raise KojiUnavailable('no RPM signature header in the copy of %s' % where)
        count, size = int.from_bytes(intro[8:12], 'big'), int.from_bytes(intro[12:16], 'big')
        length = 16 * count + size
        length += -(16 + length) % 8
        if length > TOPURL_MAX_SIGHDR:
            raise KojiUnavailable('the signature header of %s is too large (%d bytes)'
                                  % (where, length))
        rest = read(stream, length)
        if len(rest) != length:
            raise KojiUnavailable('the copy of %s ends inside its signature header' % where)
        return intro + rest

    def recorded(sighdr):
        return sighash and hashlib.md5(sighdr).hexdigest() == sighash  # noqa: S324

    digest = hashlib.sha256()
    try:
        response = get(pathinfo.signed(rpminfo, sigkey))
        if response is not None:
            stream = response.raw
            lead = read(stream, 96)
            sighdr = header(stream)
            if not recorded(sighdr):
                raise KojiUnavailable('the signature header of the signed copy of %s is not '
                                      'the one Koji recorded' % where)
            digest.update(lead + sighdr)
        else:
            response = get(pathinfo.sighdr(rpminfo, sigkey))
            sighdr = read(response.raw, TOPURL_MAX_SIGHDR + 1) if response is not None else None
            if not sighdr or not recorded(sighdr):
                raise KojiUnavailable('no signature header of %s matches the one Koji '
                                      'recorded' % where)
            response = get(pathinfo.rpm(rpminfo))
            if response is None:
                raise KojiUnavailable('no %s/%s' % (base, pathinfo.rpm(rpminfo)))
            stream = response.raw
            lead = read(stream, 96)
            header(stream)  # the unsigned RPM's own, replaced
            digest.update(lead + sighdr)
        for chunk in iter(lambda: read(stream, CHUNK_SIZE), b''):
            digest.update(chunk)
        return digest.hexdigest()
    except requests.RequestException as e:
        raise KojiUnavailable('reading %s from %s failed: %s' % (nvra_of(rpminfo), base,
                                                                   short_reason(e)))
    finally:
        session.close()
