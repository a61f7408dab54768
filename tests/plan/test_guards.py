"""Every guard on a real store: it fires with its code, the address and a hint; an error blocks
apply; and the flag or stack change that allows the work makes the plan applicable."""

from __future__ import annotations

from datetime import timedelta

import pytest
from plan_helpers import ADMIN, APP, AWAY, FAR, GHOST, HOME, ROOT, change, policy, root_policy, statement

from kmsplan.errors import KMSError
from kmsplan.plan import PlanRejected, apply_plan
from kmsplan.plan.guards import ADMIN_ACTIONS, CODES, GuardContext, check
from kmsplan.plan.live import read_live
from kmsplan.plan.model import ALIAS, CREATE, Change, Flags
from kmsplan.plan.render import render_text


def findings(plan, code: str) -> list:
    return [f for f in plan.findings if f.code == code]


def only(plan, code: str, address: str, severity: str = "error"):
    """The one finding `code` of the plan: on `address`, of `severity`, with a hint."""
    found = findings(plan, code)
    assert len(found) == 1, [f.to_data() for f in plan.findings]
    finding = found[0]
    assert (finding.address, finding.severity) == (address, severity), finding
    assert address in finding.message and len(finding.hint) > 15, finding
    assert finding.code in CODES
    return finding


def refused(kit, plan) -> None:
    """An error plan is never applied: apply_plan refuses it and the store is unchanged."""
    before = kit.live()
    with pytest.raises(PlanRejected, match="guard errors"):
        apply_plan(plan, kit.backend(), saved=False)
    assert kit.live().fingerprint() == before.fingerprint()


def use(kit, address: str) -> None:
    kit.client(kit.key(address).region).encrypt(KeyId=kit.key(address).key_id, Plaintext=b"in use")


# --- deletion ----------------------------------------------------------------------------

@pytest.mark.local_only
def test_g101_deleting_a_key_needs_allow_delete_for_that_address(kit):
    kit.apply({"keep": {}, "old": {"deletion_window_days": 7}})
    plan = kit.plan({"keep": {}})
    finding = only(plan, "G101", "key.old")
    assert "--allow-delete key.old" in finding.hint and "7-day window" in finding.message
    refused(kit, plan)
    assert findings(kit.plan(allow_delete=("key.keep",)), "G101"), "allowing another address allows nothing here"

    plan = kit.plan(allow_delete=("key.old",))
    assert not plan.findings
    deletion = change(plan, "key.old")
    due = (kit.store.now() + timedelta(days=7)).isoformat(timespec="seconds")
    assert deletion.actions == ("delete",) and deletion.deletion_date == due
    assert due[:10] in deletion.reason and due[:10] in render_text(plan)
    apply_plan(plan, kit.backend(), saved=False)
    live = kit.key("key.old")
    assert live.state == "PendingDeletion" and live.deletion_date.isoformat(timespec="seconds") == due
    kit.assert_converged()


@pytest.mark.local_only
def test_deletion_uses_each_keys_own_window(kit):
    kit.apply({"short": {"deletion_window_days": 9}, "default": {}})
    plan = kit.plan({}, allow_delete=("key.short", "key.default"))
    now = kit.store.now()
    assert {c.address: c.deletion_date for c in plan.effective} == {
        "key.short": (now + timedelta(days=9)).isoformat(timespec="seconds"),
        "key.default": (now + timedelta(days=30)).isoformat(timespec="seconds")}


def test_g102_a_protected_key_is_never_deleted_until_unprotected(kit):
    kit.apply({"crown": {"protect": True}})
    plan = kit.plan({}, allow_delete=("key.crown",))
    assert "protect: false" in only(plan, "G102", "key.crown").hint, "the live tag protects it, the YAML is gone"
    refused(kit, plan)

    kit.apply({"crown": {"protect": False}})
    assert kit.key("key.crown").protected is False
    kit.apply({}, allow_delete=("key.crown",))
    assert kit.key("key.crown").state == "PendingDeletion"


