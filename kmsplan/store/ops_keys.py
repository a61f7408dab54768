"""Key lifecycle operations: create, describe, list, enable/disable, describe, deletion, policies."""

from __future__ import annotations

import json
import secrets
import uuid
from functools import lru_cache

from kmsplan.errors import KMSError
from kmsplan.policy import KeyFacts
from kmsplan.store import params as check
from kmsplan.store.calls import ANY, PENDING, Call, operation, page_limit
from kmsplan.store.db import KeyRecord, insert_key
from kmsplan.store.keystore import KeyStore, to_datetime
from kmsplan.store.specs import (
    ENCRYPT_DECRYPT,
    KEY_SPECS,
    encryption_algorithms,
    mac_algorithms,
    signing_algorithms,
)

MAX_POLICY_BYTES = 32768
MAX_TAGS = 50


@lru_cache(maxsize=16)
def default_policy(account: str) -> str:
    """The key policy AWS KMS gives a key created without one: the account delegates to IAM."""
    return json.dumps({
        "Version": "2012-10-17",
        "Id": "key-default-1",
        "Statement": [{
            "Sid": "Enable IAM User Permissions",
            "Effect": "Allow",
            "Principal": {"AWS": f"arn:aws:iam::{account}:root"},
            "Action": "kms:*",
            "Resource": "*",
        }],
    }, indent=2)


def checked_policy(text: str) -> str:
    """Size and JSON checks every key policy gets (the policy grammar is the policy module's)."""
    if len(text.encode()) > MAX_POLICY_BYTES:
        raise KMSError("LimitExceededException",
                       f"The key policy is {len(text.encode())} bytes; the limit is {MAX_POLICY_BYTES} bytes")
    try:
        document = json.loads(text)
    except ValueError as error:
        raise KMSError("MalformedPolicyDocumentException",
                       f"The key policy is not valid JSON: {error.msg} at line {error.lineno} column {error.colno}")
    if not isinstance(document, dict) or "Statement" not in document:
        raise KMSError("MalformedPolicyDocumentException", "The key policy must be a JSON object with a Statement")
    return text


def key_metadata(store: KeyStore, record: KeyRecord) -> dict:
    """DescribeKey's KeyMetadata for one record, with the multi-Region configuration."""
    metadata = {
        "AWSAccountId": record.account,
        "KeyId": record.key_id,
        "Arn": record.arn,
        "CreationDate": to_datetime(record.created),
        "Enabled": record.state == "Enabled",
        "Description": record.description,
        "KeyUsage": record.usage,
        "KeyState": record.state,
        "Origin": record.origin,
        "KeyManager": "CUSTOMER",
        "CustomerMasterKeySpec": record.spec,
        "KeySpec": record.spec,
        "MultiRegion": record.multi_region,
    }
    if record.deletion_date is not None:
        metadata["DeletionDate"] = to_datetime(record.deletion_date)
    if record.state in ("PendingDeletion", "PendingReplicaDeletion") and record.pending_window:
        metadata["PendingDeletionWindowInDays"] = record.pending_window
    for name, values in (("EncryptionAlgorithms", encryption_algorithms(record.spec, record.usage)),
                         ("SigningAlgorithms", signing_algorithms(record.spec, record.usage)),
                         ("MacAlgorithms", mac_algorithms(record.spec))):
        if values:
            metadata[name] = values
    if record.multi_region:
        rows = store.meta.regions_of(record.key_id)
        primary = next(row for row in rows if row.mr_type == "PRIMARY")
        metadata["MultiRegionConfiguration"] = {
            "MultiRegionKeyType": record.mr_type,
            "PrimaryKey": {"Arn": primary.arn, "Region": primary.region},
            "ReplicaKeys": [{"Arn": row.arn, "Region": row.region} for row in rows if row.mr_type == "REPLICA"],
        }
    return metadata


def checked_tags(call: Call, existing: int = 0) -> dict[str, str]:
    tags = check.tags(call.params.get("Tags", []))
    if existing + len(tags) > MAX_TAGS:
        raise KMSError("LimitExceededException", f"A key can have at most {MAX_TAGS} tags")
    return tags


