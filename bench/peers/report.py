"""The figures of one run, judged against the targets, as a Markdown table."""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass, field

from bench.peers.measure import Run

STATUS_VS_DBMATE = 0.6  # W2 ≤ 0.6 × dbmate
APPLY_ONE_VS_DBMATE = 1.0  # W3 ≤ 1.0 × dbmate
APPLY_VS_FLOOR = 1.1  # W1 ≤ 1.1 × psql writing the same rows
START_VS_PYTHON = 4.0  # version, --help ≤ 4 × python -c pass
# Floors under the targets: Python importing the libraries poststack is built on (fixed
# choices), with nothing of poststack's own. (label, modules, the workload whose target it bounds)
IMPORT_FLOORS = (
    ("typer, psycopg2", "typer, psycopg2", "W2"),  # every command that reaches a database
    ("typer, psycopg2, pglast", "typer, psycopg2, pglast", "W3"),  # a command that parses a migration
)


@dataclass
class Figures:
    count: int
    runs: int
    rolled_back: int
    runs_by: dict[tuple[str, str], list[Run]] = field(default_factory=lambda: defaultdict(list))

    def add(self, tool: str, workload: str, result: Run) -> None:
        self.runs_by[(tool, workload)].append(result)

    def seconds(self, tool: str, workload: str) -> float:
        return statistics.median(r.seconds for r in self.runs_by[(tool, workload)])

    def cpu(self, tool: str, workload: str) -> float:
        return statistics.median(r.cpu for r in self.runs_by[(tool, workload)])

    def rss_mb(self, tool: str) -> tuple[float, float]:
        """The smallest and largest median peak RSS over the four workloads."""
        medians = [
            statistics.median(r.rss_kib for r in self.runs_by[(tool, w)]) / 1024 for w in ("W1", "W2", "W3", "W4")
        ]
        return min(medians), max(medians)


def _verdict(ok: bool) -> str:
    return "✅" if ok else "❌ misses"


def _time(seconds: float) -> str:
    return f"{seconds:.3f} s" if seconds < 1 else f"{seconds:.2f} s"


def render(figures: Figures, labels: dict[str, str]) -> str:
    """``labels``: each tool measured, poststack first, with its version."""
    tools = list(labels)
    peers = [t for t in tools if t != "poststack"]
    n, k = figures.count, figures.rolled_back
    rows = []

    def row(name: str, cells: list[str], target: str, ok: bool | None) -> None:
        rows.append(f"| {name} | {' | '.join(cells)} | {target} | {'' if ok is None else _verdict(ok)} |")

    def ratio(workload: str, other: str) -> float:
        return figures.seconds("poststack", workload) / figures.seconds(other, workload)

    def vs_every_peer(workload: str) -> tuple[str, bool]:
        best = min(peers, key=lambda t: figures.seconds(t, workload)) if peers else None
        if best is None:
            return "≤ every peer", True
        r = ratio(workload, best)
        return f"≤ every peer: {r:.2f} × the fastest ({labels[best]})", r <= 1.0

    workloads = (
        ("W1", f"W1 apply {n}"),
        ("W2", f"W2 status, {n} applied"),
        ("W3", f"W3 apply the {n + 1}st" if (n + 1) % 10 == 1 and (n + 1) % 100 != 11 else f"W3 apply one on {n}"),
        ("W4", f"W4 roll back {k}"),
    )
    for workload, name in workloads:
        cells = [_time(figures.seconds(t, workload)) for t in tools]
        if workload == "W1":
            target, ok = vs_every_peer("W1")
            floor = figures.seconds("floor", "W1")
            to_floor = figures.seconds("poststack", "W1") / floor
            target += f"; ≤ {APPLY_VS_FLOOR:g} × psql writing the same rows ({_time(floor)}): {to_floor:.2f} ×"
            ok = ok and to_floor <= APPLY_VS_FLOOR
        elif workload in ("W2", "W3") and "dbmate" in peers:
            limit = STATUS_VS_DBMATE if workload == "W2" else APPLY_ONE_VS_DBMATE
            r = ratio(workload, "dbmate")
            target, ok = f"≤ {limit:g} × dbmate: {r:.2f} ×", r <= limit
        else:
            target, ok = vs_every_peer(workload)
        row(name, cells, target, ok)
    for workload, name in workloads:
        row(f"client CPU, {name.split(' ', 1)[0]}", [_time(figures.cpu(t, workload)) for t in tools], "", None)
    ranges = {t: figures.rss_mb(t) for t in tools}
    lowest_peer = min((ranges[t][1] for t in peers), default=float("inf"))
    row(
        "peak RSS (W1–W4)",
        [f"{lo:.0f}–{hi:.0f} MB" for lo, hi in ranges.values()],
        "the lowest of the peers",
        ranges["poststack"][1] <= lowest_peer,
    )
    python = figures.seconds("python", "start")
    for label in ("version", "--help"):
        seconds = figures.seconds("poststack", label)
        cells = [_time(seconds)] + [""] * len(peers)
        r = seconds / python
        target = f"≤ {START_VS_PYTHON:g} × `python -c pass` ({_time(python)}): {r:.1f} ×"
        row(f"start-up: `poststack {label}`", cells, target, r <= START_VS_PYTHON)
    for label, _, bounded in IMPORT_FLOORS:
        runs = figures.runs_by[("imports", label)]
        if not runs or "dbmate" not in peers:
            continue
        seconds = figures.seconds("imports", label)
        rss = statistics.median(r.rss_kib for r in runs) / 1024
        limit = (STATUS_VS_DBMATE if bounded == "W2" else APPLY_ONE_VS_DBMATE) * figures.seconds("dbmate", bounded)
        cells = [f"{_time(seconds)}, {rss:.0f} MB"] + [""] * len(peers)
        target = f"{bounded}'s target: {_time(limit)}; this floor is {seconds / limit:.2f} × it"
        row(f"floor: `python -c 'import {label}'`", cells, target, None)
    header = f"| workload | {' | '.join(labels[t] for t in tools)} | target | |"
    rule = "|" + "---|" * (len(tools) + 3)
    return "\n".join([header, rule, *rows])
