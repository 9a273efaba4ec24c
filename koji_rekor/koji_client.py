"""Asking the Koji hub (anonymously) what it holds."""


import koji

from . import LOG
from .errors import failure_cause

KOJI_CLIENT_CONFIG = '/etc/koji.conf'


def hub_url(settings):
    """The hub to ask about uncommitted records: [koji] server, else the
    server of the Koji client configuration on this host."""
    if settings.hub_url:
        return settings.hub_url
    parser = koji.read_config_files([(KOJI_CLIENT_CONFIG, False)], raw=True)
    if parser.has_option('koji', 'server'):
        return parser.get('koji', 'server')
    return None


def signature_in_koji(settings, record):
    """True or False when the hub says whether Koji holds the signature;
    None when it cannot be asked."""
    url = hub_url(settings)
    if not url:
        return None
    session = koji.ClientSession(url, opts={
        'timeout': settings.timeout, 'max_retries': settings.retries,
        'retry_interval': settings.backoff, 'anon_retry': True})
    try:
        return bool(session.queryRPMSigs(rpm_id=record['rpm']['id'], sigkey=record['sigkey']))
    except Exception as e:
        LOG.warning('rekor_log: cannot ask the hub at %s about %s: %s',
                    url, record['nvra'], failure_cause(e))
        return None
    finally:
        session.logout()
