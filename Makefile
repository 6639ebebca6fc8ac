# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup test demo bench lint format clean data docs

# torch is pinned through constraints.txt: a CPU build is served for exactly
# that version here, while an unpinned torch pulls a multi-GB CUDA build.
$(STAMP): pyproject.toml constraints.txt Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt torch
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev,experiments,docs,flower]'
	# MovieLens-100K ships inside recbole; its own dependencies would pull an unpinned torch.
	$(BIN)/python -m pip install --quiet --no-deps recbole==1.2.1
	touch $(STAMP)

setup: $(STAMP)

test: setup
	$(BIN)/python -m pytest -q

demo: setup
	$(BIN)/byzance demo

bench: setup
	$(BIN)/byzance bench rules
	$(BIN)/byzance bench sim

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# The documentation site, into site/ (rule, attack and CLI pages are generated from the code).
# The variables silence two banners about MkDocs' future printed by the theme and a plugin.
docs: setup
	NO_MKDOCS_2_WARNING=1 DISABLE_MKDOCS_2_WARNING=true $(BIN)/mkdocs build --strict --site-dir site

# Optional: full Fashion-MNIST (70,000 images) from Debian's package (needs root).
data:
	apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis .benchmarks

# Cost curves of the rules (time against n at n x d = 1e8 and against d at n = 20, peak
# memory) into docs/results.md's bench-curves section and docs/img/bench_curves.png.
.PHONY: bench-curves
bench-curves: setup
	$(BIN)/byzance bench rules --curves --out docs/results.md

# Side by side with ByzFL (benchmarks/peers -> benchmarks/results/peers.md), in its own
# environment so that `make test` never needs it. byzfl==0.0.11 declares torchvision, whose
# only build on the registry here is a CUDA one that fails to load with the CPU torch, and
# matplotlib/seaborn, used only by its plots: it is installed with --no-deps next to the
# pinned torch, numpy and scipy (all that its aggregators, attacks and fed_framework import).
# benchmarks/peers/byzfl_loader.py imports those subpackages without running
# byzfl/__init__.py (which imports byzfl.benchmark, hence torchvision); no shim is installed.
PEERS_VENV  := .venv-peers
PEERS_STAMP := $(PEERS_VENV)/.installed

$(PEERS_STAMP): pyproject.toml constraints.txt
	test -x $(PEERS_VENV)/bin/python || $(PYTHON) -m venv $(PEERS_VENV)
	$(PEERS_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(PEERS_VENV)/bin/python -m pip install --quiet -c constraints.txt torch
	$(PEERS_VENV)/bin/python -m pip install --quiet -c constraints.txt -e . 'numpy>=1.26.4' 'scipy>=1.12'
	$(PEERS_VENV)/bin/python -m pip install --quiet --no-deps byzfl==0.0.11
	touch $(PEERS_STAMP)

.PHONY: bench-peers
bench-peers: $(PEERS_STAMP)
	$(PEERS_VENV)/bin/python -m benchmarks.peers

# The GPU check (about 5 minutes on one GPU; needs a CUDA build of torch): CUDA tests,
# rules and the simulated step on CUDA, a short ResNet-20 run, robust_step over NCCL.
.PHONY: gpu-check
gpu-check: setup
	bash benchmarks/gpu_check.sh
