# facelib — the two commands of the README:
#   make reproduce   runs the study (notebooks via papermill → reports/)
#   make test        runs the tests (pytest + nbval on the committed notebooks)
# Both create and fill .venv first when it is missing or stale: keyed on the dependency files AND this checkout's
# path, so a moved or re-cloned checkout re-installs the editable package and the `facelib` kernel.

PYTHON ?= python3.11
VENV   ?= .venv
PARAMS ?=
RUN    ?=
SET    ?=
DEVICE ?=
DEPS_HASH := $(shell { cat pyproject.toml requirements.lock requirements-nodeps.txt; echo "$(CURDIR)"; } | sha256sum | cut -c1-16)
STAMP  := $(VENV)/.deps-$(DEPS_HASH)
PY     := $(VENV)/bin/python

.PHONY: reproduce test test-fast lab env check-data notebooks-refresh clean-venv help gpu-check

help:
	@echo "make reproduce [PARAMS=...] [DEVICE=cuda] [SET='seed=1 n_folds=5']  run the study, write reports/"
	@echo "      (PARAMS empty: paper.yaml on a GPU, notebooks/params/cpu.yaml on a CPU when present)"
	@echo "make test                                            run the tests (pytest + nbval)"
	@echo "make lab                                             JupyterLab on the newest run's notebooks (facelib kernel)"
	@echo "make notebooks-refresh                               re-execute the committed notebooks (CI parameters)"
	@echo "make gpu-check                                       GPU timings + paper.yaml sized down (gpu_check.yaml) on CUDA"

env: $(STAMP)

$(STAMP): pyproject.toml requirements.lock requirements-nodeps.txt
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) (set PYTHON=...)"; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.lock
	$(PY) -m pip install --quiet --no-deps -r requirements-nodeps.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	$(PY) -m ipykernel install --sys-prefix --name facelib --display-name "facelib (.venv)" >/dev/null
	rm -f $(VENV)/.deps-*
	touch $@

reproduce: $(STAMP)
	$(PY) -m facelib study $(if $(PARAMS),--params $(PARAMS),) $(if $(RUN),--run $(RUN),) \
	  $(if $(DEVICE),--device $(DEVICE),) $(foreach s,$(SET),--set $(s))

# One pytest run: the unit tests, then nbval re-executes the committed notebooks and compares their outputs.
test: $(STAMP)
	$(PY) -m pytest tests notebooks --nbval --nbval-current-env --nbval-cell-timeout=2400 \
	  --nbval-sanitize-with notebooks/nbval_sanitize.cfg -p no:cacheprovider $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(PY) -m pytest tests -x -q $(PYTEST_ARGS)

# Opens the newest finished run's executed notebooks (reports/runs/<run>/; the committed ones when none has finished).
lab: $(STAMP)
	$(VENV)/bin/jupyter lab --notebook-dir=. $(if $(CI),--no-browser,) "$$($(PY) -m facelib latest-run)"

check-data: $(STAMP)
	$(PY) -m facelib data check --dataset kdef
	$(PY) -m facelib data check --dataset fei

notebooks-refresh: $(STAMP)
	$(PY) -m facelib study --params notebooks/params/ci.yaml --refresh-committed

# GPU check (README "GPU check"): versions + training-step timings first (useful even if the study fails), then
# notebooks/params/gpu_check.yaml on CUDA (stopped after GPU_CHECK_LIMIT seconds), then each notebook's time and
# Table 1. GPU_CHECK_PY=/path/to/python uses an environment that already has the packages (no .venv build).
GPU_CHECK_LIMIT ?= 480
GPU_CHECK_PY    ?=
GPU_PY = $(or $(GPU_CHECK_PY),$(PY))
gpu-check: $(if $(GPU_CHECK_PY),,$(STAMP))
	$(GPU_PY) benchmarks/gpu_check.py
	timeout -s INT -k 30 $(GPU_CHECK_LIMIT) $(GPU_PY) -m facelib study --params notebooks/params/gpu_check.yaml \
	  --device cuda --run gpu_check $(foreach s,$(SET),--set $(s)); rc=$$?; \
	  $(GPU_PY) benchmarks/gpu_check.py --summary reports/runs/gpu_check; exit $$rc

clean-venv:
	rm -rf $(VENV)
