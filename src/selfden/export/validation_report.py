"""What ``validate_package`` returns: one ``Check`` per rule and the ``ValidationReport`` of them all.

A broken package is an expected outcome (a failed report), never an exception; ``format``
gives the table the CLI prints.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Check:
    """One rule: whether the package follows it and why (one line).

    A failed ``warning`` is shown but does not fail the package.
    """

    name: str
    passed: bool
    detail: str
    warning: bool = False
    skipped: bool = False  # could not run because an earlier check failed (counts as failed)

    @classmethod
    def not_run(cls, name: str, reason: str) -> Check:
        return cls(name, False, f"not run: {reason}", skipped=True)

    @property
    def status(self) -> str:
        if self.passed:
            return "pass"
        return "warn" if self.warning else ("skip" if self.skipped else "FAIL")


@dataclass(frozen=True)
class ValidationReport:
    """All checks of one package; ``passed`` when no check that is not a warning failed."""

    package: Path
    checks: list[Check] = field(default_factory=list)
    passed: bool = False

    @classmethod
    def of(cls, package: Path, checks: list[Check]) -> ValidationReport:
        return cls(package, list(checks), all(c.passed or c.warning for c in checks))

    def check(self, name: str) -> Check:
        """The check called ``name`` (KeyError if there is none)."""
        found = [c for c in self.checks if c.name == name]
        if not found:
            raise KeyError(f"no check {name!r}; checks: {', '.join(c.name for c in self.checks)}")
        return found[0]

    def format(self) -> str:
        """A plain-text table: one row per check, then the verdict."""
        width = max([len(c.name) for c in self.checks] + [5])
        rows = [f"package: {self.package}", f"{'check':<{width}}  result  detail"]
        rows += [f"{c.name:<{width}}  {c.status:<6}  {c.detail}" for c in self.checks]
        counts = {s: sum(c.status == s for c in self.checks) for s in ("FAIL", "skip", "warn")}
        verdict = "PASSED" if self.passed else f"FAILED: {counts['FAIL']} of {len(self.checks)} checks failed"
        verdict += f", {counts['skip']} not run" * bool(counts["skip"])
        verdict += f", {counts['warn']} warning(s)" * bool(counts["warn"])
        return "\n".join([*rows, verdict])
