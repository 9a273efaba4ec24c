"""Every subcommand's --help says what it does, its defaults and its exit
status; the man page is built from the same parser (make man)."""

import argparse
import os
import shutil
import subprocess

import pytest

import koji_rekor.cli
from tests.support.common import ROOT
from tests.integration.test_cli_contract import SUBCOMMANDS


def subparsers():
    parser = koji_rekor.cli.build_parser()
    sub, = [a for a in parser._actions if a.dest == 'command']
    return parser, sub.choices


@pytest.mark.parametrize('command', SUBCOMMANDS)
def test_every_subcommand_help_says_what_defaults_and_exit_status(command):
    _, choices = subparsers()
    parser = choices[command]
    text = ' '.join(parser.format_help().split())
    # (argparse wraps at hyphens too: compare without white space)
    assert parser.description and ''.join(parser.description.split()) in ''.join(text.split())
    assert 'exit status: 0 success;' in text and '2 could not run' in text
    for action in parser._actions:
        if action.option_strings and action.default not in (None, False, argparse.SUPPRESS) \
                and action.help and action.nargs not in ('*', '+'):
            # Every option that has a default says it.
            helped = ' '.join(HelpFormatterProbe(command).help_of(action).split())
            assert 'default' in helped, (command, action.option_strings)


class HelpFormatterProbe(koji_rekor.cli.HelpFormatter):
    def __init__(self, prog):
        super().__init__(prog)

    def help_of(self, action):
        return self._expand_help(action)


def test_the_top_help_lists_each_commands_exit_1():
    parser, _ = subparsers()
    text = ' '.join(parser.format_help().split())
    assert 'doctor: a check FAILs' in text and 'monitor: findings not yet acknowledged' in text


@pytest.mark.skipif(not shutil.which('make'), reason='no make')
def test_make_man_builds_the_man_page_from_the_parser():
    page = os.path.join(ROOT, 'build', 'koji-rekor.1')
    if os.path.exists(page):
        os.unlink(page)
    done = subprocess.run(['make', '-C', ROOT, 'man'], capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stdout + done.stderr
    with open(page) as fo:
        roff = fo.read()
    assert roff.startswith('.TH KOJI\\-REKOR "1"')
    # The subcommands, their descriptions and the exit statuses are there.
    flat = ' '.join(roff.replace('\\-', '-').split())
    for command in SUBCOMMANDS:
        assert "COMMAND 'koji-rekor %s'" % command in roff.replace('\\-', '-') or \
            'koji-rekor %s' % command in flat
    assert 'one line per check (ok, warn, FAIL, skip)' in flat
    assert 'Exit status: 0 success' in flat
