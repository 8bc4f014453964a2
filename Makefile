# DiskCache Operator — make targets. `make help` lists them.
SHELL := /usr/bin/env bash
GO ?= go
PYTHON ?= /usr/bin/python3
BIN ?= $(CURDIR)/bin
# The Go tests run under the race detector: the engine, the server and the
# operator are full of goroutines (group commit, checkpoints, frames,
# forwarding, reconcilers). GOTEST_FLAGS=-count=1 runs them without it.
GOTEST_FLAGS ?= -race -count=1
# cgo is required by the engine (and so the cache server), which links SQLite
# through mattn/go-sqlite3. The client and the operator must build without it:
# `make lint` checks that (CGO_FREE).
export CGO_ENABLED = 1
CGO_FREE ?= ./kv/... ./settings/... ./client/... ./cmd/manager/...

.PHONY: help
help: ## List targets.
	@grep -E '^[a-zA-Z0-9_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-16s %s\n", $$1, $$2}'

.PHONY: build
build: ## Build every package and binary.
	$(GO) build ./...

.PHONY: lint
lint: ## gofmt, go vet, and the client and operator building without cgo.
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	CGO_ENABLED=0 $(GO) build $(CGO_FREE)

.PHONY: test
test: lint test-go test-python test-e2e ## Run every test this machine can run; the last line says whether the e2e suite ran.
	@if [ "$$(cat $(E2E_RESULT) 2>/dev/null)" = ran ]; then echo "make test: PASS (lint, Go, Python, e2e)"; \
	else echo "make test: PASS (lint, Go, Python); e2e $$(cat $(E2E_RESULT) 2>/dev/null || echo 'did not report')"; fi

.PHONY: test-go
test-go: ## Go tests.
	PYTHON=$(PYTHON) $(GO) test $(GOTEST_FLAGS) ./...

# Django releases the Python tests run under: 3.2 is Debian 12's
# python3-django, the others pinned .debs (hack/django/pins.txt).
DJANGO_SERIES ?= 3.2 4.2 5.2

.PHONY: test-python
test-python: ## Python client (Django backend) tests against a real cacheserver, once per Django in DJANGO_SERIES.
	PYTHON=$(PYTHON) GO=$(GO) bash hack/test-python.sh $(DJANGO_SERIES)

# The fuzz targets of the cache server (cacheserver/*_test.go; PKG:Target
# for another package's); their seed corpora run as ordinary tests in test-go.
FUZZ_TARGETS ?= FuzzOpenAPI FuzzKeyRoutes FuzzBatchBodies FuzzNames FuzzCacheQueuesAndKeys FuzzFrames FuzzIndexCursor ./internal/frames/:FuzzAnswerFrames ./engine/:FuzzExclusiveLog
FUZZTIME ?= 60s
FUZZ_WORKERS ?= 1

