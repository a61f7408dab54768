"""Grants through the real store: each constraint kind (keys case-insensitive, values
case-sensitive), CreateGrant by a grantee under a constrained CreateGrant grant, grant tokens, and
the RetireGrant / RevokeGrant rules."""

from __future__ import annotations

import pytest
from authz_world import (
    ALLOWED, APP, DENIED, ENABLE_IAM, OPS, OTHER_ROOT, PARTNER, ROOT, Case, Req, allow, case_id, check, deny, iam,
    kp, stmt, who,
)

from kmsplan.errors import KMSError

ACME = {"tenant": "acme"}


def grant(operations=("Encrypt", "Decrypt", "GenerateDataKey"), grantee: str = APP, **constraints) -> dict:
    out: dict = {"GranteePrincipal": grantee, "Operations": list(operations)}
    if constraints:
        out["Constraints"] = constraints
    return out


EQUALS = grant(EncryptionContextEquals={"tenant": "acme", "purpose": "billing"})
SUBSET = grant(EncryptionContextSubset=ACME)


def enc(context: dict | None = None, caller: str = APP) -> Req:
    return Req(caller, "Encrypt", {"EncryptionContext": context} if context is not None else {})


def dec(context: dict, blob_context: dict | None = None) -> Req:
    return Req(APP, "Decrypt", {"EncryptionContext": context}, key=None, blob_context=blob_context)


CONSTRAINTS = [
    # EncryptionContextEquals: exactly these pairs
    Case("equals-exact", kp(ENABLE_IAM), enc({"tenant": "acme", "purpose": "billing"}), ALLOWED, grants=(EQUALS,)),
    Case("equals-keys-ignore-case", kp(ENABLE_IAM), enc({"Tenant": "acme", "PURPOSE": "billing"}), ALLOWED,
         grants=(EQUALS,)),
    Case("equals-values-are-case-sensitive", kp(ENABLE_IAM), enc({"tenant": "Acme", "purpose": "billing"}), DENIED,
         grants=(EQUALS,)),
    Case("equals-extra-pair", kp(ENABLE_IAM), enc({"tenant": "acme", "purpose": "billing", "x": "1"}), DENIED,
         grants=(EQUALS,)),
    Case("equals-missing-pair", kp(ENABLE_IAM), enc(ACME), DENIED, grants=(EQUALS,)),
    Case("equals-no-context", kp(ENABLE_IAM), enc(), DENIED, grants=(EQUALS,)),
    Case("equals-decrypt", kp(ENABLE_IAM), dec({"tenant": "acme", "purpose": "billing"}), ALLOWED, grants=(EQUALS,)),
    Case("equals-decrypt-other-context", kp(ENABLE_IAM), dec({"tenant": "acme"}), DENIED, grants=(EQUALS,)),
    Case("equals-generate-data-key", kp(ENABLE_IAM),
         Req(APP, "GenerateDataKey", {"EncryptionContext": {"tenant": "acme", "purpose": "billing"}}), ALLOWED,
         grants=(EQUALS,)),
    Case("equals-does-not-apply-to-describe-key", kp(ENABLE_IAM), Req(APP, "DescribeKey"), ALLOWED,
         grants=(grant(("Encrypt", "DescribeKey"), EncryptionContextEquals=ACME),)),
    # EncryptionContextSubset: at least these pairs
    Case("subset-exact", kp(ENABLE_IAM), enc(ACME), ALLOWED, grants=(SUBSET,)),
    Case("subset-more-pairs", kp(ENABLE_IAM), enc({"tenant": "acme", "purpose": "billing"}), ALLOWED,
         grants=(SUBSET,)),
    Case("subset-keys-ignore-case", kp(ENABLE_IAM), enc({"TENANT": "acme", "x": "1"}), ALLOWED, grants=(SUBSET,)),
    Case("subset-values-are-case-sensitive", kp(ENABLE_IAM), enc({"tenant": "ACME"}), DENIED, grants=(SUBSET,)),
    Case("subset-pair-missing", kp(ENABLE_IAM), enc({"purpose": "billing"}), DENIED, grants=(SUBSET,)),
    Case("subset-no-context", kp(ENABLE_IAM), enc(), DENIED, grants=(SUBSET,)),
    Case("subset-decrypt", kp(ENABLE_IAM), dec({"tenant": "acme", "run": "7"}), ALLOWED, grants=(SUBSET,)),
    Case("subset-decrypt-other-tenant", kp(ENABLE_IAM), dec({"tenant": "globex"}), DENIED, grants=(SUBSET,)),
    # several grants: any one that fits allows
    Case("second-grant-fits", kp(ENABLE_IAM), enc({"tenant": "globex"}), ALLOWED,
         grants=(SUBSET, grant(("Encrypt",), EncryptionContextSubset={"tenant": "globex"}))),
    Case("constrained-grant-and-plain-grant", kp(ENABLE_IAM), enc({"tenant": "initech"}), ALLOWED,
         grants=(SUBSET, grant(("Encrypt",)))),
    Case("constraint-for-the-grantee-only", kp(ENABLE_IAM), enc(ACME, caller=OPS), DENIED, grants=(SUBSET,)),
    Case("partner-grant-with-constraint", kp(ENABLE_IAM), Req(PARTNER, "Encrypt", {"EncryptionContext": ACME},
                                                              key="arn"), ALLOWED,
         grants=(grant(("Encrypt",), grantee=PARTNER, EncryptionContextSubset=ACME),), principals=(who(PARTNER),)),
    Case("partner-grant-constraint-fails", kp(ENABLE_IAM), Req(PARTNER, "Encrypt", key="arn"), DENIED,
         grants=(grant(("Encrypt",), grantee=PARTNER, EncryptionContextSubset=ACME),), principals=(who(PARTNER),)),
]


