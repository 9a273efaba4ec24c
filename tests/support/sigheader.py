"""Rewrite the signature header of a real signed RPM, for RPMs rpmsign on
this machine cannot make: a signature only in rpm 6's RPMTAG_OPENPGP, a
second legacy signature by another key, a signature naming its issuer by
fingerprint only.

The header format is rpm's (lead, then a header: magic, index entries,
data store, with the immutable region tag first and its trailer last in
the store); only what these rewrites need is handled.
"""

import struct

LEAD_SIZE = 96
MAGIC = b"\x8e\xad\xe8\x01\x00\x00\x00\x00"
REGION_TAG = 62                     # RPMTAG_HEADERSIGNATURES
TAG_RSA, TAG_DSA, TAG_PGP, TAG_GPG = 268, 267, 1002, 1005
TAG_OPENPGP = 278                   # rpm 6
BIN, STRING_ARRAY = 7, 8
_WIDTH = {2: 1, 3: 2, 4: 4, 5: 8}   # INT8, INT16, INT32, INT64
_ALIGN = {3: 2, 4: 4, 5: 8}


def _entry_data(store, kind, offset, count):
    if kind in (6, 8, 9):   # STRING, STRING_ARRAY, I18NSTRING: NUL-terminated strings
        end = offset
        for _ in range(1 if kind == 6 else count):
            end = store.index(b"\0", end) + 1
        return store[offset:end]
    size = count if kind in (1, 7) else _WIDTH[kind] * count
    return store[offset:offset + size]


def read_signature_header(path):
    """(lead, {tag: (type, count, data)}, the rest of the file)."""
    with open(path, "rb") as f:
        data = f.read()
    lead, at = data[:LEAD_SIZE], LEAD_SIZE
    assert data[at:at + 8] == MAGIC, "not an RPM signature header"
    count, size = struct.unpack(">II", data[at + 8:at + 16])
    index = data[at + 16:at + 16 + 16 * count]
    store = data[at + 16 + 16 * count:at + 16 + 16 * count + size]
    entries = {}
    for n in range(count):
        tag, kind, offset, items = struct.unpack(">iiii", index[16 * n:16 * n + 16])
        if tag != REGION_TAG:
            entries[tag] = (kind, items, _entry_data(store, kind, offset, items))
    end = at + 16 + 16 * count + size
    end += -end % 8
    return lead, entries, data[end:]


def write_rpm(path, lead, entries, rest):
    """Write an RPM with this signature header (region first, trailer last)."""
    store, index = b"", []
    for tag in sorted(entries):
        kind, items, data = entries[tag]
        store += b"\0" * (-len(store) % _ALIGN.get(kind, 1))
        index.append(struct.pack(">iiii", tag, kind, len(store), items))
        store += data
    total = len(index) + 1
    trailer = struct.pack(">iiii", REGION_TAG, BIN, -16 * total, 16)
    index.insert(0, struct.pack(">iiii", REGION_TAG, BIN, len(store), 16))
    store += trailer
    header = MAGIC + struct.pack(">II", total, len(store)) + b"".join(index) + store
    header += b"\0" * (-len(header) % 8)
    with open(path, "wb") as f:
        f.write(lead + header + rest)
    return path


def rewrite(src, dst, change):
    """Copy src to dst, letting change(entries) edit the signature entries."""
    lead, entries, rest = read_signature_header(src)
    change(entries)
    return write_rpm(dst, lead, entries, rest)


def openpgp_only(src, dst):
    """The RPM with its header signature moved to RPMTAG_OPENPGP (as rpm 6
    writes it: base64 in a string array) and no legacy signature left."""
    import base64

    def change(entries):
        signature = entries.get(TAG_RSA) or entries.get(TAG_DSA)
        for tag in (TAG_RSA, TAG_DSA, TAG_PGP, TAG_GPG):
            entries.pop(tag, None)
        entries[TAG_OPENPGP] = (STRING_ARRAY, 1, base64.b64encode(signature[2]) + b"\0")
    return rewrite(src, dst, change)


def with_payload_signature_of(src, other, dst):
    """src's signatures, but the header+payload one taken from other (the
    same package signed by another key): valid, and by another key."""
    _, theirs, _ = read_signature_header(other)

    def change(entries):
        for tag in (TAG_PGP, TAG_GPG):
            entries.pop(tag, None)
            if tag in theirs:
                entries[tag] = theirs[tag]
    return rewrite(src, dst, change)


def _subpackets(area):
    """[(raw subpacket bytes, type)] of a v4 signature's subpacket area."""
    found, at = [], 0
    while at < len(area):
        first = area[at]
        if first < 192:
            length, head = first, 1
        elif first < 255:
            length, head = ((first - 192) << 8) + area[at + 1] + 192, 2
        else:
            length, head = int.from_bytes(area[at + 1:at + 5], "big"), 5
        found.append((area[at:at + head + length], area[at + head] & 0x7F))
        at += head + length
    return found


def without_issuer_key_id(packet):
    """A v4 signature packet (old or new format) without its unhashed issuer
    key ID subpacket: still valid, naming its issuer by fingerprint only."""
    first = packet[0]
    if first & 0x40:
        raise ValueError("expected an old-format packet, as gpg writes signatures")
    width = {0: 1, 1: 2, 2: 4}[first & 0x03]
    body = packet[1 + width:]
    assert body[0] == 4, "not a version 4 signature"
    hashed = int.from_bytes(body[4:6], "big")
    at = 6 + hashed
    unhashed = int.from_bytes(body[at:at + 2], "big")
    area = body[at + 2:at + 2 + unhashed]
    kept = b"".join(raw for raw, kind in _subpackets(area) if kind != 16)
    assert any(kind == 33 for _, kind in _subpackets(body[6:6 + hashed])), \
        "the signature has no issuer fingerprint subpacket"
    body = body[:at] + len(kept).to_bytes(2, "big") + kept + body[at + 2 + unhashed:]
    return bytes([0x80 | (2 << 2) | 2]) + len(body).to_bytes(4, "big") + body


def fingerprint_only(src, dst):
    """The RPM with every legacy signature naming its issuer by fingerprint only."""
    def change(entries):
        for tag in (TAG_RSA, TAG_DSA, TAG_PGP, TAG_GPG):
            if tag in entries:
                kind, _, data = entries[tag]
                data = without_issuer_key_id(data)
                entries[tag] = (kind, len(data), data)
    return rewrite(src, dst, change)
