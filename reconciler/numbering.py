"""How versions are numbered: a sequence (003 -> 004) or a UTC timestamp (14 digits or more,
as dbmate, golang-migrate, diesel and Prisma write them). Light on purpose: the CLI offers
the choices before it loads anything else."""

from __future__ import annotations

import re

NUMBERINGS = ("sequence", "timestamp")
TIMESTAMP_DIGITS = 14  # YYYYMMDDHHMMSS


def numbering_of(version: str) -> str:
    """How ``version`` was numbered."""
    digits = re.sub(r"\D", "", version)
    return "timestamp" if len(digits) >= TIMESTAMP_DIGITS and "." not in version else "sequence"


def next_in_sequence(version: str) -> str:
    """The next version in sequence: its last number plus one, at the same width (003 -> 004,
    Flyway's 1.2 -> 1.3, a timestamp's last digits counted on when a sequence is asked for)."""
    match = re.match(r"^(?P<head>.*?)(?P<last>\d+)$", version)
    if match is None:  # versions are digits (versions.py): no other shape reaches here
        raise ValueError(f"{version!r} is not a version")
    last = match["last"]
    return f"{match['head']}{str(int(last) + 1).zfill(len(last))}"
