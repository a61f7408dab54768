"""verify on every example stack, applied by the reconciler to the session store: every check
passes, the checks that fit each key are the ones run, nothing is left behind in the store, and
each call verify made is in the audit log with its principal and encryption context."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from plan_helpers import AWAY, EXAMPLES, HOME, REPO, ROOT
from verify_helpers import checks_by_address, snapshot

from kmsplan.plan import Flags, LocalBackend, apply_plan, load_valid_stack, plan_stack
from kmsplan.stack import Stack
from kmsplan.store import KeyStore
from kmsplan.store.principals import read_principals_file
from kmsplan.verify import verify_stack
from kmsplan.verify.recorder import audit_offset, records_since

SYMMETRIC = {"state", "rotation", "round-trip", "context-binding", "cross-region"}
WITH_CONTEXT = SYMMETRIC | {"context-required"}

#: example -> address -> the checks verify runs on it
EXPECTED = {
    "minimal": {"key.app-data": SYMMETRIC},
    "payments": {
        "key.payments-audit": WITH_CONTEXT,
        "key.payments-data": {"state", "rotation", "replicas", "context-required", "round-trip", "context-binding"},
        "key.payments-data.replica[eu-central-1]": {"state", "round-trip", "context-binding", "cross-region"},
    },
    "hmac-tokens": {"key.api-token-mac": {"state", "mac"}, "key.reset-link-mac": {"state", "mac"}},
    "multi-tenant-abac": {"key.tenant-acme": SYMMETRIC, "key.tenant-globex": SYMMETRIC,
                          "key.tenant-initech": WITH_CONTEXT},
    "cross-account": {"key.shared-datasets": WITH_CONTEXT},
    "signing": {"key.code-signing": {"state", "sign-verify"}, "key.jwt-signing": {"state", "sign-verify"}},
}


@pytest.fixture(scope="module")
def examples(store: KeyStore) -> Iterator[dict[str, Stack]]:
    """Every example applied with the reconciler, with examples/principals.yaml registered."""
    store.registry.replace(read_principals_file(REPO / "examples" / "principals.yaml"))
    backend = LocalBackend(store, ROOT)
    stacks = {}
    for folder in sorted(p for p in EXAMPLES.iterdir() if p.is_dir()):
        stack = load_valid_stack([str(folder)])
        plan = plan_stack(stack, backend, Flags())
        assert not plan.has_errors, [f.to_data() for f in plan.findings]
        apply_plan(plan, backend, saved=False)
        stacks[folder.name] = stack
    yield stacks
    store.registry.replace([])


def test_every_example_is_covered(examples: dict[str, Stack]) -> None:
    assert sorted(examples) == sorted(EXPECTED)


@pytest.mark.parametrize("example", sorted(EXPECTED))
def test_verify_passes_on_an_applied_example(store: KeyStore, examples: dict[str, Stack], example: str) -> None:
    report = verify_stack(examples[example], LocalBackend(store, ROOT))
    assert report.ok, [(c.address, c.label, c.evidence) for c in report.failed]
    assert checks_by_address(report) == {**EXPECTED[example], None: {"audit"}}
    assert report.principal == ROOT and report.operations > 0


def test_verify_leaves_nothing_behind(store: KeyStore, examples: dict[str, Stack]) -> None:
    before = snapshot(store)
    for stack in examples.values():
        assert verify_stack(stack, LocalBackend(store, ROOT)).ok
    assert snapshot(store) == before


def test_every_operation_is_in_the_audit_log(store: KeyStore, examples: dict[str, Stack]) -> None:
    start = audit_offset(store.audit.path)
    report = verify_stack(examples["payments"], LocalBackend(store, ROOT))
    records = list(records_since(Path(store.audit.path), start))
    assert report.ok
    # in process, nothing else writes: the records after the start are exactly verify's calls
    assert len(records) == report.operations
    assert {r["userIdentity"]["arn"] for r in records} == {ROOT}
    data_keys = [r for r in records if r["eventName"] == "GenerateDataKey"]
    assert {r["awsRegion"] for r in data_keys} == {HOME, AWAY}
    for record in data_keys:
        assert "kmsplan-verify" in record["requestParameters"]["encryptionContext"]
    [audit_key] = [r for r in data_keys if "/mrk-" not in r["resources"][0]["ARN"]]  # the single-Region key
    assert audit_key["requestParameters"]["encryptionContext"]["stream"] == "payments-audit"  # as its policy names
    wrong = [r for r in records if r["eventName"] == "Decrypt" and r.get("errorCode") == "InvalidCiphertextException"]
    assert len(wrong) == 3  # one wrong-context decrypt per copy: audit key, primary, replica
    replica_reads = [r for r in records if r["eventName"] == "Decrypt" and r["awsRegion"] == AWAY
                     and not r.get("errorCode")]
    assert len(replica_reads) == 2  # the replica's own data key, and the primary's (cross-Region)
    assert [c.evidence for c in report.checks if c.check == "audit"][0].startswith(
        f"all {report.operations} KMS calls verify made")
