"""An RPM's header signature as a Rekor v2 hashedrekord entry.

An RPM's header-only OpenPGP signature is a signature over a digest: rpm
hashes the main header's immutable region and then the signature packet's
hashed trailer. Rekor v2 (rekor-tiles) logs exactly that: `hashedrekord`
v0.0.2 takes the digest, the raw signature and the signer's DER public key,
and checks the signature over the digest (rekor-tiles
pkg/types/hashedrekord/hashedrekord.go, ToLogEntry / verifySignature). So
the entry comes from the RPM's headers alone: the payload is never read,
and the work is the same at any package size.

Pure functions over bytes; read_headers() is the only I/O.

Sources:
- RPM header format and what the header signature covers: rpm lib/header.c
  (hdrblobDigestUpdate: the constant header magic, the region's entry count
  and data length, its index entries and its data; hdrblobVerifyRegion: in
  package files the immutable region is the whole header).
- Signature packets and their hashed trailers: RFC 4880 section 5.2.2 (v3:
  type and creation time) and 5.2.4 (v4: the hashed part, then 0x04 0xFF
  and its length); RFC 9580 keeps v4 as is. Key packets: RFC 4880 5.5.2,
  ECDSA keys RFC 6637 section 9, MPIs RFC 4880 3.2.
- What v2 accepts: rekor-tiles internal/algorithmregistry
  (AllowedClientSigningAlgorithms), pkg/verifier/publickey (DER
  SubjectPublicKeyInfo only), api/proto/rekor/v2/*.proto (field names).
"""

import base64
import hashlib
import json
import os
from dataclasses import dataclass
from ..errors import RekorLogError, SignatureSourceError, SourceGone
from ..openpgp import key_packet_fingerprint, openpgp_packets, PGP_TAG_PUBLIC_KEY, PGP_TAG_PUBLIC_SUBKEY, PGP_TAG_SIGNATURE, signature_issuer


# The header-only signature tags of the signature header (rpm's rpmtag.h).
# rpmsign files RSA signatures under RSA and DSA and EdDSA ones under DSA
# (rpm 4.18 here puts an Ed25519 one there); which tag holds an ECDSA one
# has varied, so the packet's own algorithm decides, whichever tag it is in.
# 278 is rpm 6's RPMTAG_OPENPGP.
SIGTAG_DSA, SIGTAG_RSA, RPMTAG_OPENPGP = 267, 268, 278
HEADERIMMUTABLE = 63
REGION_TAG_TYPE, REGION_TAG_COUNT = 7, 16
# rpm's rpm_header_magic: hashed as this constant, whatever the reserved
# bytes on disk say (lib/header.c).
HEADER_MAGIC = bytes((0x8e, 0xad, 0xe8, 0x01, 0, 0, 0, 0))
# rpm refuses headers of 256 MiB and more; real ones are well under this.
MAX_HEADER = 64 * 1024 * 1024

# OpenPGP algorithm numbers (RFC 4880 9.1, 9.4; RFC 9580 9.1).
PK_RSA, PK_RSA_SIGN, PK_DSA, PK_ECDSA, PK_EDDSA_LEGACY, PK_ED25519, PK_ED448 = (
    1, 3, 17, 19, 22, 27, 28)
HASHES = {1: 'MD5', 2: 'SHA-1', 3: 'RIPEMD-160', 8: 'SHA-256', 9: 'SHA-384',
          10: 'SHA-512', 11: 'SHA-224', 12: 'SHA3-256', 14: 'SHA3-512'}
