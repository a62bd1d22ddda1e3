# The Go design's make targets, on the datalayer CLI.
PY ?= python
DATALAYER ?= datalayer
ENV_ARGS = $(if $(env),--env $(env),)

.PHONY: install test lint type tox migrate-diff migrate-apply migrate-status migrate-hash \
        migrate-check migrate-lint migrate-rollback er-diagram bench db-start db-stop db-info
.PHONY: migrate-baseline migrate-drift

install:
	$(PY) -m pip install -e '.[test]'

test:
	$(PY) -m pytest -n 2

# $(call require,TOOL): stop with what to install, not "TOOL: No such file or directory".
require = @command -v $(1) >/dev/null 2>&1 || { echo "$(1) is not installed: run pip install -e '.[dev]' (it brings tox, ruff and mypy)" >&2; exit 1; }

lint:
	$(call require,ruff)
	ruff check datalayer tests benchmarks examples

type:
	$(call require,mypy)
	mypy

# pyenv keeps 3.11-3.13 out of tox's sight unless PYENV_VERSION lists them: point it at them.
# All in ONE --discover: tox 4 keeps only the last of several --discover options.
TOX_PYTHONS = $(wildcard $(HOME)/.pyenv/versions/3.1[123]*/bin/python3)
tox:
	$(call require,tox)
	tox $(if $(TOX_PYTHONS),--discover $(TOX_PYTHONS),)

migrate-diff:
	@test -n "$(name)" || { echo "usage: make migrate-diff name=NAME [allow_drop=1]"; exit 2; }
	$(DATALAYER) $(ENV_ARGS) migrate diff $(name) $(if $(allow_drop),--allow-drop)

migrate-apply:
	$(DATALAYER) $(ENV_ARGS) migrate apply

# make exits 2 whenever a recipe fails, whatever the command's own code: the recipe
# prints the command's exit status (3: something pending / modified / missing) first.
# Scripts that branch on 3 run `datalayer migrate status` itself.
migrate-status:
	@$(DATALAYER) $(ENV_ARGS) migrate status; status=$$?; \
	if [ $$status -eq 3 ]; then echo "datalayer migrate status exited 3: not up to date (make reports any failure as 2)" >&2; \
	elif [ $$status -ne 0 ]; then echo "datalayer migrate status exited $$status" >&2; fi; \
	exit $$status

migrate-hash:
	$(DATALAYER) $(ENV_ARGS) migrate hash

migrate-check:
	$(DATALAYER) $(ENV_ARGS) migrate check

# names=... limits it to some migrations; postgres=N targets that PostgreSQL version.
migrate-lint:
	$(DATALAYER) $(ENV_ARGS) migrate lint $(names) $(if $(postgres),--postgres $(postgres),)

migrate-rollback:
	$(DATALAYER) $(ENV_ARGS) migrate rollback --steps $(or $(steps),1)

# Adopt a database whose tables exist (make migrate-baseline [to=NAME]).
migrate-baseline:
	$(DATALAYER) $(ENV_ARGS) migrate baseline $(if $(to),--to $(to),)

migrate-drift:
	$(DATALAYER) $(ENV_ARGS) migrate drift $(if $(json),--json,)

er-diagram:
	$(DATALAYER) erd --output docs/er-diagram.md

bench:
	$(PY) -m benchmarks

db-start:
	$(DATALAYER) db start

db-stop:
	$(DATALAYER) db stop

db-info:
	$(DATALAYER) $(ENV_ARGS) db info
