"""The hub call rekorLogStatus: what became of each signature of an RPM."""

import base64
import os

import koji

from .display import display_url
from .errors import failure_cause, RekorLogError, VerificationError
from .outbox import COMMITTED_STATE, OUTBOX_DIR, outbox_dir, record_name, STATES, view
from .receipts import read_receipt, receipt_path
from .rpmsig import (
    check_key_signed_rpm,
    expected_from_header,
    locate_signed_rpm,
    nvra_of,
    public_key_file,
    read_public_key,
    RPM_LOCK,
    sha256_of,
)
from .safefs import logs_dir, parse_json, read_file_at
from .state import behind_reason, known_log_key, read_behind, state_dir
from .v2log import v2_error, v2_log_key, v2_shards, v2_trusted_logs
from .verify import verify_log_entry, verify_rpm_body


# ---------------------------------------------------------------------------
# Hub call: rekorLogStatus
#
# Read-only: what became of each signature of an RPM, from its receipt and
# the outbox. A receipt counts as logged only once it verifies offline
# (log key, inclusion proof, checkpoint, SET, and the body against that
# signature's signed copy of the RPM); one that does not is reported so.
# ---------------------------------------------------------------------------


def rekor_log_status(rpm, settings_of):
    """Per signature of an RPM (its ID or N-V-R.A): logged, queued, set
    aside (rejected or rolled back), unverified or not logged."""
    # kojihub exists only inside the hub, which has loaded it by the time
    # a call runs; importing it here keeps this module usable elsewhere.
    import kojihub
    rpminfo = kojihub.get_rpm(rpm, strict=True)
    sigkeys = sorted({sig['sigkey'] for sig in kojihub.query_rpm_sigs(rpm_id=rpminfo['id'])
                      if sig['sigkey']})  # '' is an unsigned header, not a signature
    if rpminfo.get('external_repo_id'):
        return [signature_status(rpminfo, sigkey, 'not logged', reason=(
            'from external repo %s: the plugin logs only what this Koji signs'
            % rpminfo.get('external_repo_name'))) for sigkey in sigkeys]
    settings = settings_of()
    build = kojihub.get_build(rpminfo['build_id'], strict=True)
    return [status_of_signature(settings, koji.pathinfo.topdir, build, rpminfo, sigkey)
            for sigkey in sigkeys]


def signature_status(rpminfo, sigkey, status, **fields):
    return dict(fields, rpm_id=rpminfo['id'], nvra=nvra_of(rpminfo), sigkey=sigkey,
                status=status)


def status_of_signature(settings, topdir, build, rpminfo, sigkey):
    """Gather the facts (the receipt checked, else the record found), then
    status_of decides."""
    path = receipt_path(topdir, rpminfo, sigkey)
    try:
        receipt = read_receipt(topdir, rpminfo, sigkey)
    except RekorLogError as e:  # a link, not a file, not JSON: not believed
        receipt, checked = None, e
    else:
        checked = None
    if receipt is not None:
        try:
            checked = check_receipt(settings, topdir, build, rpminfo, sigkey, path, receipt)
        except Exception as e:
            checked = e
    found = None if checked is not None else find_record(topdir, record_name(rpminfo, sigkey))
    behind = read_behind(settings, topdir) if found is not None else None
    status, fields = status_of(checked, path, found, settings.record_log_info, behind)
    return signature_status(rpminfo, sigkey, status, **fields)


def find_record(topdir, name):
    """(state, path, parsed record or the RekorLogError reading it) of the
    first file of this signature in the outbox's states; None when none."""
    for state in STATES:
        record_path = os.path.join(outbox_dir(topdir), state.folder, name + state.ending)
        try:
            record = read_outbox_file(topdir, state.folder, name + state.ending)
        except RekorLogError as e:
            return state, record_path, e
        if record is not None:
            return state, record_path, record
    return None


def status_of(checked, receipt_file, found, record_log_info, behind=None):
    """(status, fields) of a signature from the facts: checked is None (no
    receipt), what the receipt proves (a dict), or why it does not verify
    (an exception); found is find_record's answer; behind, the log's run of
    refused consistency proofs (state.Behind) when one is kept."""
    if isinstance(checked, BaseException):
        return 'unverified', {'receipt': receipt_file, 'reason':
                              'the receipt does not verify: %s' % failure_cause(checked)}
    if checked is not None:
        return 'logged', dict(checked)
    if found is not None:
        state, record_path, record = found
        if isinstance(record, BaseException):
            return state.hub, {'record': record_path,
                               'reason': 'the record is unreadable: %s' % record}
        fields = dict(record_fields(record, state), record=record_path)
        if state.hub == 'queued' and behind is not None and behind.not_checked:
            return 'not checked', dict(fields, reason=behind_reason(behind))
        return state.hub, fields
    return 'not logged', {'reason': 'no receipt and nothing in the outbox' if record_log_info
                          else '[upload] record_log_info is off: no receipts are kept'}


