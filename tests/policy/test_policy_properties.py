"""Properties over generated documents: the validator never crashes, validation and parsing
agree, and an unconditional Deny beats every Allow."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from policy_builders import ACCOUNT, ADMIN, APP, KEY, PARTNER, principal

from kmsplan.policy import (
    Grant, PolicyError, Request, authorize, check_policy_document, parse_policy,
)

WORDS = ["Version", "Statement", "Sid", "Effect", "Allow", "Deny", "Principal", "NotPrincipal",
         "AWS", "Service", "*", "Action", "NotAction", "Resource", "NotResource", "Condition",
         "kms:*", "kms:Decrypt", "kms:Get*", "StringEquals", "StringNotLikeIfExists", "Null",
         "ForAllValues:StringEquals", "NumericLessThan", "Bool", "kms:ViaService",
         "kms:EncryptionContextKeys", "kms:EncryptionContext:tenant", "aws:PrincipalTag/team",
         "kms:RotationPeriodInDays", "kms:MultiRegion", "${aws:PrincipalArn}", "${bogus}",
         ACCOUNT, APP, "2012-10-17", "true", "30", "logs.amazonaws.com"]
scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 400), st.floats(),
                    st.sampled_from(WORDS), st.text(max_size=6))
names = st.one_of(st.sampled_from(WORDS), st.sampled_from(WORDS).map(str.lower),
                  st.integers(0, 3))  # a Mapping from Python may even have non-string keys
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(names, inner, max_size=4)),
    max_leaves=25,
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(json_values)
def test_validator_never_crashes_and_agrees_with_parse(document: Any) -> None:
    problems = check_policy_document(document)
    assert all(p.code.startswith("P") and p.message for p in problems)
    try:
        parse_policy(document)
    except PolicyError as err:
        assert err.problems == problems and problems
    else:
        assert problems == []


statements = st.fixed_dictionaries({
    "Effect": st.sampled_from(["Allow", "Deny"]),
    "Principal": st.sampled_from(["*", {"AWS": APP}, {"AWS": ACCOUNT}, {"AWS": [ADMIN, PARTNER]}]),
    "Action": st.sampled_from(["kms:*", "kms:Decrypt", ["kms:Encrypt", "kms:Decrypt"], "*"]),
    "Resource": st.just("*"),
}, optional={"Condition": st.sampled_from([
    {"StringEquals": {"kms:EncryptionContext:tenant": "acme"}},
    {"StringNotEquals": {"kms:ViaService": "s3.eu-west-1.amazonaws.com"}},
    {"ForAnyValue:StringLike": {"kms:EncryptionContextKeys": "t*"}},
])})


@settings(max_examples=200)
@given(st.lists(statements, min_size=1, max_size=4), st.sampled_from([APP, ADMIN, PARTNER]),
       st.sampled_from([{}, {"tenant": "acme"}]))
def test_unconditional_deny_beats_everything(body: list[dict[str, Any]], arn: str,
                                             context: dict[str, str]) -> None:
    deny = {"Effect": "Deny", "Principal": "*", "Action": "kms:Decrypt", "Resource": "*"}
    policy = parse_policy({"Statement": body + [deny]})
    grant = Grant("g", arn, ("Decrypt",))
    decision = authorize(Request("kms:Decrypt", principal(arn), KEY, context), policy, [grant])
    assert not decision.allowed and decision.via
