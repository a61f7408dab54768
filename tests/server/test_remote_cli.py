"""`kmsplan apply | verify | audit --endpoint`: the CLI in subprocesses against a real `kmsplan serve`
on a real SoftHSM2-backed store, as a CI runner without the HSM uses it; and the server's
`KmsplanService.LookupEvents` called directly (pages, tokens, who may read the log).

The module serves a store of its own, registered with the examples' principals (`kms-admins`
given `kms:*`, so the payments example applies as a CI administrator applies it) and with
principals chosen to be refused the log: an application role, a read-and-use verifier, an
administrator with one Deny, and a `kms:*` role of another account.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from server_helpers import (
    ACCOUNT, APP, HOME, PRINCIPALS, REGIONS, ROOT, AccessKey, Reply, Server, call, create_access_key, kmsplan, send,
    signed_headers, start_server, wait_for,
)

from kmsplan.store import audit_query

REPO = Path(__file__).resolve().parents[2]
ADMIN = f"arn:aws:iam::{ACCOUNT}:role/kms-admins"
VERIFIER = f"arn:aws:iam::{ACCOUNT}:role/verifier"
ALMOST = f"arn:aws:iam::{ACCOUNT}:role/almost-admin"
FOREIGN = "arn:aws:iam::444455556666:role/ingest"


def _policy(*statements: dict) -> dict:
    return {"Version": "2012-10-17", "Statement": list(statements)}


ALL_KMS = {"Effect": "Allow", "Action": "kms:*", "Resource": "*"}
EXTRA_POLICIES = {
    ADMIN: [_policy(ALL_KMS)],
    FOREIGN: [_policy(ALL_KMS)],
    ALMOST: [_policy(ALL_KMS, {"Effect": "Deny", "Action": "kms:ScheduleKeyDeletion", "Resource": "*"})],
    VERIFIER: [_policy({"Effect": "Allow", "Resource": "*", "Action": [
        "kms:List*", "kms:Describe*", "kms:Get*", "kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey*",
        "kms:Sign", "kms:Verify", "kms:GenerateMac", "kms:VerifyMac"]})],
}


@dataclass
class Remote:
    """The module's served store, its access keys by principal, and the applied payments stack."""

    server: Server
    keys: dict[str, AccessKey]
    stack: Path
    applied: subprocess.CompletedProcess

    def run(self, *args: str, principal: str = ADMIN) -> subprocess.CompletedProcess:
        """The CLI over the network: KMSPLAN_ENDPOINT and the principal's access key, no store."""
        key = self.keys[principal]
        return _cli(args, {"KMSPLAN_ENDPOINT": self.server.url, "AWS_ACCESS_KEY_ID": key.access_key_id,
                           "AWS_SECRET_ACCESS_KEY": key.secret, "AWS_REGION": HOME})

    def local(self, *args: str) -> subprocess.CompletedProcess:
        """The same command on the store's host (`--store`), for comparison."""
        return _cli((*args, "--store", str(self.server.store)), {})

    def client(self, principal: str, region: str = HOME):
        return self.server.client(self.keys[principal], region)

    def lookup(self, principal: str, **params: object) -> Reply:
        return call(self.server, "LookupEvents", params, self.keys[principal], target_prefix="KmsplanService")

    def key_id(self, alias: str) -> str:
        return self.client(ADMIN).describe_key(KeyId=alias)["KeyMetadata"]["KeyId"]


def _cli(args: tuple[str, ...], env: dict[str, str]) -> subprocess.CompletedProcess:
    # nothing of the developer's own AWS set-up may leak in: credentials come from `env` only
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "KMSPLAN_"))}
    clean.update(AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull, AWS_EC2_METADATA_DISABLED="true",
                 **env)
    return subprocess.run([sys.executable, "-m", "kmsplan", *args], capture_output=True, text=True, env=clean,
                          timeout=120)


