"""Rotation and multi-Region operations: both add or copy material across tokens.

A multi-Region key's primary and replicas share id, material, spec, usage and rotation; each
keeps its own policy, tags, aliases, grants, description and state. Rotation is configured on the
primary and every new material version is copied to every replica at once, so a blob made
anywhere decrypts everywhere.
"""

from __future__ import annotations

from kmsplan.errors import KMSError
from kmsplan.policy import KeyFacts
from kmsplan.store import params as check
from kmsplan.store.calls import ANY, CRYPTO, MANAGE, Call, operation, page
from kmsplan.store.db import KeyRecord, insert_key
from kmsplan.store.keystore import DAY, to_datetime
from kmsplan.store.ops_keys import checked_policy, checked_tags, default_policy, key_metadata

MAX_ON_DEMAND_ROTATIONS = 25


def _rotatable(record: KeyRecord, *, for_change: bool = True) -> None:
    if record.spec != "SYMMETRIC_DEFAULT":
        raise KMSError("UnsupportedOperationException",
                       f"{record.arn} is a {record.spec} key: only symmetric encryption keys support rotation")
    if for_change and record.mr_type == "REPLICA":
        raise KMSError("UnsupportedOperationException",
                       f"{record.arn} is a multi-Region replica: manage rotation on its primary key in "
                       f"{record.primary_region}")


@operation("EnableKeyRotation", required=("KeyId",), optional=("RotationPeriodInDays",))
def enable_key_rotation(call: Call) -> dict:
    period = check.in_range("RotationPeriodInDays", call.params.get("RotationPeriodInDays", 365), 90, 2560)
    record = call.key(allow_alias=False, state=CRYPTO).record
    _rotatable(record)
    if record.rotation_enabled and record.rotation_period:
        # A new period counts from the last rotation (or from when rotation was enabled), as AWS does.
        anchor = record.next_rotation - record.rotation_period * DAY
    else:
        anchor = call.now_ts()
    with call.store.meta.write() as conn:
        conn.execute("UPDATE keys SET rotation_enabled = 1, rotation_period = ?, next_rotation = ? WHERE key_id = ?",
                     (period, anchor + period * DAY, record.key_id))
    return {}


@operation("DisableKeyRotation", required=("KeyId",))
def disable_key_rotation(call: Call) -> dict:
    record = call.key(allow_alias=False, state=CRYPTO).record
    _rotatable(record)
    with call.store.meta.write() as conn:
        conn.execute("UPDATE keys SET rotation_enabled = 0, next_rotation = NULL WHERE key_id = ?", (record.key_id,))
    return {}


@operation("GetKeyRotationStatus", required=("KeyId",))
def get_key_rotation_status(call: Call) -> dict:
    record = call.key(allow_alias=False, state=ANY).record
    _rotatable(record, for_change=False)
    response = {"KeyRotationEnabled": record.rotation_enabled, "KeyId": record.arn}
    if record.rotation_enabled:
        response["RotationPeriodInDays"] = record.rotation_period
        response["NextRotationDate"] = to_datetime(record.next_rotation)
    on_demand = [created for created, kind in call.store.rotation_dates(record) if kind == "ON_DEMAND"]
    if on_demand:
        response["OnDemandRotationStartDate"] = to_datetime(on_demand[-1])
    return response


@operation("RotateKeyOnDemand", required=("KeyId",))
def rotate_key_on_demand(call: Call) -> dict:
    record = call.key(allow_alias=False, state=CRYPTO).record
    _rotatable(record)
    done = [kind for _, kind in call.store.rotation_dates(record) if kind == "ON_DEMAND"]
    if len(done) >= MAX_ON_DEMAND_ROTATIONS:
        raise KMSError("LimitExceededException",
                       f"{record.arn} has been rotated on demand {len(done)} times; the limit is "
                       f"{MAX_ON_DEMAND_ROTATIONS}")
    call.store.rotate(record, "ON_DEMAND", call.now_ts())
    return {"KeyId": record.key_id}


@operation("ListKeyRotations", required=("KeyId",), optional=("Limit", "Marker", "IncludeKeyMaterial"))
def list_key_rotations(call: Call) -> dict:
    record = call.key(allow_alias=False, state=ANY).record
    _rotatable(record, for_change=False)
    # The material version is the marker: unique, unlike rotation dates (rotations can share one).
    rotations = [(version, when, kind) for version, when, kind in
                 call.store.meta.materials(record.region, record.key_id) if kind]
    chunk, extra = page(rotations, call.params, lambda item: str(item[0]))
    return {"Rotations": [{"KeyId": record.key_id, "RotationDate": to_datetime(when), "RotationType": kind}
                          for _, when, kind in chunk], **extra}


