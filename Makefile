# medtrain: `make demo` runs the study on the bundled sample data; `make test` runs the test suite.
# Both set up everything they need on a fresh Debian machine; a second run with nothing changed is quick.

PYTHON      ?= python3
VENV        ?= .venv
# The pinned CPU wheel by default. On a GPU cluster pick your CUDA build, e.g.
#   make setup TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
TORCH_SPEC  ?= torch==2.13.0
# the packaged grid-demo recipe reads demo/, so the demo folder is fixed
DEMO_DIR    := demo
PY          := $(VENV)/bin/python
STAMP       := $(VENV)/.medtrain-installed

.PHONY: setup system-packages test check integration demo clean-demo bench gpu-wheels

setup: $(STAMP)

system-packages:
	@bash tests/cluster/system_packages.sh

$(STAMP): pyproject.toml tests/cluster/system_packages.sh
	@bash tests/cluster/system_packages.sh
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_SPEC)
	DS_BUILD_OPS=0 $(PY) -m pip install -q -e '.[test]'
	@touch $(STAMP)

# Two pytest-xdist workers: the SLURM tests spend most of their time waiting on the scheduler, so the rest
# runs beside them (tests/conftest.py keeps each module on one worker and starts the longest first).
PYTEST_WORKERS ?= 2

test: setup
	$(PY) -m pytest -q tests -n $(PYTEST_WORKERS) --dist loadgroup --no-loadscope-reorder --durations=15

# The edit-test loop: the unit tests (in-process, no cluster, no DeepSpeed ranks) on the same workers, slowest
# listed. `make test` is the full suite, and what CI runs.
check: setup
	$(PY) -m pytest -q tests/unit -n $(PYTEST_WORKERS) --durations=5

integration: setup
	$(PY) -m pytest -q tests/integration

demo: setup
	$(VENV)/bin/medtrain sample-data $(DEMO_DIR)/data --scale 3
	$(VENV)/bin/medtrain split $(DEMO_DIR)/data/ner/ro/monero.conllu $(DEMO_DIR)/data/ner/ro/split \
		--ratios 0.6,0.2,0.2 --by sentence --order source --force
	$(VENV)/bin/medtrain study study-demo data_dir=$(DEMO_DIR)/data output_dir=$(DEMO_DIR)/study

bench: setup
	$(PY) -m pip install -q -e '.[bench]'
	$(PY) benchmarks/run.py benchmarks/matrices/cpu-small.yaml --report

clean-demo:
	rm -rf $(DEMO_DIR)

# The wheels benchmarks/gpu_check.sh installs on a GPU machine that has no network: medtrain, DeepSpeed (no
# prebuilt ops), and what they need beyond that machine's image (device KINDS.md: python 3.12, torch,
# transformers, accelerate, numpy, scikit-learn, ...), at the versions this venv runs. Carry GPU_WHEELS along.
GPU_WHEELS ?= gpu-wheels
GPU_PYTHON ?= 3.12
GPU_PURE   := seqeval submitit hjson annotated-types typing-inspection datasets dill
GPU_BINARY := pydantic pydantic-core multiprocess
PINNED     := $(PY) -c 'import sys, importlib.metadata as m; print(" ".join(f"{n}=={m.version(n)}" for n in sys.argv[1:]))'

gpu-wheels: setup
	rm -rf $(GPU_WHEELS).tmp && mkdir -p $(GPU_WHEELS).tmp
	$(PY) -m pip wheel -q --no-deps -w $(GPU_WHEELS).tmp .
	DS_BUILD_OPS=0 $(PY) -m pip wheel -q --no-deps -w $(GPU_WHEELS).tmp $$($(PINNED) deepspeed)
	$(PY) -m pip wheel -q --no-deps -w $(GPU_WHEELS).tmp $$($(PINNED) $(GPU_PURE))
	$(PY) -m pip download -q --no-deps --only-binary=:all: --python-version $(GPU_PYTHON) \
		--platform manylinux2014_x86_64 -d $(GPU_WHEELS).tmp $$($(PINNED) $(GPU_BINARY))
	rm -rf $(GPU_WHEELS) && mv $(GPU_WHEELS).tmp $(GPU_WHEELS)
	@du -sh $(GPU_WHEELS)
