"""Key policy and IAM identity policy documents: validation and the normalized `Policy` form.

Validation and parsing are one walk over the document, so whatever `check_policy_document`
accepts, `parse_policy` can build, and a user fixing a stack sees every problem at once, each
with its JSON path and a stable code:

====  ===============================================================================
Code  Problem
====  ===============================================================================
P001  not valid JSON (or not JSON-serializable)
P002  larger than the size limit (32 KiB for key policies)
P003  the document is not a JSON object
P004  unknown top-level field
P005  Version is not "2012-10-17" or "2008-10-17"
P006  Statement missing, not an object or list, or an empty list
P007  the same field name appears twice in one JSON object
P010  a statement is not a JSON object
P011  unknown statement field
P012  Sid is not a string
P013  Sid used by more than one statement
P020  Effect missing or not "Allow"/"Deny"
P030  key policy statement needs exactly one of Principal / NotPrincipal
P031  identity policy statement must not have Principal / NotPrincipal
P032  invalid AWS principal (not "*", a 12-digit account id or an IAM/STS ARN)
P033  unsupported principal type (only "AWS" and "Service")
P034  invalid service principal
P040  statement needs exactly one of Action / NotAction
P041  Action value is not a string or a non-empty list of strings
P042  unknown action (not a KMS API action, or a wildcard matching none)
P050  statement needs exactly one of Resource / NotResource
P051  invalid resource (not "*" or a KMS ARN pattern)
P100  Condition block malformed (not an object of objects)
P101  unknown condition operator
P102  IfExists is not allowed on Null
P103  unknown condition key
P104  condition value is not a string, number, boolean or a non-empty list of them
P105  numeric operator value is not a number
P106  Bool / Null value is not true or false
P107  multivalued key used without ForAnyValue: / ForAllValues:
P108  unknown policy variable
P109  operator does not fit the key's type (Numeric* on a non-numeric key, Bool on a non-boolean)
P110  policy variables are used but Version is not "2012-10-17" (AWS would read them literally)
====  ===============================================================================
"""

from __future__ import annotations

import datetime
import difflib
import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any
from collections.abc import Mapping

from kmsplan.errors import KmsplanError
from kmsplan.policy.conditions import (
    BOOL_KEYS, MULTIVALUED_KEYS, NUMERIC_KEYS, OPERATORS, Condition, canonical_key,
    parse_operator, parse_template, suggest_key, suggest_operator,
)

KMS_ACTIONS: tuple[str, ...] = tuple(f"kms:{name}" for name in (
    "CancelKeyDeletion", "ConnectCustomKeyStore", "CreateAlias", "CreateCustomKeyStore",
    "CreateGrant", "CreateKey", "Decrypt", "DeleteAlias", "DeleteCustomKeyStore",
    "DeleteImportedKeyMaterial", "DeriveSharedSecret", "DescribeCustomKeyStores", "DescribeKey",
    "DisableKey", "DisableKeyRotation", "DisconnectCustomKeyStore", "EnableKey",
    "EnableKeyRotation", "Encrypt", "GenerateDataKey", "GenerateDataKeyPair",
    "GenerateDataKeyPairWithoutPlaintext", "GenerateDataKeyWithoutPlaintext", "GenerateMac",
    "GenerateRandom", "GetKeyPolicy", "GetKeyRotationStatus", "GetParametersForImport",
    "GetPublicKey", "ImportKeyMaterial", "ListAliases", "ListGrants", "ListKeyPolicies",
    "ListKeyRotations", "ListKeys", "ListResourceTags", "ListRetirableGrants", "PutKeyPolicy",
    "ReEncryptFrom", "ReEncryptTo", "ReplicateKey", "RetireGrant", "RevokeGrant",
    "RotateKeyOnDemand", "ScheduleKeyDeletion", "Sign", "SynchronizeMultiRegionKey",
    "TagResource", "UntagResource", "UpdateAlias", "UpdateCustomKeyStore",
    "UpdateKeyDescription", "UpdatePrimaryRegion", "Verify", "VerifyMac",
))
_ACTIONS_BY_LOWER = {a.lower(): a for a in KMS_ACTIONS}
VERSIONS = ("2012-10-17", "2008-10-17")
TOP_FIELDS = ("Version", "Id", "Statement")
STATEMENT_FIELDS = ("Sid", "Effect", "Principal", "NotPrincipal", "Action", "NotAction",
                    "Resource", "NotResource", "Condition")
