"""koji_rekor.v2.hashedrekord: an RPM's header signature as a Rekor v2 entry.

The check that matters is the one the v2 log makes: `cryptography` verifies
the entry's signature over its digest with its DER key (PKCS #1 v1.5 or
ECDSA over a prehashed digest), as rekor-tiles' ToLogEntry does with Go's
crypto. Real distribution RPMs, and RPMs signed here by rpmsign with gpg.
"""

import base64
import json
import os
import shutil
import subprocess
import tempfile

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

from tests.support import rpmfactory
from tests.support import sigheader
from koji_rekor.v2 import hashedrekord
from koji_rekor.v2.hashedrekord import NotLoggableInV2

from tests.support.common import ROOT  # noqa: E402
REAL = os.path.join(os.path.dirname(ROOT), 'shared', 'rekor-real', 'rpms')
# (rpm, key, RSA bits, signing key's fingerprint, signature packet version):
# the test package's header signature is a v4 packet, CentOS 8's a v3 one.
REAL_RPMS = [('test-package-1.0-1.noarch.rpm', 'test-6b5c00fd2745ac5c.asc', 2048,
              'E483A3B010F05CA003D849686B5C00FD2745AC5C', 4),
             ('NetworkManager-bluetooth-1.26.0-8.el8.x86_64.rpm',
              'centos-8-05b555b38483c65d.asc', 4096,
              '99DB70FAE1D7CE227FB6488205B555B38483C65D', 3)]
needs_real = pytest.mark.skipif(not os.path.isdir(REAL), reason='../shared/rekor-real absent')


def server_verifies(entry):
    """What rekor-tiles does with the request: parse the DER key (Go's
    x509.ParsePKIXPublicKey), check the signature over the digest."""
    request = entry.request()['hashedRekordRequestV002']
    digest = base64.b64decode(request['digest'])
    sig = base64.b64decode(request['signature']['content'])
    key = serialization.load_der_public_key(
        base64.b64decode(request['signature']['verifier']['publicKey']['rawBytes']))
    algorithm = {32: hashes.SHA256(), 48: hashes.SHA384(), 64: hashes.SHA512()}[len(digest)]
    if isinstance(key, rsa.RSAPublicKey):
        assert len(sig) == key.key_size // 8  # Go's VerifyPKCS1v15 wants exactly this
        key.verify(sig, digest, padding.PKCS1v15(), utils.Prehashed(algorithm))
    else:
        key.verify(sig, digest, ec.ECDSA(utils.Prehashed(algorithm)))
    return True


# --- RPMs made here -------------------------------------------------------

def gpg_key(home, algo, name):
    """A throwaway gpg key of any algorithm gpg knows (rpmfactory knows RSA
    and ed25519 only)."""
    env = dict(os.environ, GNUPGHOME=home)
    out = subprocess.run(['gpg', '--batch', '--yes', '--passphrase', '', '--status-fd', '1',
                          '--quick-gen-key', '%s <%s@example.test>' % (name, algo), algo,
                          'sign', 'never'], env=env, capture_output=True, timeout=120,
                         check=True, stdin=subprocess.DEVNULL).stdout.decode()
    fp = rpmfactory._created_fingerprint(out)
    armored = subprocess.run(['gpg', '--batch', '--export', '--armor', fp], env=env,
                             capture_output=True, timeout=60, check=True).stdout
    path = os.path.join(home, '%s.asc' % fp[-16:])
    with open(path, 'wb') as fo:
        fo.write(armored)
    return rpmfactory.GpgKey(keyid=fp[-16:], sigkey=fp[-8:].lower(), fingerprint=fp,
                             algo=algo, armored=armored, path=path, gnupghome=home)


