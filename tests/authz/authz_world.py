"""The cast, the policy builders and the table runner of the store-level authorization suite.

Every row of every table is a `Case`: who is registered (with which identity policies), the key
(spec, tags, aliases), the key policy, the grants on it, and one request made through the real
store API on the real token. `World.run` sets all of it up from nothing — its own key, its own
registry — and returns "allowed" or the AWS error code, so a row never depends on another.

Policies in a table may name `<key-arn>` and `<alias>`: they are replaced by the row's own key
ARN and alias name (aliases are unique per region across the session's shared store).
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from kmsplan.errors import KMSError
from kmsplan.policy import parse_policy
from kmsplan.store import KeyStore
from kmsplan.store.principals import PrincipalEntry

ACCOUNT = "111122223333"
OTHER = "444455556666"
REGION = "eu-west-1"
REPLICA_REGION = "eu-central-1"
ORG = "o-exampleorgid"
ROOT = f"arn:aws:iam::{ACCOUNT}:root"
OTHER_ROOT = f"arn:aws:iam::{OTHER}:root"
APP = f"arn:aws:iam::{ACCOUNT}:role/payments-app"
OPS = f"arn:aws:iam::{ACCOUNT}:role/ops"
ADMIN = f"arn:aws:iam::{ACCOUNT}:role/key-admin"
AUDITOR = f"arn:aws:iam::{ACCOUNT}:user/auditor"
PARTNER = f"arn:aws:iam::{OTHER}:role/partner"
S3 = "s3.eu-west-1.amazonaws.com"
EC2 = "ec2.eu-west-1.amazonaws.com"

ALLOWED = "allowed"
DENIED = "AccessDeniedException"
KEY_ARN = "<key-arn>"
ALIAS = "<alias>"


# --- policy documents -------------------------------------------------------------------------

def stmt(principal: Any, action: Any = "kms:*", *, effect: str = "Allow", sid: str | None = None,
         condition: dict | None = None, resource: Any = "*", not_principal: bool = False,
         not_action: bool = False) -> dict:
    """A key policy statement. `principal` is an ARN, a list of them, "*" or a full Principal."""
    if isinstance(principal, (str, list)) and principal != "*":
        principal = {"AWS": principal}
    out: dict[str, Any] = {"Effect": effect}
    if sid:
        out["Sid"] = sid
    out["NotPrincipal" if not_principal else "Principal"] = principal
    out["NotAction" if not_action else "Action"] = action
    out["Resource"] = resource
    if condition:
        out["Condition"] = condition
    return out


def kp(*statements: dict) -> dict:
    """A key policy document."""
    return {"Version": "2012-10-17", "Statement": list(statements)}


#: the account root statement: IAM policies of the key's account count
ENABLE_IAM = stmt(ROOT, sid="EnableIAM")


def allow(action: Any = "kms:*", resource: Any = "*", *, effect: str = "Allow", sid: str | None = None,
          condition: dict | None = None) -> dict:
    """An identity (IAM) policy statement."""
    out: dict[str, Any] = {"Effect": effect, "Action": action, "Resource": resource}
    if sid:
        out["Sid"] = sid
    if condition:
        out["Condition"] = condition
    return out


def deny(action: Any = "kms:*", resource: Any = "*", **extra: Any) -> dict:
    return allow(action, resource, effect="Deny", **extra)


def iam(*statements: dict) -> dict:
    """An identity policy document."""
    return {"Version": "2012-10-17", "Statement": list(statements)}


@dataclass(frozen=True)
class Who:
    """A registry entry as a table writes it (identity policies as documents)."""

    arn: str
    policies: tuple[dict, ...] = ()
    tags: tuple[tuple[str, str], ...] = ()
    org_id: str | None = ORG


def who(arn: str, *policies: dict, tags: dict[str, str] | None = None, org_id: str | None = ORG) -> Who:
    return Who(arn, tuple(policies), tuple(sorted((tags or {}).items())), org_id)


def entry(person: Who, substitutions: dict[str, str]) -> PrincipalEntry:
    """The registry's form of `person`, policies canonicalised exactly as the principals file is."""
    texts = tuple(parse_policy(json.loads(_substitute(json.dumps(p), substitutions)), kind="identity").text
                  for p in person.policies)
    return PrincipalEntry(person.arn, person.org_id, dict(person.tags), texts)


def _substitute(text: str, substitutions: dict[str, str]) -> str:
    for name, value in substitutions.items():
        text = text.replace(name, value)
    return text


# --- requests ---------------------------------------------------------------------------------

#: parameters each operation needs besides KeyId, so a table row names only what it is about
DEFAULT_PARAMS: dict[str, dict[str, Any]] = {
    "Encrypt": {"Plaintext": b"card 4111"},
    "GenerateDataKey": {"KeySpec": "AES_256"},
    "GenerateDataKeyWithoutPlaintext": {"KeySpec": "AES_256"},
    "Sign": {"Message": b"invoice 42"},
    "GenerateMac": {"Message": b"invoice 42"},
    "GetPublicKey": {},
}


