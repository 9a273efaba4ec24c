"""Tests of the test-rpm factory itself: keys, builds, signatures, Koji layout."""

import os
import re
import time

import koji
import pytest

from tests.support import rpmfactory


@pytest.fixture(scope="session")
def gnupghome(tmp_path_factory):
    home = str(tmp_path_factory.mktemp("gnupg"))
    yield home
    rpmfactory.stop_gpg_agent(home)


@pytest.fixture(scope="session")
def rsa_key(gnupghome):
    return rpmfactory.generate_key(gnupghome, algo="rsa")


@pytest.fixture(scope="session")
def ed_key(gnupghome):
    return rpmfactory.generate_key(gnupghome, algo="ed25519")


@pytest.fixture(scope="session")
def unsigned_rpm(tmp_path_factory):
    return rpmfactory.build_rpm(tmp_path_factory.mktemp("build"))


def signature_lines(lines):
    return [line for line in lines if "Signature" in line]


@pytest.mark.parametrize("algo", ["rsa", "ed25519"])
def test_generate_key(algo, gnupghome, rsa_key, ed_key):
    key = {"rsa": rsa_key, "ed25519": ed_key}[algo]
    assert key.algo == algo
    assert re.fullmatch(r"[0-9A-F]{40}", key.fingerprint)
    assert key.keyid == key.fingerprint[-16:]
    assert key.sigkey == key.keyid[-8:].lower()
    assert key.armored.startswith(b"-----BEGIN PGP PUBLIC KEY BLOCK-----")
    with open(key.path, "rb") as fo:
        assert fo.read() == key.armored
    assert key.gnupghome == gnupghome
    assert os.stat(gnupghome).st_mode & 0o777 == 0o700


def test_build_rpm_is_unsigned(unsigned_rpm):
    assert os.path.basename(unsigned_rpm) == "hello-1.0-1.noarch.rpm"
    assert rpmfactory.sigkey_of(unsigned_rpm) is None
    # rpmkeys accepts it, but there is no signature to show.
    assert signature_lines(rpmfactory.rpmkeys_verify(unsigned_rpm, [])) == []


@pytest.mark.parametrize("algo,label", [("rsa", "RSA/SHA512"), ("ed25519", "EdDSA/SHA256")])
def test_sign_header_only(algo, label, rsa_key, ed_key, unsigned_rpm, tmp_path):
    key = {"rsa": rsa_key, "ed25519": ed_key}[algo]
    signed = rpmfactory.sign_rpm(unsigned_rpm, tmp_path / "signed.rpm", key)
    assert signed == str(tmp_path / "signed.rpm")
    assert rpmfactory.sigkey_of(signed) == key.sigkey
    assert rpmfactory.sigkey_of(unsigned_rpm) is None  # the source is left alone
    lines = rpmfactory.rpmkeys_verify(signed, [key.path])
    assert signature_lines(lines) == [
        "Header V4 %s Signature, key ID %s: OK" % (label, key.sigkey)]


@pytest.mark.parametrize("algo,label", [("rsa", "RSA/SHA512"), ("ed25519", "EdDSA/SHA256")])
def test_sign_rpmv3_adds_legacy_signature(algo, label, rsa_key, ed_key, unsigned_rpm, tmp_path):
    key = {"rsa": rsa_key, "ed25519": ed_key}[algo]
    signed = rpmfactory.sign_rpm(unsigned_rpm, tmp_path / "signed.rpm", key, rpmv3=True)
    assert rpmfactory.sigkey_of(signed) == key.sigkey
    lines = rpmfactory.rpmkeys_verify(signed, [key.path])
    assert signature_lines(lines) == [
        "Header V4 %s Signature, key ID %s: OK" % (label, key.sigkey),
        "V4 %s Signature, key ID %s: OK" % (label, key.sigkey)]


def test_verify_without_the_key_raises(rsa_key, ed_key, unsigned_rpm, tmp_path):
    signed = rpmfactory.sign_rpm(unsigned_rpm, tmp_path / "signed.rpm", ed_key)
    with pytest.raises(rpmfactory.CommandFailed, match="NOKEY"):
        rpmfactory.rpmkeys_verify(signed, [rsa_key.path])


def test_koji_import_signature_layout(rsa_key, unsigned_rpm, tmp_path):
    signed = rpmfactory.sign_rpm(unsigned_rpm, tmp_path / "signed.rpm", rsa_key)
    topdir = tmp_path / "koji"
    imp = rpmfactory.koji_import_signature(topdir, unsigned_rpm, signed)

    assert imp.sigkey == rsa_key.sigkey
    assert imp.unsigned_path == str(topdir / "packages/hello/1.0/1/noarch/hello-1.0-1.noarch.rpm")
    assert imp.sighdr_path == str(
        topdir / "packages/hello/1.0/1/data/sigcache" / rsa_key.sigkey
        / "noarch/hello-1.0-1.noarch.rpm.sig")
    assert imp.signed_path is None
    assert sorted(p.relative_to(topdir).as_posix() for p in topdir.rglob("*") if p.is_file()) \
        == sorted(os.path.relpath(p, topdir) for p in (imp.unsigned_path, imp.sighdr_path))

    with open(imp.sighdr_path, "rb") as fo:
        sighdr = fo.read()
    assert sighdr == koji.rip_rpm_sighdr(signed)
    assert imp.sighash == koji.util.md5_constructor(sighdr).hexdigest()
    with open(unsigned_rpm, "rb") as a, open(imp.unsigned_path, "rb") as b:
        assert a.read() == b.read()
    with koji.spliced_sig_reader(imp.unsigned_path, sighdr) as spliced, \
            open(signed, "rb") as fo:
        assert spliced.read() == fo.read()