def _spec_and_usage(call: Call) -> tuple[str, str]:
    spec = call.params.get("KeySpec") or call.params.get("CustomerMasterKeySpec") or "SYMMETRIC_DEFAULT"
    check.one_of("KeySpec", spec, KEY_SPECS)
    usage = check.one_of("KeyUsage", call.params.get("KeyUsage", ENCRYPT_DECRYPT),
                         ("ENCRYPT_DECRYPT", "SIGN_VERIFY", "GENERATE_VERIFY_MAC", "KEY_AGREEMENT"))
    if usage not in KEY_SPECS[spec].usages:
        raise check.validation_error(
            f"KeyUsage {usage} is not compatible with KeySpec {spec}; valid: {', '.join(KEY_SPECS[spec].usages)}")
    return spec, usage


@operation("CreateKey", optional=("Policy", "Description", "KeyUsage", "CustomerMasterKeySpec", "KeySpec", "Origin",
                                  "BypassPolicyLockoutSafetyCheck", "Tags", "MultiRegion"))
def create_key(call: Call) -> dict:
    spec, usage = _spec_and_usage(call)
    origin = call.params.get("Origin", "AWS_KMS")
    check.one_of("Origin", origin, ("AWS_KMS", "EXTERNAL", "AWS_CLOUDHSM", "EXTERNAL_KEY_STORE"))
    if origin != "AWS_KMS":
        raise KMSError("UnsupportedOperationException", f"Origin {origin} is not supported by this store")
    description = call.params.get("Description", "")
    check.length("Description", description, 0, 8192)
    multi_region = call.params.get("MultiRegion", False)
    key_id = f"mrk-{secrets.token_hex(16)}" if multi_region else str(uuid.uuid4())
    facts = KeyFacts(arn=f"arn:aws:kms:{call.region}:{call.account}:key/{key_id}", key_id=key_id,
                     account=call.account, region=call.region, spec=spec, usage=usage, origin=origin,
                     multi_region=multi_region, multi_region_type="PRIMARY" if multi_region else None)
    call.authorize_identity(KeyFacts(**{**facts.__dict__, "arn": "*", "key_id": "*"}))
    policy = default_policy(call.account)
    if "Policy" in call.params:
        policy = checked_policy(call.params["Policy"])
        call.store.authz.check_new_policy(call.caller, policy, facts,
                                          call.params.get("BypassPolicyLockoutSafetyCheck", False))
    tags = checked_tags(call)
    now = call.now_ts()
    record = KeyRecord(
        region=call.region, key_id=key_id, account=call.account, spec=spec, usage=usage, origin=origin,
        description=description, state="Enabled", created=now, deletion_date=None, pending_window=None,
        multi_region=multi_region, mr_type="PRIMARY" if multi_region else None,
        primary_region=call.region if multi_region else None, rotation_enabled=False, rotation_period=None,
        next_rotation=None, policy=policy, public_key=None,
    )
    call.resources.append(record.arn)

    def commit(conn, public: bytes | None) -> None:
        insert_key(conn, KeyRecord(**{**record.__dict__, "public_key": public}))
        conn.executemany("INSERT INTO tags VALUES (?, ?, ?, ?)",
                         [(call.region, key_id, k, v) for k, v in tags.items()])

    call.store.create_material(record, 1, [], None, now, commit)
    return {"KeyMetadata": key_metadata(call.store, call.store.meta.key(call.region, key_id))}


@operation("DescribeKey", required=("KeyId",), optional=("GrantTokens",))
def describe_key(call: Call) -> dict:
    return {"KeyMetadata": key_metadata(call.store, call.key(state=ANY).record)}


@operation("ListKeys", optional=("Limit", "Marker"))
def list_keys(call: Call) -> dict:
    call.authorize_identity()
    limit = page_limit(call.params)
    marker = call.params.get("Marker")
    key_ids = call.store.meta.key_ids_from(call.region, marker or "", limit + 1)
    if marker is not None and key_ids[:1] != [marker]:
        raise KMSError("InvalidMarkerException", "The request was rejected because the marker is not valid")
    extra: dict = {"Truncated": len(key_ids) > limit}
    if len(key_ids) > limit:
        extra["NextMarker"] = key_ids[limit]
    arn = f"arn:aws:kms:{call.region}:{call.account}:key/"
    return {"Keys": [{"KeyId": key_id, "KeyArn": arn + key_id} for key_id in key_ids[:limit]], **extra}