HASH_SHA256, HASH_SHA384, HASH_SHA512 = 8, 9, 10
# OpenPGP curve OIDs (RFC 6637 section 11) -> (curve name, hash the v2 log
# requires with it, keyDetails).
CURVES = {
    bytes.fromhex('2a8648ce3d030107'): ('P-256', HASH_SHA256, 'PKIX_ECDSA_P256_SHA_256'),
    bytes.fromhex('2b81040022'): ('P-384', HASH_SHA384, 'PKIX_ECDSA_P384_SHA_384'),
    bytes.fromhex('2b81040023'): ('P-521', HASH_SHA512, 'PKIX_ECDSA_P521_SHA_512'),
}
RSA_SIZES = (2048, 3072, 4096)
# hashedrekord's data.algorithm (sigstore common.proto HashAlgorithm).
PROTO_HASH = {HASH_SHA256: 'SHA2_256', HASH_SHA384: 'SHA2_384', HASH_SHA512: 'SHA2_512'}


class NotLoggableInV2(RekorLogError):
    """The signature is of a kind a Rekor v2 log cannot hold: found before
    anything is sent, and no retry can change it."""
    permanent = True


@dataclass(frozen=True)
class HashedRekord:
    """One hashedrekord v0.0.2 entry: what is sent and what is logged."""
    digest: bytes          # hash over the header region and the trailer
    hash_algorithm: int    # OpenPGP hash number of digest
    signature: bytes       # RSA: modulus-length bytes; ECDSA: DER (r, s)
    public_key: bytes      # DER SubjectPublicKeyInfo of the signing (sub)key
    key_details: str       # sigstore PublicKeyDetails name
    key_fingerprint: str   # OpenPGP fingerprint (v4) or key ID (v3) of that key

    def request(self):
        """The body of POST /api/v2/log/entries, as protojson names its
        fields (CreateEntryRequest.hashed_rekord_request_v002; bytes are
        standard base64)."""
        return {'hashedRekordRequestV002': {
            'digest': b64(self.digest),
            'signature': {
                'content': b64(self.signature),
                'verifier': {'publicKey': {'rawBytes': b64(self.public_key)},
                             'keyDetails': self.key_details}}}}

    def request_json(self):
        return json.dumps(self.request(), separators=(',', ':')).encode()

    def entry(self):
        """The entry the log stores: kind, apiVersion and the spec built
        from the request (rekor-tiles hashedrekord.ToLogEntry)."""
        return {'kind': 'hashedrekord', 'apiVersion': '0.0.2', 'spec': {'hashedRekordV002': {
            'data': {'digest': b64(self.digest),
                     'algorithm': PROTO_HASH[self.hash_algorithm]},
            'signature': self.request()['hashedRekordRequestV002']['signature']}}}

    def canonical_body(self):
        """The log's canonicalizedBody: the entry in JCS (RFC 8785), which
        rekor-tiles makes with jsoncanonicalizer before appending."""
        return jcs(self.entry())


def b64(data):
    return base64.b64encode(data).decode('ascii')


def jcs(value):
    """RFC 8785 for JSON made of objects, arrays and strings only, as these
    entries are: members sorted by UTF-16 code units, no spaces, strings as
    JSON writes them with non-ASCII kept. json.dumps gets exactly that right
    for such values; numbers, whose JCS form differs, are refused."""
    def check(v):
        if isinstance(v, dict):
            for k, item in v.items():
                if not isinstance(k, str):
                    raise TypeError('JCS: non-string key')
                check(item)
        elif isinstance(v, list):
            for item in v:
                check(item)
        elif not isinstance(v, str):
            raise TypeError('JCS here takes strings, objects and arrays only')
    check(value)

    def utf16(v):
        if isinstance(v, dict):
            return {k: utf16(v[k]) for k in sorted(v, key=lambda k: k.encode('utf-16-be'))}
        if isinstance(v, list):
            return [utf16(i) for i in v]
        return v
    return json.dumps(utf16(value), ensure_ascii=False, separators=(',', ':')).encode('utf-8')


# --- RPM headers ----------------------------------------------------------