@pytest.fixture(scope="module")
def remote(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Remote]:
    folder = tmp_path_factory.mktemp("remote-cli")
    store = folder / "store"
    kmsplan("store", "init", "--store", str(store), "--account", ACCOUNT, "--regions", ",".join(REGIONS))
    registry = yaml.safe_load((REPO / "examples" / "principals.yaml").read_text())["principals"]
    registry += PRINCIPALS["principals"] + [{"arn": VERIFIER}, {"arn": ALMOST}]
    for entry in registry:
        entry["policies"] = EXTRA_POLICIES.get(entry["arn"], entry.get("policies", []))
    (folder / "principals.yaml").write_text(yaml.safe_dump({"principals": registry}))
    kmsplan("store", "principals", "apply", "--store", str(store), str(folder / "principals.yaml"))
    keys = {principal: create_access_key(store, principal) for principal in (ROOT, ADMIN, APP, VERIFIER, ALMOST,
                                                                            FOREIGN)}
    server = start_server(store, folder / "serve.log")
    stack = folder / "payments"
    shutil.copytree(REPO / "examples" / "stacks" / "payments", stack)
    made = Remote(server, keys, stack, subprocess.CompletedProcess([], 0))
    made.applied = made.run("apply", str(stack), "--auto-approve")
    assert made.applied.returncode == 0, made.applied.stdout + made.applied.stderr
    yield made
    assert server.stop() == 0, server.log.read_text()[-2000:]


def _records(result: subprocess.CompletedProcess) -> list[dict]:
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)["Records"]


def _assert_error(result: subprocess.CompletedProcess, *words: str) -> None:
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr.startswith("Error: ") and "Traceback" not in result.stderr, result.stderr
    for word in words:
        assert word in result.stderr, (word, result.stderr)


# -- apply and verify ------------------------------------------------------------------------------

def test_apply_over_the_endpoint_is_audited_as_the_access_keys_principal(remote: Remote) -> None:
    assert remote.applied.stdout.splitlines()[-1] == "Apply complete: 7 added, 0 changed, 0 deleted."
    created = _records(remote.run("audit", "--key", "alias/payments-prod", "--operation", "CreateKey",
                                  "--operation", "ReplicateKey", "--format", "json"))
    assert [r["eventName"] for r in created] == ["CreateKey", "ReplicateKey"]
    assert {(r["userIdentity"]["arn"], r["sourceIPAddress"], r["outcome"]) for r in created} == {
        (ADMIN, "127.0.0.1", "Success")}


def test_verify_over_the_endpoint_passes_and_a_planted_fault_fails_naming_the_check(remote: Remote) -> None:
    passed = remote.run("verify", str(remote.stack), "--format", "json")
    assert passed.returncode == 0, passed.stdout + passed.stderr
    report = json.loads(passed.stdout)
    assert (report["ok"], report["principal"], report["account"]) == (True, ADMIN, ACCOUNT)
    audit = report["checks"][-1]
    assert (audit["check"], audit["status"]) == ("audit", "pass")
    assert f"are in the audit log as {ADMIN}" in audit["evidence"]

    key_id = remote.key_id("alias/payments-prod")
    remote.client(ADMIN).disable_key_rotation(KeyId=key_id)  # out of band, as a console user would
    try:
        failed = remote.run("verify", str(remote.stack))
        assert failed.returncode == 1, failed.stdout + failed.stderr
        assert "Error:" not in failed.stderr
        lines = failed.stdout.splitlines()
        assert "  FAIL  rotation          GetKeyRotationStatus: rotation off; declared every 180 days" in lines
        assert lines[-1].startswith("Verify failed: 1 of ") and lines[-1].endswith(" checks failed.")
    finally:
        remote.client(ADMIN).enable_key_rotation(KeyId=key_id, RotationPeriodInDays=180)