def sign(src, dst, key, digest_algo='sha256', rpmv3=False):
    """rpmfactory.sign_rpm with the digest algorithm chosen (v2 needs SHA-256)."""
    shutil.copyfile(src, dst)
    with tempfile.TemporaryDirectory(prefix='rpmdb-') as dbpath:
        cmd = ['rpmsign', '--dbpath', dbpath, '--define', '__gpg %s' % shutil.which('gpg'),
               '--define', '_gpg_path %s' % key.gnupghome,
               '--define', '_gpg_name %s' % key.fingerprint]
        if digest_algo:
            cmd += ['--define', '_gpg_digest_algo %s' % digest_algo]
        if rpmv3:
            cmd.append('--rpmv3')
        subprocess.run(cmd + ['--addsign', dst], env=dict(os.environ, GNUPGHOME=key.gnupghome),
                       capture_output=True, timeout=300, check=True, stdin=subprocess.DEVNULL)
    return dst


@pytest.fixture(scope='module')
def v2keys(tmp_path_factory):
    home = str(tmp_path_factory.mktemp('gnupg-v2'))
    os.chmod(home, 0o700)
    made = {algo: gpg_key(home, algo, 'v2 %s' % algo)
            for algo in ('rsa2048', 'rsa3072', 'nistp256', 'nistp384', 'nistp521', 'ed25519',
                         'rsa1024', 'dsa2048', 'brainpoolP256r1')}
    yield made
    rpmfactory.stop_gpg_agent(home)


@pytest.fixture(scope='module')
def unsigned(tmp_path_factory):
    return rpmfactory.build_rpm(str(tmp_path_factory.mktemp('build-v2')), name='v2pkg')


def gpg_signed(tmp_path, unsigned, key, digest):
    """rpm 4.18 here cannot make ECDSA signatures ("Unsupported PGP
    signature"): gpg signs the main header as rpmsign has it do, and the
    packet goes into the RSA tag, where rpm puts every non-DSA header
    signature (tests/support/sigheader.py writes the header)."""
    _, main = hashedrekord.read_headers(unsigned)
    packet = subprocess.run(
        ['gpg', '--batch', '--no-armor', '--detach-sign', '--digest-algo', digest,
         '-u', key.fingerprint, '-o', '-'], input=main,
        env=dict(os.environ, GNUPGHOME=key.gnupghome), capture_output=True, timeout=60,
        check=True).stdout

    def change(entries):
        entries[sigheader.TAG_RSA] = (sigheader.BIN, len(packet), packet)
    return sigheader.rewrite(unsigned, str(tmp_path / ('%s-%s.rpm' % (key.algo, digest))),
                             change)


def signed(tmp_path, unsigned, key, digest='sha256', rpmv3=False):
    if key.algo.startswith(('nist', 'brainpool')):
        return gpg_signed(tmp_path, unsigned, key, digest)
    return sign(unsigned, str(tmp_path / ('%s-%s-%s.rpm' % (key.algo, digest, rpmv3))), key,
                digest, rpmv3)


# --- tests ----------------------------------------------------------------

@needs_real
@pytest.mark.parametrize('rpm, asc, bits, fingerprint, version', REAL_RPMS)
def test_real_rpms_verify_as_the_v2_log_checks(rpm, asc, bits, fingerprint, version):
    with open(os.path.join(REAL, asc), 'rb') as fo:
        key = fo.read()
    sighdr, _ = hashedrekord.read_headers(os.path.join(REAL, rpm))
    assert hashedrekord.parse_signature(
        hashedrekord.header_bin(sighdr, hashedrekord.SIGTAG_RSA)).version == version
    entry = hashedrekord.from_rpm_file(os.path.join(REAL, rpm), key)
    assert entry.key_details == 'PKIX_RSA_PKCS1V15_%d_SHA256' % bits
    assert entry.key_fingerprint == fingerprint
    assert len(entry.signature) == bits // 8
    assert server_verifies(entry)


