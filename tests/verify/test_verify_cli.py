"""`kmsplan verify` as a user runs it: a real subprocess on a store of this module's own. Exit
codes, the three output formats, progress (terminal and plain log lines), and errors without tracebacks."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from plan_helpers import ADMIN, AWAY, HOME, REGIONS, ROOT, CliStack, assert_error, kit_name, new_store

STACK_KEYS = {
    "data": {"multi_region": True, "rotation": {"enabled": True, "period_days": 90}, "replicas": {AWAY: {}},
             "expect": {"decrypt": [ROOT, ADMIN]}},
    "tokens": {"spec": "HMAC_256"},
}


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CliStack]:
    """The module's stack, applied through the CLI on a two-region store of its own."""
    root = tmp_path_factory.mktemp("verify-cli")
    stack = CliStack(new_store(root / "store", regions=REGIONS[:2]), root / "stack", kit_name(__file__, "verify-cli"))
    stack.write(STACK_KEYS)
    applied = stack.apply()
    assert applied.returncode == 0, applied.stdout + applied.stderr
    yield stack


def test_json_report_and_exit_zero(cli: CliStack) -> None:
    result = cli.run("verify", str(cli.path), "--format", "json")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr == ""  # JSON off a terminal: no progress lines
    report = json.loads(result.stdout)
    assert set(report) == {"format_version", "stack", "account", "principal", "ok", "summary", "checks"}
    assert (report["format_version"], report["stack"], report["principal"], report["ok"]) == (1, cli.name, ROOT, True)
    assert report["summary"]["passed"] == len(report["checks"]) and report["summary"]["failed"] == 0
    assert report["summary"]["operations"] > 0
    for check in report["checks"]:
        assert set(check) == {"address", "region", "check", "action", "status", "evidence"}
        assert check["status"] == "pass" and check["evidence"]
    named = {(c["address"], c["check"], c["action"]) for c in report["checks"]}
    assert ("key.data", "access", "kms:Decrypt") in named
    assert (f"key.data.replica[{AWAY}]", "cross-region", None) in named
    assert ("key.tokens", "mac", None) in named
    assert report["checks"][-1] == {**report["checks"][-1], "address": None, "region": None, "check": "audit"}


def test_a_fault_fails_with_exit_one_and_passes_again_once_repaired(cli: CliStack) -> None:
    key_id = cli.key_id("key.data")
    cli.call(HOME, "disable_key_rotation", KeyId=key_id)
    failed = cli.run("verify", str(cli.path))
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "Error:" not in failed.stderr
    lines = failed.stdout.splitlines()
    assert "  FAIL  rotation            GetKeyRotationStatus: rotation off; declared every 90 days" in lines
    assert lines[-1].startswith("Verify failed: 1 of ") and lines[-1].endswith(" checks failed.")

    cli.call(HOME, "enable_key_rotation", KeyId=key_id, RotationPeriodInDays=90)
    repaired = cli.run("verify", str(cli.path))
    assert repaired.returncode == 0, repaired.stdout
    assert repaired.stdout.splitlines()[-1].startswith("Verify passed: ")


def test_markdown_report(cli: CliStack) -> None:
    result = cli.run("verify", str(cli.path), "--format", "markdown", "--address", "key.tokens")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith(f"### kmsplan verify: {cli.name}\n\n**Verify passed: 3 checks passed.**")
    assert "| key.tokens | eu-west-1 | mac | HMAC_SHA_256: GenerateMac then VerifyMac" in result.stdout
    assert "#### Failed checks" not in result.stdout


def test_verify_as_another_principal(cli: CliStack) -> None:
    result = cli.run("verify", str(cli.path), "--principal", ADMIN, "--format", "json")
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["principal"] == ADMIN


def test_progress_lines_on_a_terminal(cli: CliStack) -> None:
    """On a terminal stderr shows one line per key; stdout (here a pipe) holds only the report."""
    leader, follower = pty.openpty()
    env = {k: v for k, v in os.environ.items() if k not in ("KMSPLAN_STORE", "KMSPLAN_PRINCIPAL")}
    result = subprocess.run([sys.executable, "-m", "kmsplan", "verify", str(cli.path), "--store", str(cli.store)],
                            stdout=subprocess.PIPE, stderr=follower, text=True, env={**env, "NO_COLOR": "1"},
                            timeout=120, check=False)
    os.close(follower)
    shown = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # EIO: the terminal's other end is closed and drained
            break
        if not chunk:
            break
        shown += chunk
    os.close(leader)
    assert result.returncode == 0, result.stdout
    assert shown.decode().splitlines() == ["[1/2] key.data: 10 checks, all passed",
                                           "[2/2] key.tokens: 2 checks, all passed"]
    assert "[1/2]" not in result.stdout


def test_plain_progress_lines_in_a_ci_log(cli: CliStack) -> None:
    """Off a terminal a text report still shows progress on stderr, as plain lines for the log."""
    result = cli.run("verify", str(cli.path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr.splitlines() == ["[1/2] key.data: 10 checks, all passed",
                                          "[2/2] key.tokens: 2 checks, all passed"]
    assert "\x1b" not in result.stderr and "[1/2]" not in result.stdout


def test_user_errors_are_messages_with_hints(cli: CliStack, tmp_path: Path) -> None:
    missing = cli.run("verify", str(cli.path), "--store", str(tmp_path / "nowhere"))
    assert_error(missing, "no kmsplan store at", "kmsplan store init")

    bad = tmp_path / "bad.yaml"
    bad.write_text(cli.path.read_text().replace("decrypt:", "decrpyt:"))
    invalid = cli.run("verify", str(bad))
    assert_error(invalid, "the stack is not valid", "E203", "did you mean 'decrypt'?", "nothing was read or changed")

    unknown = cli.run("verify", str(cli.path), "--address", "key.nope")
    assert_error(unknown, "key.nope is not a key or replica address", f"key.data.replica[{AWAY}]")

    stranger = cli.run("verify", str(cli.path), "--principal", "arn:aws:iam::111122223333:role/ghost")
    assert_error(stranger, "is not registered in the store", "--principal")