@pytest.mark.parametrize("case", CONSTRAINTS, ids=case_id)
def test_grant_constraints(world, case):
    check(world, case)


def derive(**constraints) -> Req:
    """The grantee (APP) creates a grant for OPS, passing on (some of) its permissions."""
    params: dict = {"GranteePrincipal": OPS, "Operations": ["Encrypt"]}
    if constraints:
        params["Constraints"] = constraints
    return Req(APP, "CreateGrant", params)


PARENT_SUBSET = grant(("Encrypt", "CreateGrant"), EncryptionContextSubset=ACME)
PARENT_EQUALS = grant(("Encrypt", "CreateGrant"), EncryptionContextEquals=ACME)
DERIVED_GRANTS = [
    Case("subset-parent-same-subset", kp(ENABLE_IAM), derive(EncryptionContextSubset=ACME), ALLOWED,
         grants=(PARENT_SUBSET,)),
    Case("subset-parent-stricter-subset", kp(ENABLE_IAM),
         derive(EncryptionContextSubset={"tenant": "acme", "purpose": "billing"}), ALLOWED, grants=(PARENT_SUBSET,)),
    Case("subset-parent-equals-child", kp(ENABLE_IAM), derive(EncryptionContextEquals={"tenant": "acme", "x": "1"}),
         ALLOWED, grants=(PARENT_SUBSET,)),
    Case("subset-parent-other-tenant", kp(ENABLE_IAM), derive(EncryptionContextSubset={"tenant": "globex"}), DENIED,
         grants=(PARENT_SUBSET,)),
    Case("subset-parent-unconstrained-child", kp(ENABLE_IAM), derive(), DENIED, grants=(PARENT_SUBSET,)),
    Case("subset-parent-value-case", kp(ENABLE_IAM), derive(EncryptionContextSubset={"tenant": "ACME"}), DENIED,
         grants=(PARENT_SUBSET,)),
    Case("equals-parent-same-equals", kp(ENABLE_IAM), derive(EncryptionContextEquals=ACME), ALLOWED,
         grants=(PARENT_EQUALS,)),
    Case("equals-parent-key-case", kp(ENABLE_IAM), derive(EncryptionContextEquals={"TENANT": "acme"}), ALLOWED,
         grants=(PARENT_EQUALS,)),
    Case("equals-parent-subset-child-would-widen", kp(ENABLE_IAM), derive(EncryptionContextSubset=ACME), DENIED,
         grants=(PARENT_EQUALS,)),
    Case("equals-parent-more-pairs", kp(ENABLE_IAM), derive(EncryptionContextEquals={"tenant": "acme", "x": "1"}),
         DENIED, grants=(PARENT_EQUALS,)),
    Case("equals-parent-unconstrained-child", kp(ENABLE_IAM), derive(), DENIED, grants=(PARENT_EQUALS,)),
    Case("unconstrained-parent", kp(ENABLE_IAM), derive(), ALLOWED, grants=(grant(("Encrypt", "CreateGrant")),)),
    Case("parent-without-create-grant", kp(ENABLE_IAM), derive(EncryptionContextSubset=ACME), DENIED,
         grants=(grant(("Encrypt", "Decrypt"), EncryptionContextSubset=ACME),)),
]


