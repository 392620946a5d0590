"""--format json of the commands that open no connection (playbooks, db server stop): each
output, produced for real, matches its schema and says what the text says."""

from __future__ import annotations

import json
from pathlib import Path

from reconciler.remediation.playbook import load_all
from tests.conftest import EXAMPLE_MIGRATIONS, run_cli, run_process, write
from tests.integration.test_json_output import conforming

OWN_PLAYBOOK = """\
name: tidy
version: 2
description: The project's own playbook, run by name.
handles: []
auto: false
steps:
  - name: Create the tracking tables
    action: create_tracking
    args: {}
"""


def test_playbooks_list(tmp_path: Path):
    data = conforming(run_cli("playbooks", "list", "--format", "json"), "playbooks list")
    books = load_all(EXAMPLE_MIGRATIONS)
    assert {b["name"] for b in data["playbooks"]} == set(books)
    orders = [(b["order"], b["name"]) for b in data["playbooks"]]
    assert orders == sorted(orders) and all(b["builtin"] for b in data["playbooks"])
    recover = next(b for b in data["playbooks"] if b["name"] == "recover")
    assert recover["handles"] == ["missing_tracking"] and recover["steps"] == len(books["recover"].steps)


def test_playbooks_list_and_validate_with_the_projects_own(tmp_path: Path):
    migrations = tmp_path / "migrations"
    migrations.mkdir()
    (tmp_path / "playbooks").mkdir()
    path = write(tmp_path / "playbooks", "tidy.yaml", OWN_PLAYBOOK)
    listed = conforming(
        run_cli("playbooks", "list", "--format", "json", "--migrations-dir", str(migrations)), "playbooks list"
    )
    tidy = next(b for b in listed["playbooks"] if b["name"] == "tidy")
    assert (tidy["builtin"], tidy["version"], tidy["auto"], Path(tidy["path"])) == (False, 2, False, path)
    checked = conforming(run_cli("playbooks", "validate", str(path), "--format", "json"), "playbooks validate")
    assert [b["name"] for b in checked["playbooks"]] == ["tidy"]
    every = conforming(
        run_cli("playbooks", "validate", "--format", "json", "--migrations-dir", str(migrations)),
        "playbooks validate",
    )
    assert {b["name"] for b in every["playbooks"]} == {b["name"] for b in listed["playbooks"]}
    # An invalid playbook is an error, not a result: no JSON, exit 2 (as in text).
    bad = write(tmp_path, "bad.yaml", OWN_PLAYBOOK.replace("action: create_tracking", "action: no_such_action"))
    refused = run_cli("playbooks", "validate", str(bad), "--format", "json")
    assert refused.exit_code == 2 and refused.stdout == "" and "no_such_action" in refused.stderr


def test_playbooks_show():
    data = conforming(run_cli("playbooks", "show", "recover", "--format", "json"), "playbooks show")
    book = load_all(EXAMPLE_MIGRATIONS)["recover"]
    assert data["name"] == "recover" and data["sha256"] == book.sha256
    assert [(s["name"], s["action"], s["line"]) for s in data["steps"]] == [
        (s.name, s.action, s.line) for s in book.steps
    ]
    unknown = run_cli("playbooks", "show", "recovr", "--format", "json")
    assert unknown.exit_code == 2 and unknown.stdout == "" and "did you mean recover?" in unknown.stderr


def test_server_stop(tmp_path: Path):
    (tmp_path / "migrations").mkdir()
    nothing = conforming(run_process("db", "server", "stop", "--format", "json", cwd=tmp_path), "db server stop")
    assert nothing == {"data_dir": str((tmp_path / ".poststack" / "pgdata").resolve()), "stopped": False}
    try:
        started = run_process("db", "migration-status", "--embedded", cwd=tmp_path)
        assert started.exit_code == 0, started.output
        assert json.loads(run_process("db", "server", "status", "--format", "json", cwd=tmp_path).stdout)["running"]
    finally:
        stopped = run_process("db", "server", "stop", "--format", "json", cwd=tmp_path)
    assert conforming(stopped, "db server stop")["stopped"] is True
    assert not json.loads(run_process("db", "server", "status", "--format", "json", cwd=tmp_path).stdout)["running"]
