# One command per job; the README and .ci/run use these same targets.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PLUGINS := $(patsubst %/pyproject.toml,%,$(wildcard plugins/*/pyproject.toml))

.PHONY: setup demo test test-k8s torture lint bench clean services services-down

setup: $(VENV)/.installed
	@# Editable installs leave bytecode to the import system, which this machine may forbid
	@# (PYTHONDONTWRITEBYTECODE): compile it here, or every worker compiles clustercore anew.
	$(PY) -m compileall -q clustercore plugins bench examples > /dev/null

$(VENV)/.installed: pyproject.toml $(wildcard plugins/*/pyproject.toml)
	$(PYTHON) -m venv $(VENV) || { apt-get update -qq && apt-get install -y -qq python3-venv && $(PYTHON) -m venv $(VENV); }
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,bench,dev]' $(foreach p,$(PLUGINS),-e '$(p)[test]')
	touch $@

demo: setup
	$(PY) examples/demo.py

# As root, `make test` first starts the test services (a real sshd, namespace hosts, Slurm);
# without root it runs the tests without them, and the tests that need them are skipped.
test: setup $(if $(filter 0,$(shell id -u)),services)
	$(PY) -m pytest

# The Kubernetes plugin's suite against a real cluster (root): tests/services/k8s builds
# kube-apiserver, kube-scheduler, kube-controller-manager and kubelet from Debian's source package
# once per machine (cached outside the clone), starts them with etcd, containerd and runc, and the
# tests that need the in-repo fake are skipped. Not part of `make test`. It stops the cluster
# afterwards unless it was running before (`bash tests/services/k8s up` keeps one up).
test-k8s: setup
	@if bash tests/services/k8s status; then was_up=1; else was_up=; fi; \
	[ -n "$$was_up" ] || { trap 'bash tests/services/k8s down' EXIT; trap 'exit 130' INT TERM; }; \
	bash tests/services/k8s up > /dev/null && \
	CLUSTERCORE_K8S_TESTS=real $(PY) -m pytest plugins/k8s/tests $(PYTEST_ARGS)

# The long run of the concurrency torture test (a short one is part of `make test`);
# run it before every change to the engine. TORTURE_SECONDS and TORTURE_SEED to vary it.
torture: setup
	$(PY) -m tests.torture --seconds $(or $(TORTURE_SECONDS),600) $(if $(TORTURE_SEED),--seed $(TORTURE_SEED))

# Start what is missing of the test services (idempotent; root): tests/services/up.
services:
	bash tests/services/up

# Stop exactly what `make services` started.
services-down:
	bash tests/services/down

lint: setup
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check . && $(VENV)/bin/mypy && $(VENV)/bin/lint-imports --no-cache

bench: setup
	$(PY) -m bench

clean:
	rm -rf $(VENV) build *.egg-info
