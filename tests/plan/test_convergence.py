"""Convergence: whatever the stack and whatever was live before, apply leaves nothing to do.

* property: for random small stacks s1, s2, after apply(plan(s1)) a new plan is empty and drift
  reports nothing; the same after s2 is applied over s1, and after s1 is applied again (keys
  s2 deleted come back through CancelKeyDeletion, never as duplicates);
* kill -9: an apply killed at any step, then run again, converges with no duplicate key and no
  orphaned key material (`kmsplan store check`). The real CLI is killed after its Nth progress
  line (it is then inside the next step); and, so that late steps and points inside a step are
  hit every time, a worker process applying the same stack kills itself just before its nth KMS
  call.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from plan_helpers import APP, AWAY, BATCH, ROOT, CliStack, Kit, kmsplan, progress_lines, worker

# --- random stacks -----------------------------------------------------------------------

#: a key name decides its kind, so s2 never changes an immutable attribute of an s1 key
KINDS = {"a": {}, "b": {"multi_region": True}, "c": {"spec": "HMAC_256"}}
FAMILY = {"a": "sym", "b": "sym", "c": "mac"}
ALIASES = {"sym": ("s1", "s2"), "mac": ("m1",)}
OPERATIONS = {"sym": ["Decrypt", "Encrypt", "GenerateDataKey"], "mac": ["GenerateMac", "VerifyMac"]}
ALL_ADDRESSES = ("key.a", "key.b", "key.c", f"key.b.replica[{AWAY}]")

words = st.text(alphabet="abcxyz -", max_size=10)
tags = st.dictionaries(st.sampled_from(["env", "team", "tier"]), st.sampled_from(["x", "y", "z"]), max_size=2)


@st.composite
def grants(draw, family: str) -> dict[str, Any]:
    out = {}
    for name in draw(st.lists(st.sampled_from(["g1", "g2"]), unique=True, max_size=2)):
        grant: dict[str, Any] = {"grantee": draw(st.sampled_from([APP, BATCH])),
                                 "operations": draw(st.lists(st.sampled_from(OPERATIONS[family]), unique=True,
                                                             min_size=1, max_size=2))}
        if family == "sym" and draw(st.booleans()):
            grant["constraints"] = {"encryption_context_subset": {"team": draw(st.sampled_from(["a", "b"]))}}
        out[name] = grant
    return out


@st.composite
def stacks(draw) -> dict[str, dict[str, Any]]:
    """1-3 keys with random description, state, rotation, tags, aliases and grants (alias names
    are filled in with the stack's name later: `{alias}` placeholders)."""
    names = draw(st.lists(st.sampled_from(sorted(KINDS)), unique=True, min_size=1, max_size=3))
    keys: dict[str, dict[str, Any]] = {}
    for name in sorted(names):
        family = FAMILY[name]
        key: dict[str, Any] = {**KINDS[name], "description": draw(words), "enabled": draw(st.booleans()),
                               "tags": draw(tags), "grants": draw(grants(family)), "aliases": []}
        if family == "sym":
            key["rotation"] = draw(st.sampled_from([{"enabled": False}, {"enabled": True, "period_days": 90},
                                                    {"enabled": True, "period_days": 365}]))
        if name == "b" and draw(st.booleans()):
            key["replicas"] = {AWAY: {"description": draw(words), "enabled": draw(st.booleans()),
                                      "grants": draw(grants(family)), "aliases": []}}
        keys[name] = key
    for family, pool in ALIASES.items():
        holders = [(n, None) for n in keys if FAMILY[n] == family]
        holders += [(n, AWAY) for n in keys if FAMILY[n] == family and keys[n].get("replicas")]
        for alias in pool:
            holder = draw(st.sampled_from([None, *holders]))
            if holder:
                owner = keys[holder[0]] if holder[1] is None else keys[holder[0]]["replicas"][AWAY]
                owner["aliases"].append(alias)
    return keys


def with_aliases(kit: Kit, keys: dict[str, Any]) -> dict[str, Any]:
    """The stack with its alias placeholders turned into this stack's alias names."""
    text = json.dumps(keys)
    for alias in itertools.chain(*ALIASES.values()):
        text = text.replace(f'"{alias}"', f'"{kit.alias(alias)}"')
    return json.loads(text)


def apply_and_converge(kit: Kit, keys: dict[str, Any]) -> None:
    """Apply `keys` and check the result is converged. Grants for a key that is disabled and
    stays so are refused (G402); the stack then goes in two applies, as the hint says."""
    plan = kit.plan(keys, allow_delete=ALL_ADDRESSES)
    assert {f.code for f in plan.findings if f.is_error} <= {"G402"}, [f.to_data() for f in plan.findings]
    if plan.has_errors:
        staged = json.loads(json.dumps(keys))
        for key in staged.values():
            key["enabled"] = True
            for replica in (key.get("replicas") or {}).values():
                replica["enabled"] = True
        kit.apply(staged, allow_delete=ALL_ADDRESSES)
        kit.write(keys)
    kit.apply(allow_delete=ALL_ADDRESSES)
    kit.assert_converged()
    for address in {key.address for key in kit.live().keys if not key.pending_deletion}:
        assert len([k for k in kit.copies(address) if not k.pending_deletion]) == 1, f"duplicate {address}"


names = itertools.count()


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(first=stacks(), second=stacks())
def test_apply_converges_from_nothing_and_from_another_stack(store, principals, kit_server, tmp_path_factory, first,
                                                            second):
    kit = Kit(store, tmp_path_factory.mktemp("prop"), f"prop-{next(names)}", kit_server)
    for keys in (first, second, first):
        apply_and_converge(kit, with_aliases(kit, keys))


# --- kill -9 during apply ----------------------------------------------------------------

def busy_stack() -> dict[str, Any]:
    """Several keys, a replica, aliases and grants, and disabled keys: many steps of each kind."""
    reader = {"grantee": APP, "operations": ["Decrypt"]}
    return {
        "a": {"aliases": ["alias/${stack}/a"],
              "grants": {"r": reader, "w": {"grantee": BATCH, "operations": ["Encrypt"]}}},
        "b": {"multi_region": True, "aliases": ["alias/${stack}/b"], "rotation": {"enabled": True, "period_days": 90},
              "replicas": {AWAY: {"aliases": ["alias/${stack}/b"], "grants": {"r": reader}}}},
        "c": {"spec": "HMAC_256", "enabled": False, "aliases": ["alias/${stack}/c"],
              "grants": {"v": {"grantee": APP, "operations": ["VerifyMac"]}}},
        "d": {"enabled": False, "tags": {"env": "test"}},
    }


def kill_after(stack: CliStack, lines: int) -> int:
    """Start `apply --auto-approve`; SIGKILL it after `lines` progress lines (0: once the plan is
    shown). The number of progress lines seen."""
    command = [sys.executable, "-m", "kmsplan", "apply", str(stack.path), "--auto-approve"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("KMSPLAN_")}
    if stack.served:  # a CI runner's apply, killed while it talks to `kmsplan serve`
        env.update(stack.served.env(ROOT))
    else:
        command += ["--store", str(stack.store)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=stack.folder,
                            env=env)
    seen = 0
    try:
        if lines == 0:
            for line in proc.stdout:
                if line.startswith("Plan:"):
                    break
        else:
            for line in proc.stderr:
                seen += bool(progress_lines(line))
                if seen >= lines:
                    break
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=120)
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL, "killed before it finished"
    return seen


