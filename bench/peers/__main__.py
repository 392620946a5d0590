"""python -m bench.peers: see bench/peers/__init__.py."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import psycopg2

from bench.common import (
    fresh_database,
    machine,
    poststack_argv,
    psql_path,
    server_url,
    tracked_script,
    write_doc_section,
)
from bench.peers.install import ensure_installed
from bench.peers.measure import Run, run, run_all
from bench.peers.report import IMPORT_FLOORS, Figures, render
from bench.peers.tools import PEERS, Peer, Server
from reconciler.dsn import libpq_env

ROLLED_BACK = 50
PREFIX = "poststack_bench_peers_"


def _server(admin: str) -> Server:
    from reconciler.dsn import libpq_url

    keywords = psycopg2.extensions.parse_dsn(libpq_url(admin))
    return Server(
        keywords.get("host", "localhost"),
        keywords.get("port", "5432"),
        keywords.get("user", "postgres"),
        keywords.get("password", ""),
    )


def _tables(url: str, *names: str) -> list[bool]:
    conn = psycopg2.connect(url)
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass(n) IS NOT NULL FROM unnest(%s::text[]) AS n", (list(names),))
        found = [bool(r[0]) for r in cur.fetchall()]
    conn.close()
    return found


def _drop_all(admin: str) -> None:
    conn = psycopg2.connect(admin)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (PREFIX.replace("_", "\\_") + "%",))
        for (name,) in cur.fetchall():
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--quick", action="store_true", help="one run of 100 migrations; docs untouched")
    parser.add_argument("--peers", default=",".join(PEERS), help="which tools, comma-separated")
    args = parser.parse_args()
    runs, count = (1, 100) if args.quick else (args.runs, args.count)
    chosen = [name for name in args.peers.split(",") if name]
    unknown = [name for name in chosen if name not in PEERS]
    if unknown or "poststack" not in chosen:
        raise SystemExit(f"--peers: one of {', '.join(PEERS)} each, poststack among them (got {args.peers})")

    installed = ensure_installed()
    admin, stop = server_url()
    server = _server(admin)
    work = Path(tempfile.mkdtemp(prefix="poststack-bench-peers-"))
    figures = Figures(count=count, runs=runs, rolled_back=ROLLED_BACK)
    load_before = os.getloadavg()[0]
    version, where = _describe(admin, server)
    try:
        # Each tool's project; its template: a database where it applied them all (untimed),
        # cloned for every timed run. W3 adds the one more migration in place (Peer.grown).
        peers: dict[str, Peer] = {}
        for name in chosen:
            peers[name] = PEERS[name](installed, server, work / name)
            peers[name].write(1, count)
            template = fresh_database(admin, f"{PREFIX}{name}_template")
            database = template.rsplit("/", 1)[-1].split("?")[0]
            for argv in peers[name].apply(database):
                run(argv, cwd=peers[name].project, env=peers[name].env(database))
            if _tables(template, f"bench_{count}") != [True]:
                raise SystemExit(f"{name} did not apply the {count} migrations")
        psql = psql_path(admin)
        floor_script = work / "floor.psql"
        floor_script.write_text(tracked_script(peers["poststack"].project / "migrations"))

        for i in range(runs):
            for name, peer in peers.items():  # each workload in turn, tools alternating
                figures.add(name, "W1", _w1(admin, peer, f"{PREFIX}{name}_w1_{i}", count))
                figures.add(name, "W2", _status(admin, peer, name, f"{PREFIX}{name}_w2_{i}"))
                with peer.grown(count):  # after W1: with what the tool kept from it
                    figures.add(name, "W3", _w3(admin, peer, name, f"{PREFIX}{name}_w3_{i}", count))
                figures.add(name, "W4", _w4(admin, peer, name, f"{PREFIX}{name}_w4_{i}", count))
            url = fresh_database(admin, f"{PREFIX}floor_{i}")
            floor = [psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", str(floor_script)]
            figures.add("floor", "W1", run(floor, cwd=work, env=libpq_env(url)))
        for _ in range(max(runs, 5)):
            figures.add("python", "start", run([sys.executable, "-c", "pass"], cwd=work, env=dict(os.environ)))
            # What the fixed libraries cost before poststack does anything (see report.IMPORT_FLOORS).
            for label, imports, _ in IMPORT_FLOORS:
                argv = [sys.executable, "-c", f"import {imports}"]
                figures.add("imports", label, run(argv, cwd=work, env=dict(os.environ)))
            for label, argv in (("version", poststack_argv("version")), ("--help", poststack_argv("--help"))):
                figures.add("poststack", label, run(argv, cwd=work, env=dict(os.environ)))
    finally:
        _drop_all(admin)
        stop()
        shutil.rmtree(work, ignore_errors=True)

    labels = {name: PEERS[name].label for name in chosen}
    header = (
        f"- Run: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}; {runs} run(s) of each, medians\n"
        f"- Machine: {machine()}; load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after\n"
        f"- Server: PostgreSQL {version}, {where}"
    )
    table = render(figures, labels)
    print(header)
    print(table)
    if not args.quick:
        write_doc_section(
            Path(__file__).resolve().parents[2] / "docs" / "performance.md", "bench.peers", f"{header}\n\n{table}"
        )


def _describe(admin: str, server: Server) -> tuple[str, str]:
    """The server's version, and how the tools reach it."""
    conn = psycopg2.connect(admin)
    with conn.cursor() as cur:
        cur.execute("SELECT current_setting('server_version'), current_setting('fsync')")
        version, fsync = cur.fetchone()
    conn.close()
    how = "a Unix socket" if server.host.startswith("/") else f"TCP to {server.host}"
    return version, f"{how}, fsync {fsync}"


def _w1(admin: str, peer: Peer, name: str, count: int) -> Run:
    url = fresh_database(admin, name)
    peer.forget()
    result = run_all(peer.apply(name), cwd=peer.project, env=peer.env(name))
    if _tables(url, f"bench_{count}") != [True]:
        raise SystemExit(f"{peer.name}: W1 did not apply the migrations")
    return result


def _status(admin: str, peer: Peer, tool: str, name: str) -> Run:
    fresh_database(admin, name, template=f"{PREFIX}{tool}_template")
    return run_all(peer.status(name), cwd=peer.project, env=peer.env(name))


def _w3(admin: str, peer: Peer, tool: str, name: str, count: int) -> Run:
    url = fresh_database(admin, name, template=f"{PREFIX}{tool}_template")
    result = run_all(peer.apply(name), cwd=peer.project, env=peer.env(name))
    if _tables(url, f"bench_{count + 1}") != [True]:
        raise SystemExit(f"{peer.name}: W3 did not apply migration {count + 1}")
    return result


def _w4(admin: str, peer: Peer, tool: str, name: str, count: int) -> Run:
    url = fresh_database(admin, name, template=f"{PREFIX}{tool}_template")
    result = run_all(peer.rollback(name, ROLLED_BACK, count), cwd=peer.project, env=peer.env(name))
    kept, gone = f"bench_{count - ROLLED_BACK}", f"bench_{count - ROLLED_BACK + 1}"
    if _tables(url, kept, gone) != [True, False]:
        raise SystemExit(f"{peer.name}: W4 did not roll back exactly the last {ROLLED_BACK}")
    return result


if __name__ == "__main__":
    main()
