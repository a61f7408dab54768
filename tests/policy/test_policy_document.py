"""Policy documents: every problem at once (golden lists), and the normalized form."""

from __future__ import annotations

import datetime
import json
from typing import Any

import pytest
from policy_builders import ACCOUNT, APP, ROOT

from kmsplan.errors import KmsplanError
from kmsplan.policy import Condition, PolicyError, check_policy_document, parse_policy


def doc(*statements: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {"Version": "2012-10-17", "Statement": list(statements), **top}


def ok(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"Sid": "S", "Effect": "Allow", "Principal": {"AWS": APP},
                            "Action": "kms:Decrypt", "Resource": "*"}
    base.update(fields)
    return {k: v for k, v in base.items() if v is not None}


def problems(document: object, **kwargs: Any) -> list[tuple[str, tuple[str | int, ...], str]]:
    return [(p.code, p.path, p.message) for p in check_policy_document(document, **kwargs)]


GOLDEN: list[tuple[str, object, list[tuple[str, tuple[str | int, ...], str]]]] = [
    ("non-json", "{\"Statement\": [", [
        ("P001", (), "policy is not valid JSON: Expecting value at line 1 column 16"),
    ]),
    ("not-an-object", "[]", [("P003", (), "policy must be a JSON object, not a list")]),
    ("no-statement", {"Version": "2012-10-17"}, [
        ("P006", ("Statement",), "policy has no Statement; add at least one"),
    ]),
    ("empty-statement-list", doc(), [
        ("P006", ("Statement",), "Statement must be an object or a non-empty list of objects"),
    ]),
    ("bad-version-and-top-field", doc(ok(), Version="2012-10-18", Statements=[]), [
        ("P004", ("Statements",), "unknown policy field 'Statements'; did you mean 'Statement'?"),
        ("P005", ("Version",), "Version must be the string \"2012-10-17\", not '2012-10-18'"),
    ]),
    ("missing-effect", doc(ok(Effect=None)), [
        ("P020", ("Statement", 0, "Effect"),
         "statement has no Effect; add \"Effect\": \"Allow\" or \"Deny\""),
    ]),
    ("lowercase-effect", doc(ok(Effect="allow")), [
        ("P020", ("Statement", 0, "Effect"), "Effect must be \"Allow\" or \"Deny\", not 'allow'"),
    ]),
    ("unknown-operator-suggests", doc(ok(Condition={"StringEqual": {"kms:ViaService": "x"}})), [
        ("P101", ("Statement", 0, "Condition", "StringEqual"),
         "unknown condition operator 'StringEqual'; did you mean 'StringEquals'?"),
    ]),
    ("unknown-qualified-operator", doc(ok(Condition={
        "ForAnyValues:StringLikeIfExists": {"kms:EncryptionContextKeys": "x"}})), [
        ("P101", ("Statement", 0, "Condition", "ForAnyValues:StringLikeIfExists"),
         "unknown condition operator 'ForAnyValues:StringLikeIfExists'; "
         "did you mean 'ForAnyValue:StringLikeIfExists'?"),
    ]),
    ("unknown-key-suggests", doc(ok(Condition={"StringEquals": {"kms:ViaServices": "x",
                                                               "kms:Foo": "y"}})), [
        ("P103", ("Statement", 0, "Condition", "StringEquals", "kms:Foo"),
         "unknown condition key 'kms:Foo'"),
        ("P103", ("Statement", 0, "Condition", "StringEquals", "kms:ViaServices"),
         "unknown condition key 'kms:ViaServices'; did you mean 'kms:ViaService'?"),
    ]),
    ("context-key-typo",
     doc(ok(Condition={"StringEquals": {"kms:EncryptionContext/tenant": "x"}})), [
        ("P103", ("Statement", 0, "Condition", "StringEquals", "kms:EncryptionContext/tenant"),
         "unknown condition key 'kms:EncryptionContext/tenant'; "
         "did you mean 'kms:EncryptionContext:tenant'?"),
    ]),
    ("bad-principals", doc(ok(Principal={"AWS": ["1111", "arn:aws:iam::111122223333:role/*",
                                                 ACCOUNT], "Federated": "cognito"})), [
        ("P032", ("Statement", 0, "Principal", "AWS", 0),
         "'1111' is not a valid AWS principal; use \"*\", a 12-digit account id or an ARN such as "
         "'arn:aws:iam::111122223333:role/name' (no wildcards)"),
        ("P032", ("Statement", 0, "Principal", "AWS", 1),
         "'arn:aws:iam::111122223333:role/*' is not a valid AWS principal; use \"*\", a 12-digit "
         "account id or an ARN such as 'arn:aws:iam::111122223333:role/name' (no wildcards)"),
        ("P033", ("Statement", 0, "Principal", "Federated"),
         "unsupported principal type 'Federated'; key policies here name \"AWS\" or \"Service\" "
         "principals"),
    ]),
    ("principal-pair", doc(ok(Principal=None)), [
        ("P030", ("Statement", 0),
         "a key policy statement needs exactly one of Principal or NotPrincipal"),
    ]),
    ("actions", doc(ok(Action=["kms:Decrpyt", "kms:Foo*", "s3:GetObject", "Decrypt"])), [
        ("P042", ("Statement", 0, "Action", 0),
         "'kms:Decrpyt' is not a KMS action; did you mean 'kms:Decrypt'?"),
        ("P042", ("Statement", 0, "Action", 1), "'kms:Foo*' matches no KMS action"),
        ("P042", ("Statement", 0, "Action", 2),
         "'s3:GetObject' is not a KMS action; only 'kms:' actions apply to KMS keys"),
        ("P041", ("Statement", 0, "Action", 3),
         "'Decrypt' is not an action; write it as 'kms:Name'"),
    ]),
    ("action-and-not-action", doc(ok(NotAction="kms:Encrypt")), [
        ("P040", ("Statement", 0, "NotAction"),
         "statement needs exactly one of Action or NotAction"),
    ]),
    ("resource", doc(ok(Resource=None), ok(Sid="T", Resource="arn:aws:s3:::bucket")), [
        ("P050", ("Statement", 0), "statement needs exactly one of Resource or NotResource"),
        ("P051", ("Statement", 1, "Resource"),
         "'arn:aws:s3:::bucket' is not \"*\" or a KMS ARN such as "
         "'arn:aws:kms:eu-west-1:111122223333:key/*'"),
    ]),
    ("statement-fields-and-sids", doc(ok(Actions="kms:*"), ok(Sid=3), ok()), [
        ("P011", ("Statement", 0, "Actions"),
         "unknown statement field 'Actions'; did you mean 'Action'?"),
        ("P012", ("Statement", 1, "Sid"), "Sid must be a string"),
        ("P013", ("Statement", 2, "Sid"),
         "Sid 'S' is already used by statement 0; Sids must be unique"),
    ]),
    ("condition-values", doc(ok(Condition={
        "NumericLessThan": {"kms:RotationPeriodInDays": "abc"},
        "Bool": {"kms:MultiRegion": "yes"},
        "NullIfExists": {"kms:ViaService": "true"},
        "StringEquals": {"kms:EncryptionContextKeys": "a", "kms:ViaService": None,
                         "kms:RequestAlias": "${aws:username}"},
        "NumericEquals": {"kms:KeySpec": 1},
    })), [
        ("P106", ("Statement", 0, "Condition", "Bool", "kms:MultiRegion"),
         "Bool needs true or false, not 'yes'"),
        ("P102", ("Statement", 0, "Condition", "NullIfExists"),
         "Null cannot take IfExists; Null already tests existence"),
        ("P109", ("Statement", 0, "Condition", "NumericEquals", "kms:KeySpec"),
         "NumericEquals compares numeric values but 'kms:KeySpec' is not numeric; "
         "use a String operator"),
        ("P105", ("Statement", 0, "Condition", "NumericLessThan", "kms:RotationPeriodInDays"),
         "NumericLessThan needs numbers, not 'abc'"),
        ("P107", ("Statement", 0, "Condition", "StringEquals", "kms:EncryptionContextKeys"),
         "'kms:EncryptionContextKeys' holds a set of values; write 'ForAnyValue:StringEquals' "
         "or 'ForAllValues:StringEquals'"),
        ("P108", ("Statement", 0, "Condition", "StringEquals", "kms:RequestAlias"),
         "unknown policy variable '${aws:username}'"),
        ("P104", ("Statement", 0, "Condition", "StringEquals", "kms:ViaService"),
         "condition value must be a string, number, boolean or a non-empty list of them"),
    ]),
    ("variables-need-2012-version", {"Statement": [ok(), ok(Sid="T", Condition={
        "StringEquals": {"kms:EncryptionContext:team": "${aws:PrincipalTag/team}"}})]}, [
        ("P110", ("Version",), "policy variables (first at Statement/1/Condition/StringEquals/"
         "kms:EncryptionContext:team) need \"Version\": \"2012-10-17\"; older versions read "
         "them as literal text"),
    ]),
    ("duplicate-json-field", '{"Statement": {"Effect": "Allow", "Effect": "Deny", '
                             '"Principal": "*", "Action": "kms:*", "Resource": "*"}}', [
        ("P007", ("Statement", "Effect"), "field 'Effect' appears more than once; keep one"),
    ]),
]


@pytest.mark.parametrize("name,document,expected", GOLDEN, ids=[row[0] for row in GOLDEN])
def test_golden_problems(name: str, document: object,
                         expected: list[tuple[str, tuple[str | int, ...], str]]) -> None:
    assert problems(document) == expected


def test_oversize_is_reported_with_other_problems() -> None:
    text = json.dumps(doc(ok(Sid="x" * 200, Effect="Maybe")))
    assert [(c, p) for c, p, _ in problems(text, max_bytes=100)] == [
        ("P002", ()), ("P020", ("Statement", 0, "Effect"))]
    expected = f"policy is {len(text)} bytes; the limit is 100 bytes"
    assert problems(text, max_bytes=100)[0][2] == expected


def test_size_of_a_mapping_is_its_compact_json() -> None:
    document = doc(ok())
    size = len(json.dumps(document, separators=(",", ":")))
    assert check_policy_document(document, max_bytes=size) == []
    assert [p.code for p in check_policy_document(document, max_bytes=size - 1)] == ["P002"]


def test_identity_policies_have_no_principal() -> None:
    assert problems(doc(ok()), kind="identity") == [
        ("P031", ("Statement", 0, "Principal"),
         "identity policies cannot have Principal; the policy applies to the identity it is "
         "attached to")]
    assert check_policy_document(doc(ok(Principal=None)), kind="identity") == []


VALID = [
    ("default-key-policy", {"Version": "2012-10-17", "Id": "key-default-1", "Statement": [{
        "Sid": "Enable IAM User Permissions", "Effect": "Allow",
        "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"}, "Action": "kms:*",
        "Resource": "*"}]}),
    ("single-statement-object", {"Statement": ok()}),
    ("old-version", doc(ok(), Version="2008-10-17")),
    ("star-principal-and-action", doc(ok(Principal="*", Action="*"))),
    ("service-principal", doc(ok(Principal={"Service": ["logs.eu-west-1.amazonaws.com"]}))),
    ("session-principal", doc(ok(Principal={"AWS": f"arn:aws:sts::{ACCOUNT}:assumed-role/r/s"}))),
    ("user-with-path", doc(ok(Principal={"AWS": f"arn:aws:iam::{ACCOUNT}:user/ops/alice"}))),
    ("not-principal-not-action", doc(ok(Principal=None, NotPrincipal={"AWS": APP}, Action=None,
                                        NotAction=["kms:*Key", "kms:Get*"], Effect="Deny"))),
    ("every-operator", doc(ok(Condition={
        "StringEqualsIgnoreCase": {"kms:ViaService": "x"},
        "StringNotLikeIfExists": {"kms:RequestAlias": "alias/${aws:PrincipalTag/team}-*"},
        "ArnLike": {"aws:PrincipalArn": "arn:aws:iam::*:role/${*}"},
        "ForAllValues:StringEquals": {"kms:GrantOperations": ["Decrypt"]},
        "ForAnyValue:StringLike": {"aws:TagKeys": "team"},
        "Null": {"kms:EncryptionContext:tenant": False},
        "BoolIfExists": {"kms:GrantIsForAWSResource": True},
        "NumericGreaterThanEquals": {"kms:ScheduleKeyDeletionPendingWindowInDays": 30},
        "NumericLessThan": {"kms:RotationPeriodInDays": "365.5"},
    }))),
    ("wildcard-resource", doc(ok(Resource=[f"arn:aws:kms:*:{ACCOUNT}:key/*",
                                           "arn:aws:kms:*:${aws:PrincipalAccount}:alias/*"]))),
]


