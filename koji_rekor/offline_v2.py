"""koji-rekor verify for Rekor v2: receipts, TransparencyLogEntries and Sigstore bundles."""

import argparse
import base64
import binascii
import json
import os

from .errors import CannotCheck, RekorLogError, UsageError, VerificationError
from .keysource import find_log_key
from .offline import check_receipt_rpm, entry_file_parts, SIGSTORE_BUNDLE, verify_entry_file


def v2_document(data):
    """What a file to verify holds when it is Rekor v2: 'receipt' (the
    plugin's, "rekor_api": 2), 'bundle' (a Sigstore bundle) or 'entry' (a
    bare TransparencyLogEntry); None for a v1 receipt or entry."""
    if not isinstance(data, dict):
        return None
    if 'rekor_api' in data:
        if data['rekor_api'] == 2:
            return 'receipt'
        if data['rekor_api'] != 1 or isinstance(data['rekor_api'], bool):
            raise UsageError('receipt: rekor_api %r is neither 1 nor 2'
                             % (str(data['rekor_api'])[:20],))
        return None
    if isinstance(data.get('mediaType'), str) and data['mediaType'].startswith(SIGSTORE_BUNDLE):
        return 'bundle'
    if 'kindVersion' in data and 'canonicalizedBody' in data:
        return 'entry'
    return None


def v2_log_keys(args, settings, receipt, path):
    """(keys, where they came from) for a v2 entry, the one way verify
    finds keys: --log-key (its origin --origin, else the configured one,
    else the receipt's), else --trusted-root, else the configuration
    ([rekor] trusted_root, and log_public_key when api = 2). Never from the
    file being checked: a receipt at most names the origin."""
    from .safefs import MAX_FILE
    from .v2 import trust

    def trusted_root(name, where):
        try:
            with open(name, 'rb') as fo:
                return trust.parse_trusted_root(fo.read(MAX_FILE)).logs
        except OSError as e:
            raise UsageError('cannot read %s: %s' % (name, e.strerror))
        except trust.TrustError as e:
            raise UsageError('%s %s: %s' % (where, name, e))

    def pem_key(name, origin, where):
        try:
            with open(name, 'rb') as fo:
                return trust.log_key(origin, fo.read(MAX_FILE))
        except OSError as e:
            raise UsageError('cannot read %s: %s' % (name, e.strerror))
        except trust.TrustError as e:
            raise UsageError('%s %s: %s' % (where, name, e))

    configured = settings if settings and settings.api == 2 else None
    # A v2 shard's origin is its URL without the scheme (port and path kept).
    configured_origin = configured and (configured.origin or trust.origin_of(configured.url))
    if getattr(args, 'log_key', None):
        origin = args.origin or configured_origin or (
            receipt.get('origin') if receipt and isinstance(receipt.get('origin'), str)
            else None)
        if not origin:
            raise CannotCheck('cannot check %s: no origin for --log-key: pass --origin' % path)
        return (pem_key(args.log_key, origin, '--log-key'),), \
            '--log-key %s, origin %s' % (args.log_key, origin)
    if getattr(args, 'trusted_root', None):
        return trusted_root(args.trusted_root, '--trusted-root'), \
            '--trusted-root %s' % args.trusted_root
    keys, sources = (), []
    if settings and settings.trusted_root:
        keys += trusted_root(settings.trusted_root, '[rekor] trusted_root')
        sources.append('[rekor] trusted_root %s' % settings.trusted_root)
    if configured and configured.log_public_key:
        keys += (pem_key(configured.log_public_key, configured_origin,
                         '[rekor] log_public_key'),)
        sources.append('[rekor] log_public_key %s, origin %s' % (
            configured.log_public_key, configured_origin))
    if not keys:
        raise CannotCheck('cannot check %s: no key for Rekor v2 logs: pass --trusted-root, or '
                          '--log-key and --origin, or --config with [rekor] trusted_root or '
                          'api = 2 and log_public_key' % path)
    return keys, '%s (%s)' % (' and '.join(sources), settings.config_file)


def v2_signing_key(args, settings, sigkey):
    """The armored OpenPGP key for sigkey when one is at hand: --key, else
    the plugin's public_key_dir/public_key_path; else None."""
    from .errors import SignatureSourceError
    from .rpmsig import public_key_file, read_public_key
    try:
        if getattr(args, 'key', None):
            return read_public_key(args.key)
        if settings and sigkey and (settings.public_key_dir or settings.public_key_path):
            return read_public_key(public_key_file(settings.signing, sigkey))
    except SignatureSourceError as e:
        if getattr(args, 'key', None):
            raise UsageError(str(e))
    return None


def v2_body_key(body):
    """The DER key (or certificate) a hashedrekord v0.0.2 body names."""
    try:
        verifier = json.loads(body)['spec']['hashedRekordV002']['signature']['verifier']
        holder = verifier.get('publicKey') or verifier.get('x509Certificate')
        return base64.b64decode(holder['rawBytes'], validate=True)
    except (ValueError, TypeError, KeyError, AttributeError, binascii.Error):
        raise VerificationError('the logged body is not a hashedrekord v0.0.2 entry')


