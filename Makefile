# The Go design's make targets, on the datalayer CLI.
PY ?= python
DATALAYER ?= datalayer
ENV_ARGS = $(if $(env),--env $(env),)

.PHONY: install test lint type tox migrate-diff migrate-apply migrate-status migrate-hash \
        migrate-check migrate-rollback er-diagram bench db-start db-stop db-info

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
	@test -n "$(name)" || { echo "usage: make migrate-diff name=NAME [allow_drop=1]"; exit 2; }
	$(DATALAYER) $(ENV_ARGS) migrate diff $(name) $(if $(allow_drop),--allow-drop)

migrate-apply:
	$(DATALAYER) $(ENV_ARGS) migrate apply

migrate-status:
	$(DATALAYER) $(ENV_ARGS) migrate status

migrate-hash:
	$(DATALAYER) $(ENV_ARGS) migrate hash

migrate-check:
	$(DATALAYER) $(ENV_ARGS) migrate check

migrate-rollback:
	$(DATALAYER) $(ENV_ARGS) migrate rollback --steps $(or $(steps),1)

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
