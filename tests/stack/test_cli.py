"""`kmsplan validate` as users run it: a subprocess, exit codes, text and JSON output."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
from stack_helpers import CASES, EXAMPLES, REPO, run_cli

EXAMPLE_DIRS = sorted(p for p in EXAMPLES.iterdir() if p.is_dir())
FINDINGS_SCHEMA = json.loads((REPO / "schemas" / "findings.schema.json").read_text())


def test_the_examples_are_all_there() -> None:
    assert [p.name for p in EXAMPLE_DIRS] == [
        "cross-account", "hmac-tokens", "minimal", "multi-tenant-abac", "payments", "signing"]


@pytest.mark.parametrize("example", EXAMPLE_DIRS, ids=[p.name for p in EXAMPLE_DIRS])
def test_every_example_validates_clean(example: Path) -> None:
    result = run_cli("validate", str(example.relative_to(REPO)))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""  # not even a warning
    assert "valid, 0 warning(s)" in result.stderr


def test_errors_exit_1_with_sorted_findings() -> None:
    result = run_cli("validate", ".", cwd=CASES / "e502-alias-per-region")
    assert result.returncode == 1
    assert result.stdout == (CASES / "e502-alias-per-region" / "expected.txt").read_text()
    assert "3 error(s), 0 warning(s)" in result.stderr


def test_warnings_alone_exit_0() -> None:
    result = run_cli("validate", ".", cwd=CASES / "w701-no-root-no-admin")
    assert result.returncode == 0
    assert result.stdout.count("  W701  warning  ") == 2


def test_json_output_follows_its_schema() -> None:
    case = CASES / "w400-rotation-disabled"
    result = run_cli("validate", "--format", "json", ".", cwd=case)
    assert result.returncode == 0
    document = json.loads(result.stdout)
    jsonschema.validate(document, FINDINGS_SCHEMA)
    assert document["format_version"] == 1
    assert (document["stack"], document["valid"]) == ("cases", True)
    assert document["files"] == ["defaults.yaml", "stack.yaml"]
    assert document["summary"] == {"errors": 0, "warnings": 2}
    as_text = [f"{f['file']}:{f['line']}:{f['col']}  {f['code']}  {f['severity']}  {f['message']}"
               for f in document["findings"]]
    assert "\n".join(as_text) + "\n" == (case / "expected.txt").read_text()
    assert result.stdout == json.dumps(document, sort_keys=True, indent=2,
                                       ensure_ascii=False) + "\n"


def test_json_output_for_an_invalid_stack() -> None:
    result = run_cli("validate", "--format", "json", ".", cwd=CASES / "e300-files-disagree")
    assert result.returncode == 1
    document = json.loads(result.stdout)
    jsonschema.validate(document, FINDINGS_SCHEMA)
    assert (document["stack"], document["valid"], document["summary"]["errors"]) == (None, False, 2)
    assert document["files"] == ["a.yaml", "b.yaml"]


def test_several_paths_make_one_stack() -> None:
    case = CASES / "valid-multi-file"
    result = run_cli("validate", "stack.yaml", "keys", cwd=case)
    assert result.returncode == 0, result.stdout
    assert "2 key(s) in 3 file(s)" in result.stderr


def test_a_missing_path_is_an_error_without_traceback(tmp_path: Path) -> None:
    result = run_cli("validate", str(tmp_path / "nope"))
    assert result.returncode == 1
    assert result.stderr.startswith("Error: ") and "no such file or folder" in result.stderr
    assert "Traceback" not in result.stderr


def test_usage_errors_exit_1() -> None:
    assert run_cli("validate").returncode == 1
    assert run_cli("validate", "--format", "xml", ".").returncode == 1


def test_the_console_script_runs_validate() -> None:
    script = shutil.which("kmsplan", path=str(Path(sys.executable).parent)) or shutil.which("kmsplan")
    assert script is not None, "pip install -e . installs the kmsplan console script"
    result = subprocess.run([script, "validate", str(EXAMPLES / "minimal")],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
