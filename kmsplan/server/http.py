"""The HTTP side of `kmsplan serve`: a pre-fork server whose workers each open the store.

Why pre-fork: python-pkcs11 with SoftHSM2 must not be called from two threads at once, and a
PKCS#11 library must not be used across fork(), so parallelism comes from processes that each open
the store after the fork (the store already serializes writers across processes with its lock
file and SQLite, and tells every process about others' writes through its generation counter).
The parent binds the listening socket, compiles the wire protocol once (shared copy-on-write),
forks the workers, restarts one that dies, and coordinates shutdown. It never opens a token.

Each worker runs one asyncio event loop over the shared listening socket with a small HTTP/1.1
implementation of its own (keep-alive, pipelining, Content-Length bodies only). Requests are
handled synchronously inside the loop: every store call ends in the token, which a process uses
serially anyway, so threads would add hand-off cost and no throughput. A long operation (an
RSA-4096 CreateKey) delays that worker's other connections; the other workers keep serving.

Refused before anything is read or parsed further: a request head over 16 KiB (431), a body over
1 MiB by its Content-Length (413), chunked bodies (411). Slow clients are cut off by deadlines a
sweep checks twice a second: a request must arrive completely within `request_timeout` of its
first byte (else 408 and close), and an idle keep-alive connection is closed after
`idle_timeout`. Authentication failures cost a parse and two hashes and touch no key, so a burst of
bad signatures is cheap for everyone else.

SIGTERM (or SIGINT) on the parent: workers stop accepting, close idle connections, finish every
request in flight (a request partly received is waited for, within its deadline), answer it with
`Connection: close`, and exit; the parent waits `grace` seconds, then kills what remains.

One JSON line per request goes to stderr: time, worker, request id, operation, status, latency,
principal, access key id, region, source address and error code. Never a body, a blob, a
signature, a secret or an error message (messages can quote request values).
"""

from __future__ import annotations

import asyncio
import email.utils
import gc
import json
import mmap
import os
import re
import select
import signal
import socket
import ssl
import struct
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from kmsplan import __version__
from kmsplan.errors import KMSError, KmsplanError
from kmsplan.server import extensions, wire

if TYPE_CHECKING:
    from kmsplan.store import KeyStore
    from kmsplan.store.client import KmsClient

MAX_BODY = 1 << 20
MAX_HEAD = 16 * 1024
MAX_HEADERS = 100
_INTERNAL_CODES = frozenset({"KMSInternalException", "KeyUnavailableException", "DependencyTimeoutException"})
_REASONS = {200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
            408: "Request Timeout", 411: "Length Required", 413: "Content Too Large",
            431: "Request Header Fields Too Large", 500: "Internal Server Error", 503: "Service Unavailable"}
_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGCHLD}


@dataclass(frozen=True)
class ServeOptions:
    """What `kmsplan serve` was asked for (timeouts in seconds)."""

    store_dir: Path
    host: str = "127.0.0.1"
    port: int = 8443
    workers: int = 2
    tls_cert: Path | None = None
    tls_key: Path | None = None
    request_timeout: float = 10.0
    idle_timeout: float = 60.0
    grace: float = 30.0
    max_connections: int = 1024
    request_log: bool = True


# -- logging -------------------------------------------------------------------------------------
_CLOCK_CACHE: list = [0, "", ""]  # second, ISO prefix, HTTP date


def _now_strings() -> tuple[str, str, float]:
    now = time.time()
    second = int(now)
    if _CLOCK_CACHE[0] != second:
        _CLOCK_CACHE[:] = [second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)),
                           email.utils.formatdate(second, usegmt=True)]
    return _CLOCK_CACHE[1], _CLOCK_CACHE[2], now


_LOG_ENCODER = json.JSONEncoder(separators=(",", ":"), default=str)
_PIPE_BUF = 4096  # a write(2) of at most this many bytes to a pipe is never interleaved with another's


def log_record(fields: dict) -> bytes:
    prefix, _, now = _now_strings()
    return (_LOG_ENCODER.encode({"time": f"{prefix}.{int(now * 1000) % 1000:03d}Z", **fields}) + "\n").encode()


