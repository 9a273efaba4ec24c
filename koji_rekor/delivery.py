"""Logging one signature: upload, verify, receipt; delivering an outbox record."""

import json
import os
import time

from . import LOG
from .entry import make_entry
from .errors import disposition, failure_cause, REJECTED, RekorLogError, VerificationError, waits_for_log
from .outbox import next_attempt, REJECTED_FOLDER, remove_record, set_aside, write_record
from .receipts import make_receipt, Outcome, receipt_parts
from .rekor import make_client
from .rpmsig import (
    check_key_signed_rpm,
    expected_from_header,
    locate_signed_rpm,
    public_key_file,
    read_public_key,
    RPM_LOCK,
    sha256_of,
)
from .safefs import logs_dir, write_file_at
from .state import (check_consistency, clear_behind, clear_outage, record_behind, record_outage,
                    resolve_log_key, state_dir)
from .v2log import log_signature_v2, reverify_v2_receipt, v2_error
from .verify import verify_log_entry, verify_rpm_body


def upload_signed_rpm(settings, signed, key_path, state=None, deadline=None, spent=None,
                      client=None, log_key=None, heads=None):
    """Check, upload and verify one signed RPM; returns the Outcome.

    Nothing is sent unless the key verifies the RPM locally, and nothing is
    returned unless everything the log answered verifies. deadline and
    spent bound the whole exchange with the log (see RekorClient). A
    worker's pass hands in its thread's client, the log key and heads, the
    tree heads it has proved consistent (heads.check), instead of one of
    each per upload.
    """
    public_key = read_public_key(key_path)
    with RPM_LOCK:
        hdr = check_key_signed_rpm(signed, public_key, key_path)
    own_client = client is None
    if own_client:
        client = make_client(settings, deadline=deadline, spent=spent, api=1)  # rpm: v1 only
    try:
        key = log_key or resolve_log_key(settings, client, state)
        if getattr(settings, 'entry', 'rpm') == 'hashedrekord':
            return upload_hashedrekord(settings, client, state, key, signed, public_key, heads)
        body = make_entry('rpm', signed, public_key, stall_timeout=2 * settings.timeout)
        try:
            entry_id, entry, created = client.create_entry(body)
        finally:
            body.close()
        if body.sha256 is None:
            # 409 without our body being read to the end cannot happen with
            # Rekor, which reads it all; hash the RPM to check the entry.
            with signed.open() as fo:
                body.sha256 = sha256_of(fo)
        verified = verify_our_entry(settings, client, state, key, entry_id, entry,
                                    expected_from_header(hdr, body.sha256, public_key), heads)
    finally:
        if own_client:
            client.close()
    receipt = make_receipt(settings, signed.nvra, signed.sigkey, body.sha256, entry_id, entry)
    return Outcome(receipt, verified, created)


def upload_hashedrekord(settings, client, state, key, signed, public_key, heads=None):
    """The v1 hashedrekord of the RPM's header signature (O(header)): sent,
    verified as an rpm entry is, and its body checked against what we sent."""
    from .v1hashedrekord import build, request_body, verify_hashedrekord_body
    hr = build(signed, public_key)
    entry_id, entry, created = client.create_entry(request_body(hr))
    verified = verify_our_entry(settings, client, state, key, entry_id, entry, hr, heads,
                                body_check=verify_hashedrekord_body)
    receipt = make_receipt(settings, signed.nvra, signed.sigkey, None, entry_id, entry)
    return Outcome(receipt, verified, created)


def verify_our_entry(settings, client, state, key, entry_id, entry, expected, heads=None,
                     body_check=None):
    """Everything about an entry of our RPM: what the log signs, that the
    body records our package, and the tree head's consistency (proved by a
    worker's pass, heads, when there is one)."""
    verified = verify_log_entry(entry_id, entry, key, settings.origin_host)
    if body_check is None:
        verify_rpm_body(verified.logged, expected)
    else:
        body_check(verified.body, expected)
    key = verified.key   # the key of the entry's own tree, when the log has several
    if heads is not None:
        heads.check(client, key, verified, entry)
    elif state:
        check_consistency(client, state, key, verified.tree_id, verified.tree_size,
                          verified.root_hash, verified.checkpoint.note)
    return verified


