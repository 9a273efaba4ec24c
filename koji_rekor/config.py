"""The plugin's configuration file: the option table, a strict reader, checks."""

import math
import os
import urllib.parse
from dataclasses import dataclass, fields

import koji

from . import LOG
from .display import display_url
from .errors import UsageError, VerificationError
from .logkey import read_log_key

CONFIG_FILE = '/etc/koji-hub/plugins/rekor_log.conf'

DEFAULT_URL = 'https://rekor.sigstore.dev'

# The public-good instance's log key (rekor.sigstore.dev), as published in the
# Sigstore trusted root; used when that URL is configured with no key.
PUBLIC_REKOR_HOST = 'rekor.sigstore.dev'

PUBLIC_REKOR_KEY = b"""-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE2G2Y+2tabdTV5BcGiBIx0a9fAFwr
kBbmLSGtks4L3qX6yYY0zufBnhC8Ur/iy55GhWP/9A/bY2LhC30M9+RYtw==
-----END PUBLIC KEY-----
"""


# ---------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------


# The settings by concern: each component takes only the group it reads
# (RekorClient the transport, public_key_file the signing keys...). Settings
# keeps the flat fields the option table fills and hands out each group as
# a frozen snapshot, so the flat names still work for everything else.

@dataclass(frozen=True)
class TransportOptions:
    """How to reach and trust the log."""
    url: str = DEFAULT_URL
    timeout: float = 30.0
    retries: int = 3
    backoff: float = 1.0
    ca_bundle: str = None
    min_rate: float = 1024 * 1024
    allow_insecure_http: bool = False
    log_public_key: str = None
    origin: str = None
    trust_on_first_use: bool = False
    api: int = 1
    trusted_root: str = None
    signing_config: str = None

    @property
    def origin_host(self):
        """The host a checkpoint's origin must name, or the hosts it may
        name (a frozenset): [rekor] origin may list several, comma or space
        separated, as a private log's replicas each sign with their own
        host name when rekor_server.hostname is not set (Rekor's default is
        os.Hostname(), a pod's name on Kubernetes)."""
        names = (self.origin or '').replace(',', ' ').split()
        if len(names) > 1:
            return frozenset(names)
        return names[0] if names else urllib.parse.urlsplit(self.url).hostname


@dataclass(frozen=True)
class SigningOptions:
    """Where the signing keys' public halves are."""
    public_key_dir: str = None
    public_key_path: str = None


@dataclass(frozen=True)
class UploadOptions:
    """What the hub does with each signature."""
    enforce: bool = False
    queue_only: bool = False
    record_log_info: bool = True
    hub_budget: float = 10.0
    poll_interval: float = 30.0
    entry: str = 'rpm'


@dataclass(frozen=True)
class KojiOptions:
    """How the command reaches Koji."""
    hub_url: str = None
    topurl: str = None
    hub_user: str = 'apache'


@dataclass(frozen=True)
class MonitorOptions:
    """The monitor's notifications, memory and user (Settings names the
    last two monitor_state_dir and monitor_user)."""
    notify_command: str = None
    state_dir: str = '/var/lib/koji-rekor'
    user: str = None


def group_of(settings, cls, renames=None):
    """A frozen group of settings's flat fields (renames: group name ->
    flat name)."""
    renames = renames or {}
    return cls(**{f.name: getattr(settings, renames.get(f.name, f.name)) for f in fields(cls)})