def test_verify_as_a_principal_that_may_not_read_the_log_fails_only_the_audit_check(remote: Remote) -> None:
    result = remote.run("verify", str(remote.stack), "--format", "json", principal=VERIFIER)
    assert result.returncode == 1 and "Error:" not in result.stderr, result.stdout + result.stderr
    failed = [c for c in json.loads(result.stdout)["checks"] if c["status"] == "fail"]
    assert [c["check"] for c in failed] == ["audit"]
    assert failed[0]["evidence"].startswith(f"cannot read the audit log as {VERIFIER}: AccessDeniedException: ")
    assert "KmsplanService.LookupEvents" in failed[0]["evidence"]


# -- audit -----------------------------------------------------------------------------------------

def test_audit_over_the_endpoint_prints_what_the_host_prints(remote: Remote) -> None:
    tenant = f"acme-{uuid.uuid4().hex[:8]}"
    app = remote.client(APP)
    app.encrypt(KeyId="alias/payments-prod", Plaintext=b"secret", EncryptionContext={"tenant": tenant})
    app.generate_data_key(KeyId="alias/payments-prod", KeySpec="AES_256", EncryptionContext={"tenant": tenant})
    with pytest.raises(app.exceptions.ClientError, match="AccessDeniedException"):
        app.disable_key(KeyId=remote.key_id("alias/payments-prod"))

    query = ("audit", "--key", "alias/payments-prod", "--principal", APP, "--since", "1h")
    records = _records(remote.run(*query, "--format", "json"))
    assert [r["eventName"] for r in records] == ["Encrypt", "GenerateDataKey", "DisableKey"]
    assert {(r["userIdentity"]["arn"], r["sourceIPAddress"]) for r in records} == {(APP, "127.0.0.1")}
    assert [r["requestParameters"].get("encryptionContext") for r in records] == [{"tenant": tenant}] * 2 + [None]
    assert records[2]["errorCode"] == "AccessDeniedException"

    for output in ("json", "jsonl", "text"):
        served, host = remote.run(*query, "--format", output), remote.local(*query, "--format", output)
        assert served.returncode == host.returncode == 0, served.stderr + host.stderr
        assert served.stdout == host.stdout, output
    assert re.fullmatch(r"3 record\(s\) matched, of \d+ in the log\.\n", served.stderr), served.stderr
    assert re.search(r"\bDisableKey +mrk-[0-9a-f]+ +AccessDeniedException +-$", served.stdout, re.M), served.stdout

    failures = _records(remote.run("audit", "--principal", APP, "--outcome", "failure", "--limit", "1",
                                   "--format", "json"))
    assert [(r["eventName"], r["errorCode"]) for r in failures] == [("DisableKey", "AccessDeniedException")]


def test_last_use_over_the_endpoint(remote: Remote) -> None:
    remote.client(APP).encrypt(KeyId="alias/payments-audit", Plaintext=b"x",
                               EncryptionContext={"stream": "payments-audit"})
    served = remote.run("audit", "last-use", "alias/payments-audit", "--format", "json")
    host = remote.local("audit", "last-use", "alias/payments-audit", "--format", "json")
    assert served.returncode == host.returncode == 0, served.stderr + host.stderr
    found, expected = json.loads(served.stdout), json.loads(host.stdout)
    assert found["lastUse"] == expected["lastUse"] and found["keyIds"] == expected["keyIds"]
    assert found["logSince"] == expected["logSince"] and found["logRecords"] > 0
    assert (found["lastUse"]["eventName"], found["lastUse"]["principal"]) == ("Encrypt", APP)

    text = remote.run("audit", "last-use", "alias/payments-audit")
    assert text.returncode == 0, text.stderr
    assert text.stdout.startswith(f"alias/payments-audit (key {found['keyIds'][0]}): last used ")
    assert text.stdout.endswith(f", Encrypt by {APP} in {HOME}.\n")


