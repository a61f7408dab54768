"""Load on `kmsplan serve` over loopback, with moto's KMS (moto_server) as a peer in the same run.

Prints, for each server, operation (Decrypt, GenerateDataKey) and concurrency level (connections
kept alive, default 1, 4, 16, 64): requests per second, p50 and p99 latency, and errors; then
kmsplan's rate as a multiple of moto's. Goal in the issue: >= 10,000 Decrypt/s with p99 < 20 ms on
a 2-core machine, and >= 20x moto.

Every request is a real SigV4-signed AWS JSON 1.1 request. To keep the generator from being the
bottleneck it signs with kmsplan's own SigV4 signer once per level (a signature stays valid for
five minutes, and the server does not refuse replays, as AWS does not) and drives raw keep-alive
sockets from a selector loop in a few processes; each response is parsed just far enough to
find its status and length.

Bounded: each level runs `--seconds` (default 30) or `--max-requests` per process, whichever
ends first; servers are started here and stopped at the end.

    python benchmarks/server_load.py [--seconds 5] [--levels 1,4,16,64] [--workers 2] [--no-moto]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import re
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from array import array
from pathlib import Path

import boto3

from kmsplan.server.sigv4 import secret_signing_key, sign

ACCOUNT = "111122223333"
REGION = "eu-west-1"
_LENGTH = re.compile(rb"(?i)\r\ncontent-length:\s*(\d+)")


def kmsplan_cli(*args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "kmsplan", *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"kmsplan {' '.join(args[:3])} failed: {result.stderr.strip()}")
    return result.stdout


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_kmsplan(folder: Path, workers: int) -> tuple[subprocess.Popen, str, str, str]:
    store = folder / "store"
    kmsplan_cli("store", "init", "--store", str(store), "--account", ACCOUNT, "--regions", REGION)
    created = json.loads(kmsplan_cli("store", "credentials", "create", "--store", str(store), "--principal",
                                     f"arn:aws:iam::{ACCOUNT}:root", "--format", "json"))
    log = open(folder / "kmsplan-serve.log", "wb")
    server = subprocess.Popen([sys.executable, "-m", "kmsplan", "serve", "--store", str(store), "--listen",
                               "127.0.0.1:0", "--workers", str(workers)], stdout=subprocess.PIPE, stderr=log,
                              text=True)
    line = server.stdout.readline()
    match = re.search(r"(http://\S+)", line)
    if not match:
        server.kill()
        raise SystemExit(f"kmsplan serve did not start: {line!r} (see {folder / 'kmsplan-serve.log'})")
    return server, match.group(1), created["AccessKeyId"], created["SecretAccessKey"]


def start_moto(folder: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    command = shutil.which("moto_server") or ""
    argv = [command] if command else [sys.executable, "-m", "moto.server"]
    server = subprocess.Popen([*argv, "-H", "127.0.0.1", "-p", str(port)], stdout=open(folder / "moto.log", "wb"),
                              stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return server, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.1)
    server.kill()
    raise SystemExit("moto_server did not start")


def prepare(url: str, access_key: str, secret: str) -> dict[str, bytes]:
    """A key, and the JSON bodies of the measured requests (a ciphertext made on that server)."""
    kms = boto3.client("kms", endpoint_url=url, region_name=REGION, aws_access_key_id=access_key,
                       aws_secret_access_key=secret)
    key_id = kms.create_key(Description="server_load")["KeyMetadata"]["KeyId"]
    blob = kms.encrypt(KeyId=key_id, Plaintext=os.urandom(32), EncryptionContext={"tenant": "acme"})["CiphertextBlob"]
    import base64

    return {
        "Decrypt": json.dumps({"CiphertextBlob": base64.b64encode(blob).decode(),
                               "EncryptionContext": {"tenant": "acme"}}).encode(),
        "GenerateDataKey": json.dumps({"KeyId": key_id, "KeySpec": "AES_256",
                                       "EncryptionContext": {"tenant": "acme"}}).encode(),
    }


def signed_request(host: str, operation: str, body: bytes, access_key: str, secret: str) -> bytes:
    now = time.time()
    key = secret_signing_key(secret, time.strftime("%Y%m%d", time.gmtime(now)), REGION, "kms")
    headers = sign("POST", "/", {"Host": host, "Content-Type": "application/x-amz-json-1.1",
                                 "X-Amz-Target": f"TrentService.{operation}"}, body,
                   access_key_id=access_key, region=REGION, signing_key=key, now=now)
    head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    return f"POST / HTTP/1.1\r\n{head}Content-Length: {len(body)}\r\n\r\n".encode() + body


def drive(address: tuple[str, int], request: bytes, connections: int, seconds: float, max_requests: int,
          out) -> None:
    """One load process: `connections` keep-alive sockets, one request in flight on each."""
    selector = selectors.DefaultSelector()
    latencies = array("d")
    errors = 0
    state: dict[socket.socket, list] = {}

    def open_one() -> None:
        sock = socket.create_connection(address)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        state[sock] = [bytearray(), time.perf_counter()]
        selector.register(sock, selectors.EVENT_READ)
        sock.sendall(request)

    for _ in range(connections):
        open_one()
    end = time.perf_counter() + seconds
    count = 0
    while count < max_requests:
        now = time.perf_counter()
        if now >= end:
            break
        for key, _ in selector.select(timeout=min(1.0, end - now)):
            sock = key.fileobj
            entry = state[sock]
            data = sock.recv(262144)
            if not data:  # the server closed (moto may): reconnect and carry on
                selector.unregister(sock)
                del state[sock]
                sock.close()
                errors += entry[0] != b""
                open_one()
                continue
            buffer = entry[0]
            buffer += data
            while True:
                head_end = buffer.find(b"\r\n\r\n")
                if head_end < 0:
                    break
                match = _LENGTH.search(buffer, 0, head_end + 2)
                total = head_end + 4 + (int(match.group(1)) if match else 0)
                if len(buffer) < total:
                    break
                ok = buffer.startswith(b"HTTP/1.1 200") or buffer.startswith(b"HTTP/1.0 200")
                closing = b"connection: close" in bytes(buffer[:head_end]).lower()
                del buffer[:total]
                stamp = time.perf_counter()
                latencies.append(stamp - entry[1])
                count += 1
                errors += not ok
                if closing:
                    selector.unregister(sock)
                    del state[sock]
                    sock.close()
                    open_one()
                    break
                entry[1] = stamp
                sock.sendall(request)
    for sock in list(state):
        sock.close()
    out.send((latencies.tobytes(), errors))
    out.close()


def measure(url: str, request: bytes, level: int, processes: int, seconds: float, max_requests: int) -> dict:
    host, port = url.split("//", 1)[1].rsplit(":", 1)
    address = (host, int(port))
    processes = max(1, min(processes, level))
    shares = [level // processes + (i < level % processes) for i in range(processes)]
    context = multiprocessing.get_context("fork")
    pipes, workers = [], []
    started = time.perf_counter()
    for share in shares:
        receive, send = context.Pipe(duplex=False)
        worker = context.Process(target=drive, args=(address, request, share, seconds, max_requests, send))
        worker.start()
        send.close()
        pipes.append(receive)
        workers.append(worker)
    latencies = array("d")
    errors = 0
    for receive in pipes:
        raw, failed = receive.recv()
        chunk = array("d")
        chunk.frombytes(raw)
        latencies.extend(chunk)
        errors += failed
    elapsed = time.perf_counter() - started
    for worker in workers:
        worker.join()
    ordered = sorted(latencies)

    def percentile(p: float) -> float:
        return ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000 if ordered else float("nan")

    return {"requests": len(ordered), "rate": len(ordered) / elapsed, "p50": percentile(0.50),
            "p99": percentile(0.99), "errors": errors}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="seconds per level (default 30)")
    parser.add_argument("--levels", default="1,4,16,64", help="concurrent connections per level")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2, help="kmsplan serve --workers")
    parser.add_argument("--load-processes", type=int, default=2, help="load generator processes")
    parser.add_argument("--max-requests", type=int, default=2_000_000, help="per load process and level")
    parser.add_argument("--operations", default="Decrypt,GenerateDataKey")
    parser.add_argument("--no-moto", action="store_true", help="measure kmsplan serve only")
    args = parser.parse_args()
    levels = [int(level) for level in args.levels.split(",")]
    operations = args.operations.split(",")

    folder = Path(tempfile.mkdtemp(prefix="kmsplan-load-"))
    servers: list[subprocess.Popen] = []
    results: dict[tuple[str, str, int], dict] = {}
    try:
        server, url, access_key, secret = start_kmsplan(folder, args.workers)
        servers.append(server)
        targets = [("kmsplan serve", url, access_key, secret)]
        if not args.no_moto:
            moto, moto_url = start_moto(folder)
            servers.append(moto)
            targets.append(("moto_server", moto_url, "AKIAMOTOMOTOMOTOMOTO", "moto-secret"))
        print(f"kmsplan serve: {args.workers} workers; load: {args.load_processes} processes; "
              f"{args.seconds:g} s per level; {os.cpu_count()} CPUs")
        print(f"{'server':<14} {'operation':<16} {'conns':>5} {'requests':>9} {'req/s':>9} {'p50 ms':>8} "
              f"{'p99 ms':>8} {'errors':>6}")
        for name, target_url, key_id, key_secret in targets:
            bodies = prepare(target_url, key_id, key_secret)
            host = target_url.split("//", 1)[1]
            for operation in operations:
                for level in levels:
                    request = signed_request(host, operation, bodies[operation], key_id, key_secret)
                    row = measure(target_url, request, level, args.load_processes, args.seconds, args.max_requests)
                    results[(name, operation, level)] = row
                    print(f"{name:<14} {operation:<16} {level:>5} {row['requests']:>9} {row['rate']:>9.0f} "
                          f"{row['p50']:>8.2f} {row['p99']:>8.2f} {row['errors']:>6}", flush=True)
        if not args.no_moto:
            print("\nkmsplan serve vs moto_server (requests/s ratio)")
            for operation in operations:
                ratios = [f"{level}: {results[('kmsplan serve', operation, level)]['rate'] / max(1e-9, results[('moto_server', operation, level)]['rate']):.1f}x"
                          for level in levels]
                print(f"  {operation:<16} " + ", ".join(ratios))
        best = max((results[("kmsplan serve", "Decrypt", level)] for level in levels if "Decrypt" in operations),
                   key=lambda row: row["rate"], default=None)
        if best is not None:
            print(f"\ngoal: >= 10,000 Decrypt/s with p99 < 20 ms; best level here: {best['rate']:.0f}/s, "
                  f"p99 {best['p99']:.2f} ms")
    finally:
        for server in servers:
            server.send_signal(signal.SIGTERM)
        for server in servers:
            try:
                server.wait(timeout=40)
            except subprocess.TimeoutExpired:
                server.kill()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
