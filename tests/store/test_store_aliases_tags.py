"""Aliases (syntax, reserved prefix, per-region uniqueness, repointing rules, every way to name a
key) and tags (limits, reserved prefix, at most 50)."""

from __future__ import annotations

import uuid

import pytest
from kms_support import kms_error, list_all, shared_key


def unique(prefix: str = "alias/t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


def alias_names(client) -> set[str]:
    return {a["AliasName"] for a in list_all(client.list_aliases, "Aliases", Limit=1000)}


@pytest.fixture
def key(kms):
    return kms.create_key(Description="alias and tag tests")["KeyMetadata"]


@pytest.mark.parametrize("suffix", ["a", "A-b_c/d0", "deep/er/path", "x" * (256 - len("alias/") - 33)])
def test_valid_alias_names(store, kms, key, suffix):
    name = f"alias/{suffix}-{uuid.uuid4().hex}"
    assert len(name) <= 256
    kms.create_alias(AliasName=name, TargetKeyId=key["KeyId"])
    listed = {a["AliasName"]: a for a in kms.list_aliases(KeyId=key["KeyId"])["Aliases"]}
    assert listed[name]["TargetKeyId"] == key["KeyId"]
    assert listed[name]["AliasArn"] == f"arn:aws:kms:{kms.region}:{store.config.account}:{name}"
    assert kms.describe_key(KeyId=name)["KeyMetadata"]["KeyId"] == key["KeyId"]


def test_an_alias_of_exactly_256_characters_is_accepted_and_257_refused(kms, key):
    base = f"alias/{uuid.uuid4().hex}"
    name = base + "y" * (256 - len(base))
    kms.create_alias(AliasName=name, TargetKeyId=key["KeyId"])
    with kms_error("ValidationException", "aliasName"):
        kms.create_alias(AliasName=name + "z", TargetKeyId=key["KeyId"])


INVALID_NAMES = ["alias/", "alias", "aliases/x", "foo/bar", "alias/has space", "alias/dot.ted", "alias/colon:x",
                 "alias/ünïcode", "alias/star*", "", "ALIAS/upper", "alias/new\nline", "alias/trailing-newline\n",
                 "arn:aws:kms:eu-west-1:1:alias/x"]


@pytest.mark.parametrize("name", INVALID_NAMES)
def test_invalid_alias_names_are_refused_and_create_nothing(kms, key, name):
    before = alias_names(kms)
    with kms_error("ValidationException"):
        kms.create_alias(AliasName=name, TargetKeyId=key["KeyId"])
    assert alias_names(kms) == before


@pytest.mark.parametrize("name", ["alias/aws/mine", "alias/aws/s3"])
def test_the_alias_aws_prefix_is_reserved(kms, key, name):
    before = alias_names(kms)
    with kms_error("NotAuthorizedException", "alias/aws/"):
        kms.create_alias(AliasName=name, TargetKeyId=key["KeyId"])
    assert alias_names(kms) == before
    kms.create_alias(AliasName=unique("alias/awsome"), TargetKeyId=key["KeyId"])  # only the exact prefix


def test_alias_names_are_unique_per_region_but_free_in_other_regions(store, kms, key):
    name = unique()
    kms.create_alias(AliasName=name, TargetKeyId=key["KeyId"])
    other = kms.create_key()["KeyMetadata"]["KeyId"]
    with kms_error("AlreadyExistsException", name):
        kms.create_alias(AliasName=name, TargetKeyId=other)
    assert kms.describe_key(KeyId=name)["KeyMetadata"]["KeyId"] == key["KeyId"]

    far = store.client(store.config.regions[1])
    far_key = far.create_key()["KeyMetadata"]["KeyId"]
    far.create_alias(AliasName=name, TargetKeyId=far_key)
    assert far.describe_key(KeyId=name)["KeyMetadata"]["KeyId"] == far_key
    assert kms.describe_key(KeyId=name)["KeyMetadata"]["KeyId"] == key["KeyId"]


def test_an_alias_must_target_a_key_of_its_own_region(store, kms, key):
    far = store.client(store.config.regions[1])
    with kms_error("NotFoundException"):
        far.create_alias(AliasName=unique(), TargetKeyId=key["KeyId"])
    with kms_error("NotFoundException"):
        far.create_alias(AliasName=unique(), TargetKeyId=key["Arn"])


def test_several_aliases_per_key_and_list_aliases_by_key(kms, key):
    names = sorted(unique() for _ in range(3))
    for name in names:
        kms.create_alias(AliasName=name, TargetKeyId=key["KeyId"])
    unrelated = kms.create_key()["KeyMetadata"]["KeyId"]
    kms.create_alias(AliasName=unique(), TargetKeyId=unrelated)
    for reference in (key["KeyId"], key["Arn"]):
        listed = kms.list_aliases(KeyId=reference)["Aliases"]
        assert sorted(a["AliasName"] for a in listed) == names
        assert {a["TargetKeyId"] for a in listed} == {key["KeyId"]}
        assert all(a["CreationDate"] and a["LastUpdatedDate"] for a in listed)
    assert set(names) <= alias_names(kms)
    with kms_error("NotFoundException"):
        kms.list_aliases(KeyId=str(uuid.uuid4()))


def test_list_aliases_pages(kms, key):
    for _ in range(3):
        kms.create_alias(AliasName=unique("alias/page"), TargetKeyId=key["KeyId"])
    pages = []
    marker = None
    while True:
        page = kms.list_aliases(KeyId=key["KeyId"], Limit=1, **({"Marker": marker} if marker else {}))
        pages.append([a["AliasName"] for a in page["Aliases"]])
        if not page["Truncated"]:
            break
        marker = page["NextMarker"]
    assert [len(p) for p in pages] == [1, 1, 1]
    assert len({name for p in pages for name in p}) == 3


def test_update_alias_repoints_between_keys_of_the_same_spec_and_usage(kms, key, clock):
    name = unique()
    kms.create_alias(AliasName=name, TargetKeyId=key["KeyId"])
    created = kms.list_aliases(KeyId=key["KeyId"])["Aliases"][0]["CreationDate"]
    blob = kms.encrypt(KeyId=name, Plaintext=b"old target")["CiphertextBlob"]
    target = kms.create_key()["KeyMetadata"]
    clock.advance(seconds=30)
    kms.update_alias(AliasName=name, TargetKeyId=target["Arn"])
    assert kms.describe_key(KeyId=name)["KeyMetadata"]["KeyId"] == target["KeyId"]
    entry = kms.list_aliases(KeyId=target["KeyId"])["Aliases"][0]
    assert entry["CreationDate"] == created and entry["LastUpdatedDate"] > created
    assert kms.list_aliases(KeyId=key["KeyId"])["Aliases"] == []
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"old target"
    with kms_error("IncorrectKeyException"):
        kms.decrypt(CiphertextBlob=blob, KeyId=name)


@pytest.mark.parametrize("spec, usage", [("RSA_2048", "ENCRYPT_DECRYPT"), ("HMAC_256", "GENERATE_VERIFY_MAC"),
                                         ("RSA_2048", "SIGN_VERIFY")])
def test_update_alias_refuses_a_key_of_another_spec_or_usage(store, kms, key, spec, usage):
    name = unique()
    kms.create_alias(AliasName=name, TargetKeyId=key["KeyId"])
    with kms_error("ValidationException", spec):
        kms.update_alias(AliasName=name, TargetKeyId=shared_key(store, spec, usage))
    assert kms.describe_key(KeyId=name)["KeyMetadata"]["KeyId"] == key["KeyId"]


def test_update_alias_refuses_a_usage_change_on_the_same_spec(store, kms):
    name = unique()
    kms.create_alias(AliasName=name, TargetKeyId=shared_key(store, "RSA_2048", "SIGN_VERIFY"))
    with kms_error("ValidationException"):
        kms.update_alias(AliasName=name, TargetKeyId=shared_key(store, "RSA_2048", "ENCRYPT_DECRYPT"))


def test_update_alias_errors(kms, key):
    with kms_error("NotFoundException"):
        kms.update_alias(AliasName=unique(), TargetKeyId=key["KeyId"])
    name = unique()
    kms.create_alias(AliasName=name, TargetKeyId=key["KeyId"])
    with kms_error("NotFoundException"):
        kms.update_alias(AliasName=name, TargetKeyId=str(uuid.uuid4()))
    with kms_error("NotAuthorizedException"):
        kms.update_alias(AliasName="alias/aws/ebs", TargetKeyId=key["KeyId"])


def test_delete_alias(kms, key):
    name = unique()
    kms.create_alias(AliasName=name, TargetKeyId=key["KeyId"])
    kms.delete_alias(AliasName=name)
    assert name not in alias_names(kms)
    with kms_error("NotFoundException"):
        kms.describe_key(KeyId=name)
    with kms_error("NotFoundException"):
        kms.delete_alias(AliasName=name)
    assert kms.describe_key(KeyId=key["KeyId"])["KeyMetadata"]["KeyState"] == "Enabled", "the key stays"
    kms.create_alias(AliasName=name, TargetKeyId=key["KeyId"])  # the name can be used again


def test_every_way_to_name_a_key(store, kms, key):
    name = unique()
    kms.create_alias(AliasName=name, TargetKeyId=key["KeyId"])
    alias_arn = f"arn:aws:kms:{kms.region}:{store.config.account}:{name}"
    blobs = [kms.encrypt(KeyId=reference, Plaintext=b"named")["CiphertextBlob"]
             for reference in (key["KeyId"], key["Arn"], name, alias_arn)]
    for blob in blobs:
        assert kms.decrypt(CiphertextBlob=blob)["KeyId"] == key["Arn"]
    for reference in (key["KeyId"], key["Arn"], name, alias_arn):
        assert kms.describe_key(KeyId=reference)["KeyMetadata"]["Arn"] == key["Arn"]


def test_arns_of_another_region_or_account_are_not_found(store, kms, key):
    name = unique()
    kms.create_alias(AliasName=name, TargetKeyId=key["KeyId"])
    far = store.config.regions[1]
    for reference in (key["Arn"].replace(kms.region, far),
                      f"arn:aws:kms:{far}:{store.config.account}:{name}",
                      key["Arn"].replace(store.config.account, "999999999999"),
                      f"arn:aws:kms:{kms.region}:999999999999:{name}"):
        with kms_error("NotFoundException"):
            kms.describe_key(KeyId=reference)
        with kms_error("NotFoundException"):
            kms.encrypt(KeyId=reference, Plaintext=b"x")
    far_client = store.client(far)
    with kms_error("NotFoundException"):
        far_client.describe_key(KeyId=key["Arn"])


def tags_of(kms, key_id):
    return {t["TagKey"]: t["TagValue"] for t in list_all(kms.list_resource_tags, "Tags", KeyId=key_id)}


def test_tag_list_and_untag(kms, key):
    kms.tag_resource(KeyId=key["KeyId"], Tags=[{"TagKey": "team", "TagValue": "payments"},
                                               {"TagKey": "empty", "TagValue": ""}])
    kms.tag_resource(KeyId=key["Arn"], Tags=[{"TagKey": "team", "TagValue": "risk"}])
    assert tags_of(kms, key["KeyId"]) == {"team": "risk", "empty": ""}
    assert kms.list_resource_tags(KeyId=key["KeyId"])["Tags"] == [{"TagKey": "empty", "TagValue": ""},
                                                                    {"TagKey": "team", "TagValue": "risk"}]
    kms.untag_resource(KeyId=key["KeyId"], TagKeys=["team", "not-there"])
    assert tags_of(kms, key["KeyId"]) == {"empty": ""}
    with kms_error("NotFoundException"):
        kms.tag_resource(KeyId=str(uuid.uuid4()), Tags=[{"TagKey": "a", "TagValue": "b"}])


def test_create_key_with_tags(kms):
    key_id = kms.create_key(Tags=[{"TagKey": "a", "TagValue": "1"}, {"TagKey": "b", "TagValue": "2"}])[
        "KeyMetadata"]["KeyId"]
    assert tags_of(kms, key_id) == {"a": "1", "b": "2"}


@pytest.mark.parametrize("tag", [{"TagKey": "k" * 128, "TagValue": "v" * 256}, {"TagKey": "x", "TagValue": ""},
                                 {"TagKey": "AwS-not-reserved", "TagValue": "v"}, {"TagKey": "ключ", "TagValue": "✓"}])
def test_tags_at_the_limits_are_accepted(kms, key, tag):
    kms.tag_resource(KeyId=key["KeyId"], Tags=[tag])
    assert tags_of(kms, key["KeyId"]) == {tag["TagKey"]: tag["TagValue"]}


@pytest.mark.parametrize("tag", [{"TagKey": "k" * 129, "TagValue": "v"}, {"TagKey": "", "TagValue": "v"},
                                 {"TagKey": "k", "TagValue": "v" * 257}, {"TagKey": "aws:owner", "TagValue": "v"},
                                 {"TagKey": "AWS:owner", "TagValue": "v"}])
def test_invalid_tags_are_refused_and_change_nothing(kms, key, tag):
    kms.tag_resource(KeyId=key["KeyId"], Tags=[{"TagKey": "kept", "TagValue": "yes"}])
    with kms_error("TagException"):
        kms.tag_resource(KeyId=key["KeyId"], Tags=[{"TagKey": "fine", "TagValue": "v"}, tag])
    assert tags_of(kms, key["KeyId"]) == {"kept": "yes"}
    before = len(list_all(kms.list_keys, "Keys", Limit=1000))
    with kms_error("TagException"):
        kms.create_key(Tags=[tag])
    assert len(list_all(kms.list_keys, "Keys", Limit=1000)) == before


def test_reserved_tag_keys_cannot_be_untagged(kms, key):
    with kms_error("TagException", "aws:"):
        kms.untag_resource(KeyId=key["KeyId"], TagKeys=["aws:cloudformation:stack-name"])


def test_at_most_50_tags(kms, key):
    fifty = [{"TagKey": f"k{i:02d}", "TagValue": str(i)} for i in range(50)]
    kms.tag_resource(KeyId=key["KeyId"], Tags=fifty[:30])
    kms.tag_resource(KeyId=key["KeyId"], Tags=fifty[30:])
    assert len(tags_of(kms, key["KeyId"])) == 50
    kms.tag_resource(KeyId=key["KeyId"], Tags=[{"TagKey": "k00", "TagValue": "overwritten"}])  # not a new tag
    with kms_error("LimitExceededException", "50"):
        kms.tag_resource(KeyId=key["KeyId"], Tags=[{"TagKey": "one-too-many", "TagValue": "x"}])
    tags = tags_of(kms, key["KeyId"])
    assert len(tags) == 50 and tags["k00"] == "overwritten" and "one-too-many" not in tags
    kms.untag_resource(KeyId=key["KeyId"], TagKeys=["k01"])
    kms.tag_resource(KeyId=key["KeyId"], Tags=[{"TagKey": "one-too-many", "TagValue": "x"}])


def test_create_key_with_51_tags_creates_nothing(kms):
    before = len(list_all(kms.list_keys, "Keys", Limit=1000))
    with kms_error("LimitExceededException"):
        kms.create_key(Tags=[{"TagKey": f"k{i}", "TagValue": "v"} for i in range(51)])
    assert len(list_all(kms.list_keys, "Keys", Limit=1000)) == before
    key_id = kms.create_key(Tags=[{"TagKey": f"k{i}", "TagValue": "v"} for i in range(50)])["KeyMetadata"]["KeyId"]
    assert len(tags_of(kms, key_id)) == 50


def test_list_resource_tags_pages(kms, key):
    kms.tag_resource(KeyId=key["KeyId"], Tags=[{"TagKey": f"p{i}", "TagValue": "v"} for i in range(5)])
    first = kms.list_resource_tags(KeyId=key["KeyId"], Limit=2)
    assert first["Truncated"] is True and len(first["Tags"]) == 2
    assert len(list_all(kms.list_resource_tags, "Tags", KeyId=key["KeyId"], Limit=2)) == 5
