"""poststack installs like a tool: the wheel built from this source, installed with pipx into
a directory of its own (as the README says), runs ``poststack demo`` from a directory far
from the clone, with the playbooks, schemas and example migrations it carries inside.

One wheel build and one install; slow (about a minute), so marked, but run by the normal
suite. The same install then runs tests/example_project's suite through its pytest plugin."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = [pytest.mark.slow, pytest.mark.no_server]

# What a clone holds that a build must not see (or write into the clone: pip builds in place).
NOT_SOURCE = shutil.ignore_patterns(
    ".git", "build", "dist", "*.egg-info", ".poststack", "backups", "__pycache__", ".*_cache", ".hypothesis"
)


def run(argv: list[str], cwd: Path, env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def bare_env(tmp: Path) -> dict[str, str]:
    """A user's shell: none of poststack's settings, no PYTHONPATH, no virtualenv of ours,
    and not a terminal (as in CI): the demo may still use the embedded server."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("POSTSTACK_", "PG", "PIPX_")) and k not in ("DATABASE_URL", "PYTHONPATH", "VIRTUAL_ENV")
    }
    ours = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != ours)
    env.update(
        {
            "PIPX_HOME": str(tmp / "pipx"),
            "PIPX_BIN_DIR": str(tmp / "bin"),
            "PIPX_MAN_DIR": str(tmp / "man"),
            "CI": "true",
            "NO_COLOR": "1",
        }
    )
    return env


def test_the_wheel_installed_with_pipx_runs_the_demo_outside_the_clone(tmp_path: Path):
    env = bare_env(tmp_path)
    source = tmp_path / "source"
    shutil.copytree(REPO, source, ignore=NOT_SOURCE)
    built = run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(tmp_path / "dist"), str(source)], tmp_path, env
    )
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = (tmp_path / "dist").glob("poststack-*.whl")
    shutil.rmtree(source)  # nothing but the wheel is left to import from

    installed = run([sys.executable, "-m", "pipx", "install", str(wheel)], tmp_path, env)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    poststack = tmp_path / "bin" / "poststack"
    assert poststack.exists(), installed.stdout + installed.stderr

    project = tmp_path / "elsewhere" / "project"
    project.mkdir(parents=True)
    # The installed copy imports itself and its data from pipx's environment, not the clone.
    python = tmp_path / "pipx" / "venvs" / "poststack" / "bin" / "python"
    where = run(
        [
            str(python),
            "-c",
            "import reconciler.bundled as b; print(b.PLAYBOOKS); print(b.SCHEMAS); print(b.EXAMPLE_MIGRATIONS)",
        ],
        project,
        env,
    )
    assert where.returncode == 0, where.stderr
    data = [Path(line) for line in where.stdout.splitlines()]
    for directory in data:
        assert directory.is_relative_to(tmp_path / "pipx"), directory
        assert any(directory.iterdir()), f"{directory} is empty in the installed wheel"
    assert (data[1] / "new-result.schema.json").is_file() and (data[1] / "playbook.schema.json").is_file()

    try:
        demo = run([str(poststack), "demo"], project, env)
        assert demo.returncode == 0, demo.stdout + demo.stderr
        assert f"Using embedded PostgreSQL in {project / '.poststack'}" in demo.stderr
        assert "Overall Status: ✅ PASS" in demo.stdout
        assert demo.stdout.rstrip().endswith("The scratch database and its files have been removed.")
        # The command a new project starts with works from the installed copy too.
        new = run([str(poststack), "new", "create_users"], project, env)
        assert new.returncode == 0, new.stdout + new.stderr
        assert (project / "migrations" / "001_create_users.sql").is_file()
    finally:
        stop = run([str(poststack), "db", "server", "stop"], project, env, timeout=120)
    assert stop.returncode == 0 and "Stopped the embedded PostgreSQL" in stop.stdout, stop.stdout + stop.stderr
    shutil.rmtree(project / ".poststack")

    # The pytest plugin comes with the install (its entry point): an application's suite,
    # run with the installed copy and nothing else, on the embedded server alone.
    injected = run([sys.executable, "-m", "pipx", "inject", "poststack", "pytest", "pytest-xdist"], tmp_path, env)
    assert injected.returncode == 0, injected.stdout + injected.stderr
    app = tmp_path / "elsewhere" / "app"
    shutil.copytree(REPO / "tests" / "example_project", app, ignore=NOT_SOURCE)
    for args in ([], ["-n", "2"]):
        suite = run([str(python), "-m", "pytest", "-p", "no:cacheprovider", "-q", *args], app, env)
        assert suite.returncode == 0, suite.stdout + suite.stderr
        assert "11 passed" in suite.stdout, suite.stdout
    typed = run(
        [
            str(python),
            "-c",
            "import importlib.resources as r; print(r.files('reconciler').joinpath('py.typed').is_file())",
        ],
        app,
        env,
    )
    assert typed.stdout.strip() == "True", typed.stdout + typed.stderr
