"""Generate a migration from the models: the "diff" half of ``datalayer migrate``.

The migration history on disk is replayed in memory (peewee-migrate's fake
mode, :func:`.api._replay`) to know the schema it builds; that state is compared with the models,
table by table and column by column, as the DDL ``create_tables()`` would
run (:mod:`..ddl.spec`).  Each difference becomes one call of
:class:`~..operations.migrator.DatalayerMigrator` (a :mod:`.code` value), made
at once on the in-memory state so the next comparison sees it; the call
builds one :mod:`..operations` value, which carries the call
(``Operation.call``).  Those operations are the :class:`~.plan.Plan`: the
file text is rendered from their calls (:mod:`.render`), the statements, the
locks and the transactional split from the operations' facts (:mod:`.split`).
When all are planned the state must equal the models exactly, and each file's
rollback, planned the same way in the other direction, must restore the
state before it exactly; otherwise :class:`GenerationError` says what does
not match and nothing is written.

Changes to existing tables are planned in two phases unless ``unsafe``:
phase one, in a transaction, adds columns (nullable where a fill must come
first) and constraints ``NOT VALID``; phase two, in a file with ``atomic =
False``, builds and drops indexes concurrently, fills NULLs in batches,
validates, sets NOT NULL and adds UNIQUE constraints through their index.

Interface: :func:`plan_models` and :func:`diff_models` ``(sim, original,
models=None, *, postgres, unsafe, replay) -> Plan / Diff``, from a replayed
state; :mod:`.api` replays a router's history and calls them
(``create_migration``, ``compute_diff``, ``diff_source``).  ``models``
defaults to the project's models; abstract models (``__abstract__ = True``
in the class itself) are never tables.  Renames are declared with
:func:`datalayer.migrate.autogenerate.hints.renamed_from`.

The comparison is made of: :mod:`.planner` (in order, table by table) on :mod:`.emitter`,
:mod:`.refusals`, :mod:`.tables`, :mod:`.columns` with :mod:`.casts`, :mod:`.keys`,
:mod:`.indexes`, :mod:`.names` (renames and their hints).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import peewee as pw

from ...errors import GenerationError
from ...project import DEFAULT_POSTGRES, MIN_POSTGRES
from ..ddl.spec import UnsupportedChange, shadowed_indexes, sort_models, table_spec
from ..operations.migrator import DatalayerMigrator
from .emitter import _NO_TX, _ONLINE, _ONLINE_KW, _PLAIN, _PRE, _SAFE, _TX, _state
from .names import _renames
from .outcome import Diff, Drop
from .plan import Plan, PlannedMigration
from .planner import _Planner
from .render import diff_of as _diff_of
from .split import Chunk as _Chunk
from .split import atomic as _atomic
from .split import groups as _groups
from .split import replay_calls as _replay_calls
from .tables import _explain, _table_key
from .writer import Unwritable

__all__ = ["diff_models", "plan_models"]


def _default_models() -> list[type[pw.Model]]:
    from ...project import default_models

    return default_models()  # the project's: [tool.datalayer] models, else datalayer's


def _targets(models: Iterable[Any] | None) -> list[type[pw.Model]]:
    """Return the concrete models, once each, in dependency order."""
    found: list[type[pw.Model]] = []
    for model in _default_models() if models is None else models:
        if not (isinstance(model, type) and issubclass(model, pw.Model)):
            raise GenerationError(f"{model!r} is not a peewee model class")
        if vars(model).get("__abstract__") or model in found:
            continue
        found.append(model)
    for model in found:
        for field in model._meta.refs:
            rel = field.rel_model
            if rel is not model and rel not in found and not vars(rel).get("__abstract__"):
                raise GenerationError(
                    f"{model.__name__}.{field.name} refers to {rel.__name__} (table "
                    f"{rel._meta.table_name}), which is not among the models given; "
                    "pass it as well"
                )
    shadowed = [line for model in found for line in shadowed_indexes(model)]
    if shadowed:
        raise GenerationError("cannot generate this migration", shadowed)
    by_table: dict[str, type[pw.Model]] = {}
    for model in found:
        other = by_table.setdefault(model._meta.table_name, model)
        if other is not model:
            raise GenerationError(
                f"models {other.__module__}.{other.__name__} and {model.__module__}."
                f"{model.__name__} both use table {model._meta.table_name!r}; give one "
                "another Meta.table_name or mark a base class __abstract__ = True"
            )
    return sort_models(found)


def _verify(
    sim: DatalayerMigrator, wanted: Sequence[type[pw.Model]], what: str
) -> None:
    state = _state(sim)
    want = {m._meta.table_name: m for m in wanted}
    problems: list[str] = []
    for t in sorted(set(state) | set(want)):
        if t not in state:
            problems.append(f"table {t} is missing")
        elif t not in want:
            problems.append(f"table {t} is left over")
        else:
            a, b = table_spec(state[t]), table_spec(want[t])
            if _table_key(a) != _table_key(b):
                problems.extend(_explain(a, b))
    if problems:
        raise GenerationError(
            f"the generated {what} would not reproduce the expected schema (an unsupported "
            "change, or a bug in the generator; write this migration by hand)",
            problems,
        )


def _check_postgres(postgres: int) -> None:
    if not isinstance(postgres, int) or isinstance(postgres, bool) or postgres < MIN_POSTGRES:
        raise GenerationError(
            f"target PostgreSQL version {postgres!r} is not supported; give a major version "
            f"of {MIN_POSTGRES} or later (e.g. postgres = 15 under [tool.datalayer])"
        )


def plan_models(
    sim: DatalayerMigrator,
    original: DatalayerMigrator | None,
    models: Iterable[Any] | None = None,
    *,
    postgres: int = DEFAULT_POSTGRES,
    unsafe: bool = False,
    replay: Callable[[], DatalayerMigrator] | None = None,
) -> tuple[Plan, tuple[Drop, ...]]:
    """Return the plan from the state in ``sim`` to ``models`` (and the drops it makes).

    ``sim`` and ``original`` must hold the same state (two replays of one
    history); ``sim`` ends up in the state of the models, ``original`` is
    only read, and only when there is something to do: None replays it then.
    ``replay`` returns one more such state; it is needed when the plan has
    more than one migration (to plan each one's rollback), or no ``original``.
    """
    _check_postgres(postgres)
    targets = _targets(models)
    try:
        state = _state(sim)
        tables, columns = _renames(state, targets)
        forward = _Planner(sim, forward=True, mode=_PLAIN if unsafe else _SAFE, postgres=postgres)
        forward.run(targets, tables, columns)
        warnings = tuple(forward.warnings)
        if not forward.ops:
            return Plan((), warnings, postgres, not unsafe), tuple(forward.drops)
        _verify(sim, targets, "migration")
        groups = _groups(forward.ops)
        back_tables = {new: old for old, new in tables.items()}
        back_columns = {
            back_tables.get(t, t): {new: old for old, new in cols.items()}
            for t, cols in columns.items()
        }
        rollbacks: list[list[_Chunk]] = [[] for _ in groups]
        # The VALIDATE CONSTRAINTs a transactional file's rollback leaves to the rollback of
        # the file before it (runs next, outside a transaction): per file, or for a file
        # with nothing to do going forward, inserted before it.
        tails: list[list[_Chunk]] = [[] for _ in groups]
        heads: list[list[_Chunk]] = [[] for _ in groups]
        inserted: dict[int, list[_Chunk]] = {}
        irreversible: list[str] = []
        for k in reversed(range(len(groups))):
            # The renames are in the first transactional file (after the _PRE drops, if any).
            renaming = k == next((i for i, g in enumerate(groups) if g[0].phase != _PRE), 0)
            bt, bc = (back_tables, back_columns) if renaming else ({}, {})
            if k == 0 and original is not None:
                goal = original
            elif k == 0:
                if replay is None:
                    raise GenerationError("pass original= or replay= to plan the rollback")
                goal = replay()
            else:
                if replay is None:
                    raise GenerationError(
                        "this migration is written as several files; pass replay= to plan "
                        "their rollbacks (compute_diff does)"
                    )
                goal = replay()
                _replay_calls(goal, (c.op for g in groups[:k] for c in g))
            atomic = _atomic(groups[k], transactional_phase=_TX)
            backward = _Planner(sim, forward=False, mode=_PLAIN if atomic else _ONLINE,
                                postgres=postgres, tx_rollback=atomic and not unsafe)
            goal_models = sort_models(_state(goal).values())
            backward.run(goal_models, bt, bc)
            done = keyed = len(backward.ops)
            if atomic and (backward.validations() or backward.serial_keys):
                backward.phase = _NO_TX
                for t in backward.validations():
                    backward.emit(backward.writer.call("validate_constraints", t), table=t)
                keyed = len(backward.ops)
                for t, key in backward.serial_keys:  # numbered, then the key, concurrently
                    backward._change_fields(t, [(key.name, backward.writer.field(key))],
                                            [_ONLINE_KW])
            _verify(sim, goal_models, "rollback")
            tail = backward.ops[done:]
            rollbacks[k] = heads[k] + backward.ops[:done] + tails[k]
            irreversible.extend(backward.irreversible)
            if tail:
                if k > 0 and groups[k - 1][0].phase != _TX:
                    # The validations after that rollback; the serial keys before it (it was
                    # planned from the state they make).
                    tails[k - 1] = backward.ops[done:keyed]
                    heads[k - 1] = backward.ops[keyed:]
                else:
                    inserted[k] = tail
    except (UnsupportedChange, Unwritable) as exc:
        raise GenerationError("cannot generate this migration", [str(exc)]) from None
    files: list[tuple[bool, list[_Chunk], list[_Chunk]]] = []
    for k, group in enumerate(groups):
        if k in inserted:
            files.append((False, [], inserted[k]))
        files.append((_atomic(group, transactional_phase=_TX), group,
                      rollbacks[k]))
    migrations = tuple(
        PlannedMigration(
            suffix="" if k == 0 else f"_{k + 1}",
            atomic=atomic,
            operations=tuple(c.op for c in chunks),
            rollback=tuple(c.op for c in undo),
            postgres=postgres,
        )
        for k, (atomic, chunks, undo) in enumerate(files)
    )
    warnings += tuple(irreversible)
    return Plan(migrations, warnings, postgres, not unsafe), tuple(forward.drops)


def diff_models(
    sim: DatalayerMigrator,
    original: DatalayerMigrator | None,
    models: Iterable[Any] | None = None,
    *,
    postgres: int = DEFAULT_POSTGRES,
    unsafe: bool = False,
    replay: Callable[[], DatalayerMigrator] | None = None,
) -> Diff:
    """Return the migration(s) from the state in ``sim`` to ``models``, and the rollbacks.

    See :func:`plan_models`; ``Diff.plan`` holds the plan itself.
    """
    plan, drops = plan_models(
        sim, original, models, postgres=postgres, unsafe=unsafe, replay=replay
    )
    return _diff_of(plan, drops)

