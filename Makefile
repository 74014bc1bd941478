# order-pipeline developer entry points. `make run` and `make test` do all set-up themselves.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# Downloads and builds live outside the repo, keyed by version, and are reused.
export ORDER_PIPELINE_CACHE ?= $(HOME)/.cache/order-pipeline
UV_VERSION := 0.13.8
UV_HOME := $(ORDER_PIPELINE_CACHE)/uv-$(UV_VERSION)
UV := $(UV_HOME)/bin/uv
VENV := .venv
PY := $(VENV)/bin/python
API_PORT ?= 8000

.PHONY: help venv lock generate dashboards debian-packages run engines test test-fast lint fuzz bench chaos operator cluster-up kube-demo cluster-down images clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s $$'\t'

$(UV):
	python3 -m venv $(UV_HOME)
	$(UV_HOME)/bin/pip install --quiet uv==$(UV_VERSION)

# The lock is a hashed requirements file: exact versions, no index addresses.
$(VENV)/.synced: $(UV) pyproject.toml requirements.lock
	$(UV) venv --quiet --allow-existing --python python3 $(VENV)
	VIRTUAL_ENV=$(VENV) $(UV) pip sync --quiet --require-hashes requirements.lock
	VIRTUAL_ENV=$(VENV) $(UV) pip install --quiet --no-deps --editable .
	touch $@

venv: $(VENV)/.synced  ## create the virtualenv from the lock file

# The runtime lock (what the images install) is resolved within the dev lock: the same pins.
lock: $(UV)  ## re-resolve requirements.lock and requirements-runtime.lock from pyproject.toml
	$(UV) pip compile --quiet pyproject.toml --group dev --generate-hashes --universal \
	  --python-version 3.11 --no-header -o requirements.lock
	$(UV) pip compile --quiet pyproject.toml --generate-hashes --universal \
	  --python-version 3.11 --no-header -c requirements.lock -o requirements-runtime.lock

# ElasticMQ runs on the JRE (resolved with Maven); Dynoxide runs with jemalloc preloaded;
# Prometheus and promtool check the shipped rules and dashboards; buildah and mmdebstrap build
# the images; containerd, runc, the CNI plugins, iptables and nftables run the test cluster's
# real node, whose pause image gcc links statically.
DEBIAN_PACKAGES := libjemalloc2 prometheus buildah mmdebstrap containerd runc \
  containernetworking-plugins iptables nftables iproute2 gcc libc6-dev
debian-packages:  ## install what the engines, images and test cluster need from Debian if missing
	@missing=$$(command -v java >/dev/null && command -v mvn >/dev/null || \
	  echo openjdk-17-jre-headless maven; \
	  for package in $(DEBIAN_PACKAGES); do \
	    dpkg-query -W -f='$${db:Status-Status}' $$package 2>/dev/null | grep -qx installed || \
	      echo $$package; \
	  done); \
	[ -z "$$missing" ] || { apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; }

# TRACING=1 also starts Jaeger (built once with Go into the cache, docs/tracing.md) and sends both
# services' traces to it.
run: venv debian-packages  ## start engines, API and processor locally (TRACING=1: and Jaeger; Ctrl-C stops all)
	API_PORT=$(API_PORT) $(PY) -m order_devtools.run

engines: venv debian-packages  ## only the local SQS + DynamoDB engines, in the foreground
	$(PY) -m order_devtools.engines

test: venv debian-packages images  ## install what is missing, build the images, run the whole suite
	$(MAKE) --no-print-directory lint
	$(PY) -m pytest

# The quick loop while editing: no lint, no processes to start, no cluster.
test-fast: venv debian-packages  ## unit tests and the in-process API and AWS-client tests (about a minute)
	$(PY) -m pytest -q tests/unit tests/integration/test_api_contract.py \
	  tests/integration/test_aws_json_transport.py

# The same module `make test` runs at a smaller count (docs/fuzzing.md).
fuzz: venv debian-packages  ## fuzz the API from its OpenAPI description: 10,000+ requests on the real engines
	FUZZ_EXAMPLES=1300 FUZZ_MIN_REQUESTS=10000 $(PY) -m pytest -q -s tests/integration/test_fuzz.py

generate: venv  ## write the OrderPipeline CRD (operator and chart copies), the chart's copy script, dashboards and rules
	$(PY) -m order_operator.generate --write
	$(PY) -m order_devtools.observability --write

# A real Prometheus scrapes the real services under mixed traffic and the real operator on the test
# control plane; every panel query and rule runs against it, and each dashboard is drawn from the
# results (docs/observability.md).
dashboards: generate debian-packages  ## generate dashboards and rules, prove them on a real Prometheus, draw them to docs/images/
	OBSERVABILITY_PNG_DIR=docs/images $(PY) -m pytest -q tests/integration/test_observability.py \
	  tests/e2e/test_operator_observability.py

lint:  venv ## ruff, mypy strict, import-linter
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

bench: venv debian-packages  ## open-loop benchmark; writes bench-results/ JSON + PNG
	$(PY) -m tests.bench.run

chaos: venv debian-packages  ## chaos soak: 20,000 orders under injected faults, invariants checked (ORDERS=...)
	$(PY) -m tests.chaos --orders $(or $(ORDERS),20000)

operator: venv  ## run the OrderPipeline operator against $$KUBECONFIG
	$(PY) -m order_operator

cluster-up: venv  ## build (or reuse) and start the local Kubernetes control plane
	$(PY) -m order_devtools.cluster up

kube-demo: venv debian-packages  ## the pipeline on the cluster's real node from the real images (Ctrl-C ends it)
	$(PY) -m order_devtools.kube_demo

cluster-down: venv  ## stop the control plane cluster-up started and remove its state
	$(PY) -m order_devtools.cluster down

# buildah and mmdebstrap from Debian, as root; the archives stay in the cache (docs/images.md).
images: venv  ## build the three images without a Docker engine or a registry (buildah, mmdebstrap)
	$(PY) -m order_devtools.images

clean:  ## remove the virtualenv and local state (caches outside the repo stay)
	rm -rf $(VENV) .cluster .run bench-results .pytest_cache .mypy_cache .ruff_cache .hypothesis
