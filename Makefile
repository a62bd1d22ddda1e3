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
	$(PY) -m pytest

lint:
	ruff check datalayer tests benchmarks examples

type:
	mypy

# pyenv keeps 3.11-3.13 out of tox's sight unless PYENV_VERSION lists them: point it at them.
tox:
	tox $(foreach p,$(wildcard $(HOME)/.pyenv/versions/3.1[123]*/bin/python3),--discover $(p))

migrate-diff:
	@test -n "$(name)" || { echo "usage: make migrate-diff name=NAME"; exit 2; }
	$(DATALAYER) $(ENV_ARGS) migrate diff $(name)

migrate-apply:
	$(DATALAYER) $(ENV_ARGS) migrate apply

migrate-status:
	$(DATALAYER) $(ENV_ARGS) migrate status

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
