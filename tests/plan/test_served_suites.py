"""The in-process reconciler suites — every plan action, every guard and the convergence
property — once more, through
`kmsplan serve` on the session store instead of the store opened in the test process.

They run in a pytest of their own with KMSPLAN_TEST_SERVED=1: there the session's fake clock starts
at the real time (the server keeps real time) and every Kit plans, applies, drifts and reads
through a RemoteBackend with an access key of the principal it acts as. The few tests that check
exact times of the fake clock are marked `local_only` and run here only on the folder.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SUITES = ("test_plan_actions.py", "test_guards.py",
          "test_convergence.py::test_apply_converges_from_nothing_and_from_another_stack")


def test_the_action_and_guard_suites_pass_over_a_served_store():
    env = {**os.environ, "KMSPLAN_TEST_SERVED": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not local_only",
         *(str(HERE / suite) for suite in SUITES)],
        cwd=HERE.parents[1], env=env, capture_output=True, text=True, timeout=1200, check=False)
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else result.stderr[-2000:]
    server_failures = result.stdout[result.stdout.find("the server failed requests"):][:3000] \
        if "the server failed requests" in result.stdout else ""
    assert result.returncode == 0, server_failures + result.stdout[-6000:] + result.stderr[-2000:]
    passed = int(re.search(r"(\d+) passed", summary).group(1))
    assert passed >= 50 and "skipped" not in summary and "3 deselected" in summary, summary