def test_audit_verify_is_refused_over_the_endpoint_and_runs_on_the_host(remote: Remote) -> None:
    key = remote.keys[ADMIN]
    refused = _cli(("audit", "verify", "--endpoint", remote.server.url),
                   {"AWS_ACCESS_KEY_ID": key.access_key_id, "AWS_SECRET_ACCESS_KEY": key.secret, "AWS_REGION": HOME})
    _assert_error(refused, "cannot run over --endpoint", "kmsplan audit verify --store DIR")
    on_host = remote.local("audit", "verify")
    assert on_host.returncode == 0 and on_host.stdout.startswith("Audit log intact: "), on_host.stderr


def test_the_log_is_refused_to_principals_that_may_not_do_everything_in_the_account(remote: Remote) -> None:
    refused = remote.run("audit", "--operation", "Decrypt", principal=APP)
    _assert_error(refused, f"User: {APP} is not authorized to perform: KmsplanService.LookupEvents",
                  f"no identity policy of {APP} allows kms:", "allow kms:* on every resource")

    for principal, why in ((APP, "no identity policy of"), (VERIFIER, "no identity policy of"),
                           (ALMOST, "explicitly denied by IAM policy statement"),
                           (FOREIGN, "principals of account 111122223333")):
        answer = remote.lookup(principal, Operations=["Decrypt"], Limit=1)
        assert (answer.status, answer.code) == (400, "AccessDeniedException"), (principal, answer.body)
        assert why in answer.json["message"], (principal, answer.json["message"])
    for principal in (ROOT, ADMIN):
        answer = remote.lookup(principal, Operations=["CreateKey"], Limit=1)
        assert answer.status == 200, answer.body
        [line] = answer.json["Records"]
        assert json.loads(line)["eventName"] == "CreateKey"


# -- paging ----------------------------------------------------------------------------------------

def test_a_query_larger_than_a_page_is_paged(remote: Remote) -> None:
    run = uuid.uuid4().hex[:8]
    key_id = remote.key_id("alias/payments-audit")
    app = remote.client(APP)
    for number in range(1100):
        app.encrypt(KeyId=key_id, Plaintext=b"p", EncryptionContext={"stream": "payments-audit", "run": run,
                                                                       "n": str(number)})
    query = ("audit", "--key", key_id, "--principal", APP, "--operation", "Encrypt", "--format", "jsonl")
    served, host = remote.run(*query), remote.local(*query)
    assert served.returncode == host.returncode == 0, served.stderr + host.stderr
    assert served.stdout == host.stdout
    ours = [json.loads(line) for line in served.stdout.splitlines()
            if json.loads(line)["requestParameters"]["encryptionContext"].get("run") == run]
    assert [r["requestParameters"]["encryptionContext"]["n"] for r in ours] == [str(n) for n in range(1100)]

    newest = remote.run(*query, "--limit", "1050")
    assert newest.returncode == 0, newest.stderr
    assert newest.stdout == remote.local(*query, "--limit", "1050").stdout
    assert newest.stdout.splitlines() == served.stdout.splitlines()[-1050:]

    # The same query by hand, in pages of 250, each continued by its NextToken. Pages alternate
    # between a kept-alive connection and new ones, which the server hands to its other worker
    # (it balances open connections): a token carries no server state, any worker continues it.
    filters = {"Keys": [{"Name": key_id, "KeyIds": [{"KeyId": key_id}], "AliasNames": []}],
               "Principals": [APP], "Operations": ["Encrypt"]}
    lines, tokens, request_ids, request = [], [], [], dict(filters, MaxResults=250)
    held = http.client.HTTPConnection("127.0.0.1", remote.server.port, timeout=10)
    try:
        while True:
            body = json.dumps(request).encode()
            headers = signed_headers(remote.server, "LookupEvents", body, remote.keys[ADMIN],
                                     target_prefix="KmsplanService")
            if len(tokens) % 2:
                page = send(remote.server, body, headers)
            else:
                held.request("POST", "/", body=body, headers=headers)
                response = held.getresponse()
                page = Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
            assert page.status == 200, page.body
            assert len(page.json["Records"]) <= 250
            request_ids.append(page.headers["x-amzn-requestid"])
            lines += page.json["Records"]
            if "NextToken" not in page.json:
                break
            tokens.append(page.json["NextToken"])
            request = dict(filters, MaxResults=250, NextToken=tokens[-1])
    finally:
        held.close()
    assert [line + "\n" for line in lines] == served.stdout.splitlines(keepends=True)
    assert len(tokens) == len(set(tokens)) == len(lines) // 250
    assert page.json["RecordsRead"] == remote.server.audit_count() and "FollowToken" in page.json
    assert wait_for(lambda: set(request_ids) <= {r.get("requestId") for r in remote.server.log_records()})
    workers = {r["worker"] for r in remote.server.log_records() if r.get("requestId") in request_ids}
    assert len(workers) == 2, workers

    # a token is bound to its query, and checked
    for bad, expected in (({**filters, "Principals": [ADMIN], "NextToken": tokens[0]}, "InvalidMarkerException"),
                          ({**filters, "NextToken": "bm90IGEgdG9rZW4"}, "InvalidMarkerException"),
                          ({**filters, "MaxResults": 1001}, "ValidationException"),
                          ({**filters, "FromEnd": True, "NextToken": tokens[0]}, "ValidationException"),
                          ({**filters, "Keys": [{"KeyIds": [{"KeyId": "not-a-key"}]}]}, "ValidationException"),
                          ({**filters, "Regions": ["us-east-1"]}, "ValidationException"),
                          ({**filters, "Since": "24h"}, "ValidationException"),  # ages are the client's to resolve
                          ({"EventName": "Encrypt"}, "ValidationException")):
        answer = remote.lookup(ADMIN, **bad)
        assert (answer.status, answer.code) == (400, expected), (bad, answer.body)


