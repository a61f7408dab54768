"""Every action a plan can hold, planned and applied on the real session store.

Each test declares a stack, checks the plan's changes (address, actions, reason), applies it,
checks the live store through the KMS API, and ends converged: a new plan is empty and drift
reports nothing.
"""

from __future__ import annotations

import json

import pytest
from plan_helpers import ACCOUNT, APP, AWAY, BATCH, FAR, HOME, ROOT, change, policy, root_policy, statement

from kmsplan.plan.live import ADDRESS_TAG, PROTECT_TAG, STACK_TAG, WINDOW_TAG
from kmsplan.plan.policies import canonical


def actions(plan) -> dict[str, tuple[str, ...]]:
    return {c.address: c.actions for c in plan.effective}


# --- keys --------------------------------------------------------------------------------

def test_create_writes_policy_tags_rotation_state_and_ownership_in_one_go(kit):
    declared = root_policy(statement(APP, ["kms:Decrypt", "kms:Encrypt"], sid="App"))
    plan = kit.apply({"data": {
        "description": "orders at rest", "enabled": False, "deletion_window_days": 7,
        "rotation": {"enabled": True, "period_days": 180}, "tags": {"env": "test", "team": "orders"},
        "policy": declared, "aliases": [kit.alias("data")],
        "grants": {"reader": {"grantee": APP, "operations": ["Decrypt"]}}}})
    assert actions(plan) == {"key.data": ("create",), f"alias[{HOME}].{kit.alias('data')}": ("create",),
                             "grant.data.reader": ("create",)}
    assert plan.summary() == {"add": 3, "change": 0, "delete": 0}
    assert change(plan, "key.data").key_id is None, "a key to create has no id yet"

    key = kit.key("key.data")
    assert (key.state, key.description, key.spec, key.multi_region) == ("Disabled", "orders at rest",
                                                                         "SYMMETRIC_DEFAULT", False)
    assert (key.rotation_enabled, key.rotation_period) == (True, 180)
    assert key.user_tags == {"env": "test", "team": "orders"}
    assert {k: key.tags[k] for k in (STACK_TAG, ADDRESS_TAG, PROTECT_TAG, WINDOW_TAG)} == {
        STACK_TAG: kit.name, ADDRESS_TAG: "key.data", PROTECT_TAG: "false", WINDOW_TAG: "7"}
    assert canonical(key.policy) == canonical(declared)
    assert key.aliases == (kit.alias("data"),)
    assert [(g.name, g.grantee, g.operations) for g in key.grants] == [("kmsplan:reader", APP, ("Decrypt",))]
    kit.assert_converged()


def test_keys_of_every_kind_are_created_with_their_spec_and_usage(kit):
    kit.apply({"sym": {}, "mac": {"spec": "HMAC_256"}, "signer": {"spec": "ECC_NIST_P256"},
               "rsa": {"spec": "RSA_2048", "usage": "ENCRYPT_DECRYPT"}})
    live = {k.address: (k.spec, k.usage, k.rotation_enabled) for k in kit.live().keys}
    assert live == {"key.sym": ("SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT", True),
                    "key.mac": ("HMAC_256", "GENERATE_VERIFY_MAC", None),
                    "key.signer": ("ECC_NIST_P256", "SIGN_VERIFY", None),
                    "key.rsa": ("RSA_2048", "ENCRYPT_DECRYPT", None)}
    kit.assert_converged()


def test_replicas_are_replicated_from_the_primary_with_their_own_settings(kit):
    plan = kit.apply({"data": {"multi_region": True, "description": "primary ${region}", "replicas": {
        AWAY: {"description": "standby ${region}", "enabled": False, "aliases": [kit.alias("data")]}}}})
    assert actions(plan) == {"key.data": ("create",), f"key.data.replica[{AWAY}]": ("create",),
                             f"alias[{AWAY}].{kit.alias('data')}": ("create",)}
    assert change(plan, f"key.data.replica[{AWAY}]").reason == f"replicate from {HOME}"
    primary, replica = kit.key("key.data"), kit.key(f"key.data.replica[{AWAY}]")
    assert primary.key_id == replica.key_id and primary.key_id.startswith("mrk-")
    assert (primary.multi_region_type, replica.multi_region_type) == ("PRIMARY", "REPLICA")
    assert (replica.region, replica.primary_region, replica.description, replica.state) == (
        AWAY, HOME, f"standby {AWAY}", "Disabled")
    kit.assert_converged()

    plan = kit.apply({"data": {"multi_region": True, "description": "primary ${region}", "replicas": {
        AWAY: {"description": "standby ${region}", "enabled": False, "aliases": [kit.alias("data")]}, FAR: {}}}})
    assert actions(plan) == {f"key.data.replica[{FAR}]": ("create",)}, "only the new replica"
    assert kit.key(f"key.data.replica[{FAR}]").description == f"primary {FAR}"
    kit.assert_converged()


