"""Every request `kmsplan serve` must refuse, refused with AWS's error code and HTTP status, and —
for authentication failures — before the store is touched (no audit record is written, since
every call that reaches the store is audited). Plus the HTTP-level refusals: oversized bodies,
malformed requests, slow clients, and a burst of bad signatures that must not slow anyone else."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest
from server_helpers import (
    APP, HOME, REQUEST_TIMEOUT, AccessKey, call, create_access_key, kmsplan, send, signed_headers, wait_for,
)

from kmsplan.server.sigv4 import secret_signing_key, sign

BODY = json.dumps({"Limit": 5}).encode()


def assert_refused(served, reply, status: int, code: str, audit_before: int | None = None) -> None:
    assert (reply.status, reply.code) == (status, code), reply.body
    assert set(reply.json) == {"__type", "message"} and reply.json["message"]
    assert reply.headers["content-type"] == "application/x-amz-json-1.1"
    if audit_before is not None:
        assert served.audit_count() == audit_before, "an authentication failure reached the store"


def test_a_good_signature_is_accepted(served):
    reply = send(served, BODY, signed_headers(served, "ListKeys", BODY, served.keys["root"]))
    assert reply.status == 200 and "Keys" in reply.json


def test_wrong_secret(served):
    before = served.audit_count()
    forged = AccessKey(served.keys["root"].access_key_id, "x" * 40, "")
    reply = send(served, BODY, signed_headers(served, "ListKeys", BODY, forged))
    assert_refused(served, reply, 400, "InvalidSignatureException", before)
    assert "signature we calculated does not match" in reply.json["message"]


def test_body_altered_after_signing(served):
    before = served.audit_count()
    headers = signed_headers(served, "ListKeys", BODY, served.keys["root"])
    assert_refused(served, send(served, json.dumps({"Limit": 6}).encode(), headers), 400,
                   "InvalidSignatureException", before)
    # With the payload hash signed in x-amz-content-sha256 (as S3-style signers send it).
    body = json.dumps({"Limit": 5}).encode()
    import hashlib
    headers = {"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": "TrentService.ListKeys",
               "X-Amz-Content-Sha256": hashlib.sha256(body).hexdigest(), "Host": served.host}
    key = served.keys["root"]
    signed = sign("POST", "/", headers, body, access_key_id=key.access_key_id, region=HOME,
                  signing_key=secret_signing_key(key.secret, time.strftime("%Y%m%d", time.gmtime()), HOME, "kms"))
    assert send(served, body, signed).status == 200
    reply = send(served, b'{"Limit": 7}', signed)
    assert_refused(served, reply, 400, "InvalidSignatureException", before + 1)
    assert "x-amz-content-sha256" in reply.json["message"]


@pytest.mark.parametrize("offset, words", [(-301 - 60, "Signature expired"), (+301 + 60, "not yet current")])
def test_clock_skew_of_more_than_five_minutes(served, offset, words):
    before = served.audit_count()
    key = served.keys["root"]
    now = time.time() + offset
    headers = sign("POST", "/", {"Host": served.host, "Content-Type": "application/x-amz-json-1.1",
                                 "X-Amz-Target": "TrentService.ListKeys"}, BODY, access_key_id=key.access_key_id,
                   region=HOME, now=now,
                   signing_key=secret_signing_key(key.secret, time.strftime("%Y%m%d", time.gmtime(now)), HOME, "kms"))
    reply = send(served, BODY, headers)
    assert_refused(served, reply, 400, "InvalidSignatureException", before)
    assert words in reply.json["message"]


def test_skew_within_five_minutes_is_accepted(served):
    key = served.keys["root"]
    now = time.time() - 240
    headers = sign("POST", "/", {"Host": served.host, "Content-Type": "application/x-amz-json-1.1",
                                 "X-Amz-Target": "TrentService.ListKeys"}, BODY, access_key_id=key.access_key_id,
                   region=HOME, now=now,
                   signing_key=secret_signing_key(key.secret, time.strftime("%Y%m%d", time.gmtime(now)), HOME, "kms"))
    assert send(served, BODY, headers).status == 200


def test_credential_scope_for_another_service(served):
    before = served.audit_count()
    reply = send(served, BODY, signed_headers(served, "ListKeys", BODY, served.keys["root"], service="s3"))
    assert_refused(served, reply, 400, "InvalidSignatureException", before)
    assert "correct service: 'kms'" in reply.json["message"]


def test_credential_scope_for_a_region_the_store_does_not_have(served):
    before = served.audit_count()
    reply = send(served, BODY, signed_headers(served, "ListKeys", BODY, served.keys["root"], region="ap-south-1"))
    assert_refused(served, reply, 400, "InvalidSignatureException", before)
    assert "valid region, not 'ap-south-1'" in reply.json["message"]


def test_credential_scope_date_must_match_x_amz_date(served):
    before = served.audit_count()
    headers = signed_headers(served, "ListKeys", BODY, served.keys["root"])
    credential = headers["Authorization"].split("Credential=", 1)[1].split("/")
    headers["Authorization"] = headers["Authorization"].replace(f"/{credential[1]}/", "/20200101/")
    reply = send(served, BODY, headers)
    assert_refused(served, reply, 400, "InvalidSignatureException", before)
    assert "Date in Credential scope does not match" in reply.json["message"]


def test_unknown_access_key(served):
    before = served.audit_count()
    stranger = AccessKey("AKIA" + "Z" * 16, "y" * 40, "")
    assert_refused(served, send(served, BODY, signed_headers(served, "ListKeys", BODY, stranger)), 400,
                   "UnrecognizedClientException", before)


def test_revoked_access_key_is_refused_from_the_next_request(served):
    key = create_access_key(served.store, APP)
    app = served.client(key)
    assert app.describe_key  # a client for a key that works
    assert send(served, BODY, signed_headers(served, "ListKeys", BODY, key)).code == "AccessDeniedException"
    kmsplan("store", "credentials", "revoke", "--store", str(served.store), key.access_key_id)
    before = served.audit_count()
    reply = send(served, BODY, signed_headers(served, "ListKeys", BODY, key))
    assert_refused(served, reply, 400, "UnrecognizedClientException", before)
    listed = json.loads(kmsplan("store", "credentials", "list", "--store", str(served.store), "--format",
                                "json").stdout)["credentials"]
    assert {row["AccessKeyId"]: row["Status"] for row in listed}[key.access_key_id] == "Revoked"


def test_missing_and_malformed_authorization(served):
    before = served.audit_count()
    plain = {"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": "TrentService.ListKeys"}
    assert_refused(served, send(served, BODY, plain), 400, "MissingAuthenticationTokenException", before)
    reply = send(served, BODY, {**plain, "Authorization": "AWS4-HMAC-SHA256 Credential=AKIA/x"})
    assert_refused(served, reply, 400, "IncompleteSignatureException", before)
    assert "requires 'Signature' parameter" in reply.json["message"]
    reply = send(served, BODY, {**plain, "Authorization": "Bearer abc"})
    assert_refused(served, reply, 400, "IncompleteSignatureException", before)
    # The operation must be signed: a captured request cannot be replayed as another operation.
    headers = signed_headers(served, "ListKeys", BODY, served.keys["root"])
    auth = headers["Authorization"]
    headers["Authorization"] = auth.replace(";x-amz-target", "")
    reply = send(served, BODY, headers)
    assert_refused(served, reply, 400, "IncompleteSignatureException", before)
    assert "'x-amz-target' must be a 'SignedHeader'" in reply.json["message"]
    headers = signed_headers(served, "ListKeys", BODY, served.keys["root"])
    headers["X-Amz-Target"] = "TrentService.ScheduleKeyDeletion"
    assert_refused(served, send(served, BODY, headers), 400, "InvalidSignatureException", before)
    headers = signed_headers(served, "ListKeys", BODY, served.keys["root"])
    headers["X-Amz-Security-Token"] = "token"
    assert_refused(served, send(served, BODY, headers), 400, "UnrecognizedClientException", before)


def test_unknown_operation(served):
    reply = call(served, "ForgeKey", {})
    assert_refused(served, reply, 400, "UnknownOperationException")
    assert "TrentService.ForgeKey" in reply.json["message"]


def test_wrong_content_type(served):
    """AWS answers a content type its JSON protocol does not speak as an unknown operation."""
    reply = call(served, "ListKeys", {"Limit": 5}, content_type="application/json")
    assert_refused(served, reply, 400, "UnknownOperationException")
    assert "Content-Type" in reply.json["message"]
    assert call(served, "ListKeys", {"Limit": 5}, content_type="application/x-amz-json-1.0").status == 200


def test_malformed_json_and_wrong_json_types(served):
    key = served.keys["root"]
    for body in (b"{not json", b"[1, 2]", b'{"Limit": NaN}', b"\xff\xfe"):
        reply = send(served, body, signed_headers(served, "ListKeys", body, key))
        assert_refused(served, reply, 400, "SerializationException")
    reply = call(served, "ListKeys", {"Limit": "five"})
    assert_refused(served, reply, 400, "SerializationException")
    assert "'limit'" in reply.json["message"]
    reply = call(served, "Encrypt", {"KeyId": "k", "Plaintext": "not base64!"})
    assert_refused(served, reply, 400, "SerializationException")
    assert "not base64!" not in reply.json["message"], "refusals never quote a blob"


def test_oversized_body_is_refused_before_it_is_read(served):
    with socket.create_connection(("127.0.0.1", served.port), timeout=5) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-amz-json-1.1\r\n"
                     b"X-Amz-Target: TrentService.Encrypt\r\nContent-Length: 2097152\r\n\r\n")
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 413 Content Too Large"
    assert json.loads(rest.split(b"\r\n\r\n", 1)[1])["__type"] == "RequestEntityTooLargeException"
    assert b"connection: close" in rest.lower()


def test_malformed_http(served):
    for raw, status in ((b"NONSENSE\r\n\r\n", 400), (b"POST / HTTP/1.1\r\nHost x\r\n\r\n", 400),
                        (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n", 411),
                        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400),
                        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 405), (b"POST /other HTTP/1.1\r\nHost: x\r\n\r\n", 404)):
        with socket.create_connection(("127.0.0.1", served.port), timeout=5) as sock:
            sock.sendall(raw)
            answer = sock.recv(4096)
        assert answer.startswith(f"HTTP/1.1 {status} ".encode()), (raw, answer)


def test_healthz(served):
    reply = send(served, b"", {}, method="GET", path="/healthz")
    assert reply.status == 200 and reply.json["status"] == "ok" and reply.json["service"] == "kmsplan"


def test_slow_loris_is_cut_off_while_others_are_served(served, kms):
    """Half a request head, then silence: the server answers 408 and closes within the request
    timeout, and a normal client is served meanwhile."""
    with socket.create_connection(("127.0.0.1", served.port), timeout=REQUEST_TIMEOUT + 5) as slow:
        slow.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-")
        started = time.monotonic()
        key_id = kms.create_key(Description="served during slow-loris")["KeyMetadata"]["KeyId"]
        assert kms.decrypt(CiphertextBlob=kms.encrypt(KeyId=key_id, Plaintext=b"ok")["CiphertextBlob"])[
            "Plaintext"] == b"ok"
        assert time.monotonic() - started < REQUEST_TIMEOUT
        answer = b""
        while True:
            chunk = slow.recv(4096)
            if not chunk:
                break
            answer += chunk
        elapsed = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert REQUEST_TIMEOUT - 0.5 <= elapsed <= REQUEST_TIMEOUT + 3


def test_a_slow_body_is_cut_off_too(served):
    with socket.create_connection(("127.0.0.1", served.port), timeout=REQUEST_TIMEOUT + 5) as slow:
        slow.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"Li")
        started = time.monotonic()
        answer = slow.recv(4096)
        assert answer.startswith(b"HTTP/1.1 408 ") and time.monotonic() - started <= REQUEST_TIMEOUT + 3


def test_a_burst_of_bad_signatures_does_not_slow_a_good_client(served, kms):
    key_id = kms.create_key(Description="burst")["KeyMetadata"]["KeyId"]
    blob = kms.encrypt(KeyId=key_id, Plaintext=b"steady")["CiphertextBlob"]
    forged = AccessKey(served.keys["root"].access_key_id, "z" * 40, "")
    headers = signed_headers(served, "Decrypt", BODY, forged)
    raw = (b"POST / HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()).encode()
           + b"Host: " + served.host.encode() + f"\r\nContent-Length: {len(BODY)}\r\n\r\n".encode() + BODY)
    stop = threading.Event()
    refused = [0, 0]

    def attacker() -> None:
        with socket.create_connection(("127.0.0.1", served.port), timeout=10) as sock:
            while not stop.is_set():
                sock.sendall(raw * 20)
                received = b""
                while received.count(b"HTTP/1.1 ") < 20:
                    received += sock.recv(65536)
                refused[0] += received.count(b"InvalidSignatureException")
                refused[1] += received.count(b"HTTP/1.1 ")

    attackers = [threading.Thread(target=attacker) for _ in range(4)]
    for thread in attackers:
        thread.start()
    try:
        assert wait_for(lambda: refused[1] >= 200, timeout=10)
        latencies = []
        for _ in range(50):
            started = time.perf_counter()
            assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"steady"
            latencies.append(time.perf_counter() - started)
    finally:
        stop.set()
        for thread in attackers:
            thread.join()
    assert refused[0] == refused[1] >= 200
    assert max(latencies) < 1.0, max(latencies)


def test_the_request_log_names_who_and_never_what(served, kms):
    key_id = kms.create_key(Description="logged")["KeyMetadata"]["KeyId"]
    secret_text = b"never-in-the-log-3f1a"
    blob = kms.encrypt(KeyId=key_id, Plaintext=secret_text)["CiphertextBlob"]
    kms.decrypt(CiphertextBlob=blob)

    def logged() -> bool:
        return any(r.get("operation") == "Decrypt" and r.get("status") == 200 for r in served.log_records())

    assert wait_for(logged)
    text = served.log.read_text()
    import base64
    for forbidden in (secret_text.decode(), base64.b64encode(secret_text).decode(), base64.b64encode(blob).decode(),
                      served.keys["root"].secret, served.keys["app"].secret, "Signature="):
        assert forbidden not in text
    record = [r for r in served.log_records() if r.get("operation") == "Decrypt" and r["status"] == 200][-1]
    assert record["principal"].endswith(":root") and record["sourceIPAddress"] == "127.0.0.1"
    assert record["region"] == HOME and record["errorCode"] is None and record["latencyMs"] >= 0
    assert {"time", "worker", "requestId", "accessKeyId", "bytesIn", "bytesOut"} <= set(record)
    refusals = [r for r in served.log_records() if r.get("errorCode") == "InvalidSignatureException"]
    assert refusals and all(r["principal"] is None for r in refusals)
