"""What the tests, the demo and the benchmark share: where things are, the
keys and signature modes every test runs with, the hub's user."""

import copy
import os
import pwd

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# ../shared beside the checkout: real data, read only by tests that skip
# cleanly without it.
SHARED = os.path.join(os.path.dirname(ROOT), 'shared')

KEY_ALGOS = ('rsa', 'ed25519')
# The hub's user in the tests' configurations: whoever runs them, so that a
# command started as root in CI stays root instead of becoming apache.
HUB_USER = pwd.getpwuid(os.geteuid()).pw_name
SIGN_MODES = ('header', 'rpmv3')


def frozen(value):
    return copy.deepcopy(value)
