"""Never hold the hub hostage, and catch up fast after an outage (issue 11,
items 1 and 2).

Each hub request runs in a process of its own (tests/support/hub_request.py), so that
a hub that does hang is killed after PROCESS_TIMEOUT instead of hanging the
suite. The log is the local log of tests/support/rekor_server.py behind the hostile
front of tests/support/hostile_server.py, which refuses, hangs or drips on the same
port and then turns healthy again. Time bounds are loose: the exact figures
are in bench/budget.py.
"""

import json
import time

import pytest

import koji_rekor.worker
import koji_rekor.config

from tests.support.hostile_server import HostileServer
from tests.integration.test_outbox import packages, sigs, world  # noqa: F401 - fixtures

BUDGET = 1
# Loose upper bound of a hub request with a 1 s budget: the budget, the
# process's start-up (Python, koji, requests) and a loaded machine.
HELD_AT_MOST = BUDGET + 5


@pytest.fixture
def front(world):
    with HostileServer(backend=world.rekor) as server:
        yield server


def configure(world, front, **upload):
    # timeout well above the budget, so that only the budget can cut the hub
    world.configure(url=front.url, timeout=6, retries=2, backoff=0.05,
                    hub_budget=BUDGET, **upload)


def hub(world, *imports):
    """One hub request in its own process: (exit status, seconds, stderr)."""
    start = time.monotonic()
    code, out, err = world.hub_process(list(imports)).wait()
    return code, time.monotonic() - start, err


def outage_file(world):
    return world.topdir / 'rekor-logs' / '@state' / 'outage.json'


def healthy(world, front):
    pass


def refusing(world, front):
    front.refuse()


def slow(world, front):
    world.rekor.faults.delay = 8     # the entry is logged, the answer comes late


def hanging(world, front):
    front.mode = 'hang'


def dripping(world, front):
    front.mode = 'drip'


def back(world, front):
    world.rekor.reset_faults()
    front.mode = 'forward'
    if front.listener is None:
        front.serve()


STATES = {'healthy': healthy, 'refusing': refusing, 'slow': slow, 'hanging': hanging,
          'dripping': dripping}


@pytest.mark.parametrize('state', sorted(STATES))
def test_the_hub_budget_holds_whatever_the_log_does(world, front, sigs, state):
    configure(world, front)
    imported = sigs[0]
    STATES[state](world, front)

    code, held, err = hub(world, imported)

    assert code == 0, err              # enforce is off: the import succeeded
    assert held < HELD_AT_MOST, (held, err)
    if state == 'healthy':
        assert world.account(imported) == {imported.name: 'receipt'}
        return
    assert world.account(imported) == {imported.name: 'queued'}   # kept for the worker
    record = world.record(imported)
    assert record['last_error'] and record['next_attempt'] == 0, record

    back(world, front)
    done = world.retry()               # a plain retry: no --now

    # A log that had taken the entry (a slow one may have) answers 409.
    assert done.returncode == 0, done.stderr
    assert done.summary in ('logged 1; 0 left in the outbox',
                            'already in the log 1; 0 left in the outbox'), done.stderr
    assert world.account(imported) == {imported.name: 'receipt'}
    assert len(world.entries_of(imported)) == 1
    assert not outage_file(world).exists()


def test_the_budget_covers_every_signature_of_one_request(world, front, sigs):
    configure(world, front)
    hanging(world, front)
    imports = sigs[:4]

    code, held, err = hub(world, *imports)

    assert code == 0 and held < HELD_AT_MOST, (held, err)
    assert set(world.account(*imports).values()) == {'queued'}
    # The first one used the budget up; the others were not even tried.
    assert err.count('for the worker: the hub budget of 1 s is spent') == 3, err

    back(world, front)
    done = world.retry()
    assert (done.returncode, done.summary) == (0, 'logged 4; 0 left in the outbox'), done.stderr
    assert set(world.account(*imports).values()) == {'receipt'}


def test_an_rpm_too_large_for_the_budget_goes_to_the_worker_untried(world, front, sigs):
    # 1 kB/s: the few KiB of a test RPM's upload cannot be sent within 1 s.
    configure(world, front)
    text = world.hub.conf_path.read_text().replace('[rekor]\n', '[rekor]\nmin_rate = 1000\n')
    world.hub.conf_path.write_text(text)
    imported = sigs[0]

    code, held, err = hub(world, imported)

    assert code == 0
    assert world.posts() == 0          # nothing sent, so no partial upload wasted
    assert 'cannot be sent within the hub budget of 1 s at [rekor] min_rate' in err
    record = world.record(imported)
    assert (record['attempts'], record['next_attempt']) == (0, 0)
    # The worker is not bound by the budget.
    text = world.hub.conf_path.read_text().replace('min_rate = 1000\n', '')
    world.hub.conf_path.write_text(text)
    done = world.retry()
    assert (done.returncode, done.summary) == (0, 'logged 1; 0 left in the outbox'), done.stderr


