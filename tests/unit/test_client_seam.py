"""The client seam: make_client picks the log API's client from the
settings, and components take only their settings group."""

import pytest

from koji_rekor.config import (
    KojiOptions, MonitorOptions, Settings, SigningOptions, TransportOptions, UploadOptions,
)
from koji_rekor.entry import EntryBody, ENTRY_KINDS, make_entry
from koji_rekor.errors import SignatureSourceError
from koji_rekor.rekor import can, LogClient, make_client
from koji_rekor.rekor.client_v1 import RekorClient
from koji_rekor.rpmsig import public_key_file
from koji_rekor.v2.client import V2Client
from koji_rekor.verify import BODY_CHECKS, check_body, verify_rpm_body

# Nothing here connects: a client makes its session on first request.
URL = 'http://127.0.0.1:9'


def test_make_client_picks_v1_for_api_1():
    client = make_client(Settings(url=URL, retries=5))
    try:
        assert isinstance(client, RekorClient) and client.api == 1
        assert isinstance(client, LogClient)
        assert client.settings == Settings(url=URL, retries=5).transport
        assert all(can(client, name) for name in
                   ('get_entry', 'consistency_proof', 'search_index', 'retrieve_entries'))
    finally:
        client.close()


def test_make_client_picks_v2_for_api_2():
    settings = Settings(url=URL, api=2, entry='hashedrekord', timeout=7.0, retries=2)
    client = make_client(settings)
    try:
        assert isinstance(client, V2Client) and client.api == 2
        assert isinstance(client, LogClient)
        assert (client.settings.url, client.settings.connect_timeout,
                client.settings.read_timeout, client.settings.retries) == (URL, 7.0, 7.0, 2)
        # A tile log has no index search: the monitor's v1 scan asks first.
        assert not can(client, 'search_index') and not can(client, 'retrieve_entries')
    finally:
        client.close()


def test_make_client_overrides_and_shard():
    v1 = make_client(Settings(url=URL), retries=0)
    v2 = make_client(Settings(url=URL), 'http://127.0.0.1:8', api=2, read_timeout=31.0)
    try:
        assert v1.settings.retries == 0
        assert isinstance(v2, V2Client)
        assert (v2.settings.url, v2.settings.read_timeout) == ('http://127.0.0.1:8', 31.0)
    finally:
        v1.close()
        v2.close()


def test_make_client_takes_the_transport_group_alone():
    client = make_client(TransportOptions(url=URL, api=1))
    try:
        assert isinstance(client, RekorClient)
    finally:
        client.close()


def test_settings_groups_are_frozen_snapshots_of_the_flat_fields():
    settings = Settings(url=URL, origin='a.example, b.example', public_key_dir='/k',
                        queue_only=True, hub_url='https://koji', monitor_user='kojimon',
                        monitor_state_dir='/var/lib/x', notify_command='mail')
    assert settings.transport.url == URL
    assert settings.transport.origin_host == settings.origin_host == frozenset(
        {'a.example', 'b.example'})
    assert settings.signing == SigningOptions(public_key_dir='/k')
    assert settings.upload.queue_only is True and isinstance(settings.upload, UploadOptions)
    assert settings.koji == KojiOptions(hub_url='https://koji')
    assert settings.monitor == MonitorOptions('mail', '/var/lib/x', 'kojimon')
    with pytest.raises(AttributeError):
        settings.transport.url = 'https://elsewhere'
    settings.url = 'https://elsewhere'   # the flat names still set the settings
    assert settings.transport.url == 'https://elsewhere'


def test_every_flat_field_but_provenance_is_in_one_group():
    grouped = {f for cls in (TransportOptions, SigningOptions, UploadOptions, KojiOptions)
               for f in cls.__dataclass_fields__}
    grouped |= {'notify_command', 'monitor_state_dir', 'monitor_user'}
    assert set(Settings.__dataclass_fields__) - grouped == {'config_file', 'legacy'}


def test_public_key_file_takes_the_signing_group(tmp_path):
    (tmp_path / 'abcd1234.asc').write_text('key')
    signing = Settings(public_key_dir=str(tmp_path)).signing
    assert public_key_file(signing, 'ABCD1234') == str(tmp_path / 'abcd1234.asc')
    assert public_key_file(SigningOptions(public_key_path='/one.asc'), 'ffff0000') == '/one.asc'
    with pytest.raises(SignatureSourceError):
        public_key_file(SigningOptions(), 'ffff0000')


def test_the_body_check_is_chosen_by_entry_kind():
    assert BODY_CHECKS['rpm'] is verify_rpm_body
    with pytest.raises(KeyError):
        check_body({}, None, kind='dsse')


def test_the_entry_builder_is_chosen_by_kind():
    assert ENTRY_KINDS['rpm'] is EntryBody
    assert set(ENTRY_KINDS) == {'rpm', 'hashedrekord'}
    with pytest.raises(KeyError):
        make_entry('dsse', None, b'')


def test_a_v1_only_pipeline_asks_for_v1_whatever_the_settings():
    # The rpm upload (koji-rekor upload) and the index scan are v1's: they
    # name api=1, so a v2 configuration reaching them behaves as before.
    client = make_client(Settings(url=URL, api=2, entry='hashedrekord'), api=1)
    try:
        assert isinstance(client, RekorClient)
    finally:
        client.close()
