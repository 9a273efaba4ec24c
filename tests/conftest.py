"""Shared fixtures: real keys and signed RPMs, a Koji topdir as the hub's
add_rpm_sig leaves it, the plugin loaded by Koji's own loader, and a local
Rekor-compatible log on 127.0.0.1."""

import copy
import logging
import os
import pwd
import shutil
import sys
import textwrap

import koji
import pytest

from tests.support import hubsim
from tests.support import rpmfactory
from tests.support.rekor_server import BUSY_RATE, RekorServer

from tests.support.common import HUB_USER, KEY_ALGOS, SIGN_MODES, frozen  # noqa: F401


@pytest.fixture(scope='session')
def keys(tmp_path_factory):
    """Two throwaway signing keys, RSA and ed25519, in one private GNUPGHOME,
    and a third one that Koji never uses (for mismatches)."""
    home = str(tmp_path_factory.mktemp('gnupg'))
    made = {algo: rpmfactory.generate_key(home, algo=algo, name='Koji %s key' % algo)
            for algo in KEY_ALGOS}
    made['other'] = rpmfactory.generate_key(home, algo='rsa', name='Somebody else')
    yield made
    rpmfactory.stop_gpg_agent(home)


@pytest.fixture(scope='session')
def unsigned_rpm(tmp_path_factory):
    return rpmfactory.build_rpm(str(tmp_path_factory.mktemp('build')))


@pytest.fixture(scope='session')
def signed_rpms(tmp_path_factory, keys, unsigned_rpm):
    """{(algo, mode): path} for every key and signature mode."""
    out = tmp_path_factory.mktemp('signed')
    return {(algo, mode): rpmfactory.sign_rpm(
                unsigned_rpm, str(out / ('%s-%s.rpm' % (algo, mode))), keys[algo],
                rpmv3=(mode == 'rpmv3'))
            for algo in KEY_ALGOS for mode in SIGN_MODES}


def pytest_configure(config):
    config.addinivalue_line('markers', 'quiet_log: the local log takes no entries of other '
                            'clients (a test counting what only a quiet log shows)')


@pytest.fixture
def rekor(request):
    """The local log, busy as the real one is (other clients append
    BUSY_RATE entries a second), unless the test is marked quiet_log."""
    busy = 0.0 if request.node.get_closest_marker('quiet_log') else BUSY_RATE
    with RekorServer(busy=busy) as server:
        yield server


@pytest.fixture
def topdir(tmp_path):
    """An empty Koji topdir, made koji.pathinfo's for the test."""
    path = tmp_path / 'koji'
    path.mkdir()
    old = koji.pathinfo.topdir
    koji.pathinfo.topdir = str(path)
    yield path
    koji.pathinfo.topdir = old


@pytest.fixture
def key_dir(tmp_path, keys):
    """public_key_dir with <sigkey>.asc for the RSA and ed25519 keys."""
    path = tmp_path / 'keys'
    path.mkdir()
    for algo in KEY_ALGOS:
        shutil.copy(keys[algo].path, path / ('%s.asc' % keys[algo].sigkey))
    return path


@pytest.fixture
def log_key_file(tmp_path, rekor):
    path = tmp_path / 'rekor.pub'
    path.write_bytes(rekor.log.public_key_pem)
    return path


class Hub:
    """The plugin loaded and registered as the Koji hub does it, with a
    configuration file of the test's own."""

    def __init__(self, module, conf_path):
        self.module = module
        self.conf_path = conf_path

    def configure(self, text):
        self.conf_path.write_text(textwrap.dedent(text))
        self.module.CONFIG_FILE = str(self.conf_path)
        self.module.CONFIG = None

    def sign(self, *imports, commit=True, **overrides):
        """One hub request importing these signatures (see hubsim)."""
        hubsim.hub_request(imports, commit=commit, **overrides)

    def outbox(self):
        path = koji.pathinfo.topdir + '/rekor-logs/@outbox'
        return sorted(n for n in os.listdir(path) if not n.startswith('.')
                      and n.endswith(('.json', '.uncommitted'))) if os.path.isdir(path) else []


@pytest.fixture
def hub(tmp_path, topdir):
    conf = tmp_path / 'rekor_log.conf'
    module, registered = hubsim.load_plugin(conf)
    yield Hub(module, conf)
    hubsim.unregister(registered)


@pytest.fixture
def configured_hub(hub, rekor, key_dir, log_key_file):
    """The plugin pointed at the local log, with a key per sigkey."""
    hub.configure('''
        [rekor]
        url = %s
        allow_insecure_http = true
        log_public_key = %s
        timeout = 5
        retries = 2
        backoff = 0.05
        [signing]
        public_key_dir = %s
        [upload]
        hub_user = %s
        ''' % (rekor.url, log_key_file, key_dir, HUB_USER))
    return hub


@pytest.fixture
def koji_import(topdir, unsigned_rpm):
    """Lay out a signature import in the topdir, as add_rpm_sig does."""
    def make(signed_rpm, **kws):
        return rpmfactory.koji_import_signature(str(topdir), unsigned_rpm, signed_rpm, **kws)
    return make


@pytest.fixture
def plugin_log(caplog):
    caplog.set_level(logging.DEBUG, logger='koji.plugin.rekor_log')
    return caplog