@pytest.mark.local_only
def test_g103_a_recently_used_key_needs_allow_delete_recently_used(kit, clock):
    kit.apply({"busy": {}, "idle": {}})
    use(kit, "key.busy")
    flags = {"allow_delete": ("key.busy", "key.idle")}
    plan = kit.plan({}, **flags)
    finding = only(plan, "G103", "key.busy")
    assert "--allow-delete-recently-used" in finding.hint and "within the last 30 days" in finding.message
    refused(kit, plan)

    plan = kit.plan({}, recently_used=True, **flags)
    only(plan, "G103", "key.busy", severity="warning")
    assert not plan.has_errors

    clock.advance(days=3)
    assert not findings(kit.plan({}, recent_days=2, **flags), "G103"), "used 3 days ago is not within 2 days"
    assert findings(kit.plan({}, recent_days=4, **flags), "G103")
    kit.apply({}, recently_used=True, **flags)
    assert {k.state for k in kit.live().keys} == {"PendingDeletion"}


def test_g104_a_primary_with_replicas_left_is_not_deleted(kit):
    kit.apply({"data": {"multi_region": True, "replicas": {AWAY: {}}}})
    # the primary declared in a region with no replica: the old primary would go, its replica stay
    plan = kit.plan({"data": {"multi_region": True, "region": FAR, "replicas": {AWAY: {}}}}, allow_delete=("key.data",))
    finding = only(plan, "G104", "key.data")
    assert AWAY in finding.message and "replica" in finding.hint
    refused(kit, plan)

    everything = kit.plan({}, allow_delete=("key.data", f"key.data.replica[{AWAY}]"))
    assert not everything.findings, "the primary and all its replicas together are fine"
    apply_plan(everything, kit.backend(), saved=False)
    assert {k.state for k in kit.live().keys} <= {"PendingDeletion", "PendingReplicaDeletion"}
    kit.assert_converged()


# --- immutable attributes ----------------------------------------------------------------

@pytest.mark.parametrize("before, after, attribute", [
    ({}, {"spec": "HMAC_256"}, "spec"),
    ({"spec": "RSA_2048", "usage": "ENCRYPT_DECRYPT"}, {"spec": "RSA_2048", "usage": "SIGN_VERIFY"}, "usage"),
    ({}, {"multi_region": True}, "multi_region"),
])
def test_g201_an_immutable_attribute_cannot_change(kit, before, after, attribute):
    kit.apply({"data": before})
    plan = kit.plan({"data": after})
    finding = next(f for f in findings(plan, "G201") if f"{attribute} cannot change" in f.message)
    assert finding.address == "key.data" and finding.is_error and "declare a new key beside" in finding.hint
    assert all(f.code == "G201" for f in plan.findings), "a new spec brings its own usage: both are G201"
    refused(kit, plan)


def test_g201_a_single_region_key_cannot_move_region(kit):
    kit.apply({"data": {}})
    plan = kit.plan({"data": {"region": AWAY}}, allow_delete=("key.data",))
    finding = only(plan, "G201", "key.data")
    assert f"from {HOME} to {AWAY}" in finding.message
    refused(kit, plan)


# --- policies: lockout and lost access ---------------------------------------------------

ADMIN_ONLY = policy(statement(ADMIN, "kms:*", sid="Admins"), statement(APP, "kms:Decrypt", sid="App"))


def test_g301_the_applying_principal_must_keep_put_key_policy(kit):
    kit.apply({"data": {}})
    plan = kit.plan({"data": {"policy": ADMIN_ONLY}})
    finding = only(plan, "G301", "key.data")
    assert "PutKeyPolicy" in finding.hint
    assert not findings(plan, "G302"), "the admin role keeps administering it"
    refused(kit, plan)
    as_admin = kit.plan(principal=ADMIN)
    assert not as_admin.has_errors, "applied as the admin role, nobody is locked out"
    assert [f.code for f in as_admin.findings] == ["G303"], "the root losing its access is still shown"


def test_g301_bypass_makes_it_a_warning_and_the_policy_is_put_last(kit):
    """The new key gets its rotation, alias and grant before the policy shuts the root out."""
    keys = {"data": {"region": FAR, "policy": ADMIN_ONLY, "bypass_policy_lockout_safety_check": True,
                     "aliases": [kit.alias("data")], "grants": {"g": {"grantee": APP, "operations": ["Encrypt"]}}}}
    plan = kit.plan(keys)
    finding = only(plan, "G301", "key.data", severity="warning")
    assert "BYPASSED" in finding.message and "--principal" in finding.hint
    results, _ = apply_plan(plan, kit.backend(), saved=False)
    assert [(r.address, r.status) for r in results][-1] == ("key.data", "done"), "the policy step comes last"
    assert kit.plan(principal=ADMIN).effective == (), "the admin role manages it from now on"
    kit.assert_converged(principal=ADMIN)
    with pytest.raises(KMSError, match="AccessDenied"):
        kit.client(FAR).describe_key(KeyId=kit.alias("data"))


