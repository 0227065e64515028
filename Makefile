# Quick start: `make demo` and `make test` on a fresh machine. Both create .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench scnn omlt clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# exact pin first: the CPU build; a looser requirement would pull a multi-GB CUDA build
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[mip,torch,cs,dask,onnx,sklearn,test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/unrelu verify

test: $(STAMP)
	$(BIN)/python -m pytest -q -rs

lint: $(STAMP)
	$(BIN)/ruff check formulation solvers validation tests

bench: $(STAMP)
	$(BIN)/unrelu bench subproblems

# optional pyscnn peer (validation/baselines/scnn.py); --no-deps: its requirements would pull torchvision and a CUDA torch
scnn: $(STAMP)
	$(BIN)/pip install --quiet --no-deps pyscnn linalg_backends opt_einsum

# optional OMLT peer of `unrelu verify --scaling` (validation/baselines/omlt.py); the tests never need it
omlt: $(STAMP)
	$(BIN)/pip install --quiet omlt pyomo

clean:
	rm -rf $(VENV) results *.egg-info
