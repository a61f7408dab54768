"""`kmsplan audit` queries and `kmsplan audit last-use`, run as a user runs them: subprocesses on a
real store (SoftHSM2 tokens), whose log was written by the store itself at chosen times.

The module's store gets its calls from a separate process with a clock set to day 0..7 of a
window that ends three days ago, so relative times (`--since 7d`) and ISO times can both be tested
against known records.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml

ACCOUNT = "111122223333"
REGIONS = ("eu-west-1", "eu-central-1")
ROOT = f"arn:aws:iam::{ACCOUNT}:root"
APP = f"arn:aws:iam::{ACCOUNT}:role/app"
SESSION = f"arn:aws:sts::{ACCOUNT}:assumed-role/app/batch-7"
INTRUDER = f"arn:aws:iam::{ACCOUNT}:role/intruder"
SECRET = b"TOP-SECRET-PLAINTEXT"

# Made in a separate process: a PKCS#11 library is initialised once per process, and this store
# is not the session store of tests/conftest.py.
MAKE_CALLS = """
import base64, json, sys
from datetime import datetime, timedelta
from kmsplan.store import KeyStore, KMSError

path, base, secret = sys.argv[1], datetime.fromisoformat(sys.argv[2]), sys.argv[3].encode()
now = [base]
store = KeyStore.open(path, clock=lambda: now[0])
def day(n):
    now[0] = base + timedelta(days=n)
def client(principal="arn:aws:iam::111122223333:root", region="eu-west-1"):
    return store.client(region, principal)
def fails(call, **params):
    try:
        call(**params)
    except KMSError as error:
        return error.code
    raise AssertionError("expected a failure")

root = client()
orders = root.create_key(Description="orders")["KeyMetadata"]
root.create_alias(AliasName="alias/orders", TargetKeyId=orders["KeyId"])
mrk = root.create_key(Description="global", MultiRegion=True)["KeyMetadata"]
root.replicate_key(KeyId=mrk["KeyId"], ReplicaRegion="eu-central-1")
idle = root.create_key(Description="idle")["KeyMetadata"]
root.create_alias(AliasName="alias/idle", TargetKeyId=idle["KeyId"])

day(1)
app = client("arn:aws:iam::111122223333:role/app")
blob = app.encrypt(KeyId="alias/orders", Plaintext=secret, EncryptionContext={"tenant": "acme"})["CiphertextBlob"]
day(2)
assert app.decrypt(CiphertextBlob=blob, EncryptionContext={"tenant": "acme"})["Plaintext"] == secret
day(3)
denied = fails(client("arn:aws:iam::111122223333:role/intruder").decrypt, CiphertextBlob=blob,
               EncryptionContext={"tenant": "acme"})
day(4)
session = client("arn:aws:sts::111122223333:assumed-role/app/batch-7")
session.encrypt(KeyId=orders["Arn"], Plaintext=secret + b"-2")
data_key = session.generate_data_key(KeyId=orders["KeyId"], KeySpec="AES_256")["Plaintext"]
day(5)
central = client(region="eu-central-1")
central.encrypt(KeyId=mrk["Arn"].replace("eu-west-1", "eu-central-1"), Plaintext=secret, EncryptionContext={"site": "fra"})
day(6)
missing = fails(root.encrypt, KeyId="alias/missing", Plaintext=secret)
day(7)
root.describe_key(KeyId=orders["KeyId"])
wrong = fails(root.decrypt, CiphertextBlob=blob, EncryptionContext={"tenant": "other"})
store.close()
print(json.dumps({"orders": orders["KeyId"], "orders_arn": orders["Arn"], "mrk": mrk["KeyId"], "idle": idle["KeyId"],
                  "errors": [denied, missing, wrong], "data_key": base64.b64encode(data_key).decode(),
                  "blob": base64.b64encode(blob).decode()}))
"""

PRINCIPALS = {"principals": [
    {"arn": APP, "policies": [{"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey", "kms:DescribeKey"],
         "Resource": "*"}]}]},
    {"arn": INTRUDER},
]}


def kmsplan(*args: str, store: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    """The CLI in a subprocess (KMSPLAN_STORE set to `store`, or removed as in a fresh shell)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("KMSPLAN_")}
    if store is not None:
        full_env["KMSPLAN_STORE"] = str(store)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "kmsplan", *args], capture_output=True, text=True, env=full_env,
                          timeout=120, check=False)


