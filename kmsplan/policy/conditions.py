"""The Condition language of KMS key policies and IAM policies: vocabulary, parsing, evaluation.

One module owns every rule about conditions so the validator (which names what is wrong) and the
evaluator (which decides) can never disagree about what an operator or a condition key means.
Semantics follow the IAM policy reference: a missing key makes a condition false, except for
negated operators (true), `...IfExists` (true), `ForAllValues:` (true) and `Null`.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING
from collections.abc import Callable, Mapping, Sequence

if TYPE_CHECKING:  # the request model lives in evaluate.py; conditions only read it
    from kmsplan.policy.evaluate import Request

# --- vocabulary ------------------------------------------------------------------------------

#: base operator -> (comparison, negated)
OPERATORS: dict[str, tuple[str, bool]] = {
    "StringEquals": ("eq", False),
    "StringNotEquals": ("eq", True),
    "StringEqualsIgnoreCase": ("eq_ci", False),
    "StringNotEqualsIgnoreCase": ("eq_ci", True),
    "StringLike": ("like", False),
    "StringNotLike": ("like", True),
    "ArnEquals": ("arn", False),
    "ArnNotEquals": ("arn", True),
    "ArnLike": ("arn", False),
    "ArnNotLike": ("arn", True),
    "Bool": ("bool", False),
    "Null": ("null", False),
    "NumericEquals": ("num_eq", False),
    "NumericNotEquals": ("num_eq", True),
    "NumericLessThan": ("num_lt", False),
    "NumericLessThanEquals": ("num_le", False),
    "NumericGreaterThan": ("num_gt", False),
    "NumericGreaterThanEquals": ("num_ge", False),
}
QUALIFIERS = ("ForAnyValue", "ForAllValues")

CONDITION_KEYS: tuple[str, ...] = (
    "kms:EncryptionContextKeys", "kms:CallerAccount", "kms:ViaService", "kms:GrantOperations",
    "kms:GrantIsForAWSResource", "kms:RequestAlias", "kms:ResourceAliases", "kms:KeySpec",
    "kms:KeyUsage", "kms:KeyOrigin", "kms:MultiRegion", "kms:MultiRegionKeyType",
    "kms:EncryptionAlgorithm", "kms:SigningAlgorithm", "kms:MacAlgorithm",
    "kms:RotationPeriodInDays", "kms:ScheduleKeyDeletionPendingWindowInDays",
    "kms:GrantConstraintType", "kms:RetiringPrincipal", "kms:GranteePrincipal",
    "aws:PrincipalArn", "aws:PrincipalAccount", "aws:PrincipalOrgID", "aws:TagKeys",
)
#: keys whose suffix is free text (an encryption context key or a tag key)
PREFIX_KEYS: tuple[str, ...] = (
    "kms:EncryptionContext:", "aws:PrincipalTag/", "aws:ResourceTag/", "aws:RequestTag/",
)
MULTIVALUED_KEYS = frozenset(
    {"kms:EncryptionContextKeys", "aws:TagKeys", "kms:GrantOperations", "kms:ResourceAliases"}
)
NUMERIC_KEYS = frozenset({"kms:RotationPeriodInDays", "kms:ScheduleKeyDeletionPendingWindowInDays"})
BOOL_KEYS = frozenset({"kms:GrantIsForAWSResource", "kms:MultiRegion"})
#: keys fully known from the principal and the key alone (who-can analysis evaluates these away)
DETERMINED_KEYS = frozenset(
    {"aws:PrincipalArn", "aws:PrincipalAccount", "aws:PrincipalOrgID", "kms:CallerAccount",
     "kms:KeySpec", "kms:KeyUsage", "kms:KeyOrigin", "kms:MultiRegion", "kms:MultiRegionKeyType",
     "kms:ResourceAliases"}
)
DETERMINED_PREFIXES = ("aws:PrincipalTag/", "aws:ResourceTag/")
#: policy variables allowed in condition values and Resource (prefix keys end with "/")
VARIABLES: tuple[str, ...] = (
    "aws:PrincipalAccount", "aws:PrincipalArn", "aws:PrincipalOrgID", "aws:PrincipalTag/",
)
ESCAPES = {"*": "*", "?": "?", "$": "$"}

_KEYS_BY_LOWER = {k.lower(): k for k in CONDITION_KEYS}


def canonical_key(key: str) -> str | None:
    """The canonical spelling of a condition key (names ignore case), or None if unknown."""
    lower = key.lower()
    known = _KEYS_BY_LOWER.get(lower)
    if known is not None:
        return known
    for prefix in PREFIX_KEYS:
        if lower.startswith(prefix.lower()) and len(key) > len(prefix):
            return prefix + key[len(prefix):]
    return None


def suggest_key(key: str) -> str | None:
    """The closest known condition key, for "did you mean" messages."""
    candidates = {k.lower(): k for k in CONDITION_KEYS}
    tail = re.split(r"[:/]", key)[-1] or "KEY"
    for prefix in PREFIX_KEYS:  # keep the user's own context or tag key as the suffix
        candidates[(prefix + tail).lower()] = prefix + tail
    match = difflib.get_close_matches(key.lower(), list(candidates), n=1, cutoff=0.6)
    return candidates[match[0]] if match else None


@dataclass(frozen=True)
class ParsedOperator:
    """`ForAnyValue:StringLikeIfExists` split into its parts."""

    operator: str
    qualifier: str | None
    if_exists: bool


def parse_operator(name: str) -> ParsedOperator | None:
    """Split an operator name; None when the base operator or qualifier is unknown."""
    qualifier: str | None = None
    base = name
    if ":" in name:
        qualifier, base = name.split(":", 1)
        if qualifier not in QUALIFIERS:
            return None
    if_exists = base.endswith("IfExists") and base != "IfExists"
    if if_exists:
        base = base[: -len("IfExists")]
    if base not in OPERATORS:
        return None
    return ParsedOperator(base, qualifier, if_exists)


def suggest_operator(name: str) -> str | None:
    """The closest valid operator name, keeping the user's qualifier and IfExists suffix."""
    prefix, base = ("", name)
    if ":" in name:
        head, base = name.split(":", 1)
        close = difflib.get_close_matches(head, QUALIFIERS, n=1, cutoff=0.6)
        prefix = (close[0] if close else head) + ":"
    suffix = ""
    if base.lower().endswith("ifexists"):
        base, suffix = base[: -len("IfExists")], "IfExists"
    match = difflib.get_close_matches(base, list(OPERATORS), n=1, cutoff=0.6)
    if not match:
        lowered = {o.lower(): o for o in OPERATORS}
        match = [lowered[base.lower()]] if base.lower() in lowered else []
    if not match:
        return None
    if match[0] == "Null":
        suffix = ""
    return prefix + match[0] + suffix


