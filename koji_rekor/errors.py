"""The errors, and the policy each one carries (permanent, about the log)."""


# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------


class RekorLogError(Exception):
    """A signature could not be logged; str() is a one-line cause.

    permanent: trying again cannot help, so a queued record is moved aside.
    about_the_log: the log's failure, not the record's (an outage).
    next_pass: the log has not caught up with itself; try at the next pass.
    closed: the log no longer takes entries. at_once: not worth retrying
    within the same upload.
    """
    permanent = False
    about_the_log = False
    next_pass = False
    closed = False
    at_once = False


class SignatureSourceError(RekorLogError):
    """The public key for a signature is missing or does not match."""


class SourceGone(SignatureSourceError):
    """The signed RPM or its signature header is missing or corrupt."""
    permanent = True


class RekorRejected(RekorLogError):
    """Rekor refused the entry for good (4xx)."""
    permanent = True


class BreaksRekorRule(RekorLogError):
    """The RPM breaks a rule of Rekor's rpm type, so Rekor would refuse it:
    found before anything is sent."""
    permanent = True


class RekorUnavailable(RekorLogError):
    """Rekor could not be reached or answered with a server error.

    The log's failure, not the record's: the record waits for the log
    (see the log's outage state). at_once: not worth retrying within the
    same upload."""
    about_the_log = True

    def __init__(self, message, at_once=False):
        super().__init__(message)
        self.at_once = at_once


class LogBehind(RekorUnavailable):
    """The log has not caught up with itself: the instance that answered
    is behind the one that signed a tree head (Rekor's 400 "the tree size
    requested(N) was greater than what is currently observable(M)"), or an
    entry is queued but not integrated (409, then 404 for it). Retried
    with backoff; then the record waits for the next pass. Neither an
    outage of the log nor a refusal of the record, nor a finding."""
    about_the_log = False
    next_pass = True
    proof_refused = False


class ProofRefused(LogBehind):
    """LogBehind for a consistency proof refused (the 400), not a queued
    entry: a run of them is kept, and past a bound reported (state.Behind)."""
    proof_refused = True


class UploadCutOff(RekorUnavailable):
    """The log closed the connection in the middle of a big upload: its
    whole-request timeout (Go's http.Server ReadTimeout; Rekor's
    --read-timeout, 30 s by default) is shorter than sending this entry
    takes. Not an outage (it takes smaller entries), not worth retrying at
    once: the record backs off on its own."""
    about_the_log = False

    def __init__(self, message):
        super().__init__(message, at_once=True)


class RekorMisconfigured(RekorUnavailable):
    """The log answered as no Rekor at that URL would (a redirect, refused
    credentials, no entries API): a configuration problem. The record is
    kept and waits like for an unavailable log; retrying now cannot help."""

    def __init__(self, message):
        super().__init__(message, at_once=True)


class VerificationError(RekorLogError):
    """Something the log returned does not verify."""


class LogClosed(RekorUnavailable):
    """The log answers 501 for its entries: an operator turned the
    endpoint off (Rekor's --enabled_api_endpoints; Sigstore turns the v1
    write path off). The log's state, not the record's: records are kept,
    and status and doctor say that this log no longer takes entries."""
    closed = True

    def __init__(self, message):
        super().__init__(message, at_once=True)


class BadRecord(RekorLogError):
    """An outbox record that is not one the plugin writes: set aside."""
    permanent = True


class DeadlinePassed(Exception):
    """The watchdog cut a request at its deadline."""


class UnsafePath(RekorLogError):
    """A path under rekor-logs/ is a link, or not what it should be."""


# What becomes of a failed outbox record (disposition()).
REJECTED = 'rejected'          # set aside for good
WAIT_FOR_LOG = 'wait_for_log'  # due again as soon as the log answers
RETRY = 'retry'                # the record's own failure: back off


def disposition(exc):
    """What becomes of a record whose delivery raised exc: 'rejected'
    (permanent), 'wait_for_log' (the log's failure, or the log behind
    itself) or 'retry' (backoff per record). An error that is not ours is
    retried."""
    if not isinstance(exc, RekorLogError):
        return RETRY
    if exc.permanent:
        return REJECTED
    return WAIT_FOR_LOG if waits_for_log(exc) else RETRY


def waits_for_log(exc):
    """Whether a failed record waits for the log rather than backing off
    (also for a permanent failure that could not be set aside)."""
    return isinstance(exc, RekorLogError) and bool(exc.about_the_log or exc.next_pass)


def failure_cause(exc):
    if isinstance(exc, RekorLogError):
        return str(exc)
    return 'unexpected %s: %s' % (type(exc).__name__, exc)


class KojiUnavailable(Exception):
    """Koji could not be asked, or its copy of a package not read."""


class UsageError(Exception):
    """A command could not even start; exit status 2."""


class CannotCheck(UsageError):
    """No key for the log in question: nothing was judged (exit 2)."""
