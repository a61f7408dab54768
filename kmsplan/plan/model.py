"""The plan as immutable data: what the renderers explain and the applier executes (STYLE 1).

A `Change` names one addressable resource and the actions Terraform would print for it
(["create"], ["update"], ["delete"], ["delete", "create"] for a replaced grant, ["no-op"]).
`before` and `after` are plain JSON-ready dicts of the resource's attributes, so the JSON plan,
the Markdown comment and the applier all read the same values.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

FORMAT_VERSION = "1.0"

CREATE, UPDATE, DELETE, NOOP = "create", "update", "delete", "no-op"
REPLACE = (DELETE, CREATE)

KEY, REPLICA, ALIAS, GRANT = "key", "replica", "alias", "grant"

ERROR, WARNING = "error", "warning"


@dataclass(frozen=True)
class Change:
    """One resource's change. `key_id` is the live key the change works on (None for a key or
    replica still to be created); `region` is where the resource lives."""

    address: str
    kind: str
    region: str
    actions: tuple[str, ...]
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    reason: str = ""
    key_id: str | None = None
    deletion_date: str | None = None     # a scheduled deletion: when the material goes (ISO 8601)

    @property
    def is_noop(self) -> bool:
        return self.actions == (NOOP,)

    def changed_attributes(self) -> list[str]:
        """Attribute names whose value differs between before and after (sorted)."""
        before, after = self.before or {}, self.after or {}
        return sorted(name for name in set(before) | set(after) if before.get(name) != after.get(name))

    def to_data(self) -> dict[str, Any]:
        return {"address": self.address, "type": self.kind, "region": self.region,
                "actions": list(self.actions), "before": self.before, "after": self.after,
                "reason": self.reason, "key_id": self.key_id, "deletion_date": self.deletion_date}

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> Change:
        return cls(data["address"], data["type"], data["region"], tuple(data["actions"]),
                   data["before"], data["after"], data.get("reason", ""), data.get("key_id"),
                   data.get("deletion_date"))


@dataclass(frozen=True)
class Finding:
    """A guard's verdict on one address: `code` (G...), severity, what and what to do."""

    code: str
    severity: str
    address: str
    message: str
    hint: str = ""

    @property
    def is_error(self) -> bool:
        return self.severity == ERROR

    def to_data(self) -> dict[str, str]:
        return {"code": self.code, "severity": self.severity, "address": self.address,
                "message": self.message, "hint": self.hint}

    @classmethod
    def from_data(cls, data: dict[str, str]) -> Finding:
        return cls(data["code"], data["severity"], data["address"], data["message"], data.get("hint", ""))


@dataclass(frozen=True)
class Flags:
    """The choices a plan was made with; they are part of what its signature covers."""

    allow_delete: tuple[str, ...] = ()
    allow_delete_recently_used: bool = False
    recent_use_days: int = 30

    def to_data(self) -> dict[str, Any]:
        return {"allow_delete": list(self.allow_delete),
                "allow_delete_recently_used": self.allow_delete_recently_used,
                "recent_use_days": self.recent_use_days}

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> Flags:
        return cls(tuple(data.get("allow_delete", ())), bool(data.get("allow_delete_recently_used")),
                   int(data.get("recent_use_days", 30)))


@dataclass(frozen=True)
class Plan:
    """Everything `apply` needs and everything a reviewer should see, bound to what was read."""

    stack: str
    account: str
    principal: str
    created_at: str
    stack_files: dict[str, str]          # path as given -> sha256 of its bytes
    stack_digest: str                    # sha256 over the files, in path order
    live_fingerprint: str
    flags: Flags
    changes: tuple[Change, ...]
    findings: tuple[Finding, ...] = ()
    format_version: str = FORMAT_VERSION
    signature: dict[str, str] | None = field(default=None, compare=False)

    @property
    def effective(self) -> tuple[Change, ...]:
        """The changes that do something."""
        return tuple(c for c in self.changes if not c.is_noop)

    @property
    def has_errors(self) -> bool:
        return any(f.is_error for f in self.findings)

    def summary(self) -> dict[str, int]:
        """Terraform's counts: a replacement is one add and one delete."""
        counts = {"add": 0, "change": 0, "delete": 0}
        for change in self.effective:
            if CREATE in change.actions:
                counts["add"] += 1
            if DELETE in change.actions:
                counts["delete"] += 1
            if UPDATE in change.actions:
                counts["change"] += 1
        return counts

    def summary_line(self) -> str:
        counts = self.summary()
        return f"Plan: {counts['add']} to add, {counts['change']} to change, {counts['delete']} to delete."

    def body(self) -> dict[str, Any]:
        """The signed content: every field except the signature, key-sorted when serialized."""
        return {"format_version": self.format_version, "stack": self.stack, "account": self.account,
                "principal": self.principal, "created_at": self.created_at,
                "stack_files": dict(sorted(self.stack_files.items())), "stack_digest": self.stack_digest,
                "live_fingerprint": self.live_fingerprint, "flags": self.flags.to_data(),
                "changes": [c.to_data() for c in self.changes],
                "findings": [f.to_data() for f in self.findings], "summary": self.summary()}

    def canonical_body(self) -> bytes:
        return json.dumps(self.body(), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()

    def to_data(self) -> dict[str, Any]:
        return {**self.body(), "signature": self.signature}

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> Plan:
        return cls(stack=data["stack"], account=data["account"], principal=data["principal"],
                   created_at=data["created_at"], stack_files=dict(data["stack_files"]),
                   stack_digest=data["stack_digest"], live_fingerprint=data["live_fingerprint"],
                   flags=Flags.from_data(data["flags"]),
                   changes=tuple(Change.from_data(c) for c in data["changes"]),
                   findings=tuple(Finding.from_data(f) for f in data["findings"]),
                   format_version=data["format_version"], signature=data.get("signature"))


@dataclass(frozen=True)
class Drift:
    """One difference between the live store and the stack, per attribute.

    `attribute` is an attribute name (description, policy, tags, rotation, enabled, ...) or one
    of: "exists" (declared, missing live), "undeclared" (live, owned or attached to an owned key,
    not in the stack: a stack-tagged key, an alias, a grant created out of band), "state"
    (PendingDeletion or Disabled unexpectedly)."""

    address: str
    kind: str
    region: str
    attribute: str
    live: Any
    declared: Any
    message: str

    def to_data(self) -> dict[str, Any]:
        return {"address": self.address, "type": self.kind, "region": self.region, "attribute": self.attribute,
                "live": self.live, "declared": self.declared, "message": self.message}
