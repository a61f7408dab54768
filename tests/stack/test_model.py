"""The typed model the planner reads: interpolation done, defaults applied, stable addresses."""

from __future__ import annotations

import dataclasses
import json

import pytest
from deepdiff import DeepDiff
from stack_helpers import Write

from kmsplan.stack import FrozenMap, Rotation, Stack, load_stack, to_data

STACK = """\
version: 1
stack: pay
account: "111122223333"
region: eu-west-1
vars: {app: payments-app, retention: 7}
defaults:
  deletion_window_days: 14
  tags: {env: prod, team: "${stack}-team"}
keys:
  zeta:
    spec: ECC_NIST_P256
  alpha:
    description: data in ${region}
    multi_region: true
    enabled: false
    tags: {env: dev, app: "${var.app}"}
    aliases: [alias/alpha]
    policy:
      Version: "2012-10-17"
      Statement:
        - Sid: Root
          Effect: Allow
          Principal: {AWS: "arn:aws:iam::${account}:root"}
          Action: "kms:*"
          Resource: "*"
        - Sid: ViaS3Here
          Effect: Allow
          Principal: {AWS: "arn:aws:iam::${account}:role/${var.app}"}
          Action: kms:Decrypt
          Resource: "*"
          Condition:
            StringEquals: {"kms:ViaService": "s3.${region}.amazonaws.com"}
    grants:
      reader:
        grantee: arn:aws:iam::${account}:role/reader
        operations: [GenerateDataKey, Decrypt]
        constraints: {encryption_context_equals: {app: "${var.app}"}}
    replicas:
      us-east-1:
        deletion_window_days: 7
        tags: {role: standby}
        aliases: [alias/alpha]
        grants:
          dr: {grantee: "arn:aws:iam::${account}:role/dr", operations: [Decrypt]}
    expect:
      decrypt: ["arn:aws:iam::${account}:role/${var.app}"]
"""


@pytest.fixture
def stack(write: Write) -> Stack:
    result, findings = load_stack([write("stack.yaml", STACK)])
    assert findings == []
    assert result is not None
    return result


def test_keys_sorted_with_addresses(stack: Stack) -> None:
    assert [k.name for k in stack.keys] == ["alpha", "zeta"]
    assert [k.address for k in stack.keys] == ["key.alpha", "key.zeta"]
    assert (stack.name, stack.account, stack.region, stack.version) == (
        "pay", "111122223333", "eu-west-1", 1)
    assert stack.vars == {"app": "payments-app", "retention": "7"}


def test_defaults_applied(stack: Stack) -> None:
    zeta = stack.key("zeta")
    assert (zeta.spec, zeta.usage, zeta.region, zeta.enabled, zeta.multi_region) == (
        "ECC_NIST_P256", "SIGN_VERIFY", "eu-west-1", True, False)
    assert zeta.rotation == Rotation(False, None)  # signing keys do not rotate
    assert (zeta.deletion_window_days, zeta.protect, zeta.policy) == (14, False, None)
    assert zeta.tags == {"env": "prod", "team": "pay-team"}
    assert (zeta.aliases, zeta.grants, zeta.replicas, zeta.expect) == ((), (), (), {})
    alpha = stack.key("alpha")
    assert (alpha.spec, alpha.usage) == ("SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT")
    assert alpha.rotation == Rotation(True, 365)
    assert alpha.bypass_policy_lockout_safety_check is False


def test_interpolation_and_tag_precedence(stack: Stack) -> None:
    alpha = stack.key("alpha")
    assert alpha.description == "data in eu-west-1"
    assert alpha.tags == {"env": "dev", "team": "pay-team", "app": "payments-app"}
    assert alpha.expect == {"decrypt": ("arn:aws:iam::111122223333:role/payments-app",)}
    grant = alpha.grants[0]
    assert (grant.address, grant.region, grant.grantee, grant.operations) == (
        "grant.alpha.reader", "eu-west-1", "arn:aws:iam::111122223333:role/reader",
        ("Decrypt", "GenerateDataKey"))
    assert grant.constraints.encryption_context_equals == {"app": "payments-app"}
    assert grant.constraints.encryption_context_subset is None


