# Two commands on a fresh machine: `make run` (the main job) and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
DATA ?= .data
STAMP := $(VENV)/.installed

.PHONY: run test lint venv demo clean system-deps default-model synthetic-model deploy-check deploy-train-check base-image

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first and pinned: the CPU wheel; nothing later may replace it with a CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[train,serve,dev,milvus-lite,openvino]'
	touch $(STAMP)

venv: $(STAMP)

# MODEL=synthetic serves the model trained only on synthetic walkers (no third-party data terms).
MODEL ?= default
run: $(STAMP)
	$(BIN)/gaitlu demo --model $(MODEL) --data-dir $(DATA)

# Rebuild models/default with the project's own commands: models/synthetic's tiny GaitSSB trained on the
# real CASIA-B development set (about 25 minutes on 2 CPU cores once models/synthetic exists; needs the
# set at ../shared/data/casiab-dev or CASIAB_DEV=PATH; models/default/build.json records the commands and
# the time of each stage).
CASIAB_DEV ?= ../shared/data/casiab-dev
default-model: $(STAMP)
	$(BIN)/gaitlu demo --model default --rebuild --no-serve --data-dir $(DATA) --casiab-dev $(CASIAB_DEV)

# Rebuild models/synthetic from synthetic walkers only (about 2 hours on 2 CPU cores).
synthetic-model: $(STAMP)
	$(BIN)/gaitlu demo --model synthetic --rebuild --no-serve --data-dir $(DATA)

# Types: strict on every package ([tool.mypy] in pyproject.toml); about 1 min cold, seconds cached.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# System tools first (Chromium, a compose binary): installed via apt as root, else named and how to get them.
test: system-deps lint
	# One thread per worker: two xdist workers already fill the two cores. OpenVINO's runtime leaves a
	# process that later forks (training's data workers) to segfault, so its tests run on their own.
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -n 2 -q -m "not openvino"
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -n 2 -q -m openvino

system-deps:
	.ci/system-deps

# The CPU API image built and run with docker compose on host networking: health, enrol + search through its
# port, the gallery intact after a restart and in a new container, non-root, nothing left after `down`
# (deploy/check.py). As root on Debian it installs dockerd, compose and debootstrap and starts the engine
# itself. About 5 minutes on a fresh machine, 1 once the base image and the build cache exist.
deploy-check: $(STAMP)
	.ci/deploy-check

# The training image built with the host's CPU torch wheel (GAITLU_TORCH_WHEEL, else pip's find-links), then
# 10 pretraining steps of the tiny GaitSSB on a synthetic corpus inside it: about 6 minutes here. Not in CI.
deploy-train-check: $(STAMP)
	.ci/deploy-check train

# A base image made from Debian's packages, for machines that cannot pull python:3.11.14-slim-bookworm;
# prints its name: docker build --build-arg PYTHON_IMAGE=$$(deploy/base-image.sh) ...
base-image:
	deploy/base-image.sh

clean:
	rm -rf $(VENV) $(DATA)
