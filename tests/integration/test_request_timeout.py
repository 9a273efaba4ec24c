"""A log whose whole-request timeout is shorter than an upload needs (issue
19, item 3): the local log cuts a request off as Rekor's Go server does
(http.Server ReadTimeout/WriteTimeout, --read-timeout/--write-timeout, 30 s
by default), and the plugin names that cause and the way out instead of
taking it for an outage or retrying it blindly."""

import json
import os
import re

import pytest
import requests

from tests.support import rpmfactory

ENTRIES = '/api/v1/log/entries'
PAYLOAD = 3 << 20       # a 3 MiB package: about 4 MiB of JSON in an rpm entry
RATE = 1 << 20          # the link to the log: 1 MiB/s, so the upload needs ~4 s
TIMEOUT = 0.5           # the log's whole-request timeout


def test_the_local_log_cuts_off_a_request_that_outlasts_its_timeout(rekor):
    rekor.faults.request_timeout = TIMEOUT
    rekor.faults.read_rate = RATE
    with pytest.raises(requests.ConnectionError):
        requests.post(rekor.url + ENTRIES, data=b'x' * (4 << 20),
                      headers={'Content-Type': 'application/json'}, timeout=30)
    assert rekor.count('POST', ENTRIES, 0) == 1   # no answer at all
    # A request that fits in the timeout is answered as ever.
    small = requests.post(rekor.url + ENTRIES, data=b'{}',
                          headers={'Content-Type': 'application/json'}, timeout=30)
    assert small.status_code == 422 or small.status_code == 400


@pytest.fixture(scope='module')
def big_rpm(tmp_path_factory, keys):
    out = tmp_path_factory.mktemp('big')
    unsigned = rpmfactory.build_rpm(str(out / 'build'), name='big', payload_bytes=PAYLOAD)
    return unsigned, rpmfactory.sign_rpm(unsigned, str(out / 'big.rpm'), keys['rsa'])


def test_an_rpm_entry_cut_off_by_the_log_is_named_with_the_way_out(
        configured_hub, rekor, topdir, big_rpm):
    rekor.faults.request_timeout = TIMEOUT
    rekor.faults.read_rate = RATE
    unsigned, signed = big_rpm
    imported = rpmfactory.koji_import_signature(str(topdir), unsigned, signed)
    configured_hub.sign(imported)
    (name,) = configured_hub.outbox()
    record = json.loads((topdir / 'rekor-logs' / '@outbox' / name).read_text())
    cause = record['last_error']
    assert re.search(r'the log cut the upload off after [0-9.]+ s', cause), cause
    assert 'an rpm entry sends the whole package' in cause, cause
    assert 'api = 2' in cause, cause
    # Retrying at once cannot help, and the log is up for everything else:
    # one POST, no outage.
    assert rekor.count('POST', ENTRIES) == 1
    assert not os.path.exists(topdir / 'rekor-logs' / '@state' / 'outage.json')
    assert record['next_attempt'] > 0
