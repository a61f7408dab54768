"""`kmsplan store principals apply|list` and `kmsplan access KEY`, run as a user runs them: in a
subprocess, on a fresh store of the test's own. Keys are made through the store's Python API in a
subprocess too (the CLI has no key commands of its own yet)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ACCOUNT = "111122223333"
ROOT = f"arn:aws:iam::{ACCOUNT}:root"
APP = f"arn:aws:iam::{ACCOUNT}:role/payments-app"
ADMIN = f"arn:aws:iam::{ACCOUNT}:role/key-admin"
OPS = f"arn:aws:iam::{ACCOUNT}:role/ops"
AUDITOR = f"arn:aws:iam::{ACCOUNT}:user/auditor"

PRINCIPALS = textwrap.dedent(f"""\
    principals:
      - arn: {APP}
        org_id: o-exampleorgid
        tags: {{project: payments}}
      - arn: {ADMIN}
        policies:
          - Version: "2012-10-17"
            Statement:
              - {{Effect: Allow, Action: "kms:*", Resource: "*"}}
      - arn: {OPS}                      # broad IAM: the key policy's Deny still keeps it from Decrypt
        tags: {{team: platform}}
        policies:
          - Version: "2012-10-17"
            Statement:
              - {{Sid: OpsEverything, Effect: Allow, Action: "kms:*", Resource: "*"}}
      - arn: {AUDITOR}
        policies:
          - Version: "2012-10-17"
            Statement:
              - {{Effect: Allow, Action: ["kms:Describe*", "kms:Get*", "kms:List*"], Resource: "*"}}
    """)

#: the key policy a payments stack would declare
PAYMENTS_POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {"Sid": "EnableIAM", "Effect": "Allow", "Principal": {"AWS": ROOT}, "Action": "kms:*", "Resource": "*"},
        {"Sid": "KeyAdministrators", "Effect": "Allow", "Principal": {"AWS": ADMIN},
         "Action": ["kms:Create*", "kms:Describe*", "kms:Enable*", "kms:List*", "kms:Put*", "kms:Update*",
                    "kms:Revoke*", "kms:Disable*", "kms:Get*", "kms:Delete*", "kms:ScheduleKeyDeletion",
                    "kms:CancelKeyDeletion"], "Resource": "*"},
        {"Sid": "PaymentsUse", "Effect": "Allow", "Principal": {"AWS": APP},
         "Action": ["kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey*"], "Resource": "*",
         "Condition": {"StringEquals": {"kms:EncryptionContext:service": "payments"}}},
        {"Sid": "OnlyPaymentsDecrypts", "Effect": "Deny", "Principal": "*", "Action": "kms:Decrypt", "Resource": "*",
         "Condition": {"ArnNotEquals": {"aws:PrincipalArn": APP}}},
    ],
}

MAKE_KEYS = textwrap.dedent("""\
    import json, sys
    from kmsplan.store import KeyStore
    store = KeyStore.open(sys.argv[1])
    spec = json.loads(sys.argv[2])
    out = {}
    for name, key in spec.items():
        kms = store.client(region=key.get("region", "eu-west-1"), principal="arn:aws:iam::111122223333:root")
        meta = kms.create_key(Policy=json.dumps(key["policy"]), BypassPolicyLockoutSafetyCheck=True,
                              Description=name)["KeyMetadata"]
        if "alias" in key:
            kms.create_alias(AliasName=key["alias"], TargetKeyId=meta["KeyId"])
        grants = [kms.create_grant(KeyId=meta["KeyId"], **grant)["GrantId"] for grant in key.get("grants", [])]
        out[name] = {"id": meta["KeyId"], "arn": meta["Arn"], "grants": grants}
    store.close()
    print(json.dumps(out))
    """)


def kmsplan(*args: str, store: Path) -> subprocess.CompletedProcess:
    """The real CLI in a subprocess, against `store` (as the shared `run_cli` does)."""
    env = {**os.environ, "KMSPLAN_STORE": str(store), "NO_COLOR": "1"}
    return subprocess.run([sys.executable, "-m", "kmsplan", *args], capture_output=True, text=True, env=env,
                          timeout=300)


def make_keys(store: Path, spec: dict) -> dict:
    result = subprocess.run([sys.executable, "-c", MAKE_KEYS, str(store), json.dumps(spec)], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


def failed(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("Error: "), result.stderr
    return result.stderr


def init_store(path: Path) -> Path:
    ok(kmsplan("store", "init", "--store", str(path), "--account", ACCOUNT, "--regions", "eu-west-1,eu-central-1",
               store=path))
    return path


def apply_principals(store: Path, text: str, directory: Path) -> str:
    path = directory / "principals.yaml"
    path.write_text(text)
    return ok(kmsplan("store", "principals", "apply", str(path), store=store))


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> tuple[Path, dict]:
    """One store for the tests that leave the registry as they found it: the payments cast is
    registered and the payments key (alias/payments) has a constrained grant for the auditor."""
    directory = tmp_path_factory.mktemp("access-cli")
    store = init_store(directory / "store")
    apply_principals(store, PRINCIPALS, directory)
    key = make_keys(store, {"payments": {
        "policy": PAYMENTS_POLICY, "alias": "alias/payments",
        "grants": [{"GranteePrincipal": AUDITOR, "Operations": ["Encrypt"], "Name": "monthly-report",
                    "Constraints": {"EncryptionContextSubset": {"service": "reporting"}}}],
    }})["payments"]
    return store, key


@pytest.fixture
def registered(shared) -> Path:
    return shared[0]


@pytest.fixture
def payments(shared) -> dict:
    return shared[1]


# --- the principals file ----------------------------------------------------------------------

def test_principals_apply_and_list(registered):
    listing = ok(kmsplan("store", "principals", "list", store=registered)).splitlines()
    assert [line.split()[0] for line in listing] == sorted([APP, ADMIN, OPS, AUDITOR, ROOT])
    app_line = next(line for line in listing if line.startswith(APP))
    assert "org=o-exampleorgid" in app_line and "tags=project=payments" in app_line
    assert "identity policies=0" in app_line
    document = json.loads(ok(kmsplan("store", "principals", "list", "--format", "json", store=registered)))
    assert document["format_version"] == 1
    by_arn = {p["arn"]: p for p in document["principals"]}
    assert set(by_arn) == {APP, ADMIN, OPS, AUDITOR, ROOT}
    assert by_arn[APP] == {"arn": APP, "org_id": "o-exampleorgid", "tags": {"project": "payments"}, "policies": []}
    assert by_arn[OPS]["policies"] == [{"Version": "2012-10-17", "Statement": [
        {"Sid": "OpsEverything", "Effect": "Allow", "Action": "kms:*", "Resource": "*"}]}]
    assert by_arn[OPS]["tags"] == {"team": "platform"}


BAD_FILE = textwrap.dedent(f"""\
    principals:
      - arn: {APP}
        org_id: not-an-org
        tags: {{cost: 12}}
        policies:
          - Version: "2012-10-17"
            Statement:
              - {{Effect: Allow, Action: "kms:Decrypts", Resource: "*"}}
              - {{Effect: Allow, Principal: "*", Action: kms:Decrypt, Resource: "*",
                  Condition: {{StringEqualz: {{kms:ViaService: s3.eu-west-1.amazonaws.com}}}}}}
      - arn: bob
      - arn: {ADMIN}
        groups: [admins]
      - arn: {ADMIN}
      - just-a-string
    """)
BAD_FILE_PROBLEMS = [
    "principals[0].org_id: 'not-an-org' is not an organization id",
    "principals[0].tags: expected a mapping of strings to strings (quote numbers)",
    "principals[0].policies[0].Statement[0].Action: P042 'kms:Decrypts' is not a KMS action; "
    "did you mean 'kms:Decrypt'?",
    "principals[0].policies[0].Statement[1].Condition.StringEqualz: P101 unknown condition operator 'StringEqualz'",
    "principals[0].policies[0].Statement[1].Principal: P031 identity policies cannot have Principal",
    "principals[1].arn: 'bob' is not an IAM role, user or root ARN",
    "principals[2]: unknown field 'groups'",
    f"principals[3].arn: {ADMIN} is listed twice",
    "principals[4]: expected a mapping",
]


def test_bad_principals_file_lists_every_problem_and_changes_nothing(registered, tmp_path):
    before = ok(kmsplan("store", "principals", "list", "--format", "json", store=registered))
    path = tmp_path / "bad.yaml"
    path.write_text(BAD_FILE)
    error = failed(kmsplan("store", "principals", "apply", str(path), store=registered))
    assert error.startswith(f"Error: {len(BAD_FILE_PROBLEMS)} problem(s) in {path}; nothing was applied:")
    for problem in BAD_FILE_PROBLEMS:
        assert f"{path}: {problem}" in error, problem
    assert ok(kmsplan("store", "principals", "list", "--format", "json", store=registered)) == before


UNREADABLE = [
    ("not-yaml", "principals:\n  - arn: [\n", ":3:1: not valid YAML"),
    ("wrong-top-level", "people: []\n", "expected a mapping with one key, 'principals', holding a list"),
    ("not-a-list", "principals: {arn: x}\n", "expected a mapping with one key, 'principals', holding a list"),
    ("missing", None, "cannot read"),
]


def test_unreadable_principals_files_change_nothing(registered, tmp_path):
    before = ok(kmsplan("store", "principals", "list", "--format", "json", store=registered))
    for name, content, message in UNREADABLE:
        path = tmp_path / f"{name}.yaml"
        if content is not None:
            path.write_text(content)
        assert message in failed(kmsplan("store", "principals", "apply", str(path), store=registered)), name
    assert ok(kmsplan("store", "principals", "list", "--format", "json", store=registered)) == before


def test_apply_replaces_the_whole_registry(fresh_store_dir, tmp_path):
    out = apply_principals(fresh_store_dir, PRINCIPALS, tmp_path)
    assert out.strip() == "Registry replaced: 4 principal(s) (plus the account root)."
    out = apply_principals(fresh_store_dir, f"principals:\n  - arn: {OPS}\n", tmp_path)
    assert out.strip() == "Registry replaced: 1 principal(s) (plus the account root)."
    document = json.loads(ok(kmsplan("store", "principals", "list", "--format", "json", store=fresh_store_dir)))
    assert [p["arn"] for p in document["principals"]] == [OPS, ROOT]
    apply_principals(fresh_store_dir, "principals: []\n", tmp_path)
    document = json.loads(ok(kmsplan("store", "principals", "list", "--format", "json", store=fresh_store_dir)))
    assert [p["arn"] for p in document["principals"]] == [ROOT]


# --- kmsplan access ---------------------------------------------------------------------------

def access(store: Path, *args: str) -> dict:
    return json.loads(ok(kmsplan("access", *args, "--format", "json", store=store)))


def test_only_the_payments_role_can_decrypt(registered, payments):
    report = access(registered, "alias/payments", "--action", "kms:Decrypt")
    assert report == {"format_version": 1, "key": payments["arn"], "access": [{
        "principal": APP, "action": "kms:Decrypt", "layer": "key-policy", "source": "PaymentsUse",
        "conditions": ["kms:EncryptionContext:service StringEquals payments"]}]}


def test_access_report_lists_every_layer(registered, payments):
    paths = access(registered, payments["id"])["access"]
    by = {}
    for path in paths:
        by.setdefault(path["principal"], {}).setdefault(path["action"], []).append(path)
    assert {p for p, actions in by.items() if "kms:Decrypt" in actions} == {APP}
    # the app: only its own statement, only under its context, and nothing else
    assert set(by[APP]) == {"kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey", "kms:GenerateDataKeyWithoutPlaintext",
                            "kms:GenerateDataKeyPair", "kms:GenerateDataKeyPairWithoutPlaintext"}
    # the key administrators: through their key policy statement (and their IAM policy, which the root
    # statement lets count), never Decrypt
    assert [(p["layer"], p["source"]) for p in by[ADMIN]["kms:PutKeyPolicy"]] == [
        ("iam", f"iam:{ADMIN}#0/0"), ("key-policy", "KeyAdministrators")]
    # ops: its broad IAM policy, unconditionally, for everything but Decrypt
    assert by[OPS]["kms:Encrypt"] == [{"principal": OPS, "action": "kms:Encrypt", "layer": "iam",
                                       "source": f"iam:{OPS}#0/OpsEverything", "conditions": []}]
    # the auditor: reads through IAM, encrypts only through its grant, under the grant's constraint
    assert by[AUDITOR]["kms:Encrypt"] == [{"principal": AUDITOR, "action": "kms:Encrypt", "layer": "grant",
                                           "source": payments["grants"][0],
                                           "conditions": ["only with encryption context service=reporting"]}]
    assert by[AUDITOR]["kms:DescribeKey"][0]["layer"] == "iam"
    assert "kms:ScheduleKeyDeletion" not in by[AUDITOR]
    # the account root itself: the EnableIAM statement
    assert by[ROOT]["kms:PutKeyPolicy"][0]["source"] == "EnableIAM"


def test_access_text_output(registered, payments):
    out = ok(kmsplan("access", "alias/payments", "--action", "kms:Decrypt", "--action", "Encrypt", store=registered))
    lines = out.splitlines()
    assert lines[0] == f"Access to {payments['arn']}:"
    assert f"  {APP}" in lines
    app_at = lines.index(f"  {APP}")
    decrypt = next(line for line in lines[app_at:] if "kms:Decrypt" in line)
    assert decrypt.split() == ["kms:Decrypt", "via", "key-policy", "PaymentsUse", "only", "when:",
                               "kms:EncryptionContext:service", "StringEquals", "payments"]
    assert any("kms:Encrypt" in line and "via grant" in line and "service=reporting" in line for line in lines)
    decrypt_lines = [line for line in lines if "kms:Decrypt" in line]
    assert len(decrypt_lines) == 1


def test_access_follows_registry_changes(fresh_store_dir, tmp_path):
    """A Deny in ops's own IAM policy removes it from the report at once; so does unregistering."""
    apply_principals(fresh_store_dir, PRINCIPALS, tmp_path)
    key = make_keys(fresh_store_dir, {"payments": {"policy": PAYMENTS_POLICY}})["payments"]
    assert OPS in {p["principal"] for p in access(fresh_store_dir, key["id"])["access"]}
    apply_principals(fresh_store_dir, PRINCIPALS.replace(
        '{Sid: OpsEverything, Effect: Allow, Action: "kms:*", Resource: "*"}',
        '{Sid: OpsEverything, Effect: Allow, Action: "kms:*", Resource: "*"}\n'
        '          - {Sid: NoPayments, Effect: Deny, Action: "kms:*", Resource: "' + key["arn"] + '"}'), tmp_path)
    principals = {p["principal"] for p in access(fresh_store_dir, key["id"])["access"]}
    assert OPS not in principals and {APP, ADMIN, AUDITOR, ROOT} <= principals
    apply_principals(fresh_store_dir, "principals: []\n", tmp_path)
    assert {p["principal"] for p in access(fresh_store_dir, key["id"])["access"]} == {ROOT}


