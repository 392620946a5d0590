"""Splitting a fleet across machines: ``--shard I/N`` keeps the targets whose stable hash
falls in shard I. The hash is of the target's key (its URL without a password, and its
schema), so every machine computes the same split, in any order, and adding a target moves
only that target."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

from reconciler.errors import UsageError
from reconciler.fleet.targets import Target


@dataclass(frozen=True)
class Shard:
    index: int  # 1-based, as the CI matrix and `--shard 1/4` count
    count: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
        if not match:
            raise UsageError(f"--shard {text!r}: write it as I/N, e.g. 1/4 (shards are counted from 1)")
        index, count = int(match[1]), int(match[2])
        if not 1 <= index <= count:
            raise UsageError(f"--shard {text}: I must be between 1 and N (a Kubernetes index is 0-based: add 1)")
        return cls(index, count)

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def holds(self, target: Target) -> bool:
        return shard_of(target, self.count) == self.index


def shard_of(target: Target, count: int) -> int:
    digest = hashlib.sha256(target.key.encode()).digest()
    return int.from_bytes(digest[:8], "big") % count + 1


def select(targets: Sequence[Target], shard: Shard | None) -> list[Target]:
    return list(targets) if shard is None else [t for t in targets if shard.holds(t)]
