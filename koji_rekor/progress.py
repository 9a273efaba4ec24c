"""Progress on stderr and bounded concurrent work."""

import sys
import threading
import time


class ThreadClients:
    """One client per thread, made by make() on the thread's first call and
    kept for the whole run (its connection, and TLS, reused); close()
    closes them all. The pool of the worker's passes and the monitor's scans."""

    def __init__(self, make):
        self.make = make
        self.local = threading.local()
        self.clients = []
        self.lock = threading.Lock()

    def get(self):
        client = getattr(self.local, 'client', None)
        if client is None:
            client = self.local.client = self.make()
            with self.lock:
                self.clients.append(client)
        return client

    def close(self):
        with self.lock:
            clients, self.clients = self.clients, []
        for client in clients:
            client.close()


def run_bounded(jobs, items, work, done):
    """work(item) for each item on jobs threads, and done(item, future) in
    this thread as each finishes. At most 2 * jobs items are in flight, so
    memory stays flat however many items there are."""
    import concurrent.futures
    pending = {}
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=jobs)

    def finish(return_when):
        finished, _ = concurrent.futures.wait(pending, return_when=return_when)
        for future in finished:
            done(pending.pop(future), future)

    try:
        for item in items:
            if len(pending) >= 2 * jobs:
                finish(concurrent.futures.FIRST_COMPLETED)
            pending[pool.submit(work, item)] = item
        while pending:
            finish(concurrent.futures.FIRST_COMPLETED)
    finally:
        # On an interrupt, what has not started is dropped; a rerun finds it.
        for future in pending:
            future.cancel()
        pool.shutdown(wait=True)


# ---------------------------------------------------------------------------
# Progress on stderr
# ---------------------------------------------------------------------------

# Without a terminal, a progress line at most this often (and at the end),
# so that cron mail or a journal gets a few lines, not thousands.
PROGRESS_INTERVAL = 5.0


class Progress:
    """One progress line on stderr: rewritten in place on a terminal,
    otherwise printed now and then."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.shown = False
        self.last = None

    def update(self, text, done=False):
        """Show text; done ends this line of progress (always printed)."""
        now = time.monotonic()
        if self.tty:
            self.stream.write('\r%s\x1b[K%s' % (text, '\n' if done else ''))
            self.shown = not done
        elif done or self.last is None or now - self.last >= PROGRESS_INTERVAL:
            self.stream.write(text + '\n')
            self.last = None if done else now
        self.stream.flush()

    def clear(self):
        """Make room on a terminal for a line that is not progress."""
        if self.shown:
            self.stream.write('\r\x1b[K')
            self.stream.flush()
            self.shown = False
