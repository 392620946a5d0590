"""The application's data access, on a SQLAlchemy engine."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import Engine

from reconciler import api

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def start(engine: Engine) -> None:
    """At start-up: bring the database up to date (replicas may all do it at once)."""
    result = api.migrate(engine, migrations_dir=MIGRATIONS)
    if not result.ok:
        raise RuntimeError(f"migrations failed: {result.execution.failure if result.execution else result.plan.notes}")


def sign_up(engine: Engine, handle: str) -> int:
    with engine.begin() as conn:
        return conn.execute(
            text("INSERT INTO users (handle) VALUES (lower(:h)) RETURNING id"), {"h": handle}
        ).scalar_one()


def place_order(engine: Engine, user_id: int, total_cents: int) -> int:
    with engine.begin() as conn:
        return conn.execute(
            text("INSERT INTO orders (user_id, total_cents) VALUES (:u, :t) RETURNING id"),
            {"u": user_id, "t": total_cents},
        ).scalar_one()


def order_count(engine: Engine, user_id: int) -> int:
    with engine.connect() as conn:
        return conn.execute(text("SELECT order_count(:u)"), {"u": user_id}).scalar_one()