def read_outbox_file(topdir, folder, name):
    """A record of the outbox (or of one of its folders), parsed, read
    without following links; None when absent."""
    try:
        with logs_dir(topdir, (OUTBOX_DIR,) + ((folder,) if folder else ()),
                      create=False) as fd:
            data = read_file_at(fd, name)
    except FileNotFoundError:
        return None
    return parse_json(data, name) if data is not None else None


def check_receipt(settings, topdir, build, rpminfo, sigkey, path, receipt):
    """Verify a receipt offline against the signed RPM Koji holds for this
    signature; returns what it proves."""
    if isinstance(receipt, dict) and receipt.get('rekor_api') == 2:
        try:
            return check_v2_receipt(settings, build, rpminfo, sigkey, path, receipt)
        except Exception as e:
            raise v2_error(e) from None
    entries = receipt.get('log_entry') if isinstance(receipt, dict) else None
    if not isinstance(entries, dict) or len(entries) != 1:
        raise VerificationError('%s holds no single Rekor entry' % path)
    (entry_id, entry), = entries.items()
    key, _ = known_log_key(settings, state_dir(topdir))
    if key is None:
        raise VerificationError('no log key for %s to check it with' % display_url(settings.url))
    verified = verify_log_entry(entry_id, entry, key, settings.origin_host)
    signed = locate_signed_rpm(build, rpminfo, sigkey)
    key_path = public_key_file(settings.signing, sigkey)
    public_key = read_public_key(key_path)
    with RPM_LOCK:
        hdr = check_key_signed_rpm(signed, public_key, key_path)
    if isinstance(verified.body, dict) and verified.body.get('kind') == 'hashedrekord':
        from .v1hashedrekord import build as build_hr, verify_hashedrekord_body
        verify_hashedrekord_body(verified.body, build_hr(signed, public_key))
        return {'entry_id': verified.entry_id, 'log_index': verified.log_index,
                'integrated_time': verified.integrated_time, 'receipt': path}
    with signed.open() as fo:
        sha256 = sha256_of(fo)
    verify_rpm_body(verified.logged, expected_from_header(hdr, sha256, public_key))
    return {'entry_id': verified.entry_id, 'log_index': verified.log_index,
            'integrated_time': verified.integrated_time, 'receipt': path}


def check_v2_receipt(settings, build, rpminfo, sigkey, path, receipt):
    """check_receipt for a v2 receipt: its entry verifies with the key of
    the shard it names (one the configuration knows), and its body is the
    hashedrekord built anew from the signature Koji holds."""
    from .v2 import entry as v2entry, hashedrekord
    urls = [u for u in v2_shards(settings) if display_url(u) == receipt.get('rekor_url')]
    if not urls:
        raise VerificationError('%s names a Rekor v2 shard the configuration does not (%r)'
                                % (path, receipt.get('rekor_url')))
    signed = locate_signed_rpm(build, rpminfo, sigkey)
    armored = read_public_key(public_key_file(settings.signing, sigkey))
    body = hashedrekord.from_rpm_file(signed.path, armored, sighdr=signed.sighdr
                                      if signed.spliced else None).canonical_body()
    if receipt.get('body') != base64.b64encode(body).decode('ascii'):
        raise VerificationError('%s: its body is not the entry of this signature' % path)
    tle = receipt.get('transparency_log_entry')
    verified = v2entry.verify_entry(tle if isinstance(tle, dict) else {}, body,
                                    v2_log_key(settings, urls[0], v2_trusted_logs(settings)))
    return {'entry_id': None, 'log_index': verified.entry.log_index, 'integrated_time': None,
            'receipt': path, 'rekor_api': 2}


def record_fields(record, state):
    """What an outbox record says (outbox.view), in the hub call's fields."""
    seen = view(record)
    if not state.set_aside:
        fields = {'committed': state is COMMITTED_STATE}
        fields.update((k, v) for k, v in (
            ('attempts', seen.attempts), ('last_error', seen.last_error),
            ('next_attempt', seen.next_attempt),
            ('queued', seen.queued if isinstance(seen.queued, int) else None)) if v is not None)
        return fields
    return {k: v for k, v in (('reason', seen.reason), ('time', seen.set_aside_time))
            if v is not None}