def test_g301_bypass_on_an_existing_key_puts_the_policy_after_its_other_changes(kit):
    kit.apply({"data": {"region": FAR}})
    keys = {"data": {"region": FAR, "policy": ADMIN_ONLY, "bypass_policy_lockout_safety_check": True,
                     "description": "handed over", "tags": {"owner": "admins"}, "enabled": False}}
    plan = kit.apply(keys)
    assert findings(plan, "G301")[0].severity == "warning"
    kit.assert_converged(principal=ADMIN)
    [key] = read_live(kit.backend(ADMIN).clients(), kit.name).keys
    assert (key.description, key.user_tags, key.state) == ("handed over", {"owner": "admins"}, "Disabled")
    assert kit.live().keys == (), "to the root the key is invisible now: its tags are unreadable"


def test_g301_and_g302_a_policy_that_locks_everyone_out(kit):
    kit.apply({"data": {}})
    plan = kit.plan({"data": {"policy": policy(statement(APP, ["kms:Decrypt"]))}})
    only(plan, "G301", "key.data")
    finding = only(plan, "G302", "key.data")
    assert all(action in finding.message for action in ADMIN_ACTIONS)
    refused(kit, plan)


def test_g302_some_registered_principal_must_keep_every_admin_action(kit):
    no_deletion = policy(statement(ROOT, ["kms:PutKeyPolicy", "kms:Describe*", "kms:Get*", "kms:List*", "kms:Tag*",
                                          "kms:Untag*", "kms:Enable*", "kms:Disable*", "kms:CreateGrant"]))
    plan = kit.plan({"data": {"policy": no_deletion}})
    assert "kms:ScheduleKeyDeletion" in only(plan, "G302", "key.data").message
    assert not findings(plan, "G301")
    refused(kit, plan)


def test_g303_each_principal_losing_a_permission_is_a_warning(kit):
    kit.apply({"data": {"policy": root_policy(statement(APP, ["kms:Decrypt", "kms:Encrypt"], sid="App"))}})
    plan = kit.plan({"data": {"policy": root_policy(statement(APP, ["kms:Decrypt"], sid="App"))}})
    finding = only(plan, "G303", "key.data", severity="warning")
    assert APP in finding.message and "kms:Encrypt" in finding.message and "kms:Decrypt" not in finding.message
    assert not plan.has_errors
    apply_plan(plan, kit.backend(), saved=False)
    kit.assert_converged()


def test_g304_a_policy_naming_unknown_principals_is_refused(kit):
    plan = kit.plan({"data": {"policy": root_policy(statement(GHOST, "kms:Decrypt"))}})
    finding = only(plan, "G304", "key.data")
    assert GHOST in finding.message and "register" in finding.hint
    refused(kit, plan)


# --- disabling ---------------------------------------------------------------------------

def test_g401_disabling_a_key_in_use_is_a_warning(kit):
    kit.apply({"busy": {}, "idle": {}})
    use(kit, "key.busy")
    plan = kit.plan({"busy": {"enabled": False}, "idle": {"enabled": False}})
    only(plan, "G401", "key.busy", severity="warning")
    assert not plan.has_errors
    apply_plan(plan, kit.backend(), saved=False)
    assert {k.state for k in kit.live().keys} == {"Disabled"}


def test_g402_no_grant_can_be_added_to_a_key_that_stays_disabled(kit):
    kit.apply({"data": {"enabled": False}})
    grants = {"g": {"grantee": APP, "operations": ["Decrypt"]}}
    plan = kit.plan({"data": {"enabled": False, "grants": grants}})
    assert "enable key.data" in only(plan, "G402", "grant.data.g").hint
    refused(kit, plan)

    kit.apply({"data": {"enabled": True, "grants": grants}})
    plan = kit.apply({"data": {"enabled": False, "grants": grants}})
    assert not plan.findings, "the grant exists now; disabling the key is fine"
    assert kit.key("key.data").state == "Disabled" and len(kit.key("key.data").grants) == 1
    kit.assert_converged()


