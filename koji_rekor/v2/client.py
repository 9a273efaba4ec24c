"""The write side of a Rekor v2 (rekor-tiles) shard, and its tile reads.

POST <shard>/api/v2/log/entries blocks until a checkpoint covering the new
entry is published (rekor-tiles internal/tessera/tessera.go, Add, waits on
tessera's PublicationAwaiter), which takes seconds: the request gets a long
total deadline (the server itself cuts requests at 60 s,
internal/server/grpcconfig.go defaultTimeout) but a short connect timeout.
What it answers (internal/server/service.go, CreateEntry; http.go):

- 201: a TransparencyLogEntry, handed to the caller parsed (the verify side
  checks it; nothing here patches it up).
- 409: already logged; `x-log-index` says where. The entry bundle holding it
  and the current checkpoint are read from the tiles, the logged bytes must
  equal ours, and the caller builds the inclusion proof from tiles with
  read_tile(): the same receipt as a 201.
- 400: invalid, for good; the server never says why ("invalid hashedrekord
  request").
- 503 (pushback), 500, 502, 504 and the like: retried with doubling delays.
- 405: the shard is frozen (read-only): ShardFrozen, so the caller moves to
  the next shard of its SigningConfig.

Reads are static files at the shard's root (C2SP tlog-tiles): /checkpoint,
/tile/<L>/<N>[.p/<W>], /tile/entries/<N>[.p/<W>]. Every request is bounded
in time (a watchdog cuts it at its deadline, whatever the server does) and
every answer in size. Uses rekor_log's transport pieces via _compat_w.
"""

import contextlib
import json
import time
from dataclasses import dataclass, field
from typing import Optional

from . import tiles
from ..display import display_url, short_reason, text_excerpt
from ..errors import DeadlinePassed, RekorMisconfigured, RekorRejected, RekorUnavailable, VerificationError
from ..rekor.transport import bounded_session, is_timeout, read_capped, urllib3_error, Watchdog

ENTRIES_PATH = '/api/v2/log/entries'
TILE_WIDTH = 256
HASH_SIZE = 32
# A 201 answer holds one body (the key, the signature, a digest: a few KiB),
# about 64 proof hashes and a checkpoint with a few witness lines.
MAX_ENTRY_ANSWER = 1024 * 1024
MAX_ERROR_ANSWER = 64 * 1024
MAX_CHECKPOINT = 64 * 1024
MAX_TILE = TILE_WIDTH * HASH_SIZE
# 256 bodies, each at most 65535 bytes behind its uint16 length.
MAX_BUNDLE = TILE_WIDTH * (2 + 0xffff)
# Statuses that mean "not now": retried.
TRANSIENT = (408, 425, 429, 500, 502, 503, 504)


class ShardFrozen(RekorMisconfigured):
    """The shard answered 405: it is frozen and takes no new entries. The
    caller moves to the next shard; with none left, the record waits for
    the configuration to change."""


@dataclass(frozen=True)
class ClientSettings:
    url: str                       # the shard, e.g. https://log2025-1.rekor.sigstore.dev
    ca_bundle: Optional[str] = None
    connect_timeout: float = 10.0  # connecting, and each read of a static file
    write_timeout: float = 60.0    # a whole POST, which waits for a checkpoint
    read_timeout: float = 30.0     # a whole static read
    retries: int = 3
    backoff: float = 1.0


@dataclass(frozen=True)
class Created:
    """A 201: the TransparencyLogEntry as the log returned it."""
    entry: dict
    raw: bytes = field(repr=False)


@dataclass(frozen=True)
class AlreadyLogged:
    """A 409, completed from the tiles: where the entry is, the checkpoint
    read then and the logged body, which equals the body we built. With the
    log's key at hand (create_entry's log), entry is the TransparencyLogEntry
    rebuilt from that verified checkpoint and tiles checked against it
    (rekor_v2.entry.entry_from_tiles): what a 201 would carry."""
    log_index: int
    checkpoint: bytes
    body: bytes
    entry: Optional[dict] = field(default=None, repr=False)


