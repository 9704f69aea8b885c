# apikeyd — the two commands a new user runs: `make run` and `make test`.
SHELL := /bin/bash
SWIFT ?= swift
DATA_DIR ?= ./data
VENV := .venv
SYSTEM_PACKAGES := libprotobuf-c-dev protobuf-c-compiler libssl-dev libsqlite3-dev pkg-config openssl nginx-light postgresql sqlite3 systemd chromium fonts-dejavu-core

.PHONY: run test bench bench-deployment bench-replicas bench-policies bench-stages chaos fuzz format deps interop-env codegen codegen-check build clean

## Build the server and the CLI (release) and run the server on 127.0.0.1:7411 (RPC) and
## 127.0.0.1:7413 (the JSON admin API), data in $(DATA_DIR).
run: deps
	$(SWIFT) build -c release --product apikeyd
	$(SWIFT) build -c release --product apikey
	@echo "apikeyd: RPC on 127.0.0.1:7411; admin API on http://127.0.0.1:7413 (described at /openapi.json; Authorization: Bearer <the token in $(DATA_DIR)/admin.token>)"
	$$($(SWIFT) build -c release --show-bin-path)/apikeyd --data-dir $(DATA_DIR) --admin-port 7413

## Run every test: generated-code check, the Swift suites (with the protobuf interop check), the
## admin API against its OpenAPI document (schemathesis), the web console in chromium (Playwright;
## its screenshots written to docs/console), a 60 s fuzz run of the wire layer, and
## the fast variant of the hostile-peer battery. Fails when any Swift test or chaos check was
## skipped (a missing prerequisite is a failure, not a pass). Every apikeyd it starts runs in
## SwiftNIO's strict mode: work scheduled on an event loop that has shut down crashes it.
test: export SWIFTNIO_STRICT = 1
test: deps interop-env codegen-check
	$(SWIFT) build --build-tests
	Tests/postgres/with-cluster.sh env APIKEYS_INTEROP_PYTHON=$(CURDIR)/$(VENV)/bin/python SWIFT=$(SWIFT) \
	  Tests/swift-test.sh --skip FailoverTests --skip aPeerThatNeverReadsStopsBeingReadFrom --skip MemoryTests
	# The failover tests start clusters and streaming standbys, and the never-reading HTTP peer makes
	# the server parse megabytes: on their own, not beside the timing-sensitive suites.
	Tests/postgres/with-cluster.sh env SWIFT=$(SWIFT) Tests/swift-test.sh --filter 'FailoverTests|aPeerThatNeverReadsStopsBeingReadFrom'
	# The leak check measures the process's resident set: alone, or the other suites' allocations
	# count against it (once 34 MB in each phase beside them, against its 32 MB bound).
	SWIFT=$(SWIFT) Tests/swift-test.sh --filter MemoryTests
	APIKEYS_INTEROP_PYTHON=$(CURDIR)/$(VENV)/bin/python \
	  Tests/admin-api/schemathesis.sh "$$($(SWIFT) build --show-bin-path)/apikeyd" 25
	Tests/packaging/verify-unit.sh "$$($(SWIFT) build --show-bin-path)/apikeyd"
	$(VENV)/bin/python Tests/console/console_test.py "$$($(SWIFT) build --show-bin-path)" --screenshots docs/console
	APIKEYS_INTEROP_PYTHON=$(CURDIR)/$(VENV)/bin/python fuzz/run.sh --seconds 60
	$(VENV)/bin/python Tests/chaos/chaos.py "$$($(SWIFT) build --show-bin-path)/apikeyd" --fast

## The hostile-peer battery against a release server (about 20 minutes): 10^7 fuzz inputs, then
## never-reading clients, slowloris at the connection limit, garbage storms on both ports, the admin
## authorization matrix, the revocation race, kill -9 cycles, a full disk and a 10-minute soak.
chaos: deps interop-env
	$(SWIFT) build -c release --product apikeyd
	APIKEYS_INTEROP_PYTHON=$(CURDIR)/$(VENV)/bin/python fuzz/run.sh --runs 10000000
	$(VENV)/bin/python Tests/chaos/chaos.py "$$($(SWIFT) build -c release --show-bin-path)/apikeyd"

## Fuzz the wire layer with libFuzzer and the address sanitizer: 10^7 inputs (FUZZ_RUNS=N for more).
fuzz: deps interop-env
	APIKEYS_INTEROP_PYTHON=$(CURDIR)/$(VENV)/bin/python fuzz/run.sh --runs $${FUZZ_RUNS:-10000000}

## Benchmarks (not tests): apikeyd vs Redis on this machine, as ratios; see docs/PERFORMANCE.md.
bench: deps
	bench/run.sh

## Benchmarks (not tests): what TLS, metrics, forward-auth through nginx and a busy admin API cost, as ratios.
bench-deployment: deps
	bench/deployment.sh

## Benchmarks (not tests): apikeyd on PostgreSQL (revocation propagation, checks/s and CreateKey/s
## against SQLite, three replicas auditing every check into one database, start-up at 1M keys), with a
## throwaway cluster.
bench-replicas: deps
	bench/replicas.sh

## Benchmarks (not tests): what the key policies cost the check path (an allowlist on vs off), as ratios.
bench-policies: deps
	bench/policies.sh

## Time and heap allocations per check of each stage of the RPC Check and HTTP /authorize paths (issue 30).
bench-stages:
	bench/stages.sh

## Format the hand-written Swift (generated code is left alone) with the toolchain's swift-format.
format:
	$(SWIFT) format --in-place --configuration .swift-format $$(git ls-files 'Sources/*.swift' 'Tests/*.swift' Package.swift | grep -v -e CAPIKeysProto -e APIKeysWire/Generated)

## Install the system packages the build and tests need, when missing. Services the packages
## would start (nginx) are kept from starting (policy-rc.d): the tests run their own instances.
deps:
	@missing=""; for p in $(SYSTEM_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" != 0 ]; then \
	    echo "apikeyd needs these Debian packages:$$missing"; \
	    echo "run as root, or: sudo apt-get update && sudo apt-get install -y$$missing"; exit 1; \
	  fi; \
	  echo "installing:$$missing"; \
	  policy=""; if [ ! -e /usr/sbin/policy-rc.d ]; then \
	    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && policy=1; \
	  fi; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq$$missing >/dev/null; status=$$?; \
	  if [ -n "$$policy" ]; then rm -f /usr/sbin/policy-rc.d; fi; \
	  exit $$status; \
	fi

## A Python virtualenv with the official protobuf runtime and protoc, for the interop tests,
## schemathesis, for the admin API's contract test, and Playwright, which drives Debian's chromium
## for the console's tests (no browser download: `playwright install` is never run).
interop-env: $(VENV)/.ready-4
$(VENV)/.ready-4:
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet protobuf grpcio-tools prometheus_client 'schemathesis>=4,<5' 'playwright>=1.50,<2'
	touch $@

## Regenerate the code made from proto/: Sources/CAPIKeysProto (protoc-c) and Sources/APIKeysWire/Generated.
codegen: deps interop-env
	codegen/generate.sh

## Fail when any generated code is stale.
codegen-check: deps interop-env
	codegen/generate.sh --check

build: deps
	$(SWIFT) build

clean:
	rm -rf .build fuzz/.build fuzz/.deps $(VENV)