def test_a_replica_is_made_from_its_own_primary_when_key_names_share_a_prefix(kit):
    kit.apply({"app2": {"multi_region": True}})
    kit.apply({"app2": {"multi_region": True}, "app": {"multi_region": True, "replicas": {AWAY: {}}}})
    assert kit.key(f"key.app.replica[{AWAY}]").key_id == kit.key("key.app").key_id != kit.key("key.app2").key_id
    kit.assert_converged()


BASE = {"description": "v1", "enabled": True, "rotation": {"enabled": True, "period_days": 365},
        "tags": {"env": "test", "gone": "soon"}, "policy": root_policy(statement(APP, "kms:Decrypt", sid="App"))}

EDITS = {
    "description": ({"description": "v2"}, lambda k: k.description == "v2"),
    "enabled": ({"enabled": False}, lambda k: k.state == "Disabled"),
    "policy": ({"policy": root_policy(statement(APP, ["kms:Decrypt", "kms:Encrypt"], sid="App"),
                                      statement(BATCH, "kms:Decrypt", sid="Batch"))},
               lambda k: len(json.loads(k.policy)["Statement"]) == 3),
    "rotation": ({"rotation": {"enabled": True, "period_days": 90}}, lambda k: k.rotation_period == 90),
    "rotation-off": ({"rotation": {"enabled": False}}, lambda k: k.rotation_enabled is False),
    "tags": ({"tags": {"env": "prod", "new": "yes"}}, lambda k: k.user_tags == {"env": "prod", "new": "yes"}),
    "protect": ({"protect": True}, lambda k: k.protected),
    "deletion_window_days": ({"deletion_window_days": 12}, lambda k: k.deletion_window == 12),
}


@pytest.mark.parametrize("edit", sorted(EDITS))
def test_an_attribute_change_is_one_in_place_update(kit, edit):
    kit.apply({"data": BASE})
    before = kit.key("key.data")
    changed, holds = EDITS[edit]
    plan = kit.apply({"data": {**BASE, **changed}})
    update = change(plan, "key.data")
    assert update.actions == ("update",) and update.key_id == before.key_id
    assert update.changed_attributes() == [edit.split("-")[0]]
    assert plan.summary() == {"add": 0, "change": 1, "delete": 0}
    after = kit.key("key.data")
    assert after.key_id == before.key_id and holds(after), after
    assert after.tags[STACK_TAG] == kit.name, "the reconciler's own tags survive a tag update"
    kit.assert_converged()


def test_a_disabled_key_is_enabled_again(kit):
    kit.apply({"data": {"enabled": False}})
    plan = kit.apply({"data": {"enabled": True}})
    assert change(plan, "key.data").changed_attributes() == ["enabled"]
    assert kit.key("key.data").state == "Enabled"
    kit.assert_converged()


# --- policies: semantic equality ---------------------------------------------------------

ORIGINAL = policy(
    statement(ROOT, "kms:*", sid="Root"),
    statement([APP, BATCH], ["kms:Decrypt", "kms:Encrypt"], sid="Apps",
              Condition={"StringEquals": {"kms:EncryptionContext:team": ["a", "b"]}}),
    statement(APP, ["kms:DescribeKey"], sid="Describe"))

EQUIVALENT = {
    "statements reordered": policy(*reversed(ORIGINAL["Statement"])),
    "actions, principals and condition values reordered": policy(
        ORIGINAL["Statement"][0],
        statement([BATCH, APP], ["kms:Encrypt", "kms:Decrypt"], sid="Apps",
                  Condition={"StringEquals": {"kms:EncryptionContext:team": ["b", "a"]}}),
        ORIGINAL["Statement"][2]),
    "account id for the root ARN": policy(statement(ACCOUNT, "kms:*", sid="Root"), *ORIGINAL["Statement"][1:]),
    "string for a one-item list": policy(*ORIGINAL["Statement"][:2], statement(APP, "kms:DescribeKey", sid="Describe")),
    "action case": policy(*ORIGINAL["Statement"][:2], statement(APP, ["KMS:describekey"], sid="Describe")),
}


