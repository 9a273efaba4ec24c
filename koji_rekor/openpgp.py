"""OpenPGP (RFC 4880 / RFC 9580) packets, armor, fingerprints, key flags."""

import base64
import binascii
import hashlib
import re


def signature_issuer(blob):
    """(key ID, fingerprint) an OpenPGP signature packet names as its issuer
    (16 and 40 upper-case hex digits, either may be None), or None when the
    blob is not a signature packet. Version 3 (RFC 4880, 5.2.2) carries the
    key ID in place; version 4 (5.2.3) in its issuer (16) or issuer
    fingerprint (33) subpacket."""
    packets = openpgp_packets(blob)
    if len(packets) != 1 or packets[0][0] != PGP_TAG_SIGNATURE or not packets[0][1]:
        return None
    sig = packets[0][1]
    if sig[0] == 3 and len(sig) >= 15:
        return sig[7:15].hex().upper(), None
    if sig[0] != 4 or len(sig) < 6:
        return None
    key_id = fingerprint = None
    pos, areas = 4, []
    for _ in range(2):
        size = int.from_bytes(sig[pos:pos + 2], 'big')
        areas.append(sig[pos + 2:pos + 2 + size])
        pos += 2 + size
    for area in areas:
        at = 0
        while at < len(area):
            first = area[at]
            if first < 192:
                size, at = first, at + 1
            elif first < 255 and at + 1 < len(area):
                size, at = ((first - 192) << 8) + area[at + 1] + 192, at + 2
            else:
                size, at = int.from_bytes(area[at + 1:at + 5], 'big'), at + 5
            if size == 0 or at + size > len(area):
                break
            kind, value = area[at] & 0x7f, area[at + 1:at + size]
            if kind == 16 and len(value) == 8:
                key_id = value.hex().upper()
            elif kind == 33 and len(value) == 21 and value[0] == 4:
                fingerprint = value[1:].hex().upper()
            at += size
    return key_id, fingerprint


def openpgp_packets(data):
    """The packets [(tag, body)] of an OpenPGP key, armored (RFC 4880,
    section 6.2; several blocks are joined) or binary: the lenient reader
    over packets(), keeping what precedes a break in the framing ([] when
    the data is neither armored nor OpenPGP)."""
    if data.lstrip().startswith(b'-----BEGIN'):
        data = dearmor_all(data)
        if data is None:
            return []
    found = []
    try:
        for packet in iter_packets(data):
            found.append(packet)
    except CutShort as e:
        found.append(e.packet)
    except ValueError:
        pass
    return found


def dearmor_all(data):
    """The binary of every armored block joined (RFC 4880, section 6.2),
    None when a block's base64 is broken.

    Written by hand because none of the project's dependencies parses
    OpenPGP; only the armor and the packet framing are read here.
    """
    binary = b''
    lines = data.decode('ascii', 'replace').replace('\r', '').split('\n')
    inside = header = False
    for line in lines:
        if line.startswith('-----BEGIN'):
            inside = header = True
            body = []
        elif line.startswith('-----END') and inside:
            inside = False
            try:
                binary += base64.b64decode(''.join(body))
            except (ValueError, binascii.Error):
                return None
        elif inside and header:
            header = bool(line.strip())  # armor headers end at the empty line
        elif inside and line and not line.startswith('='):
            body.append(line.strip())
    return binary


class CutShort(ValueError):
    """A packet whose body runs past the end of the data."""

    def __init__(self, packet):
        super().__init__('packet cut short')
        self.packet = packet


def iter_packets(data):
    """Yield (tag, body) for each packet of a binary OpenPGP stream, split
    by its framing (RFC 4880, section 4.2); ValueError where the framing
    breaks (partial lengths never occur in keys)."""
    pos = 0
    while pos < len(data):
        first = data[pos]
        if not first & 0x80:
            raise ValueError('not an OpenPGP packet at byte %d' % pos)
        try:
            if first & 0x40:
                tag, octet = first & 0x3f, data[pos + 1]
                if octet < 192:
                    head, length = 2, octet
                elif octet < 224:
                    head, length = 3, ((octet - 192) << 8) + data[pos + 2] + 192
                elif octet == 255:
                    head, length = 6, int.from_bytes(data[pos + 2:pos + 6], 'big')
                else:
                    raise ValueError('partial body length')
            else:
                tag, width = (first >> 2) & 0x0f, {0: 1, 1: 2, 2: 4}.get(first & 3)
                if width is None:
                    raise ValueError('indeterminate length')
                head, length = 1 + width, int.from_bytes(data[pos + 1:pos + 1 + width], 'big')
        except IndexError:
            raise ValueError('packet header cut short')
        if pos + head + length > len(data):
            raise CutShort((tag, data[pos + head:pos + head + length]))
        yield tag, data[pos + head:pos + head + length]
        pos += head + length


