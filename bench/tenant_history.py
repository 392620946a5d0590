"""A small, realistic history that serves every tenant of a fleet: ten migrations with only
unqualified names (they land in whatever schema the search_path names first), each with a
rollback file.

It has what a team's history has: tables with a foreign key and an enum, a view made again
around a rename and a type change, a function replaced, an enum value added outside a
transaction, a data migration, a comment-only file. ``app_events`` counts applications: the
data migration (007) inserts exactly one row, so a second application would show.

Used by tests/fleet (the fleet fixture) and bench/fleet.py (the fleet benchmark).
"""

from __future__ import annotations

from pathlib import Path

import psycopg2
from psycopg2 import sql as pgsql

from reconciler.config import DEFAULT_TABLE_PREFIX, TrackingLocation
from reconciler.observed.tracking import create_statements

VIEW = (
    "CREATE VIEW customer_totals AS\n"
    "    SELECT c.id, c.{name} AS customer, count(o.id) AS orders, coalesce(sum(o.total), 0) AS total\n"
    "    FROM customers c LEFT JOIN orders o ON o.customer_id = c.id\n"
    "    GROUP BY c.id, c.{name};\n"
)

HISTORY: tuple[tuple[str, str, str], ...] = (  # (file stem, up, rollback)
    (
        "001_create_customers",
        "-- Customers and the states an order goes through.\n"
        "CREATE TYPE order_status AS ENUM ('new', 'paid');\n\n"
        "CREATE TABLE customers (\n"
        "    id         bigserial PRIMARY KEY,\n"
        "    name       text NOT NULL,\n"
        "    email      text NOT NULL UNIQUE,\n"
        "    created_at timestamptz NOT NULL DEFAULT now()\n"
        ");\n\n"
        "CREATE TABLE app_events (\n"
        "    id   bigserial PRIMARY KEY,\n"
        "    kind text NOT NULL,\n"
        "    at   timestamptz NOT NULL DEFAULT now()\n"
        ");\n",
        "DROP TABLE IF EXISTS app_events;\nDROP TABLE IF EXISTS customers;\nDROP TYPE IF EXISTS order_status;\n",
    ),
    (
        "002_create_orders",
        "CREATE TABLE orders (\n"
        "    id          bigserial PRIMARY KEY,\n"
        "    customer_id bigint NOT NULL REFERENCES customers (id) ON DELETE CASCADE,\n"
        "    status      order_status NOT NULL DEFAULT 'new',\n"
        "    total       numeric(12,2) NOT NULL DEFAULT 0 CHECK (total >= 0),\n"
        "    created_at  timestamptz NOT NULL DEFAULT now()\n"
        ");\n\n"
        "CREATE INDEX orders_customer_idx ON orders (customer_id);\n",
        "DROP TABLE IF EXISTS orders;\n",
    ),
    (
        "003_customer_totals",
        VIEW.format(name="name") + "\nCREATE FUNCTION order_score(p_total numeric) RETURNS numeric\n"
        "LANGUAGE sql IMMUTABLE AS $$ SELECT p_total $$;\n",
        "DROP FUNCTION IF EXISTS order_score(numeric);\nDROP VIEW IF EXISTS customer_totals;\n",
    ),
    (
        "004_rename_customer_name",
        "-- The view is made again around the rename so that its column keeps a stable name.\n"
        "DROP VIEW customer_totals;\n"
        "ALTER TABLE customers RENAME COLUMN name TO full_name;\n" + VIEW.format(name="full_name"),
        "DROP VIEW customer_totals;\nALTER TABLE customers RENAME COLUMN full_name TO name;\n"
        + VIEW.format(name="name"),
    ),
    (
        "005_add_shipped_status",
        "-- poststack:no-transaction\nALTER TYPE order_status ADD VALUE IF NOT EXISTS 'shipped';\n",
        "-- An enum value cannot be dropped; 'shipped' stays.\n",
    ),
    (
        "006_replace_order_score",
        "CREATE OR REPLACE FUNCTION order_score(p_total numeric) RETURNS numeric\n"
        "LANGUAGE plpgsql IMMUTABLE AS $function$\n"
        "BEGIN\n"
        "    IF p_total > 1000 THEN\n"
        "        RETURN p_total * 2;\n"
        "    END IF;\n"
        "    RETURN p_total;\n"
        "END\n"
        "$function$;\n",
        "CREATE OR REPLACE FUNCTION order_score(p_total numeric) RETURNS numeric\n"
        "LANGUAGE sql IMMUTABLE AS $$ SELECT p_total $$;\n",
    ),
    (
        "007_seed_first_event",
        "-- Data only: one row per application, so applying it twice would show.\n"
        "INSERT INTO app_events (kind) VALUES ('seeded');\n",
        "DELETE FROM app_events WHERE kind = 'seeded';\n",
    ),
    (
        "008_document_orders",
        "-- Intentionally empty: the comments planned here went into 002.\n"
        "-- Kept so that the numbering stays the same in every environment.\n",
        "-- Nothing to undo.\n",
    ),
    (
        "009_widen_order_total",
        "DROP VIEW customer_totals;\n"
        "ALTER TABLE orders ALTER COLUMN total TYPE numeric(16,4);\n" + VIEW.format(name="full_name"),
        "DROP VIEW customer_totals;\n"
        "ALTER TABLE orders ALTER COLUMN total TYPE numeric(12,2);\n" + VIEW.format(name="full_name"),
    ),
    (
        "010_add_order_note",
        "ALTER TABLE orders ADD COLUMN note text;\nCREATE INDEX orders_status_idx ON orders (status);\n",
        "DROP INDEX IF EXISTS orders_status_idx;\nALTER TABLE orders DROP COLUMN IF EXISTS note;\n",
    ),
)

VERSIONS = tuple(stem.split("_", 1)[0] for stem, _, _ in HISTORY)


def write_tenant_history(directory: Path) -> list[Path]:
    """The ten migrations and their rollback files in ``directory``; the up files, in order."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for stem, up, rollback in HISTORY:
        path = directory / f"{stem}.sql"
        path.write_text(up)
        (directory / f"{stem}.rollback.sql").write_text(rollback)
        written.append(path)
    return written


def clone_tenants(url: str, migrations: Path, first: str, schemas: list[str]) -> None:
    """Make each of ``schemas`` what ``db migrate`` left in ``first``: the same files run with
    the schema first on the search_path, then the same tracking tables, rows and audit rows."""
    files = sorted(p for p in migrations.glob("*.sql") if p.name.count(".") == 1)
    script = "\n".join(p.read_text() for p in files)
    tracking = ";\n".join(s.sql for s in create_statements(TrackingLocation(first, DEFAULT_TABLE_PREFIX)))
    conn = psycopg2.connect(url)
    conn.autocommit = True
    with conn.cursor() as cur:
        for schema in schemas:
            s = pgsql.Identifier(schema).as_string(conn)
            f = pgsql.Identifier(first).as_string(conn)
            copy = "".join(
                f"INSERT INTO {s}.{table} SELECT * FROM {f}.{table};\n"
                f"SELECT setval(pg_get_serial_sequence('{s}.{table}', 'id'), (SELECT max(id) FROM {s}.{table}));\n"
                for table in ("schema_migrations", "schema_migrations_audit")
            )
            cur.execute(
                f"CREATE SCHEMA {s};\nSET search_path = {s};\n{script}\n"
                + tracking.replace(f"{f}.", f"{s}.").replace(f"CREATE SCHEMA IF NOT EXISTS {f}", "SELECT 1")
                + ";\n"
                + copy
                + "RESET search_path;"
            )
    conn.close()
