"""Fleet targets, shards and merged reports: pure, no database."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import pytest

from reconciler.config import Settings
from reconciler.dsn import parse, with_search_path
from reconciler.errors import UsageError
from reconciler.fleet.command import merge
from reconciler.fleet.report import FleetReport, TargetReport
from reconciler.fleet.shard import Shard, select, shard_of
from reconciler.fleet.targets import Target, read_targets_file, targets_from_rows


def _file(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_yaml_list_of_databases(tmp_path: Path):
    path = _file(
        tmp_path,
        "t.yaml",
        "targets:\n  - postgresql://app:s3cret@db1:5432/shop\n  - {url: 'postgres://app@db2/shop', name: eu-2}\n",
    )
    first, second = read_targets_file(path)
    assert (first.schema, first.name) == (None, "postgresql://app:***@db1:5432/shop")
    assert first.key == "postgresql://app@db1:5432/shop"  # no password in what shards and plans keep
    assert (second.name, second.key) == ("eu-2", "postgresql://app@db2/shop")


def test_a_toml_database_and_its_tenant_schemas(tmp_path: Path):
    path = _file(
        tmp_path,
        "t.toml",
        'url = "postgresql://app:pw@db/saas"\nschemas = ["tenant_1", "tenant_2"]\nshared_schemas = ["public"]\n',
    )
    targets = read_targets_file(path)
    assert [t.name for t in targets] == ["tenant_1", "tenant_2"]
    assert targets[0].key == "postgresql://app@db/saas#tenant_1"
    base = Settings(database_url=None, url_source="default", migrations_dir=tmp_path, tracking_schema="public")
    settings = targets[1].settings(base)
    assert (settings.database_url, settings.tracking_schema) == ("postgresql://app:pw@db/saas", "tenant_2")
    assert settings.search_path == ("tenant_2", "public")


def test_tenants_without_a_url_are_in_the_configured_database(tmp_path: Path):
    (target,) = read_targets_file(_file(tmp_path, "t.yml", "schemas: [acme]\n"))
    base = Settings(
        database_url="postgresql://x@h/db", url_source="flag", migrations_dir=tmp_path, tracking_schema="public"
    )
    assert target.url is None and target.settings(base).database_url == "postgresql://x@h/db"


@pytest.mark.parametrize(
    ("name", "text", "says"),
    [
        ("t.json", "{}", "name it .yaml, .yml or .toml"),
        ("t.yaml", "targets: [\n", "t.yaml:2: not valid YAML"),
        ("t.toml", "targets = [", "not valid TOML"),
        ("t.yaml", "- postgresql://a@b/c\n", "a targets file is a mapping"),
        ("t.yaml", "targets: []\n", "targets must be a non-empty list"),
        ("t.yaml", "targets: [mysql://a@b/c]\n", "targets[0]: mysql://a@b/c is not a postgresql:// URL"),
        ("t.yaml", "targets: [{url: 'postgresql://a@b/c', nmae: x}]\n", "unknown key 'nmae'"),
        ("t.yaml", "schemas: [Acme]\n", "'Acme' is not a tenant schema name"),
        ("t.yaml", "schemas: [a, a]\n", "a is listed twice"),
        ("t.yaml", "url: postgresql://a@b/c\nschemas: [a]\ntargets: [postgresql://a@b/d]\n", "not both"),
        ("t.yaml", "schema: [a]\n", "unknown key 'schema'"),
        ("t.yaml", "targets: ['postgresql://a:pw@b/c', 'postgresql://a:other@b/c']\n", "listed twice"),
        ("t.yaml", "schemas: [a, b]\nschemas: [c]\n", "t.yaml:2: not valid YAML: 'schemas' is given twice"),
        ("t.yaml", "schemas: [a, pg_catalog]\n", "pg_catalog is PostgreSQL's own schema"),
        ("t.yaml", "schemas: [information_schema]\n", "information_schema is PostgreSQL's own schema"),
    ],
)
def test_a_bad_targets_file_is_one_line_naming_it(tmp_path: Path, name: str, text: str, says: str):
    with pytest.raises(UsageError) as caught:
        read_targets_file(_file(tmp_path, name, text))
    assert says in caught.value.summary
    assert "pw" not in caught.value.summary and "other" not in caught.value.summary


def test_a_query_returns_urls_or_schemas_never_both():
    assert [t.schema for t in targets_from_rows([("a",), ("b",), (None,)], "q")] == ["a", "b"]
    assert [t.url for t in targets_from_rows([("postgresql://x@h/a",)], "q")] == ["postgresql://x@h/a"]
    with pytest.raises(UsageError, match="both URLs and schema names"):
        targets_from_rows([("a",), ("postgresql://x@h/a",)], "q")
    with pytest.raises(UsageError, match="returned no targets"):
        targets_from_rows([], "SELECT 1 WHERE false")


def test_a_search_path_joins_the_options_a_url_already_has():
    url = with_search_path("postgresql://u:p@h/db?options=-c%20statement_timeout%3D5&sslmode=disable", ("t1", "public"))
    keywords = parse(url)
    assert keywords["options"] == "-c statement_timeout=5 -c search_path=t1,public"
    assert (keywords["sslmode"], keywords["password"]) == ("disable", "p")


def _targets(count: int) -> list[Target]:
    return [Target("postgresql://app@db/saas", f"tenant_{i:04d}") for i in range(count)]


def test_shards_split_the_fleet_whatever_its_order():
    targets = _targets(500)
    shards = [select(targets, Shard(i, 4)) for i in range(1, 5)]
    assert sorted(t.key for shard in shards for t in shard) == sorted(t.key for t in targets)
    assert all(80 < len(shard) < 170 for shard in shards), [len(s) for s in shards]
    shuffled = targets[:]
    random.Random(7).shuffle(shuffled)
    assert {t.key for t in select(shuffled, Shard(2, 4))} == {t.key for t in shards[1]}


def test_a_targets_shard_depends_on_its_key_alone():
    """Adding a target moves no other; a password change moves nothing; the hash is fixed
    (a test that fails if it ever changes: every CI matrix would reshuffle)."""
    target = Target("postgresql://app:one@db/saas", "tenant_0001")
    assert shard_of(target, 4) == shard_of(Target("postgresql://app:two@db/saas", "tenant_0001"), 4)
    assert [shard_of(t, 7) for t in _targets(8)] == [shard_of(t, 7) for t in _targets(9)[:8]]
    assert [shard_of(t, 4) for t in _targets(6)] == [2, 1, 4, 1, 3, 3]
    # The documented formula (docs/fleet.md): the key's SHA-256, first 8 bytes big-endian, mod N.
    key = "postgresql://app@db/saas#tenant_0002"
    assert shard_of(_targets(3)[2], 4) == int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % 4 + 1


@pytest.mark.parametrize("text", ["0/4", "5/4", "1-4", "x/2", "1/0"])
def test_a_bad_shard_is_a_usage_error(text: str):
    with pytest.raises(UsageError, match="--shard"):
        Shard.parse(text)


def _report(command: str, names: list[str], shard: str) -> FleetReport:
    rows = tuple(TargetReport(n, f"k#{n}", "db", n, "ok", 0, 0.5, "002", 1, 0) for n in names)
    return FleetReport(command, rows, 2, 0, True, (shard,), 1.5)


def test_merged_shards_are_one_report():
    merged = merge(
        [_report("db migrate", ["a", "c"], "1/2"), _report("db migrate", ["b"], "2/2")], ["1.json", "2.json"]
    )
    assert [t.target for t in merged.targets] == ["a", "c", "b"]
    assert merged.shards == ("1/2", "2/2") and merged.totals["pending"] == 3 and merged.ok
    assert FleetReport.from_json(merged.to_json()) == merged


def test_merging_overlapping_shards_or_two_commands_is_refused():
    with pytest.raises(UsageError, match=r"in both 1\.json and 2\.json"):
        merge([_report("db migrate", ["a"], "1/2"), _report("db migrate", ["a"], "2/2")], ["1.json", "2.json"])
    with pytest.raises(UsageError, match="different commands"):
        merge([_report("db migrate", ["a"], "1/2"), _report("db diagnose", ["b"], "2/2")], ["1.json", "2.json"])


def test_a_merge_missing_a_shard_is_not_ok():
    merged = merge([_report("db migrate", ["a"], "1/3"), _report("db migrate", ["b"], "3/3")], ["1.json", "3.json"])
    assert merged.missing_shards == ("2/3",) and not merged.ok
    assert merged.to_json()["fleet"]["missing_shards"] == ["2/3"]
