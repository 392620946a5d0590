"""The lock's holder, told apart: its backend (seen from the server) and its poststack
process (seen only from its own host). Pure: LockState in, words, issues and plans out;
plus the process check itself, on this machine's own processes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from reconciler import liveness
from reconciler.config import DEFAULT_TRACKING
from reconciler.diagnosis.checks import run_checks
from reconciler.diagnosis.checks.stuck_lock import ORPHAN_FIX
from reconciler.diagnosis.issues import IssueType
from reconciler.observed.tracking import LockState, query_start
from reconciler.remediation.actions import BuildContext
from reconciler.remediation.fixes import DEFAULT_VARIABLES
from reconciler.remediation.planner import PlanRequest, plan_remediation
from reconciler.remediation.playbook import load_all
from tests.test_checks import ACCOUNTS, NOW, facts_for, row

DEAD = LockState(True, NOW, "ci:42", 999, "poststack", 60.0, False)
LIVE_ELSEWHERE = replace(
    DEAD, backend_alive=True, backend_state="active", backend_query="CREATE INDEX i ON t (c)", backend_query_s=5.0
)
LIVE_HERE = replace(LIVE_ELSEWHERE, client_alive=True, client_local=True)
ORPHANED = replace(LIVE_HERE, client_alive=False, backend_query="SELECT pg_sleep(30)", backend_query_s=42.0)
RECONNECTING = replace(DEAD, client_alive=True, client_local=True)
PROC = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc (process states, start times)")
HEAD = "held by ci:42 (backend pid 999, application poststack, age 60s"

DESCRIBED = [
    ("backend gone", DEAD, f"{HEAD}, not alive)"),
    (
        "process gone, backend still running",
        ORPHANED,
        f"{HEAD}): that poststack process is gone; its backend pid 999 is still running `SELECT pg_sleep(30)` (for 42s)",
    ),
    ("live, here", LIVE_HERE, f"{HEAD}, alive); its backend is running `CREATE INDEX i ON t (c)` (for 5s)"),
    (
        "live, another host",
        LIVE_ELSEWHERE,
        f"{HEAD}, alive); its backend is running `CREATE INDEX i ON t (c)` (for 5s); "
        "ci is another host, so its process cannot be checked from here",
    ),
    (
        "an offline script run by psql",
        replace(LIVE_ELSEWHERE, locked_by="psql:4242", client_alive=None),
        "held by psql:4242 (backend pid 999, application poststack, age 60s, alive); its backend is running "
        "`CREATE INDEX i ON t (c)` (for 5s); it is an offline script run by psql (db migrate --dry-run --format sql)",
    ),
    (
        "idle in a transaction",
        replace(LIVE_HERE, backend_state="idle in transaction"),
        f"{HEAD}, alive); its backend is idle in transaction, after `CREATE INDEX i ON t (c)`",
    ),
    (
        "lost its connection",
        RECONNECTING,
        f"{HEAD}, not alive); that poststack process is still running (it lost its connection)",
    ),
    ("not locked", LockState(False, None, None, None, None, None, False), "not locked"),
]


@pytest.mark.parametrize(("name", "lock", "text"), DESCRIBED, ids=[c[0] for c in DESCRIBED])
def test_the_lock_in_words(name: str, lock: LockState, text: str):
    assert lock.describe() == text


@pytest.mark.parametrize(
    ("lock", "holder_alive", "orphaned"),
    [
        (DEAD, False, False),
        (LIVE_ELSEWHERE, True, False),
        (LIVE_HERE, True, False),
        (ORPHANED, False, True),
        (RECONNECTING, False, False),
    ],
)
def test_a_holder_is_alive_only_with_its_backend_and_not_known_dead(
    lock: LockState, holder_alive: bool, orphaned: bool
):
    assert (lock.holder_alive, lock.orphaned) == (holder_alive, orphaned)


def test_a_statement_is_shown_by_its_start_on_one_line():
    assert query_start("SELECT\n  1") == "SELECT 1"
    shown = query_start("UPDATE t SET " + ", ".join(f"c{i} = {i}" for i in range(40)))
    assert shown is not None and len(shown) == 60 and shown.endswith("…")
    assert query_start(None) is None and query_start("") is None


@pytest.mark.parametrize(
    ("lock", "stuck", "fix"),
    [
        (DEAD, True, "Release the lock: poststack db clean --locks --confirm"),
        (ORPHANED, True, ORPHAN_FIX),
        (LIVE_HERE, False, None),
        (LIVE_ELSEWHERE, False, None),  # unknown process: the live backend decides
    ],
)
def test_stuck_lock_names_the_process_and_the_backend(tmp_path: Path, lock: LockState, stuck: bool, fix: str | None):
    issues = run_checks(facts_for(tmp_path, [row("001")], ACCOUNTS, lock), [IssueType.STUCK_LOCK])
    assert [i.suggested_fix for i in issues] == ([fix] if stuck else [])
    if stuck:
        details = issues[0].details
        assert (details["client_alive"], details["backend_alive"]) == (lock.client_alive, lock.backend_alive)


def clean_locks_plan(tmp_path: Path, lock: LockState, **variables: object) -> list[tuple[str, dict]]:
    facts = facts_for(tmp_path, [row("001")], ACCOUNTS, lock)
    request = PlanRequest(("clean-locks",), ("stuck_lock",), {**DEFAULT_VARIABLES, **variables}, "clean", False)
    plan = plan_remediation(
        facts, load_all(tmp_path), request, BuildContext(DEFAULT_TRACKING, facts.desired.migrations)
    )
    return [(s.action, s.args) for s in plan.steps]


def test_clean_locks_releases_a_dead_holders_row_at_once(tmp_path: Path):
    assert [a for a, _ in clean_locks_plan(tmp_path, DEAD)] == ["release_lock"]


def test_clean_locks_never_releases_a_running_backends_row_blindly(tmp_path: Path):
    ((action, args),) = clean_locks_plan(tmp_path, ORPHANED)
    assert action == "manual"
    assert "--confirm --wait" in args["instructions"] and "--confirm --terminate" in args["instructions"]
    ((action, args),) = clean_locks_plan(tmp_path, LIVE_HERE)
    assert action == "manual" and "may still be working" in args["instructions"]


def test_clean_locks_waits_for_the_backend_or_ends_it_when_asked(tmp_path: Path):
    waited = clean_locks_plan(tmp_path, ORPHANED, wait=True, lock_timeout=12.5)
    assert waited == [
        ("wait_for_backend", {"backend_pid": 999, "timeout_s": 12.5, "terminate": False}),
        ("release_lock", {"holder_backend_pid": 999, "holder": ORPHANED.describe(), "terminate": False}),
    ]
    ended = clean_locks_plan(tmp_path, ORPHANED, terminate=True)
    assert [a for a, _ in ended] == ["wait_for_backend", "release_lock"]
    assert ended[0][1] == {"backend_pid": 999, "timeout_s": 30.0, "terminate": True}


# --- the process check, on this machine's own processes --------------------------------------


def test_only_this_hosts_pids_are_checked():
    assert liveness.local_pid(f"{socket.gethostname()}:4242") == 4242
    assert liveness.local_pid("another-host:4242") is None
    assert liveness.local_pid(f"{socket.gethostname()}:x") is None and liveness.local_pid(None) is None


def test_a_running_process_that_took_the_lock_is_alive():
    assert liveness.process_alive(os.getpid(), lock_age_s=0.0) is True


def process_state(pid: int) -> str:
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rfind(")") + 2]


@PROC
def test_a_gone_or_unreaped_process_is_not_alive():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 30
    while process_state(child.pid) != "Z":  # exited, not yet reaped: kill(pid, 0) still succeeds
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert liveness.process_alive(child.pid, lock_age_s=0.0) is False
    child.wait()
    assert liveness.process_alive(child.pid, lock_age_s=0.0) is False


@PROC
def test_a_pid_reused_after_the_lock_was_taken_is_not_the_holder():
    # This process started long after a lock taken a day ago: the pid is not that lock's.
    assert liveness.process_alive(os.getpid(), lock_age_s=86400.0) is False
