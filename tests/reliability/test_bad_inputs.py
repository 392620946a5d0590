"""The bad-input corpus (tests/data/bad_inputs.yaml): each case gets one clear line, the
documented exit code, no traceback, and a database exactly as it was."""

from __future__ import annotations

import json
import os
import pwd
import shutil
from pathlib import Path

import pytest
import yaml
from sqlalchemy.engine import make_url

from reconciler.remediation.plan import Plan
from tests.conftest import PASSWORD, PASSWORD_ROLE, REPO, catalog_snapshot, run_cli, sql, write

CASES = yaml.safe_load((REPO / "tests" / "data" / "bad_inputs.yaml").read_text())


def _content(value: object) -> str | bytes:
    return bytes.fromhex(value["hex"]) if isinstance(value, dict) else str(value)


def _plan(cli, db, migrations_dir: Path, path: Path) -> dict:
    """A real saved plan (Scenario 1: 002 applied by hand)."""
    cli("db", "migrate", "--target", "001")
    sql(db, (migrations_dir / "002_add_user_table.sql").read_text())
    assert cli("plan", "--out", str(path)).exit_code == 0
    return json.loads(path.read_text())


def _prepare(setup: str | None, cli, db, migrations_dir: Path, tmp_path: Path) -> dict[str, str]:
    """Named preparations; returns placeholders for the command."""
    plan = tmp_path / "plan.json"
    if setup == "migrated":
        assert cli("db", "migrate", "--target", "005").exit_code == 0
    elif setup == "migrated_all":
        assert cli("db", "migrate").exit_code == 0
    elif setup == "migrated_without_rollback":
        assert cli("db", "migrate").exit_code == 0
        (migrations_dir / "004_add_audit_function.rollback.sql").unlink()
    elif setup == "large_file":
        body = "".join(f"INSERT INTO accounts (email, display_name) VALUES ('u{i}@x', 'u');\n" for i in range(200000))
        write(migrations_dir, "006_large.sql", body + "INSERT INTO (;\n")
    elif setup == "no_migrations_dir":
        shutil.rmtree(migrations_dir)
    elif setup == "foreign_tracking_table":
        sql(db, "CREATE TABLE schema_migrations (version varchar PRIMARY KEY, dirty boolean NOT NULL)")
    elif setup == "drift_for_playbook":
        cli("db", "migrate", "--target", "001")
        sql(db, (migrations_dir / "002_add_user_table.sql").read_text())
    elif setup == "junk_plan":
        plan.write_text("{this is not json")
    elif setup == "wrong_shape_plan":
        plan.write_text(json.dumps({"format": 1, "steps": "all of them"}))
    elif setup == "edited_plan":
        data = _plan(cli, db, migrations_dir, plan)
        data["steps"][0]["statements"][0]["sql"] = "DROP TABLE accounts CASCADE"
        plan.write_text(json.dumps(data))
    elif setup == "foreign_plan":
        data = _plan(cli, db, migrations_dir, plan)
        data["database"] = "production"
        data["hash"] = Plan.from_json(data).hash  # consistent, so the database check is what refuses it
        plan.write_text(json.dumps(data))
    elif setup == "unhashed_plan":
        data = _plan(cli, db, migrations_dir, plan)
        data.pop("hash")
        plan.write_text(json.dumps(data))
    elif setup == "stale_plan":
        _plan(cli, db, migrations_dir, plan)
        sql(db, "CREATE TABLE arrived_later (id int)")
    return {"plan": str(plan)}


def _url(kind: str | None, database_url: str, pg_server) -> str:
    name = make_url(database_url).database
    return {
        None: database_url,
        "unreachable": "postgresql://u:hunter2@127.0.0.1:1/db",
        "wrong_password": pg_server.url_for(name, user=PASSWORD_ROLE, password="not-" + PASSWORD),
        "mysql": "mysql://u:p@h/d",
        "bad_port": "postgresql://u:p@127.0.0.1:notaport/db",
        "no_database": pg_server.url_for("no_such_database_here"),
        "no_create_privilege": pg_server.url_for(name, user=PASSWORD_ROLE, password=PASSWORD),
    }[kind]


def _run_as_nobody(args: list[str]) -> tuple[int, str]:
    """As a user that cannot read the directory (root reads everything): in a forked copy of
    this process, so it does not matter whether that user may run this interpreter or read
    the virtual environment (a pyenv Python under a private home, a venv in a 0700 temp dir)."""
    import reconciler.commands  # imported before the fork: that user may not be able to read them
    import reconciler.interface.report
    import reconciler.remediation.runner  # noqa: F401

    nobody = pwd.getpwnam("nobody")
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: become nobody, run the command in-process, report, and leave
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)
            result = run_cli(*args)
            payload = [result.exit_code, result.output]
        except BaseException as e:  # anything at all must reach the parent, not a test runner in the child
            payload = [255, f"{type(e).__name__}: {e}"]
        os.write(write_end, json.dumps(payload).encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        data = pipe.read()
    os.waitpid(pid, 0)
    code, output = json.loads(data)
    return code, output


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_bad_input(case, cli, db, database_url, pg_server, migrations_dir: Path, tmp_path: Path, figures):
    for name, content in (case.get("migrations") or {}).items():
        write(migrations_dir, name, _content(content))
    if case.get("playbooks"):
        directory = migrations_dir.parent / "playbooks"
        directory.mkdir()
        for name, content in case["playbooks"].items():
            write(directory, name, _content(content))
    if case.get("url") == "no_create_privilege":
        sql(db, "REVOKE CREATE ON SCHEMA public FROM PUBLIC")
    placeholders = _prepare(case.get("setup"), cli, db, migrations_dir, tmp_path)
    before = catalog_snapshot(db)
    args = [a.format(**placeholders) for a in case["run"]]

    if case.get("setup") == "unreadable_dir":
        if os.geteuid() != 0:
            pytest.skip("needs root to run a command as another user")
        migrations_dir.chmod(0o700)
        for parent in (migrations_dir.parent, *migrations_dir.parents):
            if parent == Path("/"):
                break
            parent.chmod(parent.stat().st_mode | 0o005)  # traversable, so only the directory itself is closed
        code, output = _run_as_nobody([*args, "--database-url", database_url, "--migrations-dir", str(migrations_dir)])
        stderr = output
    else:
        result = run_cli(
            *args,
            "--database-url",
            _url(case.get("url"), database_url, pg_server),
            "--migrations-dir",
            str(migrations_dir),
        )
        code, output, stderr = result.exit_code, result.output, result.stderr

    assert code == case["exit"], output
    assert case["says"] in output, output
    assert "Traceback" not in output and "internal error" not in output
    errors = [line for line in (stderr or output).splitlines() if line.startswith("❌")]
    assert len(errors) <= 1, output
    for secret in ("hunter2", PASSWORD):
        assert secret not in output
    if not case.get("changes_tracking"):
        assert catalog_snapshot(db) == before
    figures("bad_input", cases=1, exit=code)
