# Solo Harness developer entry points. `make demo` and `make test` install what they need.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install docker test-tools images demo test test-quick test-unit lint bench bench-quick clean docs security k8s-lab k8s-lab-stop test-cluster test-wheels bench-wheels

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[dev,docs]'  # docs: the site test builds it
	@touch $(STAMP)

install: $(STAMP)

docker:  ## a running Docker engine and the offline base image (installs docker.io as root)
	bash scripts/ensure-docker.sh

test-tools:  ## what only the tests use: tmux and chromium (installed as root; `make demo` does without)
	bash scripts/ensure-test-tools.sh

AGENT_IMAGES := claude-code codex aider
IMAGES ?= base
images: install docker  ## build harness images: IMAGES="base $(AGENT_IMAGES)" for all (agents need npm/PyPI)
	@set -e; for image in $(IMAGES); do $(BIN)/harness images build $$image; done

demo: images
	bash scripts/demo.sh

# The suite runs on parallel workers (pytest-xdist): most of a test's time is spent waiting on containers and
# agents, not on a core, so more workers than cores pay. `--dist loadgroup` keeps a group (the k8s lab's tests:
# its one node holds one agent pod at a time) on one worker. TEST_WORKERS=0 runs everything in this process.
TEST_WORKERS ?= 4
PARALLEL := -n $(TEST_WORKERS) --dist loadgroup

test-unit: install
	$(BIN)/pytest -q -n auto tests/unit

test-quick: install  ## the inner loop: unit and contract tests (the fake and Docker engines), a few minutes
	$(BIN)/pytest -q $(PARALLEL) -m 'not kubernetes' tests/unit tests/backends

# The package index stand-in of the setup tests (tests/integration/test_setup.py) serves these on loopback.
TEST_WHEELS := build/test-wheels
test-wheels: install bench-wheels  ## wheels the setup tests install from a loopback index (fetched once from PyPI)
	@test -f $(TEST_WHEELS)/.complete || { $(BIN)/pip download -q --disable-pip-version-check --only-binary=:all: \
	  -d $(TEST_WHEELS) pip "pytest>=8" attrs "setuptools>=70" && touch $(TEST_WHEELS)/.complete; }

# The loopback index of the setup-cache benchmark (bench/setup_cache.py): a web project's real dependencies
# (flask, requests, pyyaml; pytest for tests), seven of them as sdists that pip must build (pure Python, or
# with a pure fallback: the image has no compiler), the others and pip and the build backends as wheels;
# and uv's wheel in tools/ (not served: the benchmark's image with uv is built from it). Pinned, so that the
# backends fetched are the ones the sdists ask for.
BENCH_WHEELS := build/bench-wheels
BENCH_SDISTS := markupsafe==3.0.4 itsdangerous==2.2.0 blinker==1.9.0 certifi==2026.10.18 urllib3==2.8.0 \
  idna==3.21 iniconfig==2.3.1
BENCH_BACKENDS := pip==26.3 setuptools==84.2.1 flit_core==3.12.0 hatchling==1.33.0 hatch-vcs==0.5.0 \
  setuptools-scm==10.3.4
bench-wheels: install  ## the setup-cache benchmark's packages (fetched once from PyPI)
	@test -f $(BENCH_WHEELS)/.complete || { \
	  $(BIN)/pip download -q --disable-pip-version-check -d $(BENCH_WHEELS) \
	    --no-binary $$(echo "$(BENCH_SDISTS)" | sed -E 's/==[^ ]+//g; s/ +/,/g') \
	    flask==3.1.3 requests==2.34.2 pyyaml==6.0.4 pytest==9.2.0 $(BENCH_SDISTS) && \
	  $(BIN)/pip download -q --disable-pip-version-check -d $(BENCH_WHEELS) --only-binary=:all: $(BENCH_BACKENDS) && \
	  $(BIN)/pip download -q --disable-pip-version-check -d $(BENCH_WHEELS)/tools --only-binary=:all: --no-deps \
	    uv==0.13.9 && touch $(BENCH_WHEELS)/.complete; }

# The `alone` tests run after the others, by themselves (one restarts the Docker engine); both parts always run.
test: images test-tools test-wheels test-cluster
	status=0; $(BIN)/pytest -q $(PARALLEL) -m 'not alone' || status=$$?; \
	  $(BIN)/pytest -q -m alone || status=$$?; exit $$status
	$(BIN)/ruff check -q .
	$(BIN)/mypy

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

security: images test-wheels  ## run the attack suite and print (and record in docs/security.md) its table
	HARNESS_SECURITY_REPORT=build/security-results.json $(BIN)/pytest -q tests/security; \
	  status=$$?; $(BIN)/python scripts/security_table.py build/security-results.json --replace; exit $$status

docs: install  ## regenerate docs/cli.md, docs/journal.md and docs/schema/, then build the site offline into build/site
	$(BIN)/python scripts/gen_docs.py
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir build/site

bench: images bench-wheels  ## every benchmark, full size (tens of minutes); rewrites docs/performance.md
	$(BIN)/python -m bench.run_all --doc docs/performance.md

bench-quick: images bench-wheels  ## the small versions of the benchmarks (a couple of minutes); writes nothing
	$(BIN)/python -m bench.run_all --quick

k8s-lab: images  ## a one-node Kubernetes 1.20 on 127.0.0.1 with harness-base loaded (docs/k8s-lab.md)
	bash scripts/k8s-lab.sh start
	bash scripts/k8s-lab.sh load harness-base:latest

test-cluster:  ## the k8s lab for the Kubernetes tests (root only: elsewhere they are skipped, under CI=true they fail)
	@if [ "$$(id -u)" = 0 ]; then $(MAKE) --no-print-directory k8s-lab; \
	  else echo "make test: not root, so no k8s lab: the Kubernetes tests are skipped (sudo make k8s-lab)"; fi

k8s-lab-stop:  ## stop the k8s lab (what `make k8s-lab` started, by pid)
	bash scripts/k8s-lab.sh stop

clean:  ## remove every container the harness's tests left (by label)
	-docker ps -aq --filter label=io.solo-harness.managed=1 | xargs -r docker rm -f
