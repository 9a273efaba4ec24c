"""Property tests (hypothesis) of every parser of input: checkpoints, log
entries and their bodies, outbox records, configuration files and receipts.
Each gives a valid result or its own clean error, never another exception."""

import base64
import copy
import json

import koji
import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st

import koji_rekor.checkpoint
import koji_rekor.cli
import koji_rekor.config
import koji_rekor.errors
import koji_rekor.logkey
import koji_rekor.outbox
import koji_rekor.receipts
import koji_rekor.rpmsig
import koji_rekor.verify

from tests.support.rekor_server import RekorLog, canonical_json

SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])

# JSON values, including what breaks naive code: huge and negative integers,
# floats, booleans where numbers go, and nesting.
JSON_LEAF = st.one_of(st.none(), st.booleans(), st.integers(min_value=-2 ** 80, max_value=2 ** 80),
                      st.floats(allow_nan=False), st.text(max_size=20))
JSON = st.recursive(JSON_LEAF, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)),
    max_leaves=20)

DEEP = '[' * 50000 + ']' * 50000


@pytest.fixture(scope='module')
def local():
    """A local log with one rpm entry, its key and the entry as rendered."""
    log = RekorLog()
    for number in range(5):
        log.add_entry(canonical_json({'apiVersion': '0.0.1', 'kind': 'rpm', 'spec': {
            'package': {'hash': {'algorithm': 'sha256', 'value': '%064x' % number},
                        'headers': {'Name': 'p', 'Version': '1', 'Release': '1',
                                    'Architecture': 'noarch'}}}}))
    entry, _ = log.add_entry(canonical_json({'apiVersion': '0.0.1', 'kind': 'rpm'}))
    entry_id, document = log.render_entry(entry)
    key = koji_rekor.logkey.load_log_key(log.public_key_pem)
    return log, key, entry_id, document[entry_id]


# --- checkpoints ------------------------------------------------------------------

NOTE_CHARS = st.sampled_from(list('abc019+/= -\n\u2014') + ['127.0.0.1'])


@SETTINGS
@given(st.one_of(st.text(max_size=200), st.lists(NOTE_CHARS, max_size=60).map(''.join), JSON))
@example('a\n1\n\n\n\u2014 x AAAA\n')
@example('a\n99999999999999999999999\nAAAA\n\n\u2014 x AAAAAAAA\n')
def test_checkpoint_parser(local, note):
    log, key, _, _ = local
    try:
        checkpoint, signatures = koji_rekor.checkpoint.parse_checkpoint(note)
    except koji_rekor.errors.VerificationError:
        return
    assert isinstance(checkpoint.size, int) and isinstance(checkpoint.root_hash, bytes)
    with pytest.raises(koji_rekor.errors.VerificationError):
        koji_rekor.checkpoint.verify_checkpoint(note, key, '127.0.0.1', log.tree_id)


@SETTINGS
@given(st.integers(min_value=0), st.data())
def test_a_real_checkpoint_with_any_one_line_changed(local, line, data):
    log, key, _, _ = local
    note = log.checkpoint()
    lines = note.split('\n')
    line %= len(lines)
    lines[line] = data.draw(st.text(max_size=60))
    changed = '\n'.join(lines)
    try:
        koji_rekor.checkpoint.verify_checkpoint(changed, key, '127.0.0.1', log.tree_id)
    except koji_rekor.errors.VerificationError:
        return
    assert changed.split('\n\n')[0] == note.split('\n\n')[0]  # only the text is signed


# --- log entries and bodies ---------------------------------------------------------