def assert_user_error(result: subprocess.CompletedProcess, *words: str) -> str:
    """Exit 1, one 'Error:' line naming the problem (plus an optional hint line), no traceback."""
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith(("Usage:", "Try "))]
    errors = [line for line in lines if line.startswith("Error:")]
    assert len(errors) == 1 and len(lines) <= 2, result.stderr
    for word in words:
        assert word in errors[0], f"{word!r} not in {errors[0]!r}"
    return errors[0]


def at(base: datetime, days: float) -> str:
    return (base + timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%SZ")


class Logged:
    """The module's store and what the calling process reported about it."""

    def __init__(self, path: Path, base: datetime, made: dict) -> None:
        self.path, self.base = path, base
        self.orders, self.orders_arn, self.mrk, self.idle = made["orders"], made["orders_arn"], made["mrk"], made["idle"]
        self.errors, self.data_key, self.blob = made["errors"], made["data_key"], made["blob"]

    def query(self, *args: str) -> list[dict]:
        """`kmsplan audit ARGS --format jsonl`, parsed."""
        result = kmsplan("audit", *args, "--format", "jsonl", store=self.path)
        assert result.returncode == 0, result.stderr
        return [json.loads(line) for line in result.stdout.splitlines()]

    def day(self, record: dict) -> float:
        moment = datetime.fromisoformat(record["eventTime"].replace("Z", "+00:00"))
        return (moment - self.base).total_seconds() / 86400


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> Logged:
    folder = tmp_path_factory.mktemp("audit-query")
    path = folder / "store"
    init = kmsplan("store", "init", "--store", str(path), "--account", ACCOUNT, "--regions", ",".join(REGIONS))
    assert init.returncode == 0, init.stderr
    (folder / "principals.yaml").write_text(yaml.safe_dump(PRINCIPALS))
    registered = kmsplan("store", "principals", "apply", str(folder / "principals.yaml"), store=path)
    assert registered.returncode == 0, registered.stderr
    base = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(days=10)
    made = subprocess.run([sys.executable, "-c", MAKE_CALLS, str(path), base.isoformat(), SECRET.decode()],
                          capture_output=True, text=True, timeout=120, check=False)
    assert made.returncode == 0, made.stderr
    return Logged(path, base, json.loads(made.stdout))


def names(records: list[dict]) -> list[tuple[str, str]]:
    return [(r["eventName"], r.get("errorCode", "ok")) for r in records]


ORDERS_HISTORY = [("CreateKey", "ok"), ("CreateAlias", "ok"), ("Encrypt", "ok"), ("Decrypt", "ok"),
                  ("Decrypt", "AccessDeniedException"), ("Encrypt", "ok"), ("GenerateDataKey", "ok"),
                  ("DescribeKey", "ok"), ("Decrypt", "InvalidCiphertextException")]


# -- filters ---------------------------------------------------------------------------------------

def test_a_key_is_found_by_id_arn_or_alias_whatever_name_each_call_used(logged):
    """Calls made through the alias, the ARN, the id, or with no key named at all (Decrypt reads it
    from the ciphertext) are all the key's history, and no other key's call is in it."""
    alias_arn = f"arn:aws:kms:eu-west-1:{ACCOUNT}:alias/orders"
    histories = {ref: logged.query("--key", ref) for ref in (logged.orders, logged.orders_arn, "alias/orders",
                                                               alias_arn)}
    for ref, records in histories.items():
        assert names(records) == ORDERS_HISTORY, ref
    used = [r["requestParameters"].get("keyId") for r in histories[logged.orders] if r["eventName"] == "Encrypt"]
    assert used == ["alias/orders", logged.orders_arn], "the calls named the key differently, and still match"
    assert all(logged.mrk not in json.dumps(r) and logged.idle not in json.dumps(r) for r in histories["alias/orders"])


def test_a_multi_region_key_id_spans_regions_and_an_arn_names_one(logged):
    everywhere = logged.query("--key", logged.mrk)
    assert {r["awsRegion"] for r in everywhere} == set(REGIONS)
    central_arn = f"arn:aws:kms:eu-central-1:{ACCOUNT}:key/{logged.mrk}"
    central = logged.query("--key", central_arn)
    # ReplicateKey is called in the primary's region and creates the replica: both keys' record
    assert [(r["eventName"], r["awsRegion"]) for r in central] == [("ReplicateKey", "eu-west-1"),
                                                                   ("Encrypt", "eu-central-1")]
    assert all(central_arn in [res["ARN"] for res in r["resources"]] for r in central)
    assert logged.query("--key", logged.mrk, "--region", "eu-central-1") == central[1:]


def test_an_alias_that_no_longer_names_a_key_still_finds_the_calls_that_used_it(logged):
    result = kmsplan("audit", "--key", "alias/missing", "--format", "jsonl", store=logged.path)
    assert result.returncode == 0, result.stderr
    assert "alias/missing names no key" in result.stderr
    [record] = [json.loads(line) for line in result.stdout.splitlines()]
    assert (record["eventName"], record["errorCode"]) == ("Encrypt", "NotFoundException")


def test_a_role_matches_its_sessions_and_a_session_only_itself(logged):
    by_role = logged.query("--principal", APP)
    assert [(r["eventName"], r["userIdentity"]["arn"]) for r in by_role] == [
        ("Encrypt", APP), ("Decrypt", APP), ("Encrypt", SESSION), ("GenerateDataKey", SESSION)]
    assert names(logged.query("--principal", SESSION)) == [("Encrypt", "ok"), ("GenerateDataKey", "ok")]
    assert names(logged.query("--principal", INTRUDER)) == [("Decrypt", "AccessDeniedException")]
    assert logged.query("--principal", APP, "--principal", INTRUDER) == sorted(
        by_role + logged.query("--principal", INTRUDER), key=lambda r: r["seq"])


def test_operation_outcome_and_region_filters(logged):
    crypto = logged.query("--operation", "decrypt", "--operation", "ENCRYPT")
    assert {r["eventName"] for r in crypto} == {"Encrypt", "Decrypt"} and len(crypto) == 7
    failures = logged.query("--outcome", "failure")
    assert [r["errorCode"] for r in failures] == logged.errors == [
        "AccessDeniedException", "NotFoundException", "InvalidCiphertextException"]
    successes = logged.query("--outcome", "success")
    assert successes and not [r for r in successes if "errorCode" in r]
    assert len(successes) + len(failures) == len(logged.query())
    central = logged.query("--region", "eu-central-1")
    assert central and {r["awsRegion"] for r in central} == {"eu-central-1"}
    assert names(logged.query("--key", "alias/orders", "--outcome", "failure", "--operation", "Decrypt")) == [
        ("Decrypt", "AccessDeniedException"), ("Decrypt", "InvalidCiphertextException")]


def test_time_windows_absolute_with_zones_and_relative(logged):
    window = logged.query("--since", at(logged.base, 2), "--until", at(logged.base, 4))
    assert sorted({round(logged.day(r)) for r in window}) == [2, 3]
    # the same instants written in another zone, and a bare date-time meaning UTC
    plus_two = (logged.base + timedelta(days=2)).astimezone(timezone(timedelta(hours=2))).isoformat()
    bare = (logged.base + timedelta(days=4)).strftime("%Y-%m-%dT%H:%M:%S")
    assert logged.query("--since", plus_two, "--until", bare) == window
    # ten days ago was day 0, so the last 7 days hold days 4 to 7 (day 3 is a few seconds older)
    assert sorted({round(logged.day(r)) for r in logged.query("--since", "7d")}) == [4, 5, 6, 7]
    assert sorted({round(logged.day(r)) for r in logged.query("--until", "168h")}) == [0, 1, 2, 3]
    assert logged.query("--since", "1h") == []


def test_limit_keeps_the_newest_matches_in_order(logged):
    everything = logged.query("--key", logged.orders)
    assert logged.query("--key", logged.orders, "--limit", "2") == everything[-2:]
    assert logged.query("--key", logged.orders, "--limit", "1000") == everything


# -- output ----------------------------------------------------------------------------------------

def test_text_output_is_one_aligned_line_per_record(logged):
    result = kmsplan("audit", "--key", "alias/orders", store=logged.path)
    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.splitlines()
    assert header.split() == ["TIME", "REGION", "PRINCIPAL", "OPERATION", "KEY", "RESULT", "ENCRYPTION", "CONTEXT"]
    assert len(rows) == len(ORDERS_HISTORY)
    starts = [match.start() for match in re.finditer(r"(?<!\S)\S", header)][:7]
    for row in rows:
        assert [row[start - 1] if start else " " for start in starts[1:]] == [" "] * 6, row
        assert all(row[start] != " " for start in starts[:6]), f"columns are aligned: {row}"
    denied = next(row for row in rows if "AccessDeniedException" in row)
    assert denied.split()[:6] == [at(logged.base, 3), "eu-west-1", INTRUDER, "Decrypt", logged.orders,
                                  "AccessDeniedException"]
    assert denied.endswith('{"tenant":"acme"}')
    assert rows[0].split()[-2:] == ["success", "-"]
    assert f"{len(rows)} record(s) matched" in result.stderr


def test_json_is_a_cloudtrail_file_and_jsonl_the_logs_own_lines(logged):
    result = kmsplan("audit", "--principal", APP, "--format", "json", store=logged.path)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert list(document) == ["Records"] and document["Records"] == logged.query("--principal", APP)
    record = document["Records"][0]
    # the fields CloudTrail tooling reads
    assert record["eventSource"] == "kms.amazonaws.com" and record["eventName"] == "Encrypt"
    assert record["userIdentity"]["arn"] == APP and record["awsRegion"] == "eu-west-1"
    assert record["requestParameters"]["encryptionContext"] == {"tenant": "acme"}
    assert record["resources"] == [{"ARN": logged.orders_arn, "type": "AWS::KMS::Key"}]
    lines = kmsplan("audit", "--principal", APP, "--format", "jsonl", store=logged.path).stdout.encode().splitlines()
    log = (logged.path / "audit.log").read_bytes().splitlines()
    assert lines and all(line in log for line in lines), "jsonl is the stored bytes, so each hash still checks"
    empty = kmsplan("audit", "--principal", f"arn:aws:iam::{ACCOUNT}:role/nobody", "--format", "json",
                    store=logged.path)
    assert json.loads(empty.stdout) == {"Records": []}


def test_no_secret_reaches_the_log_or_any_output(logged):
    secrets = [SECRET, base64.b64decode(logged.data_key), base64.b64encode(SECRET), logged.data_key.encode(),
               logged.blob.encode(), logged.blob[:40].encode()]
    outputs = [(logged.path / "audit.log").read_bytes()]
    for output in ("text", "json", "jsonl"):
        outputs.append(kmsplan("audit", "--format", output, store=logged.path).stdout.encode())
    outputs.append(kmsplan("audit", "last-use", logged.orders, "--format", "json", store=logged.path).stdout.encode())
    for secret in secrets:
        assert not [out for out in outputs if secret in out], secret


# -- last-use --------------------------------------------------------------------------------------

def test_last_use_is_the_same_by_id_arn_or_alias_and_ignores_reads_and_failures(logged):
    expected = f"last used {at(logged.base, 4)}, GenerateDataKey by {SESSION} in eu-west-1."
    for ref in (logged.orders, logged.orders_arn, "alias/orders"):
        result = kmsplan("audit", "last-use", ref, store=logged.path)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip().endswith(expected), result.stdout
        assert ref in result.stdout
    shown = json.loads(kmsplan("audit", "last-use", "alias/orders", "--format", "json", store=logged.path).stdout)
    assert shown["keyIds"] == [logged.orders]
    assert shown["lastUse"] == {"eventTime": at(logged.base, 4), "eventName": "GenerateDataKey", "principal": SESSION,
                                "awsRegion": "eu-west-1", "keyArn": logged.orders_arn}


def test_last_use_of_a_key_never_used_says_so(logged):
    result = kmsplan("audit", "last-use", "alias/idle", store=logged.path)
    assert result.returncode == 0, result.stderr
    assert f"(key {logged.idle}): never used for cryptography" in result.stdout
    shown = json.loads(kmsplan("audit", "last-use", logged.idle, "--format", "json", store=logged.path).stdout)
    assert shown["lastUse"] is None


def test_last_use_per_region_of_a_multi_region_key(logged):
    result = kmsplan("audit", "last-use", logged.mrk, "--region", "eu-central-1", store=logged.path)
    assert result.stdout.strip().endswith(f"last used {at(logged.base, 5)}, Encrypt by {ROOT} in eu-central-1.")
    result = kmsplan("audit", "last-use", logged.mrk, "--region", "eu-west-1", store=logged.path)
    assert "never used" in result.stdout


# -- mistakes --------------------------------------------------------------------------------------

@pytest.mark.parametrize("args, words", [
    (["--since", "yesterday"], ["--since", "yesterday", "not a time"]),
    (["--until", "2026-13-01"], ["--until", "not a time"]),
    (["--since", ""], ["--since", "not a time"]),
    (["--since", "99999999999d"], ["--since", "not a time"]),
    (["--since", "1d", "--until", "2d"], ["--since", "not before --until"]),
    (["--format", "xml"], ["--format", "xml"]),
    (["--outcome", "maybe"], ["--outcome"]),
    (["--limit", "0"], ["--limit"]),
    (["--region", "us-west-2"], ["us-west-2", "not a region of this store"]),
    (["--operation", "Encrpt"], ["Encrpt", "not a KMS operation"]),
    (["--key", "orders"], ["orders", "not a key id, key ARN or alias name"]),
    (["--key", f"arn:aws:kms:eu-west-1:999999999999:key/{'1' * 8}-1111-1111-1111-{'1' * 12}"], ["999999999999"]),
    (["--principal", "bob"], ["bob", "not an IAM principal ARN"]),
    (["--key", "alias/orders", "verify"], ["--key", "verify"]),
    (["last-use", "alias/missing"], ["alias/missing", "names no key"]),
    (["last-use", "11111111-2222-3333-4444-555555555555"], ["not in this store"]),
    (["last-use"], ["KEY"]),
])
def test_mistakes_are_one_error_line_and_exit_1(logged, args, words):
    result = kmsplan("audit", *args, store=logged.path)
    assert_user_error(result, *words)
    assert result.stdout == ""


def test_hints_say_what_to_give_instead(logged):
    assert "24h" in kmsplan("audit", "--since", "soon", store=logged.path).stderr
    assert "did you mean Encrypt" in kmsplan("audit", "--operation", "Encrpt", store=logged.path).stderr
    assert "eu-west-1, eu-central-1" in kmsplan("audit", "--region", "us-east-1", store=logged.path).stderr


def test_a_missing_store_or_log_is_an_error_not_a_traceback(logged, tmp_path):
    for args in (["--key", "alias/orders"], ["last-use", "alias/orders"], ["verify"]):
        assert_user_error(kmsplan("audit", *args, "--store", str(tmp_path / "nowhere")), "no kmsplan store")
    copy = tmp_path / "copy"
    shutil.copytree(logged.path, copy)
    (copy / "audit.log").unlink()
    assert_user_error(kmsplan("audit", "--store", str(copy)), "no audit log")


def test_unreadable_lines_are_skipped_and_reported(logged, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(logged.path, copy)
    lines = (copy / "audit.log").read_bytes().splitlines(keepends=True)
    lines.insert(3, lines[2][:60] + b"\n")  # a torn line, as a crash or an editor leaves it
    (copy / "audit.log").write_bytes(b"".join(lines))
    result = kmsplan("audit", "--format", "jsonl", store=copy)
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == len(lines) - 1
    assert "1 line(s) of the log could not be read" in result.stderr and "audit verify" in result.stderr


# -- a large log -----------------------------------------------------------------------------------

SYNTHETIC = ('{"seq":%d,"prevHash":"%s","eventVersion":"1.08","eventTime":"%s","eventSource":"kms.amazonaws.com",'
             '"eventName":"%s","awsRegion":"eu-west-1","userIdentity":{"type":"AssumedRole","arn":"%s",'
             '"accountId":"111122223333"},"sourceIPAddress":"local","requestParameters":{"keyId":"%s",'
             '"encryptionContext":{"tenant":"t%d","purpose":"load"}},"resources":[{"ARN":'
             '"arn:aws:kms:eu-west-1:111122223333:key/%s","type":"AWS::KMS::Key"}],"outcome":"Success","hash":"%s"}\n')
BIG = 150_000


def test_a_large_log_is_streamed_in_bounded_memory(logged, tmp_path):
    """150k more records (about 100 MB): a key's records come back right, and the query's memory
    stays far below the log's size (it is read line by line, not loaded)."""
    copy = tmp_path / "copy"
    shutil.copytree(logged.path, copy)
    when = at(logged.base, 8)
    other = "0b1c2d3e-1111-4222-8333-444455556666"
    with open(copy / "audit.log", "a", encoding="utf-8") as log:
        for n in range(BIG):
            key = logged.orders if n % 1000 == 0 else other
            log.write(SYNTHETIC % (n, "0" * 64, when, "Decrypt" if n % 2 else "Encrypt", APP, key, n, key, "f" * 64))
    assert (copy / "audit.log").stat().st_size > 90_000_000
    probe = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, check=True); "
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("KMSPLAN_")}

    def peak_kb(*args: str) -> int:
        """Peak resident memory of `kmsplan ARGS` alone (the probe's only child)."""
        measured = subprocess.run([sys.executable, "-c", probe, sys.executable, "-m", "kmsplan", *args],
                                  capture_output=True, text=True, env=env, timeout=120, check=False)
        assert measured.returncode == 0, measured.stderr
        return int(measured.stdout)

    baseline = peak_kb("audit", "--help")  # the interpreter and kmsplan's imports
    query = peak_kb("audit", "--store", str(copy), "--key", "alias/orders", "--operation", "Encrypt", "--format", "jsonl")
    assert query - baseline < 30_000, f"the query held {(query - baseline) // 1024} MB more than --help"
    found = kmsplan("audit", "--key", logged.orders, "--since", at(logged.base, 8), "--format", "jsonl", store=copy)
    assert len(found.stdout.splitlines()) == BIG // 1000
    last = kmsplan("audit", "last-use", "alias/orders", store=copy)
    assert f"last used {when}, Encrypt by {APP}" in last.stdout