def is_hashedrekord(entry):
    """Whether a v1 entry's body (unverified) claims the hashedrekord kind:
    only to pick the body check, which then checks it."""
    import base64
    try:
        return json.loads(base64.b64decode(entry['body'])).get('kind') == 'hashedrekord'
    except Exception:
        return False


def reverify_receipt(settings, record, topdir):
    """The receipt a record keeps (an enforced upload whose hub request died
    before the commit), rebuilt from its entry once that is verified again
    with the configured log key and the RPM's recomputed sha256; a record
    is input, so nothing of it is written as it stands. Returns the Outcome."""
    if record['receipt'].get('rekor_api') == 2:
        try:
            return reverify_v2_receipt(settings, record, topdir)
        except Exception as e:
            converted = v2_error(e)
            if converted is e:
                raise
            raise converted from None
    entries = record['receipt'].get('log_entry')
    if not isinstance(entries, dict) or len(entries) != 1:
        raise VerificationError('the receipt kept in the record holds no single entry')
    (entry_id, entry), = entries.items()
    if not isinstance(entry, dict):
        raise VerificationError('the receipt kept in the record holds no single entry')
    signed = locate_signed_rpm(record['build'], record['rpm'], record['sigkey'])
    key_path = public_key_file(settings.signing, record['sigkey'])
    public_key = read_public_key(key_path)
    with RPM_LOCK:
        hdr = check_key_signed_rpm(signed, public_key, key_path)
    if isinstance(entry.get('body'), str) and is_hashedrekord(entry):
        from .v1hashedrekord import build, verify_hashedrekord_body
        client = make_client(settings, api=1)
        try:
            key = resolve_log_key(settings, client, state_dir(topdir))
            verified = verify_our_entry(settings, client, state_dir(topdir), key, entry_id, entry,
                                        build(signed, public_key),
                                        body_check=verify_hashedrekord_body)
        finally:
            client.close()
        return Outcome(make_receipt(settings, signed.nvra, signed.sigkey, None, entry_id, entry),
                       verified, False)
    with signed.open() as fo:
        sha256 = sha256_of(fo)
    client = make_client(settings, api=1)
    try:
        key = resolve_log_key(settings, client, state_dir(topdir))
        verified = verify_our_entry(settings, client, state_dir(topdir), key, entry_id, entry,
                                    expected_from_header(hdr, sha256, public_key))
    finally:
        client.close()
    receipt = make_receipt(settings, signed.nvra, signed.sigkey, sha256, entry_id, entry)
    return Outcome(receipt, verified, False)


def log_signature(settings, build, rpminfo, sigkey, topdir, deadline=None, spent=None,
                  sighash=None, **shared):
    """Upload and verify one signature Koji stored; returns the Outcome.
    shared: what a worker's pass shares (see upload_signed_rpm)."""
    if settings.api == 2:
        return log_signature_v2(settings, build, rpminfo, sigkey, topdir, deadline, spent,
                                sighash)
    signed = locate_signed_rpm(build, rpminfo, sigkey)
    key_path = public_key_file(settings.signing, sigkey)
    return upload_signed_rpm(settings, signed, key_path, state_dir(topdir), deadline, spent,
                             **shared)


