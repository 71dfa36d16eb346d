# The two commands a newcomer runs (README): `make main` runs the paper's pipeline on the chest
# X-ray file, `make test` the whole test suite (what CI's .ci/run calls). Each creates the
# virtual environment .venv when it is missing and reuses it when it is there; it is built again
# when pyproject.toml changes.

PYTHON ?= python3
VENV := .venv
# the chest X-ray file beside this checkout, when it is there (else medart downloads the official one)
ifneq ($(wildcard ../shared/data/pneumoniamnist.npz),)
export MEDART_DATA_DIR ?= ../shared/data
endif

.PHONY: main test

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# torch from these pins (the versions on our machines' disk); torchattacks without its
	# dependencies (it pins an old requests and bundles an old robustbench: README, notes)
	$(VENV)/bin/pip install -q torch==2.14.1 torchvision==0.29.1 -e '.[test,ray]'
	$(VENV)/bin/pip install -q --no-deps torchattacks==3.5.1
	touch $@

main: $(VENV)/.installed
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" mlflow run . -P attacks=bim -P pretrained=none --env-manager local \
		--experiment-name medart/pneumonia/main

# one worker per core (at most 4: each trains its own session fixtures), one torch thread each (conftest);
# tests marked xdist_group share one worker (the Ray tests: one local Ray cluster, not one per worker)
test: $(VENV)/.installed
	$(VENV)/bin/python -m pytest -q -p no:cacheprovider -n auto --maxprocesses 4 --dist loadgroup --durations=25