def paths_of(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from paths_of(v, prefix + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from paths_of(v, prefix + (i,))


@SETTINGS
@given(st.data(), JSON)
def test_entry_parser_with_any_field_replaced(local, data, replacement):
    log, key, entry_id, entry = local
    entry = copy.deepcopy(entry)
    path = data.draw(st.sampled_from(list(paths_of(entry))[1:]))
    holder = entry
    for part in path[:-1]:
        holder = holder[part]
    holder[path[-1]] = replacement
    try:
        verified = koji_rekor.verify.verify_log_entry(entry_id, entry, key, '127.0.0.1')
    except koji_rekor.errors.VerificationError:
        return
    assert verified.uuid == entry_id[-64:]


@SETTINGS
@given(JSON, st.text(max_size=100))
@example({'body': base64.b64encode(DEEP.encode()).decode(), 'verification': {}}, 'a' * 64)
def test_entry_parser_with_anything(local, entry, entry_id):
    _, key, _, _ = local
    try:
        koji_rekor.verify.verify_log_entry(entry_id, entry if isinstance(entry, dict) else {}, key)
    except koji_rekor.errors.VerificationError:
        pass


@SETTINGS
@given(JSON)
@example({'kind': 'rpm', 'apiVersion': '0.0.1', 'spec': []})
@example({'kind': 'rpm', 'apiVersion': '0.0.1', 'spec': {'package': 'x'}})
@example({'kind': 'rpm', 'apiVersion': '0.0.1', 'spec': {'package': {'hash': []}}})
def test_body_check_with_anything(body):
    expected = koji_rekor.rpmsig.Expected(sha256='0' * 64, name='p', version='1', release='1',
                                  epoch=None, arch='noarch', sigmd5='', public_key=b'')
    try:
        koji_rekor.verify.verify_rpm_body(body if isinstance(body, dict) else {}, expected)
    except koji_rekor.errors.VerificationError:
        return
    raise AssertionError('a body with no key of ours verified')


@SETTINGS
@given(st.binary(max_size=300))
@example(DEEP.encode())
def test_body_decoder(data):
    try:
        assert isinstance(koji_rekor.verify.decode_body(data), dict)
    except koji_rekor.errors.VerificationError:
        pass


# --- outbox records ---------------------------------------------------------------

VALID_RECORD = koji_rekor.outbox.new_record(
    {'id': 1, 'name': 'hello', 'version': '1.0', 'release': '1', 'epoch': None,
     'volume_name': 'DEFAULT'},
    {'id': 1, 'build_id': 1, 'name': 'hello', 'version': '1.0', 'release': '1', 'epoch': None,
     'arch': 'noarch', 'payloadhash': 'ab', 'external_repo_id': 0}, 'b64940b3', 'cd')
VALID_NAME = 'hello-1.0-1.noarch.b64940b3.json'


def test_the_valid_record_passes():
    assert koji_rekor.outbox.check_record(copy.deepcopy(VALID_RECORD), VALID_NAME) == VALID_RECORD


@SETTINGS
@given(st.data(), JSON)
def test_record_parser_with_any_field_replaced(data, replacement):
    record = copy.deepcopy(VALID_RECORD)
    path = data.draw(st.sampled_from(list(paths_of(record))[1:]))
    holder = record
    for part in path[:-1]:
        holder = holder[part]
    holder[path[-1]] = replacement
    try:
        checked = koji_rekor.outbox.check_record(record, VALID_NAME)
    except koji_rekor.errors.BadRecord:
        return
    # What passes builds paths that stay where they belong.
    dirs, name = koji_rekor.receipts.receipt_parts(checked['rpm'], checked['sigkey'])
    for part in dirs + (name,):
        assert part not in ('.', '..') and '/' not in part
    koji.pathinfo.build(checked['build'])


@SETTINGS
@given(JSON, st.text(max_size=40))
def test_record_parser_with_anything(record, name):
    try:
        koji_rekor.outbox.check_record(record, name)
    except koji_rekor.errors.BadRecord:
        pass


# --- configuration files ---------------------------------------------------------------

OPTION_LINES = st.sampled_from(
    ['[%s]' % s for s in ('rekor', 'signing', 'upload', 'koji', 'monitor', 'config', 'other')]
    + ['%s = ' % o for (_, o), _ in koji_rekor.config.OPTIONS] + ['x', '', '  indented', '= value', '#'])
VALUES = st.one_of(st.sampled_from(['nan', 'inf', '-1', '0', '1e400', '5000', 'true', 'maybe',
                                    'http://127.0.0.1', 'https://h:99999', '', '%(x)s']),
                   st.text(max_size=10))


@SETTINGS
@given(st.lists(st.tuples(OPTION_LINES, VALUES), max_size=8))
def test_configuration_parser(tmp_path, lines):
    path = tmp_path / 'conf'
    path.write_text('\n'.join(line + (value if line.endswith('= ') else '')
                              for line, value in lines) + '\n')
    try:
        settings_ = koji_rekor.config.load_config(str(path))
    except koji.ConfigurationError as e:
        assert str(e).startswith(str(path)) and '\n' not in str(e)
        return
    assert 0 < settings_.timeout <= koji_rekor.config.LIMITS['timeout']
    assert 0 <= settings_.retries <= koji_rekor.config.LIMITS['retries']


# --- receipts ---------------------------------------------------------------------------

@SETTINGS
@given(st.data(), JSON)
@example(None, DEEP)
def test_verify_with_any_receipt(local, tmp_path_factory, capsys, data, replacement):
    log, _, entry_id, entry = local
    folder = tmp_path_factory.mktemp('receipt')
    key = folder / 'log.pub'
    key.write_bytes(log.public_key_pem)
    receipt = {'rekor_url': 'http://127.0.0.1:1', 'nvra': 'p-1-1.noarch', 'sigkey': 'deadbeef',
               'sha256': '0' * 64, 'log_entry': {entry_id: copy.deepcopy(entry)}}
    path = folder / 'receipt.json'
    if replacement == DEEP:
        path.write_text(DEEP)
    else:
        where = data.draw(st.sampled_from(list(paths_of(receipt))[1:]))
        holder = receipt
        for part in where[:-1]:
            holder = holder[part]
        holder[where[-1]] = replacement
        path.write_text(json.dumps(receipt))
    status = koji_rekor.cli.main(['verify', str(path), '--log-key', str(key),
                              '--config', str(write_empty(folder))])
    out, err = capsys.readouterr()
    assert status in (0, 1, 2)
    assert 'Traceback' not in err
    if status:
        assert err.count('\n') == 1


def write_empty(folder):
    conf = folder / 'rekor_log.conf'
    conf.write_text('[rekor]\nurl = http://127.0.0.1:1\nallow_insecure_http = true\n')
    return conf
