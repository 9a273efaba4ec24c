# Koji hub plugin: record every RPM signature Koji imports in a Sigstore
# Rekor transparency log, verify what the log answers, and keep a receipt.
#
# Enable in /etc/koji-hub/hub.conf with "Plugins = rekor_log"; configure in
# /etc/koji-hub/plugins/rekor_log.conf. The work is done by the koji_rekor
# package (koji_rekor.hub); this file binds what Koji registers from a
# plugin's own namespace (kojixmlrpc's register_plugin) and keeps the
# configuration cache, as Koji's own plugins do.
#
# SPDX-License-Identifier: LGPL-2.1-only

import os
import sys

from koji.plugin import callback, export, ignore_error

try:
    from koji_rekor import config, hub, status
except ImportError:
    # A checkout: the package sits beside this file (or beside its target).
    sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))
    from koji_rekor import config, hub, status

CONFIG_FILE = config.CONFIG_FILE
CONFIG = None


def get_config():
    """The plugin's settings, read once per process as Koji's plugins do."""
    global CONFIG
    if CONFIG is None:
        CONFIG = config.load_config(CONFIG_FILE)
    return CONFIG


@callback('postRPMSign')
def rpm_signed(cbtype, *args, **kws):
    hub.rpm_signed(kws, get_config, CONFIG_FILE)


@callback('postCommit')
@ignore_error
def signatures_committed(cbtype, *args, **kws):
    hub.signatures_committed(get_config)


@export
def rekorLogStatus(rpm):
    """Per signature of an RPM (its ID or N-V-R.A): logged, queued, set
    aside (rejected or rolled back), unverified or not logged."""
    return status.rekor_log_status(rpm, get_config)
