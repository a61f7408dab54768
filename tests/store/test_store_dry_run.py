"""DryRun, as AWS KMS defines it: a request with DryRun=true runs every check the operation makes
(parameters, key lookup, authorization, key state, key usage and algorithms) and then, instead of
the operation, fails with DryRunOperationException; a check that fails returns its own error. A dry
run never uses the token and changes nothing, and it is audited like any refused call.

What only the operation itself can find out, a dry run cannot: a wrong encryption context or an
altered blob (only the decryption in the token tells), an invalid signature or MAC (only the
verification tells), and ReEncrypt's plaintext being too long for an RSA destination (only the
decryption knows its length). Those dry runs report DryRunOperationException.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from kms_support import audit_offset, audit_since, kms_error, list_all, shared_key, snapshot

from kmsplan.policy import parse_policy
from kmsplan.store import client as _registered  # noqa: F401  (fills OPERATIONS)
from kmsplan.store import ops_crypto
from kmsplan.store.calls import OPERATIONS
from kmsplan.store.principals import PrincipalEntry

ROOT = "arn:aws:iam::111122223333:root"
APP = "arn:aws:iam::111122223333:role/dry-run-app"
GRANTEE = "arn:aws:iam::111122223333:role/dry-run-grantee"
CONTEXT = {"tenant": "acme"}
MESSAGE = b"a message to sign"
DRY_RUN_OPERATIONS = {name for name, operation in OPERATIONS.items() if "DryRun" in operation.allowed}

# Token methods that are the operation itself (generating or destroying key material for due
# rotations and deletions is housekeeping of the store, not of the request, and is not listed).
TOKEN_OPERATIONS = {"random", "encrypt_gcm", "decrypt_gcm", "rsa_decrypt_oaep", "sign_digest", "verify_digest",
                    "mac", "verify_mac"}


@dataclass
class World:
    """A fresh symmetric key with a blob and a grant on it, a second one, and the shared RSA,
    ECC and HMAC keys with a ciphertext, a signature and a MAC made by them."""

    kms: object
    key: str
    other: str
    blob: bytes
    grant_id: str
    grant_token: str
    rsa: str
    rsa_blob: bytes
    ecc: str
    signature: bytes
    hmac: str
    mac: bytes


@pytest.fixture
def world(store, kms) -> World:
    key = kms.create_key(Description="dry run subject")["KeyMetadata"]["KeyId"]
    other = kms.create_key(Description="dry run destination")["KeyMetadata"]["KeyId"]
    grant = kms.create_grant(KeyId=key, GranteePrincipal=GRANTEE, Operations=["Decrypt", "RetireGrant"],
                             Name="dry-run")
    rsa = shared_key(store, "RSA_2048", "ENCRYPT_DECRYPT")
    ecc = shared_key(store, "ECC_NIST_P256", "SIGN_VERIFY")
    hmac = shared_key(store, "HMAC_256", "GENERATE_VERIFY_MAC")
    return World(
        kms, key, other,
        kms.encrypt(KeyId=key, Plaintext=b"secret", EncryptionContext=CONTEXT)["CiphertextBlob"],
        grant["GrantId"], grant["GrantToken"],
        rsa, kms.encrypt(KeyId=rsa, Plaintext=b"secret", EncryptionAlgorithm="RSAES_OAEP_SHA_256")["CiphertextBlob"],
        ecc, kms.sign(KeyId=ecc, Message=MESSAGE, SigningAlgorithm="ECDSA_SHA_256")["Signature"],
        hmac, kms.generate_mac(KeyId=hmac, Message=MESSAGE, MacAlgorithm="HMAC_SHA_256")["Mac"],
    )


class Spy:
    """Records every use of the token's cryptographic operations and of the host-side ones
    (public-key encryption, data key pair generation), letting each through."""

    def __init__(self, store, monkeypatch: pytest.MonkeyPatch) -> None:
        self.used: list[str] = []
        token_for = store.token_for
        spy = self

        class Token:
            def __init__(self, token) -> None:
                self._token = token

            def __getattr__(self, name: str):
                if name in TOKEN_OPERATIONS:
                    spy.used.append(name)
                return getattr(self._token, name)

        monkeypatch.setattr(store, "token_for", lambda region: Token(token_for(region)))
        for module, name in ((ops_crypto, "_public_key"), (ops_crypto.rsa, "generate_private_key"),
                             (ops_crypto.ec, "generate_private_key")):
            monkeypatch.setattr(module, name, self._recording(name, getattr(module, name)))

    def _recording(self, name: str, function: Callable) -> Callable:
        def recorded(*args, **kwargs):
            self.used.append(name)
            return function(*args, **kwargs)

        return recorded


@pytest.fixture
def spy(store, monkeypatch, world) -> Spy:
    return Spy(store, monkeypatch)  # after `world` is made


def operation_of(case: str) -> str:
    return case.split("-")[0]


# Requests the root may make: each would succeed. `o` carries DryRun (or nothing).
ALLOWED: dict[str, Callable[..., dict]] = {
    "Encrypt": lambda w, **o: w.kms.encrypt(KeyId=w.key, Plaintext=b"secret", EncryptionContext=CONTEXT, **o),
    "Encrypt-rsa": lambda w, **o: w.kms.encrypt(KeyId=w.rsa, Plaintext=b"secret",
                                                EncryptionAlgorithm="RSAES_OAEP_SHA_256", **o),
    "Decrypt": lambda w, **o: w.kms.decrypt(CiphertextBlob=w.blob, EncryptionContext=CONTEXT, **o),
    "Decrypt-rsa": lambda w, **o: w.kms.decrypt(CiphertextBlob=w.rsa_blob, KeyId=w.rsa,
                                                EncryptionAlgorithm="RSAES_OAEP_SHA_256", **o),
    "ReEncrypt": lambda w, **o: w.kms.re_encrypt(CiphertextBlob=w.blob, SourceEncryptionContext=CONTEXT,
                                                 DestinationKeyId=w.other, **o),
    "GenerateDataKey": lambda w, **o: w.kms.generate_data_key(KeyId=w.key, KeySpec="AES_256",
                                                              EncryptionContext=CONTEXT, **o),
    "GenerateDataKeyWithoutPlaintext": lambda w, **o: w.kms.generate_data_key_without_plaintext(
        KeyId=w.key, NumberOfBytes=32, **o),
    "GenerateDataKeyPair": lambda w, **o: w.kms.generate_data_key_pair(KeyId=w.key, KeyPairSpec="ECC_NIST_P256",
                                                                       **o),
    "GenerateDataKeyPairWithoutPlaintext": lambda w, **o: w.kms.generate_data_key_pair_without_plaintext(
        KeyId=w.key, KeyPairSpec="ECC_NIST_P384", EncryptionContext=CONTEXT, **o),
    "Sign": lambda w, **o: w.kms.sign(KeyId=w.ecc, Message=MESSAGE, SigningAlgorithm="ECDSA_SHA_256", **o),
    "Verify": lambda w, **o: w.kms.verify(KeyId=w.ecc, Message=MESSAGE, Signature=w.signature,
                                          SigningAlgorithm="ECDSA_SHA_256", **o),
    "GenerateMac": lambda w, **o: w.kms.generate_mac(KeyId=w.hmac, Message=MESSAGE, MacAlgorithm="HMAC_SHA_256", **o),
    "VerifyMac": lambda w, **o: w.kms.verify_mac(KeyId=w.hmac, Message=MESSAGE, Mac=w.mac,
                                                 MacAlgorithm="HMAC_SHA_256", **o),
    "CreateGrant": lambda w, **o: w.kms.create_grant(KeyId=w.key, GranteePrincipal=GRANTEE, Operations=["Encrypt"],
                                                     **o),
    # the same Name and parameters: the real call returns the existing grant, a dry run still stops
    "CreateGrant-again": lambda w, **o: w.kms.create_grant(KeyId=w.key, GranteePrincipal=GRANTEE, Name="dry-run",
                                                           Operations=["Decrypt", "RetireGrant"], **o),
    "RetireGrant-by-token": lambda w, **o: w.kms.retire_grant(GrantToken=w.grant_token, **o),
    "RetireGrant-by-key-and-id": lambda w, **o: w.kms.retire_grant(KeyId=w.key, GrantId=w.grant_id, **o),
    "RevokeGrant": lambda w, **o: w.kms.revoke_grant(KeyId=w.key, GrantId=w.grant_id, **o),
}


def seen(store, world: World) -> dict:
    """Keys, aliases, and the two symmetric keys' metadata, grants, policy and material versions."""
    region = world.kms.region
    return snapshot(store, ((region, world.key), (region, world.other)))


