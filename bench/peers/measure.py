"""Whole processes, timed: wall time, the client's CPU (the process and what it waited for),
and its peak RSS.

The CPU and RSS come from GNU time (``/usr/bin/time``, Debian's package time) running the
command as its own child: a process forked from this one would start out with this
interpreter's resident pages counted as its own peak (the kernel keeps the high-water mark
across exec), so no tool could show less than the benchmark itself uses."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Run:
    """One command (or a sequence of them, timed as one: dbmate's 50 rollbacks)."""

    seconds: float
    cpu: float  # user + system seconds of the client processes
    rss_kib: int  # the largest peak RSS among them


class CommandFailed(SystemExit):
    pass


def run(argv: Sequence[str], *, cwd: Path, env: dict[str, str], ok: Sequence[int] = (0,)) -> Run:
    """Run ``argv`` to the end; CommandFailed (naming it, with its output) unless its exit
    status is one of ``ok``."""
    gnu_time = shutil.which("time", path="/usr/bin:/bin")
    if gnu_time is None:
        raise SystemExit("GNU time is needed to measure CPU and peak RSS (apt-get install time)")
    with tempfile.NamedTemporaryFile("r") as usage, tempfile.TemporaryFile() as out:
        started = time.perf_counter()
        proc = subprocess.run(
            [gnu_time, "-f", "%U %S %M %x", "-o", usage.name, *argv], cwd=cwd, env=env, stdout=out, stderr=out
        )
        seconds = time.perf_counter() - started
        user, system, rss_kib, status = usage.read().split()[-4:]
        if int(status) not in ok or proc.returncode not in ok:
            out.seek(0)
            text = out.read().decode(errors="replace")[-3000:]
            raise CommandFailed(f"{' '.join(argv[:3])} ... exited {status} in {cwd}:\n{text}")
    return Run(seconds, float(user) + float(system), int(rss_kib))


def run_all(commands: Sequence[Sequence[str]], *, cwd: Path, env: dict[str, str]) -> Run:
    """Several commands one after another, as one timed unit."""
    runs = [run(argv, cwd=cwd, env=env) for argv in commands]
    return Run(sum(r.seconds for r in runs), sum(r.cpu for r in runs), max(r.rss_kib for r in runs))
