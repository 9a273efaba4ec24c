#!/usr/bin/env python3
"""One Koji hub request in a process of its own, for the outbox tests.

    python3 -m tests.support.hub_request --conf FILE --topdir DIR --import JSON [--import JSON ...]
                                 [--no-commit]

Loads the plugin with Koji's own loader, registers its callbacks as
kojixmlrpc's HandlerRegistry.register_plugin does, then fires postRPMSign for
each import (a JSON file of {"sigkey", "sighash", "build", "rpm"}, as
add_rpm_sig passes them) and postCommit unless --no-commit (kojixmlrpc skips
it when the request rolls back).

Exits 0 when the request went through, 1 with the one-line cause when a
callback failed the call (koji.CallbackError, e.g. under enforce), 2 on bad
arguments. Log messages of the plugin go to stderr.
"""

import argparse
import json
import logging
import sys

import koji

from tests.support import hubsim


def one_line_cause(exc):
    """run_callbacks wraps the plugin's CallbackError, with a traceback, in
    another; the plugin's own message is the cause."""
    inner = exc.__context__ if isinstance(exc.__context__, Exception) else exc
    text = str(inner).strip()
    return text.splitlines()[0] if text else type(inner).__name__


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--conf', required=True, help='rekor_log.conf to use')
    parser.add_argument('--topdir', required=True, help="Koji's topdir")
    parser.add_argument('--import', dest='imports', action='append', required=True,
                        metavar='JSON', help='one signature import (repeatable)')
    parser.add_argument('--no-commit', action='store_true',
                        help='end the request without postCommit, as a rollback does')
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format='hub_request[%(process)d] %(levelname)s: %(message)s')

    imports = []
    for path in args.imports:
        with open(path) as fo:
            imports.append(json.load(fo))
    koji.pathinfo.topdir = args.topdir
    hubsim.load_plugin(args.conf)
    try:
        hubsim.hub_request(imports, commit=not args.no_commit)
    except koji.CallbackError as e:
        print(one_line_cause(e), flush=True)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
