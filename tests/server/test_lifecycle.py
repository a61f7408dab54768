"""Servers of their own: graceful shutdown on SIGTERM (a request in flight completes), HTTPS, and
the access keys' life (`kmsplan store credentials create | list | revoke`) and where their secrets
are (not in any file of the store folder in the clear)."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from server_helpers import (
    APP, HOME, ROOT, create_access_key, kmsplan, self_signed, signed_headers, start_server, wait_for,
)


def test_sigterm_lets_a_request_in_flight_finish(own_store, tmp_path):
    server = start_server(own_store, tmp_path / "serve.log")
    server.keys["root"] = create_access_key(own_store)
    try:
        client = server.client()
        client.list_keys()
        idle = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        idle.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert idle.recv(4096).startswith(b"HTTP/1.1 200 ")

        body = json.dumps({"Description": "created while the server stops"}).encode()
        headers = signed_headers(server, "CreateKey", body, server.keys["root"])
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        slow = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        slow.sendall(f"POST / HTTP/1.1\r\nHost: {server.host}\r\n{head}Content-Length: {len(body)}\r\n\r\n".encode()
                     + body[:10])
        time.sleep(0.3)  # the worker has the head and part of the body: the request is in flight

        server.process.send_signal(signal.SIGTERM)
        assert idle.recv(4096) == b"", "idle keep-alive connections are closed at once"
        time.sleep(0.5)
        assert server.process.poll() is None, "the server waits for the request in flight"
        slow.sendall(body[10:])
        answer = b""
        while True:
            chunk = slow.recv(65536)
            if not chunk:
                break
            answer += chunk
        head_part, _, payload = answer.partition(b"\r\n\r\n")
        assert head_part.startswith(b"HTTP/1.1 200 ") and b"connection: close" in head_part.lower()
        assert json.loads(payload)["KeyMetadata"]["Description"] == "created while the server stops"
        assert server.process.wait(timeout=15) == 0
    finally:
        server.stop()
    events = [r.get("event") for r in server.log_records()]
    assert "draining" in events and events[-1] == "stopped"
    assert any(r.get("event") == "draining" and r["inFlight"] >= 1 for r in server.log_records())


def test_https(own_store, tmp_path):
    cert, key = self_signed(tmp_path)
    server = start_server(own_store, tmp_path / "serve.log", "--tls-cert", str(cert), "--tls-key", str(key),
                          workers=1)
    try:
        assert server.url.startswith("https://")
        access = create_access_key(own_store)
        kms = boto3.client("kms", endpoint_url=server.url, region_name=HOME, verify=str(cert),
                           aws_access_key_id=access.access_key_id, aws_secret_access_key=access.secret,
                           config=Config(retries={"max_attempts": 1}))
        key_id = kms.create_key(Description="over TLS")["KeyMetadata"]["KeyId"]
        assert kms.decrypt(CiphertextBlob=kms.encrypt(KeyId=key_id, Plaintext=b"tls")["CiphertextBlob"])[
            "Plaintext"] == b"tls"
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as plain:
            plain.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert not plain.recv(4096).startswith(b"HTTP/1.1 200")
    finally:
        assert server.stop() == 0


def test_credentials_life_and_where_the_secret_lives(own_store):
    key = create_access_key(own_store, APP)
    assert key.access_key_id.startswith("AKIA") and len(key.access_key_id) == 20 and len(key.secret) == 40
    # Nowhere on disk in the clear: not the database, not the audit log, not the token files.
    for path in own_store.rglob("*"):
        if path.is_file():
            assert key.secret.encode() not in path.read_bytes(), path
    listed = kmsplan("store", "credentials", "list", "--store", str(own_store))
    assert key.access_key_id in listed.stdout and "Active" in listed.stdout and key.secret not in listed.stdout
    assert kmsplan("store", "check", "--store", str(own_store)).returncode == 0

    revoked = kmsplan("store", "credentials", "revoke", "--store", str(own_store), key.access_key_id)
    assert f"Revoked {key.access_key_id}" in revoked.stdout
    rows = json.loads(kmsplan("store", "credentials", "list", "--store", str(own_store), "--format",
                              "json").stdout)["credentials"]
    assert [(r["AccessKeyId"], r["Status"], r["Principal"]) for r in rows] == [(key.access_key_id, "Revoked", APP)]
    assert rows[0]["Revoked"] is not None
    assert kmsplan("store", "check", "--store", str(own_store)).returncode == 0, "the secret left the token too"
    audit = [json.loads(line) for line in (own_store / "audit.log").read_text().splitlines()]
    assert [(r["eventName"], r["requestParameters"]["accessKeyId"]) for r in audit] == [
        ("CreateAccessKey", key.access_key_id), ("DeleteAccessKey", key.access_key_id)]


@pytest.mark.parametrize("args, words", [
    (("create", "--principal", "arn:aws:iam::111122223333:role/nobody"), "not a registered principal"),
    (("create", "--principal", "not-an-arn"), "not an IAM principal ARN"),
    (("revoke", "AKIAAAAAAAAAAAAAAAAA"), "no access key"),
    (("revoke", "not-a-key"), "not an access key id"),
])
def test_credentials_refusals(own_store, args, words):
    result = kmsplan("store", "credentials", *args[:1], "--store", str(own_store), *args[1:], check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert words in result.stderr


def test_serve_refuses_a_missing_store_and_a_busy_port(tmp_path, own_store):
    missing = kmsplan("serve", "--store", str(tmp_path / "nothing"), "--listen", "127.0.0.1:0", check=False)
    assert missing.returncode == 1 and "no kmsplan store" in missing.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = kmsplan("serve", "--store", str(own_store), "--listen", f"127.0.0.1:{port}", check=False)
    assert busy.returncode == 1 and "cannot listen" in busy.stderr and "Traceback" not in busy.stderr


def test_a_store_whose_tokens_will_not_open_fails_the_start_after_three_tries(own_store):
    pins = json.loads((own_store / "pins.json").read_text())
    (own_store / "pins.json").write_text(json.dumps({region: "0" * len(pin) for region, pin in pins.items()}))
    started = kmsplan("serve", "--store", str(own_store), "--listen", "127.0.0.1:0", "--workers", "1", check=False)
    assert started.returncode == 1 and "Traceback" not in started.stderr
    events = [json.loads(line)["event"] for line in started.stderr.splitlines() if line.startswith("{")]
    assert events.count("worker-failed") == 3 and events.count("startup-retry") == 2, events
    assert "startup-failed" in events


def children(pid: int) -> set[int]:
    """Live child processes of `pid`, from /proc (no procps needed)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.add(int(stat.parent.name))
    return found


def test_a_worker_that_dies_is_replaced(own_store, tmp_path):
    server = start_server(own_store, tmp_path / "serve.log")
    try:
        workers = children(server.process.pid)
        assert len(workers) == 2
        victim = min(workers)
        os.kill(victim, signal.SIGKILL)
        assert wait_for(lambda: any(r.get("event") == "worker-exited" for r in server.log_records()))
        assert wait_for(lambda: len(children(server.process.pid)) == 2 and victim not in children(server.process.pid))
        server.keys["root"] = create_access_key(own_store, ROOT)
        assert server.client().list_keys()["Keys"] == []
    finally:
        assert server.stop() == 0
