"""Backups with pg_dump, choosing a pg_dump whose major version matches the server's.

A dump made by a newer pg_dump can carry settings an older server rejects on restore
(``SET transaction_timeout`` from 17 on), so the matching major is preferred.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from reconciler.config import mask_url
from reconciler.dsn import libpq_env
from reconciler.errors import OperationFailed


@dataclass(frozen=True)
class ClientTool:
    path: Path
    major: int
    version: str


def _version_of(path: Path) -> ClientTool | None:
    try:
        out = subprocess.run([str(path), "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"(\d+)(?:\.(\d+))?", out)
    if not match:
        return None
    return ClientTool(path, int(match[1]), match[0])


def candidates(program: str) -> list[Path]:
    """Every ``program`` binary we can find: the embedded package's, Debian's versioned
    directories, then PATH."""
    found: list[Path] = []
    from reconciler import embedded

    found.append(embedded.bin_dir() / program)
    found += sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{program}"))
    on_path = shutil.which(program)
    if on_path:
        found.append(Path(on_path))
    return [p for p in found if p.is_file() and os.access(p, os.X_OK)]


def find_client(program: str, server_major: int) -> ClientTool:
    """The ``program`` matching ``server_major``; else the oldest newer one (it can still
    read the server); never an older one (it refuses newer servers)."""
    tools = [t for t in (_version_of(p) for p in candidates(program)) if t is not None]
    exact = [t for t in tools if t.major == server_major]
    if exact:
        return exact[0]
    newer = sorted((t for t in tools if t.major > server_major), key=lambda t: t.major)
    if newer:
        return newer[0]
    have = ", ".join(f"{t.path} ({t.major})" for t in tools) or "none"
    raise OperationFailed(
        f"no {program} for PostgreSQL {server_major} found (found: {have})",
        f"Install the PostgreSQL {server_major} client (Debian: apt-get install postgresql-client-{server_major}).",
    )


@dataclass(frozen=True)
class BackupResult:
    path: Path
    size_bytes: int
    tool: ClientTool
    server_major: int
    elapsed_s: float


def run_pg_dump(
    url: str,
    tool: ClientTool,
    output: Path,
    extra_args: list[str] | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> int:
    """Dump to ``output`` (plain SQL, restorable with psql). Returns the file's size."""
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OperationFailed(f"cannot create {output.parent}: {e.strerror}") from e
    partial = output.with_name(output.name + ".partial")
    args = [str(tool.path), "--format=plain", "--no-password", f"--file={partial}", *(extra_args or [])]
    # A dump holds the data: readable by its owner only.
    process = subprocess.Popen(
        args,
        env=libpq_env(url),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: os.umask(0o077),
    )
    try:
        while True:
            try:
                _, stderr = process.communicate(timeout=0.2)
                break
            except subprocess.TimeoutExpired:
                if on_progress and partial.exists():
                    on_progress(partial.stat().st_size)
    except BaseException:
        process.kill()
        process.wait()
        partial.unlink(missing_ok=True)
        raise
    if process.returncode != 0:
        partial.unlink(missing_ok=True)
        message = mask_url((stderr or "").strip().splitlines()[-1] if stderr and stderr.strip() else "no output")
        raise OperationFailed(f"pg_dump failed (exit {process.returncode}): {message}")
    partial.replace(output)  # a backup file that exists is a complete one
    return output.stat().st_size
