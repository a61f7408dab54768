"""Structural validation against schemas/stack.schema.json, with findings at YAML positions.

The schema is the single source for field names, types, enums (key specs, usages, grant
operations, regions) and single-field ranges; it is compiled once per process. A constraint that
carries `x-kmsplan-code` (and optionally `x-kmsplan-message`) in the schema reports that code, so
e.g. a rotation period of 30 days is E403 whether it came from the schema or a rule.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from kmsplan.errors import KmsplanError
from kmsplan.stack.findings import Finding, finding
from kmsplan.stack.loader import locate

SCHEMA_PATH = Path(__file__).parents[1] / "schemas" / "stack.schema.json"  # kmsplan/schemas -> ../schemas

_GENERIC_CODES = {"additionalProperties": "E200", "required": "E201", "type": "E202",
                  "enum": "E203", "const": "E203"}
_TYPE_NAMES = {"object": "a mapping", "array": "a list", "string": "a string",
               "integer": "an integer", "number": "a number", "boolean": "true or false",
               "null": "nothing"}
_NOT_COMMERCIAL = re.compile(r"^[a-z]{2}-(gov|iso[a-z]*)-|^cn-")


@cache
def stack_schema() -> dict[str, Any]:
    try:
        return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise KmsplanError(f"cannot read the stack schema {SCHEMA_PATH}: {err}",
                           hint="reinstall kmsplan; the schemas/ folder ships with it") from err


@cache
def _validator() -> Draft202012Validator:
    """The compiled validator. Local `$ref`s are inlined first (the schema has no recursion):
    resolving a reference per key and per grant was a third of the validation time."""
    schema = stack_schema()
    return Draft202012Validator(_inline(schema, schema["$defs"]))


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            target = _inline(defs[ref[len("#/$defs/"):]], defs)
            rest = {k: _inline(v, defs) for k, v in node.items() if k != "$ref"}
            return {**target, **rest}
        return {k: _inline(v, defs) for k, v in node.items() if k != "$defs"}
    if isinstance(node, list):
        return [_inline(v, defs) for v in node]
    return node


def schema_enum(name: str) -> tuple[str, ...]:
    """An enum from the schema's $defs or key properties (regions, specs, usages, operations)."""
    defs = stack_schema()["$defs"]
    if name == "region":
        return tuple(defs["region"]["enum"])
    if name == "operation":
        return tuple(defs["grant"]["properties"]["operations"]["items"]["enum"])
    return tuple(defs["key"]["properties"][name]["enum"])


def check_structure(root: Any, file: str) -> tuple[list[Finding], set[tuple[Any, ...]]]:
    """Findings for everything the schema rejects, and the paths of the nodes whose shape is
    wrong (so the semantic rules skip them instead of tripping over a wrong type); a bad
    mapping key (a key name, a replica region) counts as its own node. Unknown fields are
    reported but do not make their parent unusable."""
    findings: set[Finding] = set()
    broken: set[tuple[Any, ...]] = set()
    for error in _validator().iter_errors(root):
        path = tuple(error.absolute_path)
        if error.validator != "additionalProperties":
            named = "propertyNames" in error.absolute_schema_path
            broken.add(path + (error.instance,) if named else path)
        findings.update(_findings(error, path, root, file))
    return sorted(findings), broken


