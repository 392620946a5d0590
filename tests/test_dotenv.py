"""The .env parser: what dbmate, docker compose and python-dotenv users write, and the
malformed lines that must be an error naming file:line rather than a setting dropped."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler import dotenv
from reconciler.errors import UsageError


def values(text: str) -> dict[str, str]:
    return {e.key: e.value for e in dotenv.parse(text, ".env")}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("KEY=value\n", {"KEY": "value"}),
        ("KEY\nexport OTHER\nA=1\n", {"A": "1"}),  # bare keys (compose: from the environment) are skipped
        ("export KEY=value\n", {"KEY": "value"}),
        ("  export   KEY = value  \n", {"KEY": "value"}),
        ("KEY=\n", {"KEY": ""}),
        ("KEY=value # a comment\n", {"KEY": "value"}),
        ("KEY=pa#ss\n", {"KEY": "pa#ss"}),  # "#" starts a comment only after whitespace
        ("KEY='single # quoted'  # comment\n", {"KEY": "single # quoted"}),
        ("KEY='a\\nb $X'\n", {"KEY": "a\\nb $X"}),  # single quotes are literal
        ('KEY="a\\nb\\t\\"c\\" \\\\ \\x"\n', {"KEY": 'a\nb\t"c" \\ \\x'}),
        ('KEY="postgresql://u:p w@h/d"\n', {"KEY": "postgresql://u:p w@h/d"}),
        ("KEY=${OTHER}\n", {"KEY": "${OTHER}"}),  # not expanded
        ("# comment\n\n   \n  # indented comment\nA=1\nB=2\n", {"A": "1", "B": "2"}),
        ("A=1\nA=2\n", {"A": "2"}),  # the last wins, as in a shell
        ("KEY=a=b=c\n", {"KEY": "a=b=c"}),
        ("app.name=x\nAPP-NAME=y\n", {"app.name": "x", "APP-NAME": "y"}),  # other apps' names
        (
            'PEM="-----BEGIN-----\nabc\n-----END-----"\nNEXT=1\n',
            {"PEM": "-----BEGIN-----\nabc\n-----END-----", "NEXT": "1"},
        ),
        ("KEY=value\r\nOTHER=2\r\n", {"KEY": "value", "OTHER": "2"}),  # a Windows checkout
    ],
)
def test_what_people_write(text: str, expected: dict[str, str]):
    assert values(text) == expected


def test_entries_know_their_line():
    entries = dotenv.parse("# c\nA=1\n\nB='x\ny'\nC=3\n", ".env")
    assert [(e.key, e.line) for e in entries] == [("A", 2), ("B", 4), ("C", 6)]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("A=1\nnot an assignment\n", ".env:2: not a KEY=value line"),
        ("A=1\n= value\n", ".env:2: not a KEY=value line"),
        ("1KEY=x\n", ".env:1: not a KEY=value line"),
        ("A=1\nB='never closed\nC=3\n", ".env:2: the value of B opens a ' quote that is never closed"),
        ('B="x\\"\n', '.env:1: the value of B opens a " quote that is never closed'),
        ("B='x' y\n", ".env:1: unexpected text after the quoted value of B"),
    ],
)
def test_a_malformed_line_names_file_and_line(text: str, message: str):
    with pytest.raises(UsageError) as raised:
        dotenv.parse(text, ".env")
    assert raised.value.summary == message
    assert raised.value.exit_code == 2


def test_read_from_disk(tmp_path: Path):
    assert dotenv.read(tmp_path) == (None, [])
    (tmp_path / ".env").write_bytes("\ufeffDATABASE_URL=postgresql://h/d\n".encode())  # a BOM
    path, entries = dotenv.read(tmp_path)
    assert path == tmp_path / ".env"
    assert [(e.key, e.value) for e in entries] == [("DATABASE_URL", "postgresql://h/d")]
    (tmp_path / ".env").write_bytes(b"A=\xff\n")
    with pytest.raises(UsageError, match=r"\.env: not UTF-8 text"):
        dotenv.read(tmp_path)
