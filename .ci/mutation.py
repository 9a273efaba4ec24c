#!/usr/bin/env python3
"""`make mutation`: run mutmut over the functions named, then state the
score and every surviving mutant, and fail below the floor.

    mutation.py --floor 85 koji_rekor.verify.split_entry_id 'koji_rekor.merkle.*'

A name package.module.function mutates that function (mutmut calls its
mutants package.module.x_function__mutmut_N); a name holding '*' is passed
to mutmut as the glob it is (a whole module, or a method:
package.module.xǁClassǁmethod*). Killed and timed-out mutants count as
caught; survivors, and mutants no selected test runs, do not. Which
package mutmut copies, which of its modules it mutates (only_mutate) and
which tests it runs are [mutmut] in setup.cfg.
"""

import argparse
import configparser
import fnmatch
import shutil
import subprocess
import sys

CAUGHT = {'killed', 'timeout', 'segfault', 'caught by type check'}


def glob_of(name):
    if '*' in name:
        return name
    module, _, function = name.rpartition('.')
    return '%s.x_%s__mutmut_*' % (module, function)


def module_file(name):
    """koji_rekor/v2/note.py for koji_rekor.v2.note.verify_checkpoint,
    'koji_rekor.v2.note.*' or koji_rekor.v2.note.xǁClassǁmethod*."""
    parts = []
    for part in name.split('.'):
        if '*' in part or part.startswith(('x_', 'x\u01c1')):
            break
        parts.append(part)
    if '*' not in name:
        parts = parts[:-1]  # module.function
    return '/'.join(parts) + '.py'


def not_mutated(names, setup_cfg='setup.cfg'):
    """The names whose module [mutmut] only_mutate leaves out: mutmut
    would make no mutant of them."""
    config = configparser.ConfigParser()
    config.read(setup_cfg)
    only = config.get('mutmut', 'only_mutate', fallback='').split()
    return [n for n in names
            if only and not any(fnmatch.fnmatchcase(module_file(n), p) for p in only)]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--floor', type=float, required=True, help='lowest score in percent')
    parser.add_argument('--keep', action='store_true', help='reuse mutants/ from a last run')
    parser.add_argument('names', nargs='+')
    args = parser.parse_args()
    missing = not_mutated(args.names)
    if missing:
        sys.exit('mutation: add the module of %s to only_mutate in setup.cfg [mutmut]'
                 % ' '.join(missing))
    globs = [glob_of(n) for n in args.names]
    if not args.keep:
        shutil.rmtree('mutants', ignore_errors=True)
    mutmut = [sys.executable, '-m', 'mutmut']
    subprocess.run(mutmut + ['run'] + globs, check=True, stdout=subprocess.DEVNULL)
    listing = subprocess.run(mutmut + ['results', '--all', 'true'], check=True,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True).stdout
    results = {}
    for line in listing.splitlines():
        mutant, sep, status = line.strip().partition(': ')
        if sep and any(fnmatch.fnmatchcase(mutant, g) for g in globs):
            results[mutant] = status
    if not results:
        sys.exit('mutation: no mutant matches %s' % ' '.join(globs))
    unchecked = sorted(m for m, s in results.items() if s == 'not checked')
    checked = {m: s for m, s in results.items() if s != 'not checked'}
    caught = sum(1 for s in checked.values() if s in CAUGHT)
    survivors = sorted((m for m, s in checked.items() if s not in CAUGHT),
                       key=lambda m: (m.rpartition('_')[0], int(m.rpartition('_')[2])))
    score = 100.0 * caught / len(checked) if checked else 0.0
    for mutant in survivors:
        print('%s: %s' % (mutant, checked[mutant]))
        diff = subprocess.run(mutmut + ['show', mutant], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True).stdout
        print(''.join('    ' + l + '\n' for l in diff.splitlines() if l[:2] in ('- ', '+ ')))
    if unchecked:
        print('not run: %d mutants' % len(unchecked))
    print('mutation score: %.1f%% (%d of %d caught, %d survived), floor %.1f%%'
          % (score, caught, len(checked), len(survivors), args.floor))
    if score < args.floor:
        sys.exit('mutation: score %.1f%% is below the floor %.1f%%' % (score, args.floor))


if __name__ == '__main__':
    main()
