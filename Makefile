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

.PHONY: setup system-packages test unit integration demo clean-demo bench

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

unit: setup
	$(PY) -m pytest -q tests/unit

integration: setup
	$(PY) -m pytest -q tests/integration

demo: setup
	$(VENV)/bin/medtrain sample-data $(DEMO_DIR)/data --scale 3
	$(VENV)/bin/medtrain split $(DEMO_DIR)/data/ner/ro/monero.tsv $(DEMO_DIR)/data/ner/ro/split \
		--ratios 0.6,0.2,0.2 --by sentence --order source --force
	$(VENV)/bin/medtrain study study-demo data_dir=$(DEMO_DIR)/data output_dir=$(DEMO_DIR)/study

bench: setup
	$(PY) -m pip install -q -e '.[bench]'
	$(PY) benchmarks/run.py benchmarks/matrices/cpu-small.yaml --report

clean-demo:
	rm -rf $(DEMO_DIR)
