"""The package's shape holds: modules small enough to read, imports only
downward (no cycle), and the hub never loads what only the command needs.
Read from the source with ast, so nothing here imports the package."""

import ast
import os

import pytest

from tests.support.common import ROOT

PACKAGE = os.path.join(ROOT, 'koji_rekor')
MAX_LINES = 600
SHIM_MAX_LINES = 60
# What only the koji-rekor command runs: the hub must never import it.
COMMAND_ONLY = ('koji_rekor.cli', 'koji_rekor.monitor', 'koji_rekor.doctor',
                'koji_rekor.backfill', 'koji_rekor.verify_rpm', 'koji_rekor.worker',
                'koji_rekor.privileges', 'koji_rekor.progress', 'koji_rekor.offline')


def module_files():
    found = {}
    for folder, dirs, names in os.walk(PACKAGE):
        dirs[:] = [d for d in dirs if d != '__pycache__']
        for name in names:
            if name.endswith('.py'):
                path = os.path.join(folder, name)
                parts = os.path.relpath(path, ROOT)[:-3].split(os.sep)
                if parts[-1] == '__init__':
                    parts.pop()
                found['.'.join(parts)] = path
    return found


def imports_of(module, path, known):
    """The package modules a file imports, at any depth of its code
    (a lazy import inside a function is still an import)."""
    with open(path) as fo:
        tree = ast.parse(fo.read(), path)
    package = module if path.endswith('__init__.py') else module.rsplit('.', 1)[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split('.')
                base = base[:len(base) - node.level + 1]
                target = '.'.join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ''
            names = [target + '.' + a.name for a in node.names]
            for name in names + [target]:
                if name in known:
                    out.add(name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                name = alias.name
                while name and name not in known:
                    name = name.rpartition('.')[0]
                if name:
                    out.add(name)
    out.discard(module)
    return out


def graph():
    files = module_files()
    return {module: imports_of(module, path, files) for module, path in files.items()}


def closure(start, edges, parents=True):
    seen, todo = set(), list(start)
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        todo.extend(edges.get(module, ()))
        # Importing a submodule runs its packages' __init__ first.
        parent = module.rpartition('.')[0]
        if parent and parents:
            todo.append(parent)
    return seen


@pytest.mark.parametrize('module', sorted(module_files()))
def test_no_module_is_over_600_lines(module):
    with open(module_files()[module]) as fo:
        assert len(fo.readlines()) <= MAX_LINES


def test_the_hub_plugin_file_is_a_shim():
    with open(os.path.join(ROOT, 'rekor_log.py')) as fo:
        assert len(fo.readlines()) <= SHIM_MAX_LINES


def test_no_import_cycle():
    edges = graph()
    for module in edges:
        reached = closure(edges[module], edges, parents=False)
        assert module not in reached, '%s imports itself through %s' % (module, sorted(reached))


def test_the_hub_never_loads_the_command():
    shim = imports_of('rekor_log', os.path.join(ROOT, 'rekor_log.py'), module_files())
    assert shim, 'the shim imports nothing of the package?'
    reached = closure(shim, graph())
    assert not {m for m in reached if m.startswith(COMMAND_ONLY)}


def test_the_checks_see_imports():
    # The closure and cycle tests would pass vacuously if imports were missed.
    edges = graph()
    assert 'koji_rekor.cli' in closure({'koji_rekor.__main__'}, edges)
    assert 'koji_rekor.merkle' in closure({'koji_rekor.hub'}, edges)
