# Two entry points for a fresh clone: `make demo` and `make test`.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.bench-installed

.PHONY: demo test lint proto bench bench-deps bench-remote deploy-check monitoring-check clean

$(STAMP): pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch 2.13.0 (CPU build) only where no torch is installed yet.
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e '.[all,test]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/isloader demo

lint: $(STAMP)
	$(VENV)/bin/ruff check isloader tests benchmarks tools deploy
	$(VENV)/bin/ruff format --check isloader tests benchmarks tools deploy

test: lint
	$(VENV)/bin/pytest -q -p no:cacheprovider

proto: $(STAMP)
	$(PY) tools/gen_proto.py

# The peer loaders for the remote benchmark: Mosaic Streaming pins numpy < 2.2 and LitData
# requires torchvision (a CUDA build here), so both go in without their pins.
$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install -q -c constraints.txt -e '.[bench]'
	$(PY) -m pip install -q --no-deps mosaicml-streaming==0.13.0 litdata==0.2.76
	touch $(BENCH_STAMP)

bench-deps: $(BENCH_STAMP)

# The headline comparison against the peers, on the emulated endpoint (about an hour here).
bench-remote: $(BENCH_STAMP)
	$(PY) benchmarks/bench_remote_training.py

bench: $(BENCH_STAMP)
	for b in benchmarks/bench_*.py; do $(PY) $$b || exit 1; done

# The deployment for real (podman or docker): images, compose stack, a shard killed.
deploy-check:
	deploy/smoke.sh

# Prometheus (Debian's package) scraping two local shards under traffic; every query of
# deploy/grafana/isloader.json must come back with data through its HTTP API.
monitoring-check: $(STAMP)
	$(PY) deploy/monitoring_check.py

clean:
	rm -rf $(VENV) demo-output benchmarks/results
