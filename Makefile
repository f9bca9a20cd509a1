# Two commands: `make demo` (the main job end to end) and `make test`.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
FMNIST  := /usr/share/datasets/fashion-mnist

.PHONY: setup data test test-slow demo bench clean

setup: $(STAMP) data

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,timm]'
	touch $(STAMP)

# Debian ships Fashion-MNIST; install it when we are root with apt, otherwise say how.
data:
	@if [ -d $(FMNIST) ] && ls $(FMNIST)/*.gz >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist; \
	else echo "notice: $(FMNIST) is missing; run 'sudo apt-get install dataset-fashion-mnist' or pass --data-dir"; fi

test: setup
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -m "not slow" -q

test-slow: setup
	$(BIN)/python -m pytest -m slow -q

demo: setup
	$(BIN)/mcgraph demo

bench: setup
	$(BIN)/python benchmarks/bench_train.py
	$(BIN)/python benchmarks/bench_deploy.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