def _findings(error: ValidationError, path: tuple[Any, ...], root: Any,
              file: str) -> Iterator[Finding]:
    schema = error.schema if isinstance(error.schema, dict) else {}
    keyword = str(error.validator)
    instance = error.instance
    if keyword == "additionalProperties" and isinstance(instance, dict):
        known = list(schema.get("properties", {}))
        for name in instance:
            if name in known:
                continue
            line, col = locate(root, path + (name,), key=True)
            close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
            hint = (f"; did you mean '{close[0]}'?" if close
                    else f"; expected one of: {', '.join(known)}")
            yield finding(file, line, col, "E200",
                          f"{_where(path + (name,))}: unknown field '{name}'{hint}")
        return
    if keyword == "required" and isinstance(instance, dict):
        line, col = locate(root, path)
        for name in error.validator_value:
            if name not in instance:
                yield finding(file, line, col, "E201",
                              f"{_where(path)}: missing required field '{name}'")
        return
    in_names = "propertyNames" in error.absolute_schema_path
    if in_names and isinstance(instance, str):
        line, col = locate(root, path + (instance,), key=True)
        where = _where(path + (instance,))
    else:
        line, col = locate(root, path)
        where = _where(path)
    code = _GENERIC_CODES.get(keyword, "E204")
    if keyword != "type":
        code = schema.get("x-kmsplan-code", code)
    template = schema.get("x-kmsplan-message")
    if template and keyword not in ("type", "enum"):
        message = template.format(where=where, value=_show(instance))
    else:
        message = _message(keyword, error, schema, where, instance)
    yield finding(file, line, col, code, message)


def _message(keyword: str, error: ValidationError, schema: dict[str, Any], where: str,
             value: Any) -> str:
    expected = error.validator_value
    if keyword == "type":
        wanted = [expected] if isinstance(expected, str) else list(expected)
        names = " or ".join(_TYPE_NAMES.get(w, w) for w in wanted)
        hint = ""
        if "string" in wanted and isinstance(value, (int, float, bool)):
            hint = "; put the value in quotes to make it text"
        return f"{where}: expected {names}, got {_type_name(value)}{hint}"
    if keyword == "enum":
        return _enum_message(where, value, list(expected), schema.get("title", "value"))
    if keyword == "const":
        return f"{where}: must be {_show(expected)}, not {_show(value)}"
    if keyword in ("minimum", "maximum"):
        low, high = schema.get("minimum"), schema.get("maximum")
        if low is not None and high is not None:
            return f"{where}: {_show(value)} is outside the allowed range {low}-{high}"
        bound = "at least" if keyword == "minimum" else "at most"
        return f"{where}: {_show(value)} must be {bound} {expected}"
    if keyword == "minLength":
        return f"{where}: must not be empty" if expected == 1 else \
            f"{where}: must be at least {expected} characters"
    if keyword == "maxLength":
        return f"{where}: {len(value)} characters; the limit is {expected}"
    if keyword == "pattern":
        return f"{where}: {_show(value)} does not match {expected}"
    if keyword in ("minItems", "minProperties"):
        return f"{where}: must not be empty"
    if keyword == "maxProperties":
        return f"{where}: has {len(value)} entries; at most {expected} are allowed"
    if keyword == "uniqueItems":
        return f"{where}: lists the same value more than once"
    return f"{where}: {error.message}"


def _enum_message(where: str, value: Any, allowed: list[Any], title: str) -> str:
    message = f"{where}: {_show(value)} is not a valid {title}"
    if not isinstance(value, str):
        return f"{message}; expected one of: {', '.join(map(str, allowed))}"
    if title == "region" and _NOT_COMMERCIAL.match(value):
        return f"{message}; kmsplan manages AWS commercial regions only"
    folded = {str(a).lower().replace("-", "_"): a for a in allowed}
    exact = folded.get(value.lower().replace("-", "_"))
    close = [exact] if exact else difflib.get_close_matches(value, [str(a) for a in allowed],
                                                           n=1, cutoff=0.5)
    if close:
        return f"{message}; did you mean '{close[0]}'?"
    if len(allowed) <= 16:
        return f"{message}; expected one of: {', '.join(map(str, allowed))}"
    return message


def _where(path: tuple[Any, ...]) -> str:
    """A readable path: keys.payments.grants.batch.operations[1]."""
    out = ""
    for step in path:
        if isinstance(step, int):
            out += f"[{step}]"
        else:
            out += ("." if out else "") + str(step)
    return out or "stack file"


def _show(value: Any) -> str:
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return str(value)


def _type_name(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"the boolean {_show(value)}"
    if isinstance(value, (int, float)):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the string {value!r}"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__
