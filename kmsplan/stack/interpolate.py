"""`${...}` interpolation: `${var.NAME}`, `${account}`, `${region}` and `${stack}`.

IAM policy variables share the syntax (`${aws:PrincipalTag/tenant}`, `${*}`), so a reference whose
name contains a colon, or is `*`, `?` or `$`, is left for IAM to evaluate; `$${...}` writes a
literal `${...}`. Anything else that is not a known variable is an error with a suggestion.
Interpolation only touches strings, and copies: one aliased YAML node used by two keys in two
regions gets two different results.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping
from typing import Any

from kmsplan.stack.loader import Loc, LocDict, LocList

_REFERENCE = re.compile(r"\$(\$?)\{([^}]*)\}")
_IAM_SPECIAL = frozenset({"*", "?", "$"})

#: (code, message) problems for one string
Problems = list[tuple[str, str]]
OnProblem = Callable[[Loc, str, str], None]


def scope(account: str, stack: str, region: str, variables: Mapping[str, str]) -> dict[str, str]:
    """The names visible to `${...}` in one place (a key, or one of its replicas)."""
    names = {f"var.{name}": value for name, value in variables.items()}
    names.update(account=account, stack=stack, region=region)
    return names


def interpolate(text: str, names: Mapping[str, str]) -> tuple[str, Problems]:
    """`text` with references replaced, and the problems found in it."""
    if "$" not in text:
        return text, []
    problems: Problems = []

    def replace(match: re.Match[str]) -> str:
        if match.group(1):  # $${...}: a literal ${...}
            return match.group(0)[1:]
        name = match.group(2).strip()
        if name in names:
            return names[name]
        if ":" in name or name in _IAM_SPECIAL:
            return match.group(0)  # an IAM policy variable
        if not name:
            problems.append(("E305", "empty reference '${}'"))
        else:
            problems.append(("E303", _unknown(name, names)))
        return match.group(0)

    result = _REFERENCE.sub(replace, text)
    rest = _REFERENCE.sub("", text)
    if "${" in rest:
        message = (f"unclosed '${{' in {text!r}; close it with '}}' or write '$${{' for a "
                   "literal")
        problems.append(("E305", message))
    return result, problems


def _unknown(name: str, names: Mapping[str, str]) -> str:
    message = f"unknown variable '${{{name}}}'"
    defined = sorted(n[4:] for n in names if n.startswith("var."))
    if name.startswith("var."):
        close = difflib.get_close_matches(name[4:], defined, n=1, cutoff=0.6)
        if close:
            return f"{message}; did you mean '${{var.{close[0]}}}'?"
        listed = ", ".join(defined) if defined else "none"
        return f"{message}; define it under 'vars:' (defined: {listed})"
    candidates = ["account", "region", "stack"] + [f"var.{n}" for n in defined]
    close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
    if close:
        return f"{message}; did you mean '${{{close[0]}}}'?"
    return f"{message}; known: ${{account}}, ${{region}}, ${{stack}}, ${{var.NAME}}"


def interpolate_at(text: str, names: Mapping[str, str], loc: Loc, report: OnProblem) -> str:
    result, problems = interpolate(text, names)
    for code, message in problems:
        report(loc, code, message)
    return result


def interpolate_tree(node: Any, names: Mapping[str, str], report: OnProblem,
                     loc: Loc = (1, 1)) -> Any:
    """A plain-`dict`/`list` copy of `node` with every string (and mapping key) interpolated."""
    if isinstance(node, str):
        return interpolate_at(node, names, loc, report) if "$" in node else node
    if isinstance(node, LocDict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            new_key = interpolate_at(key, names, node.key_loc(key), report) if "$" in key else key
            out[new_key] = interpolate_tree(value, names, report, node.value_loc(key))
        return out
    if isinstance(node, LocList):
        return [interpolate_tree(item, names, report, node.value_loc(i))
                for i, item in enumerate(node)]
    if isinstance(node, dict):
        return {k: interpolate_tree(v, names, report, loc) for k, v in node.items()}
    if isinstance(node, list):
        return [interpolate_tree(v, names, report, loc) for v in node]
    return node
