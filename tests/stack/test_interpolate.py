"""`${...}` references: stack variables replaced, IAM policy variables left alone."""

from __future__ import annotations

import pytest

from kmsplan.stack.interpolate import interpolate, scope

NAMES = scope("111122223333", "payments", "eu-west-1", {"app": "payments-app"})


@pytest.mark.parametrize("text, result", [
    ("arn:aws:iam::${account}:role/${var.app}", "arn:aws:iam::111122223333:role/payments-app"),
    ("${stack} in ${region}", "payments in eu-west-1"),
    ("${ account }", "111122223333"),
    ("no references", "no references"),
    ("cost: $5", "cost: $5"),
    ("$${account} is written literally", "${account} is written literally"),
    ("${aws:PrincipalTag/tenant}", "${aws:PrincipalTag/tenant}"),
    ("${aws:username, 'anonymous'}", "${aws:username, 'anonymous'}"),
    ("${*}${?}${$}", "${*}${?}${$}"),
])
def test_references(text: str, result: str) -> None:
    assert interpolate(text, NAMES) == (result, [])


@pytest.mark.parametrize("text, code, fragment", [
    ("${acount}", "E303", "did you mean '${account}'"),
    ("${var.ap}", "E303", "did you mean '${var.app}'"),
    ("${var.zzz}", "E303", "define it under 'vars:' (defined: app)"),
    ("${foo}", "E303", "known: ${account}"),
    ("${}", "E305", "empty reference"),
    ("role/${var.app", "E305", "unclosed"),
])
def test_problems(text: str, code: str, fragment: str) -> None:
    result, problems = interpolate(text, NAMES)
    assert result == text
    assert [c for c, _ in problems] == [code]
    assert fragment in problems[0][1]
