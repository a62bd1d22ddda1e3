"""``datalayer erd``: the models as a Mermaid ER diagram (no database needed)."""

from __future__ import annotations

import contextlib
from pathlib import Path

import click

__all__ = ["DEFAULT_OUTPUT", "erd"]

#: Where ``datalayer erd`` (here: ``make er-diagram``) writes and ``--check`` looks by default.
DEFAULT_OUTPUT = Path("docs/er-diagram.md")


_MAKE_TARGET = "er-diagram"


def _make_target(folder: Path) -> str | None:
    """Return ``er-diagram`` when ``folder``'s Makefile has that target (this repository's)."""
    try:
        text = (folder / "Makefile").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    found = any(line.startswith(f"{_MAKE_TARGET}:") for line in text.splitlines())
    return _MAKE_TARGET if found else None


@click.command()
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="PATH",
    help="Write the markdown page here instead of printing it "
    f"(with --check: the file to compare; default {DEFAULT_OUTPUT}).",
)
@click.option(
    "--check",
    is_flag=True,
    help="Write nothing; exit 1 if the file differs from the models (for CI).",
)
@click.pass_context
def erd(ctx: click.Context, output: Path | None, check: bool) -> None:
    """Draw the models as a Mermaid ER diagram (markdown page).

    Without --output the page goes to stdout.  --check compares it with the
    committed file (docs/er-diagram.md unless --output says otherwise) and
    exits 1 when that file is missing or stale.
    """
    from ..erd import render_markdown
    from . import CliContext

    cli = ctx.ensure_object(CliContext)
    make = _make_target(cli.project().base)
    text = render_markdown(cli.models(), cli.project().models, make_target=make)
    if check:
        path = output if output is not None else cli.project().resolve(DEFAULT_OUTPUT)
        try:
            current = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            current = None
        if current != text:
            state = "is missing" if current is None else "is out of date with the models"
            shown = path
            with contextlib.suppress(ValueError):
                shown = path.resolve().relative_to(Path.cwd().resolve())
            run = f"`datalayer erd --output {shown}`"
            if make:
                run = f"`make {make}` (or {run})"
            click.echo(f"{shown} {state}; run {run} and commit it.", err=True)
            ctx.exit(1)
        click.echo(f"{path} is up to date.")
        return
    if output is None:
        click.echo(text, nl=False)
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text, encoding="utf-8", newline="\n")
    click.echo(f"wrote {output}", err=True)