def test_every_operation_that_takes_dry_run_is_tested():
    assert {operation_of(case) for case in ALLOWED} == DRY_RUN_OPERATIONS
    assert {operation_of(case) for case in REFUSED} == DRY_RUN_OPERATIONS


@pytest.mark.parametrize("case", ALLOWED)
def test_a_dry_run_of_an_allowed_request_stops_before_the_operation(store, world, spy, case):
    before = seen(store, world)
    offset = audit_offset(store)
    with kms_error("DryRunOperationException", "would have succeeded", "DryRun"):
        ALLOWED[case](world, DryRun=True)
    assert spy.used == [], f"a dry run used {spy.used}"
    (dry,) = audit_since(store, offset)
    assert seen(store, world) == before

    offset = audit_offset(store)
    response = ALLOWED[case](world, DryRun=False)  # DryRun=False is an ordinary call
    assert isinstance(response, dict)
    assert spy.used or case.startswith(("CreateGrant", "RetireGrant", "RevokeGrant"))
    (real,) = audit_since(store, offset)

    assert (dry["eventName"], dry["outcome"], dry["errorCode"]) == \
        (operation_of(case), "Failure", "DryRunOperationException")
    assert "DryRun" in dry["errorMessage"]
    assert (real["eventName"], real["outcome"]) == (operation_of(case), "Success")
    assert dry["resources"] == real["resources"] and dry["resources"]
    assert (dry["requestParameters"].pop("dryRun"), real["requestParameters"].pop("dryRun")) == (True, False)
    assert dry["requestParameters"] == real["requestParameters"]