def test_policy_is_parsed_with_canonical_text(stack: Stack) -> None:
    policy = stack.key("alpha").policy
    assert policy.text == policy.document.text
    document = json.loads(policy.text)
    assert policy.text == json.dumps(document, sort_keys=True, separators=(",", ":"))
    condition = document["Statement"][1]["Condition"]["StringEquals"]
    assert condition == {"kms:ViaService": "s3.eu-west-1.amazonaws.com"}
    assert [s.sid for s in policy.document.statements] == ["Root", "ViaS3Here"]


def test_replica_inherits_and_reinterpolates_in_its_region(stack: Stack) -> None:
    alpha = stack.key("alpha")
    (replica,) = alpha.replicas
    assert replica is alpha.replica("us-east-1")
    assert replica.address == "key.alpha.replica[us-east-1]"
    assert replica.description == "data in us-east-1"
    assert (replica.enabled, replica.deletion_window_days) == (False, 7)
    assert replica.tags == {"env": "dev", "team": "pay-team", "app": "payments-app",
                            "role": "standby"}
    condition = json.loads(replica.policy.text)["Statement"][1]["Condition"]["StringEquals"]
    assert condition == {"kms:ViaService": "s3.us-east-1.amazonaws.com"}
    assert [g.address for g in replica.grants] == ["grant.alpha.replica[us-east-1].dr"]
    assert replica.grants[0].region == "us-east-1"


def test_every_resource_by_address(stack: Stack) -> None:
    assert list(stack.resources()) == [
        "alias[eu-west-1].alias/alpha",
        "alias[us-east-1].alias/alpha",
        "grant.alpha.reader",
        "grant.alpha.replica[us-east-1].dr",
        "key.alpha",
        "key.alpha.replica[us-east-1]",
        "key.zeta",
    ]
    aliases = {a.address: a.target for a in stack.aliases}
    assert aliases == {"alias[eu-west-1].alias/alpha": "key.alpha",
                       "alias[us-east-1].alias/alpha": "key.alpha.replica[us-east-1]"}


def test_the_model_is_immutable_and_stable(write: Write, stack) -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        stack.keys[0].enabled = True  # type: ignore[misc]
    with pytest.raises(TypeError):
        stack.keys[0].tags["env"] = "x"  # type: ignore[index]
    again, _ = load_stack([write("copy/stack.yaml", STACK)])
    assert again == stack  # positions and file names take no part in equality
    assert again.files != stack.files
    assert again.keys == stack.keys
    assert hash(again.keys) == hash(stack.keys)


def test_deepdiff_sees_one_attribute_change(write: Write, stack) -> None:
    changed, _ = load_stack([write("other/stack.yaml", STACK.replace("env: dev", "env: test"))])
    diff = DeepDiff(to_data(stack.keys), to_data(changed.keys))
    assert set(diff) == {"values_changed"}
    assert set(diff["values_changed"]) == {"root[0]['tags']['env']",
                                           "root[0]['replicas'][0]['tags']['env']"}


def test_warnings_still_give_a_model(write: Write) -> None:
    text = STACK.replace("  zeta:\n", "  zeta:\n    bypass_policy_lockout_safety_check: true\n")
    stack, findings = load_stack([write("stack.yaml", text)])
    assert [f.code for f in findings] == ["W702"]
    assert stack is not None and stack.key("zeta").bypass_policy_lockout_safety_check is True


def test_frozen_map() -> None:
    a = FrozenMap({"b": 1, "a": 2})
    assert list(a) == ["a", "b"] and a == {"a": 2, "b": 1} and a != {"a": 2}
    assert hash(a) == hash(FrozenMap([("a", 2), ("b", 1)]))
    assert repr(a) == "FrozenMap({'a': 2, 'b': 1})"
