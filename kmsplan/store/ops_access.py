"""Aliases, tags and grants: the per-region metadata around a key (none of it touches the token)."""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets

from kmsplan.errors import KMSError
from kmsplan.store import params as check
from kmsplan.store.calls import ANY, CRYPTO, Call, operation, page, resolve
from kmsplan.store.keystore import to_datetime
from kmsplan.store.ops_keys import MAX_TAGS, checked_tags
from kmsplan.store.specs import ALL_GRANT_OPERATIONS, CONTEXT_GRANT_OPERATIONS, grant_operations_for

_GRANT_NAME = re.compile(r"^[a-zA-Z0-9:/_-]{1,256}\Z")
_GRANT_ID = re.compile(r"^[0-9a-f]{64}\Z")
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{64}\Z")  # 48 bytes, unpadded URL-safe base64


# -- aliases ------------------------------------------------------------------------------------
def _target(call: Call):
    view = call.key("TargetKeyId", allow_alias=False)
    return view.record


@operation("CreateAlias", required=("AliasName", "TargetKeyId"))
def create_alias(call: Call) -> dict:
    name = check.alias_name(call.params["AliasName"], for_create=True)
    target = _target(call)
    if call.store.meta.alias_target(call.region, name) is not None:
        raise KMSError("AlreadyExistsException", f"An alias with the name arn:aws:kms:{call.region}:{call.account}:"
                                                 f"{name} already exists")
    now = call.now_ts()
    with call.store.meta.write() as conn:
        conn.execute("INSERT INTO aliases VALUES (?, ?, ?, ?, ?)", (call.region, name, target.key_id, now, now))
    return {}


@operation("UpdateAlias", required=("AliasName", "TargetKeyId"))
def update_alias(call: Call) -> dict:
    name = check.alias_name(call.params["AliasName"], for_create=True)
    current_id = call.store.meta.alias_target(call.region, name)
    if current_id is None:
        raise KMSError("NotFoundException", f"Alias arn:aws:kms:{call.region}:{call.account}:{name} is not found.")
    target = _target(call)
    current = call.store.meta.key(call.region, current_id)
    if current is not None:
        call.resources.append(current.arn)
        call.authorize(call.store.view(call.region, current_id))
    if current and (current.spec, current.usage) != (target.spec, target.usage):
        raise check.validation_error(
            f"{name} points to a {current.spec} {current.usage} key; it can only be repointed to a key of the same "
            f"key spec and key usage, not to {target.spec} {target.usage}")
    with call.store.meta.write() as conn:
        conn.execute("UPDATE aliases SET key_id = ?, updated = ? WHERE region = ? AND name = ?",
                     (target.key_id, call.now_ts(), call.region, name))
    return {}


@operation("DeleteAlias", required=("AliasName",))
def delete_alias(call: Call) -> dict:
    name = check.alias_name(call.params["AliasName"], for_create=False)
    key_id = call.store.meta.alias_target(call.region, name)
    if key_id is None:
        raise KMSError("NotFoundException", f"Alias arn:aws:kms:{call.region}:{call.account}:{name} is not found.")
    view = call.store.view(call.region, key_id)
    call.resources.append(view.record.arn)
    call.authorize(view)
    with call.store.meta.write() as conn:
        conn.execute("DELETE FROM aliases WHERE region = ? AND name = ?", (call.region, name))
    return {}


@operation("ListAliases", optional=("KeyId", "Limit", "Marker"))
def list_aliases(call: Call) -> dict:
    call.authorize_identity()
    key_id = None
    if "KeyId" in call.params:
        key_id = resolve(call.store, call.region, call.params["KeyId"], allow_alias=False).record.key_id
    rows = call.store.meta.aliases(call.region, key_id)
    chunk, extra = page(rows, call.params, lambda row: row[0])
    return {"Aliases": [{"AliasName": name, "AliasArn": f"arn:aws:kms:{call.region}:{call.account}:{name}",
                         "TargetKeyId": target, "CreationDate": to_datetime(created),
                         "LastUpdatedDate": to_datetime(updated)} for name, target, created, updated in chunk],
            **extra}


# -- tags ---------------------------------------------------------------------------------------
@operation("TagResource", required=("KeyId", "Tags"))
def tag_resource(call: Call) -> dict:
    record = call.key(allow_alias=False).record
    existing = call.store.meta.tags(record.region, record.key_id)
    tags = checked_tags(call)
    if len(set(existing) | set(tags)) > MAX_TAGS:
        raise KMSError("LimitExceededException", f"A key can have at most {MAX_TAGS} tags")
    with call.store.meta.write() as conn:
        conn.executemany("INSERT OR REPLACE INTO tags VALUES (?, ?, ?, ?)",
                         [(record.region, record.key_id, k, v) for k, v in tags.items()])
    return {}


