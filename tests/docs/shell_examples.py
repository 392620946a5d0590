"""Run a markdown document's shell examples the way a reader would, and compare what they print.

The document marks where a fresh start is needed with ``<!-- scenario: NAME -->``: every
```bash block after it, up to the next marker, runs in order in one project directory (the
example migrations, under git) against one fresh database. A bash block outside any
scenario is an error, so no example can escape being run.

Two kinds of block:

- a transcript, whose commands start with ``$ ``: each command runs on its own, and the
  lines after it are what it must print, in order, as a shape: each shown line must match
  a line of the real output (surrounding blanks ignored), ``…`` standing for any text, and
  lines the document leaves out are allowed. The exit code must be 0, or 1 ("problems
  found"). Lines starting with ``# `` are the reader's comments, not output.
- a script (no ``$ `` lines): run as one bash script, as pasted into a terminal; no
  command in it may fail with an exit code of 2 or more (a usage error, an unreachable
  database, a command that does not exist).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

SCENARIO = re.compile(r"<!--\s*scenario:\s*([\w-]+)\s*-->")
FENCE = re.compile(r"^```(\w*)\s*$")
ERR_MARK = "__SHELL_EXAMPLE_FAILED__"


@dataclass
class Command:
    text: str
    expected: list[str]
    line: int  # in the document


@dataclass
class Block:
    line: int
    lines: list[str]

    @property
    def is_transcript(self) -> bool:
        return any(line.startswith("$ ") for line in self.lines)

    def commands(self) -> list[Command]:
        commands: list[Command] = []
        continuing = False
        for offset, line in enumerate(self.lines):
            if line.startswith("# ") and not continuing:
                continue
            if continuing:
                commands[-1].text += "\n" + line
                continuing = line.endswith("\\")
            elif line.startswith("$ "):
                commands.append(Command(line[2:], [], self.line + 1 + offset))
                continuing = line.endswith("\\")
            elif commands:
                commands[-1].expected.append(line)
            elif line.strip():
                raise ValueError(f"line {self.line + 1 + offset}: output before the first $ command")
        return commands


@dataclass
class Scenario:
    name: str
    line: int
    blocks: list[Block] = field(default_factory=list)


def scenarios(path: Path) -> list[Scenario]:
    found: list[Scenario] = []
    lines = path.read_text().splitlines()
    i = 0
    while i < len(lines):
        marker = SCENARIO.search(lines[i])
        fence = FENCE.match(lines[i])
        if marker:
            found.append(Scenario(marker.group(1), i + 1))
        elif fence:
            end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
            if fence.group(1) in ("bash", "sh", "shell", "console"):
                if not found:
                    raise ValueError(f"{path.name}:{i + 1}: a shell example outside any <!-- scenario: NAME -->")
                found[-1].blocks.append(Block(i + 1, lines[i + 1 : end]))
            i = end
        i += 1
    names = [s.name for s in found]
    duplicates = {n for n in names if names.count(n) > 1}
    if duplicates:
        raise ValueError(f"{path.name}: scenario names used twice: {', '.join(sorted(duplicates))}")
    return found


def prepare_project(directory: Path, migrations: Path, env: dict[str, str]) -> None:
    """The reader's project: the example migrations, committed to git."""
    shutil.copytree(migrations, directory / "migrations")
    for argv in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-q", "-m", "migrations"]):
        subprocess.run(argv, cwd=directory, env=env, check=True, capture_output=True)


def _bash(script: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``script`` as a reader's terminal runs it: stdout and stderr interleaved."""
    return subprocess.run(
        ["bash", "-c", script],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=300,
    )


def run_command(command: Command, cwd: Path, env: dict[str, str]) -> tuple[int, str]:
    proc = _bash(command.text, cwd, env)
    return proc.returncode, proc.stdout


def run_script(block: Block, cwd: Path, env: dict[str, str]) -> tuple[list[tuple[int, int]], str]:
    """Run the block as one script; (exit code, line) of every command that failed."""
    trap = f"trap 'echo \"{ERR_MARK} $? $LINENO\" >&2' ERR\n"
    proc = _bash(trap + "\n".join(block.lines), cwd, env)
    failures = []
    for line in proc.stdout.splitlines():
        if line.startswith(ERR_MARK):
            code, where = line.split()[1:3]
            failures.append((int(code), block.line + int(where) - 1))
    return failures, proc.stdout


def shape_mismatch(expected: list[str], actual: str) -> str | None:
    """None if every shown line matches a line of ``actual`` in order; else the first that does not."""
    remaining = [line.strip() for line in actual.splitlines()]
    position = 0
    for line in (e.strip() for e in expected):
        if not line:
            continue
        pattern = re.compile("^" + ".*".join(re.escape(part) for part in line.split("…")) + "$")
        while position < len(remaining) and not pattern.match(remaining[position]):
            position += 1
        if position == len(remaining):
            return line
        position += 1
    return None