def strict_packets(data):
    """[(tag, body)] of a binary OpenPGP stream; ValueError when it is cut
    short or its framing breaks (the strict reader, for doctor)."""
    return list(iter_packets(data))

PGP_TAG_SIGNATURE, PGP_TAG_PUBLIC_KEY, PGP_TAG_USER_ID, PGP_TAG_PUBLIC_SUBKEY = 2, 6, 13, 14


def openpgp_primary_key(armored):
    """The primary public-key packet (RFC 4880, section 5.5.2) of a key:
    the same key Rekor re-armored compares equal here."""
    packets = openpgp_packets(armored)
    if not packets or packets[0][0] != PGP_TAG_PUBLIC_KEY:
        return None
    return packets[0][1]


def key_packet_fingerprint(body):
    """RFC 4880, section 12.2: a version 4 key's fingerprint is SHA-1 over
    0x99, the two-octet length and the key packet's body; 40 upper-case hex
    digits, or None for another version."""
    if not body or body[0] != 4 or len(body) > 0xffff:
        return None
    return hashlib.sha1(b'\x99' + len(body).to_bytes(2, 'big') + body).hexdigest().upper()


def openpgp_fingerprint(armored):
    """The fingerprint of a key's primary key (None unless version 4)."""
    return key_packet_fingerprint(openpgp_primary_key(armored))


def openpgp_fingerprints(armored):
    """The v4 fingerprints of the primary key and every subkey: what
    identifies a key whatever user IDs or signatures travel with it."""
    return [fp for fp in (key_packet_fingerprint(body) for tag, body in openpgp_packets(armored)
                          if tag in (PGP_TAG_PUBLIC_KEY, PGP_TAG_PUBLIC_SUBKEY)) if fp]


def openpgp_emails(armored):
    """The e-mail addresses of a key's user IDs ("Name <address>"), lower case."""
    found = []
    for tag, body in openpgp_packets(armored):
        if tag == PGP_TAG_USER_ID:
            match = re.search(r'<([^<>@\s]+@[^<>\s]+)>', body.decode('utf-8', 'replace'))
            if match:
                found.append(match.group(1).lower())
    return found

ARMOR_BEGIN = b'-----BEGIN PGP PUBLIC KEY BLOCK-----'

ARMOR_END = b'-----END PGP PUBLIC KEY BLOCK-----'


def armored_blocks(data):
    """Each armored public key block in data: a key file, or a gpg-pubkey
    package's description, may hold several."""
    blocks, start = [], data.find(ARMOR_BEGIN)
    while start >= 0:
        end = data.find(ARMOR_END, start)
        if end < 0:
            break
        end += len(ARMOR_END)
        blocks.append(data[start:end] + b'\n')
        start = data.find(ARMOR_BEGIN, end)
    return blocks

# --- signing keys --------------------------------------------------------

OPENPGP_PUBLIC_KEY, OPENPGP_PUBLIC_SUBKEY, OPENPGP_SIGNATURE = 6, 14, 2

SUBKEY_BINDING = 0x18

KEY_FLAGS_SUBPACKET, CAN_SIGN = 27, 0x02


def dearmor(armored):
    """The packets of an ASCII-armored OpenPGP block (RFC 4880, 6.2), or None."""
    lines = armored.decode('ascii', 'replace').replace('\r', '').split('\n')
    try:
        begin = next(i for i, l in enumerate(lines) if l.startswith('-----BEGIN PGP PUBLIC KEY'))
        start = lines.index('', begin)
        return base64.b64decode(''.join(l for l in lines[start + 1:]
                                        if l and not l.startswith(('=', '-----'))))
    except (StopIteration, ValueError, binascii.Error):
        return None


def v4_short_id(body):
    """Koji's sigkey for a key packet: the last 8 hex digits of its v4
    fingerprint (RFC 4880, 12.2), lower case; None for other versions."""
    if not body or body[0] != 4:
        return None
    return hashlib.sha1(b'\x99' + len(body).to_bytes(2, 'big') + body).hexdigest()[-8:]


def binding_can_sign(signature):
    """Whether a v4 subkey binding signature's hashed key flags (RFC 4880,
    5.2.3.21) allow signing; a binding without key flags allows it."""
    if len(signature) < 6 or signature[0] != 4 or signature[1] != SUBKEY_BINDING:
        return None
    hashed = signature[6:6 + int.from_bytes(signature[4:6], 'big')]
    pos = 0
    while pos < len(hashed):
        octet = hashed[pos]
        if octet < 192:
            head, length = 1, octet
        elif octet < 255:
            head, length = 2, ((octet - 192) << 8) + hashed[pos + 1] + 192
        else:
            head, length = 5, int.from_bytes(hashed[pos + 1:pos + 5], 'big')
        kind = hashed[pos + head] & 0x7f if pos + head < len(hashed) else None
        if kind == KEY_FLAGS_SUBPACKET:
            return bool(hashed[pos + head + 1] & CAN_SIGN) if length > 1 else False
        pos += head + length
    return True
