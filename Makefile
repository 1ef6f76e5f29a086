# Montage: set-up, demo, checks. `make demo` and `make test` need nothing installed by hand:
# both start with scripts/bootstrap.sh (system packages, .venv, models), which is skipped when
# .venv/.bootstrapped is newer than pyproject.toml and the script itself.

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

VENV  := .venv
PY    := $(VENV)/bin/python
STAMP := $(VENV)/.bootstrapped
DEMO  := build/demo
BENCH := $(sort $(filter-out bench/_%,$(wildcard bench/*.py)))

.PHONY: help bootstrap demo test lint pytest bench config config-check image clean distclean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml scripts/bootstrap.sh
	bash scripts/bootstrap.sh

bootstrap: $(STAMP)  ## create .venv and install everything missing (apt, torch, Montage, models)

demo: $(STAMP)  ## synthesise a 3-minute sample talk, cut it into clips, print where they are
	$(PY) scripts/make_sample.py $(DEMO)/sample.mp4
	rm -rf $(DEMO)/clips  # clips of an earlier run; transcript and other stage results stay cached
	$(VENV)/bin/montaged process $(DEMO)/sample.mp4 -o $(DEMO)/clips
	@echo
	@echo "Clips (video with burned captions, sidecar .json, .srt and .vtt captions) in $(DEMO)/clips/:"
	@find $(DEMO)/clips -maxdepth 2 -name '*.mp4' ! -name '.*' | sort | sed 's/^/  /'

lint: $(STAMP)  ## ruff and mypy
	$(VENV)/bin/ruff check montaged tui tests bench scripts
	$(VENV)/bin/mypy

pytest: $(STAMP)  ## the test suite alone
	$(VENV)/bin/pytest -q -p no:cacheprovider

test: lint  ## what CI runs (.ci/run): bootstrap, ruff, mypy, every test of every marker (slowest 25 listed)
	$(VENV)/bin/pytest -q -p no:cacheprovider --durations=25

bench: $(STAMP)  ## run every benchmark in bench/ (figures; one line instead where recordings are missing)
	@for f in $(BENCH); do echo "== $$f"; $(PY) $$f; done

config: $(STAMP)  ## regenerate config/montage.example.toml from the settings models
	$(PY) scripts/gen_example_config.py

config-check: $(STAMP)  ## fail when config/montage.example.toml is stale
	$(PY) scripts/gen_example_config.py --check

image: $(STAMP)  ## build the container image with podman (localhost/montage:latest; base from Debian packages)
	bash scripts/build_image.sh

clean:  ## remove build outputs and caches (keeps .venv)
	rm -rf build .pytest_cache .mypy_cache .ruff_cache *.egg-info snapshot_report.html
	find . -path ./.venv -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean  ## also remove .venv (the next make bootstraps again)
	rm -rf $(VENV)
