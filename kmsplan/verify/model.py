"""What `kmsplan verify` reports: one `Check` per property proved (or disproved) on the live store.

A check is pass or fail and always carries its evidence: what verify called and what came back,
or why a property does not hold. The report is data; kmsplan.verify.render turns it into text,
JSON or Markdown, so the CLI and Python callers see the same thing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

FORMAT_VERSION = 1

#: every check verify runs, in the order a copy's checks are reported (docs/verify.md)
CHECK_NAMES = (
    "state", "rotation", "replicas", "access", "context-required", "round-trip", "context-binding",
    "cross-region", "sign-verify", "mac", "audit",
)


@dataclass(frozen=True)
class Check:
    """One property of one key copy (or of the run itself, for `audit`: address None)."""

    address: str | None
    region: str | None
    check: str
    passed: bool
    evidence: str
    action: str | None = None  # the IAM action of an `access` check

    @property
    def label(self) -> str:
        """How text and Markdown name the check: `access kms:Decrypt`, `rotation`."""
        return f"{self.check} {self.action}" if self.action else self.check

    def to_data(self) -> dict[str, Any]:
        return {"address": self.address, "region": self.region, "check": self.check, "action": self.action,
                "status": "pass" if self.passed else "fail", "evidence": self.evidence}


@dataclass(frozen=True)
class Report:
    """Everything one verify run proved, as `principal`, with `operations` KMS calls."""

    stack: str
    account: str
    principal: str
    checks: tuple[Check, ...]
    operations: int

    @property
    def failed(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if not c.passed)

    @property
    def ok(self) -> bool:
        return not self.failed

    def summary_line(self) -> str:
        total = len(self.checks)
        if self.ok:
            return f"Verify passed: {total} check{'' if total == 1 else 's'} passed."
        return f"Verify failed: {len(self.failed)} of {total} checks failed."

    def to_data(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION, "stack": self.stack, "account": self.account,
            "principal": self.principal, "ok": self.ok,
            "summary": {"passed": len(self.checks) - len(self.failed), "failed": len(self.failed),
                        "operations": self.operations},
            "checks": [c.to_data() for c in self.checks],
        }
