"""The pre-commit hook this repository offers (.pre-commit-hooks.yaml): it runs `kmsplan validate`
on the stack paths a user configures, passing or failing the commit as validate exits.

pre-commit itself is not installed here; the test runs the hook's command line exactly as
pre-commit builds it (`entry`, then `args`, then the file names only when `pass_filenames`), with
the installed console script, and checks that `files` selects stack and policy files.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
HOOKS = REPO / ".pre-commit-hooks.yaml"
CASES = REPO / "tests" / "stack" / "cases"


def hook() -> dict:
    hooks = yaml.safe_load(HOOKS.read_text(encoding="utf-8"))
    assert isinstance(hooks, list)
    [found] = [h for h in hooks if h.get("id") == "kmsplan-validate"]
    return found


def run_hook(args: list[str], changed: list[str]) -> subprocess.CompletedProcess:
    """The hook as pre-commit runs it, with the console script of this interpreter's environment on PATH."""
    found = hook()
    argv = shlex.split(found["entry"]) + args + (changed if found.get("pass_filenames", True) else [])
    env = {k: v for k, v in os.environ.items() if not k.startswith("KMSPLAN_")}
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False)


def test_the_hook_runs_kmsplan_validate_on_configured_paths():
    found = hook()
    assert shlex.split(found["entry"]) == ["kmsplan", "validate"]
    assert found["language"] == "python", "pre-commit installs this repository (and its console script) for it"
    assert found["pass_filenames"] is False, "a stack is validated whole, never file by file"
    files = re.compile(found["files"])
    for path in ("examples/stacks/payments/stack.yaml", "examples/stacks/payments/policies/primary.yaml",
                 "examples/stacks/payments/policies/standby-decrypt-only.json", "stacks/x/keys.yml"):
        assert files.search(path), path
    for path in ("README.md", "kmsplan/cli/__init__.py"):
        assert not files.search(path), path


def test_a_valid_stack_passes():
    result = run_hook(["examples/stacks/payments"], ["examples/stacks/payments/stack.yaml"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "valid" in result.stderr


@pytest.mark.parametrize("case, code", [("e404-deletion-window", "E404"), ("e103-yaml-syntax", "E103"),
                                        ("e300-files-disagree", "E300")])
def test_an_invalid_stack_fails_the_commit_and_says_where(case, code):
    stack = f"tests/stack/cases/{case}"
    result = run_hook([stack], [f"{stack}/stack.yaml"])
    assert result.returncode == 1, result.stdout + result.stderr
    assert code in result.stdout and stack in result.stdout
    assert "Traceback" not in result.stderr