# --- templates: values with policy variables and wildcards ------------------------------------

_VAR = re.compile(r"\$\{([^}]*)\}")


@dataclass(frozen=True)
class Template:
    """A policy string split into parts: ("text", s) may hold wildcards; ("lit", s) is literal
    (from `${*}` escapes); ("var", key) is a policy variable substituted per request."""

    source: str
    parts: tuple[tuple[str, str], ...]

    @property
    def has_variables(self) -> bool:
        return any(kind == "var" for kind, _ in self.parts)


def parse_template(text: str) -> Template | str:
    """Parse `${...}` references; returns an error message naming an unknown variable."""
    if "${" not in text:
        return Template(text, (("text", text),))
    parts: list[tuple[str, str]] = []
    pos = 0
    for match in _VAR.finditer(text):
        if match.start() > pos:
            parts.append(("text", text[pos:match.start()]))
        name = match.group(1).strip()
        if name in ESCAPES:
            parts.append(("lit", ESCAPES[name]))
        else:
            variable = _canonical_variable(name)
            if variable is None:
                close = difflib.get_close_matches(name, list(VARIABLES), n=1, cutoff=0.6)
                hint = f"; did you mean '${{{close[0]}}}'?" if close else ""
                return f"unknown policy variable '${{{name}}}'{hint}"
            parts.append(("var", variable))
        pos = match.end()
    if pos < len(text):
        parts.append(("text", text[pos:]))
    return Template(text, tuple(parts))


def _canonical_variable(name: str) -> str | None:
    lower = name.lower()
    for variable in VARIABLES:
        if variable.endswith("/"):
            if lower.startswith(variable.lower()) and len(name) > len(variable):
                return variable + name[len(variable):]
        elif lower == variable.lower():
            return variable
    return None