@dataclass(frozen=True)
class Req:
    """One API call: who makes it, which operation, with which parameters.

    `key` is how KeyId names the row's key: "id", "arn", "alias" (the alias name), "alias-arn",
    or None for no KeyId (Decrypt reads the key from the blob; CreateKey has none).
    Decrypt gets a blob the root made under the default policy with `blob_context` (default: the
    request's own EncryptionContext).
    """

    caller: str
    op: str
    params: dict = field(default_factory=dict)
    via: str | None = None
    key: str | None = "id"
    region: str = REGION
    blob_context: dict | None = None


def snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


# --- the table row ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Case:
    name: str
    policy: dict
    request: Req
    expect: str
    principals: tuple[Who, ...] = (who(APP), who(OPS))
    grants: tuple[dict, ...] = ()       # CreateGrant parameters (besides KeyId), made by the root
    create: dict = field(default_factory=dict)  # CreateKey parameters of the row's key
    alias: bool = False                 # give the key an alias (`<alias>` in policies)
    tags: dict = field(default_factory=dict)


def case_id(case: Case) -> str:
    return case.name


class World:
    """Sets up rows on the session store: registry, key, aliases, grants, policy; runs requests."""

    def __init__(self, store: KeyStore) -> None:
        self.store = store
        self.root = store.client(region=REGION, principal=ROOT)

    # -- building blocks -------------------------------------------------------------------
    def register(self, *people: Who, substitutions: dict[str, str] | None = None) -> None:
        """Replace the registry with `people` (a later entry for the same ARN wins)."""
        by_arn = {p.arn: p for p in people}
        self.store.registry.replace([entry(p, substitutions or {}) for p in by_arn.values()])

    def client(self, principal: str, *, region: str = REGION, via: str | None = None):
        return self.store.client(region=region, principal=principal, via_service=via)

    def new_key(self, **create: Any) -> dict:
        return self.root.create_key(**create)["KeyMetadata"]

    def new_alias(self, key_id: str, stem: str = "alias/payments") -> str:
        name = f"{stem}-{uuid.uuid4().hex[:12]}"
        self.root.create_alias(AliasName=name, TargetKeyId=key_id)
        return name

    def put_policy(self, key_id: str, policy: dict, substitutions: dict[str, str]) -> None:
        """Install `policy` as the root, bypassing the lockout check (rows often drop the root)."""
        self.root.put_key_policy(KeyId=key_id, Policy=_substitute(json.dumps(policy), substitutions),
                                 BypassPolicyLockoutSafetyCheck=True)

    @staticmethod
    def outcome(call) -> str:
        try:
            call()
        except KMSError as error:
            return error.code
        return ALLOWED

    # -- a whole row -----------------------------------------------------------------------
    def prepare(self, case: Case) -> tuple[dict, dict]:
        """The row's key with everything in place, and the request's parameters: key, alias,
        grants and any ciphertext are made by the root under the default key policy; then the
        row's principals are registered and its key policy installed. Returns (metadata, params)."""
        create = dict(case.create)
        if case.tags:
            create["Tags"] = [{"TagKey": k, "TagValue": v} for k, v in case.tags.items()]
        meta = self.new_key(**create)
        subs = {KEY_ARN: meta["Arn"]}
        if case.alias:
            subs[ALIAS] = self.new_alias(meta["KeyId"])
        for grant in case.grants:
            self.root.create_grant(KeyId=meta["KeyId"], **json.loads(_substitute(json.dumps(grant), subs)))
        params = self.params(meta, subs, case.request)
        self.register(*case.principals, substitutions=subs)
        self.put_policy(meta["KeyId"], case.policy, subs)
        return meta, params

    def params(self, meta: dict, subs: dict[str, str], request: Req) -> dict:
        params = {**DEFAULT_PARAMS.get(request.op, {}),
                  **json.loads(_substitute(json.dumps(request.params), subs))}
        if request.key == "id":
            params["KeyId"] = meta["KeyId"]
        elif request.key == "arn":
            params["KeyId"] = meta["Arn"]
        elif request.key == "alias":
            params["KeyId"] = subs[ALIAS]
        elif request.key == "alias-arn":
            params["KeyId"] = f"arn:aws:kms:{REGION}:{ACCOUNT}:{subs[ALIAS]}"
        if request.op == "Decrypt":
            context = request.blob_context if request.blob_context is not None else \
                params.get("EncryptionContext", {})
            params["CiphertextBlob"] = self.root.encrypt(
                KeyId=meta["KeyId"], Plaintext=b"card 4111", EncryptionContext=context)["CiphertextBlob"]
        return params

    def run(self, case: Case) -> tuple[str, str]:
        """(outcome, error message or "") of the row's request."""
        _, params = self.prepare(case)
        request = case.request
        client = self.client(request.caller, region=request.region, via=request.via)
        try:
            getattr(client, snake(request.op))(**params)
        except KMSError as error:
            return error.code, error.message
        return ALLOWED, ""


def check(world: World, case: Case) -> None:
    """Run a row and assert its outcome; a denial must name the caller (AWS's message shape)."""
    outcome, message = world.run(case)
    assert outcome == case.expect, f"{case.name}: expected {case.expect}, got {outcome}: {message}"
    if outcome == DENIED:
        assert message.startswith(f"User: {case.request.caller} "), message
