"""koji_rekor.v2.upload: one RPM file to the local v2 log, end to end."""

import base64
import os

import pytest

from koji_rekor.v2 import hashedrekord, upload
from koji_rekor.v2.client import ClientSettings
from tests.support.rekor_v2_server import RekorV2Server

from tests.support.common import ROOT  # noqa: E402
REAL = os.path.join(os.path.dirname(ROOT), 'shared', 'rekor-real', 'rpms')


@pytest.mark.skipif(not os.path.isdir(REAL), reason='../shared/rekor-real absent')
def test_real_rpm_logged_then_again():
    rpm = os.path.join(REAL, 'NetworkManager-bluetooth-1.26.0-8.el8.x86_64.rpm')
    with open(os.path.join(REAL, 'centos-8-05b555b38483c65d.asc'), 'rb') as fo:
        key = fo.read()
    with RekorV2Server(interval=0.05) as log:
        settings = ClientSettings(log.url, backoff=0.01)
        first = upload.upload_rpm(rpm, key, settings)
        assert first.created
        assert base64.b64decode(first.answer.entry['canonicalizedBody']) == \
            first.entry.canonical_body() == log.bodies[0]
        again = upload.upload_rpm(rpm, key, settings)
        assert not again.created and again.answer.log_index == 0
        assert again.answer.body == first.entry.canonical_body()


def test_refused_before_sending(tmp_path):
    from tests.integration.test_v2w_hashedrekord import gpg_key, sign
    from tests.support import rpmfactory
    home = str(tmp_path / 'gnupg')
    os.makedirs(home, mode=0o700)
    key = gpg_key(home, 'ed25519', 'refused')
    try:
        rpm = sign(rpmfactory.build_rpm(str(tmp_path / 'b')), str(tmp_path / 's.rpm'), key)
        with RekorV2Server(interval=0.05) as log:
            with pytest.raises(hashedrekord.NotLoggableInV2, match='EdDSA'):
                upload.upload_rpm(rpm, key.armored, ClientSettings(log.url))
            assert log.requests == []
    finally:
        rpmfactory.stop_gpg_agent(home)
