# The two commands of the README:
#   make demo   install everything, then produce a clip
#   make test   install everything, then run the whole test suite
# torch is installed first from its pinned CPU build: a bare `torch` requirement with nothing installed
# would pull a multi-GB CUDA build.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0
PYTEST_ARGS ?=

.PHONY: install browser test demo bench clean

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "torch==$(TORCH_VERSION)"
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

install: $(VENV)/.installed

# Debian chromium for the Space demo's real-browser test (Playwright cannot download browsers here).
browser:
	bash scripts/install_browser.sh

test: install browser
	$(PY) -m pytest -q $(PYTEST_ARGS)

demo: install
	$(VENV)/bin/flashvideo demo --output-dir outputs

bench: install
	$(VENV)/bin/flashvideo bench all --output-dir benchmarks

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache
