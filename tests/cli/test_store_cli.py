"""The store's command line, run as a user runs it (subprocesses, real SoftHSM2 tokens): `store init`
and its refusals, the store folder it makes, `store check` / `store info`, KMSPLAN_STORE, and
`audit verify` on intact and tampered logs."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ACCOUNT = "111122223333"


def kmsplan(*args: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """The CLI in a subprocess, with KMSPLAN_STORE removed unless given (as a fresh shell would)."""
    full_env = {k: v for k, v in os.environ.items() if k != "KMSPLAN_STORE"}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "kmsplan", *args], capture_output=True, text=True, env=full_env,
                          cwd=cwd, timeout=300, check=False)


def assert_user_error(result: subprocess.CompletedProcess, *words: str) -> str:
    """Exit 1, one 'Error:' line naming the problem (plus an optional hint line), no traceback."""
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr
    assert len(lines) <= 2, f"a short error, not a wall of text: {result.stderr}"
    for word in words:
        assert word in errors[0], f"{word!r} not in {errors[0]!r}"
    return errors[0]


@pytest.mark.parametrize("account, shown", [("11112222333", "11112222333"), ("1111222233334", "1111222233334"),
                                            ("abcdefghijkl", "abcdefghijkl"), ("", "''"),
                                            ("111122223333\n", "111122223333")])
def test_init_refuses_a_bad_account(tmp_path, account, shown):
    store = tmp_path / "store"
    result = kmsplan("store", "init", "--store", str(store), "--account", account, "--regions", "eu-west-1")
    assert_user_error(result, "account", shown)
    assert not (store / "store.json").exists()


@pytest.mark.parametrize("regions, shown", [("eu-west-1,Mars", "Mars"), ("euwest1", "euwest1"), (",", ","),
                                            ("eu-west-1;eu-central-1", "eu-west-1;eu-central-1"),
                                            ("eu-west-1,EU-CENTRAL-1", "EU-CENTRAL-1")])
def test_init_refuses_bad_regions(tmp_path, regions, shown):
    store = tmp_path / "store"
    result = kmsplan("store", "init", "--store", str(store), "--account", ACCOUNT, "--regions", regions)
    assert_user_error(result, "region", shown)
    assert not (store / "store.json").exists()


def test_init_refuses_a_folder_that_is_not_empty(tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    (store / "notes.txt").write_text("mine")
    result = kmsplan("store", "init", "--store", str(store), "--account", ACCOUNT, "--regions", "eu-west-1")
    assert_user_error(result, "not empty")
    assert sorted(p.name for p in store.iterdir()) == ["notes.txt"], "nothing of the user's is touched"
    assert (store / "notes.txt").read_text() == "mine"


def test_init_refuses_an_existing_store_and_leaves_it_working(fresh_store_dir):
    before = (fresh_store_dir / "pins.json").read_text()
    result = kmsplan("store", "init", "--store", str(fresh_store_dir), "--account", ACCOUNT, "--regions", "us-east-1")
    assert_user_error(result, "already")
    assert (fresh_store_dir / "pins.json").read_text() == before
    assert kmsplan("store", "check", "--store", str(fresh_store_dir)).returncode == 0


def test_init_refuses_a_missing_pkcs11_module(tmp_path):
    store = tmp_path / "store"
    module = tmp_path / "no-such-hsm.so"
    result = kmsplan("store", "init", "--store", str(store), "--account", ACCOUNT, "--regions", "eu-west-1",
                     "--pkcs11-module", str(module))
    assert_user_error(result, str(module))
    assert not (store / "store.json").exists()


def test_init_refuses_a_file_that_is_not_a_pkcs11_module(tmp_path):
    store = tmp_path / "store"
    module = tmp_path / "fake-hsm.so"
    module.write_bytes(b"not a shared library")
    result = kmsplan("store", "init", "--store", str(store), "--account", ACCOUNT, "--regions", "eu-west-1",
                     "--pkcs11-module", str(module), env={"KMSPLAN_TOKEN_PIN": "1234"})
    assert_user_error(result, str(module))
    assert not (store / "store.json").exists() and not (store / "pins.json").exists()


def test_init_usage_errors_are_short(tmp_path):
    result = kmsplan("store", "init", "--store", str(tmp_path / "s"), "--account", ACCOUNT)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "--regions" in result.stderr


def test_init_builds_a_self_contained_store(tmp_path):
    store = tmp_path / "store"
    result = kmsplan("store", "init", "--store", str(store), "--account", ACCOUNT,
                     "--regions", "eu-west-1,eu-central-1,eu-west-1")
    assert result.returncode == 0, result.stderr
    assert "eu-west-1" in result.stdout and "eu-central-1" in result.stdout

    pins_file = store / "pins.json"
    assert stat.S_IMODE(pins_file.stat().st_mode) == 0o600
    pins = json.loads(pins_file.read_text())
    assert sorted(pins) == ["eu-central-1", "eu-west-1"], "one token per region, duplicates dropped"
    assert len(set(pins.values())) == 2 and all(len(pin) >= 16 for pin in pins.values())
    assert stat.S_IMODE(store.stat().st_mode) & 0o077 == 0, "the store folder is private"

    conf = store / "softhsm2.conf"
    tokens = store / "tokens"
    assert conf.is_file() and tokens.is_dir()
    token_dir = next(line.split("=", 1)[1].strip() for line in conf.read_text().splitlines()
                     if line.startswith("directories.tokendir"))
    assert Path(token_dir) == tokens.resolve(), "the tokens live inside the store folder"
    assert len([p for p in tokens.iterdir() if p.is_dir()]) == 2

    config = json.loads((store / "store.json").read_text())
    assert config["account"] == ACCOUNT and config["regions"] == ["eu-west-1", "eu-central-1"]

    for pin in pins.values():  # PINs are never printed
        assert pin not in result.stdout + result.stderr
    info = kmsplan("store", "info", "--store", str(store))
    assert info.returncode == 0, info.stderr
    summary = json.loads(info.stdout)
    assert summary["account"] == ACCOUNT and summary["regions"] == {"eu-west-1": 0, "eu-central-1": 0}
    assert not any(pin in info.stdout for pin in pins.values())
    check = kmsplan("store", "check", "--store", str(store))
    assert check.returncode == 0 and "consistent" in check.stdout
    verify = kmsplan("audit", "verify", "--store", str(store))
    assert verify.returncode == 0 and "0 record" in verify.stdout


def test_kmsplan_store_sets_the_default_folder(tmp_path):
    store = tmp_path / "from-env"
    env = {"KMSPLAN_STORE": str(store)}
    result = kmsplan("store", "init", "--account", ACCOUNT, "--regions", "us-east-1", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (store / "store.json").is_file() and not (tmp_path / ".kmsplan").exists()
    info = kmsplan("store", "info", env=env, cwd=tmp_path)
    assert info.returncode == 0, info.stderr
    assert Path(json.loads(info.stdout)["path"]) == store
    assert kmsplan("store", "check", env=env, cwd=tmp_path).returncode == 0
    # --store wins over the environment
    other = tmp_path / "explicit"
    assert kmsplan("store", "init", "--store", str(other), "--account", ACCOUNT, "--regions", "us-east-1",
                   env=env).returncode == 0
    assert Path(json.loads(kmsplan("store", "info", "--store", str(other), env=env).stdout)["path"]) == other


def test_without_kmsplan_store_the_default_is_dot_kmsplan(tmp_path):
    result = kmsplan("store", "init", "--account", ACCOUNT, "--regions", "eu-west-1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / ".kmsplan" / "store.json").is_file()
    assert kmsplan("store", "check", cwd=tmp_path).returncode == 0


def test_commands_on_a_missing_store_say_so(tmp_path):
    for command in (["store", "check"], ["store", "info"], ["audit", "verify"]):
        result = kmsplan(*command, "--store", str(tmp_path / "nowhere"))
        assert_user_error(result, "no kmsplan store")


# -- audit verify -------------------------------------------------------------------------------
MAKE_RECORDS = """
import sys
from kmsplan.store import KeyStore
from kmsplan.errors import KMSError
store = KeyStore.open(sys.argv[1])
kms = store.client(store.config.regions[0])
key = kms.create_key(Description="audit cli")["KeyMetadata"]["KeyId"]
blob = kms.encrypt(KeyId=key, Plaintext=b"x", EncryptionContext={"n": "1"})["CiphertextBlob"]
kms.decrypt(CiphertextBlob=blob, EncryptionContext={"n": "1"})
try:
    kms.decrypt(CiphertextBlob=blob, EncryptionContext={"n": "2"})
except KMSError:
    pass
kms.tag_resource(KeyId=key, Tags=[{"TagKey": "a", "TagValue": "b"}])
kms.disable_key(KeyId=key)
kms.enable_key(KeyId=key)
kms.describe_key(KeyId=key)
store.close()
"""
RECORDS = 8


@pytest.fixture(scope="module")
def logged_store(tmp_path_factory):
    """A store of its own with RECORDS audit records (made by a separate process)."""
    path = tmp_path_factory.mktemp("audit") / "store"
    init = kmsplan("store", "init", "--store", str(path), "--account", ACCOUNT, "--regions", "eu-west-1")
    assert init.returncode == 0, init.stderr
    made = subprocess.run([sys.executable, "-c", MAKE_RECORDS, str(path)], capture_output=True, text=True, timeout=120,
                          check=False)
    assert made.returncode == 0, made.stderr
    assert len((path / "audit.log").read_bytes().splitlines()) == RECORDS
    return path


def tampered(logged_store: Path, tmp_path: Path, change) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(logged_store, copy)
    lines = (copy / "audit.log").read_bytes().splitlines(keepends=True)
    (copy / "audit.log").write_bytes(b"".join(change(lines)))
    return copy


def test_verify_passes_on_an_intact_log(logged_store):
    result = kmsplan("audit", "verify", "--store", str(logged_store))
    assert result.returncode == 0, result.stderr
    assert f"{RECORDS} record(s)" in result.stdout and "intact" in result.stdout


def alter(lines, index, old, new):
    assert old in lines[index]
    lines[index] = lines[index].replace(old, new, 1)
    return lines


TAMPERING = [
    pytest.param(lambda ls: alter(ls, 2, b'"eventName":"Decrypt"', b'"eventName":"Encrypt"'), 3, "altered",
                 id="altered-middle"),
    pytest.param(lambda ls: alter(ls, 0, b'"awsRegion":"eu-west-1"', b'"awsRegion":"eu-west-2"'), 1, "altered",
                 id="altered-first"),
    pytest.param(lambda ls: alter(ls, RECORDS - 1, b'"outcome":"Success"', b'"outcome":"Failure"'), RECORDS,
                 "altered", id="altered-last"),
    pytest.param(lambda ls: ls[:3] + [ls[3][:40] + b"\n"] + ls[4:], 4, "altered", id="truncated-line"),
    pytest.param(lambda ls: ls[:3] + ls[4:], 4, "removed", id="removed-middle"),
    pytest.param(lambda ls: ls[1:], 1, "removed", id="removed-first"),
    pytest.param(lambda ls: ls[:-1], RECORDS, "removed", id="removed-last"),
    pytest.param(lambda ls: ls[:-3], RECORDS - 2, "removed", id="removed-last-three"),
    pytest.param(lambda ls: [], 1, "removed", id="emptied"),
    pytest.param(lambda ls: ls[:2] + [ls[3], ls[2]] + ls[4:], 3, "reordered", id="swapped"),
    pytest.param(lambda ls: ls[:1] + [ls[-1]] + ls[1:-1], 2, "reordered", id="last-moved-up"),
    pytest.param(lambda ls: ls[:4] + [ls[3]] + ls[4:], 5, "duplicated", id="duplicated"),
]


@pytest.mark.parametrize("change, line, word", TAMPERING)
def test_verify_reports_the_first_tampered_record(logged_store, tmp_path, change, line, word):
    copy = tampered(logged_store, tmp_path, change)
    result = kmsplan("audit", "verify", "--store", str(copy))
    message = assert_user_error(result, f"line {line}")
    assert word in message, message
    others = {"altered", "removed", "reordered", "duplicated"} - {word}
    assert not [other for other in others if other in message], f"the message must not hedge: {message}"
    # the original is untouched and still verifies
    assert kmsplan("audit", "verify", "--store", str(logged_store)).returncode == 0


def test_verify_catches_a_record_rewritten_with_a_fresh_hash(logged_store, tmp_path):
    """Recomputing one record's own hash does not help: the next record's link breaks."""
    import hashlib
    import re

    def rehash(lines):
        previous = re.search(rb'"prevHash":"([0-9a-f]{64})"', lines[2]).group(1)
        body = lines[2].replace(b'"eventName":"Decrypt"', b'"eventName":"Encrypt"')
        head, _ = body.rsplit(b',"hash":"', 1)
        digest = hashlib.sha256(previous + head + b"}").hexdigest().encode()
        lines[2] = head + b',"hash":"' + digest + b'"}\n'
        return lines

    copy = tampered(logged_store, tmp_path, rehash)
    result = kmsplan("audit", "verify", "--store", str(copy))
    message = assert_user_error(result, "line 4")
    assert "record 3" in message and "altered" in message, message
