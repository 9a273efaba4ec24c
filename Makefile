# Developer entry points; see README.md.
PYTHON ?= python3
# The python3 that byte-compiles inside rpmbuild (the spec's default:
# /usr/bin/python3); it needs nothing but the standard library.
RPM_PYTHON ?=

VERSION := $(shell sed -n "s/^__version__ = '\\(.*\\)'/\\1/p" koji_rekor/__init__.py)
RPMTOP := $(CURDIR)/build/rpm
# rekor_cli.py is the Koji CLI plugin, shipped when the checkout has it.
SOURCES := rekor_log.py koji_rekor $(wildcard rekor_cli.py) rekor_log.conf README.md docs LICENSE systemd
# A Debian host's rpm database knows none of the BuildRequires; mock and
# Koji build roots check them.
RPMBUILD_NODEPS := $(if $(wildcard /etc/debian_version),--nodeps)

# `make mutation`: what mutmut mutates, one name per function
# (package.module.function, or a mutmut glob such as 'package.module.*' for
# a whole module or 'package.module.xǁClassǁmethod*' for a method); see
# .ci/mutation.py. A name's module must be in only_mutate and the fast tests
# it runs are the rest of [mutmut] in setup.cfg. Merkle, checkpoint and
# entry verification, safe paths, record checks, monitor decisions:
MUTATE ?= koji_rekor.merkle.hash_leaf koji_rekor.merkle.hash_children \
	koji_rekor.merkle.shift_past_right_edge koji_rekor.merkle.root_from_inclusion_proof \
	koji_rekor.merkle.left_subtrees koji_rekor.merkle.prefix_roots \
	koji_rekor.merkle.verify_consistency koji_rekor.checkpoint.parse_checkpoint \
	koji_rekor.checkpoint.verify_checkpoint koji_rekor.verify.split_entry_id \
	koji_rekor.verify.verify_log_entry koji_rekor.verify.verify_rpm_body \
	koji_rekor.safefs.check_part koji_rekor.safefs.read_regular_file \
	koji_rekor.receipts.check_rpm_naming koji_rekor.receipts.check_sigkey \
	koji_rekor.outbox.check_record koji_rekor.rekor.models.body_public_keys \
	'koji_rekor.monitor.koji_view.xǁKojiViewǁaccount__mutmut_*'
# The Rekor v2 verification (signed notes, tiles, entries), on its own with
# `make mutation-v2`: 66.9 % at the split, below the floor the list above holds.
MUTATE_V2 := 'koji_rekor.v2.note.*' 'koji_rekor.v2.tiles.*' 'koji_rekor.v2.entry.*'
# The lowest score the release checklist accepts (docs/development.md).
MUTATION_FLOOR ?= 70
MUTATION_VENV := build/mutation-venv

.PHONY: setup test demo man rpm clean mutation mutation-v2

setup:
	bash .ci/setup

test: setup
	$(PYTHON) -m pytest -q

demo: setup
	$(PYTHON) -m tests.support.demo

# build/koji-rekor.1, the man page, from the same parser as --help
# (argparse-manpage, installed by `make setup`).
man: build/koji-rekor.1

build/koji-rekor.1: $(wildcard koji_rekor/*.py koji_rekor/*/*.py)
	mkdir -p build
	PYTHONPATH=$(CURDIR) $(PYTHON) -c "from argparse_manpage.cli import main; main()" \
	    --module koji_rekor.cli \
	    --function build_parser --project-name koji-rekor --prog koji-rekor \
	    --version $(VERSION) --manual-title 'koji-rekor manual' \
	    --description 'record Koji RPM signatures in a Rekor transparency log' \
	    --output $@

# Not part of `make test`: mutmut lives in its own virtualenv, which sees
# the project's installed dependencies.
mutation:
	test -x $(MUTATION_VENV)/bin/python || $(PYTHON) -m venv --system-site-packages $(MUTATION_VENV)
	$(MUTATION_VENV)/bin/python -m pip install -q --disable-pip-version-check 'mutmut>=3.8,<4'
	$(MUTATION_VENV)/bin/python .ci/mutation.py --floor $(MUTATION_FLOOR) $(MUTATE)

# dist/koji-rekor-<version>-1.src.rpm and the two noarch RPMs built from it.
rpm:
	rm -rf $(RPMTOP) && mkdir -p $(RPMTOP)/SOURCES dist
	tar -czf $(RPMTOP)/SOURCES/koji-rekor-$(VERSION).tar.gz --exclude=__pycache__ \
	    --transform 's,^,koji-rekor-$(VERSION)/,' $(SOURCES)
	rpmbuild -bs $(RPMBUILD_NODEPS) --define "_topdir $(RPMTOP)" \
	    --define "version_from_source $(VERSION)" koji-rekor.spec
	rpmbuild --rebuild $(RPMBUILD_NODEPS) --define "_topdir $(RPMTOP)" \
	    $(if $(RPM_PYTHON),--define "__python3 $(RPM_PYTHON)") \
	    --define "_rpmfilename %%{NAME}-%%{VERSION}-%%{RELEASE}.%%{ARCH}.rpm" \
	    --dbpath $(RPMTOP)/db $(RPMTOP)/SRPMS/koji-rekor-$(VERSION)-1.src.rpm
	rm -f dist/koji-rekor-*.rpm
	cp $(RPMTOP)/SRPMS/koji-rekor-$(VERSION)-1.src.rpm \
	    $(RPMTOP)/RPMS/koji-rekor-$(VERSION)-1.noarch.rpm \
	    $(RPMTOP)/RPMS/koji-rekor-hub-$(VERSION)-1.noarch.rpm dist/
	@ls dist/koji-rekor-*$(VERSION)-1.*.rpm

clean:
	rm -rf build dist mutants

mutation-v2:
	$(MAKE) mutation MUTATE="$(MUTATE_V2)" MUTATION_FLOOR=65
