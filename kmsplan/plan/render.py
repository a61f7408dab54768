"""Explaining a plan, a drift report and an apply's results: text, JSON and Markdown (STYLE 1, 7).

Pure functions over the same immutable `Plan` the applier executes, so what a reviewer reads is
what apply does. Every change becomes a list of `_Line`s once; the terminal layout indents them
and the Markdown layout puts the sign in column 0, where a ```diff block colours it.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterable, Sequence
from itertools import groupby
from typing import Any, NamedTuple, Protocol

import click

from kmsplan.errors import KmsplanError
from kmsplan.plan.model import (
    ALIAS, CREATE, DELETE, FORMAT_VERSION, GRANT, REPLACE, UPDATE, Change, Drift, Finding, Plan,
)
from kmsplan.plan.policies import canonical, statement_diff, statement_label

NO_CHANGES = "No changes. The live store matches the stack."
NO_DRIFT = "No drift: the live store matches the stack."
DRIFT_LEGEND = "Drift: + only in the stack, - only in the live store, ~ differs."

#: what a create shows, in reading order; None values are left out unless known only after apply
_SHOWN = {
    "key": ("spec", "usage", "multi_region", "primary_region", "origin", "description", "enabled", "rotation",
            "protect", "deletion_window_days", "bypass_policy_lockout_safety_check", "tags", "policy"),
    ALIAS: ("target", "target_key_id"),
    GRANT: ("grantee", "operations", "constraints", "retiring_principal", "grant_id"),
}
#: what a delete shows: enough to recognise the resource
_IDENTITY = {"key": ("description", "spec", "usage"), ALIAS: ("target", "target_key_id"),
             GRANT: ("grant_id", "grantee", "operations")}
_KNOWN_AFTER_APPLY = ("grant_id", "target_key_id")
#: at their defaults these say nothing a reviewer needs
_DEFAULTS = {"origin": "AWS_KMS", "bypass_policy_lockout_safety_check": False}
#: a request option, not state: noted next to the policy, never shown as a changed attribute
_BYPASS = "bypass_policy_lockout_safety_check"
_COLORS = {"+": "green", "~": "yellow", "-": "red", "!": "red"}


class _Line(NamedTuple):
    sign: str    # "+", "-", "~", "-/+", "!" or "" for commentary
    depth: int
    text: str


class StepOutcome(Protocol):
    """What `render_results_*` reads of kmsplan.plan.apply.StepResult."""

    @property
    def address(self) -> str: ...
    @property
    def actions(self) -> tuple[str, ...]: ...
    @property
    def status(self) -> str: ...
    @property
    def detail(self) -> str: ...

    def to_data(self) -> dict[str, Any]: ...


# --- values ------------------------------------------------------------------------------

def _value(v: Any) -> str:
    """One value as compact JSON: strings quoted and escaped, None as null, never a repr()."""
    return json.dumps(v, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _sign(actions: Sequence[str]) -> str:
    return "-/+" if tuple(actions) == REPLACE else {CREATE: "+", UPDATE: "~", DELETE: "-"}.get(actions[0], " ")


# --- shared line builders ----------------------------------------------------------------

def _policy_lines(before: Any, after: Any, depth: int) -> list[_Line]:
    """Statement-level: a reviewer needs which statements move, not two pages of JSON."""
    try:
        old, new = (canonical(p) if p is not None else [] for p in (before, after))
    except KmsplanError as error:  # a live policy edited out of band may not even parse
        return [_Line("~", depth, f"replaced whole, not comparable by statement: {error.message}")]
    by_label = {statement_label(s): s for s in old + new}
    lines = []
    for sign, label in statement_diff(old, new):
        lines.append(_Line(sign, depth, f"statement {label}"))
        if sign == "~":
            lines += _statement_detail(old, new, label, depth + 1)
        elif label == by_label[label].get("Sid"):  # a Sid alone says nothing of what it allows
            lines.append(_Line("", depth + 1, statement_label({**by_label[label], "Sid": None})))
    return lines or [_Line("~", depth, "reformatted only (the statements are the same)")]


def _statement_detail(old: list[dict[str, Any]], new: list[dict[str, Any]], sid: str, depth: int) -> list[_Line]:
    """Inside one statement changed in place: which actions, principals, ... come and go."""
    before = next((s for s in old if s.get("Sid") == sid), {})
    after = next((s for s in new if s.get("Sid") == sid), {})
    lines = []
    for field in sorted(set(before) | set(after)):
        a, b = before.get(field), after.get(field)
        if a == b:
            continue
        if isinstance(a, list) or isinstance(b, list):
            lines += [_Line("-", depth, f"{field} {v}") for v in a or [] if v not in (b or [])]
            lines += [_Line("+", depth, f"{field} {v}") for v in b or [] if v not in (a or [])]
        else:
            lines.append(_Line("~", depth, f"{field}: {_value(a)} -> {_value(b)}"))
    return lines


def _mapping_lines(before: dict[str, Any], after: dict[str, Any], depth: int) -> list[_Line]:
    """Per-key diff of two mappings (tags, rotation, a grant)."""
    lines = []
    for name in sorted(set(before) | set(after)):
        if name not in after:
            lines.append(_Line("-", depth, f"{name} = {_value(before[name])}"))
        elif name not in before:
            lines.append(_Line("+", depth, f"{name} = {_value(after[name])}"))
        elif before[name] != after[name]:
            lines.append(_Line("~", depth, f"{name}: {_value(before[name])} -> {_value(after[name])}"))
    return lines


def _changed_lines(name: str, before: Any, after: Any, depth: int) -> list[_Line]:
    if name == "policy":
        return [_Line("~", depth, "policy:"), *_policy_lines(before, after, depth + 1)]
    if isinstance(before, dict) and isinstance(after, dict):
        return [_Line("~", depth, f"{name}:"), *_mapping_lines(before, after, depth + 1)]
    shown = "(known after apply)" if after is None and name in _KNOWN_AFTER_APPLY else _value(after)
    return [_Line("~", depth, f"{name}: {_value(before)} -> {shown}")]


def _listed_lines(sign: str, attributes: dict[str, Any], names: Sequence[str], depth: int) -> list[_Line]:
    """A whole resource, for a create ("+") or a delete ("-"), `=` aligned as Terraform does."""
    shown = [n for n in names if n in attributes and (n not in _DEFAULTS or _DEFAULTS[n] != attributes[n])
             and (attributes[n] is not None or n in _KNOWN_AFTER_APPLY and sign == "+")]
    width = max((len(n) for n in shown), default=0)
    lines = []
    for name in shown:
        v = attributes[name]
        if name == "policy":  # only creates list these two: a delete shows what identifies the key
            lines += [_Line(sign, depth, "policy:"), *_policy_lines(None, v, depth + 1)]
        elif name == "tags" and v:
            lines += [_Line(sign, depth, "tags:"), *_mapping_lines({}, v, depth + 1)]
        else:
            lines.append(_Line(sign, depth, f"{name:<{width}} = {'(known after apply)' if v is None else _value(v)}"))
    return lines


# --- a plan ------------------------------------------------------------------------------

def _deletion_note(change: Change) -> str | None:
    if not change.deletion_date:
        return None
    window = (change.before or {}).get("deletion_window_days")
    return f"deletion scheduled on {change.deletion_date[:10]}" + (f" ({window}-day window)" if window else "")


def _change_lines(change: Change) -> list[_Line]:
    """Header, reason, then the attributes a reviewer must check for this action."""
    family = change.kind if change.kind in (ALIAS, GRANT) else "key"  # a replica shows as a key does
    lines = [_Line(_sign(change.actions), 0, f"{change.address} ({change.kind}, {change.region})")]
    if change.reason:
        lines.append(_Line("", 2, f"# {change.reason}"))
    if change.actions == (CREATE,):
        lines += _listed_lines("+", change.after or {}, _SHOWN[family], 2)
    elif change.actions == (DELETE,):
        note = _deletion_note(change)
        lines += [_Line("!", 2, note)] if note else []
        identity = {**(change.before or {}), "key_id": change.key_id}
        lines += _listed_lines("-", identity, ("key_id",) * (family == "key") + _IDENTITY[family], 2)
    else:
        before, after = change.before or {}, change.after or {}
        for name in change.changed_attributes():
            if name != _BYPASS:
                lines += _changed_lines(name, before.get(name), after.get(name), 2)
        if after.get(_BYPASS) and "policy" in change.changed_attributes():
            lines.append(_Line("", 2, "# the policy is put with BypassPolicyLockoutSafetyCheck"))
    return lines


def _layout_text(lines: Iterable[_Line], color: bool) -> list[str]:
    out = []
    for line in lines:
        sign = line.sign
        if color and sign:
            sign = "/".join(click.style(s, fg=_COLORS[s], bold=line.depth == 0 or None) for s in sign.split("/"))
        text = click.style(line.text, fg="red", bold=True) if color and line.sign == "!" else line.text
        out.append("  " * line.depth + (f"{sign} " if sign else "") + text)
    return out


def _layout_diff(lines: Iterable[_Line]) -> list[str]:
    """Sign first, where GitHub's diff highlighting looks for it."""
    return [f"{line.sign or ' '} " + "  " * line.depth + line.text for line in lines]


