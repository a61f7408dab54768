"""Helpers for the `kmsplan serve` tests: a real store made through the CLI, a real server in a
subprocess, access keys from `kmsplan store credentials create`, and raw HTTP for the requests no
SDK would send. Signatures come from botocore's own signer (the server's verifier is checked
against it), except where a test needs a date botocore will not produce.

(Kept out of conftest.py so test modules import them by a name no other test folder uses.)
"""

from __future__ import annotations

import datetime
import http.client
import ipaddress
import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import boto3
import yaml
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

ACCOUNT = "111122223333"
REGIONS = ("eu-west-1", "eu-central-1")
HOME, AWAY = REGIONS
ROOT = f"arn:aws:iam::{ACCOUNT}:root"
APP = f"arn:aws:iam::{ACCOUNT}:role/app"
PRINCIPALS = {"principals": [
    {"arn": APP, "policies": [{"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["kms:Encrypt", "kms:Decrypt", "kms:DescribeKey", "kms:GenerateDataKey"],
         "Resource": "*"}]}]},
]}
REQUEST_TIMEOUT = 2.0


def kmsplan(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """The CLI in a subprocess, as an operator runs it."""
    env = {k: v for k, v in os.environ.items() if k != "KMSPLAN_STORE"}
    result = subprocess.run([sys.executable, "-m", "kmsplan", *args], capture_output=True, text=True, env=env,
                            timeout=120)
    if check:
        assert result.returncode == 0, (args, result.stdout, result.stderr)
    return result


@dataclass(frozen=True)
class AccessKey:
    access_key_id: str
    secret: str
    principal: str


def create_store(path: Path) -> Path:
    kmsplan("store", "init", "--store", str(path), "--account", ACCOUNT, "--regions", ",".join(REGIONS))
    file = path.parent / "principals.yaml"
    file.write_text(yaml.safe_dump(PRINCIPALS))
    kmsplan("store", "principals", "apply", "--store", str(path), str(file))
    return path


def create_access_key(store: Path, principal: str = ROOT) -> AccessKey:
    out = json.loads(kmsplan("store", "credentials", "create", "--store", str(store), "--principal", principal,
                             "--format", "json").stdout)
    return AccessKey(out["AccessKeyId"], out["SecretAccessKey"], out["Principal"])


@dataclass
class Server:
    """A running `kmsplan serve` subprocess (stderr, the request log, goes to a file)."""

    process: subprocess.Popen
    url: str
    store: Path
    log: Path
    keys: dict[str, AccessKey] = field(default_factory=dict)

    @property
    def host(self) -> str:
        return self.url.split("//", 1)[1]

    @property
    def port(self) -> int:
        return int(self.host.rsplit(":", 1)[1])

    def client(self, key: AccessKey | None = None, region: str = HOME, **config):
        key = key or self.keys["root"]
        return boto3.client("kms", endpoint_url=self.url, region_name=region, aws_access_key_id=key.access_key_id,
                            aws_secret_access_key=key.secret,
                            config=Config(retries={"max_attempts": 1}, **config))

    def log_records(self) -> list[dict]:
        return [json.loads(line) for line in self.log.read_text().splitlines() if line.startswith("{")]

    def audit_count(self) -> int:
        return len((self.store / "audit.log").read_bytes().splitlines())

    def stop(self, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


def start_server(store: Path, log: Path, *extra: str, workers: int = 2) -> Server:
    """Start `kmsplan serve` on a free port and wait for its 'listening' line (workers are up)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "kmsplan", "serve", "--store", str(store), "--listen", "127.0.0.1:0",
         "--workers", str(workers), "--request-timeout", str(REQUEST_TIMEOUT), *extra],
        stdout=subprocess.PIPE, stderr=open(log, "wb"), text=True)
    line = process.stdout.readline()
    match = re.search(r"listening on (https?://\S+)", line)
    if match is None:
        process.kill()
        raise AssertionError(f"kmsplan serve did not start: {line!r}\n{log.read_text()}")
    return Server(process, match.group(1), store, log)


def signed_headers(server: Server, operation: str, body: bytes, key: AccessKey, *, region: str = HOME,
                   service: str = "kms", content_type: str = "application/x-amz-json-1.1",
                   target_prefix: str = "TrentService") -> dict[str, str]:
    """Headers botocore's SigV4 signer produces for a KMS request to `server`."""
    request = AWSRequest(method="POST", url=server.url + "/", data=body,
                         headers={"Content-Type": content_type, "X-Amz-Target": f"{target_prefix}.{operation}"})
    SigV4Auth(Credentials(key.access_key_id, key.secret), service, region).add_auth(request)
    return dict(request.headers.items())


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> dict:
        return json.loads(self.body)

    @property
    def code(self) -> str | None:
        try:
            return self.json.get("__type")
        except ValueError:
            return None


def send(server: Server, body: bytes, headers: dict[str, str], method: str = "POST", path: str = "/") -> Reply:
    """One raw HTTP request (http.client adds Host and Content-Length, as botocore's urllib3 does)."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
    finally:
        connection.close()


def call(server: Server, operation: str, params: dict, key: AccessKey | None = None, **sign_options) -> Reply:
    body = json.dumps(params).encode()
    return send(server, body, signed_headers(server, operation, body, key or server.keys["root"], **sign_options))


def wait_for(predicate, timeout: float = 10.0, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key, as PEM files: the server's TLS
    certificate, and the CA a client trusts (AWS_CA_BUNDLE)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = folder / "server-cert.pem", folder / "server-key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file
