"""The clients people already use, unchanged, against `kmsplan serve`: the AWS CLI (as a
subprocess, configured only through its environment and --endpoint-url) and the AWS Encryption
SDK for Python (a KMS master key provider whose botocore session points at the server)."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import aws_encryption_sdk
import botocore.session
import pytest
from aws_encryption_sdk import CommitmentPolicy
from aws_encryption_sdk.caches.local import LocalCryptoMaterialsCache
from aws_encryption_sdk.key_providers.kms import StrictAwsKmsMasterKeyProvider
from aws_encryption_sdk.materials_managers.caching import CachingCryptoMaterialsManager
from server_helpers import AWAY, HOME


def aws(served, tmp_path: Path, *args: str, region: str = HOME) -> subprocess.CompletedProcess:
    config = tmp_path / "aws-config"
    config.write_text("")
    key = served.keys["root"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_ACCESS_KEY_ID=key.access_key_id, AWS_SECRET_ACCESS_KEY=key.secret, AWS_DEFAULT_REGION=region,
               AWS_CONFIG_FILE=str(config), AWS_SHARED_CREDENTIALS_FILE=str(config), AWS_MAX_ATTEMPTS="1")
    return subprocess.run([sys.executable, "-m", "awscli", "kms", *args, "--endpoint-url", served.url,
                           "--output", "json"], capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)


def ok(result: subprocess.CompletedProcess) -> dict:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout) if result.stdout.strip() else {}


def test_aws_cli_data_key_round_trip_and_wrong_context(served, kms, tmp_path):
    key_id = kms.create_key(Description="aws cli")["KeyMetadata"]["KeyId"]
    data_key = ok(aws(served, tmp_path, "generate-data-key", "--key-id", key_id, "--key-spec", "AES_256",
                      "--encryption-context", "tenant=acme,stage=test"))
    plaintext = base64.b64decode(data_key["Plaintext"])
    assert len(plaintext) == 32
    (tmp_path / "blob").write_bytes(base64.b64decode(data_key["CiphertextBlob"]))
    decrypted = ok(aws(served, tmp_path, "decrypt", "--ciphertext-blob", "fileb://blob", "--encryption-context",
                       "tenant=acme,stage=test"))
    assert base64.b64decode(decrypted["Plaintext"]) == plaintext
    assert decrypted["KeyId"].endswith(key_id)
    refused = aws(served, tmp_path, "decrypt", "--ciphertext-blob", "fileb://blob", "--encryption-context",
                  "tenant=other")
    assert refused.returncode != 0
    assert "InvalidCiphertextException" in refused.stderr and "Traceback" not in refused.stderr


def test_aws_cli_describe_key_shows_the_multi_region_configuration(served, kms, tmp_path):
    key_id = kms.create_key(Description="aws cli mrk", MultiRegion=True)["KeyMetadata"]["KeyId"]
    kms.replicate_key(KeyId=key_id, ReplicaRegion=AWAY)
    described = ok(aws(served, tmp_path, "describe-key", "--key-id", key_id))["KeyMetadata"]
    config = described["MultiRegionConfiguration"]
    assert described["MultiRegion"] is True and config["MultiRegionKeyType"] == "PRIMARY"
    assert config["PrimaryKey"]["Region"] == HOME
    assert [replica["Region"] for replica in config["ReplicaKeys"]] == [AWAY]
    replica = ok(aws(served, tmp_path, "describe-key", "--key-id", key_id, region=AWAY))["KeyMetadata"]
    assert replica["MultiRegionConfiguration"]["MultiRegionKeyType"] == "REPLICA"
    assert isinstance(described["CreationDate"], float)  # AWS CLI v1 shows the wire's epoch seconds


def test_aws_cli_get_key_rotation_status(served, kms, tmp_path):
    key_id = kms.create_key(Description="aws cli rotation")["KeyMetadata"]["KeyId"]
    assert ok(aws(served, tmp_path, "get-key-rotation-status", "--key-id", key_id))["KeyRotationEnabled"] is False
    kms.enable_key_rotation(KeyId=key_id, RotationPeriodInDays=180)
    status = ok(aws(served, tmp_path, "get-key-rotation-status", "--key-id", key_id))
    assert status["KeyRotationEnabled"] is True and status["RotationPeriodInDays"] == 180


def botocore_session_for(served, tmp_path: Path) -> botocore.session.Session:
    """A botocore session whose KMS clients reach `served`: the endpoint comes from the profile's
    `endpoint_url` (botocore's configured endpoints), credentials are set on the session."""
    config = tmp_path / "esdk-config"
    config.write_text(f"[profile kmsplan]\nregion = {HOME}\nendpoint_url = {served.url}\n")
    session = botocore.session.Session()
    session.set_config_variable("config_file", str(config))
    session.set_config_variable("profile", "kmsplan")
    key = served.keys["root"]
    session.set_credentials(key.access_key_id, key.secret)
    return session


@pytest.fixture
def esdk(served, kms, tmp_path):
    arn = kms.create_key(Description="encryption sdk")["KeyMetadata"]["Arn"]
    provider = StrictAwsKmsMasterKeyProvider(key_ids=[arn], botocore_session=botocore_session_for(served, tmp_path))
    client = aws_encryption_sdk.EncryptionSDKClient(commitment_policy=CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT)
    return client, provider, arn


def test_encryption_sdk_one_mib_message(served, esdk):
    client, provider, arn = esdk
    message = os.urandom(1024 * 1024)
    before = served.audit_count()
    sealed, header = client.encrypt(source=message, key_provider=provider, encryption_context={"tenant": "acme"})
    assert [key.key_provider.key_info for key in header.encrypted_data_keys] == [arn.encode()]
    opened, decrypt_header = client.decrypt(source=sealed, key_provider=provider)
    assert opened == message and decrypt_header.encryption_context["tenant"] == "acme"
    audited = [json.loads(line)["eventName"] for line in
               (served.store / "audit.log").read_text().splitlines()[before:]]
    assert "GenerateDataKey" in audited and "Decrypt" in audited


def test_encryption_sdk_with_the_caching_materials_manager(served, esdk):
    client, provider, _ = esdk
    cache = LocalCryptoMaterialsCache(capacity=10)
    manager = CachingCryptoMaterialsManager(master_key_provider=provider, cache=cache, max_age=300.0,
                                            max_messages_encrypted=10)
    before = served.audit_count()
    messages = [os.urandom(1024 * 1024) for _ in range(3)]
    sealed = [client.encrypt(source=m, materials_manager=manager, encryption_context={"n": "1"})[0] for m in messages]
    data_keys = [json.loads(line)["eventName"] for line in
                 (served.store / "audit.log").read_text().splitlines()[before:]].count("GenerateDataKey")
    assert data_keys == 1, "the cache reuses one data key for all three messages"
    for message, blob in zip(messages, sealed):
        assert client.decrypt(source=blob, materials_manager=manager)[0] == message
