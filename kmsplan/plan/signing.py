"""Plan signatures and the per-stack apply lock, both kept in the store through the KMS API.

A saved plan is signed with GenerateMac under an HMAC_256 key of the store (alias
`alias/kmsplan/plan-signing`, in the store's first region): the signing key never leaves the HSM,
and the scheme works the same against a served store or AWS KMS. Apply verifies with VerifyMac
under the same alias (never a key the plan names), so an edited plan fails.

The apply lock is an alias, `alias/kmsplan/lock/<stack>`: CreateAlias is atomic and refuses a name
that exists, which is exactly a lock. Who holds it and since when is a tag on the signing key.
"""

from __future__ import annotations

import base64
import hashlib
import os
import socket
from datetime import datetime

from kmsplan.errors import KMSError, KmsplanError
from kmsplan.plan.model import Plan

SIGNING_ALIAS = "alias/kmsplan/plan-signing"
MAC_ALGORITHM = "HMAC_SHA_256"


class PlanRejected(KmsplanError):
    """A saved plan that must not be applied: edited, stale, or for changed stack files."""


def signing_key(kms) -> str:
    """The signing key's id, created (HMAC_256, default policy) the first time it is needed."""
    try:
        return kms.describe_key(KeyId=SIGNING_ALIAS)["KeyMetadata"]["KeyId"]
    except KMSError as error:
        if error.code != "NotFoundException":
            raise
    key_id = kms.create_key(KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC",
                            Description="kmsplan: signs saved plans and holds apply locks",
                            Tags=[{"TagKey": "kmsplan:purpose", "TagValue": "plan-signing"}])["KeyMetadata"]["KeyId"]
    try:
        kms.create_alias(AliasName=SIGNING_ALIAS, TargetKeyId=key_id)
    except KMSError as error:
        if error.code != "AlreadyExistsException":
            raise
        kms.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=7)  # another process won the race
        return kms.describe_key(KeyId=SIGNING_ALIAS)["KeyMetadata"]["KeyId"]
    return key_id


def sign(plan: Plan, kms) -> Plan:
    key_id = signing_key(kms)
    mac = kms.generate_mac(KeyId=key_id, MacAlgorithm=MAC_ALGORITHM, Message=_message(plan))["Mac"]
    return Plan(**{**plan.__dict__, "signature": {"algorithm": MAC_ALGORITHM, "mac": base64.b64encode(mac).decode()}})


def _message(plan: Plan) -> bytes:
    """VerifyMac takes at most 4096 bytes of message, so the MAC covers the body's SHA-256."""
    return hashlib.sha256(plan.canonical_body()).digest()


def verify(plan: Plan, kms) -> None:
    """Raise PlanRejected unless the store's signing key vouches for exactly this plan body."""
    signature = plan.signature or {}
    if signature.get("algorithm") != MAC_ALGORITHM or not isinstance(signature.get("mac"), str):
        raise PlanRejected("the plan is not signed", hint="make it with `kmsplan plan --out PLAN` on this store")
    try:
        mac = base64.b64decode(signature["mac"], validate=True)
        kms.verify_mac(KeyId=SIGNING_ALIAS, MacAlgorithm=MAC_ALGORITHM, Message=_message(plan), Mac=mac)
    except KMSError as error:
        if error.code == "KMSInvalidMacException":
            raise PlanRejected("the plan's signature does not match its content: it was edited after planning",
                               hint="never edit a saved plan; run `kmsplan plan --out PLAN` again") from None
        if error.code in ("NotFoundException", "AccessDeniedException"):
            raise PlanRejected(f"cannot verify the plan's signature: {error.message}",
                               hint="apply as a principal allowed kms:VerifyMac on " + SIGNING_ALIAS) from None
        raise
    except ValueError:
        raise PlanRejected("the plan's signature is not base64: it was edited after planning",
                           hint="run `kmsplan plan --out PLAN` again") from None


# --- the apply lock ----------------------------------------------------------------------

def _lock_alias(stack: str) -> str:
    return f"alias/kmsplan/lock/{stack}"


def _lock_tag(stack: str) -> str:
    return f"kmsplan:lock:{stack}"


def _holder(principal: str, now: datetime) -> str:
    """The lock tag's value (tag values allow letters, digits, spaces and _.:/=+-@)."""
    return (f"principal={principal} since={now.isoformat(timespec='seconds')} "
            f"host={socket.gethostname()} pid={os.getpid()}")


def lock_holder(kms, stack: str) -> dict | None:
    """Who holds the lock (None when nobody does)."""
    try:
        target = kms.describe_key(KeyId=_lock_alias(stack))["KeyMetadata"]["KeyId"]
    except KMSError as error:
        if error.code == "NotFoundException":
            return None
        raise
    tags = {t["TagKey"]: t["TagValue"] for t in kms.list_resource_tags(KeyId=target)["Tags"]}
    holder: dict[str, object] = dict(part.split("=", 1) for part in tags.get(_lock_tag(stack), "").split()
                                     if "=" in part) or {"principal": "unknown"}
    if str(holder.get("pid", "")).isdigit():
        holder["pid"] = int(holder["pid"])  # type: ignore[arg-type]
    return holder


def _is_dead(holder: dict) -> bool:
    """A holder on this host whose process is gone (an apply killed with -9) holds nothing."""
    if holder.get("host") != socket.gethostname() or not isinstance(holder.get("pid"), int):
        return False
    try:
        os.kill(holder["pid"], 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def acquire(kms, stack: str, principal: str, now: datetime) -> str | None:
    """Take the stack's lock; returns a notice when a dead holder's lock was taken over."""
    key_id = signing_key(kms)
    notice = None
    for _ in range(2):
        try:
            kms.create_alias(AliasName=_lock_alias(stack), TargetKeyId=key_id)
            break
        except KMSError as error:
            if error.code != "AlreadyExistsException":
                raise
            holder = lock_holder(kms, stack) or {}
            if not _is_dead(holder):
                raise KmsplanError(
                    f"stack {stack} is locked: {holder.get('principal')} has been applying it since "
                    f"{holder.get('since', '?')} (pid {holder.get('pid', '?')} on {holder.get('host', '?')})",
                    hint=f"wait for that apply to finish; if it is dead, run `kmsplan force-unlock {stack}`")
            notice = f"took over the lock of a dead apply (pid {holder.get('pid')} on {holder.get('host')})"
            kms.delete_alias(AliasName=_lock_alias(stack))
    else:  # another apply took the freed lock between our two tries: it holds it now
        raise KmsplanError(f"stack {stack} is locked: another apply took its lock while a dead apply's lock "
                           "was being cleared", hint="wait for that apply to finish, then run apply again")
    kms.tag_resource(KeyId=key_id, Tags=[{"TagKey": _lock_tag(stack),
                                          "TagValue": _holder(principal, now)}])
    return notice


def release(kms, stack: str) -> bool:
    """Drop the lock (also `force-unlock`); True when there was one."""
    key_id = signing_key(kms)
    try:
        kms.delete_alias(AliasName=_lock_alias(stack))
        held = True
    except KMSError as error:
        if error.code != "NotFoundException":
            raise
        held = False
    kms.untag_resource(KeyId=key_id, TagKeys=[_lock_tag(stack)])
    return held
