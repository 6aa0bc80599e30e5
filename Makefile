# Two commands set everything up on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
SGF := $(VENV)/bin/sgf-deploy
# CPU installs pin torch==2.13.0: a local CPU wheel on these machines (an unpinned torch pulls a
# multi-GB CUDA build).
TORCH_SPEC ?= torch==2.13.0
DEMO_DIR ?= .demo

# Debian packages the tests use when present (DCMTK's storescu/storescp, dicom3tools' dciodvfy, the
# Colin27 held-out anatomy in mricron-data). Guarded: a machine without apt, or without root and
# passwordless sudo, skips this and the tests that need them skip with the reason.
APT_PACKAGES ?= dcmtk dicom3tools mricron-data

.PHONY: demo test install install-test clean-demo system-packages

$(VENV)/.base:
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	touch $@

$(VENV)/.installed: $(VENV)/.base pyproject.toml
	$(PY) -m pip install -q -e '.[torch]'
	touch $@

$(VENV)/.installed-test: $(VENV)/.base pyproject.toml | system-packages
	$(PY) -m pip install -q -e '.[torch,test,rtx]'
	touch $@ $(VENV)/.installed

system-packages:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if ! command -v apt-get >/dev/null 2>&1; then echo "make: no apt-get; skipping system packages ($$missing)"; exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then sudo=""; elif sudo -n true 2>/dev/null; then sudo="sudo -n"; \
	else echo "make: not root and no passwordless sudo; skipping system packages ($$missing)"; exit 0; fi; \
	( $$sudo apt-get install -y -q $$missing >/dev/null 2>&1 || \
	  ( $$sudo apt-get update -q >/dev/null 2>&1 && $$sudo apt-get install -y -q $$missing >/dev/null 2>&1 ) ) \
	  && echo "make: installed $$missing" || echo "make: could not install $$missing; the tests that need them skip"

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

test: $(VENV)/.installed-test
	$(PY) -m pytest -q

# The whole pipeline on the embedded default model and sample, in a scratch workspace: the same
# commands a user types, chained with no paths (export/ -> engines/ -> reports/).
demo: $(VENV)/.installed
	rm -rf $(DEMO_DIR) && mkdir -p $(DEMO_DIR)
	cd $(DEMO_DIR) && $(abspath $(SGF)) sample
	cd $(DEMO_DIR) && $(abspath $(SGF)) export
	cd $(DEMO_DIR) && $(abspath $(SGF)) calibrate --n 32
	cd $(DEMO_DIR) && $(abspath $(SGF)) build --fp32
	cd $(DEMO_DIR) && $(abspath $(SGF)) build --fp16
	cd $(DEMO_DIR) && $(abspath $(SGF)) build --int8
	@# validate exits non-zero when an engine fails its gate; the demo shows every verdict and goes on
	cd $(DEMO_DIR) && ($(abspath $(SGF)) validate --n 16 || echo "demo: at least one engine failed its parity gate (see $(DEMO_DIR)/reports/); run uses validated engines only")
	cd $(DEMO_DIR) && $(abspath $(SGF)) run --ref t1.npy --target t2_us.npy --gt t2_gt.npy

clean-demo:
	rm -rf $(DEMO_DIR)
