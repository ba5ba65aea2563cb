# make demo   set this machine up and provision a demo learner (Debian 12, as root)
# make test   lint, type-check and run the tests against real services
# make bench  start-up benchmarks, printed as ratios measured side by side

VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test lint bench image clean

$(STAMP): pyproject.toml
	@command -v python3 >/dev/null || { echo "install python3 first: apt-get install python3 python3-venv"; exit 1; }
	@python3 -m venv $(VENV) 2>/dev/null || { apt-get install -y -qq python3-venv >/dev/null && python3 -m venv $(VENV); }
	$(PY) -m pip install -q --disable-pip-version-check -e '.[test]'
	@touch $@

demo: $(STAMP)
	bash deploy/demo/demo.sh $(VENV)

lint: $(STAMP)
	$(PY) -m ruff check platformctl tests bench
	$(PY) -m ruff format --check platformctl tests bench
	$(PY) -m mypy platformctl

test: lint
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) bench/startup.py

image:
	deploy/standin/build.sh

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
