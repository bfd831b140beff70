# digitflow developer entry points. `make run` and `make test` work on a fresh machine.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin

LOCK := requirements.lock
UV = $(BIN)/uv pip --quiet

.PHONY: install lock run check test lint server browser postgres flink

install: $(VENV)/.installed

# Installs exactly the locked versions (hash-checked; anything else in the venv is removed),
# then the project itself without dependencies. uv comes from the lock too. Bytecode is compiled
# once here: uv does not by default, and without it every process that imports TensorFlow
# (each flow run, each test that trains) compiles ~2,300 modules again, 8 s of CPU each time.
$(VENV)/.installed: $(LOCK) pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet "$$(grep -E '^uv==' $(LOCK) | cut -d' ' -f1)"
	$(UV) sync --python $(BIN)/python --require-hashes --compile-bytecode $(LOCK)
	$(UV) install --python $(BIN)/python --no-deps -e .
	touch $@

# Re-resolves every dependency from pyproject.toml's bounds to the newest allowed versions.
# Review the diff, then `make test` before committing it (docs/development.md, "Upgrading dependencies").
lock: install
	$(BIN)/uv pip compile pyproject.toml --extra dev --python-version 3.11 \
		--python-platform x86_64-manylinux_2_28 --generate-hashes --upgrade \
		--output-file $(LOCK)

run: install
	$(BIN)/digitflow retrain --profile fast
	$(BIN)/digitflow data scans out/scans --count 200
	$(BIN)/digitflow classify out/scans --output out/predictions.csv --overwrite
	@echo "Results: out/predictions.csv (errors: out/predictions.errors.csv)."
	@echo "Runs and reports in the Prefect UI: make server, then open http://127.0.0.1:4200"

lint: install
	$(BIN)/ruff check .

# The fast tier, for every edit: ruff and the tests that train nothing and start no server.
check: lint
	$(BIN)/pytest -m "not slow"

# Everything (CI runs this). Two processes, a test module each at a time, so that tests that
# wait on servers and cron minutes overlap with those that compute; a module keeps its servers.
test: lint browser postgres flink
	$(BIN)/pytest -n 2 --dist loadfile

# A local Prefect server with its UI at http://127.0.0.1:4200, on SQLite in ~/.prefect (the
# same database `digitflow retrain` uses when no server is set, so those runs show too).
server: install
	PREFECT_SERVER_ANALYTICS_ENABLED=false $(BIN)/prefect server start --host 127.0.0.1 --port 4200

# Headless Chromium for the end-to-end UI test (Playwright drives the Debian build).
browser:
	@test -x /usr/bin/chromium || { \
		echo "installing chromium (apt-get, needs root)"; \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium chromium-driver; \
	}

# PostgreSQL for the Prefect-on-PostgreSQL test, which runs its own cluster in a temporary folder
# (any major version; Debian 12's is 15, the one infra/compose.yaml pins).
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
		echo "installing postgresql (apt-get, needs root)"; \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql; \
	}

# Apache Flink for the bulk job's Flink tests (`pytest -m flink`, docs/flink.md): Beam's Flink job
# server and a standalone Flink 1.19 cluster's jars, fetched from Maven Central into .cache/flink
# and checked against infra/flink/jars.sha256. Once fetched, nothing is downloaded again.
FLINK_CACHE := .cache/flink
flink: $(FLINK_CACHE)/.fetched

$(FLINK_CACHE)/.fetched: infra/flink/fetch.sh infra/flink/jars.sha256 infra/flink/java17.args \
		infra/flink/job-server/pom.xml infra/flink/cluster/pom.xml
	@command -v mvn >/dev/null && command -v jar >/dev/null || { \
		echo "installing maven and a JDK 17 (apt-get, needs root)"; \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y \
			maven openjdk-17-jdk-headless; \
	}
	infra/flink/fetch.sh
