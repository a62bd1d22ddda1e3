"""The Mermaid ER diagram: structure, cardinalities, determinism, and ``datalayer erd``.

No database and no node: the diagram is parsed here with a strict grammar (the
subset of Mermaid's ``erDiagram`` syntax the renderer may emit), so a line
Mermaid would reject fails a test.  scripts/check_mermaid.sh runs Mermaid's
real parser on the committed file.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import peewee as pw
import pytest
from click.testing import CliRunner

from datalayer.cli import main
from datalayer.erd import MERMAID_WORD, render_markdown, render_mermaid
from datalayer.models import MODELS, BaseModel, RefreshToken, User

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "docs" / "er-diagram.md"

WORD = r"[A-Za-z_][A-Za-z0-9_-]*"
ENTITY_OPEN = re.compile(rf"^    (?P<name>{WORD}) \{{$")
ATTRIBUTE = re.compile(
    rf"^        (?P<type>{WORD}) (?P<name>{WORD})"
    r"(?: (?P<keys>(?:PK|FK|UK)(?:,(?:PK|FK|UK))*))?"
    r'(?: "(?P<comment>[^"]*)")?$'
)
RELATION = re.compile(
    rf"^    (?P<parent>{WORD}) (?P<left>\|\||\|o)--(?P<right>o\{{|o\|) (?P<child>{WORD})"
    r' : "(?P<label>[^"]+)"$'
)


@dataclass
class Attr:
    type: str
    name: str
    keys: list[str]
    notes: list[str]


@dataclass
class Diagram:
    tables: dict[str, list[Attr]] = field(default_factory=dict)
    relations: list[tuple[str, str, str, str, str]] = field(default_factory=list)


def parse(text: str) -> Diagram:
    """Parse renderer output strictly; any line outside the grammar fails."""
    assert text.endswith("\n") and not text.endswith("\n\n")
    assert "\t" not in text
    lines = text.splitlines()
    assert lines[0] == "erDiagram"
    diagram = Diagram()
    current: list[Attr] | None = None
    for number, line in enumerate(lines[1:], start=2):
        if current is not None:
            if line == "    }":
                current = None
                continue
            m = ATTRIBUTE.match(line)
            assert m, f"line {number} is not a Mermaid attribute: {line!r}"
            keys = m["keys"].split(",") if m["keys"] else []
            assert len(keys) == len(set(keys)), line
            notes = m["comment"].split("; ") if m["comment"] is not None else []
            current.append(Attr(m["type"], m["name"], keys, notes))
            continue
        if not line:
            continue
        m = ENTITY_OPEN.match(line)
        if m:
            assert m["name"] not in diagram.tables, f"table {m['name']} drawn twice"
            current = diagram.tables.setdefault(m["name"], [])
            continue
        m = RELATION.match(line)
        assert m, f"line {number} is not a Mermaid entity or relation: {line!r}"
        diagram.relations.append((m["parent"], m["left"], m["right"], m["child"], m["label"]))
    assert current is None, "unclosed entity block"
    return diagram


@pytest.fixture(scope="module")
def diagram() -> Diagram:
    return parse(render_mermaid(MODELS))


def attrs(diagram: Diagram, table: str) -> dict[str, Attr]:
    return {a.name: a for a in diagram.tables[table]}


# -- the package's models ---------------------------------------------------


def test_every_table_and_column_in_declaration_order(diagram: Diagram) -> None:
    assert list(diagram.tables) == ["users", "refresh_tokens"]
    for model in MODELS:
        expected = [f.column_name for f in model._meta.sorted_fields]
        assert [a.name for a in diagram.tables[model._meta.table_name]] == expected


def test_abstract_base_is_not_a_table() -> None:
    assert parse(render_mermaid((BaseModel, *MODELS))).tables.keys() == {"users", "refresh_tokens"}


@pytest.mark.parametrize(
    ("table", "column", "type_", "keys"),
    [
        ("users", "users_id", "uuid", ["PK"]),
        ("users", "email", "varchar", ["UK"]),
        ("users", "password_hash", "varchar", []),
        ("users", "role", "varchar", []),
        ("users", "is_active", "boolean", []),
        ("users", "created_at", "timestamptz", []),
        ("refresh_tokens", "refresh_tokens_id", "uuid", ["PK"]),
        ("refresh_tokens", "users_id", "uuid", ["FK"]),
        ("refresh_tokens", "token_hash", "varchar", ["UK"]),
        ("refresh_tokens", "family_id", "uuid", []),
        ("refresh_tokens", "expires_at", "timestamptz", []),
        ("refresh_tokens", "replaced_by", "uuid", ["FK"]),
    ],
)
def test_types_and_markers(
    diagram: Diagram, table: str, column: str, type_: str, keys: list[str]
) -> None:
    attr = attrs(diagram, table)[column]
    assert (attr.type, attr.keys) == (type_, keys)


def test_only_expected_columns_carry_markers(diagram: Diagram) -> None:
    marked = {
        (table, a.name): a.keys for table, cols in diagram.tables.items() for a in cols if a.keys
    }
    assert marked == {
        ("users", "users_id"): ["PK"],
        ("users", "email"): ["UK"],
        ("refresh_tokens", "refresh_tokens_id"): ["PK"],
        ("refresh_tokens", "users_id"): ["FK"],
        ("refresh_tokens", "token_hash"): ["UK"],
        ("refresh_tokens", "replaced_by"): ["FK"],
    }


def test_nullable_exactly_where_the_model_allows_null(diagram: Diagram) -> None:
    for model in MODELS:
        table = attrs(diagram, model._meta.table_name)
        for f in model._meta.sorted_fields:
            assert ("nullable" in table[f.column_name].notes) == bool(f.null), f.column_name


@pytest.mark.parametrize(
    ("table", "column", "notes"),
    [
        ("users", "users_id", ["default gen_random_uuid()"]),
        ("users", "email", ["varchar(254)", "check (email = lower(email))"]),
        ("users", "display_name", ["varchar(100)", "nullable"]),
        ("users", "role", ["varchar(5)", "default 'user'", "one of: user, admin"]),
        ("users", "is_active", ["default true"]),
        ("users", "last_login_at", ["nullable"]),
        ("users", "created_at", ["default now()"]),
        ("users", "updated_at", ["default now()"]),
        ("refresh_tokens", "users_id", ["indexed", "on delete cascade"]),
        ("refresh_tokens", "family_id", ["indexed"]),
        ("refresh_tokens", "replaced_by", ["nullable", "indexed", "on delete set null"]),
        ("refresh_tokens", "ip", ["varchar(45)", "nullable"]),
    ],
)
def test_comments(diagram: Diagram, table: str, column: str, notes: list[str]) -> None:
    assert attrs(diagram, table)[column].notes == notes


def test_relations_and_cardinalities(diagram: Diagram) -> None:
    assert diagram.relations == [
        # a token has exactly one user; a user has zero or more tokens
        ("users", "||", "o{", "refresh_tokens", "users_id"),
        # a token is replaced by zero or one token; a token replaces zero or more
        ("refresh_tokens", "|o", "o{", "refresh_tokens", "replaced_by"),
    ]


def test_relation_lines_verbatim() -> None:
    text = render_mermaid(MODELS)
    assert '    users ||--o{ refresh_tokens : "users_id"\n' in text
    assert '    refresh_tokens |o--o{ refresh_tokens : "replaced_by"\n' in text


def test_every_word_matches_mermaids_pattern(diagram: Diagram) -> None:
    for table, cols in diagram.tables.items():
        assert MERMAID_WORD.match(table)
        for a in cols:
            assert MERMAID_WORD.match(a.type), a
            assert MERMAID_WORD.match(a.name), a
            assert "(" not in a.type  # older Mermaid rejects varchar(254) as a type


# -- derivation on models made for the test ----------------------------------

_test_db = pw.PostgresqlDatabase(None)


class _Base(pw.Model):
    class Meta:
        database = _test_db
        legacy_table_names = False


class Account(_Base):
    id = pw.AutoField(column_name="account_id")


class Profile(_Base):
    account = pw.ForeignKeyField(Account, unique=True, column_name="account_id")
    mentor = pw.ForeignKeyField(
        Account, null=True, unique=True, column_name="mentor_id", backref="mentees"
    )
    nickname = pw.CharField(max_length=20, default="anon")
    score = pw.DecimalField(max_digits=10, decimal_places=2, null=True)
    big = pw.BigIntegerField(index=True)
    bio = pw.TextField(null=True)

    class Meta:
        indexes = ((("nickname", "score"), True), (("big", "bio"), False))


class Membership(_Base):
    account = pw.ForeignKeyField(Account, column_name="account_id", on_delete="CASCADE")
    group = pw.CharField(column_name="group_name")

    class Meta:
        primary_key = pw.CompositeKey("account", "group")


class AccountSettings(_Base):
    account = pw.ForeignKeyField(Account, primary_key=True, column_name="account_id")
    theme = pw.CharField(null=True)


TEST_MODELS = (Account, Profile, Membership, AccountSettings)


def test_derived_cardinalities() -> None:
    assert parse(render_mermaid(TEST_MODELS)).relations == [
        ("account", "||", "o|", "profile", "account_id"),  # unique FK: one-to-one
        ("account", "|o", "o|", "profile", "mentor_id"),  # nullable unique FK
        ("account", "||", "o{", "membership", "account_id"),  # part of a composite PK
        ("account", "||", "o|", "account_settings", "account_id"),  # the PK is the FK
    ]


def test_derived_columns() -> None:
    d = parse(render_mermaid(TEST_MODELS))
    assert attrs(d, "account")["account_id"] == Attr("serial", "account_id", ["PK"], [])
    profile = attrs(d, "profile")
    assert profile["account_id"].keys == ["FK", "UK"]
    assert profile["mentor_id"].keys == ["FK", "UK"]
    assert profile["mentor_id"].notes == ["nullable"]
    assert profile["nickname"] == Attr(
        "varchar", "nickname", [], ["varchar(20)", "app default 'anon'", "unique (nickname, score)"]
    )
    assert profile["score"] == Attr(
        "numeric", "score", [], ["numeric(10, 2)", "nullable", "unique (nickname, score)"]
    )
    assert profile["big"] == Attr("bigint", "big", [], ["index (big, bio)", "indexed"])
    assert profile["bio"] == Attr("text", "bio", [], ["nullable", "index (big, bio)"])
    membership = attrs(d, "membership")
    assert membership["account_id"].keys == ["PK", "FK"]
    assert membership["account_id"].notes == ["on delete cascade"]
    assert membership["group_name"].keys == ["PK"]
    assert attrs(d, "account_settings")["account_id"].keys == ["PK", "FK"]


def test_foreign_key_to_a_model_not_drawn_still_appears() -> None:
    d = parse(render_mermaid((Profile,)))
    assert list(d.tables) == ["profile"]
    assert [r[0] for r in d.relations] == ["account", "account"]


def test_a_name_mermaid_cannot_show_is_an_error() -> None:
    class Odd(_Base):
        name = pw.CharField(column_name="full name")

    with pytest.raises(ValueError, match=r"column odd\.full name"):
        render_mermaid((Odd,))


def test_same_model_twice_is_drawn_once() -> None:
    assert render_mermaid((User, RefreshToken, User)) == render_mermaid((User, RefreshToken))


# -- determinism and the committed page ------------------------------------


def test_output_is_deterministic_across_processes() -> None:
    code = (
        "import sys; from datalayer.erd import render_markdown; from datalayer.models "
        "import MODELS; sys.stdout.write(render_markdown(MODELS))"
    )
    outputs = set()
    for seed in ("0", "1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run(
            [sys.executable, "-c", code],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        outputs.add(out)
    assert outputs == {render_markdown(MODELS)}


def test_markdown_page() -> None:
    page = render_markdown(MODELS)
    assert page.startswith("# ER diagram\n")
    assert "do not edit it by hand" in page
    assert "make er-diagram" in page and "datalayer erd" in page
    blocks = re.findall(r"```mermaid\n(.*?)```", page, flags=re.S)
    assert blocks == [render_mermaid(MODELS)]
    assert page.endswith("```\n")


def test_committed_diagram_is_current() -> None:
    assert COMMITTED.read_text(encoding="utf-8") == render_markdown(MODELS), (
        "docs/er-diagram.md is stale: run `make er-diagram` and commit it"
    )


# -- the CLI -----------------------------------------------------------------


def test_cli_prints_to_stdout() -> None:
    result = CliRunner().invoke(main, ["erd"])
    assert result.exit_code == 0, result.output
    assert result.stdout == render_markdown(MODELS)


def test_cli_writes_output(tmp_path: Path) -> None:
    target = tmp_path / "nested" / "erd.md"
    result = CliRunner().invoke(main, ["erd", "--output", str(target)])
    assert result.exit_code == 0, result.output
    assert target.read_text(encoding="utf-8") == render_markdown(MODELS)
    assert result.stdout == ""


def test_check_fresh_file_exits_0(tmp_path: Path) -> None:
    target = tmp_path / "erd.md"
    target.write_text(render_markdown(MODELS), encoding="utf-8")
    result = CliRunner().invoke(main, ["erd", "--check", "--output", str(target)])
    assert result.exit_code == 0, result.output
    assert "up to date" in result.stdout


def test_check_stale_file_exits_1_and_writes_nothing(tmp_path: Path) -> None:
    target = tmp_path / "erd.md"
    stale = render_markdown(MODELS).replace("varchar email UK", "varchar mail UK")
    target.write_text(stale, encoding="utf-8")
    result = CliRunner().invoke(main, ["erd", "--check", "--output", str(target)])
    assert result.exit_code == 1
    assert "out of date" in result.stderr and "make er-diagram" in result.stderr
    assert target.read_text(encoding="utf-8") == stale


def test_check_missing_file_exits_1(tmp_path: Path) -> None:
    target = tmp_path / "erd.md"
    result = CliRunner().invoke(main, ["erd", "--check", "--output", str(target)])
    assert result.exit_code == 1
    assert "missing" in result.stderr and "make er-diagram" in result.stderr
    assert not target.exists()


def test_check_defaults_to_docs_er_diagram(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    result = runner.invoke(main, ["erd", "--check"])
    assert result.exit_code == 1
    assert "docs/er-diagram.md is missing" in result.stderr
    assert runner.invoke(main, ["erd", "--output", "docs/er-diagram.md"]).exit_code == 0
    assert runner.invoke(main, ["erd", "--check"]).exit_code == 0


def test_check_passes_on_the_committed_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    result = CliRunner().invoke(main, ["erd", "--check"])
    assert result.exit_code == 0, result.output


def test_help() -> None:
    result = CliRunner().invoke(main, ["erd", "--help"])
    assert result.exit_code == 0
    assert "Mermaid" in result.output and "--check" in result.output


def test_partial_unique_index_is_a_note_not_uk() -> None:
    class Handle(_Base):
        nick = pw.CharField(null=True)

    Handle.add_index(Handle.index(Handle.nick, unique=True, where=Handle.nick.is_null(False)))
    (attr,) = [a for a in parse(render_mermaid((Handle,))).tables["handle"] if a.name == "nick"]
    assert attr.keys == []
    assert attr.notes == ["varchar(255)", "nullable", "unique (nick) where (nick IS NOT NULL)"]


def test_comment_text_cannot_break_out_of_the_quotes() -> None:
    class Quote(_Base):
        said = pw.CharField(default='say "hi"\nthere', constraints=[pw.Check("\"said\" <> ''")])

    (line,) = [ln for ln in render_mermaid((Quote,)).splitlines() if " said " in ln]
    attr = ATTRIBUTE.match(line)
    assert attr is not None, line
    assert attr["comment"] == "varchar(255); app default 'say 'hi'\\nthere'; check (said <> '')"