def check_v2_receipt_key(receipt, body, armored):
    """The body's key is the (sub)key Koji knows for the receipt's sigkey."""
    from .v2 import hashedrekord
    sigkey = receipt.get('sigkey') or ''
    ders = []
    for packet in hashedrekord.key_packets(armored):
        if packet.key_id.lower().endswith(sigkey.lower()):
            try:
                ders.append(hashedrekord.der_public_key(packet)[0])
            except RekorLogError:
                continue
    if v2_body_key(body) not in ders:
        raise VerificationError('receipt records sigkey %s, the entry logged another key'
                                % sigkey)


def v2_body_from_rpm(args, settings, path, sigkey):
    """The canonical hashedrekord body built from an RPM's headers."""
    from .v2 import hashedrekord
    if not os.path.isfile(path):
        raise UsageError('no such file: %s' % path)
    if not sigkey:
        try:
            sighdr, _ = hashedrekord.read_headers(path)
            blob = (hashedrekord.header_bin(sighdr, hashedrekord.SIGTAG_RSA)
                    or hashedrekord.header_bin(sighdr, hashedrekord.SIGTAG_DSA))
            key_id, fingerprint = hashedrekord.parse_signature(blob).issuer
            sigkey = (fingerprint or key_id or '')[-8:].lower()
        except (RekorLogError, ValueError, TypeError, IndexError) as e:
            raise UsageError('%s: cannot read its header signature: %s' % (path, e))
    armored = v2_signing_key(args, settings, sigkey)
    if armored is None:
        raise CannotCheck('cannot check %s against a Rekor v2 entry: no public key for sigkey '
                          '%s: pass --key, or --config with [signing] public_key_dir'
                          % (path, sigkey))
    try:
        return hashedrekord.from_rpm_file(path, armored).canonical_body()
    except RekorLogError as e:
        raise UsageError(str(e))


def v2_bundle_body(bundle, logged):
    """The hashedrekord v0.0.2 body a Sigstore bundle's message signature
    makes, rebuilt from the bundle (digest, signature, certificate), not
    taken from its entry. A bundle with a public key holds only a hint: the
    key is the logged one (said in the notes)."""
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
    from .v2 import hashedrekord
    ms = bundle.get('messageSignature')
    if not isinstance(ms, dict):
        raise UsageError('the bundle holds no messageSignature (a DSSE envelope is no '
                         'hashedrekord entry)')
    material = bundle.get('verificationMaterial') or {}
    digest = ms.get('messageDigest') if isinstance(ms.get('messageDigest'), dict) else {}
    holder = material.get('certificate') or (
        (material.get('x509CertificateChain') or {}).get('certificates') or [None])[0]
    notes = []
    if isinstance(holder, dict) and isinstance(holder.get('rawBytes'), str):
        try:
            key = x509.load_der_x509_certificate(
                base64.b64decode(holder['rawBytes'], validate=True)).public_key()
        except (ValueError, binascii.Error) as e:
            raise VerificationError('the bundle certificate is unreadable: %s' % e)
        verifier = {'x509Certificate': {'rawBytes': holder['rawBytes']}}
    elif isinstance(material.get('publicKey'), dict):
        # The bundle holds a hint, not the key: the logged verifier stands
        # (the signature and digest are still the bundle's own).
        v2_body_key(logged)
        verifier = dict(json.loads(logged)['spec']['hashedRekordV002']['signature']['verifier'])
        notes.append('the bundle names its key by hint only: the logged key was taken')
        key = details = None
    else:
        raise UsageError('the bundle has no certificate or public key')
    if key is None:
        details = verifier.pop('keyDetails', None)
    elif isinstance(key, ec.EllipticCurvePublicKey):
        details = {'secp256r1': 'PKIX_ECDSA_P256_SHA_256', 'secp384r1': 'PKIX_ECDSA_P384_SHA_384',
                   'secp521r1': 'PKIX_ECDSA_P521_SHA_512'}.get(key.curve.name)
    elif isinstance(key, rsa.RSAPublicKey):
        details = 'PKIX_RSA_PKCS1V15_%d_SHA256' % key.key_size
    elif isinstance(key, ed25519.Ed25519PublicKey):
        details = 'PKIX_ED25519'
    else:
        details = None
    if not details:
        raise UsageError('the bundle key is of a type Rekor v2 does not log')
    verifier['keyDetails'] = details
    return hashedrekord.jcs({'apiVersion': '0.0.2', 'kind': 'hashedrekord', 'spec': {
        'hashedRekordV002': {
            'data': {'algorithm': digest.get('algorithm'), 'digest': digest.get('digest')},
            'signature': {'content': ms.get('signature'), 'verifier': verifier}}}}), notes


