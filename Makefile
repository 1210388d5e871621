# Each of demo, test and bench does all set-up on a fresh Debian 12 machine (run as root).
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
BUILD := build
STAMPS := $(BUILD)/stamps
BIN := $(CURDIR)/$(BUILD)/bin
APT_PACKAGES := golang-go gcc libc6-dev musl-tools busybox-static strace gdb iproute2 iptables \
	dnsmasq-base curl wrk make python3-venv rsync \
	containerd runc containernetworking-plugins docker-registry openssl conntrack \
	debootstrap skopeo nghttp2-client nghttp2-server git
# HYPOTHESIS_PROFILE=long for the thorough property runs; the default profile keeps `make test` short.
PYTEST_ARGS ?=

# delve from its Go module (Debian's 1.20 predates the Go here); the debugger tests use it.
DLV_VERSION := v1.27.2

.PHONY: all setup apt venv bytecode examples dlv test demo bench lint clean cluster cluster-bin \
	cluster-down agent-image agent-image-push

all: setup

setup: apt venv bytecode examples dlv

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

dlv: $(BIN)/dlv
$(BIN)/dlv: | $(STAMPS)/apt
	@mkdir -p $(BIN)
	env GOPROXY=https://proxy.golang.org GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-modcacherw \
		GOBIN=$(BIN) GOPATH=$(CURDIR)/$(BUILD)/go-path GOCACHE=$(CURDIR)/$(BUILD)/go-cache \
		go install github.com/go-delve/delve/cmd/dlv@$(DLV_VERSION)

# The agent image as an OCI archive (docs/kubernetes.md#the-agent-image): debootstrap's tree and
# the base layer are cached under build/agent-image/cache, so only the first build downloads.
AGENT_IMAGE := $(BUILD)/agent-image/agent.oci.tar
agent-image: setup
	$(VENV)/bin/mirrord-trace agent-image build --output $(AGENT_IMAGE) \
		--cache-dir $(BUILD)/agent-image/cache

# make agent-image-push AGENT_IMAGE_REF=127.0.0.1:5000/mirrord-trace/agent:0.1.0
agent-image-push: agent-image
	@test -n "$(AGENT_IMAGE_REF)" || { echo "set AGENT_IMAGE_REF=REGISTRY/NAME:TAG" >&2; exit 2; }
	$(VENV)/bin/mirrord-trace agent-image push $(AGENT_IMAGE_REF) --archive $(AGENT_IMAGE)

test: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pytest $(PYTEST_ARGS)

demo: setup
	$(PY) -m examples.demo

bench: setup
	$(PY) -m benchmarks --json $(BUILD)/bench-results.json

lint: venv
	$(VENV)/bin/ruff check .

# The end-to-end tests' Kubernetes cluster (tests/cluster): upstream Kubernetes, etcd and
# CoreDNS built from Go modules (Go >= 1.24: the machine's /usr/local/go, not Debian's 1.19) into
# build/cluster-bin; Go's own cache (~/.cache/go-build) makes a fresh clone's rebuild quick.
CLUSTER_BIN := $(BUILD)/cluster-bin
CLUSTER_GO ?= $(firstword $(wildcard /usr/local/go/bin/go) go)
CLUSTER_GO_BUILD := env CGO_ENABLED=0 GOFLAGS=-buildvcs=false GOTOOLCHAIN=local \
	$(CLUSTER_GO) build -trimpath

# The release the binary reports (kubectl version, the node's kubeletVersion): stamped at link
# time as upstream's build does; it must match k8s.io/kubernetes in cluster/go.mod.
KUBE_RELEASE := v1.34.4
KUBE_VERSION_PKG := k8s.io/component-base/version
KUBE_LDFLAGS := -X $(KUBE_VERSION_PKG).gitVersion=$(KUBE_RELEASE) -X $(KUBE_VERSION_PKG).gitMajor=1 \
	-X $(KUBE_VERSION_PKG).gitMinor=34 -X $(KUBE_VERSION_PKG).gitTreeState=clean

cluster-bin: $(CLUSTER_BIN)/kube $(CLUSTER_BIN)/coredns $(CLUSTER_BIN)/pause

$(CLUSTER_BIN)/kube: cluster/go.mod cluster/go.sum $(wildcard cluster/cmd/kube/*.go)
	cd cluster && $(CLUSTER_GO_BUILD) -ldflags='-s -w $(KUBE_LDFLAGS)' -o $(CURDIR)/$@ ./cmd/kube

$(CLUSTER_BIN)/pause: cluster/go.mod $(wildcard cluster/cmd/pause/*.go)
	cd cluster && $(CLUSTER_GO_BUILD) -ldflags='-s -w' -o $(CURDIR)/$@ ./cmd/pause

$(CLUSTER_BIN)/coredns: cluster/coredns/go.mod cluster/coredns/go.sum cluster/coredns/main.go
	cd cluster/coredns && $(CLUSTER_GO_BUILD) -ldflags='-s -w' -o $(CURDIR)/$@ .

cluster: cluster-bin $(STAMPS)/venv
	$(PY) -m tests.cluster.up

cluster-down: $(STAMPS)/venv
	$(PY) -m tests.cluster.down

clean:
	rm -rf $(BUILD) $(VENV)
