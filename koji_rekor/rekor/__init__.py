"""Clients of Rekor logs and the models of what they answer.

The seam for a second log API: hub, worker, monitor and doctor ask
make_client(settings) for a LogClient and use only what the protocol names;
a new API plugs in as one more branch here (with its entry builder in
entry.ENTRY_KINDS and its body check in verify.BODY_CHECKS), not as an
``if settings.api == ...`` in their logic. The clients are imported when a
client is made: each imports rekor.transport, which runs this package's
init first.
"""

import dataclasses
from typing import Protocol, runtime_checkable

# What a client may lack: a tile log (Rekor v2) has no index search and
# serves no entry by UUID or proof by sizes; callers ask can() first.
OPTIONAL = ('get_entry', 'consistency_proof', 'search_index', 'retrieve_entries')


@runtime_checkable
class LogClient(Protocol):
    """What every log client does. api: the log API it speaks (1, 2)."""
    api: int

    def create_entry(self, entry):
        """Send a proposed entry; the log's answer, parsed."""

    def checkpoint(self):
        """The log's current signed tree head as the log answers it (v1: the
        log info; v2: the checkpoint note); RekorLogError when it does not
        answer."""

    def close(self):
        """Release the connections."""


def can(client, operation):
    """Whether a client offers one of the OPTIONAL operations."""
    return callable(getattr(client, operation, None))


def make_client(settings, url=None, deadline=None, spent=None, api=None, **options):
    """The client for the log settings name: settings is a Settings or its
    transport group (config.TransportOptions). url: the shard for a v2 log
    (default settings.url). options override the transport's retries,
    timeouts... for this client (a doctor's probe: retries=0). deadline
    and spent bound everything the client does (RekorClient). api: the
    API the caller already knows the log speaks, else the transport's."""
    transport = getattr(settings, 'transport', settings)
    if (api or transport.api) == 2:
        from ..v2.client import ClientSettings, V2Client
        client_options = dict(ca_bundle=transport.ca_bundle, connect_timeout=transport.timeout,
                              read_timeout=transport.timeout, retries=transport.retries,
                              backoff=transport.backoff)
        client_options.update(options)
        return V2Client(ClientSettings(url or transport.url, **client_options), deadline, spent)
    from .client_v1 import RekorClient
    if options:
        transport = dataclasses.replace(transport, **options)
    return RekorClient(transport, deadline, spent)