def test_access_by_key_arn_in_another_region(registered):
    keys = make_keys(registered, {"eu": {"policy": PAYMENTS_POLICY, "region": "eu-central-1"}})
    report = access(registered, keys["eu"]["arn"], "--region", "eu-central-1", "--action", "kms:Decrypt")
    assert report["key"] == keys["eu"]["arn"] and [p["principal"] for p in report["access"]] == [APP]
    # the same key id is not in the default region
    assert "does not exist" in failed(kmsplan("access", keys["eu"]["id"], store=registered))


def test_access_when_nobody_may_do_anything(registered):
    keys = make_keys(registered, {"sealed": {"policy": {"Version": "2012-10-17", "Statement": [
        {"Effect": "Deny", "Principal": "*", "Action": "kms:*", "Resource": "*"}]}}})
    out = ok(kmsplan("access", keys["sealed"]["id"], store=registered))
    assert out.splitlines() == [f"Access to {keys['sealed']['arn']}:",
                                "  nobody (no registered principal has any allowed action)"]
    assert access(registered, keys["sealed"]["id"])["access"] == []


@pytest.mark.parametrize("args,message", [
    (("alias/nope",), "alias/nope is not found"),
    (("alias/payments", "--action", "kms:Decryptt"), "unknown action kms:Decryptt"),
    (("alias/payments", "--region", "us-east-1"), "region us-east-1 is not in this store"),
    (("not-a-key-id",), "Invalid keyId"),
])
def test_access_errors(registered, payments, args, message):
    assert message in failed(kmsplan("access", *args, store=registered))
