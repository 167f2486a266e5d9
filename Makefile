# Two commands on a fresh machine: `make run` (the main job) and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
DATA ?= .data
STAMP := $(VENV)/.installed

.PHONY: run test lint venv demo clean system-deps default-model

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

# Rebuild models/default from scratch with the project's own commands, from synthetic walkers only
# (hours on 2 CPU cores; models/default/build.json records the commands and the time of each stage).
default-model: $(STAMP)
	$(BIN)/gaitlu demo --rebuild --no-serve --data-dir $(DATA)

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
