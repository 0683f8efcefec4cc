# The two commands a newcomer needs: `make run` and `make test`. Both install what they need.
PYTHON ?= python3
TOOLS := .tools
UV := $(shell command -v uv 2>/dev/null || echo $(TOOLS)/bin/uv)
VENV := .venv

.PHONY: run test install install-run dbt-manifest system-deps lint mutation bench-quick clean

$(TOOLS)/bin/uv:
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet uv

# Bytecode is compiled once at install: with PYTHONDONTWRITEBYTECODE set, every process (each
# Dagster run, each test) would otherwise compile Dagster, pyiceberg and Great Expectations again.
install: $(if $(filter $(TOOLS)/bin/uv,$(UV)),$(TOOLS)/bin/uv)
	$(UV) sync --frozen --compile-bytecode --python $(PYTHON)
	@$(MAKE) --no-print-directory dbt-manifest

# What running needs, without the test tools (the dev group). --inexact leaves them installed if
# `make test` put them there, so switching between the two commands does not reinstall.
install-run: $(if $(filter $(TOOLS)/bin/uv,$(UV)),$(TOOLS)/bin/uv)
	$(UV) sync --frozen --no-dev --inexact --compile-bytecode --python $(PYTHON)
	@$(MAKE) --no-print-directory dbt-manifest

# The marts' dbt manifest, parsed once at install, so no process pays `dbt parse` when it loads
# the definitions (they parse again only when a file of dbt_project/ is newer than the manifest).
dbt-manifest:
	@cd dbt_project && ../$(VENV)/bin/dbt parse --quiet --profiles-dir .

# Chromium and PostgreSQL from Debian's packages, for the browser and Postgres catalog tests
# (skipped where they cannot be installed).
system-deps:
	@missing=""; command -v chromium >/dev/null 2>&1 || missing="chromium"; \
	command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "$$missing not installed and cannot be installed here: their tests will be skipped"; fi; fi

run: install-run
	@$(VENV)/bin/python -m platform_defs.launcher

test: install system-deps
	$(VENV)/bin/python -m pytest -q

lint: install
	$(VENV)/bin/ruff check agentlake platform_defs assets sensors tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

# Planted mutations of the guarantee code: each must make a test fail (a few minutes; not in CI's path).
mutation: install
	$(VENV)/bin/python tests/mutation.py

bench-quick: install
	@for b in bench/*.py; do echo "== $$b"; $(VENV)/bin/python $$b --quick || exit 1; done

clean:
	rm -rf $(VENV) $(TOOLS) .agentlake