def read_headers(path, sighdr=None):
    """(signature header, main header) of an RPM file, reading the lead and
    the headers only. sighdr: a signature header kept apart (Koji's sigcache)
    to use instead of the file's own, as Koji splices it in."""
    try:
        with open(path, 'rb') as fo:
            lead = fo.read(96)
            if len(lead) != 96 or lead[:4] != b'\xed\xab\xee\xdb':
                raise SourceGone('not an RPM (bad lead): %s' % path)
            own = read_header_at(fo, 96, pad=True)
            main = read_header_at(fo, 96 + len(own), pad=False)
    except OSError as e:
        raise SourceGone('cannot read RPM %s: %s' % (path, e.strerror or e))
    return (own if sighdr is None else sighdr), main


def read_header_at(fo, offset, pad):
    fo.seek(offset, os.SEEK_SET)
    intro = fo.read(16)
    if len(intro) != 16 or intro[:3] != HEADER_MAGIC[:3]:
        raise SourceGone('not an RPM (bad header magic at byte %d)' % offset)
    il, dl = int.from_bytes(intro[8:12], 'big'), int.from_bytes(intro[12:16], 'big')
    size = 16 + 16 * il + dl
    if il > 0xffff or size > MAX_HEADER:
        raise SourceGone('RPM header at byte %d is too large (%d entries, %d bytes)'
                                % (offset, il, dl))
    if pad:
        size += (8 - size % 8) % 8  # the signature header is padded to 8 bytes
    rest = fo.read(size - 16)
    if len(rest) != size - 16:
        raise SourceGone('RPM truncated in its header at byte %d' % offset)
    return intro + rest


def header_entries(header):
    """{tag: (type, offset, count)} and the data store of a header blob."""
    if len(header) < 16 or header[:3] != HEADER_MAGIC[:3]:
        raise SourceGone('corrupt RPM header: bad magic')
    il, dl = int.from_bytes(header[8:12], 'big'), int.from_bytes(header[12:16], 'big')
    end = 16 + 16 * il
    if il < 1 or il > 0xffff or len(header) < end + dl:
        raise SourceGone('corrupt RPM header: sizes do not fit')
    entries = []
    for i in range(il):
        e = header[16 + 16 * i:32 + 16 * i]
        entries.append((int.from_bytes(e[0:4], 'big'), int.from_bytes(e[4:8], 'big'),
                        int.from_bytes(e[8:12], 'big', signed=True),
                        int.from_bytes(e[12:16], 'big')))
    return entries, header[end:end + dl]


def header_bin(header, tag):
    """A binary (type 7) tag's bytes, or None."""
    entries, store = header_entries(header)
    for t, typ, offset, count in entries:
        if t == tag:
            if typ != 7 or offset < 0 or offset + count > len(store):
                raise SourceGone('corrupt signature header: tag %d' % tag)
            return store[offset:offset + count]
    return None


def signed_region(header):
    """What rpm's header signature covers (lib/header.c,
    hdrblobDigestUpdate): the constant magic, then the immutable region's
    entry count and data length, its index entries and its data. In a
    package file the region must be the whole header (hdrblobVerifyRegion
    with exact_size), so that is the header's bytes after its magic."""
    if header[:8] != HEADER_MAGIC:
        # rpm compares all 8 bytes (lib/header.c, hdrblobRead): "hdr magic: BAD".
        raise SourceGone('corrupt RPM main header: bad magic')
    entries, store = header_entries(header)
    il, dl = len(entries), len(store)
    tag, typ, offset, count = entries[0]
    if tag != HEADERIMMUTABLE or typ != REGION_TAG_TYPE or count != REGION_TAG_COUNT:
        raise SourceGone('corrupt RPM main header: no immutable region')
    if offset < 0 or offset + 16 > dl:
        raise SourceGone('corrupt RPM main header: region trailer out of range')
    trailer = store[offset:offset + 16]
    ril = -int.from_bytes(trailer[8:12], 'big', signed=True) // 16
    rdl = offset + 16
    if (int.from_bytes(trailer[0:4], 'big') != HEADERIMMUTABLE or ril != il or rdl != dl):
        raise SourceGone('corrupt RPM main header: the immutable region is not '
                                'the whole header')
    return HEADER_MAGIC + header[8:16 + 16 * il + dl]


