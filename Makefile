# Two commands on a fresh machine: `make run` (the main job) and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
DATA ?= .data
STAMP := $(VENV)/.installed

.PHONY: run test lint venv demo clean system-deps

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first and pinned: the CPU wheel; nothing later may replace it with a CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[train,serve,dev,milvus-lite]'
	touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(BIN)/gaitlu demo --data-dir $(DATA)

# Types: strict on every package ([tool.mypy] in pyproject.toml); about 1 min cold, seconds cached.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# System tools first (Chromium, a compose binary): installed via apt as root, else named and how to get them.
test: system-deps lint
	# One thread per worker: two xdist workers already fill the two cores.
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -n 2 -q

system-deps:
	.ci/system-deps

clean:
	rm -rf $(VENV) $(DATA)