@dataclass(frozen=True)
class Condition:
    """One (operator, key) pair of a statement's Condition block, normalized.

    `values` are strings as IAM compares them (JSON true -> "true", 30 -> "30"); several values
    for one key are alternatives (OR), or for negated operators all must fail to match (NOR).
    """

    operator: str                # base operator, e.g. "StringEquals"
    qualifier: str | None        # "ForAnyValue" | "ForAllValues" | None
    if_exists: bool
    key: str                     # canonical spelling, e.g. "kms:EncryptionContext:tenant"
    values: tuple[str, ...]

    @property
    def operator_name(self) -> str:
        """The operator as written in a policy, e.g. "ForAnyValue:StringLikeIfExists"."""
        head = f"{self.qualifier}:" if self.qualifier else ""
        return head + self.operator + ("IfExists" if self.if_exists else "")

    @property
    def determined(self) -> bool:
        """True when the principal and key alone decide it (no request input needed)."""
        return self.key in DETERMINED_KEYS or self.key.startswith(DETERMINED_PREFIXES)

    def describe(self, values: Sequence[str] | None = None) -> str:
        """Human text, e.g. "kms:EncryptionContext:tenant StringEquals acme" (`values` replaces
        the policy's own, e.g. with policy variables filled in)."""
        shown = self.values if values is None else values
        return f"{self.key} {self.operator_name} {', '.join(shown)}"


# --- evaluation -------------------------------------------------------------------------------

Getter = Callable[["Request"], object]
Check = Callable[["Request"], bool]
_SEQUENCES = (list, tuple, set, frozenset)


def _find(mapping: Mapping[str, object], name: str) -> object:
    """Case-insensitive lookup (tag keys and context keys in conditions ignore case)."""
    value = mapping.get(name)
    if value is not None:
        return value
    lower = name.lower()
    for key, value in mapping.items():
        if key.lower() == lower:
            return value
    return None


def principal_condition_arn(arn: str) -> str:
    """aws:PrincipalArn: for a role session that is the role's ARN, not the session's."""
    if ":assumed-role/" not in arn:
        return arn
    fields = arn.split(":", 5)
    role = fields[5].split("/")[1]
    return f"arn:{fields[1]}:iam::{fields[4]}:role/{role}"


def _attribute(key: str) -> Getter:
    def get(request: Request) -> object:
        value = _find(request.attributes, key)
        if isinstance(value, _SEQUENCES):
            return tuple(value) or None
        return value
    return get


def _suffix_getter(prefix: str, name: str) -> Getter:
    if prefix == "kms:EncryptionContext:":
        return lambda r: _find(r.encryption_context, name)
    if prefix == "aws:PrincipalTag/":
        return lambda r: _find(r.principal.tags, name)
    if prefix == "aws:ResourceTag/":
        return lambda r: _find(r.key.tags, name)
    return _attribute(prefix + name)


_FIXED_GETTERS: dict[str, Getter] = {
    "kms:EncryptionContextKeys": lambda r: tuple(r.encryption_context) or None,
    "aws:PrincipalArn": lambda r: principal_condition_arn(r.principal.arn),
    "aws:PrincipalAccount": lambda r: r.principal.account,
    "kms:CallerAccount": lambda r: r.principal.account,
    "aws:PrincipalOrgID": lambda r: r.principal.org_id,
    "kms:KeySpec": lambda r: r.key.spec,
    "kms:KeyUsage": lambda r: r.key.usage,
    "kms:KeyOrigin": lambda r: r.key.origin,
    "kms:MultiRegion": lambda r: r.key.multi_region,
    "kms:MultiRegionKeyType": lambda r: r.key.multi_region_type,
    "kms:ResourceAliases": lambda r: tuple(r.key.aliases) or None,
}


def getter(key: str) -> Getter:
    """How to read a canonical condition key from a request: None means the key is missing."""
    fixed = _FIXED_GETTERS.get(key)
    if fixed is not None:
        return fixed
    for prefix in PREFIX_KEYS:
        if key.startswith(prefix):
            return _suffix_getter(prefix, key[len(prefix):])
    return _attribute(key)


def compile_template(template: Template, *, pattern: bool) -> Callable[[Request], str | None]:
    """Prepare variable substitution. With `pattern`, the result is a regex in which only the
    policy's own `*`/`?` are wildcards (substituted values and `${*}` escapes match literally).
    The result is None when a variable is missing from the request."""
    pieces: list[tuple[str, Getter | None]] = []
    for kind, text in template.parts:
        if kind == "var":
            pieces.append(("", getter(text)))
        elif pattern:
            pieces.append((_wildcards(text) if kind == "text" else re.escape(text), None))
        else:
            pieces.append((text, None))

    def run(request: Request) -> str | None:
        out: list[str] = []
        for text, get in pieces:
            if get is None:
                out.append(text)
                continue
            value = get(request)
            if value is None or isinstance(value, tuple):
                return None
            out.append(re.escape(_string(value)) if pattern else _string(value))
        return "".join(out)
    return run


