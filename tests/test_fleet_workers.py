"""The fleet's worker pool without a database: a worker runs target after target; one stopped
by a signal of its own costs only its target; and a fleet process that fails ends its workers
instead of waiting on them forever. Each case runs in a subprocess (with a timeout), so a hang
fails the test instead of the suite."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

_SCRIPT = """
import json, os, signal, sys, time
from pathlib import Path
from reconciler.config import resolve_settings
from reconciler.fleet.run import FleetPolicy, run_fleet
from reconciler.fleet.targets import Target

case = sys.argv[1]
base = resolve_settings(database_url="postgresql://app@db.invalid/shop", environ={}, cwd=Path.cwd())
targets = [Target(url=None, schema=f"t{i}") for i in range(8)]

def job(target, settings, notify):
    if case == "signalled" and target.schema == "t0":
        os.kill(os.getpid(), signal.SIGTERM)  # as `kill <worker pid>` would
        time.sleep(5)
    time.sleep(0.05)
    return {"outcome": "ok"}

def done(report, count, total):
    if case == "failing":
        raise BrokenPipeError("the fleet's stdout was closed")

if case == "second-signal":
    # A second Ctrl-C that comes just as the fleet tells its idle workers to go.
    from reconciler import interrupts
    from reconciler.fleet import run as fleet_run

    interrupts.install()
    end = fleet_run._end

    def end_after_a_signal(worker, deadline=None):
        os.kill(os.getpid(), signal.SIGINT)
        end(worker, deadline)

    fleet_run._end = end_after_a_signal

try:
    reports, stopped = run_fleet(targets, base, job, FleetPolicy(parallel=2), done)
except BrokenPipeError:
    import multiprocessing
    print(json.dumps({"raised": True, "children": len(multiprocessing.active_children())}))
    sys.exit(0)
print(json.dumps({"stopped": stopped, "outcomes": [r.outcome for r in reports]}))
sys.stdout.flush()
"""


def _run(case: str, tmp_path: Path) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", _SCRIPT, case], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_a_worker_stopped_by_a_signal_of_its_own_costs_only_its_target(tmp_path: Path):
    result = _run("signalled", tmp_path)
    assert result["stopped"] is None  # the fleet itself was not told to stop
    assert result["outcomes"] == ["interrupted"] + ["ok"] * 7


def test_a_failing_fleet_process_ends_its_workers(tmp_path: Path):
    assert _run("failing", tmp_path) == {"raised": True, "children": 0}


def test_a_signal_while_the_workers_are_told_to_go_keeps_the_report_and_ends_them(tmp_path: Path):
    result = _run("second-signal", tmp_path)
    assert result["outcomes"] == ["ok"] * 8  # the report is there; and the process ended
