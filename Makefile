# The two set-up commands (README): `make run` and `make test`. Both create .venv when
# it is missing and install the project with the extras they need.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.installed-stamp
HOST   ?= 127.0.0.1
PORT   ?= 8765
ARGS   ?=

.PHONY: run test e2e test-cluster bench-cluster test-websockets-floor bench lint typecheck fuzz soak hostile clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[bot,dev,bench,plot,cluster]'
	touch $(STAMP)

run: $(STAMP)
	$(PY) -m mediastream serve --host $(HOST) --port $(PORT) $(ARGS)

test: $(STAMP)
	$(PY) -m pytest -q $(ARGS)

# The browser tests (tests/test_e2e_browser.py): the softphone and the dashboard in
# Debian's headless chromium, driven over the DevTools protocol (no WebDriver, so no
# chromium-driver). chromium is installed with apt when it is missing (as root, else
# through sudo); quiet when it is there. Screenshots land in $(E2E_SHOTS).
E2E_SHOTS ?= build/e2e
SUDO       = $(shell [ "$$(id -u)" = 0 ] || echo sudo)

e2e: $(STAMP)
	@mkdir -p build $(E2E_SHOTS)
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "make e2e: installing chromium with apt-get (log: build/apt.log)"; \
	  { $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive \
	    apt-get install -y -qq chromium; } >build/apt.log 2>&1 || { cat build/apt.log; exit 1; }; }
	MEDIASTREAM_E2E=1 MEDIASTREAM_SCREENSHOTS=$(E2E_SHOTS) $(PY) -m pytest -q \
	  tests/test_e2e_browser.py $(ARGS)

# The shared-state tests against a real redis-server (Debian package), which they start
# themselves on a free loopback port; `make test` skips them when it is not installed.
# It is installed with apt when missing (as root, else through sudo), as chromium is.
REDIS_SERVER = command -v redis-server >/dev/null 2>&1 || { mkdir -p build; \
	  echo "installing redis-server with apt-get (log: build/apt.log)"; \
	  { $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive \
	    apt-get install -y -qq redis-server; } >build/apt.log 2>&1 || { cat build/apt.log; exit 1; }; }

test-cluster: $(STAMP)
	@$(REDIS_SERVER)
	$(PY) -m pytest -q tests/test_cluster_redis.py tests/test_cluster_workers.py tests/test_cluster_unreachable.py tests/test_cluster_files.py tests/test_call_api.py $(ARGS)

# 100 calls over two instances on one Redis while commands fly (bounded, loopback).
bench-cluster: $(STAMP)
	@$(REDIS_SERVER)
	$(PY) -m bench.bench_cluster $(ARGS)

# The suite again on the oldest websockets pyproject.toml allows (its floor, read from
# there), in a venv of its own: the server uses only websockets' public sans-I/O API,
# and this is how we know that API holds over the whole range. `make test` runs the
# newest release the range allows.
FLOOR_VENV = .venv-websockets-floor
WS_FLOOR   = $(shell sed -n 's/.*"websockets>=\([0-9.]*\)".*/\1/p' pyproject.toml)

$(FLOOR_VENV)/.installed-stamp: pyproject.toml
	$(PYTHON) -m venv $(FLOOR_VENV)
	$(FLOOR_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(FLOOR_VENV)/bin/python -m pip install --quiet -e '.[bot,dev,bench,plot,cluster]' 'websockets==$(WS_FLOOR)'
	touch $@

test-websockets-floor: $(FLOOR_VENV)/.installed-stamp
	$(FLOOR_VENV)/bin/python -c 'import websockets; print("websockets", websockets.__version__)'
	$(FLOOR_VENV)/bin/python -m pytest -q $(ARGS)

# Benchmarks run with OpenBLAS choosing its kernels for this CPU, as a deployment would:
# some build machines force OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE (for old OpenBLAS builds),
# which slows current numpy. Tests and CI keep the machine's setting. bench_codecs
# prints the kernel in use.
BENCH_ENV = env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE

bench: $(STAMP)
	$(BENCH_ENV) $(PY) -m bench $(ARGS)

lint: $(STAMP)
	$(PY) -m ruff check mediastream audiocodecs bot tests bench
	$(PY) -m mypy

typecheck: $(STAMP)
	$(PY) -m mypy

fuzz: $(STAMP)
	MEDIASTREAM_FUZZ=1 $(PY) -m pytest -q tests -k "fuzz or property" $(ARGS)

soak: $(STAMP)
	$(PY) -m bench soak $(ARGS)

hostile: $(STAMP)
	$(PY) -m bench hostile $(ARGS)

clean:
	rm -rf $(VENV) $(FLOOR_VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