def test_a_dry_run_of_grant_calls_leaves_the_grants_as_they_were(kms, world):
    grants = list_all(kms.list_grants, "Grants", KeyId=world.key)
    for case in ("CreateGrant", "CreateGrant-again", "RetireGrant-by-token", "RetireGrant-by-key-and-id",
                 "RevokeGrant"):
        with kms_error("DryRunOperationException"):
            ALLOWED[case](world, DryRun=True)
    assert list_all(kms.list_grants, "Grants", KeyId=world.key) == grants
    kms.retire_grant(GrantToken=world.grant_token, DryRun=False)
    assert list_all(kms.list_grants, "Grants", KeyId=world.key) == []


def key_denying(kms, action: str, condition: dict | None = None) -> str:
    """A key whose policy allows the root everything but `action` (under `condition`)."""
    deny = {"Sid": "Deny", "Effect": "Deny", "Principal": {"AWS": ROOT}, "Action": action, "Resource": "*"}
    if condition:
        deny["Condition"] = condition
    policy = {"Version": "2012-10-17", "Statement": [
        {"Sid": "Root", "Effect": "Allow", "Principal": {"AWS": ROOT}, "Action": "kms:*", "Resource": "*"}, deny]}
    return kms.create_key(Description=f"denies {action}", Policy=json.dumps(policy))["KeyMetadata"]["KeyId"]


