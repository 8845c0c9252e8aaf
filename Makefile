# The two commands: `make demo` and `make test`. Both create .venv on first use (torch pinned and installed
# first: an unpinned torch pulls a multi-GB CUDA build) and are fast when it is already there.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
TORCH := torch==2.13.0

# No model hub here; albumentations (imported by img2dataset) would call the package index on every import;
# DeepSpeed runs on the CPU and keeps its JIT-compiled ops in the venv.
export HF_HUB_OFFLINE := 1
export NO_ALBUMENTATIONS_UPDATE := 1
export DS_ACCELERATOR := cpu
export TORCH_EXTENSIONS_DIR := $(CURDIR)/$(VENV)/torch_extensions
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: install browser demo test lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -qq $(TORCH)
	$(PY) -m pip install -qq -e '.[builders,train,s3,ray,quality,test]' $(TORCH)
	@touch $(STAMP)

# Headless Chromium for the report test (tests/quality/test_report_browser.py); CI runs this as root.
browser:
	@command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)

demo: $(STAMP)
	$(PY) scripts/demo.py

test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m pytest -q -ra

lint: $(STAMP)
	$(PY) -m ruff check .

bench: $(STAMP)
	@for b in bench/[!_]*.py; do echo "== $$b"; $(PY) $$b || echo "($$b did not complete)"; done

clean:
	rm -rf demo_out bench_out .pytest_cache
