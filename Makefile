# Two commands do all the set-up on a fresh Debian 12 machine, as root:
#   make sandbox   install what is needed, then run a node in the foreground (core0 sandbox)
#   make test      install what is needed, then run the whole test suite
VENV ?= .venv
PY := $(VENV)/bin/python
APT_PACKAGES := redis-server nftables iproute2 fuse3 libfuse3-dev pkg-config procps util-linux psmisc \
	parted fdisk btrfs-progs e2fsprogs xfsprogs dosfstools

.PHONY: setup system-packages sandbox test lint bench clean

system-packages:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test]"
	touch $@

setup: system-packages $(VENV)/.installed

sandbox: setup
	$(VENV)/bin/core0 sandbox

test: setup
	$(VENV)/bin/pytest

lint: setup
	$(VENV)/bin/ruff check .

bench: setup
	$(PY) -m bench

clean:
	rm -rf $(VENV) build *.egg-info