def disabled_key(kms) -> str:
    key_id = kms.create_key(Description="disabled")["KeyMetadata"]["KeyId"]
    kms.disable_key(KeyId=key_id)
    return key_id


def denying(action: str) -> Callable:
    return lambda kms: key_denying(kms, action)


def on_key(make_key: Callable, request: Callable) -> Callable:
    """A row that makes a key of its own (`make_key(kms)`), then calls `request(w, key, **o)`."""
    def make(w: World) -> Callable[..., dict]:
        key = make_key(w.kms)
        return lambda **o: request(w, key, **o)

    return make


def blob_under(kms, key_id: str, context: dict | None = None, plaintext: bytes = b"secret") -> bytes:
    return kms.encrypt(KeyId=key_id, Plaintext=plaintext, EncryptionContext=context or {})["CiphertextBlob"]


def _encrypt_pending_deletion(w):
    key_id = w.kms.create_key(Description="pending deletion")["KeyMetadata"]["KeyId"]
    w.kms.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=30)
    return lambda **o: w.kms.encrypt(KeyId=key_id, Plaintext=b"x", **o)


def _decrypt_disabled(w):
    key_id = w.kms.create_key(Description="to disable")["KeyMetadata"]["KeyId"]
    blob = blob_under(w.kms, key_id)
    w.kms.disable_key(KeyId=key_id)
    return lambda **o: w.kms.decrypt(CiphertextBlob=blob, **o)


def _decrypt_denied_for_this_context(w):
    key_id = key_denying(w.kms, "kms:Decrypt", {"StringNotEquals": {"kms:EncryptionContext:tenant": "acme"}})
    blob = blob_under(w.kms, key_id, CONTEXT)
    return lambda **o: w.kms.decrypt(CiphertextBlob=blob, EncryptionContext={"tenant": "globex"}, **o)


def _re_encrypt_source_denied(w):
    blob = blob_under(w.kms, key_denying(w.kms, "kms:ReEncryptFrom"))
    return lambda **o: w.kms.re_encrypt(CiphertextBlob=blob, DestinationKeyId=w.other, **o)


def _revoke_denied(w):
    key_id = key_denying(w.kms, "kms:RevokeGrant")
    grant_id = w.kms.create_grant(KeyId=key_id, GranteePrincipal=GRANTEE, Operations=["Decrypt"])["GrantId"]
    return lambda **o: w.kms.revoke_grant(KeyId=key_id, GrantId=grant_id, **o)


