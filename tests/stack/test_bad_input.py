"""Hostile and broken input: always findings with a position (or one clear error), never a
traceback, never a hang."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from stack_helpers import Write, run_cli

from kmsplan.errors import KmsplanError
from kmsplan.stack import load_stack
from kmsplan.stack.loader import MAX_BYTES

HEADER = 'version: 1\nstack: s\naccount: "111122223333"\nregion: eu-west-1\n'


def codes(findings: list) -> list[tuple[str, int, int]]:
    return [(f.code, f.line, f.col) for f in findings]


def billion_laughs(levels: int = 9) -> str:
    lines = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels):
        name, prev = chr(97 + i), chr(96 + i)
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 9) + "]")
    return HEADER + "vars:\n" + "".join(f"  {line}\n" for line in lines)


def test_billion_laughs_finishes_quickly_with_a_finding(write: Write) -> None:
    path = write("laughs.yaml", billion_laughs())
    start = time.perf_counter()
    stack, findings = load_stack([path])
    assert time.perf_counter() - start < 2
    assert stack is None
    assert [f.code for f in findings] == ["E105"]
    assert findings[0].line == 11  # the first alias that crosses the limit


def test_anchors_reused_linearly_are_fine(write: Write) -> None:
    keys = "".join(f"  k{i}:\n    tags: *tags\n" for i in range(200))
    defaults = "defaults:\n  tags: &tags {team: a, env: prod}\n"
    path = write("ok.yaml", HEADER + defaults + "keys:\n" + keys)
    stack, findings = load_stack([path])
    assert findings == [] and stack is not None and len(stack.keys) == 200


def test_fifty_megabyte_file_is_refused_quickly(write: Write) -> None:
    path = write("huge.yaml", "")
    with open(path, "wb") as handle:
        handle.write(HEADER.encode())
        handle.write(b"# padding\n" * (5 * 1024 * 1024))  # 50 MiB
    assert os.path.getsize(path) > 50 * 1024 * 1024
    start = time.perf_counter()
    stack, findings = load_stack([path])
    assert time.perf_counter() - start < 2
    assert stack is None
    assert codes(findings) == [("E101", 1, 1)]
    assert "50.0 MiB" in findings[0].message and "10 MiB" in findings[0].message


def test_a_file_at_the_limit_is_read(write: Write) -> None:
    body = HEADER.encode()
    path = write("big.yaml", body + b"#" * (MAX_BYTES - len(body) - 1) + b"\n")
    assert os.path.getsize(path) == MAX_BYTES
    stack, findings = load_stack([path])
    assert findings == [] and stack is not None


def test_binary_junk_is_a_finding(write: Write) -> None:
    path = write("junk.yaml", bytes(range(256)) * 64)
    stack, findings = load_stack([path])
    assert stack is None
    assert codes(findings) == [("E102", 1, 1)]


@pytest.mark.parametrize("data, where", [
    (HEADER.encode() + b"keys:\n  k: {description: \"caf\xe9\"}\n", (6, 24)),  # Latin-1, not UTF-8
    (HEADER.encode() + b"keys:\n  k: {description: \"bell \x07\"}\n", (6, 26)),  # control char
    (b"\xff\xfe" + "version: 1".encode("utf-16-le"), (1, 1)),  # UTF-16
])
def test_text_that_is_not_utf8_yaml(write: Write, data: bytes, where: tuple[int, int]) -> None:
    _, findings = load_stack([write("bad.yaml", data)])
    assert codes(findings) == [("E102", *where)]


def test_unreadable_file_is_a_finding(tmp_path: Path) -> None:
    (tmp_path / "gone.yaml").symlink_to(tmp_path / "nowhere.yaml")  # found by the walk, unreadable
    stack, findings = load_stack([tmp_path])
    assert stack is None
    assert codes(findings) == [("E100", 1, 1)]
    assert "gone.yaml" in findings[0].file


@pytest.mark.parametrize("text", [
    "[" * 200_000,                       # flow nesting: libyaml is quadratic, the composer recurses
    "".join("  " * i + "-\n" for i in range(2000)),
    "{a: " * 100_000,
])
def test_deep_nesting_stops_at_the_limit(write: Write, text: str) -> None:
    start = time.perf_counter()
    _, findings = load_stack([write("deep.yaml", text)])
    assert time.perf_counter() - start < 2
    assert [f.code for f in findings] == ["E106"]


@pytest.mark.parametrize("text, expected", [
    ("- just\n- a list\n", [("E202", 1, 1)]),
    ("hello\n", [("E202", 1, 1)]),
    ("version: 1\nstack: [s\n", [("E103", 3, 1)]),
    ("\tversion: 1\n", [("E103", 1, 1)]),
    ("a: 'unterminated\n", [("E103", 2, 1)]),
    (HEADER + "keys: 7\n", [("E202", 5, 7)]),
    (HEADER + "keys:\n  k: {grants: [a, b], replicas: yes, rotation: 365}\n",
     [("E202", 6, 15), ("E202", 6, 33), ("E202", 6, 48)]),
])
def test_malformed_yaml_and_wrong_types(write: Write, text: str, expected: list) -> None:
    stack, findings = load_stack([write("s.yaml", text)])
    assert stack is None
    assert codes(findings) == expected


def test_missing_path_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(KmsplanError, match="no such file"):
        load_stack([tmp_path / "nope.yaml"])


def test_folder_without_stacks_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("hi")
    with pytest.raises(KmsplanError, match=r"no \*\.yaml"):
        load_stack([tmp_path])


@pytest.mark.parametrize("name, data", [
    ("laughs.yaml", billion_laughs().encode()),
    ("junk.yaml", os.urandom(4096)),
    ("deep.yaml", b"[" * 100_000),
    ("types.yaml", (HEADER + "keys:\n  k:\n    tags: [1, {a: b}]\n    policy: nope\n").encode()),
])
def test_the_cli_reports_without_a_traceback(write: Write, name: str, data: bytes) -> None:
    path = write(name, data)
    result = run_cli("validate", str(path))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stdout.startswith(str(path) + ":")
