"""db migration-status --exit-code: 1 while anything is pending or failed, 0 when up to date
(dbmate's status --exit-code); without it, only a failed migration exits 1, as before."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import write


def test_pending_migrations_exit_1_only_when_asked(cli):
    assert cli("db", "migration-status").exit_code == 0
    flagged = cli("db", "migration-status", "--exit-code")
    assert flagged.exit_code == 1 and "Pending" in flagged.stdout
    data = cli("db", "migration-status", "--exit-code", "--format", "json")
    assert data.exit_code == 1 and json.loads(data.stdout)["pending_count"] == 5


def test_up_to_date_exits_0(cli):
    assert cli("db", "migrate").exit_code == 0
    assert cli("db", "migration-status", "--exit-code").exit_code == 0
    data = cli("db", "migration-status", "--exit-code", "--format", "json")
    assert data.exit_code == 0 and json.loads(data.stdout)["up_to_date"] is True


def test_a_failed_migration_exits_1_either_way(cli, migrations_dir: Path):
    write(migrations_dir, "006_bad.sql", "INSERT INTO nosuch VALUES (1);\n")
    assert cli("db", "migrate").exit_code == 1
    assert cli("db", "migration-status").exit_code == 1
    assert cli("db", "migration-status", "--exit-code").exit_code == 1
