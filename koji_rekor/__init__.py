"""koji-rekor: record the RPM signatures Koji imports in a Sigstore Rekor
transparency log, verify what the log answers, and keep a receipt.

The hub plugin (rekor_log.py) is a shim over koji_rekor.hub; the admin
command is koji_rekor.cli.

SPDX-License-Identifier: LGPL-2.1-only
"""

import logging

__version__ = '0.1.0'

LOG = logging.getLogger('koji.plugin.rekor_log')