@dataclass
class Settings:
    url: str = DEFAULT_URL
    log_public_key: str = None
    origin: str = None
    timeout: float = 30.0
    retries: int = 3
    backoff: float = 1.0
    ca_bundle: str = None
    allow_insecure_http: bool = False
    public_key_dir: str = None
    public_key_path: str = None
    enforce: bool = False
    record_log_info: bool = True
    queue_only: bool = False
    hub_url: str = None
    poll_interval: float = 30.0
    min_rate: float = 1024 * 1024
    trust_on_first_use: bool = False
    hub_budget: float = 10.0
    hub_user: str = 'apache'
    notify_command: str = None
    # The monitor's memory, off the shared topdir; and whom it runs as when
    # started as root (None: root).
    monitor_state_dir: str = '/var/lib/koji-rekor'
    monitor_user: str = None
    topurl: str = None
    # Which Rekor API the log speaks (1, or 2: rekor-tiles), the v1 entry
    # kind, and the Sigstore trust files that may name logs and their keys.
    api: int = 1
    entry: str = 'rpm'
    trusted_root: str = None
    signing_config: str = None
    # Set by load_config: the file it read, and whether that is the original
    # plugin's (a [config] section naming neither a url nor a key elsewhere).
    config_file: str = None
    legacy: bool = False

    @property
    def origin_host(self):
        return self.transport.origin_host

    @property
    def transport(self):
        return group_of(self, TransportOptions)

    @property
    def signing(self):
        return group_of(self, SigningOptions)

    @property
    def upload(self):
        return group_of(self, UploadOptions)

    @property
    def koji(self):
        return group_of(self, KojiOptions)

    @property
    def monitor(self):
        return group_of(self, MonitorOptions, {'state_dir': 'monitor_state_dir',
                                               'user': 'monitor_user'})

# (section, option) -> (attribute, kind). The [config] section is the
# original plugin's; the newer sections win when both set an option.
OPTIONS = [
    (('config', 'rekor_server_url'), ('url', 'str')),
    (('config', 'public_key_path'), ('public_key_path', 'file')),
    (('config', 'enforce_rekor_upload'), ('enforce', 'bool')),
    (('config', 'record_log_info'), ('record_log_info', 'bool')),
    (('rekor', 'url'), ('url', 'str')),
    (('rekor', 'log_public_key'), ('log_public_key', 'pem')),
    (('rekor', 'origin'), ('origin', 'str')),
    (('rekor', 'timeout'), ('timeout', 'seconds')),
    (('rekor', 'retries'), ('retries', 'count')),
    (('rekor', 'backoff'), ('backoff', 'seconds')),
    (('rekor', 'ca_bundle'), ('ca_bundle', 'file')),
    (('rekor', 'allow_insecure_http'), ('allow_insecure_http', 'bool')),
    (('signing', 'public_key_dir'), ('public_key_dir', 'dir')),
    (('signing', 'public_key_path'), ('public_key_path', 'file')),
    (('upload', 'enforce'), ('enforce', 'bool')),
    (('upload', 'record_log_info'), ('record_log_info', 'bool')),
    (('upload', 'queue_only'), ('queue_only', 'bool')),
    (('koji', 'server'), ('hub_url', 'str')),
    (('upload', 'poll_interval'), ('poll_interval', 'seconds')),
    (('rekor', 'min_rate'), ('min_rate', 'rate')),
    (('rekor', 'trust_on_first_use'), ('trust_on_first_use', 'bool')),
    (('upload', 'hub_budget'), ('hub_budget', 'seconds')),
    (('upload', 'hub_user'), ('hub_user', 'str')),
    (('monitor', 'notify_command'), ('notify_command', 'str')),
    (('monitor', 'state_dir'), ('monitor_state_dir', 'str')),
    (('monitor', 'user'), ('monitor_user', 'str')),
    (('koji', 'topurl'), ('topurl', 'str')),
    (('rekor', 'api'), ('api', 'api')),
    (('rekor', 'entry'), ('entry', 'entry')),
    (('rekor', 'trusted_root'), ('trusted_root', 'file')),
    (('rekor', 'signing_config'), ('signing_config', 'file')),
]

# The values of the options that take one of a few words.
CHOICES = {'api': {'1': 1, '2': 2}, 'entry': {'rpm': 'rpm', 'hashedrekord': 'hashedrekord'}}

BOOLEANS = {'1': True, 'yes': True, 'true': True, 'on': True,
            '0': False, 'no': False, 'false': False, 'off': False}

# The largest value that makes sense for each numeric option: a typo such as
# retries = 5000 or timeout = 1e9 would hold a signature import for days.
LIMITS = {'timeout': 3600, 'retries': 20, 'backoff': 600, 'poll_interval': 86400,
          'min_rate': 1 << 40, 'hub_budget': 3600}


def read_config_file(path):
    """The parsed file, strictly: it must exist and parse, with no unknown
    section or option, no duplicate, and a section header first."""
    parser = parse_config_file(path)
    known = {}
    for (section, option), _ in OPTIONS:
        known.setdefault(section, set()).add(option)
    for section in parser.sections():
        if section not in known:
            raise koji.ConfigurationError('%s: unknown section [%s] (known: %s)' % (
                path, section, ', '.join(sorted(known))))
        for option in parser.options(section):
            if option not in known[section]:
                raise koji.ConfigurationError('%s: unknown option [%s] %s' % (
                    path, section, option))
    return parser


