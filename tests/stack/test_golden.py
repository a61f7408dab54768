"""Golden cases: each folder under cases/ is a stack (one or more files) and `expected.txt`, the
exact findings `kmsplan validate` reports for it, paths relative to the folder. One folder per
rule, named after its code; every finding code is covered here or by a named test elsewhere.

To regenerate after a deliberate change, run with KMSPLAN_UPDATE_GOLDEN=1 and review the diff.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from stack_helpers import CASES, case_findings

from kmsplan.stack import CODES

CASE_DIRS = sorted(p for p in CASES.iterdir() if p.is_dir())

#: codes that need input a repository cannot hold (a 50 MB file, an unreadable path, binary
#: junk), with the test that covers each
TESTED_ELSEWHERE = {
    "E100": "test_bad_input.py::test_unreadable_file_is_a_finding",
    "E101": "test_bad_input.py::test_fifty_megabyte_file_is_refused_quickly",
    "E102": "test_bad_input.py::test_binary_junk_is_a_finding",
}


@pytest.mark.parametrize("case", CASE_DIRS, ids=[p.name for p in CASE_DIRS])
def test_case(case: Path) -> None:
    actual = case_findings(case)
    expected_file = case / "expected.txt"
    if os.environ.get("KMSPLAN_UPDATE_GOLDEN"):
        expected_file.write_text(actual, encoding="utf-8")
    assert actual == expected_file.read_text(encoding="utf-8")


def test_each_case_shows_the_code_it_is_named_after() -> None:
    for case in CASE_DIRS:
        named = re.match(r"^([ew]\d{3})-", case.name)
        if named:
            expected = (case / "expected.txt").read_text(encoding="utf-8")
            assert f"  {named.group(1).upper()}  " in expected, case.name


def test_every_code_is_covered() -> None:
    seen = set()
    for case in CASE_DIRS:
        for line in (case / "expected.txt").read_text(encoding="utf-8").splitlines():
            seen.add(line.split("  ")[1])
    missing = set(CODES) - seen - set(TESTED_ELSEWHERE)
    assert not missing, f"codes with no golden case: {sorted(missing)}"
    assert not seen - set(CODES), "golden files mention codes the table does not know"


def test_the_valid_case_has_no_findings() -> None:
    assert (CASES / "valid-multi-file" / "expected.txt").read_text() == ""