_ACCOUNT = re.compile(r"^\d{12}$")
_PRINCIPAL_ARN = re.compile(
    r"^arn:aws(-cn|-us-gov)?:(iam::\d{12}:(root|(user|role)(/[\w+=,.@-]+)+)"
    r"|sts::\d{12}:assumed-role/[\w+=,.@-]+/[\w+=,.@-]+)$"
)
_SERVICE = re.compile(r"^[a-z0-9][a-z0-9.-]*\.amazonaws\.com(\.cn)?$")
_ACTION_SHAPE = re.compile(r"^[A-Za-z0-9-]+:[A-Za-z0-9*?]+$")

Path = tuple[str | int, ...]


@dataclass(frozen=True)
class PolicyProblem:
    """One thing wrong with a policy document, where it is, and what to do about it."""

    path: Path
    message: str
    code: str


class PolicyError(KmsplanError):
    """A policy document is invalid; `problems` lists everything wrong with it."""

    def __init__(self, problems: list[PolicyProblem]) -> None:
        first = problems[0]
        where = "/".join(str(p) for p in first.path) or "(document)"
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        super().__init__(f"invalid policy: {where}: {first.message}{more}",
                         hint="fix the listed problems; `kmsplan validate` shows all of them")
        self.problems = problems


@dataclass(frozen=True)
class Statement:
    """One normalized statement. Principals are ARNs (a bare account id becomes its root ARN),
    "*" or service principal names; exactly one of each Principal/Action/Resource pair is set."""

    index: int
    effect: str
    sid: str | None
    principals: tuple[str, ...] | None
    not_principals: tuple[str, ...] | None
    actions: tuple[str, ...] | None
    not_actions: tuple[str, ...] | None
    resources: tuple[str, ...] | None
    not_resources: tuple[str, ...] | None
    conditions: tuple[Condition, ...]

    @property
    def label(self) -> str:
        """How reports name the statement: its Sid, or "#<index>" when it has none."""
        return self.sid if self.sid else f"#{self.index}"

    @property
    def is_allow(self) -> bool:
        return self.effect == "Allow"


@dataclass(frozen=True)
class Policy:
    """A validated policy. `text` is its canonical JSON (sorted keys, compact): compare policies
    by it. `_cache` holds the evaluator's compiled form; it is not part of the value."""

    kind: str
    version: str | None
    statements: tuple[Statement, ...]
    text: str
    _cache: dict[str, Any] = field(default_factory=dict, init=False, compare=False, repr=False,
                                   hash=False)


def check_policy_document(document: object, *, kind: str = "key",
                          max_bytes: int = 32768) -> list[PolicyProblem]:
    """Every problem in `document` (JSON text, bytes or an already-decoded object), sorted by
    path; [] when the document is a valid policy of this `kind` ("key" or "identity")."""
    return _read(document, kind, max_bytes)[1]


def parse_policy(document: str | bytes | Mapping[str, Any], *, kind: str = "key",
                 max_bytes: int = 32768) -> Policy:
    """The normalized `Policy`; raises `PolicyError` carrying all problems when invalid."""
    policy, problems = _read(document, kind, max_bytes)
    if problems or policy is None:
        raise PolicyError(problems)
    return policy


@lru_cache(maxsize=1024)
def parse_policy_cached(text: str, kind: str = "key") -> Policy:
    """`parse_policy` memoized on the JSON text: the store re-reads the same stored policies on
    every call, and a shared `Policy` also shares its compiled form."""
    return parse_policy(text, kind=kind)


# --- the walk -------------------------------------------------------------------------------

class _DupDict(dict):  # type: ignore[type-arg]
    """A decoded JSON object that remembers field names it saw twice."""

    duplicates: tuple[str, ...] = ()


def _pairs(pairs: list[tuple[str, Any]]) -> _DupDict:
    out = _DupDict()
    seen: list[str] = []
    for name, value in pairs:
        if name in out:
            seen.append(name)
        out[name] = value
    out.duplicates = tuple(seen)
    return out


def _read(document: object, kind: str, max_bytes: int) -> tuple[Policy | None, list[PolicyProblem]]:
    if kind not in ("key", "identity"):
        raise ValueError(f"kind must be 'key' or 'identity', not {kind!r}")
    reader = _Reader(kind)
    data: object = document
    if isinstance(document, (bytes, bytearray)):
        try:
            document = bytes(document).decode("utf-8")
        except UnicodeDecodeError as err:
            reader.add((), "P001", f"policy is not UTF-8 text: {err}")
            return None, reader.problems
    if isinstance(document, str):
        size = len(document.encode("utf-8"))
        try:
            data = json.loads(document, object_pairs_hook=_pairs)
        except json.JSONDecodeError as err:
            reader.add((), "P001", f"policy is not valid JSON: {err.msg} at line {err.lineno} "
                                   f"column {err.colno}")
            return None, reader.problems
    else:
        try:
            # default=repr: values JSON cannot hold are reported where they sit, by the walk
            size = len(json.dumps(document, separators=(",", ":"), allow_nan=False,
                                  default=repr).encode())
        except (TypeError, ValueError) as err:
            reader.add((), "P001", f"policy cannot be written as JSON: {err}")
            return None, reader.problems
    if size > max_bytes:
        reader.add((), "P002", f"policy is {size} bytes; the limit is {max_bytes} bytes")
    policy = reader.policy(data)
    problems = sorted(reader.problems, key=lambda p: tuple((isinstance(x, str), x) for x in p.path))
    return (policy if not problems else None), problems