@operation("UntagResource", required=("KeyId", "TagKeys"))
def untag_resource(call: Call) -> dict:
    record = call.key(allow_alias=False).record
    for key in call.params["TagKeys"]:
        if key.lower().startswith("aws:"):
            raise KMSError("TagException", f"Tag key {key!r} is reserved")
    with call.store.meta.write() as conn:
        conn.executemany("DELETE FROM tags WHERE region = ? AND key_id = ? AND tag_key = ?",
                         [(record.region, record.key_id, key) for key in call.params["TagKeys"]])
    return {}


@operation("ListResourceTags", required=("KeyId",), optional=("Limit", "Marker"))
def list_resource_tags(call: Call) -> dict:
    view = call.key(allow_alias=False, state=ANY)
    items = sorted(call.store.authz.facts(view)[0].tags.items())  # the tags authorization just read
    chunk, extra = page(items, call.params, lambda item: item[0])
    return {"Tags": [{"TagKey": k, "TagValue": v} for k, v in chunk], **extra}


# -- grants -------------------------------------------------------------------------------------
def grant_token(grant_id: str) -> str:
    """An opaque token naming the grant; every CreateGrant call returns a fresh one."""
    return base64.urlsafe_b64encode(bytes.fromhex(grant_id) + secrets.token_bytes(16)).decode().rstrip("=")


def grant_id_of_token(token: str) -> str:
    raw = b""
    if _TOKEN.match(token):  # b64decode would silently skip characters outside the alphabet
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (binascii.Error, ValueError):
            raw = b""
    if len(raw) != 48:
        raise KMSError("InvalidGrantTokenException", "The grant token is not valid")
    return raw[:32].hex()


def _grant_shape(call: Call, record) -> tuple[str, str | None, list[str], dict | None]:
    grantee = check.principal("GranteePrincipal", call.params["GranteePrincipal"])
    retiring = call.params.get("RetiringPrincipal")
    if retiring is not None:
        check.principal("RetiringPrincipal", retiring)
    operations = call.params["Operations"]
    if not operations:
        raise check.validation_error("Operations must name at least one operation")
    for name in operations:
        check.one_of("Operations", name, ALL_GRANT_OPERATIONS)
    allowed = grant_operations_for(record.spec, record.usage)
    invalid = sorted(set(operations) - allowed)
    if invalid:
        raise check.validation_error(f"{', '.join(invalid)} cannot be granted on a {record.spec} {record.usage} key; "
                                     f"valid operations: {', '.join(sorted(allowed))}")
    constraints = call.params.get("Constraints") or None
    if constraints:
        if record.spec != "SYMMETRIC_DEFAULT":
            raise check.validation_error("Grant constraints are supported only on symmetric encryption keys")
        without_context = sorted(set(operations) - CONTEXT_GRANT_OPERATIONS)
        if without_context:
            raise check.validation_error(f"Grant constraints apply to operations that take an encryption context; "
                                         f"{', '.join(without_context)} does not")
    return grantee, retiring, sorted(set(operations)), constraints


@operation("CreateGrant", required=("KeyId", "GranteePrincipal", "Operations"),
           optional=("RetiringPrincipal", "Constraints", "GrantTokens", "Name", "DryRun"))
def create_grant(call: Call) -> dict:
    # AWS's key-state table: a disabled key refuses CreateGrant with DisabledException.
    view = call.key(allow_alias=False, state=CRYPTO, authorize=False)
    record = view.record
    # A grant that carries a constraint is authorized as a request with that context, so a
    # grantee allowed CreateGrant under a constraint can only pass it on, never widen it.
    constraint_pairs = {k: v for pairs in (call.params.get("Constraints") or {}).values() for k, v in pairs.items()}
    call.authorize(view, context=constraint_pairs)
    grantee, retiring, operations, constraints = _grant_shape(call, record)
    name = call.params.get("Name")
    if name is not None and not _GRANT_NAME.match(name):
        raise check.validation_error(f"Grant name {name!r} must be 1-256 of letters, digits, ':', '/', '_' and '-'")
    call.act()
    for grant in call.store.meta.grants(record.region, record.key_id):
        same = (grant.grantee, grant.retiring, list(grant.operations), grant.constraints) == \
               (grantee, retiring, operations, constraints)
        if name is not None and grant.name == name and same:
            return {"GrantToken": grant_token(grant.grant_id), "GrantId": grant.grant_id}
    grant_id = secrets.token_hex(32)
    token = grant_token(grant_id)
    with call.store.meta.write() as conn:
        conn.execute("INSERT INTO grants VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                     (grant_id, record.region, record.key_id, name, grantee, retiring, json.dumps(operations),
                      json.dumps(constraints) if constraints else None, token,
                      f"arn:aws:iam::{call.principal.split(':')[4]}:root", call.now_ts()))
    return {"GrantToken": token, "GrantId": grant_id}


