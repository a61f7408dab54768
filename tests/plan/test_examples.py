"""Every example stack applies on a fresh store (eu-west-1, eu-central-1, us-east-1, with
examples/principals.yaml registered), and is converged afterwards: the plan is empty, drift
reports nothing, and applying again does nothing — on the store's folder and over `--endpoint`."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import pytest
import yaml
from plan_helpers import EXAMPLES, REPO, ROOT, Served, kmsplan, new_store, progress_lines
from server_helpers import create_access_key, start_server

STACKS = sorted(path.name for path in EXAMPLES.iterdir() if path.is_dir())


@pytest.fixture(scope="module", params=["local", "served"])
def run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable]:
    """`kmsplan ARGS` on a fresh store of the module's own: opened from its folder, or reached over
    `--endpoint` as the account root on `kmsplan serve` running on it."""
    principals = yaml.safe_load((REPO / "examples" / "principals.yaml").read_text())
    store = new_store(tmp_path_factory.mktemp("examples") / "store", principals=principals)
    if request.param == "local":
        yield lambda *args: kmsplan(*args, store=store)
        return
    key = create_access_key(store, ROOT)
    server = start_server(store, store.parent / "serve.log")
    served = Served(server.url, {ROOT: (key.access_key_id, key.secret)})
    yield lambda *args: kmsplan(*args, env=served.env(ROOT))
    assert server.stop() == 0, server.log.read_text()[-2000:]


def test_every_example_is_covered():
    assert STACKS == ["cross-account", "hmac-tokens", "minimal", "multi-tenant-abac", "payments", "signing"]


@pytest.mark.parametrize("example", STACKS)
def test_an_example_applies_and_converges(run, example):
    path = str(EXAMPLES / example)
    planned = json.loads(run("plan", path, "--format", "json").stdout)
    assert planned["summary"]["add"] > 0 and not [f for f in planned["findings"] if f["severity"] == "error"]

    applied = run("apply", path, "--auto-approve")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert len(progress_lines(applied.stderr)) == len([c for c in planned["changes"] if c["actions"] != ["no-op"]])

    replan = run("plan", path, "--detailed-exitcode")
    assert replan.returncode == 0, replan.stdout
    drift = run("drift", path)
    assert drift.returncode == 0 and "No drift" in drift.stdout, drift.stdout
    again = run("apply", path, "--auto-approve")
    assert again.returncode == 0 and again.stdout.strip().endswith("No changes to apply.")
