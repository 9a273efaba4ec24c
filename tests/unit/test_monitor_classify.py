"""How the monitor classifies a verified entry (pure: no log, no Koji)."""

import base64
import hashlib

from koji_rekor.monitor.scan import classify_entry, Finding, placement_finding
from koji_rekor.monitor.watchlist import OurKeys
from koji_rekor.verify import VerifiedEntry


def packet(tag, body):
    """An OpenPGP packet in the new format (RFC 4880, 4.2.2), one-octet length."""
    assert len(body) < 192
    return bytes([0xC0 | tag, len(body)]) + body


def key(seed, email=None):
    """A binary "key": a v4 public-key packet (its fingerprint is all the
    monitor reads of it) and a user ID."""
    body = b'\x04' + hashlib.sha256(seed).digest()
    data = packet(6, body)
    if email:
        data += packet(13, ('Someone <%s>' % email).encode())
    fingerprint = hashlib.sha1(b'\x99' + len(body).to_bytes(2, 'big') + body).hexdigest().upper()
    return data, fingerprint


OURS, OUR_FP = key(b'ours', 'release@example.org')
OTHER, OTHER_FP = key(b'other')
IMPOSTOR, IMPOSTOR_FP = key(b'impostor', 'release@example.org')
KEYS = OurKeys(fingerprints={OUR_FP: 'RPM-GPG-KEY-ours'}, subjects={'release@example.org'})


def entry(public_key, kind='rpm', tree_index=5, tree_id=1):
    body = {'kind': kind, 'apiVersion': '0.0.1',
            'spec': {'publicKey': {'content': base64.b64encode(public_key).decode()}}}
    return VerifiedEntry(entry_id='%016x' % tree_id + 'ab' * 32, uuid='ab' * 32,
                         tree_id=tree_id, log_index=105, tree_index=tree_index, tree_size=200,
                         root_hash=b'\0' * 32, integrated_time=1700000000, body=body)


def test_an_entry_made_with_another_key_is_not_ours():
    seen = classify_entry(entry(OTHER), KEYS)
    assert not seen.ours and seen.finding is None and seen.fingerprints == (OTHER_FP,)


def test_an_entry_made_with_our_key_is_for_koji_to_account_for():
    seen = classify_entry(entry(OURS), KEYS)
    assert seen.ours and seen.finding is None and seen.fingerprints == (OUR_FP,)
    assert seen.where.startswith('log index 105, entry ' + 'ab' * 32 + ' (integrated ')


def test_another_key_claiming_our_identity_is_a_finding():
    seen = classify_entry(entry(IMPOSTOR), KEYS)
    assert seen.ours and seen.finding.kind == 'our identity'
    assert seen.finding.message.endswith(
        ': made with key %s, not one of ours, whose user ID claims release@example.org'
        % IMPOSTOR_FP)


def test_our_key_in_another_kind_of_entry_is_a_finding():
    seen = classify_entry(entry(OURS, kind='rekord'), KEYS)
    assert seen.finding == Finding('other kind', '%s: a rekord entry made with our key %s (%s); '
                                   'this Koji makes only rpm entries'
                                   % (seen.where, OUR_FP[-8:].lower(), 'RPM-GPG-KEY-ours'))


def test_a_body_without_a_key_is_not_ours():
    verified = entry(OURS)
    verified.body['spec'] = {'publicKey': {'content': 'not base64!'}}
    assert classify_entry(verified, KEYS).ours is False


def test_placement():
    assert placement_finding(entry(OURS, tree_index=5), 100, 105) is None
    moved = placement_finding(entry(OURS, tree_index=4), 100, 105)
    assert moved.kind == 'unverified entry' and moved.message == (
        'log index 105: the log answered with entry %s, which it proves at index 4 of tree 1'
        % ('%016x' % 1 + 'ab' * 32))
    assert placement_finding(entry(OURS), None, 105).kind == 'unverified entry'