def write_log(lines: list[bytes]) -> None:
    """Write whole lines to stderr, as few write(2)s as possible, none longer than PIPE_BUF, so lines
    of several workers sharing one pipe never interleave."""
    chunk = b""
    for line in lines:
        if chunk and len(chunk) + len(line) > _PIPE_BUF:
            _write(chunk)
            chunk = b""
        chunk += line
    if chunk:
        _write(chunk)


def _write(data: bytes) -> None:
    try:
        os.write(2, data)
    except OSError:
        pass


def log_line(fields: dict) -> None:
    """One JSON line on stderr, now (server events; requests go through a worker's batch)."""
    write_log([log_record(fields)])


# -- requests and responses ----------------------------------------------------------------------
class BadRequest(Exception):
    """The request cannot be read as HTTP/1.1 (answered, then the connection is closed)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@dataclass
class Head:
    method: str
    target: str
    headers: dict[str, str]
    keep_alive: bool
    length: int


_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_HEADERS_OK = re.compile(rf"(?:{_TOKEN}:[^\r\n]*\r\n)*")
_HEADER = re.compile(rf"({_TOKEN}):[ \t]*([^\r\n]*?)[ \t]*\r\n")
_UNIQUE = frozenset({"content-length", "host", "authorization", "x-amz-date", "x-amz-target"})


def parse_head(raw: bytes) -> Head:
    """Request line and headers (names lower-cased, repeats joined with ',' as SigV4 reads them).

    Two regular expressions do the work (one validates every line, one extracts the fields), so a
    head costs a few microseconds; a folded line, a space before a colon or a name that is not an
    HTTP token is refused rather than guessed at."""
    text = raw.decode("latin-1")
    request_line, _, rest = text.partition("\r\n")
    parts = request_line.split(" ")
    if len(parts) != 3 or not parts[0].isalpha() or not parts[1]:
        raise BadRequest(400, "BadRequest", "Malformed HTTP request line")
    method, target, version = parts
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        raise BadRequest(400, "BadRequest", "Only HTTP/1.1 and HTTP/1.0 are served")
    if rest:
        rest += "\r\n"
        if _HEADERS_OK.fullmatch(rest) is None:
            raise BadRequest(400, "BadRequest", "Malformed header field (or an obsolete folded line)")
        pairs = _HEADER.findall(rest)
    else:
        pairs = []
    if len(pairs) > MAX_HEADERS:
        raise BadRequest(431, "RequestHeaderFieldsTooLarge", f"More than {MAX_HEADERS} header fields")
    headers: dict[str, str] = {}
    for name, value in pairs:
        name = name.lower()
        if name in headers:
            if name in _UNIQUE:
                raise BadRequest(400, "BadRequest", f"Repeated {name} header")
            headers[name] = f"{headers[name]},{value}"
        else:
            headers[name] = value
    if "transfer-encoding" in headers:
        raise BadRequest(411, "LengthRequiredException",
                         "Chunked request bodies are not accepted: send the body with a Content-Length")
    length_text = headers.get("content-length", "0")
    if not length_text.isdigit() or len(length_text) > 18:
        raise BadRequest(400, "BadRequest", "Invalid Content-Length")
    connection = headers.get("connection", "").lower()
    keep_alive = "close" not in connection if version == "HTTP/1.1" else "keep-alive" in connection
    return Head(method, target, headers, keep_alive, int(length_text))


@dataclass
class Response:
    status: int
    body: bytes
    request_id: str
    operation: str | None = None
    code: str | None = None
    principal: str | None = None
    access_key_id: str | None = None
    region: str | None = None
    detail: str | None = None
    content_type: str = wire.CONTENT_TYPE


def render(response: Response, close: bool) -> bytes:
    _, http_date, _ = _now_strings()
    head = (f"HTTP/1.1 {response.status} {_REASONS.get(response.status, 'Error')}\r\n"
            f"x-amzn-RequestId: {response.request_id}\r\nContent-Type: {response.content_type}\r\n"
            f"Content-Length: {len(response.body)}\r\nDate: {http_date}\r\n"
            + ("Connection: close\r\n\r\n" if close else "\r\n"))
    return head.encode() + response.body


def error_response(code: str, message: str, request_id: str | None = None, status: int | None = None) -> Response:
    return Response(status or wire.status_of(code), wire.error_body(code, message), request_id or str(uuid.uuid4()),
                    code=code)


class Application:
    """What a worker does with one complete request: health, authentication, protocol, store."""

    def __init__(self, store: KeyStore, protocol: wire.Protocol, worker: int) -> None:
        from kmsplan.server.credentials import SigningKeys
        from kmsplan.server.sigv4 import Verifier

        self.store = store
        self.protocol = protocol
        self.worker = worker
        self.keys = SigningKeys(store)
        self.verifier = Verifier(store.config.regions, self.keys.principal_of, self.keys.signing_key)
        self._clients: dict[tuple[str, str, str], KmsClient] = {}
        self.served = 0
        # Request ids: a random 80-bit prefix per worker and a counter, in UUID form (a fresh uuid4
        # per request costs more and says no more).
        self._id_prefix = uuid.uuid4().hex[:20]

    def _client(self, region: str, principal: str, source_ip: str) -> KmsClient:
        key = (region, principal, source_ip)
        client = self._clients.get(key)
        if client is None:
            if len(self._clients) > 4096:
                self._clients.clear()
            client = self._clients[key] = self.store.client(region=region, principal=principal, source_ip=source_ip)
        return client

    def handle(self, method: str, target: str, headers: dict[str, str], body: bytes, source_ip: str,
               connections: int) -> Response:
        self.served += 1
        prefix, count = self._id_prefix, self.served
        request_id = f"{prefix[:8]}-{prefix[8:12]}-{prefix[12:16]}-{prefix[16:20]}-{count:012x}"
        path, _, query = target.partition("?")
        if path == "/healthz":
            if method != "GET":
                return error_response("MethodNotAllowed", "GET /healthz", request_id)
            document = {"status": "ok", "service": "kmsplan", "version": __version__, "worker": self.worker,
                        "pid": os.getpid(), "connections": connections, "requests": self.served}
            return Response(200, json.dumps(document).encode(), request_id, content_type="application/json")
        if path != "/":
            return error_response("NotFound", "kmsplan serve answers POST / (AWS KMS JSON 1.1) and GET /healthz",
                                  request_id)
        if method != "POST":
            return error_response("MethodNotAllowed", "AWS KMS requests are POST /", request_id)
        response = Response(200, b"", request_id)
        try:
            identity = self.verifier.identity(method, path, query, headers, body)
            response.principal, response.access_key_id, response.region = (
                identity.principal, identity.access_key_id, identity.region)
            target = headers.get("x-amz-target", "")
            extension = target.startswith(extensions.TARGET_PREFIX)
            operation = None if extension else self.protocol.operation(target)
            response.operation = target[:64] if extension else operation.name
            if not wire.content_type_ok(headers.get("content-type")):
                raise KMSError("UnknownOperationException",
                               f"Unsupported Content-Type '{headers.get('content-type', '')[:64]}': AWS KMS speaks "
                               f"{wire.CONTENT_TYPE}")
            if extension:
                # The reconciler's calls the KMS API has no equivalent for (kmsplan.server.extensions).
                self.store.refresh()  # the registry as every process last wrote it
                result = extensions.handle(self.store, target[len(extensions.TARGET_PREFIX):], identity.principal,
                                           identity.region, wire.decode_object(body))
                response.body = json.dumps(result, separators=(",", ":")).encode()
                return response
            params = operation.decode(body)
            client = self._client(identity.region, identity.principal, source_ip)
            response.body = operation.encode(getattr(client, operation.method)(**params))
            return response
        except KMSError as error:
            code, message = error.code, error.message
            if code in _INTERNAL_CODES:
                response.detail = message
                message = f"The key store could not complete the request (request id {request_id})."
        except Exception as error:  # noqa: BLE001 - a bug must cost one request a 500, never the worker
            code = "InternalFailure"
            message = f"The server failed to process the request (request id {request_id})."
            response.detail = f"{type(error).__name__}: {str(error)[:200]}"
        response.status, response.code, response.body = wire.status_of(code), code, wire.error_body(code, message)
        return response


# -- one connection ------------------------------------------------------------------------------
class Connection(asyncio.Protocol):
    """One client connection: buffers bytes, cuts requests out of them, answers in order."""

    def __init__(self, worker: "Worker") -> None:
        self.worker = worker
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.head: Head | None = None
        self.body_start = 0
        self.total = 0
        self.deadline = time.monotonic() + worker.options.idle_timeout
        self.closing = False
        self.peer = "-"

    @property
    def idle(self) -> bool:
        return self.head is None and not self.buffer and not self.closing

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if peer else "-"
        self.worker.connections.add(self)
        if self.worker.draining:
            self.closing = True
            transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.worker.connection_closed(self)

    def pause_writing(self) -> None:
        # The client is not reading its answers: stop reading its requests until it does.
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.transport.resume_reading()

    def eof_received(self) -> bool:
        return False  # the client is done sending; the transport closes once our answers are written

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return  # lingering after a refusal: discard what the client still sends
        if not self.buffer and self.head is None:
            self.deadline = time.monotonic() + self.worker.options.request_timeout
        self.buffer += data
        try:
            self._process()
        except BadRequest as refused:
            self._refuse(refused.status, refused.code, refused.message)

    def _process(self) -> None:
        options = self.worker.options
        while not self.closing:
            if self.head is None:
                end = self.buffer.find(b"\r\n\r\n", 0, MAX_HEAD + 4)
                if end < 0:
                    if len(self.buffer) > MAX_HEAD:
                        raise BadRequest(431, "RequestHeaderFieldsTooLarge",
                                         f"The request head is larger than {MAX_HEAD // 1024} KiB")
                    return
                head = parse_head(bytes(self.buffer[:end]))
                if head.length > MAX_BODY:
                    raise BadRequest(413, "RequestEntityTooLargeException",
                                     f"The request body ({head.length} bytes) is larger than the "
                                     f"{MAX_BODY // 1024} KiB this server accepts")
                if head.headers.get("expect", "").lower() == "100-continue":
                    self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                self.head, self.body_start, self.total = head, end + 4, end + 4 + head.length
            if len(self.buffer) < self.total:
                return
            head = self.head
            body = bytes(self.buffer[self.body_start:self.total])
            del self.buffer[:self.total]
            self.head = None
            started = time.perf_counter()
            response = self.worker.app.handle(head.method, head.target, head.headers, body, self.peer,
                                              len(self.worker.connections))
            close = not head.keep_alive or self.worker.draining
            self.transport.write(render(response, close))
            self.worker.log_request(response, self.peer, time.perf_counter() - started, len(body))
            if close:
                self.closing = True
                self.transport.close()
                return
            self.deadline = time.monotonic() + (options.request_timeout if self.buffer else options.idle_timeout)

    def _refuse(self, status: int, code: str, message: str) -> None:
        """Answer a request that will not be read, then close gently: stop writing, keep discarding
        what the client sends for a moment, so it reads the answer instead of a reset."""
        response = error_response(code, message, status=status)
        self.transport.write(render(response, close=True))
        self.worker.log_request(response, self.peer, 0.0, 0)
        self.head = None
        self.buffer.clear()
        self.closing = True
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self.deadline = time.monotonic() + 2.0
        else:
            self.transport.close()

    def expire(self) -> None:
        """The deadline passed: a lingering close ends, an idle connection closes, a request that has
        not arrived in time is answered 408."""
        if self.closing or self.transport.is_closing():
            self.transport.abort()
        elif self.idle:
            self.closing = True
            self.transport.close()
        else:
            self._refuse(408, "RequestTimeoutException",
                         f"The request did not arrive within {self.worker.options.request_timeout:g} seconds")
            self.transport.close()


# -- one worker process --------------------------------------------------------------------------
class SharedLoads:
    """Open connections per worker, in an anonymous shared mapping made before the fork.

    Every worker is woken for each connection on the shared socket and the one that wins accept()
    tends to be the same (measured: 64 of 64 connections on one of two workers), which would leave
    the other idle under keep-alive clients. A worker therefore lets a connection go to a less
    loaded worker (a few 2 ms deferrals at most, so a busy or dead peer cannot starve it)."""

    _SLOT = struct.Struct("q")
    DRAINING = 1 << 40

    def __init__(self, workers: int) -> None:
        self._workers = workers
        self._map = mmap.mmap(-1, self._SLOT.size * workers)

    def set(self, index: int, value: int) -> None:
        self._SLOT.pack_into(self._map, index * self._SLOT.size, value)

    def least_other(self, index: int) -> int:
        values = [self._SLOT.unpack_from(self._map, i * self._SLOT.size)[0] for i in range(self._workers) if i != index]
        return min(values, default=self.DRAINING)


class Worker:
    """One process: the store opened once, an event loop, the connections it accepted."""

    def __init__(self, index: int, listen: socket.socket, options: ServeOptions, protocol: wire.Protocol,
                 ssl_context: ssl.SSLContext | None, loads: SharedLoads | None = None) -> None:
        self.index = index
        self.loads = loads
        self._deferrals = 0
        self._log_lines: list[bytes] = []
        self.listen = listen
        self.options = options
        self.protocol = protocol
        self.ssl_context = ssl_context
        self.connections: set[Connection] = set()
        self.pending = 0
        self.draining = False
        self.accepting = False
        self.loop: asyncio.AbstractEventLoop | None = None
        self.app: Application | None = None

    def run(self, store: KeyStore) -> None:
        self.app = Application(store, self.protocol, self.index)
        self._publish()
        # Everything built so far (the compiled protocol, the store's caches) lives as long as the
        # worker: keep it out of the cyclic collector, and collect young objects less often (a
        # request allocates a few hundred short-lived objects, almost none in cycles).
        gc.collect()
        gc.freeze()
        gc.set_threshold(20_000, 50, 100)
        self.loop = asyncio.new_event_loop()
        self.loop.add_signal_handler(signal.SIGTERM, self.drain)
        self.listen.setblocking(False)
        self._accept_on()
        self.loop.call_later(0.5, self._sweep)
        try:
            self.loop.run_forever()
        finally:
            self.flush_log()
            for connection in list(self.connections):
                if connection.transport is not None:
                    connection.transport.abort()
            self.loop.run_until_complete(asyncio.sleep(0))
            self.loop.close()

    def _accept_on(self) -> None:
        if not self.accepting and not self.draining:
            self.loop.add_reader(self.listen.fileno(), self._accept)
            self.accepting = True

    def _accept_off(self) -> None:
        if self.accepting:
            self.loop.remove_reader(self.listen.fileno())
            self.accepting = False

    def _publish(self) -> None:
        if self.loads is not None:
            self.loads.set(self.index, SharedLoads.DRAINING if self.draining else len(self.connections) + self.pending)

    def _accept(self) -> None:
        """Accept one connection per wake-up, unless a less loaded worker can take it."""
        if (self.loads is not None and self._deferrals < 5
                and len(self.connections) + self.pending > self.loads.least_other(self.index)):
            self._deferrals += 1
            self._accept_off()
            self.loop.call_later(0.002, self._accept_on)
            return
        self._deferrals = 0
        try:
            sock, _ = self.listen.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return
        except OSError as error:  # out of file descriptors: back off instead of spinning
            log_line({"event": "accept-failed", "worker": self.index, "error": error.strerror})
            self._accept_off()
            self.loop.call_later(0.1, self._accept_on)
            return
        sock.setblocking(False)
        self.pending += 1
        self._publish()
        self.loop.create_task(self._start(sock))
        if len(self.connections) + self.pending >= self.options.max_connections:
            self._accept_off()

    async def _start(self, sock: socket.socket) -> None:
        try:
            await self.loop.connect_accepted_socket(
                lambda: Connection(self), sock, ssl=self.ssl_context,
                ssl_handshake_timeout=self.options.request_timeout if self.ssl_context else None,
                ssl_shutdown_timeout=5.0 if self.ssl_context else None)
        except (OSError, ssl.SSLError, asyncio.TimeoutError, ConnectionError):
            sock.close()  # a failed TLS handshake or a client gone before we started
        finally:
            self.pending -= 1
            self._publish()

    def connection_closed(self, connection: Connection) -> None:
        self.connections.discard(connection)
        self._publish()
        if self.draining:
            if not self.connections and not self.pending:
                self.loop.stop()
        elif len(self.connections) + self.pending < self.options.max_connections:
            self._accept_on()

    def _sweep(self) -> None:
        now = time.monotonic()
        for connection in [c for c in self.connections if c.deadline <= now]:
            connection.expire()
        self.loop.call_later(0.5, self._sweep)

    def drain(self) -> None:
        """SIGTERM: stop accepting, close idle connections, let requests in flight finish."""
        if self.draining:
            return
        self.draining = True
        self._publish()
        self._accept_off()
        log_line({"event": "draining", "worker": self.index, "pid": os.getpid(),
                  "inFlight": sum(1 for c in self.connections if not c.idle)})
        for connection in list(self.connections):
            if connection.idle:
                # Nothing to flush; abort() also spares TLS connections the wait for a close_notify
                # the client's idle pool will not send.
                connection.closing = True
                connection.transport.abort()
        if not self.connections and not self.pending:
            self.loop.stop()
        else:
            self.loop.call_later(self.options.grace, self.loop.stop)

    def log_request(self, response: Response, peer: str, seconds: float, size: int) -> None:
        """Queue the request's log line; the lines of one turn of the event loop go out together."""
        if not self.options.request_log:
            return
        fields = {"worker": self.index, "requestId": response.request_id, "operation": response.operation,
                  "status": response.status, "latencyMs": round(seconds * 1000, 3), "principal": response.principal,
                  "accessKeyId": response.access_key_id, "region": response.region, "sourceIPAddress": peer,
                  "bytesIn": size, "bytesOut": len(response.body), "errorCode": response.code}
        if response.detail:
            fields["detail"] = response.detail
        if not self._log_lines:
            self.loop.call_soon(self.flush_log)
        self._log_lines.append(log_record(fields))

    def flush_log(self) -> None:
        lines, self._log_lines = self._log_lines, []
        write_log(lines)


