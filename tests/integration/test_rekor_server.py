"""Tests of the local Rekor-compatible log itself (tests/support/rekor_server.py).

Proofs, signatures and lies are checked by small verifiers written here
from the RFCs, independently of the server's own code.
"""

import base64
import hashlib
import http.client
import json
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.support import rekor_server
from tests.support.common import ROOT
from tests.support import rpmfactory
from tests.support import sigheader
from tests.support.rekor_server import ENTRIES_PATH, MerkleTree, RekorLog, RekorServer

HTTP_TIMEOUT = 30


# --- independent verifiers (RFC 9162) ------------------------------------------

def leaf_hash(data):
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left, right):
    return hashlib.sha256(b"\x01" + left + right).digest()


def naive_root(leaves):
    """RFC 9162 2.1.1, straight from the definition."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaves[0]
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return node_hash(naive_root(leaves[:k]), naive_root(leaves[k:]))


def verify_inclusion(index, size, leaf, proof, root):
    """RFC 9162 2.1.3.2."""
    if index >= size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while True:
                    fn, sn = fn >> 1, sn >> 1
                    if fn & 1 or fn == 0:
                        break
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and r == root


def verify_consistency(first, second, first_root, second_root, proof):
    """RFC 9162 2.1.4.2."""
    if first == second:
        return not proof and first_root == second_root
    if not proof:
        return False
    if first & (first - 1) == 0:
        proof = [first_root] + proof
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = proof[0]
    for c in proof[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            if not fn & 1:
                while True:
                    fn, sn = fn >> 1, sn >> 1
                    if fn & 1 or fn == 0:
                        break
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and fr == first_root and sr == second_root


# --- independent checks of a returned entry ------------------------------------

def load_pub(pem):
    return serialization.load_pem_public_key(pem)


def spki(pub):
    return pub.public_bytes(serialization.Encoding.DER,
                            serialization.PublicFormat.SubjectPublicKeyInfo)


def ecdsa_ok(pub, signature, data):
    try:
        pub.verify(signature, data, ec.ECDSA(hashes.SHA256()))
        return True
    except InvalidSignature:
        return False


def parse_note(note):
    """(signed text, [lines], name, key hint, signature) of a signed note."""
    text, _, signatures = note.rpartition("\n\n")
    text += "\n"
    dash, name, encoded = signatures.rstrip("\n").split(" ")
    assert dash == "\u2014"
    raw = base64.b64decode(encoded)
    return text, text.split("\n")[:-1], name, raw[:4], raw[4:]


def note_signature_ok(note, pub):
    text, _, _, hint, signature = parse_note(note)
    return hint == hashlib.sha256(spki(pub)).digest()[:4] and ecdsa_ok(pub, signature,
                                                                      text.encode())


def entry_checks(document, log_pem, origin, package_sha256=None, key_fingerprint=None):
    """{check name: passed} for one {entryID: LogEntry} answer."""
    pub = load_pub(log_pem)
    (entry_id, entry), = document.items()
    body = base64.b64decode(entry["body"])
    proof = entry["verification"]["inclusionProof"]
    checks = {"uuid": entry_id[16:] == leaf_hash(body).hex(),
              "log_id": entry["logID"] == hashlib.sha256(spki(pub)).hexdigest(),
              "tree_index": proof["logIndex"] < proof["treeSize"]}
    if checks["tree_index"]:
        checks["inclusion"] = verify_inclusion(
            proof["logIndex"], proof["treeSize"], leaf_hash(body),
            [bytes.fromhex(h) for h in proof["hashes"]], bytes.fromhex(proof["rootHash"]))
    checks["checkpoint_present"] = "checkpoint" in proof
    if checks["checkpoint_present"]:
        checks.update(checkpoint_checks(proof, pub, origin, entry_id))
    checks["set_present"] = "signedEntryTimestamp" in entry["verification"]
    if checks["set_present"]:
        payload = json.dumps({k: entry[k] for k in ("body", "integratedTime", "logID",
                                                    "logIndex")},
                             sort_keys=True, separators=(",", ":")).encode()
        checks["set"] = ecdsa_ok(pub, base64.b64decode(
            entry["verification"]["signedEntryTimestamp"]), payload)
    if package_sha256:
        spec = json.loads(body)["spec"]
        checks["body_hash"] = spec["package"]["hash"]["value"] == package_sha256
    if key_fingerprint:
        spec = json.loads(body)["spec"]
        checks["body_key"] = key_fingerprint == gpg_fingerprint(
            base64.b64decode(spec["publicKey"]["content"]))
    return checks


def checkpoint_checks(proof, pub, origin, entry_id):
    _, lines, name, _, _ = parse_note(proof["checkpoint"])
    tree_id = int(entry_id[:16], 16)
    return {"checkpoint_signature": note_signature_ok(proof["checkpoint"], pub),
            "checkpoint_origin": lines[0] == f"{origin} - {tree_id}" and name == origin,
            "checkpoint_size": int(lines[1]) == proof["treeSize"],
            "checkpoint_root": base64.b64decode(lines[2]).hex() == proof["rootHash"]}


def gpg_fingerprint(armored):
    with tempfile.TemporaryDirectory() as home:
        out = subprocess.run(["gpg", "--homedir", home, "--batch", "--with-colons",
                              "--show-keys"], input=armored, capture_output=True,
                             timeout=HTTP_TIMEOUT, check=True).stdout.decode()
    return next(line.split(":")[9] for line in out.splitlines() if line.startswith("fpr:"))


# --- fixtures --------------------------------------------------------------------

class Rpms:
    """Throwaway keys and real signed RPMs, made once for the module."""

    def __init__(self, workdir):
        home = os.path.join(workdir, "gnupg")
        self.home = home
        self.rsa = rpmfactory.generate_key(home, "rsa", "Rekor test rsa")
        self.ed = rpmfactory.generate_key(home, "ed25519", "Rekor test ed")
        self.other = rpmfactory.generate_key(home, "rsa", "Somebody else")
        self.unsigned = rpmfactory.build_rpm(os.path.join(workdir, "b1"), name="tiny",
                                             epoch=3)
        self.rsa_header = self.sign(self.unsigned, self.rsa, "rsa-header.rpm")
        self.rsa_v3 = self.sign(self.unsigned, self.rsa, "rsa-v3.rpm", rpmv3=True)
        self.ed_header = self.sign(self.unsigned, self.ed, "ed-header.rpm")
        self.ed_v3 = self.sign(self.unsigned, self.ed, "ed-v3.rpm", rpmv3=True)
        self.workdir = workdir

    def sign(self, src, key, name, rpmv3=False):
        return rpmfactory.sign_rpm(src, os.path.join(os.path.dirname(self.home), name),
                                   key, rpmv3=rpmv3)

    def build_signed(self, name, payload_bytes=0):
        unsigned = rpmfactory.build_rpm(os.path.join(self.workdir, name), name=name,
                                        payload_bytes=payload_bytes)
        return self.sign(unsigned, self.rsa, f"{name}-signed.rpm")


@pytest.fixture(scope="module")
def rpms(tmp_path_factory):
    made = Rpms(str(tmp_path_factory.mktemp("rekor-rpms")))
    yield made
    rpmfactory.stop_gpg_agent(made.home)


@pytest.fixture
def server():
    with RekorServer() as srv:
        yield srv


def call(srv, method, path, body=None, headers=None, port=None):
    """(status, headers, body bytes) of one HTTP exchange."""
    connection = http.client.HTTPConnection(rekor_server.LOOPBACK, port or srv.port,
                                            timeout=HTTP_TIMEOUT)
    try:
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.headers, response.read()
    finally:
        connection.close()


def proposed(rpm_path, key, package_hash=None, kind="rpm", version="0.0.1"):
    with open(rpm_path, "rb") as f:
        package = {"content": base64.b64encode(f.read()).decode()}
    if package_hash:
        package["hash"] = {"algorithm": "sha256", "value": package_hash}
    return {"kind": kind, "apiVersion": version,
            "spec": {"package": package,
                     "publicKey": {"content": base64.b64encode(key.armored).decode()}}}


def submit(srv, rpm_path, key, **kw):
    return call(srv, "POST", ENTRIES_PATH, proposed(rpm_path, key, **kw),
                {"Content-Type": "application/json"})


def sha256_file(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def error_message(body):
    document = json.loads(body)
    assert set(document) == {"code", "message"}
    return document["message"]


# --- Merkle tree -----------------------------------------------------------------

def test_merkle_proofs_for_every_size_pair_up_to_40():
    leaves = [leaf_hash(b"leaf %d" % i) for i in range(40)]
    tree = MerkleTree()
    for leaf in leaves:
        tree.append(leaf)
    roots = [naive_root(leaves[:n]) for n in range(41)]
    assert [tree.root(n) for n in range(41)] == roots
    for size in range(1, 41):
        for index in range(size):
            proof = tree.inclusion_proof(index, size)
            assert verify_inclusion(index, size, leaves[index], proof, roots[size])
        for first in range(1, size + 1):
            proof = tree.consistency_proof(first, size)
            assert verify_consistency(first, size, roots[first], roots[size], proof)


def test_merkle_verifiers_reject_wrong_proofs():
    tree = MerkleTree()
    for i in range(13):
        tree.append(leaf_hash(b"%d" % i))
    proof = tree.inclusion_proof(5, 13)
    bad = [proof[0][:-1] + bytes([proof[0][-1] ^ 1])] + proof[1:]
    assert not verify_inclusion(5, 13, leaf_hash(b"5"), bad, tree.root())
    assert not verify_inclusion(6, 13, leaf_hash(b"5"), proof, tree.root())
    consistency = tree.consistency_proof(6, 13)
    assert not verify_consistency(6, 13, tree.root(5), tree.root(), consistency)


# --- entries: accepted ---------------------------------------------------------------

@pytest.mark.parametrize("variant", ["rsa_header", "rsa_v3", "ed_header", "ed_v3"])
def test_a_signed_rpm_is_logged_with_a_verifiable_entry(server, rpms, variant):
    rpm_path = getattr(rpms, variant)
    key = rpms.rsa if variant.startswith("rsa") else rpms.ed
    status, headers, body = submit(server, rpm_path, key)
    assert status == 201, body
    document = json.loads(body)
    (entry_id, entry), = document.items()
    assert headers["Location"] == f"{ENTRIES_PATH}/{entry_id}"
    assert headers["ETag"] == entry_id
    assert entry_id[:16] == f"{server.log.tree_id:016x}"
    checks = entry_checks(document, server.log.public_key_pem, "127.0.0.1",
                          sha256_file(rpm_path), key.fingerprint)
    assert all(checks.values()), checks


def test_the_canonical_body_is_rekors(server, rpms):
    status, _, body = submit(server, rpms.rsa_header, rpms.rsa)
    assert status == 201
    (entry,) = json.loads(body).values()
    raw = base64.b64decode(entry["body"])
    # RFC 8785: sorted keys, no whitespace
    assert raw == json.dumps(json.loads(raw), sort_keys=True, separators=(",", ":")).encode()
    spec = json.loads(raw)["spec"]
    query = subprocess.run(
        ["rpm", "-qp", "--nosignature", "--nodigest", "--qf",
         "%{NAME} %{EPOCH} %{VERSION} %{RELEASE} %{ARCH} %{SIGMD5}", rpms.rsa_header],
        capture_output=True, text=True, check=True, timeout=HTTP_TIMEOUT).stdout.split()
    assert spec["package"]["headers"] == dict(zip(
        ["Name", "Epoch", "Version", "Release", "Architecture", "RPMSIGTAG_MD5"], query))
    assert spec["package"]["hash"] == {"algorithm": "sha256",
                                       "value": sha256_file(rpms.rsa_header)}
    armored = base64.b64decode(spec["publicKey"]["content"]).decode()
    lines = armored.split("\n")
    assert lines[:2] == ["-----BEGIN PGP PUBLIC KEY BLOCK-----", ""]
    assert lines[-1] == "-----END PGP PUBLIC KEY BLOCK-----" and not armored.endswith("\n")
    assert lines[-2].startswith("=") and len(lines[-2]) == 5
    assert all(len(line) == 64 for line in lines[2:-3]) and 0 < len(lines[-3]) <= 64
    assert lines[2].startswith("xsBN")   # Go writes new-format packet headers


def test_an_rpm_without_epoch_is_stored_with_epoch_0(server, rpms):
    signed = rpms.build_signed("noepoch")
    status, _, body = submit(server, signed, rpms.rsa)
    assert status == 201
    (entry,) = json.loads(body).values()
    headers = json.loads(base64.b64decode(entry["body"]))["spec"]["package"]["headers"]
    # go-rpmutils' GetNEVRA gives "0" for a missing epoch (Rekor 1.5.4)
    assert headers["Epoch"] == "0" and headers["Name"] == "noepoch"


def test_a_duplicate_is_a_409_with_a_relative_location(server, rpms):
    status, _, body = submit(server, rpms.rsa_header, rpms.rsa)
    assert status == 201
    (entry_id,) = json.loads(body)
    status, headers, body = submit(server, rpms.rsa_header, rpms.rsa,
                                   package_hash=sha256_file(rpms.rsa_header))
    assert status == 409
    assert headers["Location"] == f"{ENTRIES_PATH}/{entry_id}"
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body) == {"code": 409, "message": "an equivalent entry already exists "
                                f"in the transparency log with UUID {entry_id}"}
    assert len(server.log.entries) == 1


def test_a_large_upload_is_streamed_not_held_in_memory(server, rpms):
    signed = rpms.build_signed("large", payload_bytes=24 << 20)
    key_b64 = base64.b64encode(rpms.rsa.armored)

    def body():   # chunked, so the client holds no copy either
        yield b'{"kind":"rpm","apiVersion":"0.0.1","spec":{"publicKey":{"content":"'
        yield key_b64 + b'"},"package":{"content":"'
        with open(signed, "rb") as f:
            while piece := f.read(3 << 18):
                yield base64.b64encode(piece)
        yield b'"}}}'

    tracemalloc.start()
    try:
        connection = http.client.HTTPConnection(rekor_server.LOOPBACK, server.port,
                                                timeout=HTTP_TIMEOUT)
        connection.request("POST", ENTRIES_PATH, body=body(), encode_chunked=True)
        response = connection.getresponse()
        status, answer = response.status, response.read()
        connection.close()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert status == 201, answer
    assert server.log.entries[0].package_sha256 == sha256_file(signed)
    assert peak < os.path.getsize(signed) / 2


def test_the_scanner_decodes_long_strings_across_pieces_and_escapes(tmp_path):
    data = os.urandom(300_000)
    text = base64.b64encode(data).decode()
    # "\/" is a legal JSON escape of "/", and Go's decoder skips newlines
    encoded = json.dumps(text[:1000] + "\n" + text[1000:]).replace("/", "\\/")
    document = ('{"kind": "rpm", "nested": {"long": %s, "short": "x\\u00e9"}}'
                % encoded).encode()
    pieces = [document[i:i + 4093] for i in range(0, len(document), 4093)]
    parsed, strings = rekor_server.scan_proposed_entry(iter(pieces), str(tmp_path))
    assert parsed["kind"] == "rpm" and parsed["nested"]["short"] == "x\u00e9"
    decoded = strings[parsed["nested"]["long"]]
    assert decoded.error is None and decoded.sha256 == hashlib.sha256(data).hexdigest()
    with open(decoded.path, "rb") as f:
        assert f.read() == data


# --- entries: refused ----------------------------------------------------------------

def test_an_unsigned_rpm_is_refused(server, rpms):
    status, _, body = submit(server, rpms.unsigned, rpms.rsa)
    assert status == 400
    assert error_message(body) == ("error processing entry: "
                                   "no supported PGP signature found in RPM")


def test_an_rpm_signed_by_another_key_is_refused(server, rpms):
    status, _, body = submit(server, rpms.rsa_v3, rpms.other)
    assert status == 400
    # go-rpmutils looks each signature's issuer up in the submitted key first
    # Go's %08x of the 64-bit key ID: no leading zeros beyond eight digits
    assert error_message(body) == ("error processing entry: keyid %08x not found"
                                   % int(rpms.rsa.fingerprint[-16:], 16))
    assert server.log.entries == []


def test_an_rpm_whose_only_signature_is_rpm_6_openpgp_is_refused(server, rpms, tmp_path):
    # Rekor 1.5.4 reads only the legacy signature tags
    openpgp = sigheader.openpgp_only(rpms.rsa_header, str(tmp_path / "openpgp.rpm"))
    status, _, body = submit(server, openpgp, rpms.rsa)
    assert status == 400
    assert error_message(body) == ("error processing entry: "
                                   "no supported PGP signature found in RPM")
    assert server.log.entries == []


def test_every_legacy_signature_must_be_by_the_submitted_key(server, rpms, tmp_path):
    # a good header signature by our key, and a good one by another key
    theirs = rpms.sign(rpms.unsigned, rpms.other, "other-v3.rpm", rpmv3=True)
    mixed = sigheader.with_payload_signature_of(rpms.rsa_v3, theirs, str(tmp_path / "mixed.rpm"))
    checks = rpmfactory.rpmkeys_verify(mixed, [rpms.rsa.path, rpms.other.path])
    assert len([c for c in checks if "Signature" in c and c.endswith("OK")]) == 2, checks
    status, _, body = submit(server, mixed, rpms.rsa)
    assert status == 400
    assert error_message(body) == ("error processing entry: keyid %08x not found"
                                   % int(rpms.other.fingerprint[-16:], 16))
    assert submit(server, rpms.rsa_v3, rpms.rsa)[0] == 201


def test_a_signature_naming_its_issuer_by_fingerprint_only(server, rpms, tmp_path):
    by_fingerprint = sigheader.fingerprint_only(rpms.rsa_v3, str(tmp_path / "fpr.rpm"))
    status, _, body = submit(server, by_fingerprint, rpms.other)
    assert status == 400
    assert error_message(body) == ("error processing entry: key with fingerprint %s not found"
                                   % rpms.rsa.fingerprint.lower())
    # (With the right key, Rekor's Go OpenPGP finds the key by fingerprint;
    # rpm 4.18, which this log checks signatures with, does not.)


def test_a_corrupted_rpm_is_refused(server, rpms, tmp_path):
    corrupted = tmp_path / "corrupted.rpm"
    data = bytearray(open(rpms.rsa_v3, "rb").read())
    data[-10] ^= 0xFF
    corrupted.write_bytes(bytes(data))
    status, _, body = submit(server, str(corrupted), rpms.rsa)
    assert status == 400 and error_message(body).startswith("error processing entry: ")


def test_header_only_signatures_are_refused_like_rekor_before_1_5_4(server, rpms):
    server.faults.refuse_header_only = True
    status, _, body = submit(server, rpms.ed_header, rpms.ed)
    assert status == 400
    assert error_message(body) == "error processing entry: Package signature not found"
    status, _, _ = submit(server, rpms.ed_v3, rpms.ed)
    assert status == 201


@pytest.mark.parametrize("change, status, message", [
    ({"package_hash": "00" * 32}, 400, "error processing entry: SHA mismatch: "),
    # hashedrekord is enabled (the monitor's tests log one); an rpm spec is not one
    ({"kind": "hashedrekord"}, 400, "error processing entry: missing signature"),
    ({"kind": "dsse"}, 400, "error processing entry: entry kind 'dsse' is "
                            "not enabled for submission on this server"),
    ({"kind": "nonsense"}, 422, 'invalid kind value: "nonsense"'),
    ({"version": "0.0.2"}, 400, "error processing entry: rpm implementation for version "
                                "'0.0.2' not found"),
])
def test_malformed_proposals_are_refused_as_rekor_does(server, rpms, change, status, message):
    answer, _, body = submit(server, rpms.rsa_header, rpms.rsa, **change)
    assert answer == status and error_message(body).startswith(message)


def test_bad_base64_is_refused(server, rpms):
    document = proposed(rpms.rsa_header, rpms.rsa)
    document["spec"]["package"]["content"] = "AAAA*AAA"
    status, _, body = call(server, "POST", ENTRIES_PATH, document)
    assert status == 400
    assert error_message(body) == ("error processing entry: failed parsing base64 data for "
                                   "package content: illegal base64 data at input byte 0")


# --- lookups -------------------------------------------------------------------------

def test_entries_can_be_found_by_id_uuid_index_and_search(server, rpms):
    ids = [next(iter(json.loads(submit(server, path, key)[2])))
           for path, key in ((rpms.rsa_header, rpms.rsa), (rpms.ed_v3, rpms.ed))]
    for entry_id in ids:
        for path in (f"{ENTRIES_PATH}/{entry_id}", f"{ENTRIES_PATH}/{entry_id[16:]}"):
            status, _, body = call(server, "GET", path)
            assert status == 200 and list(json.loads(body)) == [entry_id]
    status, _, body = call(server, "GET", f"{ENTRIES_PATH}?logIndex=1")
    assert status == 200 and list(json.loads(body)) == [ids[1]]
    status, _, body = call(server, "POST", f"{ENTRIES_PATH}/retrieve",
                           {"entryUUIDs": [ids[0], ids[1][16:]], "logIndexes": [0, 7]})
    assert status == 200 and [list(e)[0] for e in json.loads(body)] == [ids[0], ids[1], ids[0]]
    status, headers, body = call(server, "GET", f"{ENTRIES_PATH}/{'ab' * 32}")
    assert (status, body) == (404, b"")   # Rekor's 404s here have no body
    status, _, body = call(server, "GET", f"{ENTRIES_PATH}/nothex")
    assert status == 422


def test_searching_more_than_ten_is_a_422(server):
    status, _, body = call(server, "POST", f"{ENTRIES_PATH}/retrieve",
                           {"logIndexes": list(range(11))})
    assert status == 422
    assert error_message(body) == "more than max allowed 10 entries in request"


def test_the_index_finds_entries_by_key_hash_and_email(server, rpms):
    (entry_id,) = json.loads(submit(server, rpms.rsa_header, rpms.rsa)[2])
    key_query = {"publicKey": {"format": "pgp",
                               "content": base64.b64encode(rpms.rsa.armored).decode()}}
    for query in (key_query, {"hash": f"sha256:{sha256_file(rpms.rsa_header)}"},
                  {"hash": sha256_file(rpms.rsa_header)}, {"email": "RSA@example.test"}):
        status, _, body = call(server, "POST", "/api/v1/index/retrieve", query)
        assert (status, json.loads(body)) == (200, [entry_id]), query
    status, _, body = call(server, "POST", "/api/v1/index/retrieve",
                           {"hash": "sha256:" + "0" * 64})
    assert json.loads(body) == []


# --- tree endpoints -------------------------------------------------------------------

def test_log_info_public_key_and_consistency_proofs(server):
    pub = load_pub(server.log.public_key_pem)
    status, headers, body = call(server, "GET", "/api/v1/log/publicKey")
    assert (status, headers["Content-Type"], body) == (200, "application/x-pem-file",
                                                       server.log.public_key_pem)
    roots = {}
    for size in range(1, 8):
        server.log.add_entry(b"entry %d" % size)
        info = json.loads(call(server, "GET", "/api/v1/log")[2])
        assert "inactiveShards" not in info and info["treeID"] == str(server.log.tree_id)
        assert info["treeSize"] == size and note_signature_ok(info["signedTreeHead"], pub)
        roots[size] = bytes.fromhex(info["rootHash"])
    for first in range(1, 8):
        status, _, body = call(server, "GET", f"/api/v1/log/proof?firstSize={first}&lastSize=7")
        answer = json.loads(body)
        assert status == 200 and bytes.fromhex(answer["rootHash"]) == roots[7]
        assert verify_consistency(first, 7, roots[first], roots[7],
                                  [bytes.fromhex(h) for h in answer["hashes"]])


@pytest.mark.parametrize("query, message", [
    ("firstSize=5&lastSize=3", "firstSize(5) must be less than lastSize(3)"),
    ("firstSize=1&lastSize=9", "the tree size requested(9) was greater than what is "
                               "currently observable(2)"),
    ("firstSize=1&lastSize=2&treeID=12345", "no log range found for tree ID 12345"),
])
def test_bad_consistency_requests_are_400s(server, query, message):
    server.log.add_entry(b"a")
    server.log.add_entry(b"b")
    status, _, body = call(server, "GET", f"/api/v1/log/proof?{query}")
    assert status == 400 and error_message(body) == message


def test_a_rotated_shard_stays_readable_and_indexes_continue(server):
    log = server.log
    old_tree = log.tree_id
    for i in range(3):
        log.add_entry(b"old %d" % i)
    frozen_info = json.loads(call(server, "GET", "/api/v1/log")[2])
    new_tree = log.rotate_shard()
    entry, created = log.add_entry(b"new 0")
    assert created and (entry.tree_id, entry.tree_index, entry.global_index) == (new_tree, 0, 3)
    document = json.loads(call(server, "GET", f"{ENTRIES_PATH}?logIndex=3")[2])
    (entry_id, anon), = document.items()
    assert entry_id[:16] == f"{new_tree:016x}"
    assert anon["logIndex"] == 3 and anon["verification"]["inclusionProof"]["logIndex"] == 0
    assert all(entry_checks(document, log.public_key_pem, "127.0.0.1").values())
    info = json.loads(call(server, "GET", "/api/v1/log")[2])
    (shard,) = info["inactiveShards"]
    assert shard["treeID"] == str(old_tree) and shard["treeSize"] == 3
    assert shard["rootHash"] == frozen_info["rootHash"]
    old = [json.loads(call(server, "GET", f"{ENTRIES_PATH}?logIndex=1")[2]) for _ in range(2)]
    checkpoints = [next(iter(d.values()))["verification"]["inclusionProof"]["checkpoint"]
                   for d in old]
    # a frozen shard's checkpoint is signed once, at rotation, and never changes
    assert checkpoints[0] == checkpoints[1] == shard["signedTreeHead"]
    assert all(entry_checks(old[0], log.public_key_pem, "127.0.0.1").values())
    status, _, body = call(server, "GET",
                           f"/api/v1/log/proof?firstSize=1&lastSize=3&treeID={old_tree}")
    assert status == 200
    # the same body in the new shard is not a duplicate: only the active tree counts
    assert log.add_entry(b"old 0")[1]


def test_rewritten_history_breaks_consistency(server):
    for i in range(4):
        server.log.add_entry(b"%d" % i)
    before = server.log.root_hash()
    server.log.rewrite_history()
    assert server.log.tree_size == 4 and server.log.root_hash() != before
    server.log.add_entry(b"4")
    answer = json.loads(call(server, "GET", "/api/v1/log/proof?firstSize=4&lastSize=5")[2])
    assert not verify_consistency(4, 5, before, bytes.fromhex(answer["rootHash"]),
                                  [bytes.fromhex(h) for h in answer["hashes"]])


# --- a log that lies -------------------------------------------------------------------

EXPECTED_FAILURES = {
    "proof_hash": {"inclusion"}, "root_hash": {"inclusion"},
    "checkpoint_signature": {"checkpoint_signature"},
    "checkpoint_key": {"checkpoint_signature"}, "checkpoint_origin": {"checkpoint_origin"},
    "checkpoint_size": {"checkpoint_size"}, "set": {"set"}, "set_key": {"set"},
    "log_id": {"log_id"}, "log_index": {"set"}, "integrated_time": {"set"},
    "entry_uuid": {"uuid"}, "body_hash": {"body_hash"}, "body_key": {"body_key"},
    "no_checkpoint": {"checkpoint_present"}, "no_set": {"set_present"},
    "tree_index": {"tree_index"},
    "forked_checkpoint": set(),   # each entry checks out: only a consistency proof tells
}


def test_every_tamper_mode_is_covered():
    assert set(EXPECTED_FAILURES) == rekor_server.TAMPER_MODES


@pytest.mark.parametrize("mode", sorted(EXPECTED_FAILURES))
def test_each_lie_fails_exactly_one_check(server, rpms, mode):
    server.log.add_entry(b"an earlier entry, so that proofs have hashes")
    server.faults.tamper = mode
    status, _, body = submit(server, rpms.rsa_header, rpms.rsa)
    assert status == 201, body
    posted = json.loads(body)
    fetched = json.loads(call(server, "GET", f"{ENTRIES_PATH}?logIndex=1")[2])
    for document in (posted, fetched):
        checks = entry_checks(document, server.log.public_key_pem, "127.0.0.1",
                              sha256_file(rpms.rsa_header), rpms.rsa.fingerprint)
        assert {name for name, ok in checks.items() if not ok} == EXPECTED_FAILURES[mode]


def test_the_impostor_openpgp_key_is_a_valid_key(tmp_path):
    armored = RekorLog().impostor_pgp_armor
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    (tmp_path / "k.asc").write_bytes(armored)
    subprocess.run(["gpg", "--homedir", str(home), "--batch", "--import", str(tmp_path / "k.asc")],
                   check=True, capture_output=True, timeout=HTTP_TIMEOUT)
    listed = subprocess.run(["gpg", "--homedir", str(home), "--batch", "--check-signatures",
                             "--with-colons"], check=True, capture_output=True,
                            timeout=HTTP_TIMEOUT).stdout.decode()
    assert any(line.startswith("sig:!:") for line in listed.splitlines())   # "!" = good
    subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"],
                   capture_output=True, timeout=HTTP_TIMEOUT)


# --- faults ---------------------------------------------------------------------------

def test_fail_count_answers_rekor_errors_then_recovers(server, rpms):
    server.faults.fail_status, server.faults.fail_count = 503, 2
    answers = [submit(server, rpms.rsa_header, rpms.rsa) for _ in range(3)]
    assert [a[0] for a in answers] == [503, 503, 201]
    assert json.loads(answers[0][2]) == {"code": 503, "message": "Service Unavailable"}
    assert server.count("POST", ENTRIES_PATH) == 3
    assert server.count("POST", ENTRIES_PATH, 503) == 2


def test_fail_paths_reach_other_endpoints(server):
    server.faults.fail_paths, server.faults.fail_count = ["/api/v1/log"], 1
    assert call(server, "GET", "/api/v1/log")[0] == 503
    assert call(server, "GET", "/api/v1/log")[0] == 200


def test_dropped_connections_get_no_answer(server, rpms):
    server.faults.drop_count = 1
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
        submit(server, rpms.rsa_header, rpms.rsa)
    assert server.log.entries == []
    assert submit(server, rpms.rsa_header, rpms.rsa)[0] == 201
    assert server.requests == [("POST", ENTRIES_PATH, 0), ("POST", ENTRIES_PATH, 201)]


def test_drop_after_commit_loses_only_the_answer(server, rpms):
    server.faults.drop_count, server.faults.drop_after_commit = 1, True
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
        submit(server, rpms.rsa_header, rpms.rsa)
    assert len(server.log.entries) == 1
    assert submit(server, rpms.rsa_header, rpms.rsa)[0] == 409


def test_a_malformed_answer_follows_a_logged_entry(server, rpms):
    server.faults.malformed_count = 1
    status, _, body = submit(server, rpms.rsa_header, rpms.rsa)
    assert status == 201
    with pytest.raises(ValueError):
        json.loads(body)
    assert len(server.log.entries) == 1
    assert submit(server, rpms.rsa_header, rpms.rsa)[0] == 409


def test_too_large_bodies_are_413_without_being_read(server, rpms):
    server.faults.max_body_bytes = 1000
    status, headers, body = submit(server, rpms.rsa_header, rpms.rsa)
    assert status == 413 and headers["Connection"] == "close"
    assert json.loads(body) == {"code": 413,
                                "message": "Request Entity Too Large. Limit set to 1000"}
    assert server.count("POST", ENTRIES_PATH, 413) == 1 and server.log.entries == []


def test_a_chunked_upload_over_the_limit_is_413(server, rpms):
    server.faults.max_body_bytes = 1000
    connection = http.client.HTTPConnection(rekor_server.LOOPBACK, server.port,
                                            timeout=HTTP_TIMEOUT)
    document = json.dumps(proposed(rpms.rsa_header, rpms.rsa)).encode()
    connection.request("POST", ENTRIES_PATH, body=iter([document[:500], document[500:]]),
                       encode_chunked=True)
    assert connection.getresponse().status == 413
    connection.close()


def test_a_delay_never_holds_up_stop(rpms):
    server = RekorServer().start()
    server.faults.delay = 60
    outcome = []

    def client():
        try:
            outcome.append(submit(server, rpms.rsa_header, rpms.rsa)[0])
        except (OSError, http.client.HTTPException) as err:
            outcome.append(err)

    thread = threading.Thread(target=client)
    thread.start()
    assert server.delay_started.wait(HTTP_TIMEOUT)
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 2
    thread.join(HTTP_TIMEOUT)
    assert isinstance(outcome[0], Exception)


def test_faults_are_controlled_over_http(server, rpms):
    status, _, body = call(server, "POST", "/_test/faults",
                           {"fail_status": 500, "fail_count": 1, "tamper": "no_set"})
    assert status == 200 and json.loads(body)["fail_count"] == 1
    assert server.faults.tamper == "no_set"
    assert submit(server, rpms.rsa_header, rpms.rsa)[0] == 500
    state = json.loads(call(server, "GET", "/_test/state")[2])
    assert state["counts"] == {f"POST {ENTRIES_PATH}": {"500": 1}}
    assert state["faults"]["fail_count"] == 0 and state["entries"] == 0
    assert call(server, "POST", "/_test/faults", {"tamper": "lie"})[0] == 400
    assert call(server, "POST", "/_test/faults", {"fail_count": 1, "nope": 1})[0] == 400
    assert server.faults.fail_count == 0   # nothing changed by a refused update
    status, _, body = call(server, "POST", "/_test/reset")
    assert status == 200 and json.loads(body)["requests"] == 0
    assert server.faults == rekor_server.Faults()


def test_faults_reject_bad_values_from_python(server):
    with pytest.raises(ValueError):
        server.faults.tamper = "everything"
    with pytest.raises(ValueError):
        server.faults.delay = 10_000


# --- lifecycle ------------------------------------------------------------------------

def test_only_loopback_is_allowed():
    with pytest.raises(ValueError):
        RekorServer(host="0.0.0.0")


def test_the_same_log_comes_back_on_the_same_port(rpms):
    log = RekorLog()
    first = RekorServer(log).start()
    port = first.port
    assert submit(first, rpms.rsa_header, rpms.rsa)[0] == 201
    first.stop()
    with pytest.raises(ConnectionError):
        call(first, "GET", "/api/v1/log")
    with RekorServer(log, port=port) as second:
        assert second.url == f"http://127.0.0.1:{port}"
        assert submit(second, rpms.rsa_header, rpms.rsa)[0] == 409


class CommandLineServer:
    """tests/support/rekor_server.py run as a separate process."""

    def __init__(self, *args):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.support.rekor_server", *args], cwd=ROOT,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        line = self._first_line(HTTP_TIMEOUT)
        assert line.startswith("rekor-compatible log listening on http://127.0.0.1:"), line
        self.url = line.rsplit(" ", 1)[1]
        self.port = int(self.url.rsplit(":", 1)[1])

    def _first_line(self, timeout):
        with selectors.DefaultSelector() as selector:
            selector.register(self.process.stdout, selectors.EVENT_READ)
            if not selector.select(timeout):
                self.process.kill()
                raise AssertionError("the server printed nothing")
        return self.process.stdout.readline().decode().strip()

    def stop(self):
        self.process.send_signal(signal.SIGTERM)
        assert self.process.wait(HTTP_TIMEOUT) == 0


def test_the_command_line_server_persists_its_log(rpms, tmp_path):
    state, key_file = tmp_path / "state", tmp_path / "log.pub"
    first = CommandLineServer("--state-dir", str(state), "--key-out", str(key_file))
    assert submit(first, rpms.rsa_header, rpms.rsa)[0] == 201
    call(first, "POST", "/_test/rotate_shard")
    assert submit(first, rpms.ed_v3, rpms.ed)[0] == 201
    info_before = json.loads(call(first, "GET", "/api/v1/log")[2])
    first.stop()
    second = CommandLineServer("--state-dir", str(state), "--refuse-header-only")
    try:
        info_after = json.loads(call(second, "GET", "/api/v1/log")[2])
        for field in ("rootHash", "treeSize", "treeID"):
            assert info_after[field] == info_before[field]
        assert info_after["inactiveShards"] == info_before["inactiveShards"]
        assert call(second, "GET", "/api/v1/log/publicKey")[2] == key_file.read_bytes()
        document = json.loads(call(second, "GET", f"{ENTRIES_PATH}?logIndex=0")[2])
        assert all(entry_checks(document, key_file.read_bytes(), "127.0.0.1").values())
        assert submit(second, rpms.ed_v3, rpms.ed)[0] == 409
        assert submit(second, rpms.rsa_header, rpms.rsa)[0] == 400   # header-only refused
    finally:
        second.stop()


def test_kept_alive_connections_send_without_nagle(server):
    """Headers and body leave in two writes; with Nagle the second would
    wait for the client's delayed ACK on a kept-alive connection."""
    import socket
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        for _ in range(2):  # the second request rides the kept-alive connection
            conn.request("GET", "/api/v1/log")
            assert conn.getresponse().read()
        live = list(server._httpd._live)
        assert live
        assert all(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) for sock in live)
    finally:
        conn.close()
