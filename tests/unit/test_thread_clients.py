"""The one per-thread client pool of the worker's passes and the monitor's scans."""

import threading

from koji_rekor.progress import ThreadClients


class Client:
    def __init__(self):
        self.closed = False

    def close(self):
        self.closed = True


def test_one_client_per_thread_kept_and_all_closed():
    pool = ThreadClients(Client)
    mine = pool.get()
    assert pool.get() is mine
    theirs = []
    threads = [threading.Thread(target=lambda: theirs.append((pool.get(), pool.get())))
               for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert all(a is b for a, b in theirs) and len({id(a) for a, _ in theirs} | {id(mine)}) == 4
    made = pool.clients[:]
    assert len(made) == 4
    pool.close()
    assert all(client.closed for client in made) and pool.clients == []
