"""Getting out of trouble: stuck locks, lost connections, interrupted runs, failed
no-transaction migrations, and the inputs that used to end in an internal error."""

from __future__ import annotations

import os
import signal
import stat
from pathlib import Path

import psycopg2
import pytest

from reconciler.config import DEFAULT_TRACKING
from reconciler.observed.locking import advisory_key
from tests.conftest import PASSWORD, PASSWORD_ROLE, catalog_snapshot, run_cli, sql, start_migrate, wait_for, write


def dead_lock_row(db) -> None:
    sql(
        db,
        "UPDATE schema_migrations_lock SET locked = true, locked_at = now() - interval '1 hour', "
        "locked_by = 'deploy-3:777', backend_pid = 999999, application_name = 'poststack'",
    )


def test_unlock_releases_a_dead_holders_lock(cli, db):
    cli("db", "create-schema")
    dead_lock_row(db)
    assert cli("db", "migrate").exit_code == 1
    preview = cli("db", "unlock-migrations")
    assert preview.exit_code == 2
    assert "held by deploy-3:777 (backend pid 999999" in preview.stdout and "add --confirm" in preview.stdout
    assert sql(db, "SELECT locked FROM schema_migrations_lock") == [(True,)]
    result = cli("db", "unlock-migrations", "--confirm")
    assert result.exit_code == 0, result.output
    assert "✅ Released the migration lock (deploy-3:777" in result.stdout
    assert sql(db, "SELECT locked FROM schema_migrations_lock") == [(False,)]
    assert sql(db, "SELECT action, outcome FROM schema_migrations_audit WHERE operation = 'unlock'") == [
        ("release_lock", "ok")
    ]
    assert cli("db", "migrate").exit_code == 0
    assert "not held" in cli("db", "unlock-migrations", "--confirm").stdout


def test_unlock_refuses_a_live_holder_unless_terminate(cli, db, database_url):
    cli("db", "create-schema")
    holder = psycopg2.connect(database_url, application_name="manual-session")
    holder.autocommit = True
    pid = sql(holder, "SELECT pg_backend_pid()")[0][0]
    sql(
        db,
        "UPDATE schema_migrations_lock SET locked = true, locked_at = now(), locked_by = 'x:1', backend_pid = %s",
        (pid,),
    )
    refused = cli("db", "unlock-migrations", "--confirm")
    assert refused.exit_code == 1 and "may still be working" in refused.stderr
    result = cli("db", "unlock-migrations", "--confirm", "--terminate")
    assert result.exit_code == 0, result.output
    assert sql(db, "SELECT locked FROM schema_migrations_lock") == [(False,)]
    wait_for(db, f"SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid = {pid}", [(0,)])


def test_unlock_waits_for_a_running_poststack(cli, db, database_url):
    cli("db", "create-schema")
    holder = psycopg2.connect(database_url)
    holder.autocommit = True
    sql(holder, "SELECT pg_advisory_lock(%s)", (advisory_key(DEFAULT_TRACKING),))
    dead_lock_row(db)
    result = cli("db", "unlock-migrations", "--confirm", "--lock-timeout", "1")
    assert result.exit_code == 1 and "migration system is locked" in result.stderr
    assert sql(db, "SELECT locked FROM schema_migrations_lock") == [(True,)]
    holder.close()


def test_lost_connection_records_the_step_and_releases_the_lock(db, database_url, migrations_dir: Path):
    write(migrations_dir, "006_slow.sql", "CREATE TABLE slow (id int);\nSELECT pg_sleep(20);\n")
    proc = start_migrate(database_url, migrations_dir)
    wait_for(
        db,
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() AND query LIKE '%%SELECT pg_sleep(20)%%'",
        [(1,)],
    )
    sql(
        db,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() AND query LIKE '%%SELECT pg_sleep(20)%%'",
    )
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 3
    assert "lost the connection" in stderr and "rolled that step back" in stderr and "Traceback" not in stderr
    assert sql(db, "SELECT to_regclass('slow')") == [(None,)]
    assert sql(
        db, "SELECT version, success, error LIKE 'connection lost%%' FROM schema_migrations WHERE version = '006'"
    ) == [("006", False, True)]
    assert sql(db, "SELECT locked FROM schema_migrations_lock") == [(False,)]
    write(migrations_dir, "006_slow.sql", "CREATE TABLE slow (id int);\n")
    assert (
        run_cli("db", "migrate", "--database-url", database_url, "--migrations-dir", str(migrations_dir)).exit_code == 0
    )


