"""The validator's KMS tables agree with the store's (one truth, two readers)."""

from __future__ import annotations

from kmsplan.policy.evaluate import GRANT_OPERATIONS
from kmsplan.stack import specs
from kmsplan.stack.schema import schema_enum
from kmsplan.store.specs import KEY_SPECS


def test_specs_and_usages_match_the_store() -> None:
    assert specs.USAGES == {name: info.usages for name, info in KEY_SPECS.items()}
    for name, info in KEY_SPECS.items():
        assert specs.default_usage(name) == info.default_usage


def test_schema_enums_match_the_tables() -> None:
    assert set(schema_enum("spec")) == set(specs.USAGES)
    assert set(schema_enum("usage")) == {u for us in specs.USAGES.values() for u in us}
    assert set(schema_enum("operation")) == set().union(*specs.OPERATIONS.values())
    assert set(schema_enum("operation")) <= GRANT_OPERATIONS


def test_regions_are_commercial_and_sorted() -> None:
    regions = schema_enum("region")
    assert list(regions) == sorted(regions) and len(set(regions)) == len(regions)
    assert all(r.count("-") == 2 and not r.startswith(("cn-", "us-gov")) for r in regions)


def test_only_symmetric_encryption_keys_rotate() -> None:
    rotatable = {(s, u) for s, us in specs.USAGES.items() for u in us if specs.rotatable(s, u)}
    assert rotatable == {("SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT")}