def verify_v2_file(args, settings, path, data):
    """Check a Rekor v2 receipt, bundle or entry offline (and the v1
    receipt a v2 receipt carries). Returns {'lines', 'json'}; raises
    VerificationError (not verified), CannotCheck or UsageError."""
    from .v2 import entry as v2entry
    kind = v2_document(data)
    receipt = data if kind == 'receipt' else None
    notes, rpm_body = [], None
    try:
        if kind == 'bundle':
            tle = v2entry.entry_from_bundle(data)
            expected, notes = v2_bundle_body(data, tle.body)
        else:
            tle = v2entry.parse_entry(receipt.get('transparency_log_entry')
                                      if receipt else data)
            expected = tle.body
    except v2entry.EntryError as e:
        raise VerificationError(str(e))
    if receipt:
        for name in ('nvra', 'sigkey', 'sighash', 'build', 'rekor_url', 'origin', 'body'):
            if receipt.get(name) is not None and not isinstance(receipt.get(name), str):
                raise VerificationError('receipt: %s is not text' % name)
        try:
            expected = base64.b64decode(receipt.get('body') or '', validate=True)
        except binascii.Error:
            raise VerificationError('receipt: body is not base64')
    elif kind == 'entry':
        notes.append('a bare entry: its body was compared with nothing%s'
                     % (' but --rpm' if args.rpm else ''))
    keys, source = v2_log_keys(args, settings, receipt, path)
    if not any(k.log_id == tle.log_id for k in keys):
        raise CannotCheck('cannot check %s: no key for its log (logId %s) in %s' % (
            path, base64.b64encode(tle.log_id).decode(), source))
    try:
        verified = v2entry.verify_entry(tle, expected, keys)
    except v2entry.EntryError as e:
        raise VerificationError(str(e))
    if receipt and receipt.get('origin') not in (None, verified.log.origin):
        raise VerificationError('receipt records origin %s, the entry is from %s'
                                % (receipt['origin'], verified.log.origin))
    sigkey = receipt.get('sigkey') if receipt else None
    if receipt and sigkey:
        armored = v2_signing_key(args, settings, sigkey)
        if armored is not None:
            check_v2_receipt_key(receipt, verified.entry.body, armored)
        else:
            notes.append('no key for sigkey %s at hand: the logged key was not compared '
                         'with it' % sigkey)
    if args.rpm:
        rpm_body = v2_body_from_rpm(args, settings, args.rpm, sigkey)
        if rpm_body != verified.entry.body:
            raise VerificationError('%s: its header signature is not the logged hashedrekord'
                                    % args.rpm)
    what = ' of %s sigkey %s' % (receipt.get('nvra'), sigkey) if receipt else ''
    lines = ['OK %s: Rekor v2 %s%s, log index %d of tree %d, origin %r' % (
        path, {'receipt': 'receipt', 'bundle': 'bundle entry', 'entry': 'entry'}[kind], what,
        verified.entry.log_index, verified.checkpoint.size, verified.log.origin)]
    result = {'file': path, 'rekor_api': 2, 'document': kind, 'log_key': source,
              'log_index': verified.entry.log_index, 'tree_size': verified.checkpoint.size,
              'origin': verified.log.origin, 'rpm': args.rpm, 'notes': notes,
              'nvra': receipt.get('nvra') if receipt else None, 'sigkey': sigkey}
    if receipt and 'rekor_v1' in receipt:
        result['rekor_v1'], more = verify_v1_part(args, settings, path, receipt)
        lines += more
    lines += ['note: %s' % note for note in notes]
    lines += ['log key: %s' % source]
    return {'lines': lines, 'json': result}


def verify_v1_part(args, settings, path, receipt):
    """The v1 receipt a v2 receipt carries (a signature logged in both
    during a move): checked as a v1 receipt, for the same signature.
    --log-key/--origin/--url name the v2 log; the v1 part's key is the
    configured one of an api = 1 configuration, else the built-in one."""
    old = receipt['rekor_v1']
    if not isinstance(old, dict) or 'log_entry' not in old:
        raise VerificationError('receipt: rekor_v1 is not a v1 receipt')
    for name in ('nvra', 'sigkey'):
        if old.get(name) and receipt.get(name) and old[name] != receipt[name]:
            raise VerificationError('receipt: its rekor_v1 part records %s %s, not %s'
                                    % (name, old[name], receipt[name]))
    v1args = argparse.Namespace(**dict(vars(args), log_key=None, origin=None, url=None))
    v1settings = settings if settings and settings.api == 1 else None
    v1receipt, entry_id, entry = entry_file_parts(path, old)
    key, source = find_log_key(v1args, v1settings, v1receipt, entry, path)
    verified = verify_entry_file(v1args, v1settings, v1receipt, entry_id, entry, key)
    if args.rpm:
        check_receipt_rpm(args.rpm, v1receipt, verified)
    return ({'uuid': verified.uuid, 'log_index': verified.log_index, 'log_key': source},
            ['OK its rekor_v1 part: %s, log index %d (log key: %s)'
             % (verified.uuid, verified.log_index, source)])