def test_sigterm_unwinds_and_releases_the_lock(db, database_url, migrations_dir: Path):
    write(migrations_dir, "006_slow.sql", "CREATE TABLE slow (id int);\nSELECT pg_sleep(1);\n")
    proc = start_migrate(database_url, migrations_dir)
    wait_for(
        db,
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() AND query LIKE '%%SELECT pg_sleep(1)%%'",
        [(1,)],
    )
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143 and "Interrupted (SIGTERM)" in stderr
    assert sql(db, "SELECT to_regclass('slow')") == [(None,)]
    assert sql(db, "SELECT success, error FROM schema_migrations WHERE version = '006'") == [
        (False, "interrupted by SIGTERM: rolled back")
    ]
    assert sql(db, "SELECT locked FROM schema_migrations_lock") == [(False,)]


def test_failed_no_transaction_migration_is_retried_on_request(cli, db, migrations_dir: Path):
    cli("db", "migrate")
    sql(db, "INSERT INTO accounts (email, display_name) VALUES ('a@x', 'same'), ('b@x', 'same')")
    write(
        migrations_dir,
        "006_names.sql",
        "-- poststack:no-transaction\nCREATE UNIQUE INDEX CONCURRENTLY accounts_name_key ON accounts (display_name);\n",
    )
    failed = cli("db", "migrate")
    assert failed.exit_code == 1
    assert "Key (display_name)=(same) is duplicated" in failed.stdout
    assert "migrate --retry-failed" in failed.stdout
    refused = cli("db", "migrate")
    assert refused.exit_code == 1 and "--retry-failed" in refused.stderr
    # The operator cleans up: fixes the data and drops the INVALID index the failure left.
    sql(db, "UPDATE accounts SET display_name = email; DROP INDEX accounts_name_key")
    result = cli("db", "migrate", "--retry-failed")
    assert result.exit_code == 0, result.output
    assert sql(db, "SELECT success FROM schema_migrations WHERE version = '006'") == [(True,)]


def test_settings_do_not_leak_from_one_migration_to_the_next(cli, db, migrations_dir: Path):
    write(migrations_dir, "006_app.sql", "CREATE SCHEMA app;\nSET search_path TO app;\nCREATE TABLE a (id int);\n")
    write(migrations_dir, "007_b.sql", "CREATE TABLE b (id int);\n")
    assert cli("db", "migrate").exit_code == 0
    assert sql(db, "SELECT to_regclass('app.a') IS NOT NULL, to_regclass('public.b') IS NOT NULL") == [(True, True)]


def test_savepoints_run_inside_the_migrations_transaction(cli, db, migrations_dir: Path):
    write(
        migrations_dir,
        "006_sp.sql",
        "CREATE TABLE s (id int);\nSAVEPOINT a;\nINSERT INTO s VALUES (1);\nRELEASE SAVEPOINT a;\n",
    )
    assert cli("db", "migrate").exit_code == 0
    assert sql(db, "SELECT transactional FROM schema_migrations WHERE version = '006'") == [(True,)]


def test_rollback_matches_rows_by_number(cli, db, migrations_dir: Path):
    for path in migrations_dir.glob("*"):
        path.unlink()
    write(migrations_dir, "1_one.sql", "CREATE TABLE one (id int);")
    write(migrations_dir, "1_one.rollback.sql", "DROP TABLE one;")
    write(migrations_dir, "2_two.sql", "CREATE TABLE two (id int);")
    write(migrations_dir, "2_two.rollback.sql", "DROP TABLE two;")
    assert cli("db", "migrate").exit_code == 0
    (migrations_dir / "2_two.sql").rename(migrations_dir / "002_two.sql")
    (migrations_dir / "2_two.rollback.sql").rename(migrations_dir / "002_two.rollback.sql")
    assert cli("db", "rollback", "1").exit_code == 0
    assert sql(db, "SELECT version FROM schema_migrations") == [("1",)]


