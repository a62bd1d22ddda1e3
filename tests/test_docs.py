"""The documentation: the site builds strictly, and what it shows exists.

In the manner of sqlite-utils' ``tests/test_docs.py``: every ``datalayer ...``
command line that README.md or a page under docs/ shows (in a code block or
inline code) is walked through the click command tree, so a renamed command or
option cannot linger in the docs.  The site itself is built with
``mkdocs build --strict`` (a broken link, a missing page or a docstring the API
reference cannot render fails it), here so that CI, which runs exactly the
README's test command, builds it too.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import click
import psycopg2
import pytest

from datalayer.cli import main
from tests.conftest import ENV_PREFIXES
from tests.pgserver import Server

ROOT = Path(__file__).resolve().parent.parent
README_MAX_LINES = 250

# A command in the text: `datalayer` as a word (not datalayer.models, peewee-datalayer,
# .datalayer/pg), followed by a space and something a command line can go on with.
COMMAND = re.compile(r"(?<![\w./\-\[])(?<!from )(?<!import )datalayer (?=[a-z\[\-])")
# Where a command line ends: shell operators, a comment, the end of inline code.
END = re.compile(r"&&|\|\||;|\s#|`|\s>|\)\s|\)$|\n")
PLACEHOLDER = re.compile(r"^[A-Z][A-Z_]*(\.\.\.)?$")  # NAME, N, PATH, COMMAND, NAME...


@dataclass(frozen=True)
class Shown:
    """A command line as a document shows it."""

    where: str  # file:line
    text: str


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def code_regions(text: str) -> Iterator[tuple[int, str]]:
    """(line number, text) of every fenced code block line and every inline code span.

    An inline span may run over a line break (`datalayer db
    stop`): spans are looked for in whole paragraphs, joined with spaces.
    """
    fence: str | None = None
    paragraph: list[str] = []
    start = 0

    def spans() -> Iterator[tuple[int, str]]:
        for span in re.findall(r"``?([^`]+)``?", " ".join(paragraph)):
            yield start, span

    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if fence is None and stripped.startswith(("```", "~~~")):
            yield from spans()
            paragraph = []
            fence = stripped[:3]
            continue
        if fence is not None:
            if stripped.startswith(fence):
                fence = None
            else:
                yield number, line
            continue
        if not stripped:
            yield from spans()
            paragraph = []
            continue
        if not paragraph:
            start = number
        paragraph.append(stripped)
    yield from spans()


def shown_commands() -> list[Shown]:
    found = []
    for path in doc_files():
        for number, region in code_regions(path.read_text(encoding="utf-8")):
            for match in COMMAND.finditer(region):
                rest = region[match.end():]
                cut = END.search(rest)
                line = rest[: cut.start()] if cut else rest
                found.append(Shown(f"{path.relative_to(ROOT)}:{number}", line.strip()))
    return found


def tokens(line: str) -> Iterator[str]:
    """The words of a command line, with the usage notation ([ ], |, ...) taken off."""
    depth = 0
    for raw in line.split():
        opening = raw.count("[")
        closing = raw.count("]")
        if raw == "|" and depth == 0:
            return  # a shell pipe: the command ends here
        if raw.endswith(')"') or raw.endswith(")"):
            # the end of a command substitution: "$(datalayer db url --show-password)"
            word = raw.rstrip('")')
            if word:
                yield word
            return
        word = raw.strip("[]").rstrip(",.:")
        depth += opening - closing
        if word in {"", "|", "..."}:
            continue
        for part in word.split("|"):  # --env NAME|--env-file: alternatives
            if part:
                yield part


def _option(command: click.Command, name: str) -> click.Parameter | None:
    help_option = command.get_help_option(click.Context(command))
    for param in [*command.params, *([help_option] if help_option else [])]:
        if isinstance(param, click.Option) and name in (*param.opts, *param.secondary_opts):
            return param
    return None


def check_line(line: str) -> str | None:
    """Return what is wrong with ``datalayer <line>``, or None when it all exists."""
    ctx = click.Context(main, info_name="datalayer")
    command: click.Command = main
    path = ["datalayer"]
    words = list(tokens(line))
    i = 0
    while i < len(words):
        word = words[i]
        i += 1
        if word.startswith("-") and len(word) > 1 and not word[1:].isdigit():
            name = word.split("=", 1)[0]
            param = _option(command, name) or _option(main, name)  # globals go anywhere
            if param is None:
                return f"{' '.join(path)} has no option {name}"
            assert isinstance(param, click.Option)
            takes_value = not param.is_flag and not param.count
            if takes_value and "=" not in word:
                i += 1  # its value (NAME, PATH, a number, ...)
            continue
        if isinstance(command, click.Group):
            if PLACEHOLDER.match(word):
                return None  # COMMAND: a synopsis of the group
            sub = command.get_command(ctx, word)
            if sub is None:
                return f"{' '.join(path)} has no command {word!r}"
            command = sub
            path.append(word)
            ctx = click.Context(sub, info_name=word, parent=ctx)
            continue
        # a leaf command's argument (NAME, a file, a number): nothing to look up
    return None


def test_the_docs_show_commands_at_all() -> None:
    """The parser finds the commands it should (a parser finding none would pass anything)."""
    lines = {s.text for s in shown_commands()}
    for expected in ("migrate apply", "migrate status", "migrate diff initial",
                     "migrate lint 002", "db stop", "erd --check"):
        assert any(text.startswith(expected) for text in lines), expected
    assert len(lines) > 40


def test_every_command_and_option_shown_exists() -> None:
    problems = []
    for shown in shown_commands():
        problem = check_line(shown.text)
        if problem:
            problems.append(f"{shown.where}: `datalayer {shown.text}`: {problem}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("migrate aply", "datalayer migrate has no command 'aply'"),
        ("migrate apply --dryrun", "datalayer migrate apply has no option --dryrun"),
        ("migrate diff NAME [--allow-drop] [--unsafe] [--postgres N]", None),
        ("[--env NAME | --env-file PATH] [--models MODULES] [--dir PATH] COMMAND", None),
        ("migrate status --dir db/migrations", None),
        ("--env local migrate apply --to 003", None),
        ("erd -o docs/er-diagram.md", None),
        ("erd --out x", "datalayer erd has no option --out"),
        ("migrate sql 002 | squawk", None),
        ('db url --show-password)" --directory db/migrations', None),
        ('db url --show-pasword)" --directory x', "datalayer db url has no option --show-pasword"),
        ("bogus", "datalayer has no command 'bogus'"),
    ],
)
def test_the_checker_itself(line: str, problem: str | None) -> None:
    assert check_line(line) == problem


def test_readme_stays_short() -> None:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, (
        f"README.md has {lines} lines (at most {README_MAX_LINES}): move reference and "
        "operator material to a page under docs/"
    )


def test_the_site_builds_strictly(tmp_path: Path) -> None:
    """``mkdocs build --strict``: links, nav, the generated CLI reference, the API pages."""
    site = tmp_path / "site"
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert result.returncode == 0, (
        "mkdocs build --strict failed (pip install -e '.[docs]' brings mkdocs):\n"
        + result.stdout + result.stderr
    )
    # The CLI reference is generated from the command tree: every command is on it.
    page = (site / "cli" / "index.html").read_text(encoding="utf-8")
    for usage in _usages(main, "datalayer"):
        assert usage in page, f"the CLI reference lacks {usage!r}"
    api = (site / "library" / "api" / "index.html").read_text(encoding="utf-8")
    for name in ("auth.users.authenticate", "auth.tokens.rotate_token", "db.Database.checkout"):
        assert f'id="datalayer.{name}"' in api, f"the API reference lacks datalayer.{name}"


def _usages(command: click.Command, prog: str) -> Iterator[str]:
    """The usage line of every command under ``command``, as --help prints it."""
    ctx = click.Context(command, info_name=prog)
    yield f"{prog} {' '.join(command.collect_usage_pieces(ctx))}"
    if isinstance(command, click.Group):
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            assert sub is not None
            yield from _usages(sub, f"{prog} {name}")


def test_the_readme_library_example_runs(
    pg: Server, template_db: str, tmp_path: Path
) -> None:
    """The README's library example, as a script, on a database with the tables."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## The library", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    with pg.database("dlreadme", template=template_db) as name:
        env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIXES)}
        env["DATABASE_URL"] = pg.settings(name).url(masked=False)
        env["PYTHONPATH"] = str(ROOT)
        result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr
        conn = psycopg2.connect(pg.settings(name).url(masked=False))
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT email, role FROM users ORDER BY email")
                users = cur.fetchall()
                cur.execute("SELECT count(*) FROM refresh_tokens WHERE revoked_at IS NULL")
                live = cur.fetchone()
        finally:
            conn.close()
    assert users == [("ada@example.com", "admin"), ("grace@example.com", "user")]
    assert live == (0,)  # revoke_all_for_user ran last
