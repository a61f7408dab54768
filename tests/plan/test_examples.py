"""Every example stack applies on a fresh store (eu-west-1, eu-central-1, us-east-1, with
examples/principals.yaml registered), and is converged afterwards: the plan is empty, drift
reports nothing, and applying again does nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from plan_helpers import EXAMPLES, REPO, kmsplan, new_store, progress_lines

STACKS = sorted(path.name for path in EXAMPLES.iterdir() if path.is_dir())


@pytest.fixture(scope="module")
def examples_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    principals = yaml.safe_load((REPO / "examples" / "principals.yaml").read_text())
    return new_store(tmp_path_factory.mktemp("examples") / "store", principals=principals)


def test_every_example_is_covered():
    assert STACKS == ["cross-account", "hmac-tokens", "minimal", "multi-tenant-abac", "payments", "signing"]


@pytest.mark.parametrize("example", STACKS)
def test_an_example_applies_and_converges(examples_store, example):
    path = str(EXAMPLES / example)
    planned = json.loads(kmsplan("plan", path, "--format", "json", store=examples_store).stdout)
    assert planned["summary"]["add"] > 0 and not [f for f in planned["findings"] if f["severity"] == "error"]

    applied = kmsplan("apply", path, "--auto-approve", store=examples_store)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert len(progress_lines(applied.stderr)) == len([c for c in planned["changes"] if c["actions"] != ["no-op"]])

    replan = kmsplan("plan", path, "--detailed-exitcode", store=examples_store)
    assert replan.returncode == 0, replan.stdout
    drift = kmsplan("drift", path, store=examples_store)
    assert drift.returncode == 0 and "No drift" in drift.stdout, drift.stdout
    again = kmsplan("apply", path, "--auto-approve", store=examples_store)
    assert again.returncode == 0 and again.stdout.strip().endswith("No changes to apply.")