@pytest.mark.parametrize("case", DERIVED_GRANTS, ids=case_id)
def test_create_grant_by_a_grantee(world, case):
    check(world, case)


def test_derived_grant_carries_its_constraint(world):
    """The end-to-end story: the root grants the app CreateGrant under tenant=acme; the app passes
    Encrypt on to ops under the same constraint; ops can encrypt for acme and nothing else."""
    key = world.new_key()
    world.register(who(APP), who(OPS))
    world.root.create_grant(KeyId=key["KeyId"], **PARENT_SUBSET)
    world.put_policy(key["KeyId"], kp(ENABLE_IAM), {})
    app, ops = world.client(APP), world.client(OPS)
    ops_encrypt = lambda context: lambda: ops.encrypt(  # noqa: E731
        KeyId=key["KeyId"], Plaintext=b"x", EncryptionContext=context)
    assert world.outcome(ops_encrypt(ACME)) == DENIED
    app.create_grant(KeyId=key["KeyId"], GranteePrincipal=OPS, Operations=["Encrypt"],
                     Constraints={"EncryptionContextSubset": ACME})
    assert world.outcome(ops_encrypt({"tenant": "acme", "run": "1"})) == ALLOWED
    assert world.outcome(ops_encrypt({"tenant": "globex"})) == DENIED
    grants = world.root.list_grants(KeyId=key["KeyId"])["Grants"]
    derived = [g for g in grants if g["GranteePrincipal"] == OPS]
    assert len(derived) == 1 and derived[0]["Constraints"] == {"EncryptionContextSubset": ACME}


def test_grant_token_is_accepted_and_checked(world):
    key = world.new_key()
    world.register(who(APP))
    token = world.root.create_grant(KeyId=key["KeyId"], **grant(("Encrypt",)))["GrantToken"]
    world.put_policy(key["KeyId"], kp(ENABLE_IAM), {})
    app = world.client(APP)
    app.encrypt(KeyId=key["KeyId"], Plaintext=b"x", GrantTokens=[token])
    assert world.outcome(lambda: app.encrypt(KeyId=key["KeyId"], Plaintext=b"x", GrantTokens=["not-a-token"])) \
        == "InvalidGrantTokenException"


# --- RetireGrant and RevokeGrant --------------------------------------------------------------

RETIRE = [
    # (name, key policy, registered principals, grant, caller, by, expected)
    ("retiring-principal-with-token", kp(ENABLE_IAM), (), {"RetiringPrincipal": OPS}, OPS, "token", ALLOWED),
    ("retiring-principal-with-key-and-grant-id", kp(ENABLE_IAM), (), {"RetiringPrincipal": OPS}, OPS, "id", ALLOWED),
    ("grantee-when-grant-includes-retire", kp(ENABLE_IAM), (), {"Operations": ["Encrypt", "RetireGrant"]}, APP,
     "token", ALLOWED),
    ("grantee-without-retire-operation", kp(ENABLE_IAM), (), {}, APP, "token", DENIED),
    ("grantee-without-retire-operation-by-id", kp(ENABLE_IAM), (), {}, APP, "id", DENIED),
    ("account-root", kp(ENABLE_IAM), (), {}, ROOT, "id", ALLOWED),
    ("account-root-even-when-the-key-policy-omits-it", kp(stmt(OPS, "kms:Describe*")), (), {}, ROOT, "token", ALLOWED),
    ("key-policy-allows-retire-grant", kp(ENABLE_IAM, stmt(OPS, "kms:RetireGrant")), (), {}, OPS, "id", ALLOWED),
    ("iam-allows-retire-grant", kp(ENABLE_IAM), (who(OPS, iam(allow("kms:RetireGrant"))),), {}, OPS, "token",
     ALLOWED),
    ("iam-allows-retire-grant-without-root-statement", kp(stmt(ROOT, "kms:Describe*")),
     (who(OPS, iam(allow("kms:RetireGrant"))),), {}, OPS, "token", DENIED),
    ("someone-else", kp(ENABLE_IAM), (), {"RetiringPrincipal": APP}, OPS, "token", DENIED),
    ("partner-retiring-principal", kp(ENABLE_IAM), (who(PARTNER),), {"RetiringPrincipal": PARTNER}, PARTNER, "token",
     ALLOWED),
    ("partner-account-root-is-not-the-key-account", kp(ENABLE_IAM), (who(OTHER_ROOT),), {}, OTHER_ROOT, "token",
     DENIED),
]