@needs_real
def test_real_rpm_padded_signature_and_body_shape():
    rpm, asc = REAL_RPMS[0][:2]
    with open(os.path.join(REAL, asc), 'rb') as fo:
        entry = hashedrekord.from_rpm_file(os.path.join(REAL, rpm), fo.read())
    body = json.loads(entry.canonical_body())
    # The shape the production log stored (../shared/rekor-v2-real, entries/).
    assert sorted(body) == ['apiVersion', 'kind', 'spec']
    assert (body['kind'], body['apiVersion']) == ('hashedrekord', '0.0.2')
    spec = body['spec']['hashedRekordV002']
    assert spec['data'] == {'algorithm': 'SHA2_256', 'digest': base64.b64encode(
        entry.digest).decode()}
    assert spec['signature'] == entry.request()['hashedRekordRequestV002']['signature']
    assert entry.canonical_body() == json.dumps(body, sort_keys=True,
                                                separators=(',', ':')).encode()


def test_canonical_body_matches_the_real_logged_one():
    """The production 201 answer's canonicalizedBody, rebuilt from its parts."""
    path = os.path.join(os.path.dirname(ROOT), 'shared', 'rekor-v2-real', 'entries',
                        'log2025-1.idx412114.hashedrekord.create-response.json')
    if not os.path.exists(path):
        pytest.skip('../shared/rekor-v2-real absent')
    with open(path) as fo:
        logged = base64.b64decode(json.load(fo)['canonicalizedBody'])
    spec = json.loads(logged)['spec']['hashedRekordV002']
    verifier = spec['signature']['verifier']
    entry = hashedrekord.HashedRekord(
        base64.b64decode(spec['data']['digest']), hashedrekord.HASH_SHA256,
        base64.b64decode(spec['signature']['content']),
        base64.b64decode(verifier['publicKey']['rawBytes']), verifier['keyDetails'], '')
    assert entry.canonical_body() == logged
    assert server_verifies(entry)


@pytest.mark.parametrize('algo, details, rpmv3', [
    ('rsa2048', 'PKIX_RSA_PKCS1V15_2048_SHA256', False),
    ('rsa2048', 'PKIX_RSA_PKCS1V15_2048_SHA256', True),
    ('rsa3072', 'PKIX_RSA_PKCS1V15_3072_SHA256', False),
    ('rsa3072', 'PKIX_RSA_PKCS1V15_3072_SHA256', True),
    ('nistp256', 'PKIX_ECDSA_P256_SHA_256', False)])
def test_sha256_signed_rpms_verify(tmp_path, v2keys, unsigned, algo, details, rpmv3):
    key = v2keys[algo]
    path = signed(tmp_path, unsigned, key, 'sha256', rpmv3)
    entry = hashedrekord.from_rpm_file(path, key.armored)
    assert entry.key_details == details
    assert entry.key_fingerprint == key.fingerprint
    assert server_verifies(entry)
    # The same signature from Koji's sigcache spliced onto the unsigned RPM.
    sighdr, _ = hashedrekord.read_headers(path)
    assert hashedrekord.from_rpm_file(unsigned, key.armored, sighdr=sighdr) == entry


@pytest.mark.parametrize('algo, digest, details, size, name', [
    ('nistp384', 'sha384', 'PKIX_ECDSA_P384_SHA_384', 48, 'SHA2_384'),
    ('nistp521', 'sha512', 'PKIX_ECDSA_P521_SHA_512', 64, 'SHA2_512')])
def test_larger_curves_use_their_hash(tmp_path, v2keys, unsigned, algo, digest, details, size,
                                      name):
    key = v2keys[algo]
    entry = hashedrekord.from_rpm_file(signed(tmp_path, unsigned, key, digest), key.armored)
    assert entry.key_details == details and len(entry.digest) == size
    assert json.loads(entry.canonical_body())['spec']['hashedRekordV002']['data'][
        'algorithm'] == name
    assert server_verifies(entry)