# Requests that fail a check: (their error, a function of the World that sets them up).
REFUSED: dict[str, tuple[str, Callable]] = {
    "Encrypt-denied": ("AccessDeniedException", on_key(denying("kms:Encrypt"), lambda w, key, **o: w.kms.encrypt(
        KeyId=key, Plaintext=b"x", **o))),
    "Encrypt-disabled": ("DisabledException", on_key(disabled_key, lambda w, key, **o: w.kms.encrypt(
        KeyId=key, Plaintext=b"x", **o))),
    "Encrypt-pending-deletion": ("KMSInvalidStateException", _encrypt_pending_deletion),
    "Encrypt-unknown-key": ("NotFoundException", lambda w: lambda **o: w.kms.encrypt(
        KeyId=str(uuid.uuid4()), Plaintext=b"x", **o)),
    "Encrypt-unknown-alias": ("NotFoundException", lambda w: lambda **o: w.kms.encrypt(
        KeyId=f"alias/missing-{uuid.uuid4().hex}", Plaintext=b"x", **o)),
    "Encrypt-hmac-key": ("InvalidKeyUsageException", lambda w: lambda **o: w.kms.encrypt(
        KeyId=w.hmac, Plaintext=b"x", **o)),
    "Encrypt-rsa-plaintext-too-long": ("ValidationException", lambda w: lambda **o: w.kms.encrypt(
        KeyId=w.rsa, Plaintext=b"x" * 191, EncryptionAlgorithm="RSAES_OAEP_SHA_256", **o)),
    "Encrypt-empty-context-key": ("ValidationException", lambda w: lambda **o: w.kms.encrypt(
        KeyId=w.key, Plaintext=b"x", EncryptionContext={"": "v"}, **o)),
    "Encrypt-empty-plaintext": ("ValidationException", lambda w: lambda **o: w.kms.encrypt(
        KeyId=w.key, Plaintext=b"", **o)),
    "Decrypt-denied-for-this-context": ("AccessDeniedException", _decrypt_denied_for_this_context),
    "Decrypt-disabled": ("DisabledException", _decrypt_disabled),
    "Decrypt-incorrect-key": ("IncorrectKeyException", lambda w: lambda **o: w.kms.decrypt(
        CiphertextBlob=w.blob, EncryptionContext=CONTEXT, KeyId=w.other, **o)),
    "Decrypt-malformed-blob": ("InvalidCiphertextException", lambda w: lambda **o: w.kms.decrypt(
        CiphertextBlob=b"junk" * 20, **o)),
    "Decrypt-rsa-without-key-id": ("ValidationException", lambda w: lambda **o: w.kms.decrypt(
        CiphertextBlob=w.rsa_blob, EncryptionAlgorithm="RSAES_OAEP_SHA_256", **o)),
    "ReEncrypt-source-denied": ("AccessDeniedException", _re_encrypt_source_denied),
    "ReEncrypt-destination-denied": ("AccessDeniedException", on_key(
        denying("kms:ReEncryptTo"), lambda w, key, **o: w.kms.re_encrypt(
            CiphertextBlob=w.blob, SourceEncryptionContext=CONTEXT, DestinationKeyId=key, **o))),
    "ReEncrypt-destination-disabled": ("DisabledException", on_key(disabled_key, lambda w, key, **o: w.kms.re_encrypt(
        CiphertextBlob=w.blob, SourceEncryptionContext=CONTEXT, DestinationKeyId=key, **o))),
    "ReEncrypt-destination-signing-key": ("InvalidKeyUsageException", lambda w: lambda **o: w.kms.re_encrypt(
        CiphertextBlob=w.blob, SourceEncryptionContext=CONTEXT, DestinationKeyId=w.ecc, **o)),
    # every check of both keys comes before the decryption: a denied destination is reported even
    # when the source context is wrong (which only the decryption could tell)
    "ReEncrypt-destination-denied-and-wrong-source-context": ("AccessDeniedException", on_key(
        denying("kms:ReEncryptTo"), lambda w, key, **o: w.kms.re_encrypt(
            CiphertextBlob=w.blob, SourceEncryptionContext={"tenant": "globex"}, DestinationKeyId=key, **o))),
    "GenerateDataKey-spec-and-bytes": ("ValidationException", lambda w: lambda **o: w.kms.generate_data_key(
        KeyId=w.key, KeySpec="AES_256", NumberOfBytes=32, **o)),
    "GenerateDataKey-rsa-key": ("InvalidKeyUsageException", lambda w: lambda **o: w.kms.generate_data_key(
        KeyId=w.rsa, KeySpec="AES_256", **o)),
    "GenerateDataKeyWithoutPlaintext-disabled": ("DisabledException", on_key(
        disabled_key, lambda w, key, **o: w.kms.generate_data_key_without_plaintext(KeyId=key, NumberOfBytes=16, **o))),
    "GenerateDataKeyWithoutPlaintext-empty-context-key": (
        "ValidationException", lambda w: lambda **o: w.kms.generate_data_key_without_plaintext(
            KeyId=w.key, NumberOfBytes=16, EncryptionContext={"": "v"}, **o)),
    "GenerateDataKeyPair-bad-spec": ("ValidationException", lambda w: lambda **o: w.kms.generate_data_key_pair(
        KeyId=w.key, KeyPairSpec="RSA_1024", **o)),
    "GenerateDataKeyPair-denied": ("AccessDeniedException", on_key(
        denying("kms:GenerateDataKeyPair"), lambda w, key, **o: w.kms.generate_data_key_pair(
            KeyId=key, KeyPairSpec="ECC_NIST_P256", **o))),
    "GenerateDataKeyPairWithoutPlaintext-empty-context-key": (
        "ValidationException", lambda w: lambda **o: w.kms.generate_data_key_pair_without_plaintext(
            KeyId=w.key, KeyPairSpec="ECC_NIST_P256", EncryptionContext={"": "v"}, **o)),
    "GenerateDataKeyPairWithoutPlaintext-hmac-key": (
        "InvalidKeyUsageException", lambda w: lambda **o: w.kms.generate_data_key_pair_without_plaintext(
            KeyId=w.hmac, KeyPairSpec="ECC_NIST_P256", **o)),
    "Sign-wrong-algorithm": ("InvalidKeyUsageException", lambda w: lambda **o: w.kms.sign(
        KeyId=w.ecc, Message=MESSAGE, SigningAlgorithm="RSASSA_PSS_SHA_256", **o)),
    "Sign-bad-digest-length": ("ValidationException", lambda w: lambda **o: w.kms.sign(
        KeyId=w.ecc, Message=b"short", MessageType="DIGEST", SigningAlgorithm="ECDSA_SHA_256", **o)),
    "Sign-symmetric-key": ("InvalidKeyUsageException", lambda w: lambda **o: w.kms.sign(
        KeyId=w.key, Message=MESSAGE, SigningAlgorithm="ECDSA_SHA_256", **o)),
    "Verify-symmetric-key": ("InvalidKeyUsageException", lambda w: lambda **o: w.kms.verify(
        KeyId=w.key, Message=MESSAGE, Signature=w.signature, SigningAlgorithm="ECDSA_SHA_256", **o)),
    "Verify-empty-signature": ("ValidationException", lambda w: lambda **o: w.kms.verify(
        KeyId=w.ecc, Message=MESSAGE, Signature=b"", SigningAlgorithm="ECDSA_SHA_256", **o)),
    "GenerateMac-wrong-algorithm": ("InvalidKeyUsageException", lambda w: lambda **o: w.kms.generate_mac(
        KeyId=w.hmac, Message=MESSAGE, MacAlgorithm="HMAC_SHA_384", **o)),
    "VerifyMac-encryption-key": ("InvalidKeyUsageException", lambda w: lambda **o: w.kms.verify_mac(
        KeyId=w.key, Message=MESSAGE, Mac=w.mac, MacAlgorithm="HMAC_SHA_256", **o)),
    "CreateGrant-denied": ("AccessDeniedException", on_key(denying("kms:CreateGrant"), lambda w, key, **o: (
        w.kms.create_grant(KeyId=key, GranteePrincipal=GRANTEE, Operations=["Decrypt"], **o)))),
    "CreateGrant-disabled": ("DisabledException", on_key(disabled_key, lambda w, key, **o: w.kms.create_grant(
        KeyId=key, GranteePrincipal=GRANTEE, Operations=["Decrypt"], **o))),
    "CreateGrant-operation-the-key-cannot-do": ("ValidationException", lambda w: lambda **o: w.kms.create_grant(
        KeyId=w.key, GranteePrincipal=GRANTEE, Operations=["Sign"], **o)),
    "CreateGrant-bad-name": ("ValidationException", lambda w: lambda **o: w.kms.create_grant(
        KeyId=w.key, GranteePrincipal=GRANTEE, Operations=["Decrypt"], Name="no spaces", **o)),
    "RetireGrant-unknown-grant": ("NotFoundException", lambda w: lambda **o: w.kms.retire_grant(
        KeyId=w.key, GrantId="0" * 64, **o)),
    "RetireGrant-invalid-token": ("InvalidGrantTokenException", lambda w: lambda **o: w.kms.retire_grant(
        GrantToken="not-a-token", **o)),
    "RetireGrant-neither-token-nor-id": ("ValidationException", lambda w: lambda **o: w.kms.retire_grant(
        KeyId=w.key, **o)),
    "RevokeGrant-denied": ("AccessDeniedException", _revoke_denied),
    "RevokeGrant-unknown-grant": ("NotFoundException", lambda w: lambda **o: w.kms.revoke_grant(
        KeyId=w.key, GrantId="0" * 64, **o)),
}