def test_koji_import_signature_dicts(rsa_key, unsigned_rpm, tmp_path):
    signed = rpmfactory.sign_rpm(unsigned_rpm, tmp_path / "signed.rpm", rsa_key)
    imp = rpmfactory.koji_import_signature(tmp_path / "koji", unsigned_rpm, signed,
                                           build_id=7, rpm_id=42)
    hdr = koji.get_rpm_header(unsigned_rpm)
    build, rpm = imp.build, imp.rpm
    assert (build["id"], build["nvr"], build["volume_name"]) == (7, "hello-1.0-1", "DEFAULT")
    assert build["state"] == koji.BUILD_STATES["COMPLETE"]
    assert (rpm["id"], rpm["build_id"], rpm["arch"], rpm["epoch"]) == (42, 7, "noarch", None)
    assert rpm["payloadhash"] == koji.hex_string(koji.get_header_field(hdr, "sigmd5"))
    assert rpm["size"] == os.path.getsize(unsigned_rpm)
    assert (rpm["external_repo_id"], rpm["external_repo_name"]) == (0, "INTERNAL")
    # The hub derives every path from these dicts; they must lead to our files.
    pathinfo = koji.PathInfo(topdir=imp.topdir)
    builddir = pathinfo.build(build)
    assert os.path.join(builddir, pathinfo.rpm(rpm)) == imp.unsigned_path
    assert os.path.join(builddir, pathinfo.sighdr(rpm, imp.sigkey)) == imp.sighdr_path


def test_koji_import_second_key_and_signed_copy(rsa_key, ed_key, unsigned_rpm, tmp_path):
    topdir = tmp_path / "koji"
    by_rsa = rpmfactory.sign_rpm(unsigned_rpm, tmp_path / "rsa.rpm", rsa_key)
    by_ed = rpmfactory.sign_rpm(unsigned_rpm, tmp_path / "ed.rpm", ed_key, rpmv3=True)
    first = rpmfactory.koji_import_signature(topdir, unsigned_rpm, by_rsa)
    mtime = os.stat(first.unsigned_path).st_mtime_ns
    # The second import finds the package already in place.
    second = rpmfactory.koji_import_signature(topdir, first.unsigned_path, by_ed,
                                              write_signed_copy=True)
    assert os.stat(second.unsigned_path).st_mtime_ns == mtime
    assert second.sigkey == ed_key.sigkey != first.sigkey
    assert second.signed_path == os.path.join(
        str(topdir), "packages/hello/1.0/1/data/signed", ed_key.sigkey,
        "noarch/hello-1.0-1.noarch.rpm")
    with open(second.signed_path, "rb") as a, open(by_ed, "rb") as b:
        assert a.read() == b.read()


def test_koji_import_rejects_signature_of_another_rpm(rsa_key, unsigned_rpm, tmp_path):
    other = rpmfactory.build_rpm(tmp_path, release="2")
    signed_other = rpmfactory.sign_rpm(other, tmp_path / "other.rpm", rsa_key)
    with pytest.raises(ValueError, match="does not match"):
        rpmfactory.koji_import_signature(tmp_path / "koji", unsigned_rpm, signed_other)


def test_koji_import_on_a_volume(rsa_key, unsigned_rpm, tmp_path):
    signed = rpmfactory.sign_rpm(unsigned_rpm, tmp_path / "signed.rpm", rsa_key)
    imp = rpmfactory.koji_import_signature(tmp_path, unsigned_rpm, signed, volume_name="archive")
    assert imp.build["volume_name"] == "archive"
    assert imp.unsigned_path == str(
        tmp_path / "vol/archive/packages/hello/1.0/1/noarch/hello-1.0-1.noarch.rpm")
    assert imp.sighdr_path == str(
        tmp_path / "vol/archive/packages/hello/1.0/1/data/sigcache" / rsa_key.sigkey
        / "noarch/hello-1.0-1.noarch.rpm.sig")


def test_arch_and_epoch(rsa_key, tmp_path):
    unsigned = rpmfactory.build_rpm(tmp_path, name="tool", version="2.3", release="4.fc40",
                                    arch="x86_64", epoch=3)
    assert os.path.basename(unsigned) == "tool-2.3-4.fc40.x86_64.rpm"
    hdr = koji.get_rpm_header(unsigned)
    assert koji.get_header_fields(hdr, ["arch", "epoch"]) == {"arch": "x86_64", "epoch": 3}
    signed = rpmfactory.sign_rpm(unsigned, tmp_path / "signed.rpm", rsa_key)
    imp = rpmfactory.koji_import_signature(tmp_path / "koji", unsigned, signed)
    assert imp.build["epoch"] == imp.rpm["epoch"] == 3
    assert imp.sighdr_path == str(
        tmp_path / "koji/packages/tool/2.3/4.fc40/data/sigcache" / rsa_key.sigkey
        / "x86_64/tool-2.3-4.fc40.x86_64.rpm.sig")


def test_payload_bytes_builds_large_rpm_quickly(rsa_key, tmp_path):
    size = 5 * 1000 * 1000
    start = time.monotonic()
    unsigned = rpmfactory.build_rpm(tmp_path, name="big", payload_bytes=size)
    elapsed = time.monotonic() - start
    # Random data in an uncompressed payload: the rpm is the data plus headers.
    assert size <= os.path.getsize(unsigned) < size + 100_000
    assert elapsed < 30
    assert not [p for p in os.listdir(tmp_path) if p.startswith("rpmbuild-")]
    signed = rpmfactory.sign_rpm(unsigned, tmp_path / "signed.rpm", rsa_key)
    assert signature_lines(rpmfactory.rpmkeys_verify(signed, [rsa_key.path])) == [
        "Header V4 RSA/SHA512 Signature, key ID %s: OK" % rsa_key.sigkey]