.PHONY: fuzz
fuzz: ## Fuzz the cache server for FUZZTIME per target (FUZZ_TARGETS, FUZZ_WORKERS processes each); FuzzOpenAPI is the probe suite over every route of docs/api/openapi.yaml.
	@for t in $(FUZZ_TARGETS); do \
		case $$t in *:*) pkg=$${t%%:*}; t=$${t#*:};; *) pkg=./cacheserver/;; esac; \
		echo "fuzz: $$t ($$pkg) for $(FUZZTIME)"; \
		$(GO) test -run '^$$' -fuzz "^$$t\$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 10s -parallel $(FUZZ_WORKERS) $$pkg || exit 1; \
	done

.PHONY: bench
bench: ## Engine benchmark next to raw SQLite and python-diskcache (see docs/benchmarks.md).
	PYTHON=$(PYTHON) $(GO) run ./hack/bench/engine


.PHONY: serve
serve: ## Start a cacheserver on .cache/demo with a generated token and show a curl round trip.
	bash hack/run-cacheserver.sh

##@ Operator (api/, controllers/, config/)
VERSION ?= v0.1.0
IMG ?= ghcr.io/diskcache-operator/diskcache-operator:$(VERSION)
# kubectl: the one on PATH, else the one `make kubectl` builds into bin/.
ifeq ($(origin KUBECTL),undefined)
KUBECTL := $(or $(shell command -v kubectl 2>/dev/null),$(BIN)/kubectl)
endif
CONTROLLER_GEN ?= $(BIN)/controller-gen
HELM ?= $(BIN)/helm
# helm reports the version pinned in hack/tools/helm/go.mod.
HELM_VERSION = $(shell awk '$$1 == "helm.sh/helm/v4" { print $$2 }' hack/tools/helm/go.mod)
CHART = charts/diskcache-operator
ENVTEST_ASSETS ?= $(BIN)/envtest
CONTROLLER_GEN_CRD = $(CONTROLLER_GEN) rbac:roleName=manager-role crd paths=./api/... paths=./controllers/...
CONTROLLER_GEN_OBJ = $(CONTROLLER_GEN) object:headerFile=hack/boilerplate.go.txt paths=./api/...

# The Go tests need the envtest control plane and up-to-date generated files.
test-go: envtest verify-generated
test-go: export KUBEBUILDER_ASSETS = $(ENVTEST_ASSETS)
# ... and helm for the chart tests (controllers/chart_test.go).
test-go: $(HELM)
test-go: export HELM := $(HELM)

.PHONY: kubectl
kubectl: ## Build kubectl from Go modules into bin/kubectl (cached), for machines without one.
	@bash hack/kubectl.sh $(BIN) >/dev/null

.PHONY: envtest
envtest: ## Build etcd and kube-apiserver for envtest from Go modules into bin/envtest (cached).
	@bash hack/envtest.sh $(ENVTEST_ASSETS) >/dev/null

$(CONTROLLER_GEN): hack/tools/controller-gen/go.mod hack/tools/controller-gen/go.sum
	cd hack/tools/controller-gen && $(GO) build -o $(CONTROLLER_GEN) sigs.k8s.io/controller-tools/cmd/controller-gen

.PHONY: controller-gen
controller-gen: $(CONTROLLER_GEN) ## Build controller-gen (pinned in hack/tools/controller-gen).

$(HELM): hack/tools/helm/go.mod hack/tools/helm/go.sum
	cd hack/tools/helm && $(GO) build -ldflags "-X helm.sh/helm/v4/internal/version.version=$(HELM_VERSION)" -o $(HELM) helm.sh/helm/v4/cmd/helm

.PHONY: helm
helm: $(HELM) ## Build helm (pinned in hack/tools/helm) into bin/.

.PHONY: chart
chart: ## Copy the CRD and RBAC files of config/ into the Helm chart (charts/diskcache-operator); make manifests does it too.
	cp config/crd/bases/cache.diskcache.dev_diskcaches.yaml $(CHART)/crds/
	cp config/rbac/role.yaml config/rbac/leader_election_role.yaml config/rbac/diskcache_*_role.yaml config/rbac/metrics_*_role.yaml $(CHART)/files/

.PHONY: manifests
manifests: $(CONTROLLER_GEN) ## Generate the CRD (config/crd/bases) and ClusterRole (config/rbac/role.yaml), and copy them into the Helm chart.
	$(CONTROLLER_GEN_CRD) output:crd:artifacts:config=config/crd/bases output:rbac:artifacts:config=config/rbac
	@$(MAKE) --no-print-directory chart

.PHONY: generate
generate: $(CONTROLLER_GEN) ## Generate DeepCopy methods (api/v1alpha1/zz_generated.deepcopy.go).
	$(CONTROLLER_GEN_OBJ)

.PHONY: verify-generated
verify-generated: $(CONTROLLER_GEN) ## Fail when the generated files are stale (run `make manifests generate`).
	@CONTROLLER_GEN="$(CONTROLLER_GEN)" bash hack/verify-generated.sh

.PHONY: build-manager
build-manager: ## Build bin/manager.
	$(GO) build -ldflags "-X main.version=$(VERSION)" -o $(BIN)/manager ./cmd/manager

.PHONY: run
run: manifests generate ## Run the operator against the current kubeconfig (install the CRD first).
	$(GO) run -ldflags "-X main.version=$(VERSION)" ./cmd/manager --metrics-bind-address=0 --health-probe-bind-address=:8081

# The version the image's binaries report and its version label: the tag of
# IMG, as hack/image/build.sh takes it, so that `make docker-build
# IMG=registry/op:v2` builds a v2 whatever VERSION says; latest, as docker
# tags it, when IMG has none (the colon of registry:5000/op is a port's).
IMG_LAST_PART = $(lastword $(subst :, ,$(IMG)))
IMG_VERSION = $(if $(and $(findstring :,$(IMG)),$(if $(findstring /,$(IMG_LAST_PART)),,tagged)),$(IMG_LAST_PART),latest)

.PHONY: docker-build
docker-build: ## Build the image $(IMG) (both binaries) with docker (BuildKit); its version is the tag of IMG.
	docker build --build-arg VERSION=$(IMG_VERSION) -t $(IMG) .

.PHONY: docker-push
docker-push: ## Push the image $(IMG) with docker (after make docker-build).
	docker push $(IMG)

.PHONY: build-installer
build-installer: manifests generate ## Write dist/install.yaml: CRD, RBAC and the operator Deployment for image $(IMG).
	@IMG="$(IMG)" KUBECTL="$(KUBECTL)" bash hack/build-installer.sh dist/install.yaml
	@echo "wrote dist/install.yaml for $(IMG)"

.PHONY: install
install: manifests ## Install the CRD into the cluster of the current kubeconfig.
	$(KUBECTL) kustomize config/crd | $(KUBECTL) apply --server-side --force-conflicts -f -

.PHONY: uninstall
uninstall: manifests ## Remove the CRD (and so every DiskCache) from the cluster.
	$(KUBECTL) kustomize config/crd | $(KUBECTL) delete --ignore-not-found -f -

.PHONY: deploy
deploy: build-installer ## Deploy the operator (image $(IMG)) to the cluster of the current kubeconfig.
	$(KUBECTL) apply --server-side --force-conflicts -f dist/install.yaml

.PHONY: undeploy
undeploy: build-installer ## Remove the operator, its RBAC and the CRD from the cluster.
	$(KUBECTL) delete --ignore-not-found -f dist/install.yaml

.PHONY: bench-server
bench-server: ## cacheserver vs redis-server (AOF on) GET/SET throughput, latency and server CPU per request; installs redis via apt-get if missing (see docs/benchmarks.md). Flags: BENCH_SERVER_ARGS="-conns 1,64 -rounds 3 -json server.json".
	$(GO) run ./hack/bench/server $(BENCH_SERVER_ARGS)

.PHONY: bench-listing
bench-listing: ## Listing keys a page at a time (GET /v1/keys, django-redis's keys/iter_keys/delete_pattern) next to Redis's SCAN on the same keys; installs redis via apt-get if missing. Flags: BENCH_LISTING_ARGS="-keys 100000 -count 1000 -rounds 3 -json listing.json".
	$(GO) run ./hack/bench/listing $(BENCH_LISTING_ARGS)

.PHONY: bench-routing
bench-routing: ## Routing between shards: a forwarded request vs a direct one, 1/2/3 shards through one URL vs a smart client, next to redis-server; installs redis via apt-get if missing (see docs/benchmarks.md). Flags: BENCH_ROUTING_ARGS="-duration 5s -json routing.json".
	$(GO) run ./hack/bench/routing $(BENCH_ROUTING_ARGS)

.PHONY: bench-rebalance
bench-rebalance: ## Changing the shard count: MiB/s moved from one shard to a new one (1 -> 2) per value size and --rebalance-rate, and GET/SET throughput and latency before, during and after the move (see docs/benchmarks.md). Flags: BENCH_REBALANCE_ARGS="-duration 5s -json rebalance.json".
	$(GO) run ./hack/bench/rebalance $(BENCH_REBALANCE_ARGS)

.PHONY: bench-scrape
bench-scrape: ## What Prometheus scrapes cost data requests: GET latency with 32 scrapers of /metrics, with and without --metrics-interval (see docs/benchmarks.md).
	$(GO) run ./hack/bench/scrape $(BENCH_SCRAPE_ARGS)

.PHONY: bench-django
bench-django: ## Django cache backends (this one on one server and on three shards, forwarding and smart client; python-diskcache, django-redis, memcached) on python-diskcache's DjangoCache workload; apt-get installs what is missing (see docs/benchmarks.md). Flags: BENCH_DJANGO_ARGS="--ops 2000 --rounds 1"; "--server-cpus 1" runs the servers on CPU 1 and the clients on the others, as in a deployment.
	GO=$(GO) $(PYTHON) hack/bench/django/bench.py $(BENCH_DJANGO_ARGS)

BENCH_DIR ?= docs/benchmarks

.PHONY: bench-json
bench-json: ## Run bench, bench-server (1-64 connections), bench-django (also with the servers on a CPU of their own), bench-routing and bench-rebalance, 3 rounds each where they take rounds, writing JSON and markdown tables into $(BENCH_DIR) (10-15 minutes; then make bench-plots).
	mkdir -p $(BENCH_DIR)
	PYTHON=$(PYTHON) $(GO) run ./hack/bench/engine -systems engine,engine-server,raw,python -json $(BENCH_DIR)/engine.json > $(BENCH_DIR)/engine.md
	$(GO) run ./hack/bench/server -conns 1,4,16,64 -sizes 100 -rounds 3 -json $(BENCH_DIR)/server.json > $(BENCH_DIR)/server.md
	GO=$(GO) $(PYTHON) hack/bench/django/bench.py --rounds 3 --json $(BENCH_DIR)/django.json > $(BENCH_DIR)/django.md
	GO=$(GO) $(PYTHON) hack/bench/django/bench.py --rounds 3 --backends cacheserver,django-redis --server-cpus $$(($$(nproc) - 1)) --json $(BENCH_DIR)/django-separate-cpus.json > $(BENCH_DIR)/django-separate-cpus.md
	$(GO) run ./hack/bench/routing -json $(BENCH_DIR)/routing.json > $(BENCH_DIR)/routing.md
	$(GO) run ./hack/bench/rebalance -json $(BENCH_DIR)/rebalance.json > $(BENCH_DIR)/rebalance.md

.PHONY: bench-plots
bench-plots: ## Draw the plots of docs/benchmarks.md ($(BENCH_DIR)/*.png) from the JSON that bench-json wrote, with Debian's python3-matplotlib (apt-get installs it if missing).
	$(PYTHON) -c 'import matplotlib' 2>/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3-matplotlib
	$(PYTHON) hack/bench/plots/plots.py --dir $(BENCH_DIR)

##@ Local cluster (hack/local-cluster, hack/image): a real single-node Kubernetes without Docker
LOCAL_CLUSTER_DIR ?= $(CURDIR)/.cache/local-cluster
LOCAL_CLUSTER = LOCAL_CLUSTER_DIR="$(LOCAL_CLUSTER_DIR)" IMG="$(IMG)" GO="$(GO)" bash hack/local-cluster/local-cluster.sh

.PHONY: cluster-up
cluster-up: ## Start the local cluster (installs/builds what is missing; KUBECONFIG=$(LOCAL_CLUSTER_DIR)/kubeconfig).
	@$(LOCAL_CLUSTER) up

.PHONY: cluster-down
cluster-down: ## Stop the local cluster and its pods (state kept).
	@$(LOCAL_CLUSTER) down

.PHONY: cluster-purge
cluster-purge: ## Stop the local cluster and delete its state (ALL=1: the built binaries and images too).
	@$(LOCAL_CLUSTER) purge $(if $(ALL),--all)

.PHONY: cluster-status
cluster-status: ## Show what of the local cluster runs.
	@$(LOCAL_CLUSTER) status

.PHONY: cluster-smoke
cluster-smoke: ## Smoke-test the running local cluster: a StatefulSet+PVC+Service of the project image, reached by DNS from a pod.
	@$(LOCAL_CLUSTER) smoke

.PHONY: images
images: ## Build image $(IMG) (/manager, /cacheserver) without Docker; import it into the local cluster when it runs.
	@$(LOCAL_CLUSTER) images project toolbox

.PHONY: demo
demo: ## Fresh clone to a running DiskCache: local cluster, images, operator from config/default, config/samples, set/get.
	@LOCAL_CLUSTER_DIR="$(LOCAL_CLUSTER_DIR)" IMG="$(IMG)" GO="$(GO)" bash hack/local-cluster/demo.sh

.PHONY: demo-down
demo-down: ## Stop the demo's local cluster (make cluster-purge deletes its state).
	@$(LOCAL_CLUSTER) down

.PHONY: e2e
e2e: ## End-to-end tests (test/e2e, build tag e2e) on the local cluster: cluster-up, images (+ the django image), operator from config/default (E2E_INSTALL=helm: from the Helm chart), then go test.
	@$(MAKE) --no-print-directory cluster-up images
	@$(LOCAL_CLUSTER) images django
	@LOCAL_CLUSTER_DIR="$(LOCAL_CLUSTER_DIR)" KUBECONFIG="$(LOCAL_CLUSTER_DIR)/kubeconfig" IMG="$(IMG)" bash test/e2e/install-operator.sh
	LOCAL_CLUSTER_DIR="$(LOCAL_CLUSTER_DIR)" KUBECONFIG="$(LOCAL_CLUSTER_DIR)/kubeconfig" IMG="$(IMG)" E2E_SKIP_INSTALL=1 \
		$(GO) test -tags e2e -count=1 -timeout 30m $(E2E_FLAGS) ./test/e2e/...

# test-e2e records whether the suite ran, for the summary line of make test.
E2E_RESULT = $(BIN)/.test-e2e-result

.PHONY: test-e2e
test-e2e: ## make e2e when this machine can host the local cluster (make test runs it; DISKCACHE_REQUIRE_E2E=1 fails instead of skipping); a cluster it started is stopped afterwards.
	@mkdir -p $(BIN); rm -f $(E2E_RESULT); \
	if ! why=$$($(LOCAL_CLUSTER) preflight); then \
		if [ -n "$$DISKCACHE_REQUIRE_E2E" ]; then echo "test-e2e: FAIL: DISKCACHE_REQUIRE_E2E is set, but $$why" >&2; exit 1; fi; \
		echo "test-e2e: SKIPPED: $$why"; echo "SKIPPED: $$why" >$(E2E_RESULT); exit 0; \
	fi; \
	was_up=$$($(LOCAL_CLUSTER) status 2>/dev/null | grep -c '^kube-apiserver *running' || true); \
	status=0; $(MAKE) --no-print-directory e2e || status=$$?; \
	if [ "$$was_up" = 0 ]; then $(LOCAL_CLUSTER) down >/dev/null 2>&1 || true; fi; \
	if [ $$status = 0 ]; then echo ran >$(E2E_RESULT); fi; \
	exit $$status
