"""verify catches what breaks a stack after apply. One stack is applied for the module; each test
plants one fault out of band, on a key of its own, and verify must fail exactly the check that
names it (and nothing else on that key)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from plan_helpers import (
    ADMIN, APP, AWAY, BATCH, FAR, HOME, PRINCIPALS, ROOT, Kit, kit_name, policy, root_policy, stack_doc,
    statement, write_stack,
)
from verify_helpers import checks_by_address, evidence, failures

from kmsplan.plan import LocalBackend, load_valid_stack
from kmsplan.store import KeyStore
from kmsplan.verify import Report, verify_stack
from kmsplan.verify.recorder import audit_offset, records_since

ACME_ONLY = {"StringEquals": {"kms:EncryptionContext:tenant": "acme"}}
KEYS = {
    "rotating": {"rotation": {"enabled": True, "period_days": 180}},
    "unrotated": {"rotation": {"enabled": False}},
    "dormant": {"enabled": False, "rotation": {"enabled": False}},
    "global": {"multi_region": True, "replicas": {AWAY: {}, FAR: {}}},
    "guarded": {"policy": root_policy(statement(APP, ["kms:Decrypt", "kms:Encrypt"], sid="App")),
                "expect": {"decrypt": [ROOT, ADMIN, APP], "kms:Encrypt": [ROOT, ADMIN, APP]}},
    "tenant": {"policy": root_policy(statement(APP, ["kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey"],
                                               sid="AcmeData", Condition=ACME_ONLY))},
    "signer": {"spec": "ECC_NIST_P384"},
}


@dataclass(frozen=True)
class Applied:
    kit: Kit
    clean: Report  # verify of the whole stack right after apply, before any test plants a fault


@pytest.fixture(scope="module")
def applied(store: KeyStore, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Applied]:
    """The module's stack, applied and verified once; the plan tests' principals registered meanwhile."""
    store.registry.replace(PRINCIPALS)
    made = Kit(store, tmp_path_factory.mktemp("faults"), kit_name(__file__, "verify-faults"))
    made.apply(KEYS)
    yield Applied(made, run(made))
    store.registry.replace([])


@pytest.fixture
def kit(applied: Applied) -> Kit:
    return applied.kit


def run(kit: Kit, *addresses: str, principal: str = ROOT) -> Report:
    return verify_stack(load_valid_stack(kit.paths), LocalBackend(kit.store, principal), addresses=addresses)


def test_the_applied_stack_passes(applied: Applied) -> None:
    report = applied.clean
    assert report.ok, [(c.address, c.label, c.evidence) for c in report.failed]
    found = checks_by_address(report)
    assert found["key.dormant"] == {"state", "rotation"}  # a disabled key is not used
    assert evidence(report, "key.dormant", "state").endswith("is Disabled, as declared")
    assert found["key.signer"] == {"state", "sign-verify"}
    assert found["key.guarded"] >= {"access kms:Decrypt", "access kms:Encrypt"}
    assert "context-required" in found["key.tenant"]
    assert found["key.global.replica[us-east-1]"] == {"state", "round-trip", "context-binding", "cross-region"}


def test_rotation_disabled_out_of_band(kit: Kit) -> None:
    kit.client().disable_key_rotation(KeyId=kit.key("key.rotating").key_id)
    report = run(kit, "key.rotating")
    assert failures(report) == {("key.rotating", "rotation")}
    assert evidence(report, "key.rotating", "rotation") == \
        "GetKeyRotationStatus: rotation off; declared every 180 days"


def test_rotation_enabled_where_declared_off(kit: Kit) -> None:
    kit.client().enable_key_rotation(KeyId=kit.key("key.unrotated").key_id, RotationPeriodInDays=90)
    report = run(kit, "key.unrotated")
    assert failures(report) == {("key.unrotated", "rotation")}
    assert evidence(report, "key.unrotated", "rotation") == "GetKeyRotationStatus: rotation every 90 days; declared off"


def test_replica_removed_out_of_band(kit: Kit) -> None:
    replica = kit.key(f"key.global.replica[{FAR}]")
    kit.client(FAR).schedule_key_deletion(KeyId=replica.key_id, PendingWindowInDays=7)
    report = run(kit, "key.global")
    assert failures(report) == {("key.global", "replicas"), (f"key.global.replica[{FAR}]", "state"),
                                (f"key.global.replica[{FAR}]", "cross-region")}
    replicas = evidence(report, "key.global", "replicas")
    assert f"replicas {AWAY} (pending deletion: {FAR})" in replicas
    assert f"declared replica(s) missing: {FAR}" in replicas
    assert "PendingDeletion" in evidence(report, f"key.global.replica[{FAR}]", "state")
    # the surviving replica still decrypts what the primary encrypts
    assert evidence(report, f"key.global.replica[{AWAY}]", "cross-region") == \
        f"a data key generated in {HOME} decrypted in {AWAY}"


def test_policy_widened_to_a_second_principal(kit: Kit) -> None:
    key = kit.key("key.guarded")
    widened = json.loads(key.policy)
    widened["Statement"].append(statement(BATCH, "kms:Decrypt", sid="Oops"))
    kit.client().put_key_policy(KeyId=key.key_id, PolicyName="default", Policy=json.dumps(widened))
    report = run(kit, "key.guarded")
    assert failures(report) == {("key.guarded", "access kms:Decrypt")}
    assert evidence(report, "key.guarded", "access kms:Decrypt") == \
        f"kms:Decrypt ({HOME}): too many: {BATCH} (via key-policy Oops)"
    assert evidence(report, "key.guarded", "access kms:Encrypt").startswith("exactly the expected principals")


def test_context_requirement_dropped_out_of_band(kit: Kit) -> None:
    key = kit.key("key.tenant")
    loosened = root_policy(statement(APP, ["kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey"], sid="AcmeData"))
    kit.client().put_key_policy(KeyId=key.key_id, PolicyName="default", Policy=json.dumps(loosened))
    report = run(kit, "key.tenant")
    assert failures(report) == {("key.tenant", "context-required")}
    assert evidence(report, "key.tenant", "context-required") == (
        f"{APP} may now call kms:Decrypt, kms:Encrypt, kms:GenerateDataKey with context {{tenant=not-acme}}; "
        "the stack allows it only with {tenant=acme}")


def test_a_declared_key_that_was_never_applied(kit: Kit, tmp_path: Path) -> None:
    path = write_stack(tmp_path, stack_doc(kit.name, {**KEYS, "later": {}}))
    report = verify_stack(load_valid_stack([str(path)]), LocalBackend(kit.store, ROOT), addresses=["key.later"])
    assert failures(report) == {("key.later", "state")}
    assert "run `kmsplan apply`" in evidence(report, "key.later", "state")
    assert checks_by_address(report)["key.later"] == {"state"}  # nothing to use: no crypto checks


def test_verify_uses_the_given_principal(kit: Kit) -> None:
    start = audit_offset(kit.store.audit.path)
    report = run(kit, "key.signer", principal=ADMIN)
    assert report.ok and report.principal == ADMIN
    records = list(records_since(Path(kit.store.audit.path), start))
    assert {r["userIdentity"]["arn"] for r in records} == {ADMIN}
    assert {"Sign", "Verify", "GetPublicKey"} <= {r["eventName"] for r in records}


def test_no_admissible_context_is_a_failure_with_its_reason(kit: Kit, tmp_path: Path) -> None:
    """Root may use the key only under its own `tenant` principal tag, which it does not have:
    no context can satisfy the policy, and verify says so instead of guessing."""
    own = Kit(kit.store, tmp_path, kit_name(__file__ + "::unreachable", "verify-unreachable"))
    own.apply({"locked": {"policy": policy(
        {"Sid": "Manage", "Effect": "Allow", "Principal": {"AWS": ROOT}, "Resource": "*",
         "NotAction": ["kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey*", "kms:ReEncrypt*"]},
        statement(ROOT, ["kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey"], sid="OwnTenant",
                  Condition={"StringEquals": {"kms:EncryptionContext:tenant": "${aws:PrincipalTag/tenant}"}}))}})
    report = run(own)
    assert failures(report) == {("key.locked", "round-trip"), ("key.locked", "context-binding")}
    why = evidence(report, "key.locked", "round-trip")
    assert why.startswith(f"no encryption context verify could derive lets {ROOT} call kms:Decrypt, "
                          "kms:GenerateDataKey")
    assert evidence(report, "key.locked", "context-binding") == "not run: no data key to decrypt"