def parse_config_file(path):
    """The file as configparser reads it, names unchecked: what a broken
    file still says about enforce and hub_user."""
    import configparser
    if not os.path.isfile(path):
        raise koji.ConfigurationError('%s: no such configuration file' % path)
    parser = configparser.RawConfigParser(strict=True)
    try:
        with open(path, encoding='utf-8') as fo:
            parser.read_file(fo, source=path)
    except OSError as e:
        raise koji.ConfigurationError('%s: cannot read it: %s' % (path, e.strerror or e))
    except UnicodeDecodeError:
        raise koji.ConfigurationError('%s: not UTF-8 text' % path)
    except configparser.MissingSectionHeaderError as e:
        raise koji.ConfigurationError('%s: line %d: no [section] header before it'
                                      % (path, e.lineno))
    except configparser.DuplicateSectionError as e:
        raise koji.ConfigurationError('%s: line %s: section [%s] appears twice'
                                      % (path, e.lineno, e.section))
    except configparser.DuplicateOptionError as e:
        raise koji.ConfigurationError('%s: line %s: [%s] %s appears twice'
                                      % (path, e.lineno, e.section, e.option))
    except configparser.Error as e:
        raise koji.ConfigurationError('%s: %s' % (path, ' '.join(str(e).split())))
    return parser


def load_config(path):
    """Read and check a configuration file, or raise ConfigurationError
    naming the file and the option."""
    parser = read_config_file(path)
    settings = Settings()
    for (section, option), (attr, kind) in OPTIONS:
        if parser.has_option(section, option):
            raw = parser.get(section, option).strip()
            try:
                setattr(settings, attr, parse_option(section, option, kind, raw))
            except koji.ConfigurationError as e:
                raise koji.ConfigurationError('%s: %s' % (path, e))
    # The original plugin's file cannot name a log key or allow http: it
    # keeps working as it did, trusting the log's key on first use.
    settings.legacy = parser.has_section('config') and not any(
        parser.has_option('rekor', option) for option in ('url', 'log_public_key'))
    if settings.legacy and parser.has_option('config', 'rekor_server_url') \
            and not parser.has_option('rekor', 'allow_insecure_http') \
            and settings.url.lower().startswith('http://'):
        LOG.warning('rekor_log: %s: [config] rekor_server_url %s is plain http, as the original '
                    'plugin allowed; use https, or set [rekor] url and allow_insecure_http',
                    path, display_url(settings.url))
        settings.allow_insecure_http = True
    try:
        check_url(settings)
    except koji.ConfigurationError as e:
        raise koji.ConfigurationError('%s: %s' % (path, e))
    if settings.api == 2 and settings.entry != 'hashedrekord' and parser.has_option('rekor', 'entry'):
        raise koji.ConfigurationError('%s: [rekor] entry: Rekor v2 (api = 2) takes hashedrekord '
                                      'entries only, not %s' % (path, settings.entry))
    if settings.api == 2:
        settings.entry = 'hashedrekord'
    if settings.enforce and settings.queue_only:
        raise koji.ConfigurationError('%s: [upload] queue_only: cannot be combined with enforce, '
                                      'which must upload before Koji commits' % path)
    settings.config_file = path
    return settings


def enforce_explicitly_off(path):
    """True only when the file parses and sets enforce to false: a file
    that does not load fails the import unless the admin said not to. The
    same for a bad value and an unknown name (docs/admin-guide.md: Configuration): only a
    misspelt section or enforce itself leaves enforce unsaid."""
    try:
        parser = parse_config_file(path)
        for section, option in (('upload', 'enforce'), ('config', 'enforce_rekor_upload')):
            if parser.has_option(section, option):
                return BOOLEANS.get(parser.get(section, option).strip().lower()) is False
    except koji.ConfigurationError:
        pass
    return False