@dataclass(frozen=True)
class Answer:
    status: int
    reason: str
    headers: dict
    content: bytes


def tile_path(level, index, width=None):
    """The URL path of a hash tile (level a number) or an entry bundle
    (level 'entries'): rekor_v2.tiles builds every tile path."""
    if level == 'entries':
        return '/' + tiles.entries_path(index, width)
    return '/' + tiles.tile_path(level, index, width)


def bundle_entries(data):
    """The bodies of an entry bundle (rekor_v2.tiles.parse_entry_bundle)."""
    try:
        return list(tiles.parse_entry_bundle(data))
    except tiles.TileError:
        raise RekorUnavailable('malformed entry bundle from the log', at_once=True)


def checkpoint_size(note):
    """The tree size a checkpoint states (its second line), unverified:
    only to know which tiles to read; the verify side checks the note."""
    lines = note.split(b'\n', 3)
    if len(lines) < 3 or not lines[1].isdigit() or len(lines[1]) > 20:
        raise RekorUnavailable('malformed checkpoint from the log', at_once=True)
    return int(lines[1])


class V2Client:
    """One shard's write API and tile reads: one requests session (one
    client per thread), bounded retries, every request bounded.

    deadline: a time.monotonic() by which everything must end (the hub's
    budget); spent names it in the cause."""

    api = 2  # the LogClient protocol (koji_rekor/rekor/__init__.py)

    def __init__(self, settings, deadline=None, spent=None):
        import requests
        self.requests = requests
        self.settings = settings
        self.url = settings.url.rstrip('/')
        self.shown_url = display_url(self.url)
        self.deadline = deadline
        self.spent = spent
        self.watchdog = Watchdog()
        self.session = bounded_session(requests, self.watchdog)
        self.verify = settings.ca_bundle or True  # per request: see RekorClient

    def close(self):
        self.session.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # transport ---------------------------------------------------------------

    def remaining(self):
        return None if self.deadline is None else self.deadline - time.monotonic()

    def out_of_time(self):
        return RekorUnavailable('Rekor v2 at %s: %s' % (self.shown_url,
                                                                self.spent or 'out of time'))

    def request(self, method, path, cap, total, **kws):
        """One request read whole up to cap bytes, within total seconds
        (and the client's deadline)."""
        budget = self.remaining()
        by_budget = budget is not None and budget < total
        limit = budget if by_budget else total
        if limit <= 0:
            raise self.out_of_time()
        connect = min(self.settings.connect_timeout, limit)
        try:
            with self.watchdog.deadline(limit):
                try:
                    response = self.session.request(
                        method, self.url + path, timeout=(connect, limit), stream=True,
                        allow_redirects=False, verify=self.verify, **kws)
                    with contextlib.closing(response):
                        return Answer(response.status_code, response.reason or '',
                                      {k.lower(): v for k, v in response.headers.items()},
                                      self.read_capped(response, cap))
                except Exception:
                    if self.watchdog.cut:
                        raise DeadlinePassed
                    raise
        except DeadlinePassed:
            if by_budget:
                raise self.out_of_time()
            raise RekorUnavailable('Rekor v2 at %s timed out after %g s'
                                          % (self.shown_url, round(limit, 1)))
        except (self.requests.RequestException, urllib3_error(), OSError) as e:
            if is_timeout(e):
                raise RekorUnavailable('Rekor v2 at %s timed out after %g s' % (
                    self.shown_url, round(limit if isinstance(e, self.requests.ReadTimeout)
                                          else connect, 1)))
            raise RekorUnavailable('cannot reach Rekor v2 at %s: %s'
                                          % (self.shown_url, short_reason(e)))

    def read_capped(self, response, cap):
        return read_capped(response, cap, 'Rekor v2 at %s' % self.shown_url)

    def with_retries(self, what, attempt):
        """attempt(), retried on transient failures with doubling delays,
        within retries + 1 attempts and the deadline."""
        delay, attempts = self.settings.backoff, 0
        while True:
            attempts += 1
            try:
                return attempt()
            except RekorUnavailable as e:
                last = e
            remaining = self.remaining()
            if getattr(last, 'at_once', False) or attempts > self.settings.retries or (
                    remaining is not None and remaining < delay + 0.1):
                break
            time.sleep(delay)
            delay *= 2
        if attempts == 1:
            raise last
        raise type(last)('%s (after %d attempts)' % (last, attempts))

    # the write API -------------------------------------------------------------

    def create_entry(self, entry, log=None):
        """Log a rekor_v2.hashedrekord.HashedRekord: Created or AlreadyLogged
        (log: the shard's rekor_v2.trust.LogKey, to rebuild a 409's entry)."""
        request = entry.request_json()
        body = entry.canonical_body()

        def attempt():
            answer = self.request('POST', ENTRIES_PATH, MAX_ENTRY_ANSWER,
                                  self.settings.write_timeout, data=request, headers={
                                      'Content-Type': 'application/json',
                                      'Accept': 'application/json'})
            if answer.status == 201:
                return Created(self.entry_json(answer), answer.content)
            if answer.status == 409:
                return self.already_logged(answer, body, log)
            raise self.error_for(answer)
        return self.with_retries('upload', attempt)

    def entry_json(self, answer):
        try:
            entry = json.loads(answer.content)
        except (ValueError, RecursionError):
            entry = None
        if not isinstance(entry, dict):
            raise RekorUnavailable('Rekor v2 at %s answered 201 with no entry (not a '
                                          'JSON object)' % self.shown_url, at_once=True)
        return entry

    def error_for(self, answer):
        status = answer.status
        message = self.message(answer)
        said = ': %s' % message if message else ''
        if status == 405:
            return ShardFrozen('Rekor v2 shard %s is frozen (HTTP 405%s): write to the next '
                               'shard of the signing config' % (self.shown_url, said))
        if status in TRANSIENT:
            return RekorUnavailable('Rekor v2 at %s answered %d%s'
                                           % (self.shown_url, status, said))
        if status == 400:
            return RekorRejected(
                'Rekor v2 at %s refused the entry as invalid (HTTP 400%s); a v2 log never '
                'says why: the entry was checked before sending, so the shard may not take '
                'this key type or size' % (self.shown_url, said))
        if 300 <= status < 400 or status in (401, 403, 404):
            return RekorMisconfigured('Rekor v2 at %s answered %d for %s%s (check '
                                             '[rekor] url: a v2 shard)' % (
                                                 self.shown_url, status, ENTRIES_PATH, said))
        if 400 <= status < 500:
            return RekorRejected('Rekor v2 at %s answered %d%s'
                                        % (self.shown_url, status, said))
        return RekorUnavailable('Rekor v2 at %s answered %d, which is not an answer of '
                                       'its API' % (self.shown_url, status), at_once=True)

    @staticmethod
    def message(answer):
        """The server's message (grpc-gateway's {"code", "message"}, or the
        text of a 405) on one short line."""
        try:
            data = json.loads(answer.content[:MAX_ERROR_ANSWER])
            text = data.get('message') if isinstance(data, dict) else None
        except (ValueError, RecursionError):
            text = answer.content[:MAX_ERROR_ANSWER].decode('utf-8', 'replace')
        return text_excerpt(text or '', 160)

    def already_logged(self, answer, body, log=None):
        """A 409 completed from the tiles: the entry at x-log-index must be
        our body, under a checkpoint that covers it; with log, the entry a
        201 would carry, from that checkpoint verified and proofs from tiles."""
        raw = answer.headers.get('x-log-index', '')
        if not raw.isdigit() or len(raw) > 19:
            raise RekorUnavailable('Rekor v2 at %s answered 409 without a valid '
                                          'x-log-index (%r)' % (self.shown_url,
                                                                text_excerpt(raw, 40)),
                                          at_once=True)
        index = int(raw)
        note = self.read_checkpoint()
        size = checkpoint_size(note)
        if size <= index:
            # A cached, older checkpoint: the log published a newer one.
            raise RekorUnavailable('Rekor v2 at %s: its checkpoint (tree size %d) does '
                                          'not cover entry %d yet' % (self.shown_url, size,
                                                                      index))
        if log is not None:
            from .entry import entry_from_tiles
            # The one checkpoint read above, then tiles checked against it.
            fetch = lambda path: note if path == 'checkpoint' else self.fetch(path)  # noqa: E731
            tle = entry_from_tiles(fetch, log, index, body)
            return AlreadyLogged(index, note, body, tle)
        logged = self.read_entry(index, size)
        if logged != body:
            raise VerificationError(
                'Rekor v2 at %s says our entry is already logged at index %d, but the entry '
                'there is another' % (self.shown_url, index))
        return AlreadyLogged(index, note, logged)

    # reads -------------------------------------------------------------------

    def get(self, path, cap):
        """A static file's bytes; None when the log does not have it (404)."""
        def attempt():
            answer = self.request('GET', path, cap, self.settings.read_timeout)
            if answer.status == 200:
                return answer.content
            if answer.status == 404:
                return None
            raise self.error_for(answer)
        return self.with_retries('read of %s' % path, attempt)

    def fetch(self, path):
        """rekor_v2.tiles' fetch: a static file by its path under the shard
        ('checkpoint', 'tile/...'), None when absent."""
        cap = MAX_CHECKPOINT if path == 'checkpoint' else (
            MAX_BUNDLE if path.startswith('tile/entries/') else MAX_TILE)
        return self.get('/' + path, cap)

    def checkpoint(self):
        """LogClient: the shard's checkpoint note."""
        return self.read_checkpoint()

    def read_checkpoint(self):
        note = self.get('/checkpoint', MAX_CHECKPOINT)
        if note is None:
            raise RekorMisconfigured('Rekor v2 at %s has no /checkpoint (check '
                                            '[rekor] url: a v2 shard)' % self.shown_url)
        return note

    def read_tile(self, level, index, width=None):
        """The hashes of tile level/index (width of them; None: a full
        tile). When the partial tile is gone (tessera collects them once a
        newer one is written), the full tile's prefix is the same hashes."""
        width = width or TILE_WIDTH
        data = self.get(tile_path(level, index, width), MAX_TILE)
        if data is None and width < TILE_WIDTH:
            data = self.get(tile_path(level, index), MAX_TILE)
            data = data[:width * HASH_SIZE] if data is not None else None
        if data is None:
            raise RekorUnavailable('Rekor v2 at %s has no tile %s'
                                          % (self.shown_url, tile_path(level, index, width)))
        if len(data) != width * HASH_SIZE:
            raise RekorUnavailable('Rekor v2 at %s sent tile %s of %d bytes, not %d'
                                          % (self.shown_url, tile_path(level, index, width),
                                             len(data), width * HASH_SIZE), at_once=True)
        return data

    def read_bundle(self, index, width=None):
        """The bodies of entry bundle index (width of them; None: full),
        from the full bundle when the partial one is gone."""
        width = width or TILE_WIDTH
        data = self.get(tile_path('entries', index, width), MAX_BUNDLE)
        if data is None and width < TILE_WIDTH:
            data = self.get(tile_path('entries', index), MAX_BUNDLE)
        if data is None:
            raise RekorUnavailable('Rekor v2 at %s has no entry bundle %s' % (
                self.shown_url, tile_path('entries', index, width)))
        bodies = bundle_entries(data)
        if len(bodies) < width:
            raise RekorUnavailable('Rekor v2 at %s sent entry bundle %s with %d '
                                          'entries, not %d' % (
                                              self.shown_url, tile_path('entries', index, width),
                                              len(bodies), width), at_once=True)
        return bodies[:width]

    def read_entry(self, index, size):
        """The body logged at index, in a tree of size."""
        bundle = index // TILE_WIDTH
        width = min(TILE_WIDTH, size - bundle * TILE_WIDTH)
        return self.read_bundle(bundle, width)[index % TILE_WIDTH]

