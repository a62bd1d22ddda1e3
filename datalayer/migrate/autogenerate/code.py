"""Generated code as data: each step of a migration file, as values that run and that render.

A generated migration body is a list of steps, each either a :class:`MethodCall`
(``m.add_fields('users', note=pw.TextField(null=True))``) or a
:class:`ModelDef` (a ``class ...(pw.Model)`` statement, its indexes, then
``m.create_model(...)``).  Their arguments are :class:`Expr` trees: literals,
names (``m``, a model class), module attributes (``pw.TextField``),
attribute and item access and calls.  The same object is

* applied to a migrator with :meth:`~Step.apply`: each expression is
  evaluated against the migrator (``m.orm['users']`` is the table of *that*
  state) and the migrator's method is called with the values; and
* rendered to the file's text with :meth:`~Step.render`.

Nothing is parsed or executed as text: what a file would do and what the
generator replays are built from one object.  The modules a step uses
(:meth:`~Step.modules`) and the migrator methods it calls
(:meth:`~Step.calls`) are read from the tree, not from its text.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import types
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import peewee as pw

__all__ = [
    "WRAP_AT",
    "Attr",
    "Call",
    "Dict",
    "Expr",
    "Item",
    "MethodCall",
    "ModelDef",
    "Module",
    "Name",
    "Seq",
    "Step",
    "Value",
]

MODULES = {"pw": "peewee", "pw_pext": "playhouse.postgres_ext"}
"""The modules generated code names, by the name a migration file imports them as."""

WRAP_AT = 92
"""A call longer than this is written one argument per line."""

Env = Mapping[str, Any]


class Expr:
    """A Python expression of a migration file: evaluates to a value, renders to its text."""

    def evaluate(self, env: Env) -> Any:
        """Return the value of the expression, names looked up in ``env``."""
        raise NotImplementedError

    def render(self) -> str:
        """Return the expression's source text."""
        raise NotImplementedError

    def children(self) -> Sequence[Expr]:
        """Return the sub-expressions, in the order they are written."""
        return ()

    def walk(self) -> Iterator[Expr]:
        """Yield this expression and every sub-expression, in the order they are written."""
        yield self
        for child in self.children():
            yield from child.walk()


@dataclasses.dataclass(frozen=True)
class Value(Expr):
    """A literal: ``value`` is exactly what ``text`` evaluates to (see :func:`.writer.literal`)."""

    value: Any
    text: str

    def evaluate(self, env: Env) -> Any:
        # A new container at each evaluation, as a literal in a file builds one.
        return copy.deepcopy(self.value)

    def render(self) -> str:
        return self.text


@dataclasses.dataclass(frozen=True)
class Name(Expr):
    """A name bound in the migration's scope: ``m`` (the migrator) or a model class."""

    name: str

    def evaluate(self, env: Env) -> Any:
        return env[self.name]

    def render(self) -> str:
        return self.name


@dataclasses.dataclass(frozen=True)
class Module(Expr):
    """A module the migration file imports, by its name there (``pw``, ``pw_pext``)."""

    alias: str

    def evaluate(self, env: Env) -> Any:
        return importlib.import_module(MODULES[self.alias])

    def render(self) -> str:
        return self.alias


@dataclasses.dataclass(frozen=True)
class Attr(Expr):
    """``obj.name``."""

    obj: Expr
    name: str

    def evaluate(self, env: Env) -> Any:
        return getattr(self.obj.evaluate(env), self.name)

    def render(self) -> str:
        return f"{self.obj.render()}.{self.name}"

    def children(self) -> Sequence[Expr]:
        return (self.obj,)


@dataclasses.dataclass(frozen=True)
class Item(Expr):
    """``obj[key]``."""

    obj: Expr
    key: Expr

    def evaluate(self, env: Env) -> Any:
        return self.obj.evaluate(env)[self.key.evaluate(env)]

    def render(self) -> str:
        return f"{self.obj.render()}[{self.key.render()}]"

    def children(self) -> Sequence[Expr]:
        return (self.obj, self.key)


def _arguments(args: Sequence[Expr], kwargs: Sequence[tuple[str, Expr]]) -> list[str]:
    return [a.render() for a in args] + [f"{k}={v.render()}" for k, v in kwargs]


@dataclasses.dataclass(frozen=True)
class Call(Expr):
    """``func(*args, **kwargs)``, the keyword arguments in the order written."""

    func: Expr
    args: tuple[Expr, ...] = ()
    kwargs: tuple[tuple[str, Expr], ...] = ()

    def evaluate(self, env: Env) -> Any:
        func = self.func.evaluate(env)
        return func(
            *(a.evaluate(env) for a in self.args),
            **{k: v.evaluate(env) for k, v in self.kwargs},
        )

    def render(self) -> str:
        return f"{self.func.render()}({', '.join(_arguments(self.args, self.kwargs))})"

    def children(self) -> Sequence[Expr]:
        return (self.func, *self.args, *(v for _, v in self.kwargs))


@dataclasses.dataclass(frozen=True)
class Seq(Expr):
    """A list, or a tuple (``trailing``: always written with a final comma, ``(a, b,)``)."""

    items: tuple[Expr, ...]
    is_tuple: bool = False
    trailing: bool = False

    def evaluate(self, env: Env) -> Any:
        values = [item.evaluate(env) for item in self.items]
        return tuple(values) if self.is_tuple else values

    def render(self) -> str:
        inner = ", ".join(item.render() for item in self.items)
        if not self.is_tuple:
            return f"[{inner}]"
        if self.trailing or len(self.items) == 1:
            inner += ","
        return f"({inner})"

    def children(self) -> Sequence[Expr]:
        return self.items


