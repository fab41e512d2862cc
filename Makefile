# T-Developer: `make run` starts the whole mesh; `make test` runs every test, `make test-unit` the unit tests.
# All set up what they need.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
GEN_STAMP := gen/.stamp
PROTOS := $(shell find protos -name '*.proto')

.DEFAULT_GOAL := help
.PHONY: help setup proto wheel run test test-unit lint bench clean

help: ## Show the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip setuptools wheel
	$(BIN)/python -m pip install -q -e '.[dev]'
	@# gen/ on sys.path for every process of the venv (services started by `tdev up` included)
	@$(BIN)/python -c 'import pathlib, sysconfig; pathlib.Path(sysconfig.get_paths()["purelib"], "tdev_gen.pth").write_text("$(CURDIR)/gen\n")'
	@touch $@

setup: $(STAMP) $(GEN_STAMP) ## Create .venv, install, generate code

# The wheel build runs the same generator (setup.py), so gen/ and an installed wheel hold the same code.
$(GEN_STAMP): $(STAMP) $(PROTOS) scripts/protogen.py
	@rm -rf gen && mkdir -p gen
	$(BIN)/python scripts/protogen.py gen
	@touch $@

proto: $(GEN_STAMP) ## Generate Python code and the descriptor set from protos/ into gen/tdev/

wheel: setup ## Build dist/t_developer-*.whl (generated code included; offline: no build isolation)
	$(BIN)/python -m pip wheel -q --no-deps --no-build-isolation . -w dist

run: setup ## Start the whole mesh and the web console on embedded defaults (Ctrl-C stops it)
	$(BIN)/tdev up

test: setup ## buf lint and every test (CI=true: Postgres and Redis must be up)
	$(BIN)/buf lint
	$(BIN)/python -m pytest -q

test-unit: setup ## Only the unit tests (fakes and pure functions, no I/O; well under 30 s)
	$(BIN)/python -m pytest -q -m unit

lint: setup ## ruff, mypy and buf lint
	$(BIN)/ruff check .
	$(BIN)/mypy tdev_common registry_svc workflow_svc builder_svc evolution_svc tdev_cli tdev_client tdev_console
	$(BIN)/buf lint

# Every benchmark runs even after a FAIL; with BENCH_ARGS=--strict the target fails at the end if any did.
bench: setup ## Every benchmark in bench/ beside its baselines, ratios with PASS/FAIL (BENCH_ARGS=--strict: exit 1 on a FAIL)
	@failed=""; started=$$(date +%s); \
	$(BIN)/python -m pip install -q -e '.[dev,bench]' || exit 1; \
	for b in bench/bench_*.py; do \
		echo "== $$b (load $$(cut -d' ' -f1-3 /proc/loadavg))"; begun=$$(date +%s); \
		$(BIN)/python $$b $(BENCH_ARGS) || failed="$$failed $$b"; \
		echo "== $$b: $$(( $$(date +%s) - begun )) s"; \
	done; \
	took=$$(( $$(date +%s) - started )); verdict=PASS; \
	if [ $$took -ge 360 ]; then verdict=FAIL; case " $(BENCH_ARGS) " in *" --strict "*) failed="$$failed (the 6-minute budget)";; esac; fi; \
	echo "$$verdict  make bench: $$took s (target < 360 s, issue 17), load $$(cut -d' ' -f1-3 /proc/loadavg)"; \
	if [ -n "$$failed" ]; then echo "== failed:$$failed"; exit 1; fi

clean: ## Remove the venv, generated code, caches and local data
	rm -rf $(VENV) gen build dist .tdev .pytest_cache .mypy_cache .ruff_cache *.egg-info