def _ordered_findings(findings: Iterable[Finding]) -> list[Finding]:
    return sorted(findings, key=lambda f: not f.is_error)  # stable: guard order within a severity


def render_text(plan: Plan, color: bool = False) -> str:
    """Findings first (they decide whether the plan may be applied), then the changes."""
    out = []
    for finding in _ordered_findings(plan.findings):
        label = "Error" if finding.is_error else "Warning"
        if color:
            label = click.style(label, fg="red" if finding.is_error else "yellow", bold=True)
        out.append(f"{label} {finding.code} {finding.address}: {finding.message}")
        if finding.hint:
            out.append(f"    {finding.hint}")
    out += [""] if out else []
    for change in plan.effective:
        out += _layout_text(_change_lines(change), color) + [""]
    unchanged = len(plan.changes) - len(plan.effective)
    if plan.effective and unchanged:
        out.append(f"{unchanged} unchanged (not shown).")
    verdict = plan.summary_line() if plan.effective else NO_CHANGES
    out.append(click.style(verdict, bold=True) if color else verdict)
    errors = sum(f.is_error for f in plan.findings)
    if errors:
        out.append(f"{_plural(errors, 'error')}: apply refuses this plan until they are fixed.")
    return "\n".join(out) + "\n"


def _resource_change(change: Change) -> dict[str, Any]:
    """One change in the shape of `terraform show -json`'s resource_changes."""
    return {"address": change.address, "type": change.kind, "region": change.region,
            "change": {"actions": list(change.actions), "before": change.before, "after": change.after},
            "reason": change.reason, "key_id": change.key_id, "deletion_date": change.deletion_date}