def test_status_exits_1_with_failed_migrations(cli, migrations_dir: Path):
    write(migrations_dir, "006_bad.sql", "SELECT 1/0;")
    cli("db", "migrate")
    assert cli("db", "migration-status").exit_code == 1


@pytest.mark.parametrize(
    ("ddl", "tool"),
    [
        # golang-migrate's: https://github.com/golang-migrate/migrate database/postgres (version bigint, dirty)
        ("CREATE TABLE schema_migrations (version bigint PRIMARY KEY, dirty boolean NOT NULL)", "golang-migrate's"),
        # dbmate's: https://github.com/amacneil/dbmate pkg/driver/postgres (version varchar(128) primary key)
        ("CREATE TABLE schema_migrations (version varchar(128) PRIMARY KEY)", "dbmate's (or Rails's)"),
        # Rails keeps ar_internal_metadata beside it
        (
            "CREATE TABLE schema_migrations (version varchar PRIMARY KEY); "
            "CREATE TABLE ar_internal_metadata (key varchar PRIMARY KEY, value varchar)",
            "Rails's",
        ),
        ("CREATE TABLE schema_migrations (id int, applied text)", "not one poststack recognizes"),
    ],
)
def test_another_tools_schema_migrations_is_refused_by_name(cli, db, ddl: str, tool: str):
    sql(db, ddl)
    before = catalog_snapshot(db)
    for command in (("db", "migrate"), ("db", "diagnose"), ("db", "recover"), ("plan",), ("db", "migration-status")):
        result = cli(*command)
        assert result.exit_code == 3, (command, result.output)
        line = result.stderr.strip()
        assert line.startswith("❌ public.schema_migrations belongs to another tool (") and tool in line, line
        assert "--schema poststack" in line and len(line.splitlines()) == 1
    assert catalog_snapshot(db) == before  # refused before touching anything
    assert cli("db", "migrate", "--schema", "poststack").exit_code == 0


def test_missing_create_privilege_exits_3_with_a_hint(pg_server, database_url, migrations_dir: Path, db):
    from sqlalchemy.engine import make_url

    sql(db, "REVOKE CREATE ON SCHEMA public FROM PUBLIC")
    url = pg_server.url_for(make_url(database_url).database, user=PASSWORD_ROLE, password=PASSWORD)
    result = run_cli("db", "migrate", "--database-url", url, "--migrations-dir", str(migrations_dir))
    assert result.exit_code == 3, result.output
    assert "permission denied for schema public" in result.stderr and "Grant the role CREATE" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--database-url", "postgresql://u:p@127.0.0.1:notaport/db"], "cannot parse database URL"),
        (["--lock-timeout", "nan"], "--lock-timeout must be between"),
        (["--lock-timeout", "1e9"], "--lock-timeout must be between"),
    ],
)
def test_bad_values_are_usage_errors(migrations_dir: Path, database_url, args, message):
    base = ["db", "migrate", "--migrations-dir", str(migrations_dir)]
    if "--database-url" not in args:
        base += ["--database-url", database_url]
    result = run_cli(*base, *args)
    assert result.exit_code == 2 and message in result.stderr and "internal error" not in result.stderr


def test_backup_into_a_directory_is_private(cli, tmp_path: Path):
    target = tmp_path / "dumps"
    target.mkdir()
    assert cli("db", "backup", "--output", str(target)).exit_code == 0
    (dump,) = target.glob("poststack-*.sql")
    assert stat.S_IMODE(dump.stat().st_mode) == 0o600
    assert not list(target.glob("*.partial"))


def test_upper_case_extension_is_refused_not_ignored(cli, migrations_dir: Path):
    write(migrations_dir, "006_x.SQL", "CREATE TABLE x (id int);")
    result = cli("db", "migrate")
    assert result.exit_code == 1 and "006_x.SQL: file name does not match" in result.stderr


def test_shell_runs_a_schema_dump_framed_by_restrict(cli, db):
    dump = "\\restrict abc123\nSET client_encoding = 'UTF8';\nCREATE TABLE restored (id int);\n\\unrestrict abc123\n"
    result = cli("db", "shell", "-c", dump)
    assert result.exit_code == 0, result.output
    assert sql(db, "SELECT to_regclass('restored') IS NOT NULL") == [(True,)]
    refused = cli("db", "shell", "-c", "SELECT 1;\n\\connect other\n")
    assert refused.exit_code == 2 and "line 2: psql meta-command \\connect" in refused.stderr


