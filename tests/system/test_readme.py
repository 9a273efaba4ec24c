"""The README and docs/ stay usable: the README's two commands are Makefile
targets, every relative link leads to a file and heading that exist, every
path and `python3 -m` module they name is in the tree, and the README stays
short (the long text lives in docs/)."""

import glob
import os
import re

import pytest

from tests.support.common import ROOT

README = os.path.join(ROOT, 'README.md')
DOCS = sorted(glob.glob(os.path.join(ROOT, 'docs', '*.md')))
PAGES = [README] + DOCS


def read(path):
    with open(path, encoding='utf-8') as f:
        return f.read()


def prose(text):
    """The text outside fenced code blocks."""
    return re.sub(r'^```.*?^```', '', text, flags=re.M | re.S)


def slug(heading):
    # GitHub's anchors: lowercase, punctuation but - and _ dropped, spaces
    # become -; a repeated heading gets -1, -2, ...
    heading = heading.strip().lower()
    heading = re.sub(r'[^\w\- ]', '', heading)
    return heading.replace(' ', '-')


def anchors(path):
    seen = {}
    for m in re.finditer(r'^#{1,6} (.+?)\s*$', prose(read(path)), re.M):
        base = slug(m.group(1))
        n = seen.get(base, 0)
        seen[base] = n + 1
        yield base if n == 0 else '%s-%d' % (base, n)


def makefile_targets():
    return set(re.findall(r'^([\w.-]+):', read(os.path.join(ROOT, 'Makefile')), re.M))


def test_readme_first_screen_names_the_two_commands_and_they_are_make_targets():
    first_screen = '\n'.join(read(README).splitlines()[:25])
    commands = re.findall(r'^make (\w+)', first_screen, re.M)
    assert commands == ['test', 'demo']
    assert set(commands) <= makefile_targets()


def test_readme_mentions_make_man_and_it_is_a_target():
    text = read(README)
    assert '`make man`' in text and 'build/koji-rekor.1' in text
    assert 'man' in makefile_targets()


@pytest.mark.parametrize('page', PAGES, ids=lambda p: os.path.relpath(p, ROOT))
def test_every_make_command_it_names_is_a_target(page):
    named = set(re.findall(r'`make (\w+)', read(page))) | set(re.findall(r'^make (\w+)', read(page), re.M))
    assert named <= makefile_targets(), named - makefile_targets()


def test_readme_is_short():
    assert len(read(README).splitlines()) < 300


def test_every_doc_starts_with_a_purpose_and_a_table_of_contents():
    for path in DOCS:
        lines = read(path).splitlines()
        assert lines[0].startswith('# '), path
        assert lines[2] and not lines[2].startswith('#'), path
        assert '**Contents**' in lines[:8], path


def links(path):
    for m in re.finditer(r'\[[^\]]*\]\(([^)\s]+)\)', prose(read(path))):
        target = m.group(1)
        if not re.match(r'[a-z]+:', target):
            yield target


@pytest.mark.parametrize('page', PAGES, ids=lambda p: os.path.relpath(p, ROOT))
def test_every_relative_link_leads_to_a_file_and_heading(page):
    bad = []
    for target in links(page):
        path, _, anchor = target.partition('#')
        dest = os.path.normpath(os.path.join(os.path.dirname(page), path)) if path else page
        if not os.path.exists(dest):
            bad.append('%s: no such file' % target)
        elif anchor and dest.endswith('.md') and anchor not in set(anchors(dest)):
            bad.append('%s: no such heading' % target)
    assert not bad, bad


TREE_PATH = re.compile(r'`((?:tests|bench|koji_rekor|docs|systemd|\.ci)/[\w./*-]*)`')


@pytest.mark.parametrize('page', PAGES, ids=lambda p: os.path.relpath(p, ROOT))
def test_every_path_in_the_tree_it_names_exists(page):
    missing = [p for p in TREE_PATH.findall(read(page))
               if '.cache' not in p and not glob.glob(os.path.join(ROOT, p))]
    assert not missing, missing


@pytest.mark.parametrize('page', PAGES, ids=lambda p: os.path.relpath(p, ROOT))
def test_every_python_module_it_runs_exists(page):
    missing = []
    for module in set(re.findall(r'python3\s+-m\s+([\w.]+)', read(page))):
        if module.split('.')[0] not in ('koji_rekor', 'tests', 'bench') or module.endswith('.'):
            continue                   # pytest, pip, venv ...; bench.<name>
        base = os.path.join(ROOT, *module.split('.'))
        if not (os.path.exists(base + '.py') or os.path.exists(os.path.join(base, '__main__.py'))):
            missing.append(module)
    assert not missing, missing


@pytest.mark.parametrize('page', PAGES, ids=lambda p: os.path.relpath(p, ROOT))
def test_bench_and_test_support_scripts_run_as_modules(page):
    # bench/ and tests/ are packages: `python3 bench/x.py` no longer runs.
    assert not re.findall(r'python3 ((?:bench|tests)/\S+\.py)', read(page))