@pytest.mark.parametrize("name,document", VALID, ids=[row[0] for row in VALID])
def test_valid_documents_have_no_problems(name: str, document: dict[str, Any]) -> None:
    assert check_policy_document(document) == []
    assert check_policy_document(json.dumps(document).encode()) == []


def test_parse_normalizes() -> None:
    policy = parse_policy(json.dumps(doc(ok(
        Principal={"AWS": ACCOUNT, "Service": "logs.eu-west-1.amazonaws.com"},
        Action="kms:Decrypt",
        Condition={"StringEquals": {"KMS:encryptioncontext:Tenant": "acme"},
                   "ForAllValues:StringLike": {"aws:tagkeys": ["a", "b"]},
                   "Bool": {"kms:MultiRegion": True}}))))
    (st,) = policy.statements
    assert st.principals == (ROOT, "logs.eu-west-1.amazonaws.com")
    assert st.actions == ("kms:Decrypt",) and st.not_actions is None
    assert st.resources == ("*",) and st.label == "S"
    assert st.conditions == (
        Condition("StringEquals", None, False, "kms:EncryptionContext:Tenant", ("acme",)),
        Condition("StringLike", "ForAllValues", False, "aws:TagKeys", ("a", "b")),
        Condition("Bool", None, False, "kms:MultiRegion", ("true",)),
    )


