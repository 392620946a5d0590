"""The peers, installed once into a cache directory from the registries this machine reaches:
dbmate and node-pg-migrate from npm, alembic and yoyo from PyPI (in a virtual environment of
their own, so their dependencies never meet poststack's)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

NPM_PACKAGES = ("dbmate@2.36.0", "node-pg-migrate@9.0.0", "pg@8")
PYPI_PACKAGES = ("alembic==1.20.1", "yoyo-migrations==9.0.0", "psycopg2-binary")


@dataclass(frozen=True)
class Installed:
    dbmate: Path
    node_pg_migrate: Path
    alembic: Path
    yoyo: Path


def cache_dir() -> Path:
    return Path(os.environ.get("POSTSTACK_BENCH_PEERS", Path.home() / ".cache" / "poststack-bench-peers"))


def ensure_installed(directory: Path | None = None) -> Installed:
    directory = directory or cache_dir()
    npm_bin = directory / "npm" / "node_modules" / ".bin"
    venv = directory / "venv"
    installed = Installed(
        npm_bin / "dbmate", npm_bin / "node-pg-migrate", venv / "bin" / "alembic", venv / "bin" / "yoyo"
    )
    if not (installed.dbmate.exists() and installed.node_pg_migrate.exists()):
        npm = shutil.which("npm")
        if npm is None:
            raise SystemExit("npm is needed to install dbmate and node-pg-migrate (apt-get install npm)")
        _step(
            [
                npm,
                "install",
                "--no-save",
                "--no-audit",
                "--no-fund",
                "--loglevel=error",
                "--prefix",
                str(directory / "npm"),
                *NPM_PACKAGES,
            ]
        )
    if not (installed.alembic.exists() and installed.yoyo.exists()):
        _step([sys.executable, "-m", "venv", str(venv)])
        _step(
            [
                str(venv / "bin" / "python"),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                *PYPI_PACKAGES,
            ]
        )
    return installed


def _step(argv: list[str]) -> None:
    print(f"installing: {' '.join(argv[-3:])}", file=sys.stderr)
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{proc.stderr[-2000:]}")