def test_g402_no_rotation_change_on_a_key_that_stays_disabled(kit):
    kit.apply({"data": {"enabled": False, "rotation": {"enabled": False}}})
    plan = kit.plan({"data": {"enabled": False, "rotation": {"enabled": True, "period_days": 90}}})
    assert "change the rotation" in only(plan, "G402", "key.data").message
    refused(kit, plan)
    kit.apply({"data": {"enabled": True, "rotation": {"enabled": True, "period_days": 90}}})
    assert (kit.key("key.data").state, kit.key("key.data").rotation_period) == ("Enabled", 90)
    kit.apply({"data": {"enabled": False, "rotation": {"enabled": True, "period_days": 90}}})
    kit.assert_converged()


def test_g402_a_key_disabled_in_the_same_plan_gets_its_grants_first(kit):
    kit.apply({"data": {}})
    plan = kit.apply({"data": {"enabled": False, "grants": {"g": {"grantee": APP, "operations": ["Decrypt"]}}}})
    assert not plan.findings
    assert kit.key("key.data").state == "Disabled" and [g.name for g in kit.key("key.data").grants] == ["kmsplan:g"]
    kit.assert_converged()


# --- aliases -----------------------------------------------------------------------------

def test_g501_an_alias_cannot_move_to_a_key_of_another_spec(kit):
    name = kit.alias("x")
    kit.apply({"sym": {"aliases": [name]}, "mac": {"spec": "HMAC_256"}, "sym2": {}})
    plan = kit.plan({"sym": {}, "mac": {"spec": "HMAC_256", "aliases": [name]}, "sym2": {}})
    finding = only(plan, "G501", f"alias[{HOME}].{name}")
    assert "SYMMETRIC_DEFAULT/ENCRYPT_DECRYPT" in finding.message and "HMAC_256" in finding.message
    refused(kit, plan)
    assert not kit.plan({"sym": {}, "mac": {"spec": "HMAC_256"}, "sym2": {"aliases": [name]}}).findings


def test_g502_an_alias_must_not_be_left_on_a_key_being_deleted(kit):
    """No valid stack reaches this (an alias names a declared key), so the guard is fed the real
    diff of a deletion plus the alias change a broken diff would make."""
    kit.apply({"old": {}, "new": {}})
    plan = kit.plan({"new": {}}, allow_delete=("key.old",))
    old = kit.key("key.old")
    stray = Change(f"alias[{HOME}].{kit.alias('stray')}", ALIAS, HOME, (CREATE,), None,
                   {"name": kit.alias("stray"), "region": HOME, "target": "key.old", "target_key_id": old.key_id})
    backend = kit.backend()
    context = GuardContext(account=backend.account, principal=backend.principal_record(ROOT),
                           principals=backend.principals(), last_use={}, flags=Flags(allow_delete=("key.old",)),
                           now=kit.store.now())
    found = [f for f in check([*plan.changes, stray], kit.live(), context) if f.code == "G502"]
    assert [(f.address, f.severity) for f in found] == [(stray.address, "error")] and found[0].hint
    assert not [f for f in check(list(plan.changes), kit.live(), context) if f.code == "G502"]


def test_g503_an_alias_of_a_key_this_stack_does_not_own_is_not_taken(kit, make_kit):
    name = kit.alias("taken")
    other = make_kit("other")
    other.apply({"theirs": {"aliases": [name]}})
    plan = kit.plan({"mine": {"aliases": [name]}})
    finding = only(plan, "G503", f"alias[{HOME}].{name}")
    assert other.key("key.theirs").key_id in finding.message
    refused(kit, plan)

    untagged = kit.client().create_key(Description="nobody's")["KeyMetadata"]["KeyId"]
    kit.client().create_alias(AliasName=kit.alias("loose"), TargetKeyId=untagged)
    only(kit.plan({"mine": {"aliases": [kit.alias("loose")]}}), "G503", f"alias[{HOME}].{kit.alias('loose')}")


def test_every_guard_code_has_a_description():
    assert sorted(CODES) == ["G101", "G102", "G103", "G104", "G201", "G301", "G302", "G303", "G304", "G401",
                             "G402", "G501", "G502", "G503"]
    assert all(len(text) > 20 for text in CODES.values())
