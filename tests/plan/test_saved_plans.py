"""The reconciler's command line, run as a user runs it (subprocesses, a store of this module's
own): saved signed plans and their refusals, exit codes, drift, import, the apply lock, and the
errors a user meets. Every call checks that no Python traceback reaches the user."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from plan_helpers import (
    ADMIN,
    APP,
    AWAY,
    BATCH,
    HOME,
    ROOT,
    WORKER,
    CliStack,
    assert_error,
    kmsplan,
    progress_lines,
    root_policy,
    write_stack,
)


def three(cli) -> dict:
    """Two keys, an alias and a grant."""
    return {"data": {"description": "v1", "aliases": [cli.alias("data")],
                     "grants": {"reader": {"grantee": APP, "operations": ["Decrypt"]}}},
            "tokens": {"spec": "HMAC_256"}}


def saved(cli, name: str = "plan.json", *extra: str):
    result = cli.plan("--out", str(cli.folder / name), *extra)
    assert result.returncode == 0, result.stderr
    return cli.folder / name


# --- plan --out, apply PLAN, show --------------------------------------------------------

def test_a_saved_plan_is_signed_applied_and_then_nothing_is_left_to_do(cli):
    cli.write(three(cli))
    path = saved(cli)
    assert "Saved the signed plan" in cli.plan("--out", str(path)).stderr
    data = json.loads(path.read_text())
    assert data["format_version"] == "1.0" and data["signature"]["algorithm"] == "HMAC_SHA_256"
    assert data["summary"] == {"add": 4, "change": 0, "delete": 0} and cli.stack_keys() == []

    applied = cli.run("apply", str(path))
    assert applied.returncode == 0, applied.stderr
    assert "Apply complete: 4 added, 0 changed, 0 deleted." in applied.stdout
    assert len(progress_lines(applied.stderr)) == 4
    assert sorted(k["address"] for k in cli.stack_keys()) == ["key.data", "key.tokens"]

    again = cli.plan("--detailed-exitcode")
    assert again.returncode == 0 and "No changes" in again.stdout
    assert cli.run("drift", str(cli.path)).returncode == 0


def test_show_renders_a_saved_plan_in_every_format(cli):
    cli.write(three(cli))
    path = saved(cli)
    text = cli.run("show", str(path))
    assert text.returncode == 0 and "key.data" in text.stdout
    assert "Plan: 4 to add, 0 to change, 0 to delete." in text.stdout
    shown = json.loads(cli.run("show", str(path), "--format", "json").stdout)
    assert shown["changes"] == json.loads(path.read_text())["changes"]
    markdown = cli.run("show", str(path), "--format", "markdown")
    assert markdown.returncode == 0 and "key.data" in markdown.stdout
    assert_error(cli.run("show", str(cli.path)), "not a kmsplan plan")


def test_detailed_exitcode_is_2_for_changes_0_for_none_and_1_for_guard_errors(cli):
    cli.write({"data": {}, "old": {}})
    assert cli.plan().returncode == 0, "without the flag, changes are still success"
    assert cli.plan("--detailed-exitcode").returncode == 2
    assert cli.apply().returncode == 0
    assert cli.plan("--detailed-exitcode").returncode == 0

    cli.write({"data": {}})
    refused = cli.plan("--detailed-exitcode")
    assert_error(refused, "guard errors")
    assert "G101" in refused.stdout and "--allow-delete key.old" in refused.stdout
    assert cli.plan("--detailed-exitcode", "--allow-delete", "key.old").returncode == 2
    assert_error(cli.apply(), "guard errors", "nothing was applied")
    assert {k["address"]: k["state"] for k in cli.stack_keys()} == {"key.data": "Enabled", "key.old": "Enabled"}


# --- refusals of saved plans -------------------------------------------------------------

def test_an_edited_plan_is_refused(cli):
    cli.write({"data": {"description": "v1"}})
    path = saved(cli)
    data = json.loads(path.read_text())
    data["changes"][0]["after"]["description"] = "sneaked in"
    path.write_text(json.dumps(data))
    assert_error(cli.run("apply", str(path)), "edited")

    data["signature"] = None
    path.write_text(json.dumps(data))
    assert_error(cli.run("apply", str(path)), "not signed")
    path.write_text('{"format_version": "1.0", "stack": 1}')
    assert_error(cli.run("apply", str(path)), "not a kmsplan plan")
    path.write_text(json.dumps({**data, "format_version": "2.0"}))
    assert_error(cli.run("apply", str(path)), "format '2.0'", "make the plan again")
    assert cli.stack_keys() == [], "nothing was applied"


def test_a_stale_plan_is_refused(cli):
    cli.write({"data": {"description": "v1"}})
    assert cli.apply().returncode == 0
    cli.write({"data": {"description": "v2"}})
    first, second = saved(cli, "first.json"), saved(cli, "second.json")
    assert cli.run("apply", str(first)).returncode == 0
    assert_error(cli.run("apply", str(second)), "stale", "plan again")

    cli.write({"data": {"description": "v3"}})
    third = saved(cli, "third.json")
    cli.call(HOME, "update_key_description", KeyId=cli.key_id("key.data"), Description="by hand")
    assert_error(cli.run("apply", str(third)), "stale")
    assert cli.call(HOME, "describe_key", KeyId=cli.key_id("key.data"))["KeyMetadata"]["Description"] == "by hand"


def test_a_plan_is_applied_only_as_the_principal_it_was_made_for_and_on_its_account(cli):
    cli.write({"data": {}})
    path = saved(cli)
    assert_error(cli.run("apply", str(path), "--principal", ADMIN), "was made as", "lockout checks")
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, "account": "999988887777"}))
    assert_error(cli.run("apply", str(path)), "account 999988887777", "store it was made on")
    assert cli.stack_keys() == [], "nothing was applied"


@pytest.mark.parametrize("edit", ["stack", "policy file"])
def test_a_plan_made_from_stack_files_that_changed_since_is_refused(cli, edit):
    policy_file = cli.folder / "policy.json"
    policy_file.parent.mkdir(parents=True, exist_ok=True)
    policy_file.write_text(json.dumps(root_policy()))
    cli.write({"data": {"description": "v1", "policy_file": "policy.json"}})
    path = saved(cli)
    if edit == "stack":
        cli.write({"data": {"description": "v1 edited", "policy_file": "policy.json"}})
    else:
        policy_file.write_text(policy_file.read_text().replace('"kms:*"', '["kms:*"]'))
    error = assert_error(cli.run("apply", str(path)), "stack files changed")
    assert (str(cli.path) if edit == "stack" else "a policy file they name") in error
    assert cli.stack_keys() == []


# --- apply: failures, confirmation, output -----------------------------------------------

def test_a_failed_step_stops_apply_reports_done_and_not_done_and_a_rerun_converges(cli):
    cli.write(three(cli))
    path = saved(cli)
    squatter = cli.call(HOME, "create_key", Description="squatter")["KeyMetadata"]["KeyId"]
    cli.call(HOME, "create_alias", AliasName=cli.alias("data"), TargetKeyId=squatter)

    failed = cli.run("apply", str(path))
    assert_error(failed, "apply stopped at", cli.alias("data"))
    assert "FAILED" in failed.stderr and "not run" in failed.stdout and "done" in failed.stdout
    assert "Apply stopped" in failed.stdout
    assert sorted(k["address"] for k in cli.stack_keys()) == ["key.data", "key.tokens"], "the steps before it were done"
    assert cli.call(HOME, "describe_key", KeyId=cli.alias("data"))["KeyMetadata"]["KeyId"] == squatter, \
        "an alias made after the plan is never taken over"

    cli.call(HOME, "delete_alias", AliasName=cli.alias("data"))
    assert cli.apply().returncode == 0
    assert cli.plan("--detailed-exitcode").returncode == 0
    assert sorted(k["address"] for k in cli.stack_keys()) == ["key.data", "key.tokens"], "no duplicate keys"


def test_apply_asks_for_confirmation_unless_auto_approved(cli):
    cli.write({"data": {}})
    assert_error(cli.run("apply", str(cli.path)), "--auto-approve")
    assert cli.stack_keys() == []
    result = cli.run("apply", str(cli.path), "--auto-approve", "--format", "json")
    assert result.returncode == 0
    report = json.loads(result.stdout)
    assert report["ok"] is True and [r["status"] for r in report["results"]] == ["done"]
    assert cli.apply().stdout.strip().endswith("No changes to apply.")


# --- drift -------------------------------------------------------------------------------

def test_drift_exits_0_when_in_step_and_2_on_any_drift(cli):
    cli.write({"data": {"description": "v1"}})
    assert cli.apply().returncode == 0
    clean = cli.run("drift", str(cli.path))
    assert clean.returncode == 0 and "No drift" in clean.stdout

    key_id = cli.key_id("key.data")
    cli.call(HOME, "create_grant", KeyId=key_id, GranteePrincipal=BATCH, Operations=["Decrypt"], Name="by-hand")
    cli.call(HOME, "disable_key", KeyId=key_id)
    drifted = cli.run("drift", str(cli.path))
    assert drifted.returncode == 2 and "key.data" in drifted.stdout and "by-hand" in drifted.stdout
    report = json.loads(cli.run("drift", str(cli.path), "--format", "json").stdout)
    assert report["drifted"] is True
    assert {(d["address"], d["attribute"]) for d in report["drift"]} == {("key.data", "state"),
                                                                         ("grant.data.by-hand", "undeclared")}
    assert cli.run("drift", str(cli.path), "--format", "markdown").returncode == 2


# --- import ------------------------------------------------------------------------------

def test_import_adopts_an_untagged_key_and_the_next_apply_updates_it(cli):
    key_id = cli.call(HOME, "create_key", Description="made by hand")["KeyMetadata"]["KeyId"]
    cli.call(HOME, "create_alias", AliasName=cli.alias("legacy"), TargetKeyId=key_id)
    cli.write({"data": {"description": "adopted", "aliases": [cli.alias("legacy")]}})
    assert "G503" in cli.plan().stdout, "before the import the alias is someone else's"

    result = cli.run("import", str(cli.path), "key.data", cli.alias("legacy"))
    assert result.returncode == 0 and "imported" in result.stdout
    plan = json.loads(cli.plan("--format", "json").stdout)
    assert {(c["address"], tuple(c["actions"])) for c in plan["changes"] if c["actions"] != ["no-op"]} == {
        ("key.data", ("update",))}, "adopted, never created again"
    assert cli.apply().returncode == 0
    assert [(k["address"], k["key_id"]) for k in cli.stack_keys()] == [("key.data", key_id)]
    assert cli.plan("--detailed-exitcode").returncode == 0
    assert "already" in cli.run("import", str(cli.path), "key.data", key_id).stdout


def test_import_refuses_another_stacks_key_a_spec_mismatch_and_unknown_addresses(cli, tmp_path):
    other = CliStack(cli.store, tmp_path / "other", cli.name + "-other")
    other.write({"theirs": {}})
    assert other.apply().returncode == 0
    cli.write({"data": {}, "mac": {"spec": "HMAC_256"}})
    error = assert_error(cli.run("import", str(cli.path), "key.data", other.key_id("key.theirs")), "already belongs to")
    assert f"{other.name} as key.theirs" in error
    assert [k["address"] for k in other.stack_keys()] == ["key.theirs"], "still theirs"

    symmetric = cli.call(HOME, "create_key")["KeyMetadata"]["KeyId"]
    assert_error(cli.run("import", str(cli.path), "key.mac", symmetric), "cannot import", "spec")
    assert_error(cli.run("import", str(cli.path), "key.nope", symmetric), "not a key address", "key.data, key.mac")
    assert_error(cli.run("import", str(cli.path), "key.data", "alias/does-not-exist"), "cannot find key")
    assert cli.stack_keys() == []


# --- the apply lock ----------------------------------------------------------------------

def hold_lock(cli, principal: str = APP) -> subprocess.Popen:
    holder = subprocess.Popen([sys.executable, str(WORKER), "lock", str(cli.store), cli.name, principal],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert json.loads(holder.stdout.readline()) == {"locked": cli.name}, holder.stderr.read()
    return holder


def test_a_second_apply_is_refused_naming_the_holder_until_force_unlock(cli):
    cli.write({"data": {}})
    holder = hold_lock(cli)
    try:
        refused = cli.apply()
        assert_error(refused, "is locked", APP, f"pid {holder.pid}", f"force-unlock {cli.name}")
        assert cli.stack_keys() == []
        released = cli.run("force-unlock", cli.name)
        assert released.returncode == 0 and "Released the lock" in released.stdout and APP in released.stdout
        assert cli.apply().returncode == 0
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    assert "was not locked" in cli.run("force-unlock", cli.name).stdout
    assert [k["address"] for k in cli.stack_keys()] == ["key.data"]


def test_the_lock_of_a_dead_apply_is_taken_over(cli):
    cli.write({"data": {}})
    holder = hold_lock(cli)
    holder.kill()
    holder.wait(timeout=60)
    result = cli.apply()
    assert result.returncode == 0 and f"took over the lock of a dead apply (pid {holder.pid}" in result.stderr
    assert cli.plan("--detailed-exitcode").returncode == 0


def test_locks_are_per_stack(cli, tmp_path):
    holder = hold_lock(cli)
    try:
        other = write_stack(tmp_path / "other", {"version": 1, "stack": cli.name + "-free", "account": "111122223333",
                                                 "region": HOME, "keys": {"data": {}}})
        assert kmsplan("apply", str(other), "--auto-approve", store=cli.store).returncode == 0
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)


# --- errors a user meets -----------------------------------------------------------------

@pytest.mark.parametrize("command", ["plan", "apply", "drift"])
def test_an_invalid_stack_never_reaches_the_store(cli, tmp_path, command):
    cli.write({"data": {"spec": "SYMMETRIC_DEFAULT", "rotaton": {"enabled": True}}})
    nowhere = tmp_path / "no-store-here"
    result = kmsplan(command, str(cli.path), "--store", str(nowhere), *(["--auto-approve"] * (command == "apply")))
    error = assert_error(result, "not valid", "E200", "rotaton")
    assert f"{cli.path}:" in error, "each finding has its file and line"
    assert not nowhere.exists()


def test_a_stack_of_another_account_or_missing_regions_is_refused(cli):
    cli.write({"data": {}}, account="444455556666")
    assert_error(cli.plan(), "account 444455556666", "account 111122223333")
    cli.write({"data": {"multi_region": True, "replicas": {AWAY: {}, "ap-southeast-2": {}}}})
    assert_error(cli.apply(), "ap-southeast-2", "does not have")
    assert cli.stack_keys() == []


def test_a_missing_store_or_plan_file_is_a_short_error(cli, tmp_path):
    cli.write({"data": {}})
    assert_error(kmsplan("plan", str(cli.path), "--store", str(tmp_path / "nothing")), "store")
    assert_error(cli.run("show", str(tmp_path / "missing.json")), "missing.json")
    assert_error(cli.run("plan", str(tmp_path / "missing.yaml")))
    assert_error(cli.plan("--principal", "arn:aws:iam::111122223333:role/nobody"), "role/nobody", "register")
    if cli.served:
        unreachable = {**cli.served.env(ROOT), "KMSPLAN_ENDPOINT": "http://127.0.0.1:9"}
        assert_error(kmsplan("plan", str(cli.path), env=unreachable), "cannot reach", "127.0.0.1:9")
        assert_error(kmsplan("plan", str(cli.path), env={**unreachable, "AWS_ACCESS_KEY_ID": ""}),
                     "no AWS credentials")
