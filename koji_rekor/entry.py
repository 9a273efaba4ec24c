"""The proposed rpm entry, streamed: the body Rekor v1 is sent."""

import base64
import binascii
import contextlib
import hashlib
import queue
import threading

from . import LOG
from .errors import SignatureSourceError, SourceGone
from .rpmsig import read_chunks

# Encoded chunks the reader thread keeps ready ahead of the socket: enough
# to keep the socket busy while the next one is encoded, few enough to keep
# memory flat (4/3 CHUNK_SIZE each).
QUEUE_CHUNKS = 4

# How long stopping an upload waits for its reader thread's read in progress.
READER_STOP_SECONDS = 5.0


# ---------------------------------------------------------------------------
# The entry
# ---------------------------------------------------------------------------


class EntryBody:
    """The JSON of a proposed rpm entry, produced chunk by chunk.

    requests sends an iterable with a length as a Content-Length body, so
    the RPM is read, hashed and base64-encoded a chunk at a time: memory
    stays flat whatever the RPM's size. That work runs in a BodyEncoder
    thread a few chunks ahead of the socket, so it overlaps with sending
    (hashlib and socket writes release the GIL). Rekor's schema is fixed
    and small, so the JSON around the two base64 strings is written by hand.

    Each iteration (a retried request iterates again) reads the RPM anew;
    close() stops the reader of an iteration left unfinished.
    """

    def __init__(self, signed, public_key, stall_timeout=30.0):
        self.signed = signed
        self.rpm_size = signed.size()
        self.stall_timeout = stall_timeout
        self.prefix = b'{"kind":"rpm","apiVersion":"0.0.1","spec":{"package":{"content":"'
        self.suffix = (b'"},"publicKey":{"content":"' + base64.b64encode(public_key) + b'"}}}')
        self.sha256 = None
        self.encoder = None

    def __len__(self):
        return len(self.prefix) + 4 * ((self.rpm_size + 2) // 3) + len(self.suffix)

    def __iter__(self):
        self.close()
        encoder = self.encoder = BodyEncoder(self.signed, self.rpm_size, self.stall_timeout)
        try:
            yield self.prefix
            yield from encoder.chunks()
        finally:
            encoder.stop()
        self.sha256 = encoder.sha256
        yield self.suffix

    def close(self):
        if self.encoder is not None:
            self.encoder.stop()


class BodyEncoder:
    """Reads, hashes and base64-encodes an RPM in a thread of its own into
    a queue of at most QUEUE_CHUNKS encoded chunks, which chunks() yields.

    The thread ends when the RPM is read, when stop() is called, or when no
    one has taken a chunk for stall_timeout (a request abandoned without
    stop()); a read error or an RPM whose size changed is raised by chunks().
    """

    DONE = object()

    def __init__(self, signed, rpm_size, stall_timeout):
        self.signed = signed
        self.rpm_size = rpm_size
        self.stall_timeout = stall_timeout
        self.queue = queue.Queue(QUEUE_CHUNKS)
        self.stopped = threading.Event()
        self.sha256 = None
        self.thread = threading.Thread(target=self.run, daemon=True,
                                       name='rekor_log body of %s' % signed.nvra)
        self.thread.start()

    def run(self):
        try:
            self.encode()
        except SignatureSourceError as e:
            self.put(e)
        except FileNotFoundError:
            self.put(SourceGone('RPM file missing: %s' % self.signed.path))
        except OSError as e:
            self.put(SignatureSourceError('cannot read %s: %s' % (
                self.signed.path, e.strerror or e)))
        except Exception as e:  # koji's header parsing: the RPM is corrupt
            self.put(SourceGone('not a readable RPM: %s: %s' % (self.signed.path, e)))

    def encode(self):
        digest = hashlib.sha256()
        read = 0
        with self.signed.open() as fo:
            for chunk in read_chunks(fo):
                read += len(chunk)
                if read > self.rpm_size:
                    break
                digest.update(chunk)
                if not self.put(binascii.b2a_base64(chunk, newline=False)):
                    return
        if read != self.rpm_size:
            # The file changed under us: the Content-Length already sent is
            # wrong, so end the request before its end rather than send a
            # corrupt entry.
            raise SourceGone('%s changed while it was being sent (%s%d bytes, expected %d)' % (
                self.signed.nvra, 'over ' if read > self.rpm_size else '', read, self.rpm_size))
        self.sha256 = digest.hexdigest()
        self.put(self.DONE)

    def put(self, item):
        """Queue item; False once the consumer has stopped or stalled."""
        try:
            self.queue.put(item, timeout=self.stall_timeout)
        except queue.Full:
            LOG.debug('rekor_log: nothing took the body of %s for %gs, reader stops',
                      self.signed.nvra, self.stall_timeout)
            return False
        return not self.stopped.is_set()

    def chunks(self):
        while True:
            try:
                item = self.queue.get(timeout=self.stall_timeout)
            except queue.Empty:
                raise SignatureSourceError('reading %s stalled for %gs'
                                           % (self.signed.path, self.stall_timeout))
            if item is self.DONE:
                return
            if isinstance(item, Exception):
                raise item
            yield item

    def stop(self):
        """End the thread: once stopped is set it puts at most one more item,
        which the emptied queue has room for. The wait is for the read in
        progress; a file system that hangs it keeps the (daemon) thread until
        the read returns, not the caller."""
        self.stopped.set()
        with contextlib.suppress(queue.Empty):
            while True:
                self.queue.get_nowait()
        self.thread.join(min(self.stall_timeout, READER_STOP_SECONDS))


def hashedrekord_entry(signed, public_key, **options):
    """The Rekor v2 entry of a signed RPM: a hashedrekord v0.0.2 of its
    header signature, built from the RPM's headers alone (v2/hashedrekord;
    Rekor v2 has no rpm kind)."""
    from .v2 import hashedrekord
    return hashedrekord.from_rpm_file(signed.path, public_key,
                                      sighdr=signed.sighdr if signed.spliced else None)


# The entry builders by kind ([rekor] entry): a new kind plugs in here, its
# body check in verify.BODY_CHECKS and its client in rekor.make_client.
ENTRY_KINDS = {'rpm': EntryBody, 'hashedrekord': hashedrekord_entry}


def make_entry(kind, signed, public_key, **options):
    """The proposed entry of kind for a signed RPM (options: the builder's,
    e.g. the rpm body's stall_timeout)."""
    return ENTRY_KINDS[kind](signed, public_key, **options)