def body_size(rpm_size):
    """Bytes an upload of an RPM of this size sends (its base64 dominates)."""
    return 4 * ((rpm_size + 2) // 3) + 4096


def enforce_bound(settings, rpm_size):
    """Seconds an upload under enforce may take in all: each attempt has
    timeout plus the time to send the body at min_rate, with the retry
    delays between attempts."""
    per_attempt = settings.timeout + body_size(rpm_size) / settings.min_rate
    return (settings.retries + 1) * per_attempt + settings.backoff * (2 ** settings.retries - 1)


def write_receipt(settings, topdir, rpminfo, sigkey, receipt):
    """Write a receipt just built from a verified entry, under rekor-logs/."""
    if settings.record_log_info:
        dirs, name = receipt_parts(rpminfo, sigkey)
        with logs_dir(topdir, dirs) as fd:
            write_file_at(fd, name, json.dumps(receipt, indent=2, sort_keys=True).encode())


def log_outcome(nvra, sigkey, outcome):
    verified = outcome.verified
    if outcome.receipt.get('rekor_api') == 2:
        LOG.info('rekor_log: %s %s sigkey %s: Rekor v2 %s log index %d',
                 'logged' if outcome.created else 'already in the log', nvra, sigkey,
                 outcome.receipt['origin'], verified.entry.log_index)
        return
    LOG.info('rekor_log: %s %s sigkey %s: log index %d, uuid %s',
             'logged' if outcome.created else 'already in the log', nvra, sigkey,
             verified.log_index, verified.uuid)


def deliver(settings, topdir, path, record, verified_receipt=None, deadline=None,
            spent=None, **shared):
    """Finish one committed record: upload it, write the receipt, remove the
    record. On failure, keep the record with its attempt count and cause,
    or set it aside for good. A failure of the log makes the record wait for
    the log (due as soon as it answers); one of the record's own backs off
    per record.

    A receipt kept in a record is never written as it stands: only one this
    process built from an entry it just verified (verified_receipt, under
    enforce), or one rebuilt from the kept entry after verifying it again.
    """
    nvra, sigkey = record['nvra'], record['sigkey']
    result = 'logged'
    try:
        if verified_receipt is not None and record.get('receipt') == verified_receipt:
            receipt = verified_receipt
        else:
            if record.get('receipt'):
                outcome = reverify_receipt(settings, record, topdir)
            else:
                outcome = log_signature(settings, record['build'], record['rpm'], sigkey,
                                        topdir, deadline, spent, record.get('sighash'),
                                        **shared)
                clear_outage(topdir)
                clear_behind(topdir)
                if not outcome.created:
                    result = 'already in the log'
            receipt = outcome.receipt
            log_outcome(nvra, sigkey, outcome)
        write_receipt(settings, topdir, record['rpm'], sigkey, receipt)
    except Exception as e:
        cause = failure_cause(e)
        fate = disposition(e)
        if fate == REJECTED:
            try:
                set_aside(path, record, REJECTED_FOLDER, cause)
            except (OSError, RekorLogError) as aside:
                # Kept, then: a record is never lost.
                cause = '%s; cannot set it aside: %s' % (cause, failure_cause(aside))
            else:
                LOG.error('rekor_log: failed %s sigkey %s (for good, set aside in rejected/): %s',
                          nvra, sigkey, cause)
                return 'rejected'
        record['attempts'] += 1
        record['last_error'] = cause
        record['next_attempt'] = next_attempt(record['attempts'], waits_for_log(e), time.time())
        if isinstance(e, RekorLogError) and e.about_the_log and not e.next_pass:
            record_outage(settings, topdir, cause, e.closed)
        if isinstance(e, RekorLogError) and e.next_pass and e.proof_refused:
            record_behind(settings, topdir, cause)
        write_record(path, record)
        LOG.error('rekor_log: failed %s sigkey %s (attempt %d, kept in the outbox): %s',
                  nvra, sigkey, record['attempts'], cause)
        return 'failed'
    # The receipt is durable; the removal need not be: a record that comes
    # back after a crash meets 409 and ends in the same receipt.
    remove_record(path)  # (or already set aside by an admin meanwhile)
    return result


def record_identity(path):
    """(nvra, sigkey) from a record's file name <nvra>.<sigkey>.json."""
    stem = os.path.basename(path).rsplit('.', 1)[0]
    return tuple(stem.rsplit('.', 1))
