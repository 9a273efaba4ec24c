"""The models of what the log answers: each body is parsed once, whatever
its shape, and compared as a whole (rekor/models.py)."""

import base64
import json

import pytest

from koji_rekor.errors import RekorUnavailable, VerificationError
from koji_rekor.offline import check_receipt_body
from koji_rekor.rekor.models import (
    EntryBody, Receipt, RpmEntryBody, TreeHead, claimed_sha256, logged_body, logged_nevra,
    logged_nvra, logged_public_key,
)
from koji_rekor.verify import VerifiedEntry

KEY = b'-----BEGIN PGP PUBLIC KEY BLOCK-----\n...\n'


def rpm_body(**headers):
    heads = {'Name': 'hello', 'Epoch': '', 'Version': '1.0', 'Release': '1',
             'Architecture': 'noarch', 'RPMSIGTAG_MD5': 'cd' * 16}
    heads.update(headers)
    return {'kind': 'rpm', 'apiVersion': '0.0.1', 'spec': {
        'package': {'hash': {'algorithm': 'sha256', 'value': 'ab' * 32}, 'headers': heads},
        'publicKey': {'content': base64.b64encode(KEY).decode()}}}


def test_an_rpm_body_is_read_once_into_its_fields():
    body = RpmEntryBody.from_bytes(json.dumps(rpm_body()).encode())
    assert (body.kind, body.api_version) == ('rpm', '0.0.1')
    assert body.sha256 == 'ab' * 32 and body.hash_algorithm == 'sha256'
    assert body.nevra == ('hello', '', '1.0', '1', 'noarch')
    assert body.nvra == 'hello-1.0-1.noarch'
    assert body.md5 == 'cd' * 16
    assert body.public_key == KEY and body.public_keys == [KEY]


def test_bodies_compare_as_wholes():
    assert RpmEntryBody.from_dict(rpm_body()) == RpmEntryBody.from_dict(rpm_body())
    assert RpmEntryBody.from_dict(rpm_body()) != RpmEntryBody.from_dict(rpm_body(Release='2'))


def test_a_model_is_frozen():
    body = RpmEntryBody.from_dict(rpm_body())
    with pytest.raises(AttributeError):
        body.kind = 'rekord'


def test_a_rekord_body_names_its_signature_key_and_data_hash():
    body = EntryBody.from_dict({'kind': 'rekord', 'apiVersion': '0.0.1', 'spec': {
        'data': {'hash': {'algorithm': 'sha256', 'value': 'cd' * 32}},
        'signature': {'format': 'pgp', 'publicKey': {'content': base64.b64encode(KEY).decode()}}}})
    assert body.public_keys == [KEY]
    assert body.data_hash == ('sha256', 'cd' * 32)
    assert body.sha256 is None  # not a package hash: claimed_sha256 stays rpm only
    x509 = EntryBody.from_dict({'kind': 'rekord', 'spec': {'signature': {
        'format': 'x509', 'publicKey': {'content': base64.b64encode(KEY).decode()}}}})
    assert x509.public_keys == []


@pytest.mark.parametrize('raw, cause', [
    (b'{', 'entry body is not JSON'),
    (b'[1]', 'entry body is not an object'),
    (b'"rpm"', 'entry body is not an object'),
    (b'[' * 100000, 'entry body is not JSON'),
])
def test_a_body_that_is_not_an_object_is_one_line(raw, cause):
    with pytest.raises(VerificationError) as info:
        RpmEntryBody.from_bytes(raw)
    assert str(info.value) == cause


@pytest.mark.parametrize('body', [
    {}, {'spec': 3}, {'spec': {'package': []}}, {'spec': {'package': {'hash': 'x',
                                                                       'headers': [1]}}},
    {'spec': {'publicKey': {'content': 7}}}, {'spec': {'publicKey': {'content': '!!'}}},
    {'kind': ['rpm'], 'spec': {'signature': {'publicKey': 'x'}}},
])
def test_a_body_of_any_shape_parses_to_absent_fields(body):
    parsed = RpmEntryBody.from_dict(body)
    assert parsed.sha256 is None and parsed.md5 is None
    assert parsed.nevra == ('', '', '', '', '')
    assert parsed.nvra == '?-?-?.?'
    assert parsed.public_key == b'' and parsed.public_keys == []


def test_the_old_readers_answer_from_the_model():
    body = rpm_body(Epoch='2')
    package = body['spec']['package']
    assert logged_nevra(package) == ('hello', '2', '1.0', '1', 'noarch')
    assert logged_nvra(package) == 'hello-1.0-1.noarch'
    assert logged_public_key(body) == KEY
    entry = {'body': base64.b64encode(json.dumps(body).encode()).decode()}
    assert claimed_sha256(entry) == 'ab' * 32
    assert claimed_sha256({'body': base64.b64encode(b'[]').decode()}) is None
    assert claimed_sha256({}) is None


def test_a_tree_head_from_the_log_info():
    head = TreeHead.from_log_info({'treeID': '42', 'signedTreeHead': 'note\n',
                                   'treeSize': 7, 'rootHash': 'ab' * 32})
    assert head == TreeHead(42, 'note\n', 7, 'ab' * 32)
    tree_id, note = head
    assert (tree_id, note) == (42, 'note\n')


@pytest.mark.parametrize('shard', [{}, {'treeID': 'x', 'signedTreeHead': ''}, [],
                                   {'signedTreeHead': 'n'}, {'treeID': 1}])
def test_a_tree_head_without_its_fields_is_one_line(shard):
    with pytest.raises(RekorUnavailable) as info:
        TreeHead.from_log_info(shard)
    assert str(info.value).startswith('malformed log info from Rekor: a tree without')
    assert '\n' not in str(info.value)


def test_a_receipt_round_trips_and_keeps_what_it_does_not_know():
    data = {'nvra': 'hello-1.0-1.noarch', 'sigkey': 'abcd1234', 'sha256': 'ab' * 32,
            'rekor_url': 'https://rekor.example', 'log_entry': {'x': {}}}
    receipt = Receipt.from_json(json.dumps(data))
    assert receipt.claims and receipt.sigkey == 'abcd1234'
    assert receipt.to_json() == data
    assert Receipt.from_json(data) == receipt
    assert not Receipt.from_json({'log_entry': {}}).claims


@pytest.mark.parametrize('data, cause', [
    ('{', 'receipt is not JSON'), ('[]', 'receipt is not an object'),
    ({'nvra': 3}, 'receipt: nvra is not text'), ({'sha256': ['ab']}, 'receipt: sha256 is not text'),
])
def test_a_malformed_receipt_is_one_line(data, cause):
    with pytest.raises(VerificationError) as info:
        Receipt.from_json(data)
    assert str(info.value) == cause


def test_a_receipt_against_a_body_whose_headers_are_not_an_object():
    # Before the models, logged_nvra walked headers with .get: a body whose
    # headers are a list was an AttributeError, not a finding.
    body = rpm_body()
    body['spec']['package']['headers'] = ['Name', 'hello']
    with pytest.raises(VerificationError) as info:
        check_receipt_body({'nvra': 'hello-1.0-1.noarch'}, body)
    assert str(info.value) == 'receipt records hello-1.0-1.noarch, the entry logged ?-?-?.?'


def test_a_verified_entry_carries_its_body_parsed_once():
    verified = VerifiedEntry('e', 'u', 1, 0, 0, 1, b'', 0, rpm_body())
    assert verified.logged == RpmEntryBody.from_dict(rpm_body())
    assert logged_body(verified) is verified.logged
    assert verified.body == rpm_body()   # the JSON stays, as receipts keep it