# --- OpenPGP --------------------------------------------------------------

@dataclass(frozen=True)
class Signature:
    version: int
    pubkey_algorithm: int
    hash_algorithm: int
    trailer: bytes        # what is hashed after the data
    left16: bytes
    mpis: tuple           # the algorithm-specific integers
    issuer: tuple         # (key ID, fingerprint), upper-case hex or None


def read_mpis(data, pos, count):
    values = []
    for _ in range(count):
        if pos + 2 > len(data):
            raise ValueError('MPI past the end')
        bits = int.from_bytes(data[pos:pos + 2], 'big')
        size = (bits + 7) // 8
        if pos + 2 + size > len(data):
            raise ValueError('MPI past the end')
        values.append(int.from_bytes(data[pos + 2:pos + 2 + size], 'big'))
        pos += 2 + size
    return values, pos


def parse_signature(blob):
    """A v3 or v4 signature packet (RFC 4880 5.2.2, 5.2.3)."""
    packets = openpgp_packets(blob)
    if len(packets) != 1 or packets[0][0] != PGP_TAG_SIGNATURE or not packets[0][1]:
        raise SourceGone('the header signature is not an OpenPGP signature packet')
    sig = packets[0][1]
    version = sig[0]
    issuer = signature_issuer(blob) or (None, None)
    try:
        if version == 3:
            if len(sig) < 19 or sig[1] != 5:
                raise ValueError('short v3 signature')
            # v3: the signature type and creation time are hashed after the data.
            trailer = sig[2:7]
            pk, hash_alg, left16, pos = sig[15], sig[16], sig[17:19], 19
        elif version == 4:
            hashed = int.from_bytes(sig[4:6], 'big')
            end = 6 + hashed
            unhashed = int.from_bytes(sig[end:end + 2], 'big')
            pos = end + 2 + unhashed
            if pos + 2 > len(sig):
                raise ValueError('short v4 signature')
            # v4: version..hashed subpackets, then 0x04 0xFF and their length.
            trailer = sig[:end] + b'\x04\xff' + end.to_bytes(4, 'big')
            pk, hash_alg, left16, pos = sig[2], sig[3], sig[pos:pos + 2], pos + 2
        else:
            raise NotLoggableInV2('its header signature is an OpenPGP v%d signature; only v3 '
                                  'and v4 signatures can be logged in Rekor v2' % version)
        count = {PK_RSA: 1, PK_RSA_SIGN: 1}.get(pk, 2)
        mpis, _ = read_mpis(sig, pos, count) if pk in (PK_RSA, PK_RSA_SIGN, PK_DSA, PK_ECDSA) \
            else ((), pos)
    except (ValueError, IndexError) as e:
        raise SourceGone('corrupt OpenPGP header signature: %s' % e)
    return Signature(version, pk, hash_alg, bytes(trailer), bytes(left16), tuple(mpis), issuer)


@dataclass(frozen=True)
class KeyPacket:
    version: int
    algorithm: int
    body: bytes
    fingerprint: str      # v4: 40 hex digits; v3: None
    key_id: str           # 16 hex digits


def key_packets(armored):
    """Primary key and subkeys of an OpenPGP public key (RFC 4880 5.5.2)."""
    found = []
    for tag, body in openpgp_packets(armored):
        if tag not in (PGP_TAG_PUBLIC_KEY, PGP_TAG_PUBLIC_SUBKEY) or len(body) < 8:
            continue
        version = body[0]
        if version == 4:
            fp = key_packet_fingerprint(body)
            if fp is None:
                continue
            found.append(KeyPacket(4, body[5], bytes(body), fp, fp[-16:]))
        elif version in (2, 3):
            try:
                (n,), _ = read_mpis(body, 8, 1)
            except ValueError:
                continue
            # A v3 key's ID is the low 64 bits of its modulus (RFC 4880 12.2).
            found.append(KeyPacket(3, body[7], bytes(body), None,
                                   '%016X' % (n & 0xffffffffffffffff)))
    return found


