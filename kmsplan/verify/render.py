"""A verify report as text (people), JSON (tools) or Markdown (a pull-request or issue comment)."""

from __future__ import annotations

import json
from itertools import groupby

import click

from kmsplan.plan.render import cell
from kmsplan.verify.model import Check, Report


def _where(check: Check) -> str:
    return f"{check.address} ({check.region})" if check.address else "this run"


def render_text(report: Report, color: bool = False) -> str:
    """Per copy, each check with its evidence; failures in capitals; the verdict last."""
    out = [f"Verify stack {report.stack} as {report.principal}", ""]
    width = max((len(c.label) for c in report.checks), default=0)
    for where, group in groupby(report.checks, key=_where):
        out.append(where)
        for check in group:
            status = click.style("pass", fg="green") if check.passed else click.style("FAIL", fg="red", bold=True)
            out.append(f"  {status}  {check.label:<{width}}  {check.evidence}")
        out.append("")
    verdict = click.style(report.summary_line(), fg="green" if report.ok else "red")
    text = "\n".join(out + [verdict]) + "\n"
    return text if color else click.unstyle(text)


def render_json(report: Report) -> str:
    """`format_version`, `stack`, `account`, `principal`, `ok`, `summary`, `checks` (docs/verify.md)."""
    return json.dumps(report.to_data(), indent=2, sort_keys=True) + "\n"


def _table(checks: list[Check]) -> list[str]:
    rows = [f"| {cell(c.address or 'this run')} | {cell(c.region or '')} | {cell(c.label)} | {cell(c.evidence)} |"
            for c in checks]
    return ["| Address | Region | Check | Evidence |", "| --- | --- | --- | --- |", *rows, ""]


def render_markdown(report: Report) -> str:
    """The verdict first, failures in a table, the passes folded away."""
    out = [f"### kmsplan verify: {cell(report.stack)}", "",
           f"**{report.summary_line()}** Verified as `{cell(report.principal)}`.", ""]
    if report.failed:
        out += ["#### Failed checks", "", *_table(list(report.failed))]
    passed = [c for c in report.checks if c.passed]
    if passed:
        out += [f"<details><summary>{len(passed)} passed check{'' if len(passed) == 1 else 's'}</summary>", "",
                *_table(passed), "</details>", ""]
    return "\n".join(out).rstrip("\n") + "\n"