def test_under_enforce_the_import_fails_within_the_stated_bound(world, front, sigs):
    # (retries + 1) x (timeout + body / min_rate) + backoff x (2^retries - 1)
    world.configure(url=front.url, timeout=0.5, retries=1, backoff=0.05, enforce=True)
    dripping(world, front)
    imported = sigs[0]

    code, held, err = hub(world, imported)

    assert code == 1
    assert held < 2 * (0.5 + 0.1) + 0.05 + 4, (held, err)
    assert world.outbox() == [] and world.receipts() == []   # rolled back with the import
    assert 'enforce: the import is rolled back' in err


# ---------------------------------------------------------------------------
# Catching up: the log's backoff, not each record's
# ---------------------------------------------------------------------------

def test_one_plain_retry_delivers_everything_once_the_log_is_back(world, front, sigs):
    configure(world, front)
    refusing(world, front)
    imports = sigs[:4]
    errs = ''
    for imported in imports:          # four imports during the outage
        code, held, err = hub(world, imported)
        assert code == 0 and held < HELD_AT_MOST
        errs += err
    assert set(world.account(*imports).values()) == {'queued'}
    outage = json.loads(outage_file(world).read_text())
    assert outage['failures'] >= 1 and 'connection refused' in outage['last_error']
    # Once one hub met the outage, the others did not even try the log.
    assert errs.count('for the worker: the log is failing') == 3, errs

    done = world.retry()               # still down: probed, nothing tried, exit 1
    assert done.returncode == 1
    assert done.summary.startswith('waiting 4; 4 left in the outbox; the log has been failing')
    assert all(world.record(i)['attempts'] <= 1 for i in imports)

    back(world, front)
    done = world.retry()               # right after the outage, no --now

    assert (done.returncode, done.summary) == (0, 'logged 4; 0 left in the outbox'), done.stderr
    assert set(world.account(*imports).values()) == {'receipt'}
    assert not outage_file(world).exists()


def test_records_failing_for_their_own_reasons_keep_their_own_backoff(world, front, sigs):
    configure(world, front)
    world.rekor.faults.tamper = 'set'  # an answer that does not verify: this record's trouble
    code, _, err = hub(world, sigs[0])
    assert code == 0
    own = world.record(sigs[0])
    assert own['next_attempt'] > time.time() + 50
    world.rekor.reset_faults()
    refusing(world, front)
    code, _, err = hub(world, sigs[2])  # then the log goes down
    assert code == 0

    back(world, front)
    done = world.retry()

    assert done.summary == 'logged 1, waiting 1; 1 left in the outbox (next attempt %s)' % (
        time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(own['next_attempt'])))
    assert world.account(sigs[0], sigs[2]) == {sigs[0].name: 'queued', sigs[2].name: 'receipt'}


def test_while_the_log_fails_the_worker_only_probes_it(world, front, sigs):
    configure(world, front, queue_only=True)
    imports = sigs[:3]
    world.sign(*imports)              # queue_only: the hub does not use the log
    refusing(world, front)
    first = world.retry()            # one failure: the pass stops at the log's failure
    assert first.summary.startswith('failed 1, waiting 2; 3 left')
    outage = json.loads(outage_file(world).read_text())
    assert outage['next_probe'] - time.time() > 20   # 30 s, doubling
    refused_at = outage['failures']
    second = world.retry()           # a single pass probes once, tries nothing
    assert second.summary.startswith('waiting 3; 3 left')
    assert json.loads(outage_file(world).read_text())['failures'] == refused_at + 1
    assert world.posts() == 0

    # retry --watch waits for the outage's next probe: the log back meanwhile
    # is not even asked; a single pass asks it, and delivers.
    back(world, front)
    settings = koji_rekor.config.load_config(str(world.hub.conf_path))
    assert koji_rekor.worker.probe_log(settings, str(world.topdir), watch=True, now=False) is False
    assert world.rekor.count('GET', '/api/v1/log') == 0
    done = world.retry()
    assert (done.returncode, done.summary) == (0, 'logged 3; 0 left in the outbox'), done.stderr
    assert world.rekor.count('GET', '/api/v1/log') == 1


def test_a_planted_outage_file_cannot_stall_the_worker(world, front, sigs):
    configure(world, front, queue_only=True)
    world.sign(sigs[0])
    state = outage_file(world)
    state.parent.mkdir(parents=True, exist_ok=True)
    for planted in ('[]', '{"url": 5}', 'not json', json.dumps({
            'url': front.url, 'since': 0, 'failures': 'many', 'next_probe': 1e300,
            'last_error': 'x'})):
        state.write_text(planted)
        done = world.retry()
        assert done.returncode == 0, (planted, done.stderr)
        assert 'Traceback' not in done.stderr
        if done.summary.startswith('logged 1'):
            break
    assert world.account(sigs[0]) == {sigs[0].name: 'receipt'}