def test_same_policy_same_text_whatever_the_spelling() -> None:
    a = parse_policy('{"Version": "2012-10-17", "Statement": {"Effect": "Allow", '
                     '"Principal": "*", "Action": "kms:*", "Resource": "*"}}')
    b = parse_policy({"Statement": {"Resource": "*", "Action": "kms:*", "Principal": "*",
                                    "Effect": "Allow"}, "Version": "2012-10-17"})
    assert a == b and a.text == b.text


def test_parse_raises_policy_error_with_all_problems() -> None:
    with pytest.raises(PolicyError) as caught:
        parse_policy(doc(ok(Effect=None, Action="kms:Nope")))
    assert isinstance(caught.value, KmsplanError)
    assert [p.code for p in caught.value.problems] == ["P042", "P020"]
    assert "Statement/0/Action" in str(caught.value) and "1 more" in str(caught.value)


def test_yaml_date_version_is_explained() -> None:
    document = doc(ok(), Version=datetime.date(2012, 10, 17))  # YAML: Version: 2012-10-17
    assert problems(document) == [
        ("P005", ("Version",), "Version must be the string \"2012-10-17\", not "
         "datetime.date(2012, 10, 17); quote it in YAML")]


def test_non_utf8_bytes() -> None:
    assert [p.code for p in check_policy_document(b"\xff\xfe")] == ["P001"]
