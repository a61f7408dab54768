"""The documented contract: schemas, code table and docs/stack-reference.md agree."""

from __future__ import annotations

import json
import re
from typing import Any

from jsonschema import Draft202012Validator
from stack_helpers import REPO

from kmsplan.stack import CODES
from kmsplan.stack.findings import ERROR, WARNING
from kmsplan.stack.schema import stack_schema

DOC = (REPO / "docs" / "stack-reference.md").read_text(encoding="utf-8")


def _walk(node: Any):  # type: ignore[no-untyped-def]
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def test_schemas_are_valid_2020_12() -> None:
    Draft202012Validator.check_schema(stack_schema())
    findings = json.loads((REPO / "schemas" / "findings.schema.json").read_text())
    Draft202012Validator.check_schema(findings)
    assert findings["$defs"]["finding"]["properties"]["code"]["enum"] == sorted(CODES)


def test_codes_in_the_schema_exist() -> None:
    used = {n["x-kmsplan-code"] for n in _walk(stack_schema()) if "x-kmsplan-code" in n}
    assert used and used <= set(CODES)


def test_code_severity_follows_its_letter() -> None:
    for code, (severity, _) in CODES.items():
        assert severity == {"E": ERROR, "W": WARNING}[code[0]], code


def test_every_code_is_documented_with_its_severity() -> None:
    rows = dict(re.findall(r"^\| ([EW]\d{3}) \| (error|warning) \|", DOC, re.MULTILINE))
    assert rows == {code: severity for code, (severity, _) in CODES.items()}


def test_every_field_is_documented() -> None:
    names = set()
    for node in _walk(stack_schema()):
        names.update(node.get("properties", {}))
    missing = sorted(name for name in names if f"`{name}`" not in DOC)
    assert not missing, f"fields missing from docs/stack-reference.md: {missing}"


def test_every_key_spec_and_operation_is_documented() -> None:
    defs = stack_schema()["$defs"]
    for spec in defs["key"]["properties"]["spec"]["enum"]:
        assert f"`{spec}`" in DOC, spec
    for operation in defs["grant"]["properties"]["operations"]["items"]["enum"]:
        assert operation in DOC, operation