def _worker_main(index: int, listen: socket.socket, options: ServeOptions, protocol: wire.Protocol,
                 ssl_context: ssl.SSLContext | None, loads: SharedLoads, ready_fd: int) -> NoReturn:
    """The body of a forked worker; never returns into the parent's code (os._exit)."""
    code = 0
    try:
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C reaches us too: the parent decides
        from kmsplan.store import KeyStore

        try:
            store = KeyStore.open(options.store_dir)
        except KmsplanError as error:
            log_line({"event": "worker-failed", "worker": index, "error": error.message})
            os._exit(3)
        os.write(ready_fd, b"R")
        os.close(ready_fd)
        try:
            Worker(index, listen, options, protocol, ssl_context, loads).run(store)
        finally:
            store.close()
        log_line({"event": "worker-stopped", "worker": index, "pid": os.getpid()})
    except BaseException as error:  # noqa: BLE001 - report, then leave with a code the parent sees
        log_line({"event": "worker-crashed", "worker": index, "error": f"{type(error).__name__}: {error}"[:300]})
        code = 4
    finally:
        os._exit(code)


# -- the parent ------------------------------------------------------------------------------------
def bind(host: str, port: int) -> socket.socket:
    """The listening socket every worker shares (bound before forking, so port 0 means one port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family, backlog=1024)
    except OSError as error:
        raise KmsplanError(f"cannot listen on {host}:{port}: {error.strerror}",
                           hint="choose another --listen address or stop what is using it") from None


def tls_context(cert: Path | None, key: Path | None) -> ssl.SSLContext | None:
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise KmsplanError("--tls-cert and --tls-key go together", hint="give both, or neither for plain HTTP")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as error:
        raise KmsplanError(f"cannot load the TLS certificate {cert} and key {key}: {error}",
                           hint="give a PEM certificate (chain) and its unencrypted PEM private key") from None
    return context


class Master:
    """Forks and watches the workers; turns SIGTERM into a graceful shutdown."""

    def __init__(self, options: ServeOptions, listen: socket.socket, ssl_context: ssl.SSLContext | None,
                 protocol: wire.Protocol) -> None:
        self.options = options
        self.listen = listen
        self.ssl_context = ssl_context
        self.protocol = protocol
        self.workers: dict[int, tuple[int, float]] = {}  # pid -> (index, started)
        self.loads = SharedLoads(options.workers)
        self.fast_failures = 0
        self.start_failures: dict[int, int] = {}  # worker index -> failed starts before announcing

    def _spawn(self, index: int, ready_fd: int) -> None:
        pid = os.fork()
        if pid == 0:
            _worker_main(index, self.listen, self.options, self.protocol, self.ssl_context, self.loads, ready_fd)
        self.workers[pid] = (index, time.monotonic())

    def run(self, announce: Callable[[], None]) -> int:
        signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
        ready_r, ready_w = os.pipe()
        try:
            for index in range(self.options.workers):
                self._spawn(index, ready_w)
            code = self._supervise(ready_r, ready_w, announce)
        finally:
            os.close(ready_r)
            os.close(ready_w)
        self._shutdown()
        return code

    def _supervise(self, ready_r: int, ready_w: int, announce: Callable[[], None]) -> int:
        ready, announced = 0, False
        while True:
            received = signal.sigtimedwait(_SIGNALS, 0.05 if not announced else 0.5)
            if not announced and select.select([ready_r], [], [], 0)[0]:
                ready += len(os.read(ready_r, 64))
                if ready >= self.options.workers:
                    announced = True
                    announce()
            if received is not None and received.si_signo in (signal.SIGTERM, signal.SIGINT):
                log_line({"event": "shutdown", "signal": signal.Signals(received.si_signo).name,
                          "workers": len(self.workers)})
                return 0
            for pid, status in self._reap():
                index, started = self.workers.pop(pid)
                exit_code = os.waitstatus_to_exitcode(status)
                if not announced:
                    # A worker that could not open the store (exit 3) gets two more tries: SoftHSM2
                    # rewrites the token files at each login, and a worker starting in that moment
                    # can read them half-written. A store that is really broken fails three times.
                    self.start_failures[index] = self.start_failures.get(index, 0) + 1
                    if exit_code == 3 and self.start_failures[index] < 3:
                        log_line({"event": "startup-retry", "worker": index, "exitCode": exit_code})
                        time.sleep(0.2 * self.start_failures[index])
                        self._spawn(index, ready_w)
                        continue
                    log_line({"event": "startup-failed", "worker": index, "exitCode": exit_code})
                    return 1
                log_line({"event": "worker-exited", "worker": index, "pid": pid, "exitCode": exit_code})
                self.loads.set(index, 0)
                self.fast_failures = self.fast_failures + 1 if time.monotonic() - started < 5 else 0
                if self.fast_failures > 5:
                    log_line({"event": "giving-up", "reason": "workers keep dying at start"})
                    return 1
                self._spawn(index, ready_w)

    def _reap(self) -> list[tuple[int, int]]:
        done = []
        while self.workers:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            if pid in self.workers:
                done.append((pid, status))
        return done

    def _shutdown(self) -> None:
        self.listen.close()
        for pid in self.workers:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + self.options.grace + 2
        while self.workers and time.monotonic() < deadline:
            received = signal.sigtimedwait(_SIGNALS, 0.1)
            if received is not None and received.si_signo == signal.SIGINT:
                break  # a second Ctrl-C: stop waiting
            for pid, _ in self._reap():
                self.workers.pop(pid, None)
        for pid in list(self.workers):
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
        self.workers.clear()
        log_line({"event": "stopped"})


def serve(options: ServeOptions, announce: Callable[[str], None] | None = None) -> int:
    """Run the server until SIGTERM/SIGINT; returns the exit code."""
    from kmsplan.store.calls import OPERATIONS
    from kmsplan.store import client as _operations  # noqa: F401  (registers every operation)
    from kmsplan.store.layout import StoreConfig

    config = StoreConfig.load(options.store_dir)  # a missing store is an error before anything binds
    if options.workers < 1:
        raise KmsplanError("--workers must be at least 1")
    ssl_context = tls_context(options.tls_cert, options.tls_key)
    protocol = wire.Protocol(OPERATIONS)
    listen = bind(options.host, options.port)
    port = listen.getsockname()[1]
    scheme = "https" if ssl_context else "http"
    host = f"[{options.host}]" if ":" in options.host else options.host
    url = f"{scheme}://{host}:{port}"

    def ready() -> None:
        log_line({"event": "listening", "url": url, "workers": options.workers, "store": str(config.path),
                  "regions": list(config.regions)})
        if announce is not None:
            announce(url)

    return Master(options, listen, ssl_context, protocol).run(ready)


__all__ = ["ServeOptions", "serve", "parse_head", "Application", "MAX_BODY"]