def _set_state(call: Call, state: str) -> dict:
    record = call.key(allow_alias=False).record
    with call.store.meta.write() as conn:
        conn.execute("UPDATE keys SET state = ? WHERE region = ? AND key_id = ?", (state, record.region, record.key_id))
    return {}


@operation("EnableKey", required=("KeyId",))
def enable_key(call: Call) -> dict:
    return _set_state(call, "Enabled")


@operation("DisableKey", required=("KeyId",))
def disable_key(call: Call) -> dict:
    return _set_state(call, "Disabled")


@operation("UpdateKeyDescription", required=("KeyId", "Description"))
def update_key_description(call: Call) -> dict:
    check.length("Description", call.params["Description"], 0, 8192)
    record = call.key(allow_alias=False).record
    with call.store.meta.write() as conn:
        conn.execute("UPDATE keys SET description = ? WHERE region = ? AND key_id = ?",
                     (call.params["Description"], record.region, record.key_id))
    return {}


@operation("ScheduleKeyDeletion", required=("KeyId",), optional=("PendingWindowInDays",))
def schedule_key_deletion(call: Call) -> dict:
    window = check.in_range("PendingWindowInDays", call.params.get("PendingWindowInDays", 30), 7, 30)
    record = call.key(allow_alias=False).record
    replicas = [row for row in call.store.meta.regions_of(record.key_id) if row.mr_type == "REPLICA"]
    waits_for_replicas = record.mr_type == "PRIMARY" and bool(replicas)
    state = "PendingReplicaDeletion" if waits_for_replicas else "PendingDeletion"
    deletion_date = None if waits_for_replicas else call.store.deletion_date_for(window)
    with call.store.meta.write() as conn:
        conn.execute("UPDATE keys SET state = ?, deletion_date = ?, pending_window = ? WHERE region = ? AND key_id = ?",
                     (state, deletion_date, window, record.region, record.key_id))
    response = {"KeyId": record.arn, "KeyState": state, "PendingWindowInDays": window}
    if deletion_date is not None:
        response["DeletionDate"] = to_datetime(deletion_date)
    return response


@operation("CancelKeyDeletion", required=("KeyId",))
def cancel_key_deletion(call: Call) -> dict:
    record = call.key(allow_alias=False, state=PENDING).record
    with call.store.meta.write() as conn:
        conn.execute("UPDATE keys SET state = 'Disabled', deletion_date = NULL, pending_window = NULL "
                     "WHERE region = ? AND key_id = ?", (record.region, record.key_id))
    return {"KeyId": record.arn}


def _policy_name(call: Call) -> None:
    if call.params.get("PolicyName", "default") != "default":
        raise KMSError("NotFoundException", f"No such key policy {call.params['PolicyName']!r}: the only key policy "
                                            "name is 'default'")


@operation("PutKeyPolicy", required=("KeyId", "Policy"), optional=("PolicyName", "BypassPolicyLockoutSafetyCheck"))
def put_key_policy(call: Call) -> dict:
    _policy_name(call)
    policy = checked_policy(call.params["Policy"])
    view = call.key(allow_alias=False, state=ANY)  # AWS's key-state table: allowed in every state
    record = view.record
    call.store.authz.check_new_policy(call.caller, policy, call.store.authz.facts(view)[0],
                                      call.params.get("BypassPolicyLockoutSafetyCheck", False))
    with call.store.meta.write() as conn:
        conn.execute("UPDATE keys SET policy = ? WHERE region = ? AND key_id = ?", (policy, record.region, record.key_id))
    return {}


@operation("GetKeyPolicy", required=("KeyId",), optional=("PolicyName",))
def get_key_policy(call: Call) -> dict:
    _policy_name(call)
    return {"Policy": call.key(allow_alias=False, state=ANY).record.policy, "PolicyName": "default"}


@operation("ListKeyPolicies", required=("KeyId",), optional=("Limit", "Marker"))
def list_key_policies(call: Call) -> dict:
    call.key(allow_alias=False, state=ANY)
    return {"PolicyNames": ["default"], "Truncated": False}