@pytest.mark.parametrize('algo, digest, reason', [
    ('ed25519', 'sha256', 'is EdDSA, which Rekor v2 cannot log'),
    ('rsa2048', 'sha512', 'RSA with SHA-512; Rekor v2 takes RSA with SHA-256 only'),
    ('rsa2048', 'sha1', 'RSA with SHA-1; Rekor v2 takes RSA with SHA-256 only'),
    ('nistp256', 'sha512', 'ECDSA P-256 with SHA-512; Rekor v2 takes P-256 only with SHA-256'),
    ('rsa1024', 'sha256', 'RSA-1024; Rekor v2 takes RSA keys of 2048, 3072 or 4096 bits only'),
    ('dsa2048', 'sha256', 'is DSA, which Rekor v2 cannot log'),
    ('brainpoolP256r1', 'sha256', 'ECDSA on a curve Rekor v2 does not take'),
])
def test_what_v2_cannot_hold_is_refused_with_a_reason(tmp_path, v2keys, unsigned, algo,
                                                        digest, reason):
    key = v2keys[algo]
    path = signed(tmp_path, unsigned, key, digest)
    with pytest.raises(NotLoggableInV2) as caught:
        hashedrekord.from_rpm_file(path, key.armored)
    assert reason in str(caught.value) and '\n' not in str(caught.value)
    assert caught.value.permanent


def test_signing_subkey_is_the_key_logged(tmp_path, unsigned):
    """A primary key that only certifies, and a signing subkey: the DER key
    is the subkey's, found by the issuer in the signature."""
    home = str(tmp_path / 'gnupg')
    os.makedirs(home, mode=0o700)
    env = dict(os.environ, GNUPGHOME=home)
    run = lambda *cmd: subprocess.run(['gpg', '--batch', '--yes', '--passphrase', ''] +  # noqa
                                      list(cmd), env=env, capture_output=True, timeout=120,
                                      check=True, stdin=subprocess.DEVNULL).stdout.decode()
    try:
        primary = rpmfactory._created_fingerprint(run('--status-fd', '1', '--quick-gen-key',
                                                      'sub <sub@example.test>', 'rsa2048',
                                                      'cert', 'never'))
        run('--quick-add-key', primary, 'rsa3072', 'sign', 'never')
        colons = run('--with-colons', '--with-subkey-fingerprint', '--list-keys', primary)
        fprs = [line.split(':')[9] for line in colons.splitlines() if line.startswith('fpr')]
        subkey = fprs[1]
        armored = run('--armor', '--export', primary).encode()
        key = rpmfactory.GpgKey(keyid=primary[-16:], sigkey=primary[-8:].lower(),
                                fingerprint=primary, algo='sub', armored=armored, path='',
                                gnupghome=home)
        entry = hashedrekord.from_rpm_file(signed(tmp_path, unsigned, key), armored)
    finally:
        rpmfactory.stop_gpg_agent(home)
    assert entry.key_fingerprint == subkey != primary
    assert entry.key_details == 'PKIX_RSA_PKCS1V15_3072_SHA256'
    assert server_verifies(entry)


def test_wrong_key_is_not_a_v2_refusal(tmp_path, v2keys, unsigned):
    path = signed(tmp_path, unsigned, v2keys['rsa2048'])
    with pytest.raises(hashedrekord.SignatureSourceError, match='has no .*key'):
        hashedrekord.from_rpm_file(path, v2keys['rsa3072'].armored)


def test_tampered_header_is_caught_before_sending(tmp_path, v2keys, unsigned):
    key = v2keys['rsa2048']
    path = signed(tmp_path, unsigned, key)
    sighdr, main = hashedrekord.read_headers(path)
    bad = bytearray(main)
    bad[-3] ^= 1  # a byte of the header's data store
    with pytest.raises(hashedrekord.SourceGone, match='not made over this header'):
        hashedrekord.from_headers(sighdr, bytes(bad), key.armored)


