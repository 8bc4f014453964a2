# DiskCache Operator — make targets. `make help` lists them.
SHELL := /usr/bin/env bash
GO ?= go
PYTHON ?= /usr/bin/python3
BIN ?= $(CURDIR)/bin
GOTEST_FLAGS ?= -count=1
# cgo is required: the engine links SQLite through mattn/go-sqlite3.
export CGO_ENABLED = 1

.PHONY: help
help: ## List targets.
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-16s %s\n", $$1, $$2}'

.PHONY: build
build: ## Build every package and binary.
	$(GO) build ./...

.PHONY: lint
lint: ## gofmt and go vet.
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

.PHONY: test
test: lint test-go test-python ## Run every test this machine can run.

.PHONY: test-go
test-go: ## Go tests.
	PYTHON=$(PYTHON) $(GO) test $(GOTEST_FLAGS) ./...

.PHONY: test-python
test-python: ## Python client (Django backend) tests against a real cacheserver.
	cd clients/python && $(PYTHON) -m pytest -q tests

.PHONY: bench
bench: ## Engine benchmark next to raw SQLite and python-diskcache (see docs/benchmarks.md).
	PYTHON=$(PYTHON) $(GO) run ./hack/bench/engine

.PHONY: bench-server
bench-server: ## cacheserver GET/SET throughput and latency on loopback next to redis-benchmark (see docs/benchmarks.md).
	$(GO) run ./hack/bench/server

.PHONY: serve
serve: ## Start a cacheserver on .cache/demo with a generated token and show a curl round trip.
	bash hack/run-cacheserver.sh