@pytest.mark.parametrize("name,policy,principals,extra,caller,by,expect", RETIRE, ids=[r[0] for r in RETIRE])
def test_retire_grant(world, name, policy, principals, extra, caller, by, expect):
    key = world.new_key()
    created = world.root.create_grant(KeyId=key["KeyId"], **{**grant(("Encrypt",)), **extra})
    world.register(who(APP), who(OPS), *principals)
    world.put_policy(key["KeyId"], policy, {})
    client = world.client(caller)
    if by == "token":
        retire = lambda: client.retire_grant(GrantToken=created["GrantToken"])  # noqa: E731
    else:
        retire = lambda: client.retire_grant(KeyId=key["Arn"], GrantId=created["GrantId"])  # noqa: E731
    assert world.outcome(retire) == expect
    # the grant was the app's only way to encrypt: retired, the access is gone; refused, it stays
    app_encrypts = world.outcome(lambda: world.client(APP).encrypt(KeyId=key["KeyId"], Plaintext=b"x"))
    assert app_encrypts == (DENIED if expect == ALLOWED else ALLOWED)


REVOKE = [
    ("account-root-with-root-statement", kp(ENABLE_IAM), (), ROOT, ALLOWED),
    ("key-admin-named-in-key-policy", kp(ENABLE_IAM, stmt(OPS, ["kms:RevokeGrant", "kms:ListGrants"])), (), OPS,
     ALLOWED),
    ("iam-allows-revoke", kp(ENABLE_IAM), (who(OPS, iam(allow("kms:RevokeGrant"))),), OPS, ALLOWED),
    ("grantee-even-with-retire-operation", kp(ENABLE_IAM), (), APP, DENIED),
    ("retiring-principal", kp(ENABLE_IAM), (), OPS, DENIED),
    ("account-root-without-root-statement", kp(stmt(APP, "kms:Encrypt")), (), ROOT, DENIED),
    ("iam-deny-revoke", kp(ENABLE_IAM, stmt(OPS, "kms:RevokeGrant")),
     (who(OPS, iam(allow()), iam(deny("kms:RevokeGrant"))),), OPS, DENIED),
]


@pytest.mark.parametrize("name,policy,principals,caller,expect", REVOKE, ids=[r[0] for r in REVOKE])
def test_revoke_grant(world, name, policy, principals, caller, expect):
    key = world.new_key()
    created = world.root.create_grant(KeyId=key["KeyId"], GranteePrincipal=APP, RetiringPrincipal=OPS,
                                      Operations=["Encrypt", "RetireGrant"])
    world.register(who(APP), who(OPS), *principals)
    world.put_policy(key["KeyId"], policy, {})
    revoke = lambda: world.client(caller).revoke_grant(KeyId=key["KeyId"], GrantId=created["GrantId"])  # noqa: E731
    assert world.outcome(revoke) == expect
    app_encrypts = world.outcome(lambda: world.client(APP).encrypt(KeyId=key["KeyId"], Plaintext=b"x"))
    assert app_encrypts == (DENIED if expect == ALLOWED else ALLOWED)


def test_retire_refusal_is_access_denied_naming_retire_grant(world):
    key = world.new_key()
    created = world.root.create_grant(KeyId=key["KeyId"], **grant(("Encrypt",)))
    world.register(who(APP), who(OPS))
    with pytest.raises(KMSError) as raised:
        world.client(OPS).retire_grant(GrantToken=created["GrantToken"])
    assert raised.value.code == DENIED
    assert raised.value.message.startswith(f"User: {OPS} is not authorized to perform: kms:RetireGrant on resource: "
                                           f"{key['Arn']}")
