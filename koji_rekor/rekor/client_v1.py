"""The Rekor v1 API client: every request bounded in time and size."""

import contextlib
import json
import time
import urllib.parse

from .. import LOG
from ..display import display_url, same_origin, seconds, short_reason, text_excerpt
from ..errors import (
    DeadlinePassed,
    LogBehind,
    ProofRefused,
    LogClosed,
    RekorMisconfigured,
    RekorRejected,
    RekorUnavailable,
    UploadCutOff,
)
from .transport import (
    Answer,
    bounded_session,
    is_object,
    is_timeout,
    MAX_JSON_ANSWER,
    MAX_KEY_ANSWER,
    read_capped,
    read_id_array,
    urllib3_error,
    Watchdog,
)

ENTRIES_PATH = '/api/v1/log/entries'

PUBLIC_KEY_PATH = '/api/v1/log/publicKey'

PROOF_PATH = '/api/v1/log/proof'

LOG_INFO_PATH = '/api/v1/log'

INDEX_PATH = '/api/v1/index/retrieve'

RETRIEVE_PATH = '/api/v1/log/entries/retrieve'

# Rekor's maxSearchQueries: the most entries one retrieve request may name.
RETRIEVE_BATCH = 10

# Rekor's messages when it finds no signature it can check; older Rekor only
# checks the legacy header+payload signature.
NO_USABLE_SIGNATURE = ('Package signature not found', 'no supported PGP signature')

# Statuses that mean "the log cannot take it now": retried, and the record
# waits for the log.
TRANSIENT_STATUSES = (408, 425, 429)

# Rekor's lastSizeGreaterThanKnown (pkg/api/error.go), after its number.
LAGGING_INSTANCE = 'was greater than what is currently observable'

# An upload at least this big that the log cuts off is taken for its
# whole-request timeout (UploadCutOff), not for an outage: smaller bodies
# go through in well under Rekor's 30 s default on any link.
CUT_OFF_MIN_BODY = 1 << 20


def cut_off(exc):
    """Whether a request failed because the server closed a connection it
    had accepted (reset, broken pipe, closed without an answer), not
    because none could be made."""
    import http.client
    from urllib3.exceptions import NewConnectionError
    chain, todo = [], [exc]
    while todo and len(chain) < 20:
        error = todo.pop(0)
        if not isinstance(error, BaseException) or any(error is e for e in chain):
            continue
        chain.append(error)
        todo += [error.__cause__, error.__context__, getattr(error, 'reason', None)]
        todo += list(error.args)
    if any(isinstance(e, (NewConnectionError, ConnectionRefusedError)) for e in chain):
        return False
    return any(isinstance(e, (ConnectionResetError, BrokenPipeError, ConnectionAbortedError,
                              http.client.RemoteDisconnected)) for e in chain)


