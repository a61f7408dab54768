"""Shell completion through click, with the real `kmsplan` console script: the eval lines of
docs/pipelines.md print a script for bash, zsh and fish, and that script, sourced into a real
bash, completes commands, subcommands, options and option values.

`kmsplan.cli.main` calls click with standalone_mode=False; click answers a completion request
(the _KMSPLAN_COMPLETE variable) before parsing anything and exits itself, so main() needs nothing
special, which these tests pin down.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


def environment(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KMSPLAN_", "_KMSPLAN_", "COMP_"))}
    env["PATH"] = str(BIN) + os.pathsep + env.get("PATH", "")
    return {**env, **extra}


def kmsplan(**extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(["kmsplan"], env=environment(**extra), capture_output=True, text=True, timeout=60,
                          check=False)


@pytest.mark.parametrize("shell, marker", [("bash", "complete -o nosort -F _kmsplan_completion kmsplan"),
                                           ("zsh", "#compdef kmsplan"),
                                           ("fish", "complete --no-files --command kmsplan")])
def test_each_shell_gets_a_completion_script(shell, marker):
    result = kmsplan(_KMSPLAN_COMPLETE=f"{shell}_source")
    assert result.returncode == 0, result.stderr
    assert marker in result.stdout
    assert "Traceback" not in result.stderr


def complete(words: str, cword: int) -> list[str]:
    result = kmsplan(_KMSPLAN_COMPLETE="bash_complete", COMP_WORDS=words, COMP_CWORD=str(cword))
    assert result.returncode == 0, result.stderr
    return [line.split(",", 1)[1] for line in result.stdout.splitlines()]


def test_completion_offers_commands_subcommands_options_and_values():
    assert "plan" in complete("kmsplan pl", 1)
    assert complete("kmsplan audit ", 2) == ["last-use", "query", "verify"]
    assert "--operation" in complete("kmsplan audit --op", 2)
    assert complete("kmsplan audit --operation GenerateDataKeyP", 3) == [
        "GenerateDataKeyPair", "GenerateDataKeyPairWithoutPlaintext"]
    assert complete("kmsplan plan x --format ", 4) == ["text", "json", "markdown"]


def test_the_bash_script_completes_in_a_real_bash():
    bash = shutil.which("bash")
    assert bash, "bash is part of the supported platforms"
    script = ('eval "$(_KMSPLAN_COMPLETE=bash_source kmsplan)"\n'
              'COMP_WORDS=(kmsplan audit la); COMP_CWORD=2; _kmsplan_completion kmsplan\n'
              'printf "%s\\n" "${COMPREPLY[@]}"\n')
    result = subprocess.run([bash, "--norc", "--noprofile", "-c", script], env=environment(), capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["last-use"]