@pytest.mark.parametrize("variant", sorted(EQUIVALENT))
def test_an_equivalent_policy_is_no_change_either_way(kit, variant):
    kit.apply({"data": {"policy": ORIGINAL}})
    assert change(kit.plan({"data": {"policy": EQUIVALENT[variant]}}), "key.data").is_noop
    assert kit.drift() == []

    other = kit.plan({"other": {"policy": EQUIVALENT[variant]}}, allow_delete=("key.data",))
    kit.apply({"other": {"policy": EQUIVALENT[variant]}}, allow_delete=("key.data",))
    assert change(other, "key.other").actions == ("create",)
    assert change(kit.plan({"other": {"policy": ORIGINAL}}, allow_delete=("key.data",)), "key.other").is_noop


def test_a_real_policy_difference_is_still_an_update(kit):
    kit.apply({"data": {"policy": ORIGINAL}})
    narrower = policy(ORIGINAL["Statement"][0], statement([APP, BATCH], ["kms:Decrypt"], sid="Apps"),
                      ORIGINAL["Statement"][2])
    assert change(kit.plan({"data": {"policy": narrower}}), "key.data").changed_attributes() == ["policy"]


# --- aliases -----------------------------------------------------------------------------

def test_aliases_are_created_repointed_and_deleted(kit):
    x = kit.alias("x")
    address = f"alias[{HOME}].{x}"
    kit.apply({"a": {"aliases": [x]}, "b": {}})
    a, b = kit.key("key.a"), kit.key("key.b")
    assert kit.client().describe_key(KeyId=x)["KeyMetadata"]["KeyId"] == a.key_id

    plan = kit.apply({"a": {}, "b": {"aliases": [x]}})
    repoint = change(plan, address)
    assert repoint.actions == ("update",) and repoint.reason == "repoint to its declared key"
    assert (repoint.before["target_key_id"], repoint.after["target_key_id"]) == (a.key_id, b.key_id)
    assert kit.client().describe_key(KeyId=x)["KeyMetadata"]["KeyId"] == b.key_id
    kit.assert_converged()

    plan = kit.apply({"a": {}, "b": {}})
    assert actions(plan) == {address: ("delete",)}
    assert x not in {alias["AliasName"] for alias in kit.client().list_aliases(Limit=1000)["Aliases"]}
    kit.assert_converged()


def test_an_undeclared_alias_on_a_managed_key_is_deleted_and_others_left_alone(kit):
    kit.apply({"a": {"aliases": [kit.alias("declared")]}})
    kms = kit.client()
    key = kit.key("key.a")
    kms.create_alias(AliasName=kit.alias("sneaky"), TargetKeyId=key.key_id)
    stranger = kms.create_key(Description="not managed")["KeyMetadata"]["KeyId"]
    kms.create_alias(AliasName=kit.alias("strangers"), TargetKeyId=stranger)

    assert [(d.address, d.attribute) for d in kit.drift()] == [(f"alias[{HOME}].{kit.alias('sneaky')}", "undeclared")]
    plan = kit.apply()
    assert actions(plan) == {f"alias[{HOME}].{kit.alias('sneaky')}": ("delete",)}
    names = {a["AliasName"]: a.get("TargetKeyId") for a in kms.list_aliases(Limit=1000)["Aliases"]}
    assert kit.alias("sneaky") not in names
    assert names[kit.alias("strangers")] == stranger and names[kit.alias("declared")] == key.key_id
    kit.assert_converged()


# --- grants ------------------------------------------------------------------------------

def _grants(kit, address: str) -> list[tuple[str, str, tuple[str, ...]]]:
    return [(g.name, g.grantee, g.operations) for g in kit.key(address).grants]


def test_grants_are_created_replaced_and_revoked(kit):
    one = {"grantee": APP, "operations": ["Decrypt"]}
    kit.apply({"data": {"grants": {"g": one}}})
    first = kit.key("key.data").grants[0].grant_id

    wider = {"grantee": APP, "operations": ["Decrypt", "Encrypt"],
             "constraints": {"encryption_context_subset": {"team": "a"}}}
    plan = kit.apply({"data": {"grants": {"g": wider}}})
    replace = change(plan, "grant.data.g")
    assert replace.actions == ("delete", "create") and "immutable" in replace.reason
    assert plan.summary() == {"add": 1, "change": 0, "delete": 1}
    assert _grants(kit, "key.data") == [("kmsplan:g", APP, ("Decrypt", "Encrypt"))]
    assert kit.key("key.data").grants[0].grant_id != first
    assert kit.key("key.data").grants[0].constraints == {"EncryptionContextSubset": {"team": "a"}}
    kit.assert_converged()

    plan = kit.apply({"data": {}})
    assert actions(plan) == {"grant.data.g": ("delete",)}
    assert _grants(kit, "key.data") == []
    kit.assert_converged()


