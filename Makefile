# The two commands of the README:
#   make demo   install everything, then produce a clip
#   make test   install everything, then run the whole test suite
# and the extra test environments that CI (.ci/run) runs after it: make test-transformers-oldest,
# make test-transformers-newest (the range of transformers releases setup.cfg admits) and make test-icetk.
# torch is installed first from its pinned CPU build: a bare `torch` requirement with nothing installed
# would pull a multi-GB CUDA build.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0
PYTEST_ARGS ?=

.PHONY: install browser test demo bench clean install-icetk test-icetk test-transformers-oldest \
	test-transformers-newest

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "torch==$(TORCH_VERSION)"
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

install: $(VENV)/.installed

# A second environment in which icetk (the paper's tokenizer) imports: icetk imports torchvision at module
# level, and PyPI's torchvision does not import beside the CPU torch above, so this one takes the
# torch/torchvision pair that pip serves from this machine's wheel store (a CUDA build, about 5.5 GB, that
# runs on the CPU). icetk goes in last with --no-deps (its own requirements pin protobuf<3.19 and an unpinned
# torchvision); the `icetk` extra holds what it imports.
ICETK_VENV ?= .venv-icetk
ICETK_PY := $(ICETK_VENV)/bin/python
ICETK_TORCH_VERSION ?= 2.14.1
ICETK_TORCHVISION_VERSION ?= 0.29.1
ICETK_VERSION ?= 0.0.7

$(ICETK_VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(ICETK_VENV)
	$(ICETK_PY) -m pip install --quiet --upgrade pip
	$(ICETK_PY) -m pip install --quiet \
		"torch==$(ICETK_TORCH_VERSION)" "torchvision==$(ICETK_TORCHVISION_VERSION)"
	$(ICETK_PY) -m pip install --quiet -e ".[icetk]" pytest pytest-timeout
	$(ICETK_PY) -m pip install --quiet --no-deps "icetk==$(ICETK_VERSION)"
	touch $@

install-icetk: $(ICETK_VENV)/.installed

# The oldest and the newest transformers release that setup.cfg admits, each in an environment of its own, for
# the tests that exercise transformers' contracts: config, model, cache and generate(), pipeline, checkpoint
# conversion on loading, remote code. (The main environment gets the newest too, like a user's plain install;
# `test-transformers-newest` checks it without the dev extras.)
TRANSFORMERS_OLDEST ?= 5.23.0
TRANSFORMERS_TESTS ?= tests/test_transformers_compat.py tests/test_configuration.py tests/test_modeling.py \
	tests/test_generation.py tests/test_pipeline.py tests/test_fused_step.py tests/test_hub_ready.py \
	tests/test_hub.py

.venv-transformers-oldest/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(@D)
	$(@D)/bin/python -m pip install --quiet --upgrade pip
	$(@D)/bin/python -m pip install --quiet "torch==$(TORCH_VERSION)"
	$(@D)/bin/python -m pip install --quiet -e . "transformers==$(TRANSFORMERS_OLDEST)" pytest pytest-timeout
	touch $@

.venv-transformers-newest/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(@D)
	$(@D)/bin/python -m pip install --quiet --upgrade pip
	$(@D)/bin/python -m pip install --quiet "torch==$(TORCH_VERSION)"
	$(@D)/bin/python -m pip install --quiet --upgrade -e . pytest pytest-timeout
	touch $@

test-transformers-oldest test-transformers-newest: test-transformers-%: .venv-transformers-%/.installed
	@.venv-transformers-$*/bin/python -c "import transformers; print('transformers', transformers.__version__)"
	.venv-transformers-$*/bin/python -m pytest -q $(TRANSFORMERS_TESTS) $(PYTEST_ARGS)

# Debian chromium for the Space demo's real-browser test (Playwright cannot download browsers here).
browser:
	bash scripts/install_browser.sh

test: install browser
	$(PY) -m pytest -q $(PYTEST_ARGS)

# The icetk tests, which skip in the main environment, run for real here.
test-icetk: install-icetk
	$(ICETK_PY) -m pytest -q tests/test_icetk.py $(PYTEST_ARGS)

demo: install
	$(VENV)/bin/flashvideo demo --output-dir outputs

bench: install
	$(VENV)/bin/flashvideo bench all --output-dir benchmarks

clean:
	rm -rf $(VENV) $(ICETK_VENV) .venv-transformers-oldest .venv-transformers-newest build dist *.egg-info \
		.pytest_cache
