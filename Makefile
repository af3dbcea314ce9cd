# The two set-up commands (README): `make run` and `make test`. Both create .venv when
# it is missing and install the project with the extras they need.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.installed-stamp
HOST   ?= 127.0.0.1
PORT   ?= 8765
ARGS   ?=

.PHONY: run test bench lint typecheck fuzz soak hostile clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[bot,dev,bench,plot]'
	touch $(STAMP)

run: $(STAMP)
	$(PY) -m mediastream serve --host $(HOST) --port $(PORT) $(ARGS)

test: $(STAMP)
	$(PY) -m pytest -q $(ARGS)

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
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
