"""The project: which models and which migrations folder the tooling works on.

A project says so in the nearest ``pyproject.toml`` with a ``[tool.datalayer]``
table, looking upward from the current directory::

    [tool.datalayer]
    models = ["datalayer.models", "myapp.models"]   # modules
    migrations = "db/migrations"                      # relative to this file
    postgres = 15                                     # target server version

Its folder is where relative paths start and is put on ``sys.path`` when the
model modules are imported, so every command works from any subfolder.
``DATALAYER_MODELS`` (comma-separated) and ``--models`` override ``models``;
``DATALAYER_MIGRATIONS_DIR`` and ``--dir`` override ``migrations``.  With no
configuration at all: datalayer's own models and ``./migrations``.

A module contributes every concrete (not ``__abstract__``) peewee model it
defines, or its ``MODELS`` sequence when it has one (``datalayer.models``
does: the auth models are defined in :mod:`datalayer.auth`).
"""

from __future__ import annotations

import dataclasses
import errno
import importlib
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._pyproject import find_pyproject
from .errors import ProjectError

if TYPE_CHECKING:
    import peewee as pw

__all__ = [
    "DEFAULT_MODELS",
    "DEFAULT_POSTGRES",
    "MAX_POSTGRES",
    "MIN_POSTGRES",
    "Project",
    "default_migrations_dir",
    "default_models",
    "find_pyproject",
    "import_models",
    "load_project",
    "postgres_problem",
]

DEFAULT_MODELS: tuple[str, ...] = ("datalayer.models",)
MIN_POSTGRES = 13
"""The lowest PostgreSQL major version datalayer supports (and targets by default): every
table's primary key defaults to ``gen_random_uuid()``, in core only from 13."""
DEFAULT_POSTGRES = MIN_POSTGRES
MAX_POSTGRES = 99
"""The highest major version accepted (a typo guard: 150 for 15)."""
_MAX_POSTGRES = MAX_POSTGRES


def postgres_problem(value: object) -> str | None:
    """Say what is wrong with ``value`` as a target PostgreSQL major version, else None.

    The one check behind ``[tool.datalayer] postgres`` and every ``--postgres``.
    """
    if value == 12 and not isinstance(value, bool):
        return (
            f"must be a major version number from {MIN_POSTGRES} to {MAX_POSTGRES}, not 12: "
            "every table's primary key defaults to gen_random_uuid(), which PostgreSQL has in "
            "core only from 13 (upgrade the server to 13 or later)"
        )
    if isinstance(value, bool) or not isinstance(value, int) or not (
        MIN_POSTGRES <= value <= MAX_POSTGRES
    ):
        return (
            f"must be a major version number from {MIN_POSTGRES} to {MAX_POSTGRES} (e.g. 15), "
            f"not {value!r}"
        )
    return None
_KEYS = {"models", "migrations", "postgres", "unsafe"}


@dataclasses.dataclass(frozen=True)
class Project:
    """What the tooling works on; ``root`` is None when no pyproject.toml configures it."""

    root: Path | None
    models: tuple[str, ...] = DEFAULT_MODELS
    migrations: Path = Path("migrations")
    postgres: int = DEFAULT_POSTGRES
    unsafe: bool = False
    pyproject: Path | None = None

    @property
    def base(self) -> Path:
        """The folder relative paths start from: the project's, else the current one."""
        return self.root if self.root is not None else Path.cwd()

    def resolve(self, path: str | Path) -> Path:
        """Return ``path`` relative to the project folder (absolute paths unchanged)."""
        path = Path(path)
        return path if path.is_absolute() else self.base / path

    def load_models(self) -> list[Any]:
        """Import the model modules and return their concrete models, in dependency order."""
        return import_models(self.models, self.root)


def default_models() -> list[Any]:
    """The models a library call uses when given none: the project's (see :func:`load_project`)."""
    return load_project().load_models()