def grant_entry(grant, account: str) -> dict:
    entry = {"KeyId": f"arn:aws:kms:{grant.region}:{account}:key/{grant.key_id}", "GrantId": grant.grant_id,
             "CreationDate": to_datetime(grant.created), "GranteePrincipal": grant.grantee,
             "IssuingAccount": grant.issuer, "Operations": list(grant.operations)}
    if grant.name:
        entry["Name"] = grant.name
    if grant.retiring:
        entry["RetiringPrincipal"] = grant.retiring
    if grant.constraints:
        entry["Constraints"] = grant.constraints
    return entry


@operation("ListGrants", required=("KeyId",), optional=("Limit", "Marker", "GrantId", "GranteePrincipal"))
def list_grants(call: Call) -> dict:
    record = call.key(allow_alias=False, state=ANY).record
    grants = [grant for grant in call.store.meta.grants(record.region, record.key_id)
              if call.params.get("GrantId", grant.grant_id) == grant.grant_id
              and call.params.get("GranteePrincipal", grant.grantee) == grant.grantee]
    chunk, extra = page(grants, call.params, lambda grant: grant.grant_id)
    return {"Grants": [grant_entry(grant, call.account) for grant in chunk], **extra}


@operation("ListRetirableGrants", required=("RetiringPrincipal",), optional=("Limit", "Marker"))
def list_retirable_grants(call: Call) -> dict:
    principal = check.principal("RetiringPrincipal", call.params["RetiringPrincipal"])
    call.authorize_identity()
    grants = [grant for grant in call.store.meta.grants(call.region) if grant.retiring == principal]
    chunk, extra = page(grants, call.params, lambda grant: grant.grant_id)
    return {"Grants": [grant_entry(grant, call.account) for grant in chunk], **extra}


def find_grant(call: Call, key_id: str | None, grant_id: str):
    if not _GRANT_ID.match(grant_id):
        raise KMSError("InvalidGrantIdException", f"GrantId {grant_id!r} is not a valid grant id")
    for grant in call.store.meta.grants(call.region, key_id):
        if grant.grant_id == grant_id:
            call.resources.append(f"arn:aws:kms:{grant.region}:{call.account}:key/{grant.key_id}")
            return grant
    raise KMSError("NotFoundException", f"Grant {grant_id} does not exist")


def _delete_grant(call: Call, grant) -> None:
    with call.store.meta.write() as conn:
        conn.execute("DELETE FROM grants WHERE grant_id = ?", (grant.grant_id,))


@operation("RetireGrant", optional=("GrantToken", "KeyId", "GrantId", "DryRun"))
def retire_grant(call: Call) -> dict:
    """Who may retire (as AWS): the grant's retiring principal, its grantee when the grant includes
    RetireGrant, the root of the account that owns the key, or a caller whose policies allow
    kms:RetireGrant on the key."""
    if "GrantToken" in call.params:
        grant = find_grant(call, None, grant_id_of_token(call.params["GrantToken"]))
    elif "KeyId" in call.params and "GrantId" in call.params:
        key_id = call.key(allow_alias=False, state=ANY, authorize=False).record.key_id
        grant = find_grant(call, key_id, call.params["GrantId"])
    else:
        raise check.validation_error("RetireGrant needs a GrantToken, or both KeyId and GrantId")
    may_retire = (call.principal == grant.retiring
                  or (call.principal == grant.grantee and "RetireGrant" in grant.operations)
                  or call.principal == f"arn:aws:iam::{call.account}:root")
    if not may_retire:
        call.authorize(call.store.view(grant.region, grant.key_id))
    call.act()
    _delete_grant(call, grant)
    return {}


@operation("RevokeGrant", required=("KeyId", "GrantId"), optional=("DryRun",))
def revoke_grant(call: Call) -> dict:
    key_id = call.key(allow_alias=False, state=ANY).record.key_id
    grant = find_grant(call, key_id, call.params["GrantId"])
    call.act()
    _delete_grant(call, grant)
    return {}
