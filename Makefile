# The two quick-start commands: `make demo` and `make test`.
# Both create the virtual environment they need on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test demo lint venv clean browser

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $(STAMP)

venv: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

# Debian's chromium for the report's browser test (playwright drives this system
# executable; it never downloads a browser). Quick no-op when already installed.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian chromium for the browser test"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium \
	  >/dev/null || echo "warning: could not install chromium; the browser test will skip (fail with CI=true)"; }

test: $(STAMP) browser
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest -n 2 -q

demo: $(STAMP)
	$(BIN)/petbind demo --out petbind-demo

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
