"""Every code a user can see is documented in a table row, and every documented code exists.

Sources of truth (the code tables) and where each family is documented:

* guard codes, `kmsplan.plan.guards.CODES`            -> docs/reconciler.md (the guards table)
* validation findings, `kmsplan.stack.findings.CODES` -> docs/stack-reference.md or docs/findings.md,
  with the table's severity cell equal to the code's severity
* policy problems (shown inside E700 as `[Pnnn]`), the table in `kmsplan.policy.document`'s
  docstring and every `"Pnnn"` literal in kmsplan/policy/  -> docs/findings.md
"""

from __future__ import annotations

import re
from pathlib import Path

import kmsplan.policy.document as policy_document
from kmsplan.plan.guards import CODES as GUARD_CODES
from kmsplan.stack.findings import CODES as FINDING_CODES

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
ROW = re.compile(r"^\|\s*(?:\*\*|`)?([EWGP]\d{3})(?:\*\*|`)?\s*\|(.*)$", re.M)


def _rows(*pages: str) -> dict[str, list[tuple[str, str]]]:
    """code -> [(page, rest of the row)] for every table row whose first cell is a code."""
    found: dict[str, list[tuple[str, str]]] = {}
    for page in pages:
        path = DOCS / page
        if not path.exists():
            continue
        for match in ROW.finditer(path.read_text(encoding="utf-8")):
            found.setdefault(match.group(1), []).append((page, match.group(2)))
    return found


def _policy_codes() -> set[str]:
    table = set(re.findall(r"^(P\d{3})\s", policy_document.__doc__ or "", re.M))
    used = set()
    for source in (ROOT / "kmsplan" / "policy").glob("*.py"):
        used |= set(re.findall(r"\"(P\d{3})\"", source.read_text(encoding="utf-8")))
    return table | used


def test_every_guard_code_is_in_the_reconciler_guard_table() -> None:
    rows = _rows("reconciler.md")
    missing = sorted(code for code in GUARD_CODES if code not in rows)
    assert not missing, f"guard codes missing from the guards table in docs/reconciler.md: {', '.join(missing)}"
    unknown = sorted(code for code in rows if code.startswith("G") and code not in GUARD_CODES)
    assert not unknown, (f"docs/reconciler.md documents guard codes that kmsplan/plan/guards.py does not "
                         f"define: {', '.join(unknown)}")


def test_every_finding_code_is_documented_with_its_severity() -> None:
    rows = _rows("stack-reference.md", "findings.md")
    missing = sorted(code for code in FINDING_CODES if code not in rows)
    assert not missing, ("validation finding codes not documented in a table row of docs/stack-reference.md "
                         f"or docs/findings.md: {', '.join(missing)}")
    wrong = sorted(code for code, (severity, _) in FINDING_CODES.items()
                   if not any(re.search(rf"\b{severity}\b", rest) for _, rest in rows[code]))
    assert not wrong, f"documented with another severity than kmsplan/stack/findings.py says: {', '.join(wrong)}"
    unknown = sorted(code for code in rows if code[0] in "EW" and code not in FINDING_CODES)
    assert not unknown, (f"docs document finding codes that kmsplan/stack/findings.py does not define: "
                         f"{', '.join(unknown)}")


def test_every_policy_code_is_documented() -> None:
    codes = _policy_codes()
    assert codes, "no policy codes found: has kmsplan/policy/document.py's code table moved?"
    rows = _rows("findings.md", "authorization.md")
    missing = sorted(code for code in codes if code not in rows)
    assert not missing, f"policy codes missing from the table in docs/findings.md: {', '.join(missing)}"
    unknown = sorted(code for code in rows if code.startswith("P") and code not in codes)
    assert not unknown, f"docs document policy codes that kmsplan/policy does not use: {', '.join(unknown)}"