def _suggest(name: str, options: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(name, options, n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


class _Reader:
    """Walks a decoded document once, collecting problems and building statements."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.problems: list[PolicyProblem] = []
        self.variables_at: Path | None = None  # where a policy variable is first used

    def template(self, text: str, path: Path) -> bool:
        """Check `${...}` references in a Resource or condition value."""
        template = parse_template(text)
        if isinstance(template, str):
            self.add(path, "P108", template)
            return False
        if len(template.parts) > 1 or template.parts[0][0] != "text":
            self.variables_at = self.variables_at or path
        return True

    def add(self, path: Path, code: str, message: str) -> None:
        self.problems.append(PolicyProblem(path, message, code))

    def fields(self, obj: Mapping[str, Any], path: Path, allowed: tuple[str, ...], code: str,
               what: str) -> None:
        for name in getattr(obj, "duplicates", ()):
            self.add(path + (name,), "P007", f"field '{name}' appears more than once; keep one")
        for name in obj:
            if not isinstance(name, str):
                self.add(path + (repr(name),), code, f"field name {name!r} is not a string")
            elif name not in allowed:
                self.add(path + (name,), code,
                         f"unknown {what} field '{name}'{_suggest(name, allowed)}")

    def policy(self, data: object) -> Policy | None:
        if not isinstance(data, Mapping):
            self.add((), "P003", f"policy must be a JSON object, not {_json_type(data)}")
            return None
        self.fields(data, (), TOP_FIELDS, "P004", "policy")
        version = data.get("Version")
        if "Version" in data and version not in VERSIONS:
            hint = "; quote it in YAML" if isinstance(version, datetime.date) else ""
            self.add(("Version",), "P005",
                     f"Version must be the string \"2012-10-17\", not {version!r}{hint}")
        if "Id" in data and not isinstance(data["Id"], str):
            self.add(("Id",), "P004", "Id must be a string")
        raw = data.get("Statement")
        if raw is None:
            self.add(("Statement",), "P006", "policy has no Statement; add at least one")
            raw_list: list[Any] = []
            indexed = False
        elif isinstance(raw, Mapping):
            raw_list, indexed = [raw], False
        elif isinstance(raw, list) and raw:
            raw_list, indexed = raw, True
        else:
            self.add(("Statement",), "P006",
                     "Statement must be an object or a non-empty list of objects")
            raw_list, indexed = [], False
        statements: list[Statement] = []
        sids: dict[str, int] = {}
        for i, item in enumerate(raw_list):
            path: Path = ("Statement", i) if indexed else ("Statement",)
            statement = self.statement(item, path, i)
            if statement is None:
                continue
            if statement.sid:
                if statement.sid in sids:
                    self.add(path + ("Sid",), "P013",
                             f"Sid '{statement.sid}' is already used by statement "
                             f"{sids[statement.sid]}; Sids must be unique")
                sids.setdefault(statement.sid, i)
            statements.append(statement)
        if self.variables_at is not None and version != "2012-10-17":
            self.add(("Version",), "P110", "policy variables (first at "
                     f"{'/'.join(map(str, self.variables_at))}) need \"Version\": \"2012-10-17\"; "
                     "older versions read them as literal text")
        if self.problems:
            return None
        text = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return Policy(self.kind, version, tuple(statements), text)

    def statement(self, item: object, path: Path, index: int) -> Statement | None:
        if not isinstance(item, Mapping):
            self.add(path, "P010", f"statement must be a JSON object, not {_json_type(item)}")
            return None
        self.fields(item, path, STATEMENT_FIELDS, "P011", "statement")
        sid = item.get("Sid")
        if sid is not None and not isinstance(sid, str):
            self.add(path + ("Sid",), "P012", "Sid must be a string")
            sid = None
        effect = item.get("Effect")
        if effect not in ("Allow", "Deny"):
            message = ("statement has no Effect; add \"Effect\": \"Allow\" or \"Deny\""
                       if effect is None
                       else f"Effect must be \"Allow\" or \"Deny\", not {effect!r}")
            self.add(path + ("Effect",), "P020", message)
        principals = not_principals = None
        has = [name for name in ("Principal", "NotPrincipal") if name in item]
        if self.kind == "identity":
            for name in has:
                self.add(path + (name,), "P031",
                         f"identity policies cannot have {name}; the policy applies to the "
                         "identity it is attached to")
        elif len(has) != 1:
            self.add(path + ((has[1],) if has else ()), "P030",
                     "a key policy statement needs exactly one of Principal or NotPrincipal")
        else:
            parsed = self.principal(item[has[0]], path + (has[0],))
            if has[0] == "Principal":
                principals = parsed
            else:
                not_principals = parsed
        actions, not_actions = self.pair(item, path, ("Action", "NotAction"), "P040", self.action)
        resources, not_resources = self.pair(item, path, ("Resource", "NotResource"), "P050",
                                             self.resource)
        conditions = self.conditions(item.get("Condition"), path + ("Condition",)) \
            if "Condition" in item else ()
        return Statement(index, str(effect), sid, principals, not_principals, actions, not_actions,
                         resources, not_resources, conditions)

    def pair(self, item: Mapping[str, Any], path: Path, names: tuple[str, str], code: str,
             check: Any) -> tuple[tuple[str, ...] | None, tuple[str, ...] | None]:
        has = [name for name in names if name in item]
        if len(has) != 1:
            self.add(path + ((has[1],) if has else ()), code,
                     f"statement needs exactly one of {names[0]} or {names[1]}")
            return None, None
        values = self.strings(item[has[0]], path + (has[0],), "P041" if code == "P040" else "P051")
        listed = isinstance(item[has[0]], list)
        checked = tuple(v for i, v in enumerate(values or ())
                        if check(v, path + (has[0],) + ((i,) if listed else ())))
        return (checked, None) if has[0] == names[0] else (None, checked)

    def strings(self, value: object, path: Path, code: str) -> tuple[str, ...] | None:
        if isinstance(value, str):
            return (value,)
        if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            return tuple(value)
        self.add(path, code, "must be a string or a non-empty list of strings")
        return None

    def action(self, action: str, path: Path) -> bool:
        if action == "*":
            return True
        if not _ACTION_SHAPE.match(action):
            self.add(path, "P041", f"'{action}' is not an action; write it as 'kms:Name'")
            return False
        if not action.lower().startswith("kms:"):
            self.add(path, "P042", f"'{action}' is not a KMS action; only 'kms:' actions apply "
                                   "to KMS keys")
            return False
        if any(action_matches(action, known) for known in KMS_ACTIONS):
            return True
        what = "matches no KMS action" if any(c in action for c in "*?") else "is not a KMS action"
        self.add(path, "P042", f"'{action}' {what}{_suggest(action, KMS_ACTIONS)}")
        return False

    def resource(self, resource: str, path: Path) -> bool:
        if not self.template(resource, path):
            return False
        parts = resource.split(":", 5)
        if resource == "*" or (len(parts) == 6 and parts[0] == "arn"
                               and re.fullmatch(_wild(parts[2]), "kms")):
            return True
        self.add(path, "P051", f"'{resource}' is not \"*\" or a KMS ARN such as "
                               "'arn:aws:kms:eu-west-1:111122223333:key/*'")
        return False

    def principal(self, value: object, path: Path) -> tuple[str, ...] | None:
        if value == "*":
            return ("*",)
        if not isinstance(value, Mapping) or not value:
            self.add(path, "P032", "Principal must be \"*\" or an object such as "
                                   "{\"AWS\": \"arn:aws:iam::111122223333:root\"}")
            return None
        for name in getattr(value, "duplicates", ()):
            self.add(path + (name,), "P007", f"field '{name}' appears more than once; keep one")
        for name in value:
            if not isinstance(name, str):
                self.add(path + (repr(name),), "P033", f"field name {name!r} is not a string")
            elif name not in ("AWS", "Service"):
                self.add(path + (name,), "P033", f"unsupported principal type '{name}'; key "
                         "policies here name \"AWS\" or \"Service\" principals")
        out: list[str] = []
        for kind in ("AWS", "Service"):
            if kind not in value:
                continue
            listed = isinstance(value[kind], list)
            for i, name in enumerate(self.strings(value[kind], path + (kind,), "P032") or ()):
                where = path + (kind,) + ((i,) if listed else ())
                if kind == "Service":
                    if _SERVICE.match(name):
                        out.append(name)
                    else:
                        self.add(where, "P034", f"'{name}' is not a service principal such as "
                                                "'dynamodb.amazonaws.com'")
                elif name == "*":
                    out.append("*")
                elif _ACCOUNT.match(name):
                    out.append(f"arn:aws:iam::{name}:root")
                elif _PRINCIPAL_ARN.match(name):
                    out.append(name)
                else:
                    self.add(where, "P032", f"'{name}' is not a valid AWS principal; use \"*\", a "
                             "12-digit account id or an ARN such as "
                             "'arn:aws:iam::111122223333:role/name' (no wildcards)")
        return tuple(out)

    def conditions(self, block: object, path: Path) -> tuple[Condition, ...]:
        if not isinstance(block, Mapping):
            self.add(path, "P100", "Condition must be an object of {operator: {key: value}}")
            return ()
        self.fields(block, path, tuple(block), "P100", "condition")
        out: list[Condition] = []
        for name, keys in block.items():
            if not isinstance(name, str):
                continue  # reported by fields()
            where = path + (name,)
            op = parse_operator(name)
            if op is None:
                close = suggest_operator(name)
                hint = f"; did you mean '{close}'?" if close else ""
                self.add(where, "P101", f"unknown condition operator '{name}'{hint}")
            elif op.operator == "Null" and op.if_exists:
                self.add(where, "P102", "Null cannot take IfExists; Null already tests existence")
            if not isinstance(keys, Mapping) or not keys:
                self.add(where, "P100", f"'{name}' must map condition keys to values")
                continue
            self.fields(keys, where, tuple(keys), "P100", "condition")
            for key, raw in keys.items():
                if not isinstance(key, str):
                    continue
                condition = self.condition(op, key, raw, where + (key,))
                if condition is not None:
                    out.append(condition)
        return tuple(out)

    def condition(self, op: Any, key: str, raw: object, path: Path) -> Condition | None:
        canonical = canonical_key(key)
        if canonical is None:
            close = suggest_key(key)
            self.add(path, "P103", f"unknown condition key '{key}'"
                                   + (f"; did you mean '{close}'?" if close else ""))
        items = raw if isinstance(raw, list) else [raw]
        if not items or not all(isinstance(v, (str, int, float)) for v in items):
            self.add(path, "P104", "condition value must be a string, number, boolean or a "
                                   "non-empty list of them")
            return None
        values = tuple(_as_string(v) for v in items)
        if op is None or canonical is None:
            return None
        family = OPERATORS[op.operator][0]
        ok = True
        if family.startswith("num"):
            if canonical not in NUMERIC_KEYS:
                ok = self._misfit(path, op.operator, canonical, "numeric")
            for v in values:
                if not _is_number(v):
                    self.add(path, "P105", f"{op.operator} needs numbers, not {v!r}")
                    ok = False
        elif family in ("bool", "null"):
            if family == "bool" and canonical not in BOOL_KEYS:
                ok = self._misfit(path, op.operator, canonical, "boolean")
            for v in values:
                if v.lower() not in ("true", "false"):
                    self.add(path, "P106", f"{op.operator} needs true or false, not {v!r}")
                    ok = False
        else:
            for v in values:
                ok = self.template(v, path) and ok
        if canonical in MULTIVALUED_KEYS and op.qualifier is None and family != "null":
            self.add(path, "P107", f"'{canonical}' holds a set of values; write "
                                   f"'ForAnyValue:{op.operator}' or 'ForAllValues:{op.operator}'")
            ok = False
        if family in ("bool", "null"):
            values = tuple(v.lower() for v in values)
        return Condition(op.operator, op.qualifier, op.if_exists, canonical, values) if ok else None

    def _misfit(self, path: Path, operator: str, key: str, kind: str) -> bool:
        self.add(path, "P109", f"{operator} compares {kind} values but '{key}' is not {kind}; "
                               "use a String operator")
        return False


def action_matches(pattern: str, action: str) -> bool:
    """IAM action matching: case-insensitive, with `*` and `?` wildcards."""
    return _action_regex(pattern.lower()).fullmatch(action.lower()) is not None


@lru_cache(maxsize=4096)
def _action_regex(pattern: str) -> re.Pattern[str]:
    return re.compile(_wild(pattern))


def _wild(pattern: str) -> str:
    return "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)


def _as_string(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return text.strip().lower() not in ("nan", "inf", "-inf", "infinity", "-infinity", "+inf")


def _json_type(value: object) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
             type(None): "null", int: "a number", float: "a number"}
    for typ, name in names.items():
        if isinstance(value, typ):
            return name
    return type(value).__name__
