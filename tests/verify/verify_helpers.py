"""Helpers of the verify tests: what a report says, and what the live store holds.

(Kept out of conftest.py so test modules can import them by a name no other test folder uses.)
"""

from __future__ import annotations

from typing import Any

from plan_helpers import REGIONS, ROOT

from kmsplan.errors import KMSError
from kmsplan.store import KeyStore
from kmsplan.verify import Report


def failures(report: Report) -> set[tuple[str | None, str]]:
    """(address, check label) of every failed check."""
    return {(c.address, c.label) for c in report.failed}


def evidence(report: Report, address: str | None, label: str) -> str:
    [found] = [c.evidence for c in report.checks if c.address == address and c.label == label]
    return found


def checks_by_address(report: Report) -> dict[str | None, set[str]]:
    """Address -> the labels of the checks run on it (None: checks of the run itself)."""
    out: dict[str | None, set[str]] = {}
    for check in report.checks:
        out.setdefault(check.address, set()).add(check.label)
    return out


def snapshot(store: KeyStore) -> dict[str, Any]:
    """Every key (with state), alias and grant in every region: what verify must leave alone."""
    seen: dict[str, Any] = {}
    for region in REGIONS:
        kms = store.client(region=region, principal=ROOT)
        keys = sorted(k["KeyId"] for k in kms.list_keys(Limit=1000)["Keys"])
        seen[region] = {
            "keys": {k: _state(kms, k) for k in keys},
            "aliases": sorted((a["AliasName"], a.get("TargetKeyId")) for a in kms.list_aliases(Limit=1000)["Aliases"]),
            "grants": {k: _grants(kms, k) for k in keys},
        }
    return seen


def _state(kms: Any, key_id: str) -> str:
    try:
        return kms.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"]
    except KMSError as error:  # another test's key whose policy shuts the root out
        return error.code


def _grants(kms: Any, key_id: str) -> list[str] | str:
    try:
        return sorted(g["GrantId"] for g in kms.list_grants(KeyId=key_id, Limit=1000)["Grants"])
    except KMSError as error:  # pending deletion, or shut to the root: record that it was unreadable
        return error.code