@dataclasses.dataclass(frozen=True)
class Dict(Expr):
    """``{key: value, ...}``."""

    pairs: tuple[tuple[Expr, Expr], ...]

    def evaluate(self, env: Env) -> Any:
        return {k.evaluate(env): v.evaluate(env) for k, v in self.pairs}

    def render(self) -> str:
        return "{" + ", ".join(f"{k.render()}: {v.render()}" for k, v in self.pairs) + "}"

    def children(self) -> Sequence[Expr]:
        return tuple(e for pair in self.pairs for e in pair)


def _calls(exprs: Iterator[Expr], var: str) -> Iterator[str]:
    """Yield ``var.method`` for each call of a method of ``var`` among ``exprs``."""
    for expr in exprs:
        for node in expr.walk():
            if (isinstance(node, Call) and isinstance(node.func, Attr)
                    and node.func.obj == Name(var)):
                yield f"{var}.{node.func.name}"


def _modules(exprs: Iterator[Expr]) -> set[str]:
    return {node.alias for expr in exprs for node in expr.walk() if isinstance(node, Module)}


class Step:
    """One statement of a migration body (a migrator call, or a model created)."""

    method: str
    """The migrator method the step calls last (the one that changes the state)."""

    var: str = "m"

    def apply(self, migrator: Any) -> None:
        """Run the step on ``migrator``, as the written file would."""
        raise NotImplementedError

    def render(self) -> list[str]:
        """Return the step's lines of source."""
        raise NotImplementedError

    def exprs(self) -> Iterator[Expr]:
        """Yield the step's expressions, in the order they are written."""
        raise NotImplementedError

    def calls(self) -> list[str]:
        """Return the ``m.method`` calls the step makes, in the order they are written."""
        raise NotImplementedError

    def modules(self) -> set[str]:
        """Return the modules the step's code names (``pw``, ``pw_pext``)."""
        return _modules(self.exprs())


@dataclasses.dataclass(frozen=True)
class MethodCall(Step):
    """``m.method(*args, **kwargs)``: one call of the extended migrator."""

    method: str
    args: tuple[Expr, ...] = ()
    kwargs: tuple[tuple[str, Expr], ...] = ()

    def apply(self, migrator: Any) -> None:
        env = {self.var: migrator}
        args = [a.evaluate(env) for a in self.args]
        kwargs = {k: v.evaluate(env) for k, v in self.kwargs}
        getattr(migrator, self.method)(*args, **kwargs)

    def render(self) -> list[str]:
        args = _arguments(self.args, self.kwargs)
        one = f"{self.var}.{self.method}({', '.join(args)})"
        if len(one) <= WRAP_AT:
            return [one]
        return [f"{self.var}.{self.method}(", *(f"    {a}," for a in args), ")"]

    def exprs(self) -> Iterator[Expr]:
        yield from self.args
        yield from (v for _, v in self.kwargs)

    def calls(self) -> list[str]:
        return [f"{self.var}.{self.method}", *_calls(self.exprs(), self.var)]


@dataclasses.dataclass(frozen=True)
class ModelDef(Step):
    """A model class, its ``add_index`` calls and ``m.create_model(...)``.

    ``fields`` and ``meta`` are the class body's and ``Meta``'s assignments in
    order; ``indexes`` the arguments of ``Model.add_index(...)``, which may
    name the class (``Name(name)``).
    """

    name: str
    fields: tuple[tuple[str, Expr], ...]
    meta: tuple[tuple[str, Expr], ...]
    indexes: tuple[Expr, ...] = ()
    method: str = "create_model"

    def build(self, migrator: Any) -> type[pw.Model]:
        """Return the model class the statement defines, names looked up on ``migrator``."""
        env: dict[str, Any] = {self.var: migrator}
        # As a class statement in a module run without a __name__ (how generation ran before).
        body: dict[str, Any] = {"__module__": "builtins", "__qualname__": self.name}
        for attr, expr in self.fields:
            body[attr] = expr.evaluate(env)
        meta = {k: v.evaluate(env) for k, v in self.meta}
        body["Meta"] = type("Meta", (), {"__module__": "builtins",
                                         "__qualname__": f"{self.name}.Meta", **meta})
        model: type[pw.Model] = types.new_class(
            self.name, (pw.Model,), exec_body=lambda ns: ns.update(body)
        )
        env[self.name] = model
        for index in self.indexes:
            model.add_index(index.evaluate(env))
        return model

    def apply(self, migrator: Any) -> None:
        migrator.create_model(self.build(migrator))

    def render(self) -> list[str]:
        lines = [f"class {self.name}(pw.Model):"]
        lines += [f"    {attr} = {expr.render()}" for attr, expr in self.fields]
        lines += ["", "    class Meta:"]
        lines += [f"        {attr} = {expr.render()}" for attr, expr in self.meta]
        lines.append("")
        lines += [f"{self.name}.add_index({index.render()})" for index in self.indexes]
        lines.append(f"{self.var}.create_model({self.name})")
        return lines

    def exprs(self) -> Iterator[Expr]:
        yield from (v for _, v in self.fields)
        yield from (v for _, v in self.meta)
        yield from self.indexes

    def calls(self) -> list[str]:
        return [*_calls(self.exprs(), self.var), f"{self.var}.{self.method}"]

    def modules(self) -> set[str]:
        return {"pw"} | super().modules()
