"""Helpers for the stack-language tests: golden cases and running the real CLI.

(Kept out of conftest.py so test modules can import them by a name no other test folder uses.)
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from kmsplan.stack import format_text, load_stack

HERE = Path(__file__).resolve().parent
CASES = HERE / "cases"
REPO = HERE.parents[1]
EXAMPLES = REPO / "examples" / "stacks"

#: the `write` fixture: write(name, text) -> path of a new file under tmp_path
Write = Callable[[str, "str | bytes"], Path]


def case_findings(case: Path) -> str:
    """The text findings of a golden case, with paths relative to the case folder."""
    previous = os.getcwd()
    os.chdir(case)
    try:
        _, findings = load_stack(["."])
    finally:
        os.chdir(previous)
    return format_text(findings)


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m kmsplan ARGS` in a subprocess, as a user runs it."""
    env = {**os.environ, "NO_COLOR": "1"}
    return subprocess.run([sys.executable, "-m", "kmsplan", *args], capture_output=True,
                          text=True, cwd=cwd or REPO, env=env, timeout=120, check=False)