def render_json(plan: Plan) -> str:
    """schemas/plan.schema.json. `changes` is the signed body (a saved plan is read back from
    it); `resource_changes` is the same list in Terraform's shape, for tools that know that."""
    data = {**plan.to_data(), "resource_changes": [_resource_change(c) for c in plan.changes]}
    return json.dumps(data, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


# --- Markdown ----------------------------------------------------------------------------

def cell(text: str) -> str:
    """Table-safe: no HTML, no column breaks, no runaway code spans, one line."""
    text = html.escape(text, quote=False).replace("|", "\\|").replace("`", "\\`")
    return " ".join(text.splitlines()) or " "


def _fenced(lines: list[str]) -> list[str]:
    """A diff block whose fence is longer than any backtick run inside it."""
    longest = max((len(run) for run in re.findall(r"`+", "\n".join(lines))), default=0)
    return ["`" * max(3, longest + 1) + "diff", *lines, "`" * max(3, longest + 1)]


def _details(summary: str, lines: list[_Line]) -> list[str]:
    return [f"<details><summary>{html.escape(summary)}</summary>", "", *_fenced(_layout_diff(lines)),
            "", "</details>", ""]


def _findings_table(findings: Sequence[Finding]) -> list[str]:
    rows = [f"| {cell(f.code)} | {cell(f.severity)} | {cell(f.address)} | {cell(f.message)} | {cell(f.hint)} |"
            for f in _ordered_findings(findings)]
    return ["| Code | Severity | Address | Message | Hint |", "| --- | --- | --- | --- | --- |", *rows, ""]


def render_markdown(plan: Plan) -> str:
    """A pull-request comment: the verdict first, each change collapsible."""
    out = [f"### kmsplan plan: {cell(plan.stack)}", ""]
    out += [f"**{plan.summary_line() if plan.effective else NO_CHANGES}**", ""]
    if plan.findings:
        errors = sum(f.is_error for f in plan.findings)
        warnings = _plural(len(plan.findings) - errors, "warning")
        out += [f"#### Guard findings ({_plural(errors, 'error')}, {warnings})", "", *_findings_table(plan.findings)]
    for change in plan.effective:
        summary = f"{_sign(change.actions)} {change.address} ({change.kind}, {change.region}): " \
                  f"{' then '.join(change.actions)}"
        note = _deletion_note(change)
        out += _details(summary + (f", {note}" if note else ""), _change_lines(change))
    unchanged = len(plan.changes) - len(plan.effective)
    if plan.effective and unchanged:
        out += [f"_{unchanged} unchanged (not shown)._", ""]
    return "\n".join(out).rstrip("\n") + "\n"


# --- drift -------------------------------------------------------------------------------

def _drift_lines(item: Drift) -> list[_Line]:
    """`address: attribute: live <v> != declared <v>`, or a statement/key diff for mappings."""
    sign = {"exists": "+", "undeclared": "-"}.get(item.attribute, "~")
    head = f"{item.address}: {item.attribute}"
    body: list[_Line] = []
    if item.attribute == "policy":
        body = _policy_lines(item.live, item.declared, 2)
    elif isinstance(item.live, dict) and isinstance(item.declared, dict):  # a declared grant has no id yet
        skip = {k for k in _KNOWN_AFTER_APPLY if item.declared.get(k) is None}
        body = _mapping_lines({k: v for k, v in item.live.items() if k not in skip},
                              {k: v for k, v in item.declared.items() if k not in skip}, 2)
    elif item.attribute == "undeclared" and isinstance(item.live, dict):
        body = _mapping_lines(item.live, {}, 2)
    elif item.attribute not in ("exists", "undeclared"):
        head += f": live {_value(item.live)} != declared {_value(item.declared)}"
    return [_Line(sign, 0, head), _Line("", 2, f"# {item.message}"), *body]


def _grouped(items: Sequence[Drift]) -> list[tuple[str, list[Drift]]]:
    ordered = sorted(items, key=lambda d: (d.address, d.attribute))
    return [(address, list(group)) for address, group in groupby(ordered, key=lambda d: d.address)]


def _drift_count(items: Sequence[Drift]) -> str:
    return f"{_plural(len(items), 'drifted attribute')} on {_plural(len(_grouped(items)), 'resource')}"


def render_drift_text(items: Sequence[Drift], color: bool = False) -> str:
    """Per address, live against declared, in the signs a plan would use to put it back."""
    if not items:
        return NO_DRIFT + "\n"
    out = [DRIFT_LEGEND, ""]
    for _, group in _grouped(items):
        for item in group:
            out += _layout_text(_drift_lines(item), color)
        out.append("")
    out.append(_drift_count(items) + ".")
    return "\n".join(out) + "\n"


def render_drift_json(items: Sequence[Drift], stack: str) -> str:
    """Versioned like the plan; `drifted` saves a CI job from counting."""
    data = {"format_version": FORMAT_VERSION, "stack": stack, "drifted": bool(items),
            "drift": [d.to_data() for d in sorted(items, key=lambda d: (d.address, d.attribute))]}
    return json.dumps(data, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def render_drift_markdown(items: Sequence[Drift], stack: str) -> str:
    """An issue or PR comment: one collapsible diff per drifted resource."""
    out = [f"### kmsplan drift: {cell(stack)}", ""]
    if not items:
        return "\n".join(out + [f"**{NO_DRIFT}**"]) + "\n"
    out += [f"**{_drift_count(items)}.** {DRIFT_LEGEND}", ""]
    for address, group in _grouped(items):
        lines = [line for item in group for line in _drift_lines(item)]
        out += _details(f"{address} ({group[0].kind}, {group[0].region}): "
                        f"{', '.join(d.attribute for d in group)}", lines)
    return "\n".join(out).rstrip("\n") + "\n"


# --- apply results -----------------------------------------------------------------------

_STATUSES = ("done", "already so", "failed", "not run")  # kmsplan.plan.apply's, in the order told


def _counts(results: Sequence[StepOutcome]) -> dict[str, int]:
    found = [r.status for r in results]
    return {status: found.count(status) for status in (*_STATUSES, *sorted(set(found) - set(_STATUSES)))
            if status in found}


def render_results_text(results: Sequence[StepOutcome]) -> str:
    """In apply order, each step's status: after a failure, what was done and what was not."""
    if not results:
        return "Nothing to apply.\n"
    width = max(len(r.status) for r in results)
    out = [f"{r.status:<{width}}  {_sign(r.actions)} {r.address}" + (f": {r.detail}" if r.detail else "")
           for r in results]
    finished = all(r.status in _STATUSES[:2] for r in results)
    counts = ", ".join(f"{n} {status}" for status, n in _counts(results).items())
    out += ["", f"Apply {'complete' if finished else 'stopped'}: {counts}."]
    return "\n".join(out) + "\n"


def render_results_json(results: Sequence[StepOutcome], ok: bool) -> str:
    """Every step, run or not, so automation can tell a partial apply from a finished one."""
    data = {"format_version": FORMAT_VERSION, "ok": ok, "summary": _counts(results),
            "results": [r.to_data() for r in results]}
    return json.dumps(data, sort_keys=True, indent=2, ensure_ascii=False) + "\n"
