"""A password in the configured URL never appears in output, plan files, backups, tracking
or audit rows, or the server's log."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg2
from sqlalchemy.engine import make_url

from reconciler.config import DEFAULT_TRACKING
from reconciler.observed.locking import advisory_key
from tests.conftest import PASSWORD, PASSWORD_ROLE, run_cli, sql, write


def test_the_password_is_never_written_anywhere(
    pg_server, database_url, db, migrations_dir: Path, tmp_path: Path, figures
):
    sql(db, f"GRANT CREATE ON SCHEMA public TO {PASSWORD_ROLE}")
    sql(db, f'GRANT CREATE ON DATABASE "{make_url(database_url).database}" TO {PASSWORD_ROLE}')
    url = pg_server.url_for(make_url(database_url).database, user=PASSWORD_ROLE, password=PASSWORD)
    common = ("--database-url", url, "--migrations-dir", str(migrations_dir))
    plan = tmp_path / "plan.json"
    backup = tmp_path / "backup.sql"
    write(migrations_dir, "006_fails.sql", f"SELECT '{PASSWORD[:4]}' || 1/0;\n")

    outputs = []
    for args in (
        ["db", "migrate"],
        ["db", "migration-status", "--format", "json"],
        ["db", "migration-info", "--format", "json"],
        ["db", "diagnose", "--format", "json"],
        ["db", "validate", "--format", "json"],
        ["db", "verify-migrations"],
        ["db", "backup", "--output", str(backup)],
        ["db", "shell", "-c", "SELECT current_user"],
        ["db", "repair", "--issue-type", "partial_migration"],
        ["plan", "--out", str(plan)],
        ["apply", str(plan)],
        ["db", "rollback", "004"],
        ["db", "create-schema"],
    ):
        result = run_cli(*args, *common)
        outputs.append(result.output)
    assert "Applied" in outputs[0] and backup.stat().st_size > 0

    # A lock held by someone else: the waiting run names the holder, not the password.
    holder = psycopg2.connect(url)
    holder.autocommit = True
    sql(holder, "SELECT pg_advisory_lock(%s)", (advisory_key(DEFAULT_TRACKING),))
    outputs.append(run_cli("db", "migrate", "--lock-timeout", "0.2", *common).output)
    holder.close()
    # Connection errors repeat the URL, masked.
    wrong = url.replace(make_url(database_url).database, "no_such_db")
    outputs.append(run_cli("db", "migrate", "--database-url", wrong, "--migrations-dir", str(migrations_dir)).output)
    assert "***" in outputs[-1]

    places = {f"output of command {i}": text for i, text in enumerate(outputs)}
    places["plan file"] = plan.read_text()
    places["backup file"] = backup.read_text()
    for table in ("schema_migrations", "schema_migrations_audit", "schema_migrations_lock"):
        rows = sql(db, f"SELECT row_to_json(t)::text FROM {table} t")
        places[f"{table} rows"] = "\n".join(r[0] for r in rows)
    assert json.loads(places["plan file"])["database"] == make_url(database_url).database
    if pg_server.embedded_data is not None:
        places["server log"] = (pg_server.embedded_data / "log").read_text(errors="replace")
    leaked = [name for name, text in places.items() if PASSWORD in text]
    assert leaked == [], leaked
    figures("secrets", places=len(places))


def test_a_password_from_pgpassword_reaches_the_client_tools_too(pg_server, database_url, db, tmp_path: Path):
    """A URL without the password (it is in PGPASSWORD, as libpq allows): poststack's own
    connection and the pg_dump and psql it starts all authenticate the same way."""
    with_password = make_url(pg_server.url_for(make_url(database_url).database, user=PASSWORD_ROLE, password=PASSWORD))
    url = with_password._replace(password=None).render_as_string(hide_password=False)
    assert PASSWORD not in url and "***" not in url
    env = {"PGPASSWORD": PASSWORD}
    migrations = tmp_path / "migrations"
    migrations.mkdir()
    status = run_cli("db", "migration-status", "--database-url", url, "--migrations-dir", str(migrations), env=env)
    assert status.exit_code == 0, status.output
    backup = run_cli("db", "backup", "--output", str(tmp_path / "b.sql"), "--database-url", url, env=env)
    assert backup.exit_code == 0, backup.output
    shell = run_cli("db", "shell", "-c", "SELECT current_user", "--database-url", url, env=env)
    assert shell.exit_code == 0 and PASSWORD_ROLE in shell.stdout, shell.output
    refused = run_cli("db", "migration-status", "--database-url", url, "--migrations-dir", str(migrations))
    assert refused.exit_code == 3  # and without it, the password is really needed