@pytest.mark.parametrize("case", REFUSED)
def test_a_dry_run_of_a_request_that_would_fail_returns_its_error(store, world, spy, case):
    code, make = REFUSED[case]
    request = make(world)
    spy.used.clear()  # the setup's own calls
    before = seen(store, world)
    offset = audit_offset(store)
    with kms_error(code):
        request(DryRun=True)
    with kms_error(code):
        request()
    dry, real = audit_since(store, offset)
    assert spy.used == []
    assert seen(store, world) == before
    assert (dry["eventName"], dry["errorCode"]) == (real["eventName"], real["errorCode"]) == \
        (operation_of(case), code)
    assert dry["resources"] == real["resources"]


def _flip_last_byte(blob: bytes) -> bytes:
    return blob[:-1] + bytes([blob[-1] ^ 1])


def _re_encrypt_too_long_for_rsa(w):  # RSA_2048 with OAEP SHA-256 takes at most 190 bytes
    blob = blob_under(w.kms, w.key, plaintext=b"x" * 300)
    return lambda **o: w.kms.re_encrypt(CiphertextBlob=blob, DestinationKeyId=w.rsa,
                                        DestinationEncryptionAlgorithm="RSAES_OAEP_SHA_256", **o)


# Failures only the operation itself finds: a dry run reports that the request would succeed.
ONLY_THE_OPERATION_TELLS: dict[str, tuple[str, Callable]] = {
    "Decrypt-wrong-context": ("InvalidCiphertextException", lambda w: lambda **o: w.kms.decrypt(
        CiphertextBlob=w.blob, EncryptionContext={"tenant": "globex"}, **o)),
    "Decrypt-missing-context": ("InvalidCiphertextException", lambda w: lambda **o: w.kms.decrypt(
        CiphertextBlob=w.blob, **o)),
    "Decrypt-altered-blob": ("InvalidCiphertextException", lambda w: lambda **o: w.kms.decrypt(
        CiphertextBlob=_flip_last_byte(w.blob), EncryptionContext=CONTEXT, **o)),
    "Decrypt-rsa-altered-blob": ("InvalidCiphertextException", lambda w: lambda **o: w.kms.decrypt(
        CiphertextBlob=_flip_last_byte(w.rsa_blob), KeyId=w.rsa, EncryptionAlgorithm="RSAES_OAEP_SHA_256", **o)),
    "ReEncrypt-wrong-source-context": ("InvalidCiphertextException", lambda w: lambda **o: w.kms.re_encrypt(
        CiphertextBlob=w.blob, SourceEncryptionContext={"tenant": "globex"}, DestinationKeyId=w.other, **o)),
    "ReEncrypt-plaintext-too-long-for-rsa": ("ValidationException", _re_encrypt_too_long_for_rsa),
    "Verify-wrong-signature": ("KMSInvalidSignatureException", lambda w: lambda **o: w.kms.verify(
        KeyId=w.ecc, Message=b"another message", Signature=w.signature, SigningAlgorithm="ECDSA_SHA_256", **o)),
    "VerifyMac-wrong-mac": ("KMSInvalidMacException", lambda w: lambda **o: w.kms.verify_mac(
        KeyId=w.hmac, Message=b"another message", Mac=w.mac, MacAlgorithm="HMAC_SHA_256", **o)),
}


