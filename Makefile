# Developer entry points; see README.md.
PYTHON ?= python3

VERSION := $(shell sed -n "s/^__version__ = '\\(.*\\)'/\\1/p" rekor_log.py)
RPMTOP := $(CURDIR)/build/rpm
SOURCES := rekor_log.py koji_rekor.py rekor_log.conf README.md LICENSE systemd

.PHONY: setup test demo rpm clean

setup:
	bash .ci/setup

test: setup
	$(PYTHON) -m pytest -q

demo: setup
	$(PYTHON) tests/demo.py

# dist/koji-rekor-<version>-<release>.noarch.rpm from the working tree.
rpm:
	rm -rf $(RPMTOP) && mkdir -p $(RPMTOP)/SOURCES dist
	tar -czf $(RPMTOP)/SOURCES/koji-rekor-$(VERSION).tar.gz \
	    --transform 's,^,koji-rekor-$(VERSION)/,' $(SOURCES)
	rpmbuild -bb --define "_topdir $(RPMTOP)" --define "version_from_source $(VERSION)" \
	    --define "_rpmfilename %%{NAME}-%%{VERSION}-%%{RELEASE}.%%{ARCH}.rpm" \
	    --dbpath $(RPMTOP)/db koji-rekor.spec
	cp $(RPMTOP)/RPMS/koji-rekor-$(VERSION)-*.noarch.rpm dist/
	@ls dist/koji-rekor-$(VERSION)-*.noarch.rpm

clean:
	rm -rf build dist