def test_grants_on_a_replica_have_their_own_address(kit):
    replica = f"key.data.replica[{AWAY}]"
    plan = kit.apply({"data": {"multi_region": True, "replicas": {
        AWAY: {"grants": {"standby": {"grantee": BATCH, "operations": ["Decrypt"]}}}}}})
    assert change(plan, f"grant.data.replica[{AWAY}].standby").actions == ("create",)
    assert _grants(kit, replica) == [("kmsplan:standby", BATCH, ("Decrypt",))]
    assert _grants(kit, "key.data") == []
    kit.assert_converged()


def test_a_grant_made_out_of_band_is_drift_and_never_revoked(kit):
    kit.apply({"data": {"grants": {"ours": {"grantee": APP, "operations": ["Decrypt"]}}}})
    key = kit.key("key.data")
    kit.client().create_grant(KeyId=key.key_id, GranteePrincipal=BATCH, Operations=["Encrypt"], Name="by-hand")
    assert not kit.plan().effective, "the plan leaves a grant it did not create alone"
    assert [(d.address, d.attribute) for d in kit.drift()] == [("grant.data.by-hand", "undeclared")]
    kit.apply()
    assert sorted(g.name for g in kit.key("key.data").grants) == ["by-hand", "kmsplan:ours"]


# --- replicas and regions ----------------------------------------------------------------

def test_a_removed_replica_is_scheduled_for_deletion_and_the_primary_kept(kit):
    kit.apply({"data": {"multi_region": True, "replicas": {AWAY: {}, FAR: {}}}})
    address = f"key.data.replica[{FAR}]"
    plan = kit.apply({"data": {"multi_region": True, "replicas": {AWAY: {}}}}, allow_delete=(address,))
    assert actions(plan) == {address: ("delete",)}
    assert change(plan, address).kind == "replica"
    states = {k.address: k.state for k in kit.live().keys}
    assert states[address] in ("PendingDeletion", "PendingReplicaDeletion")
    assert states["key.data"] == states[f"key.data.replica[{AWAY}]"] == "Enabled"
    kit.assert_converged()


def test_moving_the_primary_region_promotes_the_replica(kit):
    name = kit.alias("data")
    kit.apply({"data": {"multi_region": True, "aliases": [name], "replicas": {AWAY: {"aliases": [name]}}}})
    before = {k.region: k for k in kit.live().keys}

    plan = kit.apply({"data": {"multi_region": True, "region": AWAY, "aliases": [name],
                               "replicas": {HOME: {"aliases": [name]}}}})
    assert actions(plan) == {"key.data": ("update",), f"key.data.replica[{HOME}]": ("update",)}, \
        "UpdatePrimaryRegion, never a new key"
    assert change(plan, "key.data").region == AWAY
    after = {k.region: k for k in kit.live().keys}
    assert (after[AWAY].multi_region_type, after[HOME].multi_region_type) == ("PRIMARY", "REPLICA")
    assert after[AWAY].address == "key.data" and after[HOME].address == f"key.data.replica[{HOME}]"
    assert after[HOME].primary_region == AWAY
    assert {r: k.key_id for r, k in after.items()} == {r: k.key_id for r, k in before.items()}
    kit.assert_converged()


# --- deletion undone ---------------------------------------------------------------------

@pytest.mark.parametrize("enabled", [True, False])
def test_a_declared_key_found_pending_deletion_is_cancelled_not_duplicated(kit, enabled):
    kit.apply({"data": {"enabled": enabled}})
    key = kit.key("key.data")
    kit.client().schedule_key_deletion(KeyId=key.key_id, PendingWindowInDays=7)

    assert ("key.data", "state", "PendingDeletion") in {(d.address, d.attribute, d.live) for d in kit.drift()}
    plan = kit.apply()
    cancel = change(plan, "key.data")
    assert cancel.actions == ("update",) and cancel.key_id == key.key_id
    assert cancel.reason == "cancel the scheduled deletion" + (" and enable" if enabled else "")
    assert kit.key("key.data").state == ("Enabled" if enabled else "Disabled")
    kit.assert_converged()


