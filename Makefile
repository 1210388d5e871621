# Each of demo, test and bench does all set-up on a fresh Debian 12 machine (run as root).
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
BUILD := build
STAMPS := $(BUILD)/stamps
BIN := $(CURDIR)/$(BUILD)/bin
APT_PACKAGES := golang-go gcc libc6-dev musl-tools busybox-static strace iproute2 iptables \
	dnsmasq-base curl wrk make python3-venv rsync
# HYPOTHESIS_PROFILE=long for the thorough property runs; the default profile keeps `make test` short.
PYTEST_ARGS ?=

.PHONY: all setup apt venv bytecode examples test demo bench lint clean

all: setup

setup: apt venv bytecode examples

apt: $(STAMPS)/apt
$(STAMPS)/apt:
	@mkdir -p $(STAMPS)
	# one apt at a time on this machine (several checkouts may set up at once)
	flock /var/lock/mirrord-trace-apt.lock sh -c 'apt-get update && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $(APT_PACKAGES)'
	@touch $@

venv: $(STAMPS)/venv
$(STAMPS)/venv: pyproject.toml | $(STAMPS)/apt
	@mkdir -p $(STAMPS)
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# compat mode: a plain .pth path entry; the default import hook costs start-up time
	$(PY) -m pip install --quiet -e '.[dev]' --config-settings editable_mode=compat
	@touch $@

# pip compiles what it installs, but not this editable checkout, and with PYTHONDONTWRITEBYTECODE
# set nothing ever caches it: every run would compile the project again (~40 ms of the start-up
# `exec -- /bin/true` benchmark). Only changed files are recompiled, so this runs every time.
bytecode: $(STAMPS)/venv
	$(PY) -m compileall -q mirrord_trace agent seccomp

examples: $(STAMPS)/apt
	$(MAKE) -C examples OUT=$(BIN)

test: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pytest $(PYTEST_ARGS)

demo: setup
	$(PY) -m examples.demo

bench: setup
	$(PY) -m benchmarks --json $(BUILD)/bench-results.json

lint: venv
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(BUILD) $(VENV)