def test_main_header_magic_is_all_eight_bytes(tmp_path, v2keys, unsigned):
    """rpm refuses a header whose reserved bytes are not zero, and hashes
    the constant magic: so must we, rather than hash what is on disk."""
    key = v2keys['rsa2048']
    sighdr, main = hashedrekord.read_headers(signed(tmp_path, unsigned, key))
    with pytest.raises(hashedrekord.SourceGone, match='bad magic'):
        hashedrekord.from_headers(sighdr, main[:7] + b'\x01' + main[8:], key.armored)


def test_payload_is_never_read(tmp_path, v2keys, unsigned):
    """Only the lead and the headers are read: a file cut right after the
    main header gives the same entry."""
    key = v2keys['rsa2048']
    path = signed(tmp_path, unsigned, key)
    sighdr, main = hashedrekord.read_headers(path)
    cut = str(tmp_path / 'cut.rpm')
    with open(path, 'rb') as fo, open(cut, 'wb') as out:
        out.write(fo.read(96 + len(sighdr) + len(main)))
    assert hashedrekord.from_rpm_file(cut, key.armored) == \
        hashedrekord.from_rpm_file(path, key.armored)


def test_not_an_rpm(tmp_path):
    path = tmp_path / 'x.rpm'
    path.write_bytes(b'hello' * 100)
    with pytest.raises(hashedrekord.SourceGone, match='not an RPM'):
        hashedrekord.from_rpm_file(str(path), b'')


@needs_real
@pytest.mark.parametrize('rpm, asc', [r[:2] for r in REAL_RPMS])
def test_corrupt_headers_and_keys_give_a_one_line_cause(rpm, asc):
    """Byte flips anywhere in the signature header, the main header's start
    or the key: a RekorLogError with a one-line cause, never another error."""
    import random
    import koji_rekor.errors
    with open(os.path.join(REAL, asc), 'rb') as fo:
        key = fo.read()
    sighdr, main = hashedrekord.read_headers(os.path.join(REAL, rpm))
    rng = random.Random(22)
    outcomes = set()
    for _ in range(1500):
        which = rng.randrange(3)
        blob = bytearray((sighdr, main[:4096], key)[which])
        for _ in range(rng.randrange(1, 4)):
            blob[rng.randrange(len(blob))] = rng.randrange(256)
        args = [sighdr, main, key]
        args[which] = bytes(blob) + (main[4096:] if which == 1 else b'')
        try:
            hashedrekord.from_headers(*args)
            outcomes.add('ok')
        except koji_rekor.errors.RekorLogError as e:
            assert str(e) and '\n' not in str(e)
            outcomes.add(type(e).__name__)
    assert len(outcomes) > 1


@needs_real
def test_rsa_signature_longer_than_its_key_is_a_corrupt_signature(tmp_path):
    """An MPI claiming more bits than the modulus has: a one-line cause, not
    an OverflowError from padding it."""
    rpm, asc = REAL_RPMS[0][:2]
    with open(os.path.join(REAL, asc), 'rb') as fo:
        key = fo.read()

    def change(entries):
        kind, count, packet = entries[sigheader.TAG_RSA]
        (tag, body), = hashedrekord.openpgp_packets(packet)
        end = 6 + int.from_bytes(body[4:6], 'big')
        mpi_at = end + 2 + int.from_bytes(body[end:end + 2], 'big') + 2
        body = body[:mpi_at] + (2056).to_bytes(2, 'big') + b'\x01' * 257
        packet = bytes([0xc0 | tag, 192 + ((len(body) - 192) >> 8), (len(body) - 192) & 0xff]
                       ) + body
        entries[sigheader.TAG_RSA] = (kind, len(packet), packet)
    bad = sigheader.rewrite(os.path.join(REAL, rpm), str(tmp_path / 'bad.rpm'), change)
    with pytest.raises(hashedrekord.SourceGone, match='larger than its key'):
        hashedrekord.from_rpm_file(bad, key)
