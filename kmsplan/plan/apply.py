"""Applying a plan: its changes, in dependency order, each step re-checked against the live store.

Order: keys, then replicas (after their primary), then updates of existing keys (policy, tags,
rotation, state, primary region), aliases (after their target), new grants, then removals:
grants, aliases, and last key deletions (replicas before their primary). Every step is an
"ensure": it reads what it is about to change and does nothing when that is already so, so
running apply again after any failure or a kill -9 converges. New keys are tagged with their
stack and address in the CreateKey/ReplicateKey call itself: a key is never created unowned,
so a crash cannot leave an orphan that a second apply would duplicate.

KMS refuses CreateGrant and rotation changes on a disabled key, so a key is enabled before its
rotation changes and disabled after them; a key this plan disables (or creates disabled) is
disabled by the last of its new grants' steps rather than by its own step. (Either change on a
key that is disabled and stays so is refused at plan time, guard G402.) A policy put with the
lockout safety check bypassed may shut the applying principal out of the key, so it is put in
a step of its own after all the others (a new key is created with the default policy first).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kmsplan.errors import KMSError, KmsplanError
from kmsplan.plan.backend import Backend
from kmsplan.plan.diff import GRANT_NAME_PREFIX, grant_key_address
from kmsplan.plan.live import (
    ADDRESS_TAG, MANAGED_TAGS, PROTECT_TAG, STACK_TAG, WINDOW_TAG, LiveKey, LiveState, parse_address, read_key,
)
from kmsplan.plan.model import ALIAS, CREATE, DELETE, GRANT, KEY, REPLICA, UPDATE, Change, Plan
from kmsplan.plan.policies import canonical

DONE, SKIPPED, FAILED, NOT_RUN = "done", "already so", "failed", "not run"


@dataclass(frozen=True)
class StepResult:
    address: str
    actions: tuple[str, ...]
    status: str
    detail: str = ""

    def to_data(self) -> dict[str, Any]:
        return {"address": self.address, "actions": list(self.actions), "status": self.status,
                "detail": self.detail}


class ApplyFailed(KmsplanError):
    """A step failed: what was done and what was not travel with the error."""

    def __init__(self, results: list[StepResult], message: str) -> None:
        super().__init__(message, hint="fix the cause and run apply again: the steps already done are skipped")
        self.results = results


def _phase(change: Change) -> tuple[int, str]:
    kind, actions = change.kind, change.actions
    if actions == (CREATE,) and kind == KEY:
        order = 0
    elif actions == (CREATE,) and kind == REPLICA:
        order = 1
    elif actions == (UPDATE,) and kind in (KEY, REPLICA):
        order = 2
    elif kind == ALIAS and actions != (DELETE,):
        order = 3
    elif kind == GRANT and CREATE in actions:
        order = 4
    elif kind == GRANT:
        order = 5
    elif kind == ALIAS:
        order = 6
    else:  # key deletions: replicas first, then primaries
        order = 7 if kind == REPLICA else 8
    return order, change.address


def ordered(plan: Plan) -> list[Change]:
    return sorted(plan.effective, key=_phase)


def _policy_last(change: Change) -> bool:
    """A bypassed policy may lock the applying principal out: it is put after everything else."""
    after = change.after or {}
    return change.kind in (KEY, REPLICA) and bool(after.get("bypass_policy_lockout_safety_check")) and (
        change.actions == (CREATE,) or (change.actions == (UPDATE,) and "policy" in change.changed_attributes()))


def _tags(plan: Plan, after: dict[str, Any]) -> dict[str, str]:
    return {**after["tags"], STACK_TAG: plan.stack, ADDRESS_TAG: after["address"],
            PROTECT_TAG: "true" if after["protect"] else "false",
            WINDOW_TAG: str(after["deletion_window_days"])}


def _tag_list(tags: dict[str, str]) -> list[dict[str, str]]:
    return [{"TagKey": k, "TagValue": v} for k, v in sorted(tags.items())]


class Applier:
    """Runs one plan's changes against the backend as the plan's principal."""

    def __init__(self, backend: Backend, plan: Plan, live: LiveState,
                 progress: Callable[[str], None] = lambda line: None) -> None:
        self.backend, self.plan, self.progress = backend, plan, progress
        self.ids: dict[str, LiveKey] = {key.address: key for key in live.keys if key.address}
        # key address -> its grants this plan creates, still to do (DisableKey waits for them)
        self.new_grants: dict[str, set[str]] = {}
        for change in plan.effective:
            if change.kind == GRANT and CREATE in change.actions:
                self.new_grants.setdefault(grant_key_address(change.address), set()).add(change.address)
        self.disable_later: set[str] = set()

    def run(self) -> list[StepResult]:
        steps = ordered(self.plan)
        work = [(change, change.actions, self._step) for change in steps]
        work += [(change, (UPDATE,), self._policy_step) for change in steps if _policy_last(change)]
        results: list[StepResult] = []
        for number, (change, actions, step) in enumerate(work, start=1):
            label = f"[{number}/{len(work)}] {change.address}: {'/'.join(actions)}"
            try:
                detail = step(change)
            except (KMSError, KmsplanError) as error:
                code = getattr(error, "code", type(error).__name__)
                results.append(StepResult(change.address, actions, FAILED, f"{code}: {error.message}"))
                results += [StepResult(c.address, a, NOT_RUN) for c, a, _ in work[number:]]
                self.progress(f"{label} FAILED: {code}: {error.message}")
                raise ApplyFailed(results, f"apply stopped at {change.address}: {code}: {error.message} "
                                           f"({number - 1} of {len(work)} steps done)") from None
            status = SKIPPED if detail.startswith("already") else DONE
            results.append(StepResult(change.address, actions, status, detail))
            self.progress(f"{label} {status}" + (f" ({detail})" if detail and status == DONE else ""))
        return results

    # -- one change ---------------------------------------------------------------------
    def _step(self, change: Change) -> str:
        kms = self.backend.client(change.region)
        if change.kind in (KEY, REPLICA):
            if change.actions == (CREATE,):
                return self._create_key(kms, change)
            if change.actions == (UPDATE,):
                return self._update_key(change)
            return self._delete_key(kms, change)
        if change.kind == ALIAS:
            return self._alias(kms, change)
        return self._grant(kms, change)

    def _create_key(self, kms, change: Change) -> str:
        after: dict[str, Any] = change.after  # type: ignore[assignment]
        if change.address in self.ids:
            return "already exists: " + self.ids[change.address].key_id
        common: dict[str, Any] = {"Description": after["description"], "Tags": _tag_list(_tags(self.plan, after))}
        if not _policy_last(change):  # otherwise the default policy until the policy step
            common["Policy"] = json.dumps(after["policy"])
        if change.kind == KEY:
            meta = kms.create_key(KeySpec=after["spec"], KeyUsage=after["usage"],
                                  MultiRegion=after["multi_region"], **common)["KeyMetadata"]
        else:
            primary = self._primary(after["name"])
            source = self.backend.client(primary.region)
            meta = source.replicate_key(KeyId=primary.key_id, ReplicaRegion=change.region,
                                        **common)["ReplicaKeyMetadata"]
        key_id = meta["KeyId"]
        rotation = after.get("rotation")
        if rotation and rotation["enabled"]:
            kms.enable_key_rotation(KeyId=key_id, RotationPeriodInDays=rotation["period_days"])
        detail = key_id
        if not after["enabled"]:
            detail += self._disable(kms, change.address, key_id)
        self.ids[change.address] = read_key(kms, change.region, key_id)
        return detail

    def _disable(self, kms, address: str, key_id: str) -> str:
        """Disable now, or after the key's new grants (KMS refuses CreateGrant on a disabled key)."""
        if self.new_grants.get(address):
            self.disable_later.add(address)
            return ", disabled after its new grants"
        kms.disable_key(KeyId=key_id)
        return ", disabled"

    def _primary(self, name: str) -> LiveKey:
        for key in self.ids.values():
            if (parse_address(key.address or "") or ("",))[0] == name and key.multi_region_type == "PRIMARY":
                return read_key(self.backend.client(key.region), key.region, key.key_id)
        raise KmsplanError(f"no live primary key for key.{name} to replicate from",
                           hint="run plan again: the primary must exist before its replicas")

    def _update_key(self, change: Change) -> str:
        after: dict[str, Any] = change.after  # type: ignore[assignment]
        kms = self.backend.client(change.region)
        key = read_key(kms, change.region, change.key_id or "")
        done: list[str] = []
        if key.pending_deletion:
            kms.cancel_key_deletion(KeyId=key.key_id)
            done.append("deletion cancelled")
            key = read_key(kms, change.region, key.key_id)
        if after["primary_region"] and key.primary_region and key.primary_region != after["primary_region"]:
            primary = self.backend.client(key.primary_region)
            primary.update_primary_region(KeyId=key.key_id, PrimaryRegion=after["primary_region"])
            done.append(f"primary region moved to {after['primary_region']}")
            key = read_key(kms, change.region, key.key_id)  # this copy is the primary now
        if key.description != after["description"]:
            kms.update_key_description(KeyId=key.key_id, Description=after["description"])
            done.append("description")
        if not _policy_last(change) and canonical(key.policy) != canonical(after["policy"]):
            kms.put_key_policy(KeyId=key.key_id, PolicyName="default", Policy=json.dumps(after["policy"]),
                               BypassPolicyLockoutSafetyCheck=bool(after["bypass_policy_lockout_safety_check"]))
            done.append("policy")
        done += self._retag(kms, key, _tags(self.plan, after))
        enabled = key.state == "Enabled"
        if after["enabled"] and not enabled:  # before rotation: KMS refuses it on a disabled key
            kms.enable_key(KeyId=key.key_id)
            done.append("enabled")
        rotation = after.get("rotation")
        if rotation is not None and key.multi_region_type != "REPLICA":
            if rotation["enabled"] and (not key.rotation_enabled or key.rotation_period != rotation["period_days"]):
                kms.enable_key_rotation(KeyId=key.key_id, RotationPeriodInDays=rotation["period_days"])
                done.append("rotation on")
            elif not rotation["enabled"] and key.rotation_enabled:
                kms.disable_key_rotation(KeyId=key.key_id)
                done.append("rotation off")
        if not after["enabled"] and enabled:
            done.append(self._disable(kms, change.address, key.key_id)[2:])
        self.ids[change.address] = read_key(kms, change.region, key.key_id)
        return ", ".join(done) if done else "already up to date"

    def _policy_step(self, change: Change) -> str:
        """Put a bypassed policy, last: after it the applying principal may not reach the key."""
        after: dict[str, Any] = change.after  # type: ignore[assignment]
        kms = self.backend.client(change.region)
        key = self.ids.get(change.address)
        key_id = key.key_id if key else change.key_id or ""
        try:
            current = kms.get_key_policy(KeyId=key_id, PolicyName="default")["Policy"]
        except KMSError as error:
            if error.code != "AccessDeniedException":
                raise
            return "already put: the key no longer lets the applying principal read its policy"
        if canonical(current) == canonical(after["policy"]):
            return "already the declared policy"
        kms.put_key_policy(KeyId=key_id, PolicyName="default", Policy=json.dumps(after["policy"]),
                           BypassPolicyLockoutSafetyCheck=True)
        return "policy put last, with the lockout safety check bypassed"

    @staticmethod
    def _retag(kms, key: LiveKey, wanted: dict[str, str]) -> list[str]:
        stale = sorted(k for k in key.tags if k not in wanted and (k in MANAGED_TAGS or k in key.user_tags))
        changed = {k: v for k, v in wanted.items() if key.tags.get(k) != v}
        if stale:
            kms.untag_resource(KeyId=key.key_id, TagKeys=stale)
        if changed:
            kms.tag_resource(KeyId=key.key_id, Tags=_tag_list(changed))
        return ["tags"] if stale or changed else []

    def _delete_key(self, kms, change: Change) -> str:
        key = read_key(kms, change.region, change.key_id or "")
        if key.pending_deletion:
            return "already pending deletion"
        reply = kms.schedule_key_deletion(KeyId=key.key_id, PendingWindowInDays=key.deletion_window)
        when = reply.get("DeletionDate")
        return f"deletion on {when:%Y-%m-%d}" if when else f"waits for its replicas ({reply.get('KeyState')})"

    # -- aliases and grants -------------------------------------------------------------
    def _alias(self, kms, change: Change) -> str:
        name = (change.after or change.before or {})["name"]
        current = self._alias_target(kms, name)
        if change.actions == (DELETE,):
            if current is None:
                return "already gone"
            if current != (change.before or {}).get("target_key_id"):
                return "already repointed elsewhere; left alone"
            kms.delete_alias(AliasName=name)
            return "deleted"
        target = self.ids.get(change.after["target"])  # type: ignore[index]
        if target is None:
            raise KmsplanError(f"{change.address}: its target {change.after['target']} does not exist",  # type: ignore[index]
                               hint="run plan again")
        if current == target.key_id:
            return "already points at " + target.key_id
        expected = (change.before or {}).get("target_key_id")
        if current != expected:  # made or moved since the plan: maybe another stack's, never taken over
            raise KmsplanError(f"{change.address} now points at {current or 'nothing'}, not at "
                               f"{expected or 'nothing'} as when the plan was made",
                               hint="something else changed the alias: run plan again and review the new plan")
        if current is None:
            kms.create_alias(AliasName=name, TargetKeyId=target.key_id)
        else:
            kms.update_alias(AliasName=name, TargetKeyId=target.key_id)
        return target.key_id

    @staticmethod
    def _alias_target(kms, name: str) -> str | None:
        try:
            return kms.describe_key(KeyId=name)["KeyMetadata"]["KeyId"]
        except KMSError as error:
            if error.code == "NotFoundException":
                return None
            raise

    def _grant(self, kms, change: Change) -> str:
        key_address = grant_key_address(change.address)
        key = self.ids.get(key_address)
        if key is None:
            raise KmsplanError(f"{change.address}: its key {key_address} does not exist", hint="run plan again")
        live = kms.list_grants(KeyId=key.key_id, Limit=1000)["Grants"]
        if change.actions == (DELETE,):
            grant_id = (change.before or {}).get("grant_id")
            if not any(g["GrantId"] == grant_id for g in live):
                return "already revoked"
            kms.revoke_grant(KeyId=key.key_id, GrantId=grant_id)
            return "revoked"
        after: dict[str, Any] = change.after  # type: ignore[assignment]
        name = GRANT_NAME_PREFIX + after["name"]
        same = [g for g in live if g.get("Name") == name and _grant_matches(g, after)]
        detail = "already exists"
        if not same:
            params: dict[str, Any] = {"KeyId": key.key_id, "GranteePrincipal": after["grantee"],
                                      "Operations": after["operations"], "Name": name}
            constraints = after.get("constraints") or {}
            if constraints.get("encryption_context_equals"):
                params["Constraints"] = {"EncryptionContextEquals": constraints["encryption_context_equals"]}
            elif constraints.get("encryption_context_subset"):
                params["Constraints"] = {"EncryptionContextSubset": constraints["encryption_context_subset"]}
            if after.get("retiring_principal"):
                params["RetiringPrincipal"] = after["retiring_principal"]
            detail = kms.create_grant(**params)["GrantId"]
        if CREATE in change.actions and DELETE in change.actions:  # a replacement: drop the old ones
            for grant in live:
                if grant.get("Name") == name and not _grant_matches(grant, after):
                    kms.revoke_grant(KeyId=key.key_id, GrantId=grant["GrantId"])
            detail += ", old grant revoked"
        waiting = self.new_grants.get(key_address, set())
        waiting.discard(change.address)
        if not waiting and key_address in self.disable_later:
            self.disable_later.discard(key_address)
            kms.disable_key(KeyId=key.key_id)
            detail += f", {key_address} disabled"
        return detail


def _grant_matches(live: dict, after: dict[str, Any]) -> bool:
    constraints = live.get("Constraints") or {}
    wanted = after.get("constraints") or {}
    return (live["GranteePrincipal"] == after["grantee"] and sorted(live["Operations"]) == sorted(after["operations"])
            and (constraints.get("EncryptionContextEquals") or None) == wanted.get("encryption_context_equals")
            and (constraints.get("EncryptionContextSubset") or None) == wanted.get("encryption_context_subset")
            and live.get("RetiringPrincipal") == after.get("retiring_principal"))