def parse_option(section, option, kind, raw):
    """Convert one option's text, or raise ConfigurationError naming it."""
    name = '[%s] %s' % (section, option)
    if kind == 'bool':
        if raw.lower() not in BOOLEANS:
            raise koji.ConfigurationError('%s: %r is not a boolean' % (name, raw))
        return BOOLEANS[raw.lower()]
    if kind in ('seconds', 'count', 'rate'):
        try:
            value = int(raw) if kind == 'count' else float(raw)
        except ValueError:
            value = -1
        if not math.isfinite(value) or value < 0 or (kind != 'count' and value == 0):
            raise koji.ConfigurationError('%s: %r is not a valid %s' % (name, raw, {
                'seconds': 'number of seconds', 'count': 'count',
                'rate': 'rate in bytes a second'}[kind]))
        limit = LIMITS.get(option)
        if limit is not None and value > limit:
            raise koji.ConfigurationError('%s: %r is more than the most that makes sense (%s)'
                                          % (name, raw, limit))
        return value
    if kind in CHOICES:
        if raw.lower() not in CHOICES[kind]:
            raise koji.ConfigurationError('%s: %r is not one of %s' % (
                name, raw, ', '.join(sorted(CHOICES[kind]))))
        return CHOICES[kind][raw.lower()]
    if not raw:
        raise koji.ConfigurationError('%s: empty' % name)
    if kind in ('file', 'pem') and not os.path.isfile(raw):
        raise koji.ConfigurationError('%s: no such file: %s' % (name, raw))
    if kind == 'pem':
        try:
            read_log_key(raw)
        except (OSError, VerificationError) as e:
            raise koji.ConfigurationError('%s: %s: %s' % (name, raw, e))
    if kind == 'dir' and not os.path.isdir(raw):
        raise koji.ConfigurationError('%s: no such directory: %s' % (name, raw))
    return raw


def check_url(settings):
    parts = urllib.parse.urlsplit(settings.url)
    try:
        parts.port
    except ValueError:
        raise koji.ConfigurationError('[rekor] url: %r has a bad port'
                                      % display_url(settings.url))
    if parts.scheme not in ('https', 'http') or not parts.hostname:
        raise koji.ConfigurationError('[rekor] url: %r is not an http(s) URL'
                                      % display_url(settings.url))
    if parts.scheme == 'http' and not settings.allow_insecure_http:
        raise koji.ConfigurationError(
            '[rekor] url: %s is plain http; set allow_insecure_http = true to allow it'
            % display_url(settings.url))
    settings.url = settings.url.rstrip('/')

# Where the hub reads its options (kojixmlrpc.load_config): every *.conf of
# hub.conf.d, then hub.conf, the later winning. An httpd that moves them
# (koji.hub.ConfigFile, koji.hub.ConfigDir) needs --topdir.
HUB_CONFIG_FILE = '/etc/koji-hub/hub.conf'

HUB_CONFIG_DIR = '/etc/koji-hub/hub.conf.d'

DEFAULT_TOPDIR = '/mnt/koji'

TOPDIR_HELP = ('Koji topdir holding rekor-logs/ (default: KojiDir as the hub reads it from '
               '%s and %s/*.conf, else %s)' % (HUB_CONFIG_FILE, HUB_CONFIG_DIR, DEFAULT_TOPDIR))


def default_topdir():
    """KojiDir as the hub finds it, else Koji's default."""
    parser = koji.read_config_files([HUB_CONFIG_DIR, (HUB_CONFIG_FILE, False)], raw=True)
    if parser.has_option('hub', 'KojiDir'):
        return parser.get('hub', 'KojiDir')
    return DEFAULT_TOPDIR


def cli_settings(args):
    settings = load_config(args.config)
    if getattr(args, 'url', None):
        settings.url = args.url
        check_cli_url(settings, args)
    return settings


def check_cli_url(settings, args):
    """check_url for a --url the user typed: the message names the flags,
    not the file's options."""
    if getattr(args, 'allow_insecure_http', False):
        settings.allow_insecure_http = True
    try:
        check_url(settings)
    except koji.ConfigurationError as e:
        if urllib.parse.urlsplit(args.url).scheme == 'http' and \
                not settings.allow_insecure_http:
            raise UsageError('--url %s is plain http: pass --allow-insecure-http to allow it'
                             % display_url(args.url))
        raise UsageError(str(e).replace('[rekor] url:', '--url', 1))
