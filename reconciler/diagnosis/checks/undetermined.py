"""undetermined: an untracked migration whose state cannot be read from the catalog:
nothing it does is attributable and it has no verify script. Never counted as applied."""

from __future__ import annotations

from reconciler.diagnosis.attribution import Verdict
from reconciler.diagnosis.checks.base import Facts, check, held_after_recovery
from reconciler.diagnosis.issues import Issue, IssueType


@check(IssueType.UNDETERMINED)
def undetermined(facts: Facts) -> list[Issue]:
    issues = []
    held = held_after_recovery(facts)
    for migration in facts.untracked:
        found = facts.attributions[migration.version]
        if found.verdict is not Verdict.UNDETERMINED or migration.file.empty:
            continue  # an empty migration changes nothing: whether it ran does not matter
        effects = facts.desired.history.effects.get(migration.version)
        issues.append(
            Issue(
                IssueType.UNDETERMINED,
                f"Migration {migration.version} cannot be confirmed applied or pending",
                migration.version,
                {
                    "description": migration.description,
                    "reason": found.reason,
                    # migrate holds it even once recover has tracked what shows applied: a person
                    # must say whether it ran (recover --force tracks only these)
                    "held": migration.version in held,
                    "unattributed_statements": [
                        f"line {u.line}: {u.reason}" for u in (effects.unattributed if effects else ())
                    ],
                },
                suggested_fix=f"Add {migration.verify_at.name} returning true once it is applied"
                if migration.verify_at
                else f"If it ran, poststack db recover --force {migration.version} tracks it; if it did not, "
                "poststack db migrate runs it",
            )
        )
    return issues
