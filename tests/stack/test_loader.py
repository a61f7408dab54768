"""The position-keeping YAML loader: values as SafeLoader reads them, positions on everything."""

from __future__ import annotations

import pytest
import yaml

from kmsplan.stack.loader import LocDict, LocList, locate, parse_yaml


def load(text: str):  # type: ignore[no-untyped-def]
    return parse_yaml(text.encode(), "t.yaml")


@pytest.mark.parametrize("text", [
    ("a: yes\nb: No\nc: ~\nd: null\ne: 0x1F\nf: 1_000\ng: 0o17\nh: 017\ni: 1.5e+3\nj: .inf\n"
     "k: -.5\nl: '12'\nm: \"true\"\nn: 12:30\no: +7\np: on\nq: \"\"\nr:\ns: [1, 'a', b]\n"),
    "nested: {list: [{a: 1}, {b: [true, false]}], 'quoted key': x}\n",
    "block: |\n  line one\n  line two\nfolded: >\n  a\n  b\n",
])
def test_values_match_pyyaml_safe_load(text: str) -> None:
    assert load(text).data == yaml.safe_load(text)


def test_timestamps_stay_strings() -> None:
    assert load("Version: 2012-10-17\nt: 2001-12-14t21:59:43.10-05:00\n").data == {
        "Version": "2012-10-17", "t": "2001-12-14t21:59:43.10-05:00"}


def test_mapping_keys_are_text() -> None:
    assert load("1: a\ntrue: b\n~: c\n").data == {"1": "a", "true": "b", "~": "c"}


def test_positions_of_keys_and_values() -> None:
    root = load("a:\n  b: [x, {c: 1}]\n  d:\n    - e\n").data
    assert isinstance(root, LocDict) and isinstance(root["a"]["b"], LocList)
    assert locate(root, ("a", "b")) == (2, 6)
    assert locate(root, ("a", "b", 1, "c")) == (2, 14)
    assert locate(root, ("a", "b", 1, "c"), key=True) == (2, 11)
    assert locate(root, ("a", "d", 0)) == (4, 7)
    assert locate(root, ("a", "missing", 3)) == (2, 3)  # the deepest node that exists


def test_duplicate_keys_are_reported_and_the_first_kept() -> None:
    document = load("a: 1\nb: 2\na: 3\n")
    assert document.data == {"a": 1, "b": 2}
    assert [(f.code, f.line, f.col) for f in document.findings] == [("E104", 3, 1)]


def test_merge_keys_explicit_wins_then_earlier_source() -> None:
    document = load("x: &x {a: 1, b: 1}\ny: &y {b: 2, c: 2}\nz:\n  <<: [*x, *y]\n  c: 3\n")
    assert document.findings == []
    assert document.data["z"] == {"a": 1, "b": 1, "c": 3}
    assert locate(document.data, ("z", "a")) == (1, 11)  # where the merged value was written


def test_merge_of_a_scalar_is_a_finding() -> None:
    assert [f.code for f in load("a: &a 1\nb:\n  <<: *a\n").findings] == ["E103"]


def test_aliases_share_values_and_count_against_the_budget() -> None:
    document = load("a: &a [1, 2]\nb: *a\n")
    assert document.data["b"] is document.data["a"]
    assert document.findings == []


def test_alias_as_key_must_be_text() -> None:
    assert [f.code for f in load("a: &k name\nb: {*k : 1}\n").findings] == []
    assert [f.code for f in load("a: &k [1]\nb: {*k : 1}\n").findings] == ["E111"]