def signing_key(armored, issuer):
    """The key packet an issuer (key ID, fingerprint) names."""
    key_id, fingerprint = issuer
    if not key_id and not fingerprint:
        raise SourceGone('the header signature names no issuer key')
    for key in key_packets(armored):
        if (fingerprint and key.fingerprint == fingerprint) or (
                key_id and key.key_id == key_id):
            return key
    raise SignatureSourceError('the public key given has no (sub)key %s, which made '
                                      'the header signature' % (fingerprint or key_id))


def der_public_key(key):
    """(DER SubjectPublicKeyInfo, cryptography key) of an RSA or ECDSA key
    packet; other algorithms are refused."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    body = key.body
    pos = 8 if key.version == 3 else 6
    try:
        if key.algorithm in (PK_RSA, PK_RSA_SIGN):
            (n, e), _ = read_mpis(body, pos, 2)
            public = rsa.RSAPublicNumbers(e, n).public_key()
        elif key.algorithm == PK_ECDSA:
            size = body[pos]
            oid = bytes(body[pos + 1:pos + 1 + size])
            if oid not in CURVES:
                raise NotLoggableInV2('its signing key is ECDSA on a curve Rekor v2 does not '
                                      'take (only NIST P-256, P-384 and P-521)')
            (point,), _ = read_mpis(body, pos + 1 + size, 1)
            curve = {'P-256': ec.SECP256R1, 'P-384': ec.SECP384R1,
                     'P-521': ec.SECP521R1}[CURVES[oid][0]]()
            width = (point.bit_length() + 7) // 8
            public = ec.EllipticCurvePublicKey.from_encoded_point(
                curve, point.to_bytes(width, 'big'))
        else:
            raise NotLoggableInV2(refusal_for_algorithm(key.algorithm))
    except (ValueError, IndexError) as e:
        raise SignatureSourceError('unusable OpenPGP public key: %s' % e)
    der = public.public_bytes(serialization.Encoding.DER,
                              serialization.PublicFormat.SubjectPublicKeyInfo)
    return der, public


def refusal_for_algorithm(algorithm):
    name = {PK_DSA: 'DSA', PK_EDDSA_LEGACY: 'EdDSA', PK_ED25519: 'Ed25519 (EdDSA)',
            PK_ED448: 'Ed448 (EdDSA)'}.get(algorithm, 'OpenPGP algorithm %d' % algorithm)
    why = ('OpenPGP EdDSA signs the digest itself, which no v2 key type (Ed25519ph) '
           'verifies' if algorithm in (PK_EDDSA_LEGACY, PK_ED25519, PK_ED448) else
           'Rekor v2 takes RSA and ECDSA keys only')
    return 'its header signature is %s, which Rekor v2 cannot log: %s' % (name, why)


# --- the entry ------------------------------------------------------------

def from_headers(sighdr, main_header, armored_key):
    """The hashedrekord entry of an RPM's header signature, from its
    signature header, its main header and the signer's OpenPGP public key.
    The signature must verify here first: a v2 log answers a bad one with a
    bare 400 that never says why."""
    blob = header_bin(sighdr, SIGTAG_RSA) or header_bin(sighdr, SIGTAG_DSA)
    if blob is None:
        entries, _ = header_entries(sighdr)
        if any(tag == RPMTAG_OPENPGP for tag, *_ in entries):
            raise NotLoggableInV2('its only signature is in RPMTAG_OPENPGP (rpm 6), which '
                                  'this version does not read: sign it with rpmsign --rpmv4')
        raise SourceGone('it has no header signature')
    sig = parse_signature(blob)
    if sig.pubkey_algorithm not in (PK_RSA, PK_RSA_SIGN, PK_ECDSA):
        raise NotLoggableInV2(refusal_for_algorithm(sig.pubkey_algorithm))
    key = signing_key(armored_key, sig.issuer)
    if key.algorithm != sig.pubkey_algorithm and not (
            {key.algorithm, sig.pubkey_algorithm} <= {PK_RSA, PK_RSA_SIGN}):
        raise SignatureSourceError('the header signature is by a different algorithm '
                                          'than key %s' % (key.fingerprint or key.key_id))
    der, public = der_public_key(key)
    hash_name = HASHES.get(sig.hash_algorithm, 'hash %d' % sig.hash_algorithm)
    if sig.pubkey_algorithm == PK_ECDSA:
        curve, wanted, details = next(v for v in CURVES.values()
                                      if v[0] == {'secp256r1': 'P-256', 'secp384r1': 'P-384',
                                                  'secp521r1': 'P-521'}[public.curve.name])
        if sig.hash_algorithm != wanted:
            raise NotLoggableInV2('its header signature is ECDSA %s with %s; Rekor v2 takes '
                                  '%s only with %s' % (curve, hash_name, curve, HASHES[wanted]))
        from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
        signature = encode_dss_signature(*sig.mpis)
    else:
        bits = (public.key_size + 7) // 8 * 8  # as Go's rsa.PublicKey.Size()*8
        if bits not in RSA_SIZES:
            raise NotLoggableInV2('its signing key is RSA-%d; Rekor v2 takes RSA keys of '
                                  '2048, 3072 or 4096 bits only' % public.key_size)
        if sig.hash_algorithm != HASH_SHA256:
            raise NotLoggableInV2(
                'its header signature is RSA with %s; Rekor v2 takes RSA with SHA-256 only '
                '(sign with rpmsign --define "_gpg_digest_algo sha256")' % hash_name)
        details = 'PKIX_RSA_PKCS1V15_%d_SHA256' % bits
        if sig.mpis[0].bit_length() > bits:
            raise SourceGone('corrupt header signature: larger than its key')
        # OpenPGP drops an MPI's leading zeros; PKCS #1 signatures are
        # exactly the modulus length (RFC 8017 8.2.2), and Go checks that.
        signature = sig.mpis[0].to_bytes(bits // 8, 'big')
    digest = hashlib.new(HASHES[sig.hash_algorithm].replace('-', '').lower(),
                         signed_region(main_header) + sig.trailer).digest()
    if digest[:2] != sig.left16:
        raise SourceGone('the header signature was not made over this header '
                                '(its digest prefix differs)')
    entry = HashedRekord(digest, sig.hash_algorithm, signature, der, details,
                         key.fingerprint or key.key_id)
    if not signature_verifies(entry):
        raise SignatureSourceError('the header signature does not verify with key %s'
                                          % entry.key_fingerprint)
    return entry


def signature_verifies(entry):
    """Whether the signature verifies over the digest with the DER key, as
    rekor-tiles checks it (sigstore's verifier with the digest given:
    PKCS #1 v1.5 or ECDSA over the prehashed digest)."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, padding, utils

    algorithm = {HASH_SHA256: hashes.SHA256(), HASH_SHA384: hashes.SHA384(),
                 HASH_SHA512: hashes.SHA512()}[entry.hash_algorithm]
    public = serialization.load_der_public_key(entry.public_key)
    try:
        if isinstance(public, ec.EllipticCurvePublicKey):
            public.verify(entry.signature, entry.digest, ec.ECDSA(utils.Prehashed(algorithm)))
        else:
            if len(entry.signature) != public.key_size // 8:
                return False
            public.verify(entry.signature, entry.digest, padding.PKCS1v15(),
                          utils.Prehashed(algorithm))
    except InvalidSignature:
        return False
    return True


def from_rpm_file(path, armored_key, sighdr=None):
    """The entry of an RPM file's header signature (headers read only)."""
    sighdr, main = read_headers(path, sighdr)
    try:
        return from_headers(sighdr, main, armored_key)
    except RekorLogError as e:
        raise type(e)('%s: %s' % (os.path.basename(path), e))