@pytest.mark.parametrize("case", ONLY_THE_OPERATION_TELLS)
def test_what_only_the_operation_can_tell_a_dry_run_cannot(store, world, spy, case):
    code, make = ONLY_THE_OPERATION_TELLS[case]
    request = make(world)
    spy.used.clear()  # the setup's own calls
    with kms_error("DryRunOperationException"):
        request(DryRun=True)
    assert spy.used == []
    with kms_error(code):
        request(DryRun=False)


@pytest.fixture
def app(store):
    """APP, registered with an identity policy that allows only kms:Encrypt (the registry is
    store-wide: it is emptied again afterwards, as the other suites leave it)."""
    policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "kms:Encrypt", "Resource": "*"}]}
    store.registry.replace([PrincipalEntry(APP, None, {}, (parse_policy(policy, kind="identity").text,))])
    yield store.client(store.config.regions[0], APP)
    store.registry.replace([])


def test_a_dry_run_tests_permissions_from_policies_and_grants(kms, world, app):
    with kms_error("DryRunOperationException"):
        app.encrypt(KeyId=world.key, Plaintext=b"x", DryRun=True)
    with kms_error("AccessDeniedException", "kms:Decrypt"):
        app.decrypt(CiphertextBlob=world.blob, EncryptionContext=CONTEXT, DryRun=True)
    with kms_error("AccessDeniedException", "kms:CreateGrant"):
        app.create_grant(KeyId=world.key, GranteePrincipal=APP, Operations=["Decrypt"], DryRun=True)
    with kms_error("AccessDeniedException", "kms:RetireGrant"):  # neither grantee nor retiring principal
        app.retire_grant(GrantToken=world.grant_token, DryRun=True)

    grant = kms.create_grant(KeyId=world.key, GranteePrincipal=APP, RetiringPrincipal=APP, Operations=["Decrypt"],
                             Constraints={"EncryptionContextEquals": CONTEXT})
    with kms_error("DryRunOperationException"):
        app.decrypt(CiphertextBlob=world.blob, EncryptionContext=CONTEXT, DryRun=True)
    with kms_error("AccessDeniedException"):  # outside the grant's constraint
        app.decrypt(CiphertextBlob=world.blob, EncryptionContext={"tenant": "globex"}, DryRun=True)
    with kms_error("DryRunOperationException"):
        app.retire_grant(GrantToken=grant["GrantToken"], DryRun=True)
    assert grant["GrantId"] in {g["GrantId"] for g in list_all(kms.list_grants, "Grants", KeyId=world.key)}
    assert app.decrypt(CiphertextBlob=world.blob, EncryptionContext=CONTEXT)["Plaintext"] == b"secret"


@pytest.mark.parametrize("value", ["true", 1, 0, None, [True]])
def test_dry_run_must_be_a_boolean(store, world, spy, value):
    before = seen(store, world)
    with kms_error("ValidationException", "DryRun", "boolean"):
        world.kms.encrypt(KeyId=world.key, Plaintext=b"x", DryRun=value)
    with kms_error("ValidationException", "DryRun", "boolean"):
        world.kms.revoke_grant(KeyId=world.key, GrantId=world.grant_id, DryRun=value)
    assert spy.used == [] and seen(store, world) == before


def test_operations_without_dry_run_refuse_it(kms, world):
    # as in AWS's API: GenerateRandom, GetPublicKey and the key-management calls have no DryRun
    with kms_error("ValidationException", "DryRun"):
        kms.generate_random(NumberOfBytes=16, DryRun=True)
    with kms_error("ValidationException", "DryRun"):
        kms.disable_key(KeyId=world.key, DryRun=True)
    assert kms.describe_key(KeyId=world.key)["KeyMetadata"]["KeyState"] == "Enabled"
