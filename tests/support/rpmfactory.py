"""Make real signed RPMs and lay out a Koji topdir the way the hub does.

Used by the test suite, the demo script and the benchmark.  Everything runs
against private state: a caller-chosen GNUPGHOME and throwaway rpm databases,
never the user's ~/.gnupg or the system rpmdb.
"""

# Lazy annotations: `str | None` must not be evaluated on the older Pythons
# setup.cfg allows.
from __future__ import annotations

import datetime
import os
import shlex
import shutil
import subprocess
import tempfile
import textwrap
from dataclasses import dataclass

import koji
import koji.util

# Generous upper bounds: a hung gpg-agent or rpm must fail the caller, not hang it.
GPG_TIMEOUT = 60
RPMKEYS_TIMEOUT = 60
BASE_RPM_TIMEOUT = 120
# Extra seconds allowed per byte of payload; ~20 MB/s is far below what
# urandom, rpmbuild and rpmsign manage uncompressed, so only a stuck tool trips it.
SECONDS_PER_BYTE = 1 / 20e6

CHUNK_SIZE = 1 << 20  # keeps the factory's own memory flat for GB-sized payloads

GPG_ALGOS = {"rsa": "rsa2048", "ed25519": "ed25519"}


class CommandFailed(RuntimeError):
    """A helper tool exited non-zero; the message carries its output."""


@dataclass
class GpgKey:
    keyid: str        # 16 upper-case hex digits
    sigkey: str       # Koji's name for the key: last 8 hex digits, lower case
    fingerprint: str  # 40 upper-case hex digits
    algo: str         # 'rsa' or 'ed25519'
    armored: bytes    # ASCII-armoured public key
    path: str         # the armoured public key, exported to a .asc file
    gnupghome: str    # private keyring holding the secret key


@dataclass
class KojiImport:
    topdir: str
    build: dict             # as kojihub.get_build returns it
    rpm: dict               # as kojihub.get_rpm returns it
    sigkey: str             # '' for an unsigned header, as the hub stores it
    sighash: str            # md5 hex of the signature header
    unsigned_path: str      # <builddir>/<arch>/<nvra>.rpm
    sighdr_path: str        # <builddir>/data/sigcache/<sigkey>/<arch>/<nvra>.rpm.sig
    signed_path: str | None  # <builddir>/data/signed/<sigkey>/<arch>/<nvra>.rpm if written