class RekorClient:
    """Rekor v1's REST API: one requests session (use one client per
    thread), bounded retries, every request bounded in time and size.

    deadline: a time.monotonic() by which everything this client does must
    end (the hub's budget, enforce's bound); spent names it in the cause.
    """

    api = 1  # the LogClient protocol (rekor/__init__.py)

    def __init__(self, settings, deadline=None, spent=None):
        import requests  # imported on first use: the hub pays only when it logs
        self.requests = requests
        self.settings = settings
        self.url = settings.url
        self.shown_url = display_url(settings.url)
        self.deadline = deadline
        self.spent = spent
        self.watchdog = Watchdog()
        self.session = bounded_session(requests, self.watchdog)
        # Given with every request: a session's verify loses to
        # REQUESTS_CA_BUNDLE, a request's does not. Proxies still come from
        # the environment.
        self.verify = settings.ca_bundle or True

    def close(self):
        self.session.close()

    def remaining(self):
        return None if self.deadline is None else self.deadline - time.monotonic()

    def out_of_time(self):
        return RekorUnavailable('Rekor at %s: %s' % (self.shown_url, self.spent or 'out of time'))

    def with_retries(self, what, attempt):
        """Run attempt(); retry transient failures with doubling delays,
        within (retries + 1) attempts and the client's deadline."""
        settings = self.settings
        delay = settings.backoff
        attempts = 0
        while True:
            attempts += 1
            try:
                return attempt()
            except RekorUnavailable as e:
                last = e
            remaining = self.remaining()
            if last.at_once or attempts > settings.retries or (
                    remaining is not None and remaining < delay + 0.1):
                break
            LOG.debug('rekor_log: %s failed (%s), retrying in %.1fs', what, last, delay)
            time.sleep(delay)
            delay *= 2
        if attempts == 1:
            raise last
        raise type(last)('%s (after %d attempts)' % (last, attempts))

    def request(self, method, path_or_url, cap=MAX_JSON_ANSWER, sent=0, reader=None, **kws):
        """One request, read whole (up to cap bytes) within its deadline:
        timeout, plus the time to send `sent` bytes at min_rate. reader:
        reads a 200 answer as a stream instead (its content is what it
        returns)."""
        url = urllib.parse.urljoin(self.url + '/', path_or_url)
        settings = self.settings
        allowed = settings.timeout + sent / settings.min_rate
        budget = self.remaining()
        by_budget = budget is not None and budget < allowed
        limit = budget if by_budget else allowed
        if limit <= 0:
            raise self.out_of_time()
        # Connecting and each send may stall for timeout; the answer may take
        # the whole deadline (the log checks the whole RPM before answering).
        wait = min(settings.timeout, limit)
        started = time.monotonic()
        try:
            with self.watchdog.deadline(limit):
                try:
                    response = self.session.request(
                        method, url, timeout=(wait, limit), allow_redirects=False, stream=True,
                        verify=self.verify, **kws)
                    with contextlib.closing(response):
                        content = (reader(self.chunks(response)) if reader is not None
                                   and response.status_code == 200
                                   else self.read_capped(response, cap))
                        return Answer(response.status_code, response.reason or '',
                                      response.headers, content, url)
                except Exception:
                    if self.watchdog.cut:
                        raise DeadlinePassed
                    raise
        except DeadlinePassed:
            if by_budget:
                raise self.out_of_time()
            raise RekorUnavailable('Rekor at %s timed out after %s' % (
                self.shown_url, seconds(limit)))
        except (self.requests.RequestException, urllib3_error(), OSError) as e:
            if is_timeout(e):
                raise RekorUnavailable('Rekor at %s timed out after %s' % (
                    self.shown_url, seconds(limit if isinstance(e, self.requests.ReadTimeout)
                                         else wait)))
            if method == 'POST' and sent >= CUT_OFF_MIN_BODY and cut_off(e):
                raise UploadCutOff(
                    'the log cut the upload off after %s (a %s KiB rpm entry; %s): an rpm '
                    'entry sends the whole package, and the log gives a request less time '
                    "than sending it takes (Rekor's --read-timeout, 30 s by default); set "
                    '[rekor] entry = hashedrekord or move to Rekor v2 (api = 2), which log the '
                    'signature only, or ask the operator of '
                    '%s for a longer request timeout' % (
                        seconds(time.monotonic() - started), sent // 1024, short_reason(e),
                        self.shown_url))
            raise RekorUnavailable('cannot reach Rekor at %s: %s' % (
                self.shown_url, short_reason(e)))

    @staticmethod
    def chunks(response):
        while True:
            chunk = response.raw.read(65536, decode_content=True)
            if not chunk:
                return
            yield chunk

    def read_capped(self, response, cap):
        return read_capped(response, cap, 'Rekor at %s' % self.shown_url)

    def create_entry(self, body):
        """POST a proposed entry; returns (entry_id, entry, created).

        A 409 names the entry already logged; it is fetched in the same
        attempt, so one set of retries covers both requests."""
        def attempt():
            answer = self.request('POST', ENTRIES_PATH, data=body, sent=len(body), headers={
                'Content-Type': 'application/json', 'Accept': 'application/json'})
            if answer.status == 201:
                return single_entry(answer) + (True,)
            if answer.status == 409:
                return self.fetch_entry(self.conflict_location(answer), queued=True) + (False,)
            raise_for_status(answer, body)
        return self.with_retries('upload', attempt)

    def conflict_location(self, answer):
        """Where a 409 says the entry is: only an entry of this log."""
        location = answer.headers.get('Location')
        if not location:
            raise RekorUnavailable('Rekor answered 409 without a Location header')
        url = urllib.parse.urljoin(answer.url, location)
        path = urllib.parse.urlsplit(url).path
        base = urllib.parse.urlsplit(self.url).path.rstrip('/')
        if not same_origin(url, self.url) or not path.startswith(base + ENTRIES_PATH + '/'):
            raise RekorMisconfigured('Rekor answered 409 with a Location outside its entries: %s'
                                     % text_excerpt(display_url(location)))
        return url

    def fetch_entry(self, location, queued=False):
        """GET an entry; queued: a 409 named it, so a 404 means that it is
        still in Trillian's queue, which deduplicates before integrating
        (pkg/trillianclient AddLeaf in sigstore/rekor)."""
        answer = self.request('GET', location, headers={'Accept': 'application/json'})
        if answer.status == 200:
            return single_entry(answer)
        if queued and answer.status == 404:
            raise LogBehind('Rekor has the entry queued but not yet in the log (409, then 404 '
                            'for %s)' % urllib.parse.urlsplit(answer.url).path)
        raise_for_status(answer)

    def get_entry(self, location):
        """GET one entry by its URL path (as in a Location header)."""
        return self.with_retries('fetch of %s' % location, lambda: self.fetch_entry(location))

    def log_public_key(self):
        def attempt():
            answer = self.request('GET', PUBLIC_KEY_PATH, cap=MAX_KEY_ANSWER)
            if answer.status == 200:
                return answer.content
            raise_for_status(answer)
        return self.with_retries('fetch of the log key', attempt)

    def json_answer(self, what, method, path, valid, **kws):
        """A 200 answer's JSON, retried like any request, or
        RekorUnavailable when it is not what valid() accepts."""
        def attempt():
            answer = self.request(method, path, headers={'Accept': 'application/json'}, **kws)
            if answer.status == 200:
                data = answer.json()
                if not valid(data):
                    raise RekorUnavailable('malformed %s from Rekor' % what)
                return data
            raise_for_status(answer)
        return self.with_retries(what, attempt)

    def consistency_proof(self, first_size, last_size, tree_id):
        return self.json_answer('consistency proof', 'GET', PROOF_PATH, is_object, params={
            'firstSize': first_size, 'lastSize': last_size, 'treeID': tree_id})

    def checkpoint(self):
        """LogClient: the v1 log info, which holds the signed tree head."""
        return self.log_info()

    def log_info(self):
        """The active tree's signed head, and those of inactive shards."""
        return self.json_answer('log info', 'GET', LOG_INFO_PATH, is_object)

    def search_index(self, query):
        """The entry IDs (or bare UUIDs) Rekor's index has for a query.
        Rekor puts no limit on this answer (about 83 bytes an entry: 4 MiB
        at 50,000 entries of one key), so it is read as a stream, an ID at
        a time (read_id_array), never held whole: memory grows with the
        IDs kept, not with the answer."""
        def attempt():
            answer = self.request('POST', INDEX_PATH, headers={'Accept': 'application/json'},
                                  reader=read_id_array, json=query)
            if answer.status == 200:
                return answer.content
            raise_for_status(answer)
        return self.with_retries('index search answer', attempt)

    def retrieve_entries(self, entry_ids):
        """[(entryID, entry)] for at most RETRIEVE_BATCH IDs; Rekor leaves
        out the ones it does not have."""
        found = self.json_answer(
            'entries', 'POST', RETRIEVE_PATH,
            lambda found: isinstance(found, list) and all(
                is_object(e) and all(is_object(v) for v in e.values()) for e in found),
            json={'entryUUIDs': entry_ids})
        return [item for entries in found for item in entries.items()]