def assert_recovers(stack: CliStack) -> subprocess.CompletedProcess[str]:
    """A second apply converges: nothing left to plan, no drift, one key per address, and every
    key's material where the database says it is."""
    again = stack.apply()
    assert again.returncode == 0, again.stdout + again.stderr
    assert stack.plan("--detailed-exitcode").returncode == 0, "converged"
    assert stack.run("drift", str(stack.path)).returncode == 0
    addresses = sorted(k["address"] for k in stack.stack_keys())
    assert addresses == ["key.a", "key.b", f"key.b.replica[{AWAY}]", "key.c", "key.d"], "one key per address"
    assert worker("check", str(stack.store)) == [], "no orphaned key material"
    assert kmsplan("store", "check", "--store", str(stack.store)).returncode == 0
    return again


@pytest.mark.parametrize("lines", [0, 1, 3, 5])
def test_an_apply_killed_after_a_progress_line_converges_when_run_again(cli_store, cli_served, tmp_path, lines):
    """The real CLI, killed as soon as it reports step `lines` done (it is then inside the next);
    on the store's folder and over --endpoint."""
    mode = "served" if cli_served else "local"
    stack = CliStack(cli_store, tmp_path / "stack", f"killed-after-{lines}-{mode}", cli_served)
    stack.write(busy_stack())
    total = sum(json.loads(stack.plan("--format", "json").stdout)["summary"].values())
    assert total >= lines + 8, "enough steps left that the kill lands inside the apply"
    assert kill_after(stack, lines) == lines
    again = assert_recovers(stack)
    assert "took over the lock of a dead apply" in again.stderr or lines == 0


@pytest.fixture(scope="module")
def calls_per_apply(cli_store, tmp_path_factory) -> int:
    """How many KMS calls applying busy_stack() makes from scratch (measured once)."""
    stack = CliStack(cli_store, tmp_path_factory.mktemp("measure"), "killed-measure")
    stack.write(busy_stack())
    return worker("apply", str(cli_store), str(stack.path), "0")["calls"]


@pytest.mark.parametrize("fraction", [0.02, 0.15, 0.3, 0.45, 0.6, 0.75, 0.9, 0.99])
def test_an_apply_killed_between_any_two_kms_calls_converges_when_run_again(cli_store, tmp_path, calls_per_apply,
                                                                            fraction):
    """Deterministic kills inside steps: the apply kills itself just before its n-th KMS call."""
    die_at = max(1, int(calls_per_apply * fraction))
    stack = CliStack(cli_store, tmp_path / "stack", f"killed-at-call-{die_at}")
    stack.write(busy_stack())
    killed = worker("apply", str(cli_store), str(stack.path), str(die_at), check=False)
    assert killed.returncode == -signal.SIGKILL, (die_at, calls_per_apply, killed.stdout, killed.stderr)
    assert_recovers(stack)
