"""examples/app: an application's own models and migrations, with datalayer pip-installed.

datalayer is installed NON-editable into a fresh virtual environment (as an
application would have it), then the CLI runs from a copy of the example's
folder — from a subfolder, so the project is found upward — on a real
PostgreSQL server and on the embedded default.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest

from datalayer import embedded
from tests.conftest import ENV_PREFIXES
from tests.pgserver import Server

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "examples" / "app"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh virtual environment with datalayer installed from the source tree, not editable."""
    where = tmp_path_factory.mktemp("venv") / "v"
    subprocess.run([sys.executable, "-m", "venv", str(where)], check=True)
    python = str(where / "bin" / "python")
    pip = [python, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    # Build from a clean copy: the checkout may hold venvs and caches that are not the package.
    src = tmp_path_factory.mktemp("src") / "datalayer"
    shutil.copytree(
        ROOT,
        src,
        ignore=shutil.ignore_patterns(
            ".git", ".ci", ".venv", "venv", ".tox", "*.egg-info", "build", "dist", ".datalayer",
            "__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache", ".hypothesis",
        ),
    )
    subprocess.run([*pip, f"{src}[embedded]"], check=True, timeout=600)
    yield where


def app_env(venv: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIXES)}
    env.pop("PYTHONPATH", None)
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(venv)
    env.update(extra)
    return env


def run(cmd: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=300)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


def tables(url: str) -> set[str]:
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            return {row[0] for row in cur.fetchall()}
    finally:
        conn.close()


@pytest.fixture
def app(tmp_path: Path) -> Path:
    copy = tmp_path / "app"
    shutil.copytree(APP, copy, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


def test_installed_package_is_not_the_checkout(venv: Path, tmp_path: Path) -> None:
    out = run([str(venv / "bin" / "python"), "-c", "import datalayer; print(datalayer.__file__)"],
              app_env(venv), tmp_path)
    assert str(venv) in ok(out) and str(ROOT) not in out.stdout


def test_app_flow_on_a_real_server(venv: Path, app: Path, pg: Server) -> None:
    bin_ = venv / "bin"
    with pg.database("dlapp") as name, pg.database("dlappup") as upstream_name:
        url = pg.settings(name).url(masked=False)
        upstream_url = pg.settings(upstream_name).url(masked=False)
        env = app_env(venv, DATABASE_URL=url, DATALAYER_DEV_DATABASE_URL=pg.admin.url(masked=False))
        sub = app / "blog"  # a subfolder: the project is found upward

        out = ok(run([str(bin_ / "datalayer"), "migrate", "diff", "again"], env, sub))
        assert "no changes" in out
        out = ok(run([str(bin_ / "datalayer"), "migrate", "apply"], env, sub))
        assert "applied 001_initial" in out
        assert {"users", "posts", "refresh_tokens"} <= tables(url)
        ok(run([str(bin_ / "datalayer"), "migrate", "status"], env, sub))
        out = ok(run([str(bin_ / "datalayer"), "migrate", "check"], env, sub))
        assert "ok:" in out
        out = ok(run([str(bin_ / "datalayer"), "migrate", "drift"], env, sub))
        assert "no drift" in out
        out = ok(run([str(bin_ / "datalayer"), "erd"], env, sub))
        assert "posts" in out and "users ||--o{ posts" in out

        # The application's own code uses the models on the migrated database.
        script = (
            "import datalayer\n"
            "from blog.models import Post\n"
            "datalayer.connect()\n"
            "u = datalayer.create_user('ada@example.com', 'correct horse battery staple')\n"
            "with datalayer.database.checkout():\n"
            "    Post.create(author=u.id, title='hello')\n"
            "    print(Post.select().where(Post.author == u.id).count())\n"
        )
        out = ok(run([str(bin_ / "python"), "-c", script], env, app))
        assert out.strip().endswith("1")

        # A model change: generated, applied, checked, from the project folder itself.
        models = app / "blog" / "models.py"
        models.write_text(
            models.read_text().replace(
                "    published_at =", "    summary = pw.TextField(null=True)\n    published_at ="
            )
        )
        out = ok(run([str(bin_ / "datalayer"), "migrate", "diff", "add_summary"], env, app))
        assert "002_add_summary" in out
        ok(run([str(bin_ / "datalayer"), "migrate", "apply"], env, app))
        ok(run([str(bin_ / "datalayer"), "migrate", "check"], env, app))

        # Upstream peewee-migrate applies the same files to another database.
        out = ok(run([str(bin_ / "pw_migrate"), "migrate", "--database", upstream_url,
                      "--directory", "db/migrations"], env, app))
        assert {"users", "posts", "refresh_tokens"} <= tables(upstream_url)
        up_env = {**env, "DATABASE_URL": upstream_url}
        out = ok(run([str(bin_ / "datalayer"), "migrate", "status"], up_env, app))
        assert "2 applied, 0 pending" in out


def test_app_on_the_embedded_default(venv: Path, app: Path) -> None:
    # Outside pytest's tmp dirs: as root the server runs as another user (see test_examples).
    base = Path(tempfile.mkdtemp(prefix="datalayer-app-"))
    datadir = base / "pg"
    env = app_env(venv, DATALAYER_EMBEDDED_DIR=str(datadir))
    try:
        bin_ = venv / "bin"
        out = ok(run([str(bin_ / "datalayer"), "migrate", "apply"], env, app))
        assert "applied 001_initial" in out
        out = ok(run([str(bin_ / "datalayer"), "migrate", "status"], env, app))
        assert "1 applied, 0 pending" in out
    finally:
        embedded.remove_server(datadir)
        shutil.rmtree(base, ignore_errors=True)


def test_bad_model_module_is_one_line(venv: Path, app: Path, pg: Server) -> None:
    env = app_env(venv, DATALAYER_MODELS="blog.nosuchmodule")
    result = run([str(venv / "bin" / "datalayer"), "migrate", "diff", "x"], env, app)
    assert result.returncode == 1
    assert "blog.nosuchmodule" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
