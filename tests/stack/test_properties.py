"""Properties: no input makes validation raise, and the model does not depend on key order."""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kmsplan.stack import CODES, load_stack
from kmsplan.stack.loader import parse_yaml

BASE: dict[str, Any] = {
    "version": 1, "stack": "prop", "account": "111122223333", "region": "eu-west-1",
    "vars": {"app": "a"},
    "defaults": {"tags": {"env": "prod"}, "deletion_window_days": 30},
    "keys": {
        "data": {
            "multi_region": True, "rotation": {"enabled": True, "period_days": 180},
            "aliases": ["alias/data"], "tags": {"app": "${var.app}"},
            "policy": {"Version": "2012-10-17", "Statement": [{
                "Sid": "Root", "Effect": "Allow",
                "Principal": {"AWS": "arn:aws:iam::${account}:root"},
                "Action": "kms:*", "Resource": "*"}]},
            "grants": {"g": {"grantee": "arn:aws:iam::${account}:role/x",
                             "operations": ["Decrypt"],
                             "constraints": {"encryption_context_subset": {"k": "v"}}}},
            "replicas": {"eu-central-1": {"aliases": ["alias/data"]}},
        },
        "signer": {"spec": "RSA_2048", "usage": "SIGN_VERIFY"},
    },
}

scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6),
                    st.text(max_size=20), st.sampled_from(["${", "${x}", "alias/aws/x", "*"]))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            out += _paths(value, prefix + (key,))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out += _paths(value, prefix + (i,))
    return out


PATHS = _paths(BASE)


def _check(findings: list, stack: Any) -> None:
    for item in findings:
        assert item.code in CODES and item.line >= 1 and item.col >= 1
    assert (stack is None) == any(f.is_error for f in findings)


def _load(text: str | bytes) -> tuple[Any, list]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "stack.yaml"
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        return load_stack([path])


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_give_findings_not_exceptions(data: bytes) -> None:
    document = parse_yaml(data, "x.yaml")
    for item in document.findings:
        assert item.code in CODES and item.line >= 1 and item.col >= 1


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="ab:-[]{},&*!|>'\"#\n\t ?%@`<~$", max_size=80))
def test_yaml_punctuation_soup_never_raises(text: str) -> None:
    stack, findings = _load('version: 1\nstack: s\naccount: "111122223333"\nregion: eu-west-1\n'
                            + text)
    _check(findings, stack)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(PATHS), values)
def test_any_value_anywhere_gives_findings_not_exceptions(path: tuple[Any, ...],
                                                          value: Any) -> None:
    document = copy.deepcopy(BASE)
    node = document
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = value
    stack, findings = _load(yaml.safe_dump(document, sort_keys=False))
    _check(findings, stack)


def test_the_base_document_is_valid() -> None:
    stack, findings = _load(yaml.safe_dump(BASE))
    assert findings == [] and stack is not None


@settings(max_examples=25, deadline=None)
@given(st.lists(st.from_regex(r"[a-z][a-z0-9-]{0,10}", fullmatch=True), min_size=1,
                max_size=8, unique=True), st.randoms())
def test_key_order_does_not_change_the_model(names: list[str], random: Any) -> None:
    def document(order: list[str]) -> str:
        keys = {n: {"aliases": [f"alias/{n}"], "tags": {"n": n}} for n in order}
        return yaml.safe_dump({**{k: BASE[k] for k in ("version", "stack", "account", "region")},
                               "keys": keys}, sort_keys=False)

    shuffled = list(names)
    random.shuffle(shuffled)
    first, findings = _load(document(names))
    second, _ = _load(document(shuffled))
    assert findings == [] and first == second
    assert [k.address for k in first.keys] == [f"key.{n}" for n in sorted(names)]
