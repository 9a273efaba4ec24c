"""The outbox's decisions as pure functions: the next attempt, the fate of
a failed record, try now or leave to the worker, which records are due,
and what rekorLogStatus says of a signature. No server, file or RPM."""

import pytest

from koji_rekor.errors import (
    BadRecord,
    BreaksRekorRule,
    disposition,
    LogBehind,
    LogClosed,
    REJECTED,
    RekorLogError,
    RekorMisconfigured,
    RekorRejected,
    RekorUnavailable,
    RETRY,
    SignatureSourceError,
    SourceGone,
    VerificationError,
    WAIT_FOR_LOG,
    waits_for_log,
)
from koji_rekor.hub import V2_CHECKPOINT_WAIT, why_leave_to_worker
from koji_rekor.outbox import (
    COMMITTED_STATE,
    next_attempt,
    OUTBOX_BACKOFF,
    OUTBOX_BACKOFF_MAX,
    REJECTED_STATE,
    ROLLED_BACK_STATE,
    UNCOMMITTED_STATE,
)
from koji_rekor.state import Outage
from koji_rekor.status import status_of
from koji_rekor.worker import due, is_due

NOW = 1_700_000_000


# -- next_attempt -------------------------------------------------------------

def test_a_failure_of_the_log_makes_the_record_wait_for_the_log():
    assert next_attempt(1, True, NOW) == next_attempt(40, True, NOW) == 0


def test_the_records_own_failure_backs_off_doubling_then_capped():
    delays = [next_attempt(n, False, NOW + 0.9) - NOW for n in range(1, 12)]
    assert delays[:4] == [OUTBOX_BACKOFF, 2 * OUTBOX_BACKOFF, 4 * OUTBOX_BACKOFF,
                          8 * OUTBOX_BACKOFF]
    assert max(delays) == OUTBOX_BACKOFF_MAX and delays == sorted(delays)
    assert next_attempt(10 ** 6, False, NOW) == NOW + OUTBOX_BACKOFF_MAX   # no overflow


# -- disposition --------------------------------------------------------------

@pytest.mark.parametrize('exc, fate', [
    (RekorRejected('Rekor answered 400'), REJECTED),
    (BreaksRekorRule('no payload'), REJECTED),
    (SourceGone('the signed RPM is gone'), REJECTED),
    (BadRecord('not a JSON object'), REJECTED),
    (RekorUnavailable('Rekor answered 503'), WAIT_FOR_LOG),
    (RekorMisconfigured('a redirect'), WAIT_FOR_LOG),
    (LogClosed('501'), WAIT_FOR_LOG),
    (LogBehind('409 then 404'), WAIT_FOR_LOG),
    (VerificationError('the inclusion proof does not verify'), RETRY),
    (SignatureSourceError('no public key'), RETRY),
    (RekorLogError('anything else'), RETRY),
    (OSError(28, 'No space left on device'), RETRY),
    (KeyError('rpm'), RETRY),
])
def test_the_fate_of_a_failed_record(exc, fate):
    assert disposition(exc) == fate


def test_policy_flags_are_class_attributes_not_duck_typing():
    for flag in ('permanent', 'about_the_log', 'next_pass', 'closed', 'at_once'):
        assert getattr(RekorLogError, flag) is False
    assert LogClosed('x').closed and LogClosed('x').about_the_log and LogClosed('x').at_once
    assert LogBehind('x').next_pass and not LogBehind('x').about_the_log
    # A permanent failure that could not be set aside still waits or backs off as before.
    assert not waits_for_log(RekorRejected('x')) and waits_for_log(LogBehind('x'))
    assert not waits_for_log(ValueError('x'))


# -- why_leave_to_worker ---------------------------------------------------------

MIB = 1024 * 1024
FAILING = Outage(since=NOW - 60, failures=2, next_probe=NOW + 60, last_error='Rekor answered 503')
CLOSED = Outage(since=NOW - 60, failures=1, next_probe=NOW - 1, last_error='501', closed=True)


def leave(left=30.0, size=MIB, outage=None, now=NOW, v2=False, min_rate=1024 * 1024):
    return why_leave_to_worker(left, size, min_rate, outage, now, 30.0, v2=v2)


def test_try_now_when_the_budget_fits_and_the_log_answers():
    assert leave() is None
    assert leave(outage=FAILING, now=FAILING.next_probe) is None   # its probe is due


def test_leave_to_the_worker():
    assert leave(left=0) == 'the hub budget of 30 s is spent'
    assert 'spent' in leave(left=-1, outage=FAILING, v2=True)
    assert leave(size=100 * MIB, min_rate=MIB, left=30).startswith(
        'an RPM of 100 MiB cannot be sent within the hub budget')
    assert leave(outage=CLOSED) == 'the log no longer takes entries (501)'
    assert leave(outage=FAILING) == 'the log is failing (Rekor answered 503)'


def test_v2_waits_for_a_checkpoint_and_has_no_size_rule():
    assert 'next checkpoint' in leave(left=V2_CHECKPOINT_WAIT - 0.1, v2=True, size=None)
    assert leave(left=V2_CHECKPOINT_WAIT, v2=True, size=None) is None
    assert leave(v2=True, size=None, outage=CLOSED) is None   # v1's closed rule only
    assert leave(v2=True, size=None, outage=FAILING) == 'the log is failing (Rekor answered 503)'


# -- due --------------------------------------------------------------------------

def test_which_records_a_pass_tries():
    records = [{'next_attempt': 0}, {'next_attempt': NOW}, {'next_attempt': NOW + 1}]
    assert due(records, NOW, log_failing=False) == records[:2]
    assert due(records, NOW, log_failing=False, force=True) == records
    assert due(records, NOW, log_failing=True) == due(records, NOW, True, force=True) == []
    assert is_due(records[2], NOW + 1, False)


# -- status_of --------------------------------------------------------------------

def test_status_of_a_signature_from_the_facts():
    proved = {'entry_id': 'e', 'log_index': 4, 'integrated_time': NOW, 'receipt': '/r'}
    assert status_of(proved, '/r', None, True) == ('logged', proved)
    assert status_of(VerificationError('bad proof'), '/r', None, True) == (
        'unverified', {'receipt': '/r', 'reason': 'the receipt does not verify: bad proof'})
    assert status_of(KeyError('x'), '/r', None, True)[1]['reason'] == \
        'the receipt does not verify: unexpected KeyError: \'x\''
    record = {'attempts': 1, 'queued': NOW}
    assert status_of(None, '/r', (COMMITTED_STATE, '/o/a.json', record), True) == (
        'queued', {'committed': True, 'attempts': 1, 'queued': NOW, 'record': '/o/a.json'})
    assert status_of(None, '/r', (UNCOMMITTED_STATE, '/o/a.uncommitted', {}), True) == (
        'queued', {'committed': False, 'record': '/o/a.uncommitted'})
    assert status_of(None, '/r', (REJECTED_STATE, '/o/rejected/a.json',
                                  {'set_aside': {'reason': 'refused', 'time': NOW}}), True) == (
        'rejected', {'reason': 'refused', 'time': NOW, 'record': '/o/rejected/a.json'})
    assert status_of(None, '/r', (ROLLED_BACK_STATE, '/o/rolled-back/a.json',
                                  RekorLogError('a link')), True) == (
        'rolled back', {'record': '/o/rolled-back/a.json',
                        'reason': 'the record is unreadable: a link'})
    assert status_of(None, '/r', None, True) == (
        'not logged', {'reason': 'no receipt and nothing in the outbox'})
    assert status_of(None, '/r', None, False)[1]['reason'].startswith(
        '[upload] record_log_info is off')