def test_a_key_deleted_by_the_stack_comes_back_when_declared_again(kit):
    kit.apply({"data": {}, "keep": {}})
    key = kit.key("key.data")
    kit.apply({"keep": {}}, allow_delete=("key.data",))
    assert kit.key("key.data").state == "PendingDeletion"
    kit.assert_converged()
    plan = kit.apply({"data": {}, "keep": {}})
    assert actions(plan) == {"key.data": ("update",)}
    assert kit.key("key.data").key_id == key.key_id and kit.key("key.data").state == "Enabled"
    kit.assert_converged()


# --- what the stack does not own ---------------------------------------------------------

def test_keys_of_other_stacks_and_untagged_keys_are_never_touched(kit, make_kit):
    other = make_kit("other")
    other.apply({"data": {"aliases": [other.alias("data")],
                          "grants": {"g": {"grantee": APP, "operations": ["Decrypt"]}}}})
    kms = kit.client()
    untagged = kms.create_key(Description="untagged", Tags=[{"TagKey": "kmsplan:address", "TagValue": "key.data"}])
    untagged_id = untagged["KeyMetadata"]["KeyId"]
    kit.apply({"data": {}, "old": {}})
    theirs = other.key("key.data")

    plan = kit.apply({}, allow_delete=("key.data", "key.old"))
    assert set(actions(plan)) == {"key.data", "key.old"}
    assert {c.key_id for c in plan.changes} == {kit.key("key.data").key_id, kit.key("key.old").key_id}
    assert {theirs.key_id, untagged_id}.isdisjoint(c.key_id for c in plan.changes)
    assert other.key("key.data") == theirs, "the other stack's key, tags, alias and grant are as they were"
    assert kms.describe_key(KeyId=untagged_id)["KeyMetadata"]["KeyState"] == "Enabled"
    other.assert_converged()


def test_a_plan_is_stable_and_reads_only(kit):
    kit.write({"a": {"aliases": [kit.alias("a")]}, "b": {"grants": {"g": {"grantee": APP, "operations": ["Decrypt"]}}}})
    first, second = kit.plan(), kit.plan()
    assert first.changes == second.changes and first.live_fingerprint == second.live_fingerprint
    assert [c.address for c in first.changes] == sorted(c.address for c in first.changes)
    assert kit.live().keys == (), "planning created nothing"


# --- drift -------------------------------------------------------------------------------

def test_drift_reports_each_attribute_and_everything_undeclared(kit):
    kit.apply({"data": {"description": "v1", "tags": {"env": "test"}, "aliases": [kit.alias("data")]},
               "spare": {}, "gone": {}})
    kms = kit.client()
    data, gone = kit.key("key.data"), kit.key("key.gone")
    kms.update_key_description(KeyId=data.key_id, Description="by hand")
    kms.tag_resource(KeyId=data.key_id, Tags=[{"TagKey": "env", "TagValue": "prod"}])
    kms.disable_key_rotation(KeyId=data.key_id)
    kms.put_key_policy(KeyId=data.key_id, PolicyName="default",
                       Policy=json.dumps(root_policy(statement(APP, "kms:Decrypt"))))
    kms.disable_key(KeyId=kit.key("key.spare").key_id)
    kms.create_alias(AliasName=kit.alias("extra"), TargetKeyId=data.key_id)
    kit.write({"data": {"description": "v1", "tags": {"env": "test"}, "aliases": [kit.alias("data")]},
               "spare": {}, "new": {}})

    found = {(d.address, d.attribute): d for d in kit.drift()}
    assert sorted(found) == [
        (f"alias[{HOME}].{kit.alias('extra')}", "undeclared"),
        ("key.data", "description"), ("key.data", "policy"), ("key.data", "rotation"), ("key.data", "tags"),
        ("key.gone", "undeclared"), ("key.new", "exists"), ("key.spare", "state")]
    assert (found["key.data", "description"].live, found["key.data", "description"].declared) == ("by hand", "v1")
    assert (found["key.data", "tags"].live, found["key.data", "tags"].declared) == ({"env": "prod"}, {"env": "test"})
    assert (found["key.spare", "state"].live, found["key.spare", "state"].declared) == ("Disabled", "Enabled")
    assert all(d.message for d in found.values())

    kit.apply(allow_delete=("key.gone",))
    assert kit.key("key.gone").state == "PendingDeletion" and kit.key("key.gone").key_id == gone.key_id
    kit.assert_converged()
