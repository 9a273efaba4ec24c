"""Entries made with our keys: which of them Koji made, from what Koji recorded."""

import base64
import binascii
import hashlib

from ..display import utc
from ..errors import KojiUnavailable, RekorLogError
from .report import flag
from .state import read_digests, write_digests
from ..rekor.models import EntryBody
from ..rpmsig import locate_signed_rpm, nvra_of


def check_pem_keyed_entry(view, keys, koji_view, scan, index, verified, counts):
    """A v1 entry naming one of our keys as PEM (hashedrekord v0.0.1) or
    inside an X.509 certificate: accounted for like a v2 hashedrekord."""
    forms = pem_key_forms(verified.body)
    if not any(der in keys.der for der, _ in forms):
        return
    counts['ours'] += 1
    where = 'log index %d, entry %s (integrated %s)' % (
        verified.log_index, verified.uuid, utc(verified.integrated_time))
    try:
        outcome = account_keyed_entry(keys, koji_view, verified.body, forms, where)
    except KojiUnavailable as e:
        counts['unchecked'] += 1
        scan.data['pending'].append(index)
        view.report.not_checked('%s: Koji cannot be asked: %s' % (where, e))
        return
    if outcome is None:
        counts['accounted'] += 1
        return
    counts['findings'] += 1
    flag(view, scan, verified, *outcome)


class DigestIndex:
    """Which hashedrekord entries Koji made: for each of our sigkeys, the
    digest, signature and key of every signature Koji recorded, built from
    the signature header Koji recorded (its md5 is Koji's sighash) and the
    RPM's header. Kept in the monitor's state only as a lookup aid: a hit
    is derived again from Koji before it accounts for anything, so a
    planted index silences nothing."""

    def __init__(self, topdir, koji_view, keys):
        self.topdir, self.koji, self.keys = topdir, koji_view, keys
        self.data = read_digests(topdir)
        self.refreshed = {}   # sigkey -> signatures that could not be indexed

    def account(self, digest, signature, der, where):
        """None when Koji recorded this signature; else (kind, message)."""
        sigkey, source = self.keys.der[der]
        what = '%s: a hashedrekord of digest %s made with our key %s (%s)' % (
            where, digest.hex(), sigkey, source)
        wanted = [digest.hex(), hashlib.sha256(signature).hexdigest(),
                  hashlib.sha256(der).hexdigest()]
        for attempt in range(2):
            for name, value in sorted(self.data.get(sigkey, {}).items()):
                if value and value[0] == wanted[0]:
                    try:
                        again = self.derive(sigkey, name)  # Koji, not the state, decides
                    except (RekorLogError, KojiUnavailable, ValueError):
                        continue        # not what Koji holds: the refresh drops it
                    if again and again[:3] == wanted:
                        return None
                    if again and again[0] == wanted[0]:
                        return ('other signature', '%s: Koji signed %s with this digest, but '
                                'the logged signature or key is not the one Koji recorded'
                                % (what, again[3]))
            if attempt or sigkey in self.refreshed:
                break
            self.refresh(sigkey)
        if self.refreshed.get(sigkey):
            raise KojiUnavailable('%d signatures by %s could not be indexed (%s)' % (
                len(self.refreshed[sigkey]), sigkey, self.refreshed[sigkey][0]))
        return ('not signed in Koji', '%s: Koji recorded no signature with this digest by '
                'this key, so this Koji did not sign it (a stolen key?)' % what)

    def refresh(self, sigkey):
        """Index the signatures by sigkey that Koji lists and the index lacks."""
        listed = self.koji.call('queryRPMSigs', sigkey=sigkey) or []
        known = self.data.setdefault(sigkey, {})
        names = {'%s/%s' % (s.get('rpm_id'), s.get('sighash')) for s in listed}
        for name in [n for n in known if n not in names]:
            del known[name]                       # deleted in Koji (or planted)
        failed = []
        for name in sorted(names - set(known)):
            try:
                known[name] = self.derive(sigkey, name)
            except (RekorLogError, KojiUnavailable) as e:
                failed.append('%s: %s' % (name, e))
        self.refreshed[sigkey] = failed
        write_digests(self.topdir, self.data)

    def derive(self, sigkey, name):
        """[digest, sha256(signature), sha256(DER key), NVRA] of the
        signature Koji recorded as name ("rpm id/sighash"), or None when
        no hashedrekord can hold it."""
        from ..v2 import hashedrekord
        rpm_id, _, sighash = name.partition('/')
        rpminfo = self.koji.call('getRPM', int(rpm_id))
        build = rpminfo and self.koji.call('getBuild', rpminfo['build_id'])
        if not build:
            raise KojiUnavailable('Koji has no RPM %s or its build' % rpm_id)
        signed = locate_signed_rpm(build, rpminfo, sigkey)
        if hashlib.md5(signed.sighdr).hexdigest() != sighash:  # noqa: S324
            raise KojiUnavailable('the signature header of %s by %s in the topdir is not the '
                                  'one Koji recorded' % (nvra_of(rpminfo), sigkey))
        sighdr, main = hashedrekord.read_headers(signed.path, signed.sighdr)
        problem = None
        for _, armored in self.keys.files:
            try:
                entry = hashedrekord.from_headers(sighdr, main, armored)
            except hashedrekord.NotLoggableInV2:
                return None
            except RekorLogError as e:
                problem = e
                continue
            return [entry.digest.hex(), hashlib.sha256(entry.signature).hexdigest(),
                    hashlib.sha256(entry.public_key).hexdigest(), nvra_of(rpminfo)]
        raise KojiUnavailable('%s by %s: %s' % (nvra_of(rpminfo), sigkey, problem))