def test_stale_embedded_pid_file_is_cleared(tmp_path: Path):
    from reconciler.embedded import _clear_stale_pid_file

    (tmp_path / "postmaster.pid").write_text(f"{os.getpid()}\n{tmp_path}\n")  # a live pid, not postgres
    _clear_stale_pid_file(tmp_path)
    assert not (tmp_path / "postmaster.pid").exists()


def test_a_single_user_backends_negative_pid_is_left_alone(tmp_path: Path):
    """PostgreSQL's single-user backend (initdb runs one) writes its pid negated: not stale,
    and not a number psutil takes (it raised ValueError, an internal error)."""
    from reconciler.embedded import _clear_stale_pid_file

    (tmp_path / "postmaster.pid").write_text(f"-{os.getpid()}\n{tmp_path}\n")
    _clear_stale_pid_file(tmp_path)
    assert (tmp_path / "postmaster.pid").exists()


# --- the moment of COMMIT -------------------------------------------------------------------
# A step's COMMIT travels with its tracking and audit rows. An error or interrupt after that
# send has gone out must not record a committed migration as failed.

SLOW_COMMIT = """CREATE TABLE t (id int);
CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep(3); RETURN NULL; END $$;
CREATE CONSTRAINT TRIGGER slow_at_commit AFTER INSERT ON t DEFERRABLE INITIALLY DEFERRED
  FOR EACH ROW EXECUTE FUNCTION slow();
INSERT INTO t VALUES (1);
"""


def _history(db) -> tuple[list[tuple], list[tuple]]:
    rows = sql(db, "SELECT version, success, error FROM schema_migrations ORDER BY id")
    audit = sql(db, "SELECT outcome FROM schema_migrations_audit WHERE action = 'apply_migration' ORDER BY id")
    return rows, audit


def test_sigterm_while_the_commit_runs_leaves_a_committed_migration_applied(database_url, db, tmp_path: Path):
    migrations = tmp_path / "migrations"
    migrations.mkdir()
    write(migrations, "001_slow_commit.sql", SLOW_COMMIT)
    assert (
        run_cli("db", "create-schema", "--database-url", database_url, "--migrations-dir", str(migrations)).exit_code
        == 0
    )
    proc = start_migrate(database_url, migrations)
    wait_for(
        db,
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() "
        "AND wait_event = 'PgSleep' AND query LIKE '%%COMMIT%%'",
        [(1,)],
    )
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert sql(db, "SELECT to_regclass('t') IS NOT NULL") == [(True,)]  # it committed ...
    assert _history(db) == ([("001", True, None)], [("ok",)])  # ... and nothing says it failed


def test_a_connection_lost_after_the_commit_reports_the_step_done(database_url, db, tmp_path: Path):
    """A proxy forwards the send that ends in COMMIT, then drops the client before the answer."""
    migrations = tmp_path / "migrations"
    migrations.mkdir()
    write(migrations, "001_table.sql", "CREATE TABLE t (id int);\n")
    with _CommitDroppingProxy(database_url) as proxy:
        result = run_cli("db", "migrate", "--database-url", proxy.url, "--migrations-dir", str(migrations))
    assert proxy.dropped
    assert result.exit_code == 3, result.output
    assert "just after step 1 (apply 001_table.sql) committed" in result.stderr
    assert "It is recorded as done" in result.stderr
    assert _history(db) == ([("001", True, None)], [("ok",)])
    assert sql(db, "SELECT locked FROM schema_migrations_lock") == [(False,)]


def test_a_connection_lost_while_the_commit_still_runs_waits_for_its_outcome(database_url, db, tmp_path: Path):
    """The client is cut off while the server is still committing (a slow deferred trigger):
    poststack waits for the old backend to finish before asking what happened."""
    migrations = tmp_path / "migrations"
    migrations.mkdir()
    write(migrations, "001_slow_commit.sql", SLOW_COMMIT)
    with _CommitDroppingProxy(database_url) as proxy:
        result = run_cli("db", "migrate", "--database-url", proxy.url, "--migrations-dir", str(migrations))
    assert proxy.dropped
    assert result.exit_code == 3 and "just after step 1 (apply 001_slow_commit.sql) committed" in result.stderr
    assert _history(db) == ([("001", True, None)], [("ok",)])
    assert sql(db, "SELECT locked FROM schema_migrations_lock") == [(False,)]