def test_a_follow_token_returns_only_what_was_appended_since(remote: Remote) -> None:
    start = remote.lookup(ADMIN, Principals=[APP], FromEnd=True)
    assert start.status == 200 and start.json["Records"] == [] and "NextToken" not in start.json, start.body
    remote.client(APP).encrypt(KeyId="alias/payments-prod", Plaintext=b"x", EncryptionContext={"after": "mark"})
    remote.client(ADMIN).describe_key(KeyId="alias/payments-prod")  # another principal: filtered out
    since = remote.lookup(ADMIN, Principals=[APP], NextToken=start.json["FollowToken"])
    assert since.status == 200, since.body
    [line] = since.json["Records"]
    assert json.loads(line)["requestParameters"]["encryptionContext"] == {"after": "mark"}


def test_limit_beyond_the_offsets_kept_in_memory_pages_the_newest_records(tmp_path: Path) -> None:
    """`Limit` larger than the ring of offsets one pass keeps: a second pass finds where the
    newest records begin (a synthetic log file, written as the store writes records)."""
    log = tmp_path / "audit.log"
    with open(log, "w") as out:
        for number in range(24_000):
            out.write(json.dumps({"seq": number + 1, "eventTime": "2026-01-01T00:00:00Z",
                                  "eventName": "Decrypt" if number % 2 else "Encrypt", "n": number},
                                 separators=(",", ":")) + "\n")
        out.write('{"seq":24001,"eventName":"Encrypt"')  # a record being appended: not read yet
    query = audit_query.Query(operations=frozenset({"Encrypt"}))
    limit = audit_query._RING + 1000
    got, token, pages = [], None, 0
    while True:
        page = audit_query.lookup(log, query, limit=limit, token=token)
        got += [json.loads(raw)["n"] for raw in page.records]
        pages += 1
        if page.next is None:
            break
        token = page.next.token()
    assert got == list(range(0, 24_000, 2))[-limit:]
    assert pages == -(-limit // audit_query.PAGE_RECORDS) and page.read == 24_000
