"""The outbox's state table and its one record reader (pure: no files)."""

import dataclasses

import pytest

from koji_rekor.errors import BadRecord
from koji_rekor.outbox import (
    COMMITTED,
    COMMITTED_STATE,
    outbox_line,
    Record,
    REJECTED_FOLDER,
    REJECTED_STATE,
    ROLLED_BACK_FOLDER,
    ROLLED_BACK_STATE,
    STATES,
    UNCOMMITTED,
    UNCOMMITTED_STATE,
    view,
)
from koji_rekor.status import record_fields


def a_record(**changes):
    record = {'nvra': 'pkg-1.0-1.noarch', 'sigkey': '0badc0de', 'sighash': 'ab' * 16,
              'build': {'id': 7, 'name': 'pkg', 'version': '1.0', 'release': '1', 'epoch': None,
                        'volume_name': 'DEFAULT'},
              'rpm': {'id': 9, 'build_id': 7, 'name': 'pkg', 'version': '1.0', 'release': '1',
                      'epoch': None, 'arch': 'noarch', 'payloadhash': 'cd' * 16,
                      'external_repo_id': 0},
              'queued': 1700000000, 'attempts': 2, 'next_attempt': 1700000600,
              'last_error': 'Rekor answered 503', 'receipt': None}
    record.update(changes)
    return record


NAME = 'pkg-1.0-1.noarch.0badc0de'


def test_one_table_names_every_state_and_the_words_users_see():
    assert [(s.folder, s.ending, s.hub, s.cli) for s in STATES] == [
        ('', COMMITTED, 'queued', 'pending'),
        ('', UNCOMMITTED, 'queued', 'uncommitted'),
        (REJECTED_FOLDER, COMMITTED, 'rejected', 'rejected'),
        (ROLLED_BACK_FOLDER, COMMITTED, 'rolled back', 'rolled-back')]
    assert (REJECTED_FOLDER, ROLLED_BACK_FOLDER) == ('rejected', 'rolled-back')
    assert [s.set_aside for s in STATES] == [False, False, True, True]
    assert len({s.name for s in STATES}) == len(STATES)


def test_record_from_json_keeps_check_records_rules():
    record = Record.from_json(a_record(), NAME + COMMITTED)
    assert record.nvra == 'pkg-1.0-1.noarch' and record.attempts == 2
    assert Record.from_json(a_record(), NAME + UNCOMMITTED).sigkey == '0badc0de'
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.attempts = 3
    for bad, name in ((a_record(attempts=True), NAME + COMMITTED),
                      (a_record(attempts=-1), NAME + COMMITTED),
                      (a_record(queued='soon'), NAME + COMMITTED),
                      (a_record(nvra='other-1-1.noarch'), NAME + COMMITTED),
                      (a_record(sigkey='0BADC0DE'), NAME + COMMITTED),
                      (a_record(receipt=[]), NAME + COMMITTED),
                      (a_record(), 'other.json'),
                      ([], NAME + COMMITTED)):
        with pytest.raises(BadRecord):
            Record.from_json(bad, name)


def test_view_reads_any_json_and_keeps_only_typed_fields():
    seen = view(a_record(set_aside={'reason': 'Rekor answered 400', 'time': 1700000900}))
    assert (seen.nvra, seen.sigkey, seen.attempts, seen.last_error, seen.next_attempt,
            seen.queued, seen.reason, seen.set_aside_time) == (
        'pkg-1.0-1.noarch', '0badc0de', 2, 'Rekor answered 503', 1700000600, 1700000000,
        'Rekor answered 400', 1700000900)
    hostile = view({'nvra': 5, 'attempts': True, 'last_error': ['x'], 'next_attempt': 1.5,
                    'queued': False, 'set_aside': 'reason'})
    assert hostile == view(None) == view([]) == view({})
    assert view({'queued': 1.5}).queued == 1.5
    assert Record.from_json(a_record(), NAME + COMMITTED).view() == view(a_record())


def test_the_hub_call_and_the_outbox_command_read_the_same_view():
    queued = a_record()
    assert record_fields(queued, COMMITTED_STATE) == {
        'committed': True, 'attempts': 2, 'last_error': 'Rekor answered 503',
        'next_attempt': 1700000600, 'queued': 1700000000}
    assert record_fields(queued, UNCOMMITTED_STATE)['committed'] is False
    assert record_fields({'queued': 1.5, 'attempts': True}, COMMITTED_STATE) == {'committed': True}
    aside = a_record(set_aside={'reason': 'refused', 'time': 1700000900})
    assert record_fields(aside, REJECTED_STATE) == {'reason': 'refused', 'time': 1700000900}
    assert record_fields({}, ROLLED_BACK_STATE) == {}


def test_outbox_line_words():
    item = {'state': 'pending', 'name': NAME, 'age': 60, 'attempts': 1, 'last_error': 'boom',
            'next_attempt': 0, 'reason': None}
    assert outbox_line(item) == 'pending     %s: age 1 min; 1 attempt; last error: boom' % NAME
    aside = dict(item, state='rolled-back', reason='gone', last_error=None, attempts=None)
    assert outbox_line(aside).endswith('set aside: gone')