def test_a_commit_the_server_refuses_is_a_failure_even_when_the_same_plan_ran_before(db, cli, migrations_dir: Path):
    """A rollback puts tracking back as it was, so migrating again makes the very same plan;
    its earlier audit rows must not be mistaken for this run's."""
    for path in migrations_dir.glob("*"):
        path.unlink()
    write(
        migrations_dir,
        "001_guarded.sql",
        "CREATE TABLE flag (on_ boolean);\nCREATE TABLE t (id int);\n"
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "IF EXISTS (SELECT 1 FROM flag) THEN RAISE EXCEPTION 'flag is set'; END IF; RETURN NULL; END $$;\n"
        "CREATE CONSTRAINT TRIGGER guard AFTER INSERT ON t DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION refuse();\n",
    )
    write(migrations_dir, "002_insert.sql", "INSERT INTO t VALUES (1);\n")
    write(migrations_dir, "002_insert.rollback.sql", "DELETE FROM t;\n")
    assert cli("db", "migrate", "--target", "001").exit_code == 0
    assert cli("db", "migrate").exit_code == 0
    assert cli("db", "rollback", "001").exit_code == 0
    sql(db, "INSERT INTO flag VALUES (true)")
    result = cli("db", "migrate")
    assert result.exit_code == 1 and "flag is set" in result.output, result.output
    assert "committed" not in result.output
    assert sql(db, "SELECT count(*) FROM t") == [(0,)]
    assert sql(db, "SELECT success FROM schema_migrations WHERE version = '002' ORDER BY id") == [(False,)]


class _CommitDroppingProxy:
    """TCP → the test server, passing bytes through; the first client send that commits a
    migration's tracking row is forwarded, and then that client is cut off."""

    def __init__(self, database_url: str) -> None:
        import socket
        import threading

        params = psycopg2.extensions.parse_dsn(database_url)
        host, port = params.get("host", "localhost"), int(params.get("port", 5432))
        self.upstream = (
            (socket.AF_UNIX, f"{host}/.s.PGSQL.{port}") if host.startswith("/") else (socket.AF_INET, (host, port))
        )
        self.listener = socket.create_server(("127.0.0.1", 0))
        proxy_port = self.listener.getsockname()[1]
        keep = {k: v for k, v in params.items() if k not in ("host", "port", "hostaddr")}
        query = "&".join(
            f"{k}={v}" for k, v in {**keep, "sslmode": "disable", "gssencmode": "disable"}.items() if k != "dbname"
        )
        self.url = f"postgresql://127.0.0.1:{proxy_port}/{params['dbname']}?{query}"
        self.dropped = False
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> _CommitDroppingProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.listener.close()

    def _serve(self) -> None:
        import threading

        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._relay, args=(client,), daemon=True).start()

    def _relay(self, client) -> None:
        import socket
        import struct
        import threading
        import time

        family, address = self.upstream
        server = socket.socket(family)
        server.connect(address)

        cut = threading.Event()  # once set, nothing more reaches the client

        def back() -> None:
            try:
                while (data := server.recv(65536)) and not cut.is_set():
                    client.sendall(data)
            except OSError:
                pass

        threading.Thread(target=back, daemon=True).start()
        buffer, started = b"", False
        try:
            while data := client.recv(65536):
                buffer += data
                while True:
                    header = 4 if not started else 5
                    if len(buffer) < header:
                        break
                    size = struct.unpack("!I", buffer[header - 4 : header])[0] + (header - 4)
                    if len(buffer) < size:
                        break
                    message, buffer, started = buffer[:size], buffer[size:], True
                    if not self.dropped and message[:1] == b"Q" and b"COMMIT" in message and b"apply 001" in message:
                        self.dropped = True
                        cut.set()
                        server.sendall(message)
                        time.sleep(0.5)  # the server commits; the client never hears it
                        client.shutdown(socket.SHUT_RDWR)
                        return
                    server.sendall(message)
        except OSError:
            pass
        finally:
            client.close()
            server.close()