def digest_index(koji_view, keys):
    """One DigestIndex a run, kept with the run's KojiView."""
    if getattr(koji_view, 'digests', None) is None:
        koji_view.digests = DigestIndex(koji_view.home, koji_view, keys)
    return koji_view.digests


def entry_key_forms(body):
    """(DER key, 'key' or 'certificate') of every verifier a Rekor v2 entry
    names (hashedrekord v0.0.2: spec.hashedRekordV002.signature; dsse
    v0.0.2: spec.dsseV002.signatures[]), protojson names."""
    spec = body.get('spec') if isinstance(body.get('spec'), dict) else {}
    found = []
    for inner in spec.values():
        if not isinstance(inner, dict):
            continue
        sigs = inner.get('signatures') if isinstance(inner.get('signatures'), list) else []
        sigs = sigs + [inner.get('signature')]
        for sig in sigs[:64]:
            verifier = sig.get('verifier') if isinstance(sig, dict) else None
            if isinstance(verifier, dict):
                found += verifier_keys(verifier)
    return found


def verifier_keys(verifier):
    """(DER key, form) of a sigstore PublicKey or X509Certificate."""
    out = []
    for field_name, form in (('publicKey', 'key'), ('x509Certificate', 'certificate')):
        holder = verifier.get(field_name)
        raw = holder.get('rawBytes') if isinstance(holder, dict) else None
        if isinstance(raw, str):
            try:
                data = base64.b64decode(raw, validate=True)
            except binascii.Error:
                continue
            der = data if form == 'key' else certificate_key(data)
            if der:
                out.append((der, form))
    return out


def certificate_key(data):
    """The DER SubjectPublicKeyInfo of a DER or PEM X.509 certificate."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    try:
        cert = (x509.load_pem_x509_certificate(data) if data.lstrip().startswith(b'-----')
                else x509.load_der_x509_certificate(data))
        return cert.public_key().public_bytes(serialization.Encoding.DER,
                                              serialization.PublicFormat.SubjectPublicKeyInfo)
    except Exception:  # noqa: BLE001 - not a certificate we can read: not our key
        return None


def pem_key_forms(body):
    """(DER key, form) of the PEM key or certificate a v1 entry names
    (hashedrekord v0.0.1, rekord x509: spec.signature.publicKey.content)."""
    from cryptography.hazmat.primitives import serialization
    content = EntryBody.from_dict(body).signature_key_text
    try:
        data = base64.b64decode(content, validate=True)
    except (TypeError, binascii.Error):
        return []
    if b'CERTIFICATE' in data[:100]:
        der = certificate_key(data)
        return [(der, 'certificate')] if der else []
    try:
        key = serialization.load_pem_public_key(data)
    except Exception:  # noqa: BLE001 - not a PEM key: nothing of ours
        return []
    return [(key.public_bytes(serialization.Encoding.DER,
                              serialization.PublicFormat.SubjectPublicKeyInfo), 'key')]


def account_keyed_entry(keys, koji_view, body, forms, where):
    """An entry made with one of our DER keys: None when it is a
    hashedrekord of a signature Koji recorded, else (kind, message). Raises
    KojiUnavailable when Koji cannot tell."""
    mine = [(der, form) for der, form in forms if der in keys.der]
    kind, version = body.get('kind'), body.get('apiVersion')
    sigkey, source = keys.der[mine[0][0]]
    if kind != 'hashedrekord' or any(form != 'key' for _, form in mine):
        return ('other kind', '%s: a %s %s entry made with our key %s (%s, as %s); this Koji '
                'makes only hashedrekord entries with a bare key' % (
                    where, kind, version, sigkey, source,
                    ' and '.join(sorted({form for _, form in mine}))))
    try:
        digest, signature = hashedrekord_values(body)
    except (KeyError, TypeError, ValueError, binascii.Error):
        return ('other kind', '%s: a malformed hashedrekord entry made with our key %s'
                % (where, sigkey))
    return digest_index(koji_view, keys).account(digest, signature, mine[0][0], where)


def hashedrekord_values(body):
    """(digest, signature) of a hashedrekord v0.0.2 (v2) or v0.0.1 (v1)."""
    spec = body['spec']
    if 'hashedRekordV002' in spec:
        inner = spec['hashedRekordV002']
        return (base64.b64decode(inner['data']['digest'], validate=True),
                base64.b64decode(inner['signature']['content'], validate=True))
    logged = EntryBody.from_dict(body)
    return (bytes.fromhex(logged.data_hash[1]),
            base64.b64decode(logged.signature_content, validate=True))