def single_entry(answer):
    """A Rekor answer is {entryID: LogEntry} with exactly one entry."""
    data = answer.json()
    if not isinstance(data, dict) or len(data) != 1:
        raise RekorUnavailable('malformed reply from Rekor: not a single log entry')
    (entry_id, entry), = data.items()
    if not isinstance(entry, dict):
        raise RekorUnavailable('malformed reply from Rekor: entry is not an object')
    return entry_id, entry


def rekor_message(answer):
    """Rekor's error message, or the status's reason when it sent none."""
    try:
        message = json.loads(answer.content).get('message')
    except (ValueError, AttributeError, RecursionError):
        message = None
    if not isinstance(message, str):
        message = answer.reason
    return text_excerpt(message or '')


def raise_for_status(answer, body=None):
    """Turn a Rekor error answer into the matching error: the log's
    trouble (kept, retried), a configuration problem (kept), or a refusal
    of this entry (set aside)."""
    status, message = answer.status, rekor_message(answer)
    if status == 400 and LAGGING_INSTANCE in message:
        # Several instances serve one log; this one has not seen the tree
        # head another signed (GetLogProofHandler, sigstore/rekor
        # pkg/api/tlog.go): it will, so this is no refusal.
        raise ProofRefused('a Rekor instance is behind the log: %s' % message)
    if status == 501:
        raise LogClosed('Rekor answered 501 for %s: %s; this log no longer takes entries '
                        '(point [rekor] url at one that does)'
                        % (urllib.parse.urlsplit(answer.url).path, message))
    if status >= 500 or status in TRANSIENT_STATUSES:
        raise RekorUnavailable('Rekor answered %d: %s' % (status, message))
    if 300 <= status < 400 or status in (401, 403, 404):
        where = urllib.parse.urlsplit(answer.url).path
        raise RekorMisconfigured('Rekor answered %d for %s: %s (check [rekor] url and '
                                 'credentials)' % (status, where, message))
    if status == 413:
        size = ' (request of %d bytes)' % len(body) if body is not None else ''
        raise RekorRejected('Rekor refused the upload as too large%s: %s' % (size, message))
    if any(text in message for text in NO_USABLE_SIGNATURE):
        raise RekorRejected(
            'Rekor found no signature it can check (%s): this Rekor needs a header+payload '
            'signature (rpmsign --rpmv3) or must be version 1.5.4 or newer for header-only '
            'signatures' % message)
    if status < 400:
        raise RekorUnavailable('Rekor answered %d, which is not an answer of its API'
                               % status)
    raise RekorRejected('Rekor answered %d: %s' % (status, message))