def static_text(template: Template, *, pattern: bool) -> str:
    """A variable-free template as plain text, or as a regex when `pattern`."""
    if not pattern:
        return "".join(text for _, text in template.parts)
    return "".join(_wildcards(t) if kind == "text" else re.escape(t) for kind, t in template.parts)


def _wildcards(text: str) -> str:
    return "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in text)


@lru_cache(maxsize=8192)
def _regex(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.DOTALL)


def _string(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _number(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def _arn_parts(arn: str) -> list[str] | None:
    parts = arn.split(":", 5)
    return parts if len(parts) == 6 else None


_NUMERIC: dict[str, Callable[[float, float], bool]] = {
    "num_eq": lambda a, b: a == b, "num_lt": lambda a, b: a < b,
    "num_le": lambda a, b: a <= b, "num_gt": lambda a, b: a > b,
    "num_ge": lambda a, b: a >= b,
}


def _matcher(family: str, values: tuple[str, ...]) -> Callable[[object, Request], bool]:
    """A function (request value, request) -> does it match ANY of the policy values?"""
    templates = [t for t in (parse_template(v) for v in values) if isinstance(t, Template)]
    static = not any(t.has_variables for t in templates)
    pattern = family == "like"
    if static and family in ("eq", "eq_ci"):
        texts = [static_text(t, pattern=False) for t in templates]
        if family == "eq":
            fixed = frozenset(texts)
            return lambda v, r: _string(v) in fixed
        folded = frozenset(t.lower() for t in texts)
        return lambda v, r: _string(v).lower() in folded
    if static and family == "like":
        joined = _regex("|".join(f"(?:{static_text(t, pattern=True)})" for t in templates))
        return lambda v, r: joined.fullmatch(_string(v)) is not None
    if family in ("eq", "eq_ci", "like", "arn"):
        renderers = [compile_template(t, pattern=pattern) for t in templates]
        return _dynamic(family, renderers)
    if family == "bool":
        wanted = frozenset(v.lower() for v in values)
        return lambda v, r: _string(v).lower() in wanted
    compare = _NUMERIC[family]
    numbers = [float(v) for v in values]

    def numeric(v: object, r: Request) -> bool:
        got = _number(v)
        return got is not None and any(compare(got, n) for n in numbers)
    return numeric


def _dynamic(family: str, renderers: list[Callable[[Request], str | None]]
             ) -> Callable[[object, Request], bool]:
    """Matching against values that hold policy variables (or ARN patterns): render per request.
    A variable the request cannot resolve makes the whole statement invalid, as in AWS."""
    def match(v: object, r: Request) -> bool:
        got = _string(v)
        parts = _arn_parts(got) if family == "arn" else None
        if family == "arn" and parts is None:
            return False
        for render in renderers:
            want = render(r)
            if want is None:
                raise Unresolved
            if family == "eq" and want == got:
                return True
            if family == "eq_ci" and want.lower() == got.lower():
                return True
            if family == "like" and _regex(want).fullmatch(got):
                return True
            if family == "arn" and parts is not None:
                wanted = _arn_parts(want)
                if wanted and all(_regex(_wildcards(w)).fullmatch(g)
                                  for w, g in zip(wanted, parts, strict=True)):
                    return True
        return False
    return match


class Unresolved(Exception):
    """A policy variable has no value in this request: AWS then treats the statement as
    invalid, so it neither allows nor denies (not even through a negated operator)."""


def compile_condition(condition: Condition) -> Check:
    """Turn one condition into a fast predicate over requests (built once per policy)."""
    get = getter(condition.key)
    family, negated = OPERATORS[condition.operator]
    if family == "null":
        wants_missing = frozenset(v == "true" for v in condition.values)
        return lambda r: (get(r) is None) in wants_missing
    match = _matcher(family, condition.values)
    qualifier, if_exists = condition.qualifier, condition.if_exists
    missing = True if if_exists or qualifier == "ForAllValues" else (
        False if qualifier == "ForAnyValue" else negated)

    def check(request: Request) -> bool:
        value = get(request)
        if value is None:
            return missing
        try:
            if qualifier is None and not isinstance(value, tuple):
                return match(value, request) != negated
            items = value if isinstance(value, tuple) else (value,)
            if qualifier == "ForAllValues":
                return all(match(i, request) != negated for i in items)
            return any(match(i, request) != negated for i in items)  # ForAnyValue, or a bare set
        except Unresolved:
            return False
    return check
