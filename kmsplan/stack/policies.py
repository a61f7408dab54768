"""Key policies in stacks: inline or `policy_file:`, interpolated, checked by `kmsplan.policy`.

The policy grammar belongs to `kmsplan.policy.document`; this module only finds the document,
interpolates it, hands it over, and maps each problem's JSON path back onto a YAML position. It
also raises the stack-level warnings about risky but legal policies (W700, W701).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from kmsplan.policy import Policy, PolicyError, parse_policy
from kmsplan.policy.document import action_matches
from kmsplan.stack.findings import Finding, finding
from kmsplan.stack.interpolate import interpolate_tree
from kmsplan.stack.loader import Loc, locate, parse_yaml, read_bytes
from kmsplan.stack.model import KeyPolicy

POLICY_MAX_BYTES = 32768
POLICY_FILE_MAX_BYTES = 1024 * 1024

#: report(file, loc, code, message)
Report = Callable[[str, Loc, str, str], None]


@dataclass
class PolicySource:
    """A policy document as written: `tree` is a LocDict tree when positions are known."""

    tree: Any
    file: str  # where problems inside the document are reported
    located: bool  # False: report every problem at `fallback`
    fallback: Loc
    findings: list[Finding]


def inside(path: str, roots: tuple[str, ...]) -> bool:
    """Whether `path` (symlinks resolved) lies in one of `roots` (real paths; none: anywhere).

    A stack planned in CI on a pull request is untrusted input read with the pipeline's
    credentials: a `policy_file: ../../etc/...`, or a stack file that is a link out of the folder,
    must not pull files from elsewhere on the runner into a plan that is posted as a comment."""
    resolved = os.path.realpath(path)
    return not roots or any(os.path.commonpath([resolved, root]) == root for root in roots)


class PolicyFiles:
    """Loads each `policy_file:` once, however many keys and replicas share it."""

    def __init__(self, preloaded: dict[str, Any] | None = None, roots: tuple[str, ...] = ()) -> None:
        self._cache: dict[str, PolicySource] = {}
        self._preloaded = preloaded or {}  # real path -> Document already parsed by discovery
        self._roots = roots  # the folders given to validate/plan: policy files must stay inside

    def load(self, real: str, display: str, report: Report, ref_file: str,
             ref_loc: Loc) -> PolicySource:
        """The document at `real`; problems reading it are reported once. A document without
        positions reports its problems at the `policy_file:` field that names it."""
        if real not in self._cache:
            self._cache[real] = self._read(real, display, ref_file, ref_loc)
            for item in self._cache[real].findings:
                report(item.file, (item.line, item.col), item.code, item.message)
        source = self._cache[real]
        if source.located:
            return source
        return replace(source, file=ref_file, fallback=ref_loc)

    def _read(self, real: str, display: str, ref_file: str, ref_loc: Loc) -> PolicySource:
        if not inside(real, self._roots):
            return PolicySource(None, ref_file, False, ref_loc, [_f(
                ref_file, ref_loc, "E704", f"policy_file '{display}' is outside the folder(s) the stack was given "
                                           "in; move it inside (kmsplan reads no file outside the stack)")])
        document = self._preloaded.get(real)
        if document is None:
            if not os.path.isfile(real):
                return PolicySource(None, ref_file, False, ref_loc, [_f(
                    ref_file, ref_loc, "E703", f"policy_file '{display}' does not exist")])
            data, findings = read_bytes(real, display, POLICY_FILE_MAX_BYTES)
            if data is None:
                return PolicySource(None, display, False, (1, 1), findings)
            if real.endswith(".json"):
                return _json_source(data, display, ref_file, ref_loc)
            document = parse_yaml(data, display)
        return PolicySource(document.data, document.file, True, (1, 1), list(document.findings))


def _f(file: str, loc: Loc, code: str, message: str) -> Finding:
    return finding(file, loc[0], loc[1], code, message)


def _json_source(data: bytes, display: str, ref_file: str, ref_loc: Loc) -> PolicySource:
    """JSON decides what the document is; the YAML loader only lends positions when it reads
    the same document (it misses a few JSON spellings, such as surrogate-pair escapes)."""
    duplicates: list[str] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, value in items:
            if name in out:
                duplicates.append(name)
            out[name] = value
        return out

    try:
        decoded = json.loads(data.decode("utf-8"), object_pairs_hook=pairs)
    except UnicodeDecodeError:
        return PolicySource(None, display, False, (1, 1),
                            [_f(display, (1, 1), "E102", "policy file is not UTF-8 text")])
    except json.JSONDecodeError as err:
        return PolicySource(None, display, False, (1, 1), [_f(
            display, (err.lineno, err.colno), "E703", f"policy file is not valid JSON: {err.msg}")])
    located = parse_yaml(data, display)
    if located.data is not None and located.data == decoded:
        return PolicySource(located.data, display, True, (1, 1), list(located.findings))
    findings = [_f(ref_file, ref_loc, "E104", f"policy file '{display}' repeats the field "
                                              f"'{name}'; JSON keeps only the last one")
                for name in dict.fromkeys(duplicates)]
    return PolicySource(decoded, ref_file, False, ref_loc, findings)


class PolicyChecker:
    """Checks one key's policy for the key and each replica, reusing the result when a
    replica's interpolated document is the key's."""

    def __init__(self, account: str, report: Report) -> None:
        self.account = account
        self.report = report
        self._memo: dict[tuple[int, str], KeyPolicy | None] = {}

    def check(self, source: PolicySource, names: dict[str, str], where: str,
              owner: str, warn_loc: tuple[str, Loc]) -> KeyPolicy | None:
        """The checked policy, or None after reporting why not. `where` prefixes problems
        inside the document ("" for a policy file); `owner` names the key or replica for W701,
        reported at `warn_loc` (the policy or policy_file field)."""
        if source.tree is None:
            return None

        def at(loc: Loc) -> tuple[str, Loc]:
            return (source.file, loc) if source.located else (source.file, source.fallback)

        unresolved = False

        def report_interpolation(loc: Loc, code: str, message: str) -> None:
            nonlocal unresolved
            unresolved = True
            file, place = at(loc)
            self.report(file, place, code, _message(where, (), message))

        document = interpolate_tree(source.tree, names, report_interpolation, source.fallback)
        if unresolved:
            return None  # the grammar check would only repeat the broken reference
        try:
            memo_key = (id(source.tree), json.dumps(document, sort_keys=True, allow_nan=False))
        except (TypeError, ValueError):
            file, place = at((1, 1))
            self.report(file, place, "E700", _message(
                where, (), "the policy holds a value JSON cannot represent (such as .inf)"))
            return None
        if memo_key in self._memo:
            return self._memo[memo_key]
        result = self._parse(document, source, where, at, (owner, warn_loc))
        self._memo[memo_key] = result
        return result

    def _parse(self, document: Any, source: PolicySource, where: str,
               at: Callable[[Loc], tuple[str, Loc]],
               warn: tuple[str, tuple[str, Loc]]) -> KeyPolicy | None:
        try:
            policy = parse_policy(document, kind="key", max_bytes=POLICY_MAX_BYTES)
        except PolicyError as err:
            for problem in err.problems:
                file, place = at(locate(source.tree, problem.path))
                code = "E701" if problem.code == "P002" else "E700"
                detail = (problem.message.replace(";", " after interpolation;", 1)
                          if code == "E701" else problem.message)
                self.report(file, place, code,
                            _message(where, problem.path, f"{detail} [{problem.code}]"))
            return None
        self._warn(policy, source, where, at, warn)
        return KeyPolicy(policy, policy.text)

    def _warn(self, policy: Policy, source: PolicySource, where: str,
              at: Callable[[Loc], tuple[str, Loc]], warn: tuple[str, tuple[str, Loc]]) -> None:
        listed = isinstance(source.tree, list) or isinstance(
            source.tree.get("Statement") if isinstance(source.tree, dict) else None, list)
        root = f"arn:aws:iam::{self.account}:root"
        has_root = has_admin = False
        for statement in policy.statements:
            if not statement.is_allow:
                continue
            principals = statement.principals or ()
            if "*" in principals and not statement.conditions:
                path = ("Statement", statement.index) if listed else ("Statement",)
                file, place = at(locate(source.tree, path))
                self.report(file, place, "W700", _message(
                    where, path, f"statement {statement.label} allows Principal \"*\" (anyone) "
                    "without a Condition; add a condition such as aws:PrincipalOrgID or name "
                    "the principals"))
            if statement.not_principals is not None:
                continue
            if root in principals and _covers_all(statement):
                has_root = True
            named = [p for p in principals if p.startswith("arn:")]
            if named and _allows(statement, "kms:PutKeyPolicy"):
                has_admin = True
        if not has_root and not has_admin:
            owner, (file, place) = warn
            self.report(file, place, "W701",
                        f"{owner}: the policy has no statement allowing kms:* to the account "
                        f"root ({root}) and no named administrator allowed kms:PutKeyPolicy; "
                        "nobody may be able to change it later")


def _allows(statement: Any, action: str) -> bool:
    if statement.actions is not None:
        return any(action_matches(pattern, action) for pattern in statement.actions)
    return not any(action_matches(pattern, action) for pattern in statement.not_actions or ())


def _covers_all(statement: Any) -> bool:
    return statement.actions is not None and any(
        a == "*" or a.lower() == "kms:*" for a in statement.actions)


def _message(where: str, path: tuple[Any, ...], text: str) -> str:
    """`keys.k.policy.Statement[0].Principal: text`; a shared policy file's problems carry
    no key name, so the same problem seen through several keys is reported once."""
    steps = ""
    for step in path:
        steps += f"[{step}]" if isinstance(step, int) else (f".{step}" if steps else str(step))
    if where.endswith(")"):  # "keys.k.policy_file (p.json)": a file without positions
        head = f"{where} {steps}".strip()
    else:
        head = where + ("." if where and steps and not steps.startswith("[") else "") + steps
    return f"{head}: {text}" if head else text