def _run(cmd, timeout, env=None):
    """Run cmd; raise CommandFailed with its output when it exits non-zero."""
    proc = subprocess.run(cmd, env=env, capture_output=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise CommandFailed("%s exited %d\nstdout:\n%s\nstderr:\n%s" % (
            shlex.join(cmd), proc.returncode,
            proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace")))
    return proc.stdout.decode()


def _gpg_env(gnupghome):
    return dict(os.environ, GNUPGHOME=gnupghome)


def _size_timeout(nbytes):
    return BASE_RPM_TIMEOUT + nbytes * SECONDS_PER_BYTE


# --- keys -------------------------------------------------------------------

def generate_key(gnupghome, algo="rsa", name="Koji Test Key"):
    """Create a passphrase-less signing key in gnupghome and export its public half."""
    if algo not in GPG_ALGOS:
        raise ValueError("algo must be one of %s" % sorted(GPG_ALGOS))
    gnupghome = os.path.abspath(gnupghome)
    os.makedirs(gnupghome, exist_ok=True)
    os.chmod(gnupghome, 0o700)  # gpg warns about, and agents may refuse, open homes
    env = _gpg_env(gnupghome)
    uid = "%s <%s@example.test>" % (name, algo)
    # --yes: several keys with the same uid in one home are fine for tests;
    # the status line tells us which one was just made.
    status = _run(["gpg", "--batch", "--yes", "--passphrase", "", "--status-fd", "1",
                   "--quick-gen-key", uid, GPG_ALGOS[algo], "sign", "never"],
                  GPG_TIMEOUT, env)
    fingerprint = _created_fingerprint(status)
    keyid = fingerprint[-16:]  # a V4 key id is the fingerprint's low 64 bits
    armored = _run(["gpg", "--batch", "--export", "--armor", fingerprint],
                   GPG_TIMEOUT, env).encode()
    path = os.path.join(gnupghome, "%s.asc" % keyid)
    with open(path, "wb") as fo:
        fo.write(armored)
    return GpgKey(keyid=keyid, sigkey=keyid[-8:].lower(), fingerprint=fingerprint,
                  algo=algo, armored=armored, path=path, gnupghome=gnupghome)


def _created_fingerprint(status):
    for line in status.splitlines():
        fields = line.split()
        if fields[:2] == ["[GNUPG:]", "KEY_CREATED"]:
            return fields[3].upper()
    raise CommandFailed("gpg reported no KEY_CREATED:\n%s" % status)


def stop_gpg_agent(gnupghome):
    """Stop the gpg-agent that gpg started for gnupghome, so it does not outlive the test."""
    _run(["gpgconf", "--kill", "gpg-agent"], GPG_TIMEOUT, _gpg_env(gnupghome))


# --- building and signing ---------------------------------------------------

def build_rpm(workdir, name="hello", version="1.0", release="1", arch="noarch",
              epoch=None, payload_bytes=0):
    """Build an unsigned binary rpm and return its path, <workdir>/<nvra>.rpm."""
    workdir = os.path.abspath(workdir)
    os.makedirs(workdir, exist_ok=True)
    # A private rpmbuild tree per call, so builds sharing a workdir don't mix.
    top = tempfile.mkdtemp(prefix="rpmbuild-", dir=workdir)
    try:
        data_path = None
        if payload_bytes:
            data_path = os.path.join(top, "payload.bin")
            _write_random(data_path, payload_bytes)
        spec = os.path.join(top, "%s.spec" % name)
        with open(spec, "w") as fo:
            fo.write(_spec_text(name, version, release, arch, epoch, data_path))
        _run(_rpmbuild_cmd(top, spec, arch), _size_timeout(payload_bytes))
        nvra = "%s-%s-%s.%s" % (name, version, release, arch)
        dst = os.path.join(workdir, nvra + ".rpm")
        os.replace(os.path.join(top, "RPMS", arch, nvra + ".rpm"), dst)
        return dst
    finally:
        # The tree holds a second copy of any payload; drop it to save disk.
        shutil.rmtree(top, ignore_errors=True)


def _write_random(path, nbytes):
    # Incompressible, so the rpm really is nbytes big whatever the payload codec.
    with open(path, "wb") as fo:
        remaining = nbytes
        while remaining:
            chunk = min(remaining, CHUNK_SIZE)
            fo.write(os.urandom(chunk))
            remaining -= chunk


def _spec_text(name, version, release, arch, epoch, data_path):
    lines = ["Name: %s" % name, "Version: %s" % version, "Release: %s" % release]
    if epoch is not None:
        lines.append("Epoch: %d" % epoch)
    lines += ["Summary: Test package made by rpmfactory", "License: MIT"]
    if arch == "noarch":
        lines.append("BuildArch: noarch")  # other arches come from --target
    install = ["mkdir -p %{buildroot}/usr/share/%{name}",
               "echo %s > %%{buildroot}/usr/share/%%{name}/README" % shlex.quote(name)]
    if data_path:
        # A hard link (same filesystem, inside the build tree) instead of a
        # copy: for a 1 GB payload that saves writing another gigabyte.
        install.append("ln %s %%{buildroot}/usr/share/%%{name}/payload.bin"
                       % shlex.quote(data_path))
    return "\n".join(lines) + "\n" + textwrap.dedent("""
        %%description
        Test package made by tests/support/rpmfactory.py.

        %%install
        %s

        %%files
        /usr/share/%%{name}
        """) % "\n".join(install)


def _rpmbuild_cmd(top, spec, arch):
    cmd = ["rpmbuild",
           "--dbpath", os.path.join(top, "db"),
           "--define", "_topdir %s" % top,
           "--define", "_tmppath %s" % top,
           # Uncompressed payload: compressing random data is slow and useless.
           "--define", "_binary_payload w0.ufdio",
           # No debuginfo or brp scripts: nothing to strip, and they would
           # scan every byte of a large payload.
           "--define", "debug_package %{nil}",
           "--define", "__os_install_post %{nil}"]
    if arch != "noarch":
        # Without --target rpmbuild would build for the host's arch only.
        cmd += ["--target", arch]
    return cmd + ["-bb", spec]


def sign_rpm(src, dst, key, rpmv3=False, digest_algo=None):
    """Copy src to dst and sign dst with key; rpmv3 adds the legacy header+payload signature.
    digest_algo: gpg's hash (Rekor v2 takes RSA with "sha256" only; gpg's own
    choice depends on the key and its preferences)."""
    dst = os.path.abspath(dst)
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    shutil.copyfile(src, dst)
    gpg = shutil.which("gpg")
    if gpg is None:
        raise CommandFailed("gpg not found on PATH")
    with tempfile.TemporaryDirectory(prefix="rpmdb-") as dbpath:
        cmd = ["rpmsign", "--dbpath", dbpath,
               "--define", "__gpg %s" % gpg,
               # _gpg_path overrides GNUPGHOME inside rpmsign if a user's
               # ~/.rpmmacros sets it; pin it to the private keyring.
               "--define", "_gpg_path %s" % key.gnupghome,
               "--define", "_gpg_name %s" % key.fingerprint]
        if digest_algo:
            cmd += ["--define", "_gpg_digest_algo %s" % digest_algo]
        if rpmv3:
            cmd.append("--rpmv3")
        cmd += ["--addsign", dst]
        _run(cmd, _size_timeout(os.path.getsize(dst)), _gpg_env(key.gnupghome))
    return dst


def rpmkeys_verify(path, key_paths):
    """Return the lines of `rpmkeys -Kv path` with key_paths imported into a private rpmdb.

    An unsigned rpm verifies too (exit 0); callers look for the 'Signature ... OK' lines.
    """
    if isinstance(key_paths, (str, os.PathLike)):
        key_paths = [key_paths]
    timeout = _size_timeout(os.path.getsize(path))
    with tempfile.TemporaryDirectory(prefix="rpmdb-") as dbpath:
        for key_path in key_paths:
            _run(["rpmkeys", "--dbpath", dbpath, "--import", os.fspath(key_path)],
                 RPMKEYS_TIMEOUT)
        out = _run(["rpmkeys", "--dbpath", dbpath, "-Kv", os.fspath(path)], timeout)
    # The first line is '<path>:'; the checks follow, indented.
    return [line.strip() for line in out.splitlines()[1:] if line.strip()]


def sigkey_of(rpm_path):
    """Koji's sigkey for an rpm's signature header, None if it is unsigned."""
    return koji.get_sighdr_key(koji.rip_rpm_sighdr(rpm_path))


# --- Koji topdir ------------------------------------------------------------

def koji_import_signature(topdir, unsigned_rpm, signed_rpm, build_id=1, rpm_id=1,
                          write_signed_copy=False, volume_name="DEFAULT"):
    """Leave topdir as the hub's add_rpm_sig leaves it after importing signed_rpm's signature.

    The unsigned rpm goes where the build import put it (unless already there),
    the signature header into the sigcache; with write_signed_copy also the
    spliced rpm that `koji write-signed-rpm` writes.
    """
    topdir = os.path.abspath(topdir)
    pathinfo = koji.PathInfo(topdir=topdir)
    hdr = koji.get_rpm_header(unsigned_rpm)
    binfo = _build_info(hdr, build_id, volume_name)
    builddir = pathinfo.build(binfo)
    unsigned_path = os.path.join(builddir, pathinfo.rpm(_nvra_fields(hdr)))
    _place_unsigned(unsigned_rpm, unsigned_path)
    rinfo = _rpm_info(koji.get_rpm_header(unsigned_path), unsigned_path, rpm_id, build_id)

    sighdr = koji.rip_rpm_sighdr(signed_rpm)
    _check_sighdr_matches(sighdr, rinfo)
    # The hub records an unsigned header under sigkey ''.
    sigkey = koji.get_sighdr_key(sighdr) or ""
    sighdr_path = os.path.join(builddir, pathinfo.sighdr(rinfo, sigkey))
    os.makedirs(os.path.dirname(sighdr_path), exist_ok=True)
    with open(sighdr_path, "wb") as fo:
        fo.write(sighdr)

    signed_path = None
    if write_signed_copy:
        signed_path = os.path.join(builddir, pathinfo.signed(rinfo, sigkey))
        koji.splice_rpm_sighdr(sighdr, unsigned_path, dst=signed_path)
    return KojiImport(topdir=topdir, build=binfo, rpm=rinfo, sigkey=sigkey,
                      # The hub's own md5 helper, which also works under FIPS.
                      sighash=koji.util.md5_constructor(sighdr).hexdigest(),
                      unsigned_path=unsigned_path, sighdr_path=sighdr_path,
                      signed_path=signed_path)


def _nvra_fields(hdr):
    return koji.get_header_fields(hdr, ["name", "version", "release", "epoch", "arch"])


def _place_unsigned(src, dst):
    # Importing a second key's signature must not rewrite the package the
    # build import stored; the sigmd5 check below catches a mismatch.
    if os.path.exists(dst):
        return
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    shutil.copyfile(src, dst)


def _check_sighdr_matches(sighdr, rinfo):
    # Like the hub: a signature header belongs to an rpm only if its MD5
    # digest is the rpm's payloadhash (which really holds the sigmd5).
    sigmd5 = koji.hex_string(koji.RawHeader(sighdr).get(koji.RPM_SIGTAG_MD5))
    if sigmd5 != rinfo["payloadhash"]:
        raise ValueError("signature header md5 %s does not match %s-%s-%s.%s (%s)" % (
            sigmd5, rinfo["name"], rinfo["version"], rinfo["release"], rinfo["arch"],
            rinfo["payloadhash"]))


def _timestamp(ts):
    # The hub hands plugins psycopg2 rows: timestamptz columns are aware datetimes.
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc)


def _build_info(hdr, build_id, volume_name):
    """The dict kojihub.get_build returns for a completed, non-draft build of hdr."""
    fields = _nvra_fields(hdr)
    buildtime = koji.get_header_field(hdr, "buildtime")
    when = _timestamp(buildtime)
    return {
        "id": build_id,
        "build_id": build_id,
        "package_id": build_id,
        "package_name": fields["name"],
        "name": fields["name"],
        "version": fields["version"],
        "release": fields["release"],
        "epoch": fields["epoch"],
        "nvr": "%(name)s-%(version)s-%(release)s" % fields,
        "draft": False,
        "state": koji.BUILD_STATES["COMPLETE"],
        "task_id": None,
        "owner_id": 1,
        "owner_name": "kojiadmin",
        # The schema creates DEFAULT as volume 0; other volumes get later ids.
        "volume_id": 0 if volume_name == "DEFAULT" else 1,
        "volume_name": volume_name,
        "creation_event_id": build_id,
        "creation_time": when,
        "creation_ts": float(buildtime),
        "start_time": when,
        "start_ts": float(buildtime),
        "completion_time": when,
        "completion_ts": float(buildtime),
        "promotion_time": None,
        "promotion_ts": None,
        "promoter_id": None,
        "promoter_name": None,
        "source": None,
        "extra": None,
        "cg_id": None,
        "cg_name": None,
    }


def _rpm_info(hdr, path, rpm_id, build_id):
    """The dict kojihub.get_rpm returns for an internal rpm imported from path."""
    info = _nvra_fields(hdr)
    info.update({
        "id": rpm_id,
        "build_id": build_id,
        "buildroot_id": None,
        "draft": False,
        "external_repo_id": 0,
        "external_repo_name": "INTERNAL",
        # As at import: the header's SIGMD5, under the field's historic name.
        "payloadhash": koji.hex_string(koji.get_header_field(hdr, "sigmd5")),
        "size": os.path.getsize(path),
        "buildtime": koji.get_header_field(hdr, "buildtime"),
        "metadata_only": False,
        "extra": None,
    })
    return info
