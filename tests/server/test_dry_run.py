"""DryRun over the network: boto3's `DryRun=True` arrives as a JSON boolean and comes back as
botocore's modelled DryRunOperationException (a ClientError, HTTP 400), or as the error the
request would meet; nothing changes, and the store audits it. (The semantics, operation by
operation, are tested in tests/store/test_store_dry_run.py.)"""

from __future__ import annotations

import json
import uuid

import pytest
from botocore.exceptions import ClientError
from server_helpers import APP


def test_dry_run_through_boto3(served, kms):
    key_id = kms.create_key(Description=f"dry run {uuid.uuid4().hex[:8]}")["KeyMetadata"]["KeyId"]
    audited = served.audit_count()

    with pytest.raises(kms.exceptions.DryRunOperationException) as caught:
        kms.encrypt(KeyId=key_id, Plaintext=b"not encrypted", DryRun=True)
    assert isinstance(caught.value, ClientError)
    response = caught.value.response
    assert response["Error"]["Code"] == "DryRunOperationException"
    assert "DryRun" in response["Error"]["Message"]
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 400
    with pytest.raises(ClientError) as caught:
        kms.create_grant(KeyId=key_id, GranteePrincipal=APP, Operations=["Decrypt"], DryRun=True)
    assert caught.value.response["Error"]["Code"] == "DryRunOperationException"
    assert kms.list_grants(KeyId=key_id)["Grants"] == []

    # the app role may encrypt but not create grants: a dry run says so
    app = served.client(served.keys["app"])
    with pytest.raises(app.exceptions.DryRunOperationException):
        app.encrypt(KeyId=key_id, Plaintext=b"x", DryRun=True)
    with pytest.raises(ClientError) as caught:
        app.create_grant(KeyId=key_id, GranteePrincipal=APP, Operations=["Decrypt"], DryRun=True)
    assert caught.value.response["Error"]["Code"] == "AccessDeniedException"

    records = [json.loads(line) for line in (served.store / "audit.log").read_bytes().splitlines()[audited:]]
    assert [(r["eventName"], r.get("errorCode")) for r in records] == [
        ("Encrypt", "DryRunOperationException"), ("CreateGrant", "DryRunOperationException"), ("ListGrants", None),
        ("Encrypt", "DryRunOperationException"), ("CreateGrant", "AccessDeniedException")]

    blob = kms.encrypt(KeyId=key_id, Plaintext=b"secret", DryRun=False)["CiphertextBlob"]
    assert kms.decrypt(CiphertextBlob=blob, DryRun=False)["Plaintext"] == b"secret"
