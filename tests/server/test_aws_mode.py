"""`kmsplan plan|apply|drift --aws`: the reconciler as it talks to AWS KMS itself.

There is no AWS here, so AWS KMS is played by a served kmsplan store reached through boto3's own
`AWS_ENDPOINT_URL_KMS` (what --aws would reach in AWS's place). What --aws must do without the
store's `KmsplanService` calls is what these tests check: the principal from --principal (or
STS), principals and IAM policies from --aws-principals, and no last use — so a deletion counts
as "maybe in use" until the user says otherwise.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import yaml
from server_helpers import ACCOUNT, HOME, ROOT, Server

STACK = "aws-mode"


def run(served: Server, folder: Path, *args: str, **extra_env: str) -> subprocess.CompletedProcess:
    key = served.keys["root"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KMSPLAN_", "AWS_"))}
    env.update(AWS_ACCESS_KEY_ID=key.access_key_id, AWS_SECRET_ACCESS_KEY=key.secret, AWS_REGION=HOME,
               AWS_ENDPOINT_URL_KMS=served.url, AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull,
               AWS_EC2_METADATA_DISABLED="true", AWS_MAX_ATTEMPTS="1", NO_COLOR="1", **extra_env)
    result = subprocess.run([sys.executable, "-m", "kmsplan", *args], capture_output=True, text=True, cwd=folder,
                            env=env, timeout=120, check=False)
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    return result


def write(folder: Path, name: str, keys: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "stack.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "stack": name, "account": ACCOUNT, "region": HOME, "keys": keys}))
    return path


def test_plan_apply_drift_and_a_saved_plan_over_the_kms_api_alone(served: Server, tmp_path: Path):
    name = f"{STACK}-{uuid.uuid4().hex[:8]}"
    path = write(tmp_path, name, {"data": {"description": "v1"}, "old": {}})
    principals = tmp_path / "principals.yaml"
    principals.write_text(yaml.safe_dump({"principals": []}))
    target = ("--aws", "--principal", ROOT, "--aws-principals", str(principals))

    planned = run(served, tmp_path, "plan", str(path), *target, "--detailed-exitcode")
    assert planned.returncode == 2, planned.stderr
    assert run(served, tmp_path, "apply", str(path), *target, "--auto-approve").returncode == 0
    assert run(served, tmp_path, "drift", str(path), *target).returncode == 0

    write(tmp_path, name, {"data": {"description": "v2"}})
    refused = run(served, tmp_path, "plan", str(path), *target, "--allow-delete", "key.old")
    assert refused.returncode == 1 and "G103" in refused.stdout and "cannot be read" in refused.stdout

    saved = tmp_path / "plan.json"
    made = run(served, tmp_path, "plan", str(path), *target, "--allow-delete", "key.old",
               "--allow-delete-recently-used", "--out", str(saved))
    assert made.returncode == 0, made.stderr
    assert "G103" in json.loads(saved.read_text())["findings"][0]["code"]
    applied = run(served, tmp_path, "apply", str(saved), *target)
    assert applied.returncode == 0, applied.stderr
    assert run(served, tmp_path, "plan", str(path), *target, "--detailed-exitcode").returncode == 0


def test_aws_mode_refusals_are_short_errors(served: Server, tmp_path: Path):
    path = write(tmp_path, f"{STACK}-refusals", {"data": {}})
    both = run(served, tmp_path, "plan", str(path), "--aws", "--endpoint", served.url)
    assert both.returncode == 1 and "--aws goes with neither" in both.stderr
    # no --principal: STS is asked, and here it cannot answer
    unknown = run(served, tmp_path, "plan", str(path), "--aws", AWS_ENDPOINT_URL_STS="http://127.0.0.1:9")
    assert unknown.returncode == 1 and "cannot ask STS" in unknown.stderr and "--principal" in unknown.stderr
    # the lockout guards know only the principals they are given: the caller without IAM policies
    # would lose kms:PutKeyPolicy under a policy that names only someone else
    other = f"arn:aws:iam::{ACCOUNT}:role/other"
    write(tmp_path, f"{STACK}-refusals", {"data": {"policy": {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": other}, "Action": "kms:*", "Resource": "*"}]}}})
    locked = run(served, tmp_path, "plan", str(path), "--aws", "--principal", ROOT)
    assert locked.returncode == 1 and "G301" in locked.stdout
