"""What a reviewer reads: the text, JSON and Markdown renderings of a plan, a drift report and an
apply's results, built from Plan objects directly (no store needed)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from kmsplan.plan.apply import StepResult
from kmsplan.plan.model import Change, Drift, Finding, Flags, Plan
from kmsplan.plan.render import (
    render_drift_json, render_drift_markdown, render_drift_text, render_json, render_markdown,
    render_results_json, render_results_text, render_text,
)

SCHEMA = json.loads((Path(__file__).resolve().parents[2] / "schemas" / "plan.schema.json").read_text())
ROOT = "arn:aws:iam::111122223333:root"
APP = "arn:aws:iam::111122223333:role/app"
ANSI = re.compile(r"\x1b\[")


def _statement(sid: str, principal: str, *actions: str) -> dict[str, Any]:
    return {"Sid": sid, "Effect": "Allow", "Principal": {"AWS": principal}, "Action": list(actions), "Resource": "*"}


BASE_POLICY = {"Version": "2012-10-17", "Statement": [_statement("Root", ROOT, "kms:*")]}
APP_POLICY = {"Version": "2012-10-17", "Statement": [_statement("Root", ROOT, "kms:*"),
                                                     _statement("AllowApp", APP, "kms:Decrypt")]}


def _key(**overrides: Any) -> dict[str, Any]:
    attributes = {"address": "key.app", "name": "app", "region": "eu-west-1", "spec": "SYMMETRIC_DEFAULT",
                  "usage": "ENCRYPT_DECRYPT", "multi_region": False, "origin": "AWS_KMS", "primary_region": None,
                  "description": "app data", "enabled": True, "pending_deletion": False,
                  "rotation": {"enabled": True, "period_days": 365}, "policy": BASE_POLICY,
                  "tags": {"env": "prod"}, "protect": False, "deletion_window_days": 30,
                  "bypass_policy_lockout_safety_check": False}
    return {**attributes, **overrides}


def _grant(**overrides: Any) -> dict[str, Any]:
    return {"name": "reader", "grant_id": "g-1", "grantee": APP, "operations": ["Decrypt"], "constraints": None,
            "retiring_principal": None, **overrides}


def _create(address: str = "key.app", **overrides: Any) -> Change:
    return Change(address, "key", "eu-west-1", ("create",), None, _key(address=address, **overrides),
                  "declared, not live")


def _update(before: dict[str, Any], after: dict[str, Any], address: str = "key.app") -> Change:
    return Change(address, "key", "eu-west-1", ("update",), _key(address=address, **before),
                  _key(address=address, **after), "attributes differ", "k-app")


DELETE = Change("key.old", "key", "eu-west-1", ("delete",), _key(address="key.old", description="old data"), None,
                "no longer declared in the stack", "k-old", "2026-12-22T10:00:00+00:00")
REPLACE = Change("grant.app.reader", "grant", "eu-west-1", ("delete", "create"), _grant(),
                 _grant(grant_id=None, operations=["Decrypt", "Encrypt"]),
                 "grants are immutable: a changed grant is replaced", "k-app")
ALIAS = Change("alias[eu-west-1].alias/new", "alias", "eu-west-1", ("create",), None,
               {"name": "alias/new", "region": "eu-west-1", "target": "key.new", "target_key_id": None},
               "declared, not live")
NOOP = Change("key.same", "key", "eu-west-1", ("no-op",), _key(address="key.same"), _key(address="key.same"),
              key_id="k-same")
G101 = Finding("G101", "error", "key.old", "deleting a key needs --allow-delete",
               "plan again with --allow-delete key.old")
G303 = Finding("G303", "warning", "key.app", "role/app loses kms:Encrypt", "")


def _plan(*changes: Change, findings: tuple[Finding, ...] = (), signature: dict[str, str] | None = None) -> Plan:
    return Plan(stack="demo", account="111122223333", principal=ROOT, created_at="2026-11-22T10:00:00+00:00",
                stack_files={"stack.yaml": "a" * 64}, stack_digest="b" * 64, live_fingerprint="c" * 64,
                flags=Flags(allow_delete=("key.old",)), changes=tuple(sorted(changes, key=lambda c: c.address)),
                findings=findings, signature=signature)


EVERYTHING = _plan(_create("key.new"), ALIAS, REPLACE, DELETE, NOOP,
                   _update({"description": "a"}, {"description": "b", "policy": APP_POLICY}),
                   findings=(G303, G101), signature={"algorithm": "HMAC_SHA_256", "mac": "bWFj"})


# --- text --------------------------------------------------------------------------------

def test_summary_counts_a_replacement_as_one_add_and_one_delete() -> None:
    text = render_text(_plan(_create(), REPLACE, DELETE, NOOP))
    assert text.splitlines()[-1] == "Plan: 2 to add, 0 to change, 2 to delete."


def test_create_lists_the_attributes_a_reviewer_checks() -> None:
    text = render_text(_plan(_create(primary_region=None)))
    assert '+ spec                 = "SYMMETRIC_DEFAULT"' in text
    assert "+ deletion_window_days = 30" in text
    assert "+ statement Root" in text
    assert "origin" not in text and "primary_region" not in text  # defaults and nulls say nothing


def test_an_alias_to_a_key_yet_to_be_created_has_its_key_id_known_after_apply() -> None:
    assert "+ target_key_id = (known after apply)" in render_text(_plan(ALIAS))


def test_update_shows_only_the_changed_attributes() -> None:
    text = render_text(_plan(_update({"description": "a"}, {"description": "b"})))
    assert '~ description: "a" -> "b"' in text
    assert not re.search(r"\b(spec|usage|tags|policy|rotation)\b", text)


def test_policy_update_is_statement_level_never_the_whole_document() -> None:
    text = render_text(_plan(_update({}, {"policy": APP_POLICY})))
    assert "+ statement AllowApp" in text
    assert f"Allow kms:Decrypt for {APP}" in text  # what a statement named only by its Sid allows
    assert "Statement" not in text and "2012-10-17" not in text and "statement Root" not in text


def test_a_statement_changed_in_place_names_what_it_gains() -> None:
    wider = {"Version": "2012-10-17", "Statement": [_statement("Root", ROOT, "kms:*"),
                                                    _statement("AllowApp", APP, "kms:Decrypt", "kms:Encrypt")]}
    text = render_text(_plan(_update({"policy": APP_POLICY}, {"policy": wider})))
    assert "~ statement AllowApp" in text
    assert re.search(r"\+ Action kms:encrypt$", text, re.IGNORECASE | re.MULTILINE)


def test_a_removed_statement_is_listed() -> None:
    assert "- statement AllowApp" in render_text(_plan(_update({"policy": APP_POLICY}, {"policy": BASE_POLICY})))


def test_a_live_policy_that_does_not_parse_is_reported_not_raised() -> None:
    text = render_text(_plan(_update({"policy": {"Statement": "nonsense"}}, {})))
    assert "~ policy:" in text and "replaced whole" in text


def test_tags_are_a_per_key_diff() -> None:
    text = render_text(_plan(_update({"tags": {"env": "dev", "x": "1"}}, {"tags": {"env": "prod", "team": "t"}})))
    assert '~ env: "dev" -> "prod"' in text
    assert '+ team = "t"' in text
    assert '- x = "1"' in text


def test_the_lockout_bypass_is_a_note_on_the_policy_not_a_changed_attribute() -> None:
    text = render_text(_plan(_update({}, {"policy": APP_POLICY, "bypass_policy_lockout_safety_check": True})))
    assert "BypassPolicyLockoutSafetyCheck" in text
    assert "bypass_policy_lockout_safety_check:" not in text


def test_a_key_deletion_shows_its_date_and_window() -> None:
    text = render_text(_plan(DELETE))
    assert "! deletion scheduled on 2026-12-22 (30-day window)" in text
    assert '- key_id      = "k-old"' in text


def test_a_grant_replacement_is_marked_and_its_new_id_is_unknown() -> None:
    text = render_text(_plan(REPLACE))
    assert text.startswith("-/+ grant.app.reader (grant, eu-west-1)")
    assert '~ operations: ["Decrypt"] -> ["Decrypt","Encrypt"]' in text
    assert '~ grant_id: "g-1" -> (known after apply)' in text


def test_unchanged_resources_are_counted_not_listed() -> None:
    text = render_text(_plan(_create(), NOOP))
    assert "1 unchanged" in text and "key.same" not in text
    assert "unchanged" not in render_text(_plan(_create()))


def test_a_plan_of_no_ops_says_there_is_nothing_to_do() -> None:
    text = render_text(_plan(NOOP))
    assert text == "No changes. The live store matches the stack.\n"


def test_findings_come_first_errors_before_warnings_each_with_its_hint() -> None:
    lines = render_text(EVERYTHING).splitlines()
    assert lines[0] == "Error G101 key.old: deleting a key needs --allow-delete"
    assert lines[1] == "    plan again with --allow-delete key.old"
    assert lines[2] == "Warning G303 key.app: role/app loses kms:Encrypt"
    assert lines[-1] == "1 error: apply refuses this plan until they are fixed."


@pytest.mark.parametrize("color", [False, True])
def test_color_codes_only_when_asked(color: bool) -> None:
    assert bool(ANSI.search(render_text(EVERYTHING, color=color))) is color
    assert bool(ANSI.search(render_drift_text(DRIFT, color=color))) is color


def test_values_are_json_never_python_reprs() -> None:
    text = render_text(_plan(_update({"description": 'say "hi"', "rotation": None},
                                     {"description": "ok", "rotation": {"enabled": False, "period_days": None}})))
    assert r'~ description: "say \"hi\"" -> "ok"' in text
    assert "~ rotation: null -> " in text
    assert "None" not in text and "False" not in text


# --- JSON --------------------------------------------------------------------------------

def test_the_schema_is_valid_2020_12_and_describes_the_output() -> None:
    Draft202012Validator.check_schema(SCHEMA)
    for plan in (EVERYTHING, _plan(), _plan(NOOP)):
        errors = list(Draft202012Validator(SCHEMA).iter_errors(json.loads(render_json(plan))))
        assert not errors, [(list(e.absolute_path), e.message) for e in errors]


@pytest.mark.parametrize("edit", [
    lambda d: d.update(format_version="2.0"),
    lambda d: d.update(surprise=1),
    lambda d: d["resource_changes"][0]["change"].update(actions=["destroy"]),
    lambda d: d["resource_changes"][0]["change"]["after"].update(colour="red"),
])
def test_the_schema_rejects_what_render_json_never_emits(edit) -> None:  # type: ignore[no-untyped-def]
    data = json.loads(render_json(EVERYTHING))
    edit(data)
    assert not Draft202012Validator(SCHEMA).is_valid(data)


def test_resource_changes_are_shaped_like_terraform_show_json() -> None:
    data = json.loads(render_json(EVERYTHING))
    by_address = {rc["address"]: rc for rc in data["resource_changes"]}
    replaced = by_address["grant.app.reader"]
    assert replaced["type"] == "grant" and replaced["change"]["actions"] == ["delete", "create"]
    assert replaced["change"]["before"]["grant_id"] == "g-1" and replaced["change"]["after"]["grant_id"] is None
    assert by_address["key.old"]["deletion_date"] == "2026-12-22T10:00:00+00:00"
    assert by_address["key.same"]["change"]["actions"] == ["no-op"]
    assert data["summary"] == {"add": 3, "change": 1, "delete": 2}
    assert data["format_version"] == "1.0"


def test_json_is_key_sorted_indented_and_ends_with_a_newline() -> None:
    text = render_json(EVERYTHING)
    assert text == json.dumps(json.loads(text), sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def test_a_saved_plan_reads_back_as_the_same_plan_and_signature() -> None:
    back = Plan.from_data(json.loads(render_json(EVERYTHING)))
    assert back == EVERYTHING and back.signature == EVERYTHING.signature


def test_a_value_json_cannot_hold_is_an_error_not_a_repr() -> None:
    with pytest.raises(TypeError):
        render_json(_plan(_create(tags={"env"})))


# --- Markdown ----------------------------------------------------------------------------

def test_markdown_has_heading_bold_summary_and_one_collapsible_diff_per_change() -> None:
    md = render_markdown(EVERYTHING)
    assert md.startswith("### kmsplan plan: demo\n\n**Plan: 3 to add, 1 to change, 2 to delete.**\n")
    assert md.count("<details><summary>") == len(EVERYTHING.effective) == md.count("```diff")
    assert "deletion scheduled on 2026-12-22 (30-day window)</summary>" in md


def test_markdown_findings_table_comes_before_the_changes_and_survives_pipes_and_backticks() -> None:
    odd = Finding("G304", "error", "key.app", "names `role/a|b`", "fix | it")
    md = render_markdown(_plan(_create(), findings=(odd,)))
    assert md.index("| Code | Severity | Address | Message | Hint |") < md.index("<details>")
    row = next(line for line in md.splitlines() if line.startswith("| G304"))
    assert len(re.split(r"(?<!\\)\|", row)) == 7  # five cells, nothing split by the message's pipe
    assert "\\`role/a\\|b\\`" in row


def test_markdown_diff_lines_start_with_their_sign() -> None:
    lines = render_markdown(_plan(_update({"description": "a"}, {"description": "b"}), DELETE)).splitlines()
    assert '~     description: "a" -> "b"' in lines
    assert '-     key_id      = "k-old"' in lines


def test_markdown_fence_outlasts_backticks_in_the_content() -> None:
    md = render_markdown(_plan(_create(description="see ```code```")))
    assert "````diff" in md


def test_markdown_of_no_changes() -> None:
    assert "**No changes. The live store matches the stack.**" in render_markdown(_plan(NOOP))


# --- drift -------------------------------------------------------------------------------

DRIFT = [
    Drift("key.app", "key", "eu-west-1", "description", "old", "new", "description differs"),
    Drift("key.app", "key", "eu-west-1", "policy", BASE_POLICY, APP_POLICY, "policy differs"),
    Drift("key.gone", "key", "eu-west-1", "exists", False, True, "declared in the stack but missing"),
]


@pytest.mark.parametrize(("item", "expected"), [
    (DRIFT[0], ['~ key.app: description: live "old" != declared "new"', "# description differs"]),
    (DRIFT[1], ["~ key.app: policy", "+ statement AllowApp"]),
    (DRIFT[2], ["+ key.gone: exists", "# declared in the stack but missing"]),
    (Drift("key.app", "key", "eu-west-1", "tags", {"env": "dev"}, {"env": "prod", "team": "t"}, "tags differ"),
     ["~ key.app: tags", '~ env: "dev" -> "prod"', '+ team = "t"']),
    (Drift("key.app", "key", "eu-west-1", "rotation", None, {"enabled": True, "period_days": 365}, "rotation"),
     ['~ key.app: rotation: live null != declared {"enabled":true,"period_days":365}']),
    (Drift("key.app", "key", "eu-west-1", "state", "PendingDeletion", "Enabled", "scheduled for deletion"),
     ['~ key.app: state: live "PendingDeletion" != declared "Enabled"']),
    (Drift("alias[eu-west-1].alias/app", "alias", "eu-west-1", "target", "k-other", "key.app", "points elsewhere"),
     ['~ alias[eu-west-1].alias/app: target: live "k-other" != declared "key.app"']),
    (Drift("grant.app.reader", "grant", "eu-west-1", "grant", _grant(), _grant(grant_id=None, grantee=ROOT),
           "the live grant differs"), [f'~ grantee: "{APP}" -> "{ROOT}"']),
    (Drift("grant.app.x", "grant", "eu-west-1", "undeclared", {"grant_id": "g-9", "grantee": APP}, None,
           "created out of band"), ["- grant.app.x: undeclared", '- grantee = "' + APP + '"']),
])
def test_drift_of_each_attribute(item: Drift, expected: list[str]) -> None:
    text = render_drift_text([item])
    for line in expected:
        assert line in text
    assert "grant_id" not in text or item.attribute == "undeclared"  # a declared grant has no id to compare


def test_drift_is_grouped_by_address_and_counted() -> None:
    text = render_drift_text(list(reversed(DRIFT)))
    assert text.index("key.app: description") < text.index("key.app: policy") < text.index("key.gone")
    assert text.splitlines()[-1] == "3 drifted attributes on 2 resources."
    assert "Statement" not in text


def test_no_drift_in_every_format() -> None:
    assert render_drift_text([]) == "No drift: the live store matches the stack.\n"
    assert json.loads(render_drift_json([], "demo")) == {"format_version": "1.0", "stack": "demo", "drift": [],
                                                         "drifted": False}
    assert "**No drift: the live store matches the stack.**" in render_drift_markdown([], "demo")


def test_drift_json_and_markdown() -> None:
    data = json.loads(render_drift_json(DRIFT, "demo"))
    assert data["drifted"] is True and [d["attribute"] for d in data["drift"]] == ["description", "policy", "exists"]
    md = render_drift_markdown(DRIFT, "demo")
    assert md.startswith("### kmsplan drift: demo") and md.count("<details>") == 2 and "```diff" in md


# --- apply results -----------------------------------------------------------------------

RESULTS = [StepResult("key.app", ("create",), "done", "k-app"),
           StepResult("alias[eu-west-1].alias/app", ("update",), "already so"),
           StepResult("grant.app.reader", ("delete", "create"), "failed", "AccessDeniedException: no"),
           StepResult("key.old", ("delete",), "not run")]


def test_results_text_tells_what_was_done_and_what_was_not() -> None:
    lines = render_results_text(RESULTS).splitlines()
    assert lines[0] == "done        + key.app: k-app"
    assert lines[2] == "failed      -/+ grant.app.reader: AccessDeniedException: no"
    assert lines[3] == "not run     - key.old"
    assert lines[-1] == "Apply stopped: 1 done, 1 already so, 1 failed, 1 not run."
    assert render_results_text(RESULTS[:2]).splitlines()[-1] == "Apply complete: 1 done, 1 already so."


def test_results_json() -> None:
    data = json.loads(render_results_json(RESULTS, ok=False))
    assert data["ok"] is False and data["format_version"] == "1.0"
    assert data["results"][2] == {"address": "grant.app.reader", "actions": ["delete", "create"],
                                  "status": "failed", "detail": "AccessDeniedException: no"}
    assert data["summary"] == {"done": 1, "already so": 1, "failed": 1, "not run": 1}