def default_migrations_dir(settings: Any = None) -> Path:
    """The migrations folder a library call uses when given none.

    ``settings.migrations_dir`` when it was configured (``DATALAYER_MIGRATIONS_DIR``,
    possibly from a .env file), else the project's (``[tool.datalayer] migrations``),
    else ``./migrations`` — the folder the CLI would use from here.
    """
    configured = getattr(settings, "migrations_dir", None)
    if configured is not None and Path(configured) != Path("migrations"):
        return Path(configured)
    return load_project().migrations


def _module_list(value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        items = [part.strip() for part in value.split(",")]
    elif isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        items = [v.strip() for v in value]
    else:
        raise ProjectError(f"{where} must be a list of module names, e.g. [\"myapp.models\"]")
    items = [item for item in items if item]
    if not items:
        raise ProjectError(f"{where} names no module; e.g. [\"datalayer.models\", \"app.models\"]")
    for item in items:
        if not all(part.isidentifier() for part in item.split(".")):
            raise ProjectError(f"{where}: {item!r} is not a module name (dotted, like app.models)")
    return tuple(dict.fromkeys(items))


def load_project(
    *,
    start: Path | None = None,
    models: str | Sequence[str] | None = None,
    migrations: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Project:
    """Resolve the project from pyproject.toml, the environment and explicit overrides.

    ``models`` / ``migrations`` are the ``--models`` / ``--dir`` options (a
    relative ``--dir`` is taken from the current directory, as shells do).

    :raises ProjectError: with one line naming the setting and what to write.
    """
    env = os.environ if environ is None else environ
    found = find_pyproject(start)
    root: Path | None = None
    table: dict[str, Any] = {}
    pyproject: Path | None = None
    if found is not None:
        pyproject, table = found
        root = pyproject.parent
        unknown = sorted(set(table) - _KEYS)
        if unknown:
            raise ProjectError(
                f"{pyproject}: unknown key(s) in [tool.datalayer]: {', '.join(unknown)}; "
                f"known: {', '.join(sorted(_KEYS))}"
            )
    where = f"{pyproject}: [tool.datalayer]" if pyproject else "[tool.datalayer]"
    base = root if root is not None else (start or Path.cwd())

    if models is not None:
        chosen = _module_list(models, "--models")
    elif env.get("DATALAYER_MODELS", "").strip():
        chosen = _module_list(env["DATALAYER_MODELS"], "DATALAYER_MODELS")
    elif "models" in table:
        chosen = _module_list(table["models"], f"{where} models")
    else:
        chosen = DEFAULT_MODELS

    if migrations is not None:
        folder = Path(migrations)
        folder = folder if folder.is_absolute() else (start or Path.cwd()) / folder
    elif env.get("DATALAYER_MIGRATIONS_DIR", "").strip():
        folder = base / env["DATALAYER_MIGRATIONS_DIR"].strip()
    elif "migrations" in table:
        value = table["migrations"]
        if not isinstance(value, str) or not value.strip() or "\x00" in value:
            raise ProjectError(f"{where} migrations must be a folder path, e.g. \"db/migrations\"")
        folder = base / value
    else:
        folder = base / "migrations"

    postgres = table.get("postgres", DEFAULT_POSTGRES)
    problem = postgres_problem(postgres)
    if problem is not None:
        raise ProjectError(f"{where} postgres {problem}")
    unsafe = table.get("unsafe", False)
    if not isinstance(unsafe, bool):
        raise ProjectError(f"{where} unsafe must be true or false, not {unsafe!r}")
    return Project(
        root=root,
        models=chosen,
        migrations=_tidy(folder),
        postgres=postgres,
        unsafe=unsafe,
        pyproject=pyproject,
    )


def _tidy(path: Path) -> Path:
    """Show paths under the current directory relative to it (shorter messages).

    :raises ProjectError: for a symlink loop (which no command could use).
    """
    try:
        full = path.resolve()
    except (RuntimeError, OSError) as exc:  # Python < 3.13 raises RuntimeError for a loop
        raise ProjectError(
            f"migrations folder {path} cannot be resolved ({_why(exc)}); point it at a real "
            "folder ([tool.datalayer] migrations, DATALAYER_MIGRATIONS_DIR or --dir)"
        ) from None
    try:
        return full.relative_to(Path.cwd().resolve())
    except ValueError:
        return full


def _why(exc: BaseException) -> str:
    if isinstance(exc, RuntimeError) or getattr(exc, "errno", None) == errno.ELOOP:
        return "a symlink loop"
    return getattr(exc, "strerror", None) or type(exc).__name__


def import_models(modules: Sequence[str], root: Path | None = None) -> list[Any]:
    """Import ``modules`` (with ``root`` on ``sys.path``) and return their concrete models.

    :raises ProjectError: a module that fails to import (naming it and why), or
        that defines no model.
    """
    import peewee as pw

    if root is not None and str(root) not in sys.path:
        sys.path.insert(0, str(root))
    found: list[Any] = []
    scanned: set[Any] = set()  # found by looking at a module's classes (not its MODELS)
    for name in modules:
        try:
            module = importlib.import_module(name)
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"
            raise ProjectError(
                f"cannot import model module {name!r} ({reason}); check [tool.datalayer] "
                "models, DATALAYER_MODELS or --models"
            ) from None
        listed = getattr(module, "MODELS", None)
        if isinstance(listed, (list, tuple)):
            candidates = list(listed)
        else:
            candidates = [
                value
                for value in vars(module).values()
                if isinstance(value, type)
                and issubclass(value, pw.Model)
                and (value.__module__ == name or value.__module__.startswith(name + ".")
                     or _is_through_model(value))
            ]
            scanned.update(candidates)
            candidates = [m for m in candidates if not _is_base(m, candidates)]
        models = [m for m in candidates if not vars(m).get("__abstract__")]
        if not models:
            raise ProjectError(
                f"model module {name!r} defines no concrete peewee model; "
                "check [tool.datalayer] models, DATALAYER_MODELS or --models"
            )
        for model in models:
            if model not in found:
                found.append(model)
    _check_references(found)
    return sort_models(found)


def sort_models(models: Iterable[type[pw.Model]]) -> list[type[pw.Model]]:
    """Return ``models`` in dependency order (peewee's ``sort_models``)."""
    import peewee

    sort: Any = peewee.sort_models  # type: ignore[attr-defined]  # not in the stubs
    result: list[type[pw.Model]] = sort(list(models))
    return result


def _is_through_model(model: Any) -> bool:
    """True for a many-to-many through model peewee made (``get_through_model()``).

    Its ``__module__`` is ``peewee``, whichever module holds it: it is found as the
    through model of a ``ManyToManyField`` of one of the tables it refers to.
    """
    import peewee as pw

    if model.__module__ != "peewee":
        return False
    for fk in model._meta.refs:
        for field in fk.rel_model._meta.manytomany.values():
            made: Any = field  # the through model made so far (peewee's private attribute)
            if isinstance(field, pw.ManyToManyField) and made._through_model is model:
                return True
    return False


def _is_base(model: Any, models: Sequence[Any]) -> bool:
    """True for a base class of other models (``class Base(pw.Model)``), not a table.

    A class that another model of the module subclasses and that declares no field
    of its own besides its primary key is where shared fields, ``Meta`` and methods
    live: peewee would give it a table (``base``) that nothing uses.  A class with
    fields of its own is a table even when subclassed; ``__abstract__ = True`` marks
    any class as a base explicitly.
    """
    if not any(other is not model and issubclass(other, model) for other in models):
        return False
    inherited: set[str] = set()
    for parent in model.__mro__[1:]:
        meta = getattr(parent, "_meta", None)
        inherited.update(getattr(meta, "fields", {}) or {})
    own = [
        field for name, field in model._meta.fields.items()
        if name not in inherited and not field.primary_key
    ]
    return not own


def _check_references(models: list[Any]) -> None:
    for model in models:
        for field in model._meta.refs:
            rel = field.rel_model
            if rel is model or rel in models or vars(rel).get("__abstract__"):
                continue
            module = rel.__module__
            if module.startswith("datalayer."):
                module = "datalayer.models"
            raise ProjectError(
                f"{model.__module__}.{model.__name__}.{field.name} refers to "
                f"{rel.__module__}.{rel.__name__} (table {rel._meta.table_name}), which is "
                f"not in the model set; add {module!r} to [tool.datalayer] models"
            )
