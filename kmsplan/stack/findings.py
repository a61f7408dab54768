"""Findings: what validation reports, as data, and the two small formatters that render them.

A stack problem is never an exception: every check appends a `Finding` with a position, a stable
code and a severity, so a user sees all problems at once (cfn-lint's `Match`, in spirit). The code
table below is the contract documented in docs/stack-reference.md; codes never change meaning.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

ERROR = "error"
WARNING = "warning"

FORMAT_VERSION = 1

#: Every finding code: (severity, one-line summary). docs/stack-reference.md mirrors this table.
CODES: dict[str, tuple[str, str]] = {
    # input and YAML
    "E100": (ERROR, "file cannot be read"),
    "E101": (ERROR, "file is larger than the 10 MiB limit"),
    "E102": (ERROR, "file is not UTF-8 text (binary data, NUL or control characters)"),
    "E103": (ERROR, "YAML syntax or structure error (including a bad << merge)"),
    "E104": (ERROR, "duplicate mapping key"),
    "E105": (ERROR, "aliases expand to too many nodes (\"billion laughs\")"),
    "E106": (ERROR, "nesting deeper than 64 levels"),
    "E107": (ERROR, "undefined or recursive alias"),
    "E108": (ERROR, "unsupported YAML tag"),
    "E109": (ERROR, "more than one YAML document in a file"),
    "E110": (ERROR, "empty file"),
    "E111": (ERROR, "mapping key is not a scalar"),
    # structure (stack.schema.json)
    "E200": (ERROR, "unknown field"),
    "E201": (ERROR, "required field missing"),
    "E202": (ERROR, "wrong type"),
    "E203": (ERROR, "value not allowed"),
    "E204": (ERROR, "value out of range or badly formed"),
    # the stack and its files
    "E300": (ERROR, "files of one stack disagree on version, stack, account or region"),
    "E301": (ERROR, "key defined more than once"),
    "E302": (ERROR, "unknown region"),
    "E303": (ERROR, "unknown ${...} variable"),
    "E304": (ERROR, "vars or defaults set to different values in two files"),
    "E305": (ERROR, "malformed ${...} reference, or a variable name that cannot be referenced"),
    "E306": (ERROR, "account is not a 12-digit AWS account ID"),
    "E307": (ERROR, "invalid stack, key or grant name"),
    "E308": (ERROR, "unsupported stack language version"),
    # keys
    "E400": (ERROR, "key spec and key usage do not fit"),
    "E401": (ERROR, "RSA key without a usage"),
    "E402": (ERROR, "rotation on a key that cannot rotate"),
    "E403": (ERROR, "rotation period outside 90-2560 days"),
    "E404": (ERROR, "deletion window outside 7-30 days"),
    "E405": (ERROR, "replicas on a key that is not multi-Region"),
    "E406": (ERROR, "replica in the key's own region"),
    # aliases and tags
    "E500": (ERROR, "invalid alias name"),
    "E501": (ERROR, "alias name in a reserved namespace (alias/aws/, alias/kmsplan/)"),
    "E502": (ERROR, "alias name used more than once in a region"),
    "E503": (ERROR, "tag key not 1-128 characters"),
    "E504": (ERROR, "tag value longer than 256 characters"),
    "E505": (ERROR, "more than 50 tags"),
    "E506": (ERROR, "tag key with a reserved prefix (aws:, kmsplan:)"),
    # grants
    "E600": (ERROR, "grant operation not valid for the key's spec and usage"),
    "E601": (ERROR, "grant constraints on a key that takes no encryption context"),
    "E602": (ERROR, "grant constraints without an operation that takes an encryption context"),
    "E603": (ERROR, "grant constraints malformed (both kinds, >8 pairs, value >384 characters)"),
    "E604": (ERROR, "grantee or retiring principal is not an AWS principal ARN"),
    # policies
    "E700": (ERROR, "invalid key policy"),
    "E701": (ERROR, "key policy larger than 32 KiB after interpolation"),
    "E702": (ERROR, "both policy and policy_file"),
    "E703": (ERROR, "policy_file cannot be read or parsed"),
    "E704": (ERROR, "a policy_file, or a stack file through a link, outside the folders the stack was given in"),
    # warnings
    "W400": (WARNING, "rotation disabled on a symmetric encryption key"),
    "W700": (WARNING, "policy allows Principal \"*\" without a condition"),
    "W701": (WARNING, "policy has no account-root statement and no named administrator"),
    "W702": (WARNING, "bypass_policy_lockout_safety_check is true"),
}


@dataclass(frozen=True, order=True)
class Finding:
    """One problem at one place. Ordering (file, line, col, code, message) is the report order."""

    file: str
    line: int
    col: int
    code: str
    severity: str
    message: str

    @property
    def is_error(self) -> bool:
        return self.severity == ERROR

    def as_dict(self) -> dict[str, object]:
        return {"file": self.file, "line": self.line, "col": self.col, "code": self.code,
                "severity": self.severity, "message": self.message}


def finding(file: str, line: int, col: int, code: str, message: str) -> Finding:
    """A finding whose severity comes from the code table, so a code never changes severity."""
    return Finding(file, line, col, code, CODES[code][0], message)


def has_errors(findings: Iterable[Finding]) -> bool:
    return any(f.is_error for f in findings)


def format_text(findings: Iterable[Finding]) -> str:
    """`file:line:col  CODE  severity  message`, one per line, sorted."""
    return "".join(f"{f.file}:{f.line}:{f.col}  {f.code}  {f.severity}  {f.message}\n"
                   for f in sorted(findings))


def format_json(findings: Iterable[Finding], *, files: Iterable[str] = (),
                stack: str | None = None) -> str:
    """The `--format json` document described by schemas/findings.schema.json."""
    ordered = sorted(findings)
    errors = sum(1 for f in ordered if f.is_error)
    document = {
        "format_version": FORMAT_VERSION,
        "stack": stack,
        "files": sorted(files),
        "valid": errors == 0,
        "summary": {"errors": errors, "warnings": len(ordered) - errors},
        "findings": [f.as_dict() for f in ordered],
    }
    return json.dumps(document, sort_keys=True, indent=2, ensure_ascii=False) + "\n"