@operation("ReplicateKey", required=("KeyId", "ReplicaRegion"),
           optional=("Policy", "BypassPolicyLockoutSafetyCheck", "Description", "Tags"))
def replicate_key(call: Call) -> dict:
    target = call.params["ReplicaRegion"]
    record = call.key(allow_alias=False).record
    if not record.multi_region or record.mr_type != "PRIMARY":
        raise KMSError("UnsupportedOperationException",
                       f"{record.arn} is not a multi-Region primary key: only primary keys can be replicated")
    if target not in call.store.tokens:
        raise check.validation_error(f"ReplicaRegion {target!r} is not a region of this store "
                                     f"({', '.join(call.store.config.regions)})")
    if target == record.region:
        raise check.validation_error(f"ReplicaRegion {target} is the primary key's own region")
    if call.store.meta.key(target, record.key_id):
        raise KMSError("AlreadyExistsException", f"{record.key_id} already has a replica in {target}")
    description = call.params.get("Description", "")
    check.length("Description", description, 0, 8192)
    facts = call.store.authz.facts(call.store.view(record.region, record.key_id))[0]
    replica_facts = KeyFacts(**{**facts.__dict__, "arn": record.arn.replace(f":{record.region}:", f":{target}:"),
                                "region": target, "multi_region_type": "REPLICA", "aliases": (), "tags": {}})
    call.authorize_identity(KeyFacts(**{**replica_facts.__dict__, "arn": "*", "key_id": "*"}), "kms:CreateKey")
    policy = default_policy(call.account)
    if "Policy" in call.params:
        policy = checked_policy(call.params["Policy"])
        call.store.authz.check_new_policy(call.caller, policy, replica_facts,
                                          call.params.get("BypassPolicyLockoutSafetyCheck", False))
    tags = checked_tags(call)
    replica = KeyRecord(**{**record.__dict__, "region": target, "description": description, "state": "Enabled",
                           "created": call.now_ts(), "mr_type": "REPLICA", "policy": policy,
                           "deletion_date": None, "pending_window": None})
    versions = [row[0] for row in call.store.meta.materials(record.region, record.key_id)]

    def commit(conn, _result: object) -> None:
        insert_key(conn, replica)
        conn.executemany("INSERT INTO materials (region, key_id, version, created, rotation_type) VALUES (?,?,?,?,?)",
                         [(target, record.key_id, version, created, kind) for version, created, kind
                          in call.store.meta.materials(record.region, record.key_id)])
        conn.executemany("INSERT INTO tags VALUES (?, ?, ?, ?)", [(target, record.key_id, k, v) for k, v in tags.items()])

    call.store.copy_material(record, versions, record.region, target, commit)
    call.resources.append(replica.arn)
    return {
        "ReplicaKeyMetadata": key_metadata(call.store, call.store.meta.key(target, record.key_id)),
        "ReplicaPolicy": policy,
        "ReplicaTags": [{"TagKey": k, "TagValue": v} for k, v in sorted(tags.items())],
    }


@operation("UpdatePrimaryRegion", required=("KeyId", "PrimaryRegion"))
def update_primary_region(call: Call) -> dict:
    target = call.params["PrimaryRegion"]
    record = call.key(allow_alias=False, state=MANAGE).record
    if record.mr_type != "PRIMARY":
        raise KMSError("UnsupportedOperationException",
                       f"{record.arn} is not a multi-Region primary key; call UpdatePrimaryRegion in the primary "
                       f"key's region ({record.primary_region})" if record.multi_region else
                       f"{record.arn} is not a multi-Region key")
    if target not in call.store.tokens:
        raise check.validation_error(f"PrimaryRegion {target!r} is not a region of this store")
    replica = call.store.meta.key(target, record.key_id)
    if replica is None:
        raise KMSError("NotFoundException", f"{record.key_id} has no replica in {target}: replicate it there first")
    call.resources.append(replica.arn)
    call.authorize(call.store.view(target, record.key_id))
    if replica.state in ("PendingDeletion", "PendingReplicaDeletion"):
        raise KMSError("KMSInvalidStateException", f"{replica.arn} is pending deletion.")
    if target == record.region:
        return {}
    with call.store.meta.write() as conn:
        conn.execute("UPDATE keys SET mr_type = 'REPLICA', primary_region = ? WHERE key_id = ?", (target, record.key_id))
        conn.execute("UPDATE keys SET mr_type = 'PRIMARY' WHERE key_id = ? AND region = ?", (record.key_id, target))
    return {}
